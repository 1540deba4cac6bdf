"""``ocs rate-plan`` and ``ocs rates``: rate plans, deck imports, bands, and "which rate and why".

Registered into the admin parser by ``register(subparsers)``. Each command takes
``(db, args, config)`` and returns the exit code (0 done, 1 refused, 2 bad input); the
database's refusals arrive as ``StoreError`` and the admin CLI maps them to 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date, datetime, time, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ocs.billing.rate_import import DeckFileError, import_deck, parse_deck_csv
from ocs.core.currency import CurrencyError, format_money, parse_currency
from ocs.core.destinations import RateError, active_bands, next_rate_change
from ocs.core.identity import DialPlan, IdentityError, normalize_destination
from ocs.store import accounts as account_store
from ocs.store import rates as rate_store

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2
_DAY_NAMES = ("", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _error(message: str, code: int = EXIT_USAGE) -> int:
    print(f"ocs: error: {message}", file=sys.stderr)
    return code


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r} (an IANA name such as Europe/Zurich)"
        ) from None


def _instant(text: str, zone: tzinfo) -> datetime:
    value = text.strip()
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(0), tzinfo=zone)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a date (2027-04-01) or date-time (2027-04-01T08:00[+02:00])"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)


def parse_days(text: str) -> list[int]:
    """``1-5``, ``mon-fri``, ``sat,sun``, ``6,7`` → ISO weekdays."""
    names = {n.lower(): i for i, n in enumerate(_DAY_NAMES) if n}

    def day(word: str) -> int:
        word = word.strip().lower()[:3]
        if word.isdigit() and 1 <= int(word) <= 7:
            return int(word)
        if word in names:
            return names[word]
        raise ValueError(f"--days {text!r}: {word!r} is not a weekday (1-7 or mon..sun)")

    days: set[int] = set()
    for part in text.split(","):
        first, sep, last = part.partition("-")
        if sep:
            a, b = day(first), day(last)
            days.update(range(a, b + 1) if a <= b else [*range(a, 8), *range(1, b + 1)])
        else:
            days.add(day(first))
    return sorted(days)


def _clock(text: str, what: str) -> time:
    if text.strip() == "24:00":
        return time(0)  # the end of the day is its start: 00:00 (an end at or before a start
        # crosses midnight, so "08:00-24:00" is the same band as "08:00-00:00")
    try:
        return time.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a time of day (HH:MM)") from None


def _describe_days(days: list[int]) -> str:
    if len(days) > 2 and days == list(range(days[0], days[-1] + 1)):
        return f"{_DAY_NAMES[days[0]]}-{_DAY_NAMES[days[-1]]}"
    return ",".join(_DAY_NAMES[d] for d in days)


# --- rate-plan ---------------------------------------------------------------------------------


async def cmd_rate_plan_create(db: Any, args: argparse.Namespace, config: Any) -> int:
    try:
        currency = parse_currency(args.currency)
    except CurrencyError as exc:
        return _error(str(exc))
    async with db.pool.acquire() as conn:
        await rate_store.create_rate_plan(conn, args.name, currency, args.description or "")
    print(f"created rate plan {args.name} ({currency})")
    return EXIT_OK


async def cmd_rate_plan_list(db: Any, args: argparse.Namespace, config: Any) -> int:
    async with db.pool.acquire() as conn:
        plans = await rate_store.list_rate_plans(conn)
    if not plans:
        print("no rate plans (create one with 'ocs rate-plan create NAME --currency CODE')")
        return EXIT_OK
    for plan in plans:
        users = f"{plan.accounts} account(s), {plan.classes} class(es)"
        note = f" - {plan.description}" if plan.description else ""
        print(f"{plan.name} ({plan.currency}){note}: {users}")
        for deck in plan.decks:
            print(
                f"  deck {deck.name} priority {deck.priority}: {deck.prefixes} prefixes, "
                f"{deck.rates} rates"
            )
        if not plan.decks:
            print("  no decks yet (ocs rates import PLAN FILE.csv)")
    return EXIT_OK


async def cmd_rate_plan_assign(db: Any, args: argparse.Namespace, config: Any) -> int:
    plan = None if args.plan.lower() == "none" else args.plan
    if (args.account is None) == (args.account_class is None):
        return _error("name one of --account NAME or --class NAME")
    async with db.pool.acquire() as conn:
        await rate_store.assign_rate_plan(
            conn, plan, account=args.account, account_class=args.account_class
        )
    who = f"account {args.account}" if args.account else f"class {args.account_class}"
    print(f"{who}: rate plan {plan or 'none'}")
    return EXIT_OK


# --- rates -------------------------------------------------------------------------------------


def _overrides(pairs: list[str] | None) -> dict[str, str]:
    result: dict[str, str] = {}
    for pair in pairs or []:
        field, sep, header = pair.partition("=")
        if not sep or not field or not header:
            raise ValueError(f"--column {pair!r}: expected FIELD=HEADER (e.g. prefix=Dial Code)")
        result[field.strip()] = header
    return result


class _Progress:
    """``importing 45000/100000`` on stderr, a line per tenth (a redrawn line on a terminal)."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = -1

    def __call__(self, done: int, total: int) -> None:
        tenth = 10 * done // total if total else 10
        if tenth == self.last and done != total:
            return
        self.last = tenth
        text = f"importing {done}/{total} ({100 * done // max(total, 1)}%)"
        sys.stderr.write(
            ("\r" + text + ("\n" if done == total else "")) if self.tty else text + "\n"
        )
        sys.stderr.flush()


async def cmd_rates_import(db: Any, args: argparse.Namespace, config: Any) -> int:
    try:
        zone = _zone(args.time_zone)
        overrides = _overrides(args.column)
        since = _instant(args.effective_from, zone) if args.effective_from else None
        with open(args.file, encoding="utf-8-sig", newline="") as handle:  # noqa: ASYNC230
            rows = parse_deck_csv(
                handle,
                zone=zone,
                overrides=overrides,
                default_minimum_s=args.minimum,
                default_increment_s=args.increment,
                default_effective_from=since,
            )
    except OSError as exc:
        return _error(f"cannot read {args.file}: {exc.strerror or exc}")
    except UnicodeDecodeError as exc:
        return _error(f"{args.file} is not UTF-8 text ({exc.reason})")
    except DeckFileError as exc:
        return _error(f"{args.file}: nothing imported:\n{exc}")
    except ValueError as exc:
        return _error(str(exc))
    print(f"checked {args.file}: {len(rows)} rates", file=sys.stderr)
    async with db.pool.acquire() as conn:
        try:
            result = await import_deck(
                conn,
                args.plan,
                rows,
                deck_name=args.deck,
                priority=args.priority,
                progress=_Progress(),
                dry_run=args.dry_run,
            )
        except DeckFileError as exc:
            return _error(f"{args.file}: nothing imported:\n{exc}")
    verb = "would add" if args.dry_run else "added"
    print(
        f"{'dry run: ' if args.dry_run else ''}deck {result.deck}"
        f"{' (new)' if result.deck_created else ''} of plan {args.plan}: {verb} "
        f"{result.inserted} rates, {result.unchanged} unchanged (already there); "
        f"{result.prefixes} prefixes in the deck"
        + ("; nothing was written" if args.dry_run else f" (from {os.path.basename(args.file)})")
    )
    return EXIT_OK


async def cmd_rates_band(db: Any, args: argparse.Namespace, config: Any) -> int:
    try:
        days = parse_days(args.days)
        start, end = _clock(args.start, "--from"), _clock(args.end, "--to")
    except ValueError as exc:
        return _error(str(exc))
    async with db.pool.acquire() as conn, conn.transaction():
        plan = await rate_store.plan_by_name(conn, args.plan)
        deck, _ = await rate_store.ensure_deck(conn, plan["id"], args.deck or args.plan, None)
        try:
            await rate_store.set_band(conn, deck, args.name, weekdays=days, start=start, end=end)
        except RateError as exc:
            return _error(str(exc))
    print(
        f"deck {args.deck or args.plan}: band {args.name} {_describe_days(days)} "
        f"{start:%H:%M}-{end:%H:%M} (on each account's own clock)"
    )
    return EXIT_OK


async def cmd_rates_show(db: Any, args: argparse.Namespace, config: Any) -> int:
    try:
        dial_plan = DialPlan(
            country_code=args.country_code or "",
            international_prefix=args.international_prefix,
            national_prefix=args.national_prefix or "",
        )
        number = normalize_destination(args.number, dial_plan)
    except IdentityError as exc:
        return _error(str(exc))
    async with db.pool.acquire() as conn:
        zone_name = args.time_zone
        if args.account:
            snapshot = await account_store.snapshot_by_name(conn, args.account)
            if snapshot is None:
                return _error(f"no account named {args.account!r}", EXIT_REFUSED)
            zone_name = str(snapshot.time_zone)
        try:
            zone = _zone(zone_name or "UTC")
            now = (
                _instant(args.at, zone)
                if args.at
                else await conn.fetchval("SELECT now()")  # the database's clock decides
            )
        except ValueError as exc:
            return _error(str(exc))
        row = await rate_store.plan_by_name(conn, args.plan)
        prefixes = [number[:n] for n in range(len(number) + 1)]
        plan = await rate_store.load_rate_plan(conn, row["id"], prefixes=prefixes)
        assert plan is not None
        match = plan.lookup(number, now, zone)
        currency = plan.currency
        print(
            f"number        {number}" + (f" (from {args.number})" if args.number != number else "")
        )
        print(
            f"plan          {plan.name} ({currency}), at {now.isoformat()} in {zone_name or 'UTC'}"
        )
        if match is None:
            decks = ", ".join(d.name for d in plan.decks) or "the plan has no decks"
            print(f"rate          none: no prefix of {number} has a rate in force ({decks})")
            return EXIT_REFUSED
        rate = match.rate
        deck = next(d for d in plan.decks if d.deck_id == match.deck_id)
        description = await conn.fetchval(
            """SELECT description FROM rates WHERE deck_id = $1 AND prefix = $2 AND band = $3
               AND effective_from = $4""",
            match.deck_id,
            match.prefix,
            rate.band,
            rate.effective_from,
        )
        skipped = [d.name for d in plan.decks[: plan.decks.index(deck)]]
        print(
            f"rate          {format_money(rate.price_per_minute, currency)} per minute, billed "
            f"{rate.minimum_s}/{rate.increment_s}, connection fee "
            f"{format_money(rate.connection_fee, currency)}"
        )
        print(
            f"why           prefix {match.prefix or '(empty: every number)'}"
            + (f" ({description})" if description else "")
            + f" in deck {deck.name}"
            + (f", after deck(s) {', '.join(skipped)} had none" if skipped else "")
        )
        print(f"in force      since {rate.effective_from.isoformat()}")
        if deck.bands:
            active = active_bands(deck.bands, now, zone)
            band = next((b for b in deck.bands if b.name == rate.band), None)
            if band is not None:
                days = sorted(band.weekdays)
                print(
                    f"band          {band.name} ({_describe_days(days)} "
                    f"{band.start_minute // 60:02d}:{band.start_minute % 60:02d}-"
                    f"{band.end_minute // 60:02d}:{band.end_minute % 60:02d} local)"
                )
            else:
                print(
                    "band          all day (no band with a rate for this prefix is on now"
                    + (f"; on now: {', '.join(sorted(active))}" if active else "")
                    + ")"
                )
        change = next_rate_change(deck, match.prefix, now)
        if change is not None:
            print(f"next change   {change.isoformat()} (a call started before keeps this rate)")
    return EXIT_OK


# --- parsers -----------------------------------------------------------------------------------


def register(top: Any) -> None:
    """Add ``rate-plan`` and ``rates`` to the admin CLI's subparsers."""
    plans = top.add_parser("rate-plan", help="rate plans (rating by destination)").add_subparsers(
        dest="sub", required=True, metavar="SUB"
    )
    p = plans.add_parser("create", help="create a rate plan in a currency")
    p.add_argument("name")
    p.add_argument("--currency", required=True, metavar="CODE", help="ISO 4217, e.g. EUR")
    p.add_argument("--description", metavar="TEXT")
    p.set_defaults(func=cmd_rate_plan_create)
    plans.add_parser("list", help="rate plans, their decks and users").set_defaults(
        func=cmd_rate_plan_list
    )
    p = plans.add_parser(
        "assign",
        help="give an account or an account class a rate plan ('none' removes it)",
        description="An account uses its own plan, else its class's, else its tariff. The plan "
        "must be in the account's currency.",
    )
    p.add_argument("plan", metavar="PLAN|none")
    p.add_argument("--account", metavar="NAME")
    p.add_argument("--class", dest="account_class", metavar="NAME")
    p.set_defaults(func=cmd_rate_plan_assign)

    rates = top.add_parser("rates", help="rate decks: import, time bands, lookup").add_subparsers(
        dest="sub", required=True, metavar="SUB"
    )
    p = rates.add_parser(
        "import",
        help="import a rate deck CSV into a plan (one transaction)",
        description="Columns by header: prefix, description, price_per_minute, minimum, "
        "increment, connection_fee, effective_from, band (A2Billing, MagnusBilling, ASTPP and "
        "CGRateS headers are recognised). Rates are never changed in place: schedule a new "
        "price with a later effective_from.",
    )
    p.add_argument("plan")
    p.add_argument("file", metavar="FILE.csv")
    p.add_argument("--deck", metavar="NAME", help="the deck to add to (default: the plan's name)")
    p.add_argument("--priority", type=int, metavar="N", help="the deck's place (lowest first)")
    p.add_argument(
        "--effective-from", metavar="WHEN", help="for rows without one (default: the import)"
    )
    p.add_argument("--time-zone", default="UTC", metavar="ZONE", help="for dates without an offset")
    p.add_argument("--minimum", type=int, default=0, metavar="S", help="default minimum (0)")
    p.add_argument("--increment", type=int, default=1, metavar="S", help="default increment (1)")
    p.add_argument(
        "--column", action="append", metavar="FIELD=HEADER", help="map another header to a field"
    )
    p.add_argument("--dry-run", action="store_true", help="check everything, write nothing")
    p.set_defaults(func=cmd_rates_import)

    p = rates.add_parser("band", help="define a time band (peak, off-peak ...) of a plan's deck")
    p.add_argument("plan")
    p.add_argument("name")
    p.add_argument("--days", required=True, metavar="1-5|mon-fri|sat,sun")
    p.add_argument("--from", dest="start", required=True, metavar="HH:MM")
    p.add_argument(
        "--to", dest="end", required=True, metavar="HH:MM", help="at or before --from: next day"
    )
    p.add_argument("--deck", metavar="NAME", help="default: the plan's name")
    p.set_defaults(func=cmd_rates_band)

    p = rates.add_parser("show", help="which rate applies to a number now, and why")
    p.add_argument("plan")
    p.add_argument("number", help="as a client sends it: +41..., 0041..., sip:...@host")
    p.add_argument("--at", metavar="WHEN", help="another instant than now")
    p.add_argument("--time-zone", metavar="ZONE", help="whose clock the bands use (UTC)")
    p.add_argument("--account", metavar="NAME", help="use this account's time zone")
    p.add_argument("--country-code", metavar="CC", help="for national numbers (0...)")
    p.add_argument("--national-prefix", metavar="0")
    p.add_argument("--international-prefix", default="00", metavar="00")
    p.set_defaults(func=cmd_rates_show)


__all__ = ["register"]
