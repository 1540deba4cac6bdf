"""``ocs rate-plan`` and ``ocs rates``: rate plans, deck imports, bands, and "which rate and why"
(rating by destination, issue 13)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ocs.admin import rate_import, rates
from ocs.admin.parsing import (
    describe_weekdays,
    parse_moment,
    parse_time_of_day,
    parse_time_zone,
    parse_weekdays,
)
from ocs.cli.common import EXIT_OK, EXIT_REFUSED, Subparsers, UsageError, group
from ocs.config import Config
from ocs.core.currency import format_money
from ocs.core.identity import DialPlan

# --- rate-plan ---------------------------------------------------------------------------------


async def cmd_rate_plan_create(db: Any, args: argparse.Namespace, config: Config) -> int:
    async with db.pool.acquire() as conn:
        await rates.create_rate_plan(conn, args.name, args.currency, args.description or "")
        plan = await rates.plan_by_name(conn, args.name)
    print(f"created rate plan {args.name} ({plan['currency']})")
    return EXIT_OK


async def cmd_rate_plan_list(db: Any, args: argparse.Namespace, config: Config) -> int:
    plans = await rates.list_rate_plans(db.pool)
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


async def cmd_rate_plan_assign(db: Any, args: argparse.Namespace, config: Config) -> int:
    plan = None if args.plan.lower() == "none" else args.plan
    if (args.account is None) == (args.account_class is None):
        raise UsageError("name one of --account NAME or --class NAME")
    async with db.pool.acquire() as conn:
        await rates.assign_rate_plan(
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
            raise UsageError(f"--column {pair!r}: expected FIELD=HEADER (e.g. prefix=Dial Code)")
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


async def cmd_rates_import(db: Any, args: argparse.Namespace, config: Config) -> int:
    zone = parse_time_zone(args.time_zone)
    overrides = _overrides(args.column)
    since = (
        parse_moment(args.effective_from, zone, what="--effective-from")
        if args.effective_from
        else None
    )
    try:
        with open(args.file, encoding="utf-8-sig", newline="") as handle:  # noqa: ASYNC230
            rows = rate_import.parse_deck_csv(
                handle,
                zone=zone,
                overrides=overrides,
                default_minimum_s=args.minimum,
                default_increment_s=args.increment,
                default_effective_from=since,
            )
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{args.file} is not UTF-8 text ({exc.reason})") from None
    except rate_import.DeckFileError as exc:
        raise UsageError(f"{args.file}: nothing imported:\n{exc}") from None
    print(f"checked {args.file}: {len(rows)} rates", file=sys.stderr)
    async with db.pool.acquire() as conn:
        try:
            result = await rate_import.import_deck(
                conn,
                args.plan,
                rows,
                deck_name=args.deck,
                priority=args.priority,
                progress=_Progress(),
                dry_run=args.dry_run,
            )
        except rate_import.DeckFileError as exc:
            raise UsageError(f"{args.file}: nothing imported:\n{exc}") from None
    verb = "would add" if args.dry_run else "added"
    print(
        f"{'dry run: ' if args.dry_run else ''}deck {result.deck}"
        f"{' (new)' if result.deck_created else ''} of plan {args.plan}: {verb} "
        f"{result.inserted} rates, {result.unchanged} unchanged (already there); "
        f"{result.prefixes} prefixes in the deck"
        + ("; nothing was written" if args.dry_run else f" (from {os.path.basename(args.file)})")
    )
    return EXIT_OK


async def cmd_rates_band(db: Any, args: argparse.Namespace, config: Config) -> int:
    days = parse_weekdays(args.days)
    start = parse_time_of_day(args.start, what="--from")
    end = parse_time_of_day(args.end, what="--to")
    async with db.pool.acquire() as conn:
        await rates.set_rate_band(
            conn, args.plan, args.name, deck=args.deck, weekdays=days, start=start, end=end
        )
    print(
        f"deck {args.deck or args.plan}: band {args.name} {describe_weekdays(days)} "
        f"{start:%H:%M}-{end:%H:%M} (on each account's own clock)"
    )
    return EXIT_OK


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


async def cmd_rates_show(db: Any, args: argparse.Namespace, config: Config) -> int:
    dial_plan = DialPlan(
        country_code=args.country_code or "",
        international_prefix=args.international_prefix,
        national_prefix=args.national_prefix or "",
    )
    async with db.pool.acquire() as conn:
        found = await rates.explain_rate(
            conn,
            args.plan,
            args.number,
            at=args.at,
            time_zone=args.time_zone,
            account=args.account,
            dial_plan=dial_plan,
        )
    currency = found.currency
    print(
        f"number        {found.number}"
        + (f" (from {found.given})" if found.given != found.number else "")
    )
    print(
        f"plan          {found.plan} ({currency}), at {found.at.isoformat()} in {found.time_zone}"
    )
    rate = found.rate
    if rate is None:
        decks = ", ".join(found.decks) or "the plan has no decks"
        print(f"rate          none: no prefix of {found.number} has a rate in force ({decks})")
        return EXIT_REFUSED
    print(
        f"rate          {format_money(rate.price_per_minute, currency)} per minute, billed "
        f"{rate.minimum_s}/{rate.increment_s}, connection fee "
        f"{format_money(rate.connection_fee, currency)}"
    )
    print(
        f"why           prefix {found.prefix or '(empty: every number)'}"
        + (f" ({found.description})" if found.description else "")
        + f" in deck {found.deck}"
        + (
            f", after deck(s) {', '.join(found.skipped_decks)} had none"
            if found.skipped_decks
            else ""
        )
    )
    print(f"in force      since {rate.effective_from.isoformat()}")
    if found.has_bands:
        band = found.band
        if band is not None:
            print(
                f"band          {band.name} ({describe_weekdays(sorted(band.weekdays))} "
                f"{_hhmm(band.start_minute)}-{_hhmm(band.end_minute)} local)"
            )
        else:
            print(
                "band          all day (no band with a rate for this prefix is on now"
                + (f"; on now: {', '.join(found.active_bands)}" if found.active_bands else "")
                + ")"
            )
    if found.next_change is not None:
        print(
            f"next change   {found.next_change.isoformat()} (a call started before keeps this rate)"
        )
    return EXIT_OK


# --- parsers -----------------------------------------------------------------------------------


def register(top: Subparsers) -> None:
    """Add ``rate-plan`` and ``rates`` to the admin CLI's commands."""
    plans = group(top, "rate-plan", "rate plans (rating by destination)")
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

    deck = group(top, "rates", "rate decks: import, time bands, lookup")
    p = deck.add_parser(
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

    p = deck.add_parser("band", help="define a time band (peak, off-peak ...) of a plan's deck")
    p.add_argument("plan")
    p.add_argument("name")
    p.add_argument("--days", required=True, metavar="1-5|mon-fri|sat,sun")
    p.add_argument("--from", dest="start", required=True, metavar="HH:MM")
    p.add_argument(
        "--to", dest="end", required=True, metavar="HH:MM", help="at or before --from: next day"
    )
    p.add_argument("--deck", metavar="NAME", help="default: the plan's name")
    p.set_defaults(func=cmd_rates_band)

    p = deck.add_parser("show", help="which rate applies to a number now, and why")
    p.add_argument("plan")
    p.add_argument("number", help="as a client sends it: +41..., 0041..., sip:...@host")
    p.add_argument("--at", metavar="WHEN", help="another instant than now")
    p.add_argument("--time-zone", metavar="ZONE", help="whose clock the bands use (UTC)")
    p.add_argument("--account", metavar="NAME", help="use this account's time zone")
    p.add_argument("--country-code", metavar="CC", help="for national numbers (0...)")
    p.add_argument("--national-prefix", metavar="0")
    p.add_argument("--international-prefix", default="00", metavar="00")
    p.set_defaults(func=cmd_rates_show)
