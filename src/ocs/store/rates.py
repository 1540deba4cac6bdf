"""SQL for rate plans, rate decks, time bands and rates (issue 13).

Rules of this file:
- The database is the truth and enforces the rules (migration 0020): rates are append-only,
  a plan's decks and its accounts are in its currency (SQLSTATE OC004), bands named by rates
  exist. Functions here translate its refusals through ``database_rules``.
- ``load_rate_plan`` builds the core's ``RatePlan`` for the daemon's cache and the CLI's
  explanations alike, so ``ocs rates show`` answers exactly as a decision would.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time

import asyncpg

from ocs.core.currency import CurrencyError, parse_currency
from ocs.core.destinations import Rate, RateDeck, RateDeckBuilder, RatePlan, TimeBand
from ocs.store.accounts import (
    Conflict,
    Executor,
    NotFound,
    StoreError,
    account_class_id,
    account_id,
    database_rules,
    rate_plan_id,
)

log = logging.getLogger(__name__)

__all__ = [
    "DeckRow",
    "PlanRow",
    "assign_rate_plan",
    "create_rate_plan",
    "ensure_deck",
    "list_rate_plans",
    "load_all_rate_plans",
    "load_rate_plan",
    "rate_plan_id",
    "rate_plan_versions",
    "set_band",
]


@dataclass(frozen=True, slots=True)
class DeckRow:
    deck_id: int
    name: str
    priority: int
    prefixes: int
    rates: int


@dataclass(frozen=True, slots=True)
class PlanRow:
    plan_id: int
    name: str
    currency: str
    description: str
    accounts: int
    classes: int
    decks: tuple[DeckRow, ...]


async def create_rate_plan(
    conn: asyncpg.Connection, name: str, currency: str, description: str = ""
) -> int:
    try:
        code = parse_currency(currency)
    except CurrencyError as exc:
        raise StoreError(str(exc)) from None
    try:
        plan: int = await conn.fetchval(
            "INSERT INTO rate_plans (name, currency, description) VALUES ($1, $2, $3) RETURNING id",
            name,
            code,
            description,
        )
    except asyncpg.UniqueViolationError:
        raise Conflict(f"a rate plan named {name!r} exists already") from None
    except asyncpg.CheckViolationError:
        raise StoreError(f"{name!r} is not a rate plan name (it must not be empty)") from None
    return plan


async def list_rate_plans(db: Executor) -> list[PlanRow]:
    plans = await db.fetch(
        """SELECT p.id, p.name, p.currency, p.description,
                  (SELECT count(*) FROM accounts a WHERE a.rate_plan_id = p.id) AS accounts,
                  (SELECT count(*) FROM account_classes c WHERE c.rate_plan_id = p.id) AS classes
           FROM rate_plans p ORDER BY p.name"""
    )
    decks = await db.fetch(
        """SELECT pd.plan_id, d.id, d.name, pd.priority,
                  (SELECT count(DISTINCT prefix) FROM rates r WHERE r.deck_id = d.id) AS prefixes,
                  (SELECT count(*) FROM rates r WHERE r.deck_id = d.id) AS rates
           FROM rate_plan_decks pd JOIN rate_decks d ON d.id = pd.deck_id
           ORDER BY pd.plan_id, pd.priority"""
    )
    by_plan: dict[int, list[DeckRow]] = {}
    for r in decks:
        by_plan.setdefault(r["plan_id"], []).append(
            DeckRow(r["id"], r["name"], r["priority"], r["prefixes"], r["rates"])
        )
    return [
        PlanRow(
            p["id"],
            p["name"],
            p["currency"],
            p["description"],
            p["accounts"],
            p["classes"],
            tuple(by_plan.get(p["id"], ())),
        )
        for p in plans
    ]


async def ensure_deck(
    conn: asyncpg.Connection, plan: int, deck_name: str, priority: int | None
) -> tuple[int, bool]:
    """The deck named ``deck_name`` in ``plan``: created in the plan's currency and attached
    (at ``priority``, else after the plan's last deck) when missing; attached to the plan when
    it exists but is not in it yet. Returns (deck id, created)."""
    with database_rules():
        deck: int | None = await conn.fetchval(
            "SELECT id FROM rate_decks WHERE name = $1 FOR UPDATE", deck_name
        )
        created = deck is None
        if deck is None:
            deck = await conn.fetchval(
                """INSERT INTO rate_decks (name, currency)
                   SELECT $1, currency FROM rate_plans WHERE id = $2 RETURNING id""",
                deck_name,
                plan,
            )
            assert deck is not None
        attached = await conn.fetchval(
            "SELECT priority FROM rate_plan_decks WHERE plan_id = $1 AND deck_id = $2", plan, deck
        )
        if attached is None:
            if priority is None:
                priority = await conn.fetchval(
                    "SELECT COALESCE(max(priority), 0) + 10 FROM rate_plan_decks "
                    "WHERE plan_id = $1",
                    plan,
                )
            try:
                await conn.execute(
                    "INSERT INTO rate_plan_decks (plan_id, deck_id, priority) VALUES ($1, $2, $3)",
                    plan,
                    deck,
                    priority,
                )
            except asyncpg.UniqueViolationError:
                raise Conflict(
                    f"the plan has a deck at priority {priority} already (choose another)"
                ) from None
        elif priority is not None and priority != attached:
            try:
                await conn.execute(
                    "UPDATE rate_plan_decks SET priority = $3 WHERE plan_id = $1 AND deck_id = $2",
                    plan,
                    deck,
                    priority,
                )
            except asyncpg.UniqueViolationError:
                raise Conflict(
                    f"the plan has a deck at priority {priority} already (choose another)"
                ) from None
    return deck, created


async def set_band(
    conn: asyncpg.Connection,
    deck: int,
    name: str,
    *,
    weekdays: Iterable[int],
    start: time,
    end: time,
) -> None:
    """Create or change a time band of ``deck`` (validated by the core's rules first)."""
    TimeBand(
        name=name,
        weekdays=frozenset(weekdays),
        start_minute=start.hour * 60 + start.minute,
        end_minute=end.hour * 60 + end.minute,
    )
    with database_rules():
        await conn.execute(
            """INSERT INTO rate_deck_bands (deck_id, name, weekdays, start_time, end_time)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (deck_id, name) DO UPDATE
               SET weekdays = EXCLUDED.weekdays, start_time = EXCLUDED.start_time,
                   end_time = EXCLUDED.end_time""",
            deck,
            name,
            sorted(set(weekdays)),
            start,
            end,
        )


async def assign_rate_plan(
    conn: asyncpg.Connection, plan: str | None, *, account: str | None, account_class: str | None
) -> None:
    """Give an account (or a class) a rate plan; ``None`` removes it (the account's class's
    plan applies then, else its tariff). The database refuses a plan in another currency."""
    plan_id = await rate_plan_id(conn, plan) if plan else None
    with database_rules():
        if account is not None:
            acct = await account_id(conn, account)
            await conn.execute("UPDATE accounts SET rate_plan_id = $1 WHERE id = $2", plan_id, acct)
        if account_class is not None:
            klass = await account_class_id(conn, account_class)
            await conn.execute(
                "UPDATE account_classes SET rate_plan_id = $1 WHERE id = $2", plan_id, klass
            )


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


async def plan_by_name(db: Executor, name: str) -> asyncpg.Record:
    row = await db.fetchrow("SELECT id, name, currency FROM rate_plans WHERE name = $1", name)
    if row is None:
        raise NotFound(
            f"no rate plan named {name!r} (create it with 'ocs rate-plan create {name} "
            "--currency CODE')"
        )
    return row
