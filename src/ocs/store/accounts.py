"""Account snapshots for the charging path: the cache's warm-up, its refreshes, identity look-ups.

Rules of this file:
- This is the daemon's side of the house: reads that build ``AccountSnapshot``s (one indexed row
  per account, or one consistent bulk pass). Administrative changes (accounts, money, limits,
  tariffs) are the service layer's, ``ocs.admin``.
- Amounts cross this boundary as integer micro-units; ``numeric`` values are read as ``bigint``
  micro-units (the ``account_snapshots`` view), so no float ever touches money.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg

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
from ocs.store.errors import Executor

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1024)
def zone(name: str) -> tzinfo:
    """A time zone by IANA name; UTC (with a warning) for a name Python does not know."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "Europe" is a directory
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
