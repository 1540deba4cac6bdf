"""Rate plans for the charging path: the core's ``RatePlan``s read from PostgreSQL (issue 13).

Rules of this file:
- Reads only, as ``ocs.store.accounts`` is for accounts: the daemon's cache (``RatePlanFeed``)
  loads every plan at start and one plan per change; ``ocs.admin.rates`` loads one number's
  prefixes to explain a rate. Administrative changes (plans, decks, bands, imports) are the
  service layer's, ``ocs.admin.rates`` and ``ocs.admin.rate_import``.
- ``load_rate_plan`` reads one consistent snapshot (repeatable read) and builds the plan the
  daemon decides with, so an explanation answers exactly as a decision would.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, time

import asyncpg

from ocs.core.destinations import Rate, RateDeck, RateDeckBuilder, RatePlan, TimeBand
from ocs.store.errors import Executor

log = logging.getLogger(__name__)

__all__ = [
    "load_all_rate_plans",
    "load_rate_plan",
    "rate_plan_versions",
]


# --- building the core's plans ----------------------------------------------------------------

_PLAN = "SELECT id, name, currency FROM rate_plans WHERE id = $1"
_DECKS = """SELECT d.id, d.name FROM rate_plan_decks pd JOIN rate_decks d ON d.id = pd.deck_id
            WHERE pd.plan_id = $1 ORDER BY pd.priority, d.id"""
_BANDS = """SELECT b.deck_id, b.name, b.weekdays, b.start_time, b.end_time
            FROM rate_deck_bands b JOIN rate_plan_decks pd ON pd.deck_id = b.deck_id
            WHERE pd.plan_id = $1"""
_RATES = """SELECT deck_id, prefix, price_per_minute_micros, minimum_s, increment_s,
                   connection_fee_micros, band, effective_from
            FROM rate_plan_rates WHERE plan_id = $1"""


def _minute(value: time) -> int:
    return value.hour * 60 + value.minute


async def load_rate_plan(
    conn: asyncpg.Connection,
    plan_id: int,
    *,
    prefixes: list[str] | None = None,
    batch_size: int = 20_000,
) -> RatePlan | None:
    """The plan as the core's ``RatePlan``, from one consistent read; None when it is gone.

    ``prefixes`` limits the rates read to those prefixes (an explanation for one number needs
    only the prefixes of that number). Rates that share their figures share one object.
    """
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        plan = await conn.fetchrow(_PLAN, plan_id)
        if plan is None:
            return None
        decks = await conn.fetch(_DECKS, plan_id)
        bands: dict[int, list[TimeBand]] = {}
        for b in await conn.fetch(_BANDS, plan_id):
            bands.setdefault(b["deck_id"], []).append(
                TimeBand(
                    name=b["name"],
                    weekdays=frozenset(b["weekdays"]),
                    start_minute=_minute(b["start_time"]),
                    end_minute=_minute(b["end_time"]),
                )
            )
        builders = {
            d["id"]: RateDeckBuilder(deck_id=d["id"], name=d["name"], bands=bands.get(d["id"], ()))
            for d in decks
        }
        shared: dict[tuple[int, int, int, int, str, datetime], Rate] = {}
        if prefixes is None:
            cursor = await conn.cursor(_RATES, plan_id)
        else:
            cursor = await conn.cursor(_RATES + " AND prefix = ANY($2::text[])", plan_id, prefixes)
        while rows := await cursor.fetch(batch_size):
            by_deck: dict[int, list[tuple[str, Rate]]] = {}
            for deck_id, prefix, price, minimum, increment, fee, band, since in rows:
                key = (price, minimum, increment, fee, band, since)
                rate = shared.get(key)
                if rate is None:
                    rate = shared[key] = Rate(
                        price_per_minute=price,
                        minimum_s=minimum,
                        increment_s=increment,
                        connection_fee=fee,
                        band=band,
                        effective_from=since,
                    )
                by_deck.setdefault(deck_id, []).append((prefix, rate))
            for deck_id, found in by_deck.items():
                builders[deck_id].add_all(found)
    # Indexing a large deck is done in steps, letting the event loop serve between them.
    for builder in builders.values():
        for _ in builder.finish_steps():
            await asyncio.sleep(0)
    return RatePlan(
        plan_id=plan["id"],
        name=plan["name"],
        currency=plan["currency"],
        decks=tuple(RateDeck.from_builder(builders[d["id"]]) for d in decks),
    )


async def rate_plan_versions(db: Executor) -> dict[int, datetime]:
    """Every plan's change stamp (bumped by every change that can change a price)."""
    rows = await db.fetch("SELECT id, changed_at FROM rate_plans")
    return {r["id"]: r["changed_at"] for r in rows}


async def load_all_rate_plans(conn: asyncpg.Connection) -> dict[int, tuple[RatePlan, datetime]]:
    """Every plan with the change stamp it was read at."""
    versions = await rate_plan_versions(conn)
    loaded: dict[int, tuple[RatePlan, datetime]] = {}
    for plan_id, stamp in versions.items():
        plan = await load_rate_plan(conn, plan_id)
        if plan is not None:
            loaded[plan_id] = (plan, stamp)
    return loaded
