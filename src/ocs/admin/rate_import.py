"""Rate deck import from CSV (``ocs rates import PLAN FILE.csv``).

The file has a header row; its columns are found by name, so the usual deck layouts load as
they are exported:

- prefix (required): prefix; dialprefix, code, pattern (ASTPP ``^44.*``), destination_prefix
- description: description; destination, comment, name
- price per minute (required): price_per_minute; rateinitial (A2Billing, MagnusBilling), rate,
  cost, price, sell_rate, per_minute_cost
- minimum: minimum; initblock, init_inc, initial_increment
- increment: increment; billingblock, inc, rate_increment (CGRateS RateIncrement)
- connection fee: connection_fee; connectcharge, connectcost, connect_fee (CGRateS), setup_fee
- effective from: effective_from; startdate, activation_date, valid_from, effective_date
- band: band; time_band
- rate unit: rate_unit (CGRateS RateUnit: the price is per this many seconds, ``60s``)

Headers are compared without case, spaces, ``_`` or ``-``; ``--column field=HEADER`` maps any
other. The delimiter (``,`` ``;`` tab ``|``) is taken from the header line. Missing minimum and
increment take the command's defaults; a missing effective-from is the import's own instant
(or ``--effective-from``); a date without an offset is in ``--time-zone``.

The whole file is checked first and every problem is reported with its line number (at most
``max_errors``); then it is written in one transaction (COPY into a staging table, one INSERT),
so an error leaves nothing half-imported. Rates are never changed in place: a row equal to one
already in the deck is skipped (importing a file twice is harmless); a row with the same
prefix, band and effective-from but another price is refused with its line number.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, tzinfo
from decimal import Decimal, InvalidOperation

import asyncpg

from ocs.admin.rates import ensure_deck, plan_by_name
from ocs.core.destinations import valid_prefix
from ocs.core.money import MICROS_PER_UNIT, AmountError, parse_amount, to_decimal

FIELDS: tuple[str, ...] = (
    "prefix",
    "description",
    "price_per_minute",
    "minimum",
    "increment",
    "connection_fee",
    "effective_from",
    "band",
    "rate_unit",
)
_ALIASES: dict[str, tuple[str, ...]] = {
    "prefix": ("prefix", "dialprefix", "code", "pattern", "destinationprefix", "dialcode"),
    "description": ("description", "destination", "comment", "name", "destinationname"),
    "price_per_minute": (
        "priceperminute",
        "rateinitial",
        "rate",
        "cost",
        "price",
        "sellrate",
        "perminutecost",
        "ratepermin",
        "rateperminute",
    ),
    "minimum": ("minimum", "minimums", "initblock", "initinc", "initialincrement", "minseconds"),
    "increment": ("increment", "increments", "billingblock", "inc", "rateincrement"),
    "connection_fee": (
        "connectionfee",
        "connectcharge",
        "connectcost",
        "connectfee",
        "connectioncost",
        "setupfee",
    ),
    "effective_from": (
        "effectivefrom",
        "startdate",
        "activationdate",
        "validfrom",
        "effectivedate",
    ),
    "band": ("band", "timeband"),
    "rate_unit": ("rateunit",),
}
_HEADER_JUNK = re.compile(r"[\s_\-#]")


class DeckFileError(ValueError):
    """The file cannot be imported; ``problems`` are line-numbered messages."""

    def __init__(self, problems: list[str], more: int = 0) -> None:
        self.problems = problems
        self.more = more
        tail = f"\n... and {more} more" if more else ""
        super().__init__("\n".join(problems) + tail)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeckLine:
    line: int
    prefix: str
    description: str
    price_per_minute: int  # micro-units
    minimum_s: int
    increment_s: int
    connection_fee: int
    band: str
    effective_from: datetime | None  # None: the import's instant


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportResult:
    deck: str
    deck_created: bool
    read: int
    inserted: int
    unchanged: int
    prefixes: int


def _norm(header: str) -> str:
    return _HEADER_JUNK.sub("", header.strip().lstrip("\ufeff")).lower()


def map_header(header: list[str], overrides: dict[str, str] | None = None) -> dict[str, int]:
    """Column index of each field found in ``header`` (overrides: field → header text)."""
    positions = {_norm(h): i for i, h in reversed(list(enumerate(header)))}
    found: dict[str, int] = {}
    for field, text in (overrides or {}).items():
        if field not in FIELDS:
            raise DeckFileError(
                [f"--column {field}=...: unknown field (one of {', '.join(FIELDS)})"]
            )
        if _norm(text) not in positions:
            raise DeckFileError([f"line 1: no column {text!r} for {field} in the header"])
        found[field] = positions[_norm(text)]
    for field, names in _ALIASES.items():
        if field in found:
            continue
        for name in names:
            if name in positions and positions[name] not in found.values():
                found[field] = positions[name]
                break
    missing = [f for f in ("prefix", "price_per_minute") if f not in found]
    if missing:
        raise DeckFileError(
            [
                f"line 1: no {' and no '.join(missing)} column in the header "
                f"({', '.join(h.strip() for h in header)}); name it with --column FIELD=HEADER"
            ]
        )
    return found


def _delimiter(first_line: str) -> str:
    counts = {d: first_line.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _prefix(text: str) -> str:
    value = text.strip().removeprefix("^").removesuffix(".*").removesuffix("*").lstrip("+")
    if not valid_prefix(value):
        raise ValueError(f"prefix {text!r} is not 0 to 15 digits")
    return value


def _seconds(text: str, what: str, default: int, minimum: int) -> int:
    value = text.strip().lower().removesuffix("s")
    if not value:
        return default
    if not value.isdigit() or int(value) < minimum:
        raise ValueError(f"{what} {text!r} is not a whole number of seconds >= {minimum}")
    return int(value)


def _price(text: str, unit_s: int, what: str) -> int:
    if not text.strip():
        raise ValueError(f"{what} is empty")
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"{what} {text!r} is not a decimal number") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"{what} {text!r} must be a number >= 0")
    per_minute = value * 60 / unit_s
    micros = per_minute * MICROS_PER_UNIT
    if micros != micros.to_integral_value():
        raise ValueError(
            f"{what} {text!r} is not a whole number of micro-units per minute "
            f"(at most 6 decimal places{' after converting to a minute' if unit_s != 60 else ''})"
        )
    return int(micros)


def _instant(text: str, zone: tzinfo) -> datetime | None:
    value = text.strip()
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("/", "-"))
    except ValueError:
        raise ValueError(
            f"effective from {text!r} is not a date or date and time (2027-04-01 or "
            "2027-04-01 00:00:00, optionally with an offset)"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=zone)


def parse_deck_csv(
    handle: Iterable[str],
    *,
    zone: tzinfo,
    overrides: dict[str, str] | None = None,
    default_minimum_s: int = 0,
    default_increment_s: int = 1,
    default_effective_from: datetime | None = None,
    max_errors: int = 20,
) -> list[DeckLine]:
    """Every rate of the file, or ``DeckFileError`` with every problem found (module rules)."""
    lines = iter(handle)
    first = next(lines, None)
    if first is None:
        raise DeckFileError(["line 1: the file is empty (a header row is needed)"])
    delimiter = _delimiter(first)
    reader = csv.reader(_chain(first, lines), delimiter=delimiter)
    header = next(reader)
    columns = map_header(header, overrides)
    problems: list[str] = []
    more = 0
    seen: dict[tuple[str, str, datetime | None], int] = {}
    rows: list[DeckLine] = []

    def cell(record: list[str], field: str) -> str:
        index = columns.get(field)
        return record[index] if index is not None and index < len(record) else ""

    for record in reader:
        line = reader.line_num
        if not any(c.strip() for c in record):
            continue
        try:
            if len(record) < len(header):
                raise ValueError(f"{len(record)} columns, the header has {len(header)}")
            prefix = _prefix(cell(record, "prefix"))
            unit = _seconds(cell(record, "rate_unit"), "rate unit", 60, 1)
            price = _price(cell(record, "price_per_minute"), unit, "price")
            minimum = _seconds(cell(record, "minimum"), "minimum", default_minimum_s, 0)
            increment = _seconds(cell(record, "increment"), "increment", default_increment_s, 1)
            fee_text = cell(record, "connection_fee").strip()
            try:
                fee = parse_amount(fee_text) if fee_text else 0
            except AmountError as exc:
                raise ValueError(f"connection fee: {exc}") from None
            if fee < 0:
                raise ValueError(f"connection fee {fee_text!r} must be >= 0")
            since = _instant(cell(record, "effective_from"), zone) or default_effective_from
            band = cell(record, "band").strip()
        except ValueError as exc:
            if len(problems) < max_errors:
                problems.append(f"line {line}: {exc}")
            else:
                more += 1
            continue
        key = (prefix, band, since)
        if key in seen:
            message = (
                f"line {line}: prefix {prefix or '(empty)'}"
                f"{' band ' + band if band else ''} repeats line {seen[key]} "
                "(give one of them another effective_from)"
            )
            if len(problems) < max_errors:
                problems.append(message)
            else:
                more += 1
            continue
        seen[key] = line
        rows.append(
            DeckLine(
                line=line,
                prefix=prefix,
                description=cell(record, "description").strip(),
                price_per_minute=price,
                minimum_s=minimum,
                increment_s=increment,
                connection_fee=fee,
                band=band,
                effective_from=since,
            )
        )
    if problems:
        raise DeckFileError(problems, more)
    if not rows:
        raise DeckFileError(["the file has a header but no rates"])
    return rows


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest


# --- writing ----------------------------------------------------------------------------------

_STAGING = """CREATE TEMP TABLE rate_import (
    line integer, prefix text, description text, price_per_minute numeric(20, 6),
    minimum_s integer, increment_s integer, connection_fee numeric(20, 6), band text,
    effective_from timestamptz
) ON COMMIT DROP"""
_STAGING_COLUMNS = (
    "line",
    "prefix",
    "description",
    "price_per_minute",
    "minimum_s",
    "increment_s",
    "connection_fee",
    "band",
    "effective_from",
)
_SAME_KEY = """r.deck_id = $1 AND r.prefix = i.prefix AND r.band = i.band
               AND r.effective_from = COALESCE(i.effective_from, now())"""
_SAME_FIGURES = """r.price_per_minute = i.price_per_minute AND r.minimum_s = i.minimum_s
                   AND r.increment_s = i.increment_s AND r.connection_fee = i.connection_fee"""


async def import_deck(
    conn: asyncpg.Connection,
    plan_name: str,
    rows: list[DeckLine],
    *,
    deck_name: str | None = None,
    priority: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    dry_run: bool = False,
    max_errors: int = 20,
) -> ImportResult:
    """Write ``rows`` into the deck (default: named as the plan) of ``plan_name`` in one
    transaction; with ``dry_run`` everything is checked, in the database too, and rolled back."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        result = await _import(
            conn,
            plan_name,
            rows,
            deck_name=deck_name or plan_name,
            priority=priority,
            progress=progress,
            max_errors=max_errors,
        )
    except BaseException:
        await transaction.rollback()
        raise
    if dry_run:
        await transaction.rollback()
    else:
        await transaction.commit()
    return result


async def _import(
    conn: asyncpg.Connection,
    plan_name: str,
    rows: list[DeckLine],
    *,
    deck_name: str,
    priority: int | None,
    progress: Callable[[int, int], None] | None,
    max_errors: int,
) -> ImportResult:
    plan = await plan_by_name(conn, plan_name)
    deck, created = await ensure_deck(conn, plan["id"], deck_name, priority)
    bands = {
        r["name"]
        for r in await conn.fetch("SELECT name FROM rate_deck_bands WHERE deck_id = $1", deck)
    }
    unknown = [r for r in rows if r.band and r.band not in bands]
    if unknown:
        known = ", ".join(sorted(bands)) or "none; add one with 'ocs rates band'"
        raise DeckFileError(
            [
                f"line {r.line}: band {r.band!r} is not a band of deck {deck_name} ({known})"
                for r in unknown[:max_errors]
            ],
            max(len(unknown) - max_errors, 0),
        )
    await conn.execute(_STAGING)
    total = len(rows)

    def records() -> Iterator[tuple[object, ...]]:
        for done, r in enumerate(rows, 1):
            yield (
                r.line,
                r.prefix,
                r.description,
                to_decimal(r.price_per_minute),
                r.minimum_s,
                r.increment_s,
                to_decimal(r.connection_fee),
                r.band,
                r.effective_from,
            )
            if progress is not None and (done % 1000 == 0 or done == total):
                progress(done, total)

    await conn.copy_records_to_table("rate_import", records=records(), columns=_STAGING_COLUMNS)
    conflicts = await conn.fetch(
        f"""SELECT i.line, i.prefix, i.band, r.effective_from, r.price_per_minute,
                   r.minimum_s, r.increment_s, r.connection_fee
            FROM rate_import i JOIN rates r ON {_SAME_KEY}
            WHERE NOT ({_SAME_FIGURES}) ORDER BY i.line LIMIT {max_errors + 1}""",
        deck,
    )
    if conflicts:
        problems = [
            f"line {c['line']}: prefix {c['prefix'] or '(empty)'}"
            f"{' band ' + c['band'] if c['band'] else ''} already has a rate from "
            f"{c['effective_from'].isoformat()} ({c['price_per_minute']}/min "
            f"{c['minimum_s']}/{c['increment_s']}, fee {c['connection_fee']}); rates are never "
            "changed: import the new price with a later effective_from"
            for c in conflicts[:max_errors]
        ]
        raise DeckFileError(problems, max(len(conflicts) - max_errors, 0))
    status = await conn.execute(
        f"""INSERT INTO rates (deck_id, prefix, description, price_per_minute, minimum_s,
                               increment_s, connection_fee, band, effective_from)
            SELECT $1, i.prefix, i.description, i.price_per_minute, i.minimum_s, i.increment_s,
                   i.connection_fee, i.band, COALESCE(i.effective_from, now())
            FROM rate_import i
            WHERE NOT EXISTS (SELECT 1 FROM rates r WHERE {_SAME_KEY})""",
        deck,
    )
    inserted = int(status.split()[-1])
    prefixes = await conn.fetchval(
        "SELECT count(DISTINCT prefix) FROM rates WHERE deck_id = $1", deck
    )
    return ImportResult(
        deck=deck_name,
        deck_created=created,
        read=total,
        inserted=inserted,
        unchanged=total - inserted,
        prefixes=prefixes,
    )


__all__ = [
    "FIELDS",
    "DeckFileError",
    "DeckLine",
    "ImportResult",
    "import_deck",
    "map_header",
    "parse_deck_csv",
]
