"""Rate plans for rating by destination (issue 13): creating plans, their decks and time bands,
giving accounts and classes a plan, and "which rate applies to this number, and why".

Rules of this file:
- The database is the truth and enforces the rules (migration 0020): rates are append-only,
  a plan's decks and its accounts are in its currency (SQLSTATE OC004), bands named by rates
  exist. Functions here translate its refusals through ``database_rules``.
- ``explain_rate`` reads the plan with the daemon's own loader (``ocs.store.rates``) and looks
  the number up with the core's ``RatePlan.lookup``, so ``ocs rates show`` and
  ``GET /rates/{plan}/{number}`` answer exactly as a decision would.
- Deck imports from CSV are ``ocs.admin.rate_import``'s.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time

import asyncpg

from ocs.admin.lookup import (
    account_class_id,
    account_id,
    account_time_zone,
    database_now,
    rate_plan_id,
)
from ocs.admin.parsing import InvalidRequest, parse_moment, parse_time_zone
from ocs.core.currency import CurrencyError, parse_currency
from ocs.core.destinations import Rate, RateError, TimeBand, active_bands, next_rate_change
from ocs.core.identity import DialPlan, normalize_destination
from ocs.store.errors import Conflict, Executor, NotFound, StoreError, database_rules
from ocs.store.rates import load_rate_plan

__all__ = [
    "DeckRow",
    "PlanRow",
    "RateExplanation",
    "assign_rate_plan",
    "create_rate_plan",
    "ensure_deck",
    "explain_rate",
    "list_rate_plans",
    "plan_by_name",
    "set_band",
    "set_rate_band",
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
    """A new plan in ``currency`` (ISO 4217); a code that is not one is an ``InvalidRequest``."""
    try:
        code = parse_currency(currency)
    except CurrencyError as exc:
        raise InvalidRequest(str(exc)) from None
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
    """Every plan by name, with its decks in priority order and how many accounts and classes
    name it."""
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


async def plan_by_name(db: Executor, name: str) -> asyncpg.Record:
    """The plan's ``id``, ``name`` and ``currency``; ``NotFound`` saying how to create it."""
    row = await db.fetchrow("SELECT id, name, currency FROM rate_plans WHERE name = $1", name)
    if row is None:
        raise NotFound(
            f"no rate plan named {name!r} (create it with 'ocs rate-plan create {name} "
            "--currency CODE')"
        )
    return row


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
    """Create or change a time band of ``deck`` (validated by the core's rules first: a bad
    band is an ``InvalidRequest``)."""
    days = sorted(set(weekdays))
    try:
        TimeBand(
            name=name,
            weekdays=frozenset(days),
            start_minute=start.hour * 60 + start.minute,
            end_minute=end.hour * 60 + end.minute,
        )
    except RateError as exc:
        raise InvalidRequest(str(exc)) from None
    with database_rules():
        await conn.execute(
            """INSERT INTO rate_deck_bands (deck_id, name, weekdays, start_time, end_time)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (deck_id, name) DO UPDATE
               SET weekdays = EXCLUDED.weekdays, start_time = EXCLUDED.start_time,
                   end_time = EXCLUDED.end_time""",
            deck,
            name,
            days,
            start,
            end,
        )


async def set_rate_band(
    conn: asyncpg.Connection,
    plan: str,
    name: str,
    *,
    deck: str | None,
    weekdays: Iterable[int],
    start: time,
    end: time,
) -> None:
    """Define band ``name`` of ``plan``'s deck ``deck`` (default: the deck named as the plan,
    created and attached when missing), in one transaction."""
    async with conn.transaction():
        row = await plan_by_name(conn, plan)
        deck_id, _ = await ensure_deck(conn, row["id"], deck or plan, None)
        await set_band(conn, deck_id, name, weekdays=weekdays, start=start, end=end)


async def assign_rate_plan(
    conn: asyncpg.Connection, plan: str | None, *, account: str | None, account_class: str | None
) -> None:
    """Give an account (or a class) a rate plan; ``None`` removes it (the account's class's
    plan applies then, else its tariff). The database refuses a plan in another currency."""
    async with conn.transaction():
        plan_id = await rate_plan_id(conn, plan) if plan else None
        with database_rules():
            if account is not None:
                acct = await account_id(conn, account)
                await conn.execute(
                    "UPDATE accounts SET rate_plan_id = $1 WHERE id = $2", plan_id, acct
                )
            if account_class is not None:
                klass = await account_class_id(conn, account_class)
                await conn.execute(
                    "UPDATE account_classes SET rate_plan_id = $1 WHERE id = $2", plan_id, klass
                )


# --- which rate, and why ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RateExplanation:
    """The rate a call to ``number`` starting at ``at`` gets from ``plan``, and why.

    ``rate`` is None when no prefix of the number has a rate in force then (such a session is
    refused, NO_RATE). ``band`` is the band of the rate (None: the all-day rate);
    ``active_bands`` the deck's bands that contain ``at`` on the clock of ``time_zone``.
    ``next_change`` is the next instant a rate of the same prefix comes into force (a call
    started before it keeps ``rate``)."""

    number: str  # E.164 digits
    given: str  # as it was asked for
    plan: str
    currency: str
    at: datetime
    time_zone: str
    decks: tuple[str, ...]  # the plan's decks, in priority order
    rate: Rate | None = None
    prefix: str | None = None
    description: str | None = None
    deck: str | None = None
    skipped_decks: tuple[str, ...] = ()  # decks before ``deck`` that had no rate
    band: TimeBand | None = None
    has_bands: bool = False
    active_bands: tuple[str, ...] = ()
    next_change: datetime | None = None


async def explain_rate(
    conn: asyncpg.Connection,
    plan: str,
    number: str,
    *,
    at: str | None = None,
    time_zone: str | None = None,
    account: str | None = None,
    dial_plan: DialPlan | None = None,
) -> RateExplanation:
    """Which rate of ``plan`` prices a call to ``number`` (as a client sends it: ``+41...``,
    ``0041...``, ``sip:...@host``; national numbers through ``dial_plan``) starting ``at``
    (a date or date-time as typed, in the time zone; default: the database's now). Bands are
    matched on the clock of ``account``'s time zone, else ``time_zone``, else UTC."""
    digits = normalize_destination(number, dial_plan or DialPlan())
    if account is not None:
        zone = await account_time_zone(conn, account)
        zone_name = str(zone)
    else:
        zone_name = time_zone or "UTC"
        zone = parse_time_zone(zone_name)
    now = parse_moment(at, zone, what="at") if at else await database_now(conn)
    try:  # the bands read the local clock; a year-1 or year-9999 instant has none there
        now.astimezone(UTC), now.astimezone(zone)
    except OverflowError:
        raise InvalidRequest(f"at {at!r} is out of range") from None
    row = await plan_by_name(conn, plan)
    prefixes = [digits[:n] for n in range(len(digits) + 1)]
    loaded = await load_rate_plan(conn, row["id"], prefixes=prefixes)
    if loaded is None:  # removed since the line above: as if it had never been there
        raise NotFound(f"no rate plan named {plan!r}")
    base = RateExplanation(
        number=digits,
        given=number,
        plan=loaded.name,
        currency=loaded.currency,
        at=now,
        time_zone=zone_name,
        decks=tuple(d.name for d in loaded.decks),
    )
    match = loaded.lookup(digits, now, zone)
    if match is None:
        return base
    rate = match.rate
    deck = next(d for d in loaded.decks if d.deck_id == match.deck_id)
    description: str | None = await conn.fetchval(
        """SELECT description FROM rates WHERE deck_id = $1 AND prefix = $2 AND band = $3
           AND effective_from = $4""",
        match.deck_id,
        match.prefix,
        rate.band,
        rate.effective_from,
    )
    return RateExplanation(
        number=base.number,
        given=base.given,
        plan=base.plan,
        currency=base.currency,
        at=base.at,
        time_zone=base.time_zone,
        decks=base.decks,
        rate=rate,
        prefix=match.prefix,
        description=description or None,
        deck=deck.name,
        skipped_decks=tuple(d.name for d in loaded.decks[: loaded.decks.index(deck)]),
        band=next((b for b in deck.bands if b.name == rate.band), None),
        has_bands=bool(deck.bands),
        active_bands=tuple(sorted(active_bands(deck.bands, now, zone))),
        next_change=next_rate_change(deck, match.prefix, now),
    )
