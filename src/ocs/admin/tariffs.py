"""Tariffs: prices per minute (billed per second in increments, with a minimum), per megabyte,
per session (connection fee) and per event.

Rules of this file:
- Prices are micro-units; ``set_tariff`` creates a tariff or changes only the prices given.
- A tariff change notifies every account on it (a trigger), so the daemons re-read them.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from ocs.core.money import to_decimal
from ocs.store.errors import Executor, StoreError


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
