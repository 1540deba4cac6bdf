"""Accounts, their identities and classes: creating, changing, listing, and the overview that
``ocs account show`` and ``GET /accounts/{name}/balance`` print.

Rules of this file:
- Every function takes a connection (or the pool, for a single read) and names accounts by name;
  changes run in one transaction, so the account API can wrap them with its idempotency record.
- A credit limit given with the settings goes through ``ocs_set_credit_limit`` (the history).
- Money is integer micro-units here; ``numeric`` in PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg

from ocs.admin.limits import WarningThreshold, set_credit_limit, warning_thresholds
from ocs.admin.lookup import account_class_id, account_id, rate_plan_id, tariff_id
from ocs.core import (
    GrantLimits,
    SessionRequest,
    available_credit,
    decide,
    effective_credit_limit,
    unbilled_in_current_period,
)
from ocs.core.currency import CurrencyError, parse_currency
from ocs.core.identity import IdentityKind, normalize_identity
from ocs.core.model import AccountSnapshot, AccountStatus, CreditDecision, LimitBasis
from ocs.core.money import to_decimal
from ocs.store.accounts import snapshot_by_name
from ocs.store.errors import Conflict, Executor, NotFound, StoreError, database_rules

TransfersSetting: TypeAlias = Literal["yes", "no", "class"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountSettings:
    """Settings an operator may give an account; ``None`` leaves a setting as it is.

    ``account_class`` ``""`` removes the class; ``transfers`` is whether the account may send
    and receive subscriber-to-subscriber transfers: yes, no, or as its class says.
    ``rate_limit_kbps`` is the bandwidth (up, down) in kbit/s that data NAS are told
    (Mikrotik-Rate-Limit, WISPr); ``(0, 0)`` removes it.
    ``rate_plan`` names the account's own plan for rating by destination (``""`` removes it:
    its class's plan applies then, else its tariff); ``currency`` is an ISO 4217 code (``USD``
    when an account is created without one). The database refuses a plan in another currency
    than the account's (SQLSTATE OC004)."""

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
    rate_plan: str | None = None
    currency: str | None = None


def _currency(code: str | None) -> str | None:
    if code is None:
        return None
    try:
        return parse_currency(code)
    except CurrencyError as exc:
        raise StoreError(str(exc)) from None


def _cap(value: int | None) -> int | None:
    """A session or setup cap as stored: ``-1`` (or ``None``) is no cap."""
    return value if value is not None and value >= 0 else None


def _check_time_zone(name: str) -> None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "Europe" is a directory
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
                _cap(settings.max_sessions),
                _cap(settings.max_setups_per_s),
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
            with database_rules():
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
    id: int


async def list_accounts(
    db: Executor, *, limit: int = 1000, prefix: str = "", after: str | None = None
) -> list[AccountRow]:
    """Accounts by name, at most ``limit``, whose names start with ``prefix`` and (for the next
    page) sort after ``after``."""
    rows = await db.fetch(
        """SELECT a.name, a.status, (a.balance * 1000000)::bigint AS balance,
                  (a.credit_limit * 1000000)::bigint AS credit_limit,
                  (a.min_balance * 1000000)::bigint AS min_balance, a.limit_basis,
                  t.name AS tariff,
                  (SELECT count(*) FROM account_identities i WHERE i.account_id = a.id)
                      AS identities,
                  a.id
           FROM accounts a LEFT JOIN tariffs t ON t.id = a.tariff_id
           WHERE starts_with(a.name, $1) AND ($3::text IS NULL OR a.name > $3)
           ORDER BY a.name LIMIT $2""",
        prefix,
        limit,
        after,
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
class AccountOverview:
    """An account as ``ocs account show`` reports it: the snapshot the daemon would cache, the
    figures derived from it at ``now``, and the decision a new session would get then (assuming
    no running sessions or setups, which only the daemon counts)."""

    snapshot: AccountSnapshot
    identities: list[tuple[str, str]]
    tariff_name: str | None
    blocked_reason: str | None
    transfers: TransfersSetting
    account_class: str | None
    transfers_allowed: bool
    currency: str
    rate_plan: str | None  # the account's own plan
    class_rate_plan: str | None  # its class's, which applies when it has none of its own
    thresholds: list[WarningThreshold]
    now: datetime
    effective_limit: int
    available: int
    unbilled_this_period: int | None
    decision: CreditDecision


async def account_overview(
    db: Executor, name: str, *, now: datetime, limits: GrantLimits
) -> AccountOverview:
    """The account's figures and the core's decision for a new session at ``now``."""
    snapshot = await snapshot_by_name(db, name)
    if snapshot is None:
        raise NotFound(f"no account named {name!r}")
    row = await db.fetchrow(
        """SELECT t.name AS tariff, a.blocked_reason, a.transfers, c.name AS class,
                  ocs_transfers_allowed(a.id) AS allowed, a.currency,
                  own.name AS own_plan, inherited.name AS class_plan
           FROM accounts a LEFT JOIN tariffs t ON t.id = a.tariff_id
                LEFT JOIN account_classes c ON c.id = a.account_class_id
                LEFT JOIN rate_plans own ON own.id = a.rate_plan_id
                LEFT JOIN rate_plans inherited ON inherited.id = c.rate_plan_id
           WHERE a.id = $1""",
        snapshot.account_id,
    )
    assert row is not None
    return AccountOverview(
        snapshot=snapshot,
        identities=await identities_of(db, snapshot.account_id),
        tariff_name=row["tariff"],
        blocked_reason=row["blocked_reason"],
        transfers=row["transfers"],
        account_class=row["class"],
        transfers_allowed=row["allowed"],
        currency=row["currency"],
        rate_plan=row["own_plan"],
        class_rate_plan=row["class_plan"],
        thresholds=await warning_thresholds(db, snapshot.account_id),
        now=now,
        effective_limit=effective_credit_limit(snapshot, now),
        available=available_credit(snapshot, now),
        unbilled_this_period=unbilled_in_current_period(snapshot, now)
        if snapshot.limit_basis is LimitBasis.UNBILLED
        else None,
        decision=decide(snapshot, SessionRequest(), now, limits),
    )


async def account_settings(db: Executor, name: str) -> dict[str, Any]:
    """The settings of one account as stored (for the API's account resource)."""
    row = await db.fetchrow(
        """SELECT a.id, a.name, a.status, (a.credit_limit * 1000000)::bigint AS credit_limit,
                  (a.min_balance * 1000000)::bigint AS min_balance, a.limit_basis, a.time_zone,
                  a.max_sessions, a.max_setups_per_s, t.name AS tariff,
                  c.name AS account_class, a.transfers, a.blocked_reason,
                  (a.balance * 1000000)::bigint AS balance, a.created_at,
                  own.name AS rate_plan, COALESCE(own.name, inherited.name) AS rate_plan_in_force,
                  a.currency, a.rate_limit_up_kbps, a.rate_limit_down_kbps
           FROM accounts a LEFT JOIN tariffs t ON t.id = a.tariff_id
                LEFT JOIN account_classes c ON c.id = a.account_class_id
                LEFT JOIN rate_plans own ON own.id = a.rate_plan_id
                LEFT JOIN rate_plans inherited ON inherited.id = c.rate_plan_id
           WHERE a.name = $1""",
        name,
    )
    if row is None:
        raise NotFound(f"no account named {name!r}")
    return dict(row)
