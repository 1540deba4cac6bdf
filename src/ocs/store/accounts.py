"""SQL for accounts, identities, money, limits and tariffs (asyncpg).

Amounts cross this boundary as integer micro-units; ``numeric`` values are written as exact
``Decimal`` and read as ``bigint`` micro-units (the ``account_snapshots`` view), so no float ever
touches money.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from typing import Any, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg

from ocs.core.identity import IdentityKind, normalize_identity
from ocs.core.model import (
    AccountSnapshot,
    AccountStatus,
    LimitBasis,
    Tariff,
    TemporaryIncrease,
)
from ocs.core.money import to_decimal

log = logging.getLogger(__name__)

Executor: TypeAlias = asyncpg.Connection | asyncpg.Pool


class StoreError(Exception):
    """A request the data does not allow; the message is for the person who asked."""


class NotFound(StoreError):
    pass


class Conflict(StoreError):
    pass


@functools.lru_cache(maxsize=1024)
def zone(name: str) -> tzinfo:
    """A time zone by IANA name; UTC (with a warning) for a name Python does not know."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("unknown time zone %r, using UTC", name)
        return UTC


SNAPSHOT_COLUMNS = (
    "account_id, name, status, balance_micros, credit_limit_micros, min_balance_micros, "
    "limit_basis, unbilled_micros, unbilled_period, time_zone, max_sessions, max_setups_per_s, "
    "price_per_minute_micros, billing_increment_s, minimum_s, price_per_mb_micros, "
    "connection_fee_micros, price_per_event_micros, temp_amount_micros, temp_percent_bp, "
    "temp_valid_until"
)

_STATUSES = {s.value: s for s in AccountStatus}
_BASES = {b.value: b for b in LimitBasis}


@functools.lru_cache(maxsize=4096)
def _tariff(*prices: int) -> Tariff:
    # Many accounts share a tariff: share the object too.
    per_minute, increment, minimum, per_mb, fee, per_event = prices
    return Tariff(
        price_per_minute=per_minute,
        billing_increment_s=increment,
        minimum_s=minimum,
        price_per_mb=per_mb,
        connection_fee=fee,
        price_per_event=per_event,
    )


def snapshot_from_row(row: Sequence[Any]) -> AccountSnapshot:
    """An ``AccountSnapshot`` from a row of ``SNAPSHOT_COLUMNS`` (in that order)."""
    (
        account_id,
        name,
        status,
        balance,
        credit_limit,
        min_balance,
        basis,
        unbilled,
        unbilled_period,
        time_zone,
        max_sessions,
        max_setups,
        per_minute,
        increment,
        minimum,
        per_mb,
        fee,
        per_event,
        temp_amount,
        temp_bp,
        temp_until,
    ) = row
    increase = None
    if temp_until is not None:
        increase = TemporaryIncrease(valid_until=temp_until, amount=temp_amount, percent_bp=temp_bp)
    return AccountSnapshot(
        account_id=account_id,
        name=name,
        status=_STATUSES[status],
        balance=balance,
        credit_limit=credit_limit,
        min_balance=min_balance,
        limit_basis=_BASES[basis],
        unbilled=unbilled,
        unbilled_period=unbilled_period,
        time_zone=zone(time_zone),
        temporary_increase=increase,
        max_sessions=max_sessions,
        max_setups_per_s=max_setups,
        tariff=_tariff(per_minute or 0, increment, minimum, per_mb or 0, fee or 0, per_event or 0),
    )


async def snapshot_by_id(db: Executor, account_id: int) -> AccountSnapshot | None:
    row = await db.fetchrow(
        f"SELECT {SNAPSHOT_COLUMNS} FROM account_snapshots WHERE account_id = $1", account_id
    )
    return snapshot_from_row(tuple(row)) if row else None


async def snapshot_by_name(db: Executor, name: str) -> AccountSnapshot | None:
    row = await db.fetchrow(
        f"SELECT {SNAPSHOT_COLUMNS} FROM account_snapshots WHERE name = $1", name
    )
    return snapshot_from_row(tuple(row)) if row else None


async def account_id_by_identity(db: Executor, kind: IdentityKind, value: str) -> int | None:
    result: int | None = await db.fetchval(
        "SELECT account_id FROM account_identities WHERE kind = $1 AND value = $2",
        kind.value,
        normalize_identity(kind, value),
    )
    return result


async def iter_snapshots(
    conn: asyncpg.Connection, batch_size: int = 10_000
) -> AsyncIterator[list[AccountSnapshot]]:
    """Every account's snapshot, in batches, from one consistent read."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        cursor = await conn.cursor(
            f"SELECT {SNAPSHOT_COLUMNS} FROM account_snapshots ORDER BY account_id"
        )
        while True:
            rows = await cursor.fetch(batch_size)
            if not rows:
                break
            yield [snapshot_from_row(tuple(r)) for r in rows]


async def all_identities(conn: asyncpg.Connection) -> list[tuple[str, str, int]]:
    rows = await conn.fetch("SELECT kind, value, account_id FROM account_identities")
    return [(r["kind"], r["value"], r["account_id"]) for r in rows]


# --- Administration (the CLI and the demo data) ------------------------------------------------


async def account_id(db: Executor, name: str) -> int:
    found: int | None = await db.fetchval("SELECT id FROM accounts WHERE name = $1", name)
    if found is None:
        raise NotFound(f"no account named {name!r}")
    return found


async def tariff_id(db: Executor, name: str) -> int:
    found: int | None = await db.fetchval("SELECT id FROM tariffs WHERE name = $1", name)
    if found is None:
        raise NotFound(f"no tariff named {name!r} (create it with 'ocs tariff set {name} ...')")
    return found


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountSettings:
    """Settings an operator may give an account; ``None`` leaves a setting as it is."""

    status: AccountStatus | None = None
    credit_limit: int | None = None
    min_balance: int | None = None
    limit_basis: LimitBasis | None = None
    time_zone: str | None = None
    max_sessions: int | None = None
    max_setups_per_s: int | None = None
    tariff: str | None = None


def _check_time_zone(name: str) -> None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise StoreError(
            f"unknown time zone {name!r} (use an IANA name such as 'Europe/Zurich' or 'UTC')"
        ) from None


async def create_account(
    conn: asyncpg.Connection,
    name: str,
    settings: AccountSettings,
    *,
    changed_by: str | None = None,
) -> int:
    """Create an account; its credit limit goes through the history like any other change."""
    if settings.time_zone is not None:
        _check_time_zone(settings.time_zone)
    async with conn.transaction():
        tariff = await tariff_id(conn, settings.tariff) if settings.tariff else None
        try:
            new_id: int = await conn.fetchval(
                """INSERT INTO accounts (name, status, min_balance, limit_basis, time_zone,
                                         max_sessions, max_setups_per_s, tariff_id)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id""",
                name,
                (settings.status or AccountStatus.ACTIVE).value,
                to_decimal(settings.min_balance or 0),
                (settings.limit_basis or LimitBasis.BALANCE).value,
                settings.time_zone or "UTC",
                settings.max_sessions,
                settings.max_setups_per_s,
                tariff,
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(f"an account named {name!r} exists already") from None
        if settings.credit_limit:
            await set_credit_limit(conn, new_id, settings.credit_limit, changed_by=changed_by)
    return new_id


async def update_account(
    conn: asyncpg.Connection, name: str, settings: AccountSettings, *, changed_by: str | None = None
) -> None:
    if settings.time_zone is not None:
        _check_time_zone(settings.time_zone)
    async with conn.transaction():
        acct = await account_id(conn, name)
        assignments: list[str] = []
        values: list[Any] = []

        def put(column: str, value: Any) -> None:
            values.append(value)
            assignments.append(f"{column} = ${len(values)}")

        if settings.status is not None:
            put("status", settings.status.value)
        if settings.min_balance is not None:
            put("min_balance", to_decimal(settings.min_balance))
        if settings.limit_basis is not None:
            put("limit_basis", settings.limit_basis.value)
        if settings.time_zone is not None:
            put("time_zone", settings.time_zone)
        if settings.max_sessions is not None:
            put("max_sessions", settings.max_sessions if settings.max_sessions >= 0 else None)
        if settings.max_setups_per_s is not None:
            put(
                "max_setups_per_s",
                settings.max_setups_per_s if settings.max_setups_per_s >= 0 else None,
            )
        if settings.tariff is not None:
            put("tariff_id", await tariff_id(conn, settings.tariff))
        if assignments:
            values.append(acct)
            await conn.execute(
                f"UPDATE accounts SET {', '.join(assignments)} WHERE id = ${len(values)}", *values
            )
        if settings.credit_limit is not None:
            await set_credit_limit(conn, acct, settings.credit_limit, changed_by=changed_by)


@dataclass(frozen=True, slots=True)
class AccountRow:
    name: str
    status: str
    balance: int
    credit_limit: int
    min_balance: int
    limit_basis: str
    tariff: str | None
    identities: int


async def list_accounts(db: Executor, *, limit: int = 1000, prefix: str = "") -> list[AccountRow]:
    rows = await db.fetch(
        """SELECT a.name, a.status, (a.balance * 1000000)::bigint AS balance,
                  (a.credit_limit * 1000000)::bigint AS credit_limit,
                  (a.min_balance * 1000000)::bigint AS min_balance, a.limit_basis,
                  t.name AS tariff,
                  (SELECT count(*) FROM account_identities i WHERE i.account_id = a.id)
                      AS identities
           FROM accounts a LEFT JOIN tariffs t ON t.id = a.tariff_id
           WHERE a.name LIKE $1 || '%' ORDER BY a.name LIMIT $2""",
        prefix,
        limit,
    )
    return [AccountRow(*tuple(r)) for r in rows]


async def identities_of(db: Executor, account: int) -> list[tuple[str, str]]:
    rows = await db.fetch(
        "SELECT kind, value FROM account_identities WHERE account_id = $1 ORDER BY kind, value",
        account,
    )
    return [(r["kind"], r["value"]) for r in rows]


async def add_identity(db: Executor, account_name: str, kind: IdentityKind, value: str) -> str:
    """Attach an identity; returns its normal form. Refuses one another account already has."""
    normal = normalize_identity(kind, value)
    acct = await account_id(db, account_name)
    owner: str | None = await db.fetchval(
        """SELECT a.name FROM account_identities i JOIN accounts a ON a.id = i.account_id
           WHERE i.kind = $1 AND i.value = $2""",
        kind.value,
        normal,
    )
    if owner is not None:
        if owner == account_name:
            return normal
        raise Conflict(f"{kind.value} {normal!r} belongs to account {owner!r} already")
    try:
        await db.execute(
            "INSERT INTO account_identities (account_id, kind, value) VALUES ($1, $2, $3)",
            acct,
            kind.value,
            normal,
        )
    except asyncpg.UniqueViolationError:
        raise Conflict(f"{kind.value} {normal!r} was just given to another account") from None
    return normal


@dataclass(frozen=True, slots=True)
class LedgerResult:
    entry_id: int
    created: bool  # False: the external id was recorded before; nothing changed
    balance: int


async def add_ledger_entry(
    conn: asyncpg.Connection,
    account_name: str,
    kind: str,
    amount: int,
    *,
    external_id: str | None = None,
    note: str | None = None,
) -> LedgerResult:
    """Record money in or out. With ``external_id`` the call is idempotent: the same id again
    returns the first entry unchanged; the same id for a different account or amount is refused."""
    async with conn.transaction():
        acct = await account_id(conn, account_name)
        row = await conn.fetchrow(
            """INSERT INTO ledger_entries (account_id, kind, amount, external_id, note)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (external_id) DO NOTHING RETURNING id""",
            acct,
            kind,
            to_decimal(amount),
            external_id,
            note,
        )
        created = row is not None
        if row is None:
            row = await conn.fetchrow(
                """SELECT id, account_id, kind, (amount * 1000000)::bigint AS amount
                   FROM ledger_entries WHERE external_id = $1""",
                external_id,
            )
            assert row is not None
            if (row["account_id"], row["kind"], row["amount"]) != (acct, kind, amount):
                raise Conflict(
                    f"external id {external_id!r} was already used for a different entry "
                    f"(entry {row['id']})"
                )
        balance: int = await conn.fetchval(
            "SELECT (balance * 1000000)::bigint FROM accounts WHERE id = $1", acct
        )
    return LedgerResult(entry_id=row["id"], created=created, balance=balance)


async def set_credit_limit(
    conn: asyncpg.Connection,
    account: int,
    limit: int,
    *,
    changed_by: str | None = None,
    reason: str | None = None,
) -> None:
    await conn.execute(
        "SELECT ocs_set_credit_limit($1, $2, NULL, $3, $4)",
        account,
        to_decimal(limit),
        changed_by,
        reason,
    )


async def set_temporary_credit_limit(
    conn: asyncpg.Connection,
    account: int,
    *,
    valid_until: datetime,
    amount: int | None = None,
    percent: Decimal | None = None,
    changed_by: str | None = None,
    reason: str | None = None,
) -> None:
    try:
        await conn.execute(
            "SELECT ocs_set_temporary_credit_limit($1, $2, $3, $4, NULL, $5, $6)",
            account,
            to_decimal(amount) if amount is not None else None,
            percent,
            valid_until,
            changed_by,
            reason,
        )
    except asyncpg.CheckViolationError as exc:
        raise StoreError(str(exc)) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class TariffSettings:
    price_per_minute: int | None = None
    billing_increment_s: int | None = None
    minimum_s: int | None = None
    price_per_mb: int | None = None
    connection_fee: int | None = None
    price_per_event: int | None = None


_TARIFF_MONEY = ("price_per_minute", "price_per_mb", "connection_fee", "price_per_event")
_TARIFF_COLUMNS = (*_TARIFF_MONEY, "billing_increment_s", "minimum_s")


async def set_tariff(conn: asyncpg.Connection, name: str, settings: TariffSettings) -> bool:
    """Create the tariff or change the given prices; returns True when it was created."""
    given = {c: getattr(settings, c) for c in _TARIFF_COLUMNS if getattr(settings, c) is not None}
    values = [to_decimal(v) if c in _TARIFF_MONEY else v for c, v in given.items()]
    async with conn.transaction():
        existing = await conn.fetchval("SELECT id FROM tariffs WHERE name = $1 FOR UPDATE", name)
        try:
            if existing is None:
                columns = ", ".join(["name", *given])
                params = ", ".join(f"${i}" for i in range(1, len(given) + 2))
                await conn.execute(
                    f"INSERT INTO tariffs ({columns}) VALUES ({params})", name, *values
                )
                return True
            if given:
                sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(given, start=2))
                await conn.execute(
                    f"UPDATE tariffs SET {sets}, updated_at = now() WHERE id = $1",
                    existing,
                    *values,
                )
        except asyncpg.CheckViolationError as exc:
            raise StoreError(f"tariff {name!r}: a value is out of range ({exc})") from None
    return False


async def list_tariffs(db: Executor) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await db.fetch(
        """SELECT t.name, (t.price_per_minute * 1000000)::bigint AS price_per_minute,
                  t.billing_increment_s, t.minimum_s,
                  (t.price_per_mb * 1000000)::bigint AS price_per_mb,
                  (t.connection_fee * 1000000)::bigint AS connection_fee,
                  (t.price_per_event * 1000000)::bigint AS price_per_event,
                  (SELECT count(*) FROM accounts a WHERE a.tariff_id = t.id) AS accounts
           FROM tariffs t ORDER BY t.name"""
    )
    return rows


async def credit_limit_history(db: Executor, account: int) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await db.fetch(
        """SELECT changed_at, changed_by, temporary,
                  (old_limit * 1000000)::bigint AS old_limit,
                  (new_limit * 1000000)::bigint AS new_limit,
                  (temp_amount * 1000000)::bigint AS temp_amount, temp_percent, valid_until, reason
           FROM credit_limit_history WHERE account_id = $1 ORDER BY changed_at, id""",
        account,
    )
    return rows


async def database_now(db: Executor) -> datetime:
    now: datetime = await db.fetchval("SELECT now()")
    return now
