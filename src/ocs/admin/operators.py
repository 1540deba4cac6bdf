"""Operators (seed 004, PortaBilling users): the people and systems that change money and limits.

An operator's allowances are enforced by the database (migration 0002), not here: the maximum
temporary credit-limit increase (an amount and/or a percentage of the permanent limit) and its
maximum duration, checked by ``ocs_set_temporary_credit_limit``; the daily and per-transaction
credit/refund limits, checked by triggers on ``ledger_entries`` and reset at midnight in the
operator's time zone. ``None`` means no cap; 0 means none at all. Money is in micro-units.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from ocs.core.money import to_decimal
from ocs.store.errors import Conflict, Executor, NotFound, StoreError, database_rules


@dataclass(frozen=True, slots=True, kw_only=True)
class OperatorSettings:
    """An operator's allowances. For an update, ``None`` leaves a setting as it is and the names
    in ``clear`` are set to "no cap"."""

    time_zone: str | None = None
    max_temp_increase_amount: int | None = None
    max_temp_increase_percent: Decimal | None = None
    max_temp_duration: timedelta | None = None
    daily_credit_limit: int | None = None
    transaction_credit_limit: int | None = None
    clear: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        unknown = self.clear - set(_COLUMNS)
        if unknown:
            raise ValueError(f"cannot clear {sorted(unknown)}")
        for name in ("max_temp_increase_amount", "daily_credit_limit", "transaction_credit_limit"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise StoreError(f"{name.replace('_', ' ')} cannot be negative")
        percent = self.max_temp_increase_percent
        if percent is not None and not (percent.is_finite() and 0 <= percent <= 10_000):
            raise StoreError("the maximum temporary increase percentage must be 0% to 10000%")
        if self.max_temp_duration is not None and self.max_temp_duration < timedelta(0):
            raise StoreError("the maximum temporary increase duration cannot be negative")


_COLUMNS = (
    "time_zone",
    "max_temp_increase_amount",
    "max_temp_increase_percent",
    "max_temp_duration",
    "daily_credit_limit",
    "transaction_credit_limit",
)
_MONEY = {"max_temp_increase_amount", "daily_credit_limit", "transaction_credit_limit"}


@dataclass(frozen=True, slots=True)
class Operator:
    id: int
    name: str
    time_zone: str
    max_temp_increase_amount: int | None
    max_temp_increase_percent: Decimal | None
    max_temp_duration: timedelta | None
    daily_credit_limit: int | None
    transaction_credit_limit: int | None
    created_at: datetime
    today: date  # the operator's local date at the time of the query
    used_today: int  # credits and refunds so far on ``today``

    @property
    def left_today(self) -> int | None:
        if self.daily_credit_limit is None:
            return None
        return max(self.daily_credit_limit - self.used_today, 0)


_SELECT = """
    SELECT o.id, o.name, o.time_zone,
           (o.max_temp_increase_amount * 1000000)::bigint AS max_temp_increase_amount,
           o.max_temp_increase_percent, o.max_temp_duration,
           (o.daily_credit_limit * 1000000)::bigint AS daily_credit_limit,
           (o.transaction_credit_limit * 1000000)::bigint AS transaction_credit_limit,
           o.created_at,
           (COALESCE($1::timestamptz, now()) AT TIME ZONE o.time_zone)::date AS today,
           COALESCE((SELECT (u.used * 1000000)::bigint FROM operator_daily_usage u
                     WHERE u.operator_id = o.id
                       AND u.day = (COALESCE($1::timestamptz, now())
                                    AT TIME ZONE o.time_zone)::date), 0) AS used_today
    FROM operators o
"""


def _operator(row: asyncpg.Record) -> Operator:
    return Operator(*tuple(row))


def _values(settings: OperatorSettings) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for f in fields(settings):
        if f.name == "clear":
            continue
        value = getattr(settings, f.name)
        if value is not None:
            values[f.name] = to_decimal(value) if f.name in _MONEY else value
    for name in settings.clear:
        values[name] = None
    return values


async def create_operator(conn: asyncpg.Connection, name: str, settings: OperatorSettings) -> int:
    values = _values(settings)
    values.setdefault("time_zone", "UTC")
    columns = ["name", *values]
    params = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    try:
        with database_rules():
            new_id: int = await conn.fetchval(
                f"INSERT INTO operators ({', '.join(columns)}) VALUES ({params}) RETURNING id",
                name,
                *values.values(),
            )
    except Conflict:
        raise Conflict(f"an operator named {name!r} exists already") from None
    return new_id


async def update_operator(conn: asyncpg.Connection, name: str, settings: OperatorSettings) -> None:
    values = _values(settings)
    if not values:
        return
    sets = ", ".join(f"{column} = ${i}" for i, column in enumerate(values, start=2))
    with database_rules():
        status = await conn.execute(
            f"UPDATE operators SET {sets} WHERE name = $1", name, *values.values()
        )
    if status == "UPDATE 0":
        raise NotFound(f"no operator named {name!r}")


async def get_operator(db: Executor, name: str, now: datetime | None = None) -> Operator:
    """The operator with their usage on their local day at ``now`` (default: the database's)."""
    row = await db.fetchrow(_SELECT + " WHERE o.name = $2", now, name)
    if row is None:
        raise NotFound(f"no operator named {name!r} (create it with 'ocs operator create {name}')")
    return _operator(row)


async def list_operators(db: Executor, now: datetime | None = None) -> list[Operator]:
    rows = await db.fetch(_SELECT + " ORDER BY o.name", now)
    return [_operator(r) for r in rows]
