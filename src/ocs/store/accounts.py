"""SQL for accounts, identities, money, limits and tariffs (asyncpg).

Amounts cross this boundary as integer micro-units; ``numeric`` values are written as exact
``Decimal`` and read as ``bigint`` micro-units (the ``account_snapshots`` view), so no float ever
touches money.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from typing import Any, Literal, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg

from ocs.core.currency import CurrencyError, parse_currency
from ocs.core.identity import IdentityKind, normalize_identity
from ocs.core.model import (
    AccountSnapshot,
    AccountStatus,
    AccountTerms,
    LimitBasis,
    RateLimit,
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


class Refused(StoreError):
    """A business rule enforced in the database refused the change (SQLSTATE class ``OC``):
    an operator's allowance or limit, insufficient funds, transfers not allowed."""


def _postgres_message(exc: asyncpg.PostgresError) -> str:
    message = str(getattr(exc, "message", None) or exc)
    hint = getattr(exc, "hint", None)
    return f"{message} ({hint})" if hint else message


@contextlib.contextmanager
def database_rules() -> Iterator[None]:
    """Turn the database's refusals into ``StoreError``s whose message is the database's own:
    class ``OC`` (business rules) into ``Refused``, ``no_data_found`` into ``NotFound``,
    ``check_violation`` (a bad argument) into ``StoreError``, ``unique_violation`` into
    ``Conflict``. Anything else is a bug and propagates."""
    try:
        yield
    except asyncpg.PostgresError as exc:
        code = str(getattr(exc, "sqlstate", "") or "")
        if code.startswith("OC"):
            raise Refused(_postgres_message(exc)) from None
        if code == "P0002":
            raise NotFound(_postgres_message(exc)) from None
        if code == "23514":
            raise StoreError(_postgres_message(exc)) from None
        if code == "23505":
            raise Conflict(_postgres_message(exc)) from None
        raise


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
    "temp_valid_until, rate_plan_id, rate_limit_up_kbps, rate_limit_down_kbps"
)

# The same, plus the row's change stamp as the last column (the cache's version).
VERSIONED_SNAPSHOT_COLUMNS = SNAPSHOT_COLUMNS + ", changed_at"
SNAPSHOT_WIDTH = len(SNAPSHOT_COLUMNS.split(","))

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
    """An ``AccountSnapshot`` from a row of ``SNAPSHOT_COLUMNS`` (in that order; any further
    columns are ignored)."""
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
        rate_plan_id,
        rate_up,
        rate_down,
    ) = row[:SNAPSHOT_WIDTH]
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
        rate_plan_id=rate_plan_id,
        rate_limit=_rate_limit(rate_up, rate_down),
    )


@functools.lru_cache(maxsize=1024)
def _rate_limit(up_kbps: int | None, down_kbps: int | None) -> RateLimit | None:
    # Few distinct limits (an operator's plans): share the objects.
    if up_kbps is None or down_kbps is None:
        return None
    return RateLimit(up_kbps=up_kbps, down_kbps=down_kbps)


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


# --- The bulk load (the daemon's cache warm-up) ------------------------------------------------

# What the account_snapshots view gives, taken apart so that a million rows carry only what
# differs per account: tariffs and active temporary increases are read once each (few rows) and
# shared by id, instead of joined into every account row.
_BULK_TARIFFS = """
SELECT id, (price_per_minute * 1000000)::bigint, billing_increment_s, minimum_s,
       (price_per_mb * 1000000)::bigint, (connection_fee * 1000000)::bigint,
       (price_per_event * 1000000)::bigint
FROM tariffs"""
_BULK_INCREASES = """
SELECT account_id, (amount * 1000000)::bigint, (percent * 100)::bigint, valid_until
FROM temporary_credit_limits
WHERE revoked_at IS NULL AND valid_until > now()"""
_BULK_ACCOUNTS = """
SELECT id, name, status, (balance * 1000000)::bigint, (credit_limit * 1000000)::bigint,
       (min_balance * 1000000)::bigint, limit_basis, (unbilled * 1000000)::bigint,
       unbilled_period, time_zone, max_sessions, max_setups_per_s, tariff_id,
       rate_plan_id, account_class_id, rate_limit_up_kbps, rate_limit_down_kbps
FROM accounts"""
# Each class's rate plan, for accounts without their own (as the view's COALESCE does).
_BULK_CLASS_PLANS = "SELECT id, rate_plan_id FROM account_classes WHERE rate_plan_id IS NOT NULL"
_BULK_IDENTITIES = "SELECT kind, value, account_id FROM account_identities"
_CREDENTIALS = "SELECT kind, value, credential FROM account_identities WHERE credential IS NOT NULL"


async def load_all(
    conn: asyncpg.Connection, batch_size: int = 20_000
) -> tuple[dict[int, AccountSnapshot], dict[str, dict[str, int]]]:
    """Every account's snapshot by account id, and every identity's account id by kind and
    value, from one consistent read: the same content as ``iter_snapshots`` and
    ``all_identities``, built straight into the dictionaries the cache keeps (no list of every
    row or snapshot on the way). Objects are shared where equal: tariffs, increases' absence,
    time zones, credit limits and minimum balances (operators set few distinct ones), an
    identity's account id and, when they are equal, its value and the account's name."""
    entries: dict[int, AccountSnapshot] = {}
    index: dict[str, dict[str, int]] = {kind.value: {} for kind in IdentityKind}
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        tariffs: dict[int | None, Tariff] = {
            r[0]: _tariff(r[1], r[2], r[3], r[4], r[5], r[6])
            for r in await conn.fetch(_BULK_TARIFFS)
        }
        tariffs[None] = _tariff(0, 1, 0, 0, 0, 0)  # what the view gives without a tariff
        increases = {
            r[0]: TemporaryIncrease(valid_until=r[3], amount=r[1], percent_bp=r[2])
            for r in await conn.fetch(_BULK_INCREASES)
        }
        class_plans: dict[int | None, int] = {
            r[0]: r[1] for r in await conn.fetch(_BULK_CLASS_PLANS)
        }
        statuses, bases = _STATUSES, _BASES
        balance_basis = LimitBasis.BALANCE
        zones: dict[str, tzinfo] = {}
        shared_terms: dict[tuple[Any, ...], AccountTerms] = {}
        build = AccountSnapshot.trusted
        cursor = await conn.cursor(_BULK_ACCOUNTS)
        while rows := await cursor.fetch(batch_size):
            for (
                account,
                name,
                status,
                balance,
                credit_limit,
                min_balance,
                basis,
                row_unbilled,
                row_unbilled_period,
                time_zone,
                max_sessions,
                max_setups,
                tariff_id,
                own_plan,
                class_id,
                rate_up,
                rate_down,
            ) in rows:
                tz = zones.get(time_zone)
                if tz is None:
                    tz = zones[time_zone] = zone(time_zone)
                limit_basis = bases[basis]
                # The unbilled figure only matters on the unbilled basis; dropping it elsewhere
                # lets accounts with equal settings share one terms object.
                unbilled, unbilled_period = (
                    (0, None)
                    if limit_basis is balance_basis
                    else (row_unbilled, row_unbilled_period)
                )
                increase = increases.get(account)
                rate_plan = own_plan if own_plan is not None else class_plans.get(class_id)
                terms_key = (
                    status,
                    credit_limit,
                    min_balance,
                    basis,
                    unbilled,
                    unbilled_period,
                    time_zone,
                    increase,
                    max_sessions,
                    max_setups,
                    tariff_id,
                    rate_plan,
                    rate_up,
                    rate_down,
                )
                terms = shared_terms.get(terms_key)
                if terms is None:
                    terms = shared_terms[terms_key] = AccountTerms(
                        status=statuses[status],
                        credit_limit=credit_limit,
                        min_balance=min_balance,
                        limit_basis=limit_basis,
                        unbilled=unbilled,
                        unbilled_period=unbilled_period,
                        time_zone=tz,
                        temporary_increase=increase,
                        max_sessions=max_sessions,
                        max_setups_per_s=max_setups,
                        tariff=tariffs[tariff_id],
                        rate_plan_id=rate_plan,
                        rate_limit=_rate_limit(rate_up, rate_down),
                    )
                entries[account] = build(account, name, balance, terms)
            if len(entries) % 100_000 < len(rows):
                log.info("loading accounts loaded=%d", len(entries))
        del shared_terms
        cursor = await conn.cursor(_BULK_IDENTITIES)
        while rows := await cursor.fetch(batch_size):
            for kind, text, account_id in rows:
                owner = entries.get(account_id)
                if owner is None:
                    key, account = text, account_id
                else:
                    # The snapshot's objects, not equal copies: a million of each add up.
                    key = owner.name if owner.name == text else text
                    account = owner.account_id
                by_value = index.get(kind)
                if by_value is None:
                    by_value = index[kind] = {}
                by_value[key] = account
    return entries, index


async def load_credentials(db: Executor) -> dict[tuple[str, str], str]:
    """Every stored credential by (identity kind, normalized value): only the identities that
    have one (few: most are checked for credit only), so the cache can tell at once whether an
    Access-Request must prove a password."""
    rows = await db.fetch(_CREDENTIALS)
    return {(r["kind"], r["value"]): r["credential"] for r in rows}


async def credential_of(db: Executor, kind: IdentityKind, value: str) -> str | None:
    """One identity's stored credential (``value`` in normal form), or None."""
    found: str | None = await db.fetchval(
        "SELECT credential FROM account_identities WHERE kind = $1 AND value = $2",
        kind.value,
        value,
    )
    return found


# --- Administration (the CLI and the demo data) ------------------------------------------------


async def account_id(db: Executor, name: str) -> int:
    found: int | None = await db.fetchval("SELECT id FROM accounts WHERE name = $1", name)
    if found is None:
        raise NotFound(f"no account named {name!r}")
    return found


async def operator_id(db: Executor, name: str | None) -> int | None:
    """The id of the operator called ``name``; ``None`` for ``None`` (the owner acting directly)."""
    if name is None:
        return None
    found: int | None = await db.fetchval("SELECT id FROM operators WHERE name = $1", name)
    if found is None:
        raise NotFound(f"no operator named {name!r} (create it with 'ocs operator create {name}')")
    return found


async def account_class_id(db: Executor, name: str) -> int:
    found: int | None = await db.fetchval("SELECT id FROM account_classes WHERE name = $1", name)
    if found is None:
        raise NotFound(
            f"no account class named {name!r} (create it with 'ocs account-class set {name}')"
        )
    return found


async def tariff_id(db: Executor, name: str) -> int:
    found: int | None = await db.fetchval("SELECT id FROM tariffs WHERE name = $1", name)
    if found is None:
        raise NotFound(f"no tariff named {name!r} (create it with 'ocs tariff set {name} ...')")
    return found


TransfersSetting: TypeAlias = Literal["yes", "no", "class"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountSettings:
    """Settings an operator may give an account; ``None`` leaves a setting as it is.

    ``account_class`` ``""`` removes the class; ``transfers`` is whether the account may send
    and receive subscriber-to-subscriber transfers: yes, no, or as its class says."""

    status: AccountStatus | None = None
    credit_limit: int | None = None
    min_balance: int | None = None
    limit_basis: LimitBasis | None = None
    time_zone: str | None = None
    max_sessions: int | None = None
    max_setups_per_s: int | None = None
    tariff: str | None = None
    account_class: str | None = None
    transfers: TransfersSetting | None = None
    rate_limit_kbps: tuple[int, int] | None = None  # (up, down); (0, 0) removes it
    rate_plan: str | None = None  # "" removes the account's own plan (its class's then applies)
    currency: str | None = None  # ISO 4217


def _currency(code: str | None) -> str | None:
    if code is None:
        return None
    try:
        return parse_currency(code)
    except CurrencyError as exc:
        raise StoreError(str(exc)) from None


async def rate_plan_id(db: Executor, name: str) -> int:
    found: int | None = await db.fetchval("SELECT id FROM rate_plans WHERE name = $1", name)
    if found is None:
        raise NotFound(
            f"no rate plan named {name!r} (create it with 'ocs rate-plan create {name} "
            "--currency CODE')"
        )
    return found


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
    operator: str | None = None,
) -> int:
    """Create an account; its credit limit goes through the history like any other change."""
    if settings.time_zone is not None:
        _check_time_zone(settings.time_zone)
    async with conn.transaction():
        tariff = await tariff_id(conn, settings.tariff) if settings.tariff else None
        klass = (
            await account_class_id(conn, settings.account_class) if settings.account_class else None
        )
        plan = await rate_plan_id(conn, settings.rate_plan) if settings.rate_plan else None
        try:
            new_id: int = await conn.fetchval(
                """INSERT INTO accounts (name, status, min_balance, limit_basis, time_zone,
                                         max_sessions, max_setups_per_s, tariff_id,
                                         account_class_id, transfers, rate_plan_id, currency)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,
                           COALESCE($12, 'USD')) RETURNING id""",
                name,
                (settings.status or AccountStatus.ACTIVE).value,
                to_decimal(settings.min_balance or 0),
                (settings.limit_basis or LimitBasis.BALANCE).value,
                settings.time_zone or "UTC",
                settings.max_sessions,
                settings.max_setups_per_s,
                tariff,
                klass,
                settings.transfers or "class",
                plan,
                _currency(settings.currency),
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(f"an account named {name!r} exists already") from None
        except asyncpg.PostgresError:
            with database_rules():  # a plan in another currency: OC004, said as the rule says
                raise
        if settings.rate_limit_kbps is not None and any(settings.rate_limit_kbps):
            await conn.execute(
                "UPDATE accounts SET rate_limit_up_kbps = $2, rate_limit_down_kbps = $3 "
                "WHERE id = $1",
                new_id,
                *settings.rate_limit_kbps,
            )
        if settings.credit_limit:
            await set_credit_limit(
                conn, new_id, settings.credit_limit, changed_by=changed_by, operator=operator
            )
    return new_id


async def update_account(
    conn: asyncpg.Connection,
    name: str,
    settings: AccountSettings,
    *,
    changed_by: str | None = None,
    operator: str | None = None,
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
        if settings.account_class is not None:
            put(
                "account_class_id",
                await account_class_id(conn, settings.account_class)
                if settings.account_class
                else None,
            )
        if settings.transfers is not None:
            put("transfers", settings.transfers)
        if settings.rate_limit_kbps is not None:
            up, down = settings.rate_limit_kbps
            put("rate_limit_up_kbps", up or None)
            put("rate_limit_down_kbps", down or None)
        if settings.rate_plan is not None:
            put(
                "rate_plan_id",
                await rate_plan_id(conn, settings.rate_plan) if settings.rate_plan else None,
            )
        if settings.currency is not None:
            put("currency", _currency(settings.currency))
        if assignments:
            values.append(acct)
            with database_rules():
                await conn.execute(
                    f"UPDATE accounts SET {', '.join(assignments)} WHERE id = ${len(values)}",
                    *values,
                )
        if settings.credit_limit is not None:
            await set_credit_limit(
                conn, acct, settings.credit_limit, changed_by=changed_by, operator=operator
            )


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


async def add_identity(
    db: Executor,
    account_name: str,
    kind: IdentityKind,
    value: str,
    *,
    credential: str | None = None,
) -> str:
    """Attach an identity; returns its normal form. Refuses one another account already has.

    ``credential`` (a stored form from ``ocs.radius.auth.stored_credential``) makes RADIUS
    check the request's password for this identity; given for an identity the account has
    already, it replaces that identity's credential."""
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
            if credential is not None:
                with database_rules():
                    await db.execute(
                        "UPDATE account_identities SET credential = $3 "
                        "WHERE kind = $1 AND value = $2",
                        kind.value,
                        normal,
                        credential,
                    )
            return normal
        raise Conflict(f"{kind.value} {normal!r} belongs to account {owner!r} already")
    try:
        with database_rules():
            await db.execute(
                "INSERT INTO account_identities (account_id, kind, value, credential) "
                "VALUES ($1, $2, $3, $4)",
                acct,
                kind.value,
                normal,
                credential,
            )
    except (asyncpg.UniqueViolationError, Conflict):
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
    operator: str | None = None,
    changed_by: str | None = None,
    now: datetime | None = None,
) -> LedgerResult:
    """Record money in or out (``amount`` in micro-units, signed as its effect on the balance).

    With ``external_id`` the call is idempotent: the same id again returns the first entry
    unchanged; the same id for a different account or amount is refused. Credits,
    promotional credits and refunds by an ``operator`` count towards the operator's daily and
    per-transaction limits, which the database enforces (``Refused``). ``now`` (default: the
    database's) dates the entry, and so decides the operator's day."""
    async with conn.transaction():
        acct = await account_id(conn, account_name)
        op = await operator_id(conn, operator)
        with database_rules():
            row = await conn.fetchrow(
                """INSERT INTO ledger_entries
                       (account_id, kind, amount, external_id, note, operator_id, changed_by,
                        created_at)
                   VALUES ($1, $2, $3, $4, $5, $6, COALESCE($7, current_user),
                           COALESCE($8, now()))
                   ON CONFLICT (external_id) DO NOTHING RETURNING id""",
                acct,
                kind,
                to_decimal(amount),
                external_id,
                note,
                op,
                changed_by,
                now,
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
    operator: str | None = None,
) -> None:
    """Set the permanent credit limit (micro-units); the history records who and why."""
    op = await operator_id(conn, operator)
    with database_rules():
        await conn.execute(
            "SELECT ocs_set_credit_limit($1, $2, $3, $4, $5)",
            account,
            to_decimal(limit),
            op,
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
    operator: str | None = None,
    now: datetime | None = None,
) -> int:
    """Give a temporary increase (an amount in micro-units, or a percentage of the positive
    permanent limit) until ``valid_until``, replacing the active one. With an ``operator`` the
    database refuses (``Refused``, naming each rule) an increase beyond the operator's allowance
    in amount or duration. Returns the increase's id."""
    op = await operator_id(conn, operator)
    with database_rules():
        new_id: int = await conn.fetchval(
            "SELECT ocs_set_temporary_credit_limit($1, $2, $3, $4, $5, $6, $7, $8)",
            account,
            to_decimal(amount) if amount is not None else None,
            percent,
            valid_until,
            op,
            changed_by,
            reason,
            now,
        )
    return new_id


@dataclass(frozen=True, slots=True)
class TransferResult:
    transfer_id: int
    from_balance: int
    to_balance: int


async def transfer(
    conn: asyncpg.Connection,
    from_account: str,
    to_account: str,
    amount: int,
    *,
    operator: str | None = None,
    changed_by: str | None = None,
    note: str | None = None,
    external_id: str | None = None,
    now: datetime | None = None,
) -> TransferResult:
    """Move ``amount`` micro-units between two subscribers in one transaction (``ocs_transfer``):
    both must allow transfers and the sender must have the available credit, else ``Refused``.
    The same ``external_id`` again returns the first transfer unchanged."""
    async with conn.transaction():
        source = await account_id(conn, from_account)
        target = await account_id(conn, to_account)
        op = await operator_id(conn, operator)
        with database_rules():
            transfer_id: int = await conn.fetchval(
                "SELECT ocs_transfer($1, $2, $3, $4, $5, $6, $7, $8)",
                source,
                target,
                to_decimal(amount),
                op,
                changed_by,
                note,
                external_id,
                now,
            )
        balances = {
            r["id"]: r["balance"]
            for r in await conn.fetch(
                "SELECT id, (balance * 1000000)::bigint AS balance FROM accounts "
                "WHERE id = ANY($1::bigint[])",
                [source, target],
            )
        }
    return TransferResult(transfer_id, balances[source], balances[target])


async def available_credit_in_database(
    db: Executor, account: int, now: datetime | None = None
) -> int:
    """``ocs_available_credit``: DESIGN §1's figure as the database computes it for its rules
    (micro-units, no reservations)."""
    value: int = await db.fetchval(
        "SELECT (ocs_available_credit($1, $2) * 1000000)::bigint", account, now
    )
    return value


# --- warning thresholds and account classes ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class WarningThreshold:
    amount: int | None  # micro-units of available credit
    percent: Decimal | None  # of the positive permanent limit (postpaid only)
    armed: bool
    fired_at: datetime | None


async def set_warning_thresholds(
    conn: asyncpg.Connection,
    account_name: str,
    amounts: Sequence[int],
    percents: Sequence[Decimal],
) -> None:
    """Replace the account's warning thresholds (an empty list removes them)."""
    acct = await account_id(conn, account_name)
    with database_rules():
        await conn.execute(
            "SELECT ocs_set_warning_thresholds($1, $2::numeric[], $3::numeric[])",
            acct,
            [to_decimal(a) for a in amounts],
            list(percents),
        )


async def warning_thresholds(db: Executor, account: int) -> list[WarningThreshold]:
    rows = await db.fetch(
        """SELECT (amount * 1000000)::bigint AS amount, percent, armed, fired_at
           FROM account_warning_thresholds WHERE account_id = $1
           ORDER BY amount DESC NULLS LAST, percent DESC""",
        account,
    )
    return [WarningThreshold(r["amount"], r["percent"], r["armed"], r["fired_at"]) for r in rows]


async def set_account_class(
    conn: asyncpg.Connection, name: str, *, transfers_allowed: bool
) -> bool:
    """Create the class or change it; returns True when it was created."""
    created: bool = await conn.fetchval(
        """INSERT INTO account_classes (name, transfers_allowed) VALUES ($1, $2)
           ON CONFLICT (name) DO UPDATE SET transfers_allowed = EXCLUDED.transfers_allowed
           RETURNING xmax = 0""",
        name,
        transfers_allowed,
    )
    return created


async def list_account_classes(db: Executor) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await db.fetch(
        """SELECT c.name, c.transfers_allowed,
                  (SELECT count(*) FROM accounts a WHERE a.account_class_id = c.id) AS accounts
           FROM account_classes c ORDER BY c.name"""
    )
    return rows


async def transfer_settings(db: Executor, account: int) -> tuple[str, str | None, bool]:
    """(the account's setting yes/no/class, its class name, whether it may transfer now)."""
    row = await db.fetchrow(
        """SELECT a.transfers, c.name AS class, ocs_transfers_allowed(a.id) AS allowed
           FROM accounts a LEFT JOIN account_classes c ON c.id = a.account_class_id
           WHERE a.id = $1""",
        account,
    )
    assert row is not None
    return row["transfers"], row["class"], row["allowed"]


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
        """SELECT h.changed_at, h.changed_by, o.name AS operator, h.temporary,
                  (h.old_limit * 1000000)::bigint AS old_limit,
                  (h.new_limit * 1000000)::bigint AS new_limit,
                  (h.temp_amount * 1000000)::bigint AS temp_amount, h.temp_percent,
                  h.valid_until, h.reason
           FROM credit_limit_history h LEFT JOIN operators o ON o.id = h.operator_id
           WHERE h.account_id = $1 ORDER BY h.changed_at, h.id""",
        account,
    )
    return rows


async def database_now(db: Executor) -> datetime:
    now: datetime = await db.fetchval("SELECT now()")
    return now
