"""Command lines: ``ocsd`` (the daemon) and ``ocs`` (administration).

Exit codes: 0 done; 1 the request was refused (unknown account, conflict, bad amount);
2 bad usage or configuration; 3 the database cannot be reached or used.
This is the only module that imports ``ocs.app``.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from ocs import __version__, rates_cli
from ocs.billing import account_import, periods
from ocs.config import Config, ConfigError, load_config
from ocs.core import (
    AccountStatus,
    GrantLimits,
    LimitBasis,
    SessionRequest,
    available_credit,
    decide,
    effective_credit_limit,
    format_amount,
    parse_amount,
)
from ocs.core.identity import IdentityError, IdentityKind
from ocs.core.model import (
    REFUSAL_TEXT,
    AccountSnapshot,
    CreditDecision,
    RefusalReason,
    ServiceUnit,
)
from ocs.core.money import AmountError
from ocs.store import accounts as store
from ocs.store import operators as operator_store
from ocs.store.database import DatabaseUnavailable, open_database
from ocs.store.demo import DEMO_ACCOUNTS, load_demo
from ocs.store.migrate import available_migrations, migrate

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_DATABASE = 0, 1, 2, 3

# The operator for scripts that do not pass --operator (not a config key: it names a person or a
# system, and differs between shells sharing one config file).
OPERATOR_ENV = "OCS_OPERATOR"


class UsageError(Exception):
    pass


# --- output ------------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table; numbers right-aligned."""
    cells = [[str(c) for c in headers], *[["" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [
        all(re.fullmatch(r"-?[\d.,]+( s)?", row[i] or "0") for row in cells[1:])
        for i in range(len(headers))
    ]
    lines = []
    for n, row in enumerate(cells):
        parts = [
            cell.rjust(widths[i]) if numeric[i] and n else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def fields(pairs: Sequence[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in pairs)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in pairs)


def describe_decision(decision: CreditDecision) -> str:
    if decision.admitted:
        unit = {ServiceUnit.TIME: "s", ServiceUnit.VOLUME: "bytes", ServiceUnit.EVENT: "events"}
        return f"admitted, grant {decision.granted_units} {unit[decision.unit]}"
    assert decision.reason is not None
    why = REFUSAL_TEXT[decision.reason]
    if decision.reason is RefusalReason.INSUFFICIENT_CREDIT:
        why += f" (available {format_amount(decision.available)})"
    return f"refused: {why}"


# --- argument types -----------------------------------------------------------------------------


def amount_arg(text: str) -> int:
    try:
        return parse_amount(text)
    except AmountError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def count_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < -1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number >= 0 (or -1 for no cap)")
    return value


def rate_limit_arg(text: str) -> tuple[int, int]:
    """UP/DOWN in kbit/s, or 'none' (given as (0, 0): remove the limit)."""
    if text.strip().lower() == "none":
        return (0, 0)
    up, sep, down = text.partition("/")
    if not sep or not up.strip().isdigit() or not down.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected UP/DOWN in kbit/s, e.g. 512/4096")
    if int(up) < 1 or int(down) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: both rates must be at least 1 kbit/s")
    return (int(up), int(down))


def seconds_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected seconds >= 0")
    return value


_DURATION = re.compile(r"(\d+)\s*([wdhm])")
_DURATION_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes"}


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``2w``, or several (``1d12h``)."""
    compact = text.strip().lower()
    parts = _DURATION.findall(compact)
    if not parts or _DURATION.sub("", compact).strip():
        raise UsageError(f"{text!r} is not a duration (expected e.g. 30d, 12h, 90m, 2w)")
    total = timedelta()
    for number, unit in parts:
        total += timedelta(**{_DURATION_UNITS[unit]: int(number)})
    return total


def duration_arg(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    units = ((days, "day"), (hours, "hour"), (minutes, "minute"))
    parts = [f"{n} {unit}{'s' if n != 1 else ''}" for n, unit in units if n]
    return " ".join(parts) or "0 minutes"


def parse_percent(text: str) -> Decimal:
    """``10%`` or ``12.5%`` as a Decimal percentage (0 to 10000)."""
    value = text.strip()
    if not value.endswith("%"):
        raise UsageError(f"{text!r} is not a percentage (expected e.g. 10%)")
    try:
        percent = Decimal(value[:-1])
    except InvalidOperation:
        raise UsageError(f"{text!r} is not a percentage") from None
    if not percent.is_finite() or percent < 0 or percent > 10000:
        raise UsageError(f"{text!r}: expected a percentage from 0% to 10000%")
    if percent != percent.quantize(Decimal("0.01")):
        raise UsageError(f"{text!r}: at most two decimals in a percentage")
    return percent


def amount_or_percent(text: str) -> tuple[int | None, Decimal | None]:
    """``50`` (an amount, micro-units) or ``10%`` (a percentage)."""
    if text.strip().endswith("%"):
        return None, parse_percent(text)
    try:
        return parse_amount(text), None
    except AmountError as exc:
        raise UsageError(str(exc)) from None


def parse_thresholds(text: str) -> tuple[list[int], list[Decimal]]:
    """A comma-separated list of amounts and percentages (``50, 10, 20%``), as the seed's
    "several balance warning thresholds as comma-separated values"; ``""`` or ``none``: none."""
    if text.strip().lower() in ("", "none"):
        return [], []
    amounts: list[int] = []
    percents: list[Decimal] = []
    for item in text.split(","):
        if not item.strip():
            raise UsageError(f"{text!r}: an empty item in the list")
        amount, percent = amount_or_percent(item)
        if percent is not None:
            percents.append(percent)
        else:
            assert amount is not None
            amounts.append(amount)
    return amounts, percents


def parse_until(text: str, now: datetime, zone: ZoneInfo) -> datetime:
    """``+7d`` / ``+12h`` / ``+30m`` from now, an ISO date (00:00 of that day in ``zone``), or an
    ISO date-time (in ``zone`` unless it carries an offset)."""
    relative = re.fullmatch(r"\+?(\d+)([dhm])", text.strip())
    if relative:
        unit = {"d": "days", "h": "hours", "m": "minutes"}[relative[2]]
        return now + timedelta(**{unit: int(relative[1])})
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
            return datetime.combine(date.fromisoformat(text.strip()), time(0), tzinfo=zone)
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"--until {text!r}: expected +7d, +12h, a date (2026-12-31) or a date-time "
            "(2026-12-31T18:00, optionally with an offset)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)


# --- commands ----------------------------------------------------------------------------------


def operator_name() -> str:
    """The login name of the person running ``ocs``: recorded as ``changed_by``."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def named_operator(args: argparse.Namespace) -> str | None:
    """The operator a change is made by: ``--operator``, else ``$OCS_OPERATOR``."""
    return getattr(args, "operator", None) or os.environ.get(OPERATOR_ENV) or None


def required_operator(args: argparse.Namespace, what: str) -> str:
    name = named_operator(args)
    if name is None:
        raise UsageError(
            f"{what} is made by an operator: name one with --operator NAME, or set "
            f"{OPERATOR_ENV} for scripts"
        )
    return name


def note_without_operator(args: argparse.Namespace, what: str) -> str | None:
    """The operator, or ``None`` with a note that the change is the owner's own (no operator's
    allowance applies; the history records the login name)."""
    name = named_operator(args)
    if name is None:
        print(
            f"ocs: note: {what} names no operator (--operator NAME or {OPERATOR_ENV}); recorded "
            f"as made by {operator_name()!r} with no operator's allowance",
            file=sys.stderr,
        )
    return name


async def cmd_db_migrate(db: Any, args: argparse.Namespace, config: Config) -> int:
    async with db.pool.acquire() as conn:
        applied = await migrate(conn)
    newest = max(m.version for m in available_migrations())
    for m in applied:
        print(f"applied {m.version:04d}_{m.name}")
    print(f"schema is at version {newest}" + ("" if applied else " (nothing to do)"))
    return EXIT_OK


def _settings_from(args: argparse.Namespace) -> store.AccountSettings:
    return store.AccountSettings(
        status=AccountStatus(args.status) if args.status else None,
        credit_limit=args.credit_limit,
        min_balance=args.min_balance,
        limit_basis=LimitBasis(args.limit_basis) if args.limit_basis else None,
        time_zone=args.time_zone,
        max_sessions=args.max_sessions,
        max_setups_per_s=args.max_setups_per_s,
        tariff=args.tariff,
        account_class=args.account_class,
        transfers=args.transfers,
        rate_limit_kbps=args.rate_limit,
        rate_plan=args.rate_plan,
        currency=args.currency,
    )


async def cmd_account_create(db: Any, args: argparse.Namespace, config: Config) -> int:
    operator = note_without_operator(args, "the credit limit") if args.credit_limit else None
    async with db.pool.acquire() as conn:
        await store.create_account(
            conn, args.name, _settings_from(args), changed_by=operator_name(), operator=operator
        )
    print(f"created account {args.name}")
    return await cmd_account_show(db, args, config)


async def cmd_account_update(db: Any, args: argparse.Namespace, config: Config) -> int:
    operator = (
        note_without_operator(args, "the credit limit") if args.credit_limit is not None else None
    )
    async with db.pool.acquire() as conn:
        await store.update_account(
            conn, args.name, _settings_from(args), changed_by=operator_name(), operator=operator
        )
    print(f"updated account {args.name}")
    return await cmd_account_show(db, args, config)


def account_report(
    snapshot: AccountSnapshot,
    identities: list[tuple[str, str]],
    tariff_name: str | None,
    now: datetime,
    limits: GrantLimits,
) -> tuple[list[tuple[str, str]], CreditDecision]:
    """The lines of ``ocs account show`` and the decision they end with."""
    decision = decide(snapshot, SessionRequest(), now, limits)
    tariff = snapshot.tariff
    increase = snapshot.temporary_increase
    permanent = snapshot.credit_limit
    effective = effective_credit_limit(snapshot, now)
    if increase is not None and now < increase.valid_until:
        kind = (
            format_amount(increase.amount)
            if increase.amount is not None
            else f"{Decimal(increase.percent_bp or 0) / 100}% of permanent"
        )
        until = f"{increase.valid_until:%Y-%m-%d %H:%M %Z}"
        temporary = f"+{format_amount(effective - permanent)} ({kind}) until {until}"
    else:
        temporary = "none"
    pairs = [
        ("account", f"{snapshot.name} (id {snapshot.account_id})"),
        ("status", snapshot.status.value),
        ("identities", ", ".join(f"{k} {v}" for k, v in identities) or "none"),
        (
            "tariff",
            f"{tariff_name}: {format_amount(tariff.price_per_minute)}/min billed per "
            f"{tariff.billing_increment_s} s (minimum {tariff.minimum_s} s), "
            f"{format_amount(tariff.price_per_mb)}/MB, connection fee "
            f"{format_amount(tariff.connection_fee)}"
            if tariff_name
            else "none (free)",
        ),
        ("balance", format_amount(snapshot.balance)),
        ("credit limit", f"{format_amount(permanent)} permanent"),
        ("temporary increase", temporary),
        ("effective limit", format_amount(effective)),
        ("minimum balance", format_amount(snapshot.min_balance)),
        ("limit basis", snapshot.limit_basis.value),
    ]
    if snapshot.limit_basis is LimitBasis.UNBILLED:
        from ocs.core import unbilled_in_current_period  # noqa: PLC0415

        pairs.append(
            ("unbilled this period", format_amount(unbilled_in_current_period(snapshot, now)))
        )
    if snapshot.rate_limit is not None:
        limit = snapshot.rate_limit
        pairs.append(("rate limit", f"{limit.up_kbps} up / {limit.down_kbps} down kbit/s"))
    caps = []
    if snapshot.max_sessions is not None:
        caps.append(f"{snapshot.max_sessions} sessions")
    if snapshot.max_setups_per_s is not None:
        caps.append(f"{snapshot.max_setups_per_s} setups/s")
    pairs += [
        ("caps", ", ".join(caps) or "none"),
        ("available credit", format_amount(available_credit(snapshot, now))),
        ("new session now", describe_decision(decision)),
    ]
    return pairs, decision


async def cmd_account_show(db: Any, args: argparse.Namespace, config: Config) -> int:
    async with db.pool.acquire() as conn:
        snapshot = await store.snapshot_by_name(conn, args.name)
        if snapshot is None:
            raise store.NotFound(f"no account named {args.name!r}")
        identities = await store.identities_of(conn, snapshot.account_id)
        tariff_name = await conn.fetchval(
            "SELECT t.name FROM accounts a JOIN tariffs t ON t.id = a.tariff_id WHERE a.id = $1",
            snapshot.account_id,
        )
        blocked_reason = await conn.fetchval(
            "SELECT blocked_reason FROM accounts WHERE id = $1", snapshot.account_id
        )
        setting, class_name, allowed = await store.transfer_settings(conn, snapshot.account_id)
        thresholds = await store.warning_thresholds(conn, snapshot.account_id)
    pairs, _ = account_report(
        snapshot, identities, tariff_name, datetime.now(UTC), config.grant.limits()
    )
    if blocked_reason:
        pairs.insert(2, ("blocked because", BLOCKED_REASONS.get(blocked_reason, blocked_reason)))
    how = {
        "yes": "yes",
        "no": "no",
        "class": f"as its class {class_name} says" if class_name else "no class says yes",
    }[setting]
    pairs.append(("transfers", f"{'allowed' if allowed else 'not allowed'} ({how})"))
    pairs.append(("warning thresholds", describe_thresholds(thresholds)))
    print(fields(pairs))
    print("(the daemon also counts running sessions and setups; this check assumes none)")
    return EXIT_OK


BLOCKED_REASONS = {
    "prepaid_unpaid": "a prepaid period is unpaid (a payment that covers it unblocks)"
}


def percent_text(value: Decimal | None) -> str:
    """``Decimal('20.00')`` as ``20%``, ``Decimal('12.50')`` as ``12.5%``."""
    return "-" if value is None else f"{value.normalize():f}%"


def describe_thresholds(thresholds: Sequence[store.WarningThreshold]) -> str:
    if not thresholds:
        return "none"
    return ", ".join(
        (format_amount(t.amount) if t.amount is not None else percent_text(t.percent))
        + ("" if t.armed else " (reached)")
        for t in thresholds
    )


async def cmd_account_list(db: Any, args: argparse.Namespace, config: Config) -> int:
    rows = await store.list_accounts(db.pool, limit=args.limit, prefix=args.prefix)
    print(
        table(
            [
                "account",
                "status",
                "balance",
                "credit limit",
                "min balance",
                "basis",
                "tariff",
                "ids",
            ],
            [
                (
                    r.name,
                    r.status,
                    format_amount(r.balance),
                    format_amount(r.credit_limit),
                    format_amount(r.min_balance),
                    r.limit_basis,
                    r.tariff or "-",
                    r.identities,
                )
                for r in rows
            ],
        )
    )
    print(f"({len(rows)} account{'s' if len(rows) != 1 else ''})")
    return EXIT_OK


async def cmd_identity_add(db: Any, args: argparse.Namespace, config: Config) -> int:
    from ocs.radius.auth import CredentialError, CredentialStorage, stored_credential  # noqa: PLC0415

    credential = None
    if args.password is not None:
        password = sys.stdin.readline().rstrip("\r\n") if args.password == "-" else args.password
        try:
            credential = stored_credential(password, CredentialStorage(args.password_storage))
        except CredentialError as exc:
            raise UsageError(f"--password: {exc}") from None
    normal = await store.add_identity(
        db.pool, args.account, IdentityKind(args.kind), args.value, credential=credential
    )
    stored = f" (password stored as {args.password_storage})" if credential else ""
    print(f"account {args.account}: {args.kind} {normal}{stored}")
    return EXIT_OK


async def cmd_payment_add(db: Any, args: argparse.Namespace, config: Config) -> int:
    if args.amount <= 0:
        raise UsageError("a payment must be a positive amount (a refund is 'ocs refund add')")
    operator = note_without_operator(args, "the payment")
    return await _record(db, args, args.kind, args.amount, operator)


async def _record(
    db: Any, args: argparse.Namespace, kind: str, amount: int, operator: str | None
) -> int:
    async with db.pool.acquire() as conn:
        result = await store.add_ledger_entry(
            conn,
            args.account,
            kind,
            amount,
            external_id=args.external_id,
            note=args.note,
            operator=operator,
            changed_by=operator_name(),
        )
    what = kind.replace("_", " ")
    by = f" by {operator}" if operator else ""
    if result.created:
        print(
            f"recorded {what} {format_amount(abs(amount))} {'from' if amount < 0 else 'to'} "
            f"{args.account}{by} (entry {result.entry_id}); "
            f"balance now {format_amount(result.balance)}"
        )
    else:
        print(
            f"{what} with external id {args.external_id!r} was recorded before "
            f"(entry {result.entry_id}); nothing changed; balance {format_amount(result.balance)}"
        )
    return EXIT_OK


async def cmd_credit_add(db: Any, args: argparse.Namespace, config: Config) -> int:
    kind = "promotional_credit" if args.promotional else "credit"
    if args.amount <= 0:
        raise UsageError("a credit must be a positive amount")
    operator = required_operator(args, f"a {kind.replace('_', ' ')}")
    return await _record(db, args, kind, args.amount, operator)


async def cmd_refund_add(db: Any, args: argparse.Namespace, config: Config) -> int:
    if args.amount <= 0:
        raise UsageError("give the refund as a positive amount; it is taken off the balance")
    operator = required_operator(args, "a refund")
    return await _record(db, args, "refund", -args.amount, operator)


async def cmd_transfer(db: Any, args: argparse.Namespace, config: Config) -> int:
    if args.amount <= 0:
        raise UsageError("a transfer must be a positive amount")
    async with db.pool.acquire() as conn:
        result = await store.transfer(
            conn,
            args.from_account,
            args.to_account,
            args.amount,
            operator=named_operator(args),
            changed_by=operator_name(),
            note=args.note,
            external_id=args.external_id,
        )
    print(
        f"transferred {format_amount(args.amount)} from {args.from_account} to "
        f"{args.to_account} (transfer {result.transfer_id}); balances now "
        f"{format_amount(result.from_balance)} and {format_amount(result.to_balance)}"
    )
    return EXIT_OK


async def cmd_credit_limit_set(db: Any, args: argparse.Namespace, config: Config) -> int:
    value: str = args.value.strip()
    percent: Decimal | None = None
    amount: int | None = None
    if value.endswith("%"):
        if not args.temporary:
            raise UsageError("a percentage is only allowed for a --temporary increase")
        try:
            percent = Decimal(value[:-1])
        except InvalidOperation:
            raise UsageError(f"{value!r} is not a percentage") from None
        if not percent.is_finite() or percent < 0 or percent > 10000:
            raise UsageError(f"{value!r}: expected a percentage from 0% to 10000%")
    else:
        try:
            amount = parse_amount(value)
        except AmountError as exc:
            raise UsageError(str(exc)) from None
    operator = note_without_operator(args, "the credit limit change")
    async with db.pool.acquire() as conn:
        acct = await store.account_id(conn, args.account)
        if args.temporary:
            if args.until is None:
                raise UsageError("--temporary needs --until (e.g. +7d or 2026-12-31)")
            if amount is not None and amount < 0:
                raise UsageError("a temporary increase cannot be negative")
            zone_name = await conn.fetchval("SELECT time_zone FROM accounts WHERE id = $1", acct)
            now = await store.database_now(conn)
            until = parse_until(args.until, now, ZoneInfo(zone_name))
            await store.set_temporary_credit_limit(
                conn,
                acct,
                valid_until=until,
                amount=amount,
                percent=percent,
                changed_by=operator_name(),
                reason=args.reason,
                operator=operator,
            )
            print(f"account {args.account}: temporary increase {value} until {until.isoformat()}")
        else:
            if args.until is not None:
                raise UsageError("--until only applies with --temporary")
            assert amount is not None
            await store.set_credit_limit(
                conn,
                acct,
                amount,
                changed_by=operator_name(),
                reason=args.reason,
                operator=operator,
            )
            print(f"account {args.account}: credit limit {format_amount(amount)}")
    return EXIT_OK


async def cmd_credit_limit_history(db: Any, args: argparse.Namespace, config: Config) -> int:
    acct = await store.account_id(db.pool, args.account)
    rows = await store.credit_limit_history(db.pool, acct)

    def money(v: int | None) -> str:
        return "-" if v is None else format_amount(v)

    print(
        table(
            ["when (UTC)", "operator", "by", "kind", "old", "new", "temporary", "until", "why"],
            [
                (
                    r["changed_at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                    r["operator"] or "-",
                    r["changed_by"],
                    "temporary" if r["temporary"] else "permanent",
                    money(r["old_limit"]),
                    money(r["new_limit"]),
                    (
                        percent_text(r["temp_percent"])
                        if r["temp_percent"] is not None
                        else money(r["temp_amount"])
                    )
                    if r["temporary"]
                    else "",
                    r["valid_until"].astimezone(UTC).strftime("%Y-%m-%d %H:%M")
                    if r["valid_until"]
                    else "",
                    r["reason"] or "",
                )
                for r in rows
            ],
        )
    )
    return EXIT_OK


async def cmd_tariff_set(db: Any, args: argparse.Namespace, config: Config) -> int:
    settings = store.TariffSettings(
        price_per_minute=args.per_minute,
        billing_increment_s=args.increment,
        minimum_s=args.minimum,
        price_per_mb=args.per_mb,
        connection_fee=args.connection_fee,
        price_per_event=args.per_event,
    )
    for name in ("per_minute", "per_mb", "connection_fee", "per_event"):
        if (getattr(args, name) or 0) < 0:
            raise UsageError(f"--{name.replace('_', '-')} cannot be negative")
    if args.increment is not None and args.increment < 1:
        raise UsageError("--increment must be at least 1 second")
    async with db.pool.acquire() as conn:
        created = await store.set_tariff(conn, args.name, settings)
    print(f"{'created' if created else 'updated'} tariff {args.name}")
    return await cmd_tariff_list(db, args, config)


async def cmd_tariff_list(db: Any, args: argparse.Namespace, config: Config) -> int:
    rows = await store.list_tariffs(db.pool)
    print(
        table(
            [
                "tariff",
                "per minute",
                "increment",
                "minimum",
                "per MB",
                "conn. fee",
                "per event",
                "accounts",
            ],
            [
                (
                    r["name"],
                    format_amount(r["price_per_minute"]),
                    f"{r['billing_increment_s']} s",
                    f"{r['minimum_s']} s",
                    format_amount(r["price_per_mb"]),
                    format_amount(r["connection_fee"]),
                    format_amount(r["price_per_event"]),
                    r["accounts"],
                )
                for r in rows
            ],
        )
    )
    return EXIT_OK


async def cmd_demo_load(db: Any, args: argparse.Namespace, config: Config) -> int:
    async with db.pool.acquire() as conn:
        await load_demo(conn)
        now = datetime.now(UTC)
        limits = config.grant.limits()
        rows = []
        for demo in DEMO_ACCOUNTS:
            snapshot = await store.snapshot_by_name(conn, demo.name)
            assert snapshot is not None
            rows.append(
                (
                    demo.name,
                    demo.e164,
                    format_amount(snapshot.balance),
                    format_amount(available_credit(snapshot, now)),
                    describe_decision(decide(snapshot, SessionRequest(), now, limits)),
                )
            )
    print(table(["account", "e164", "balance", "available", "new session now"], rows))
    return EXIT_OK


def _operator_settings(args: argparse.Namespace) -> operator_store.OperatorSettings:
    amount: int | None = None
    percent: Decimal | None = None
    clear: set[str] = set()
    for item in args.max_temp_increase or []:
        if item.strip().lower() == "none":
            clear |= {"max_temp_increase_amount", "max_temp_increase_percent"}
            continue
        given_amount, given_percent = amount_or_percent(item)
        if given_percent is not None:
            percent = given_percent
        else:
            amount = given_amount

    def money_or_none(text: str | None, key: str) -> int | None:
        if text is None:
            return None
        if text.strip().lower() == "none":
            clear.add(key)
            return None
        try:
            return parse_amount(text)
        except AmountError as exc:
            raise UsageError(f"--{key.replace('_', '-')}: {exc}") from None

    duration: timedelta | None = None
    if args.max_temp_duration is not None:
        if args.max_temp_duration.strip().lower() == "none":
            clear.add("max_temp_duration")
        else:
            duration = parse_duration(args.max_temp_duration)
    return operator_store.OperatorSettings(
        time_zone=args.time_zone,
        max_temp_increase_amount=amount,
        max_temp_increase_percent=percent,
        max_temp_duration=duration,
        daily_credit_limit=money_or_none(args.daily_limit, "daily_credit_limit"),
        transaction_credit_limit=money_or_none(args.transaction_limit, "transaction_credit_limit"),
        clear=frozenset(clear),
    )


def describe_increase_cap(op: operator_store.Operator) -> str:
    caps = []
    if op.max_temp_increase_amount is not None:
        caps.append(format_amount(op.max_temp_increase_amount))
    if op.max_temp_increase_percent is not None:
        caps.append(f"{percent_text(op.max_temp_increase_percent)} of the permanent limit")
    return " and ".join(caps) if caps else "no cap"


async def cmd_operator_create(db: Any, args: argparse.Namespace, config: Config) -> int:
    settings = _operator_settings(args)
    async with db.pool.acquire() as conn:
        await operator_store.create_operator(conn, args.name, settings)
    print(f"created operator {args.name}")
    return await cmd_operator_show(db, args, config)


async def cmd_operator_update(db: Any, args: argparse.Namespace, config: Config) -> int:
    settings = _operator_settings(args)
    async with db.pool.acquire() as conn:
        await operator_store.update_operator(conn, args.name, settings)
    print(f"updated operator {args.name}")
    return await cmd_operator_show(db, args, config)


async def cmd_operator_show(db: Any, args: argparse.Namespace, config: Config) -> int:
    op = await operator_store.get_operator(db.pool, args.name)
    if op.daily_credit_limit is None:
        daily = f"no cap (used {format_amount(op.used_today)} today, {op.today})"
    else:
        assert op.left_today is not None
        daily = (
            f"{format_amount(op.daily_credit_limit)} (today {op.today}: used "
            f"{format_amount(op.used_today)}, {format_amount(op.left_today)} left; resets at "
            f"midnight {op.time_zone})"
        )
    print(
        fields(
            [
                ("operator", f"{op.name} (id {op.id})"),
                ("time zone", op.time_zone),
                ("max temporary increase", describe_increase_cap(op)),
                (
                    "max temporary duration",
                    format_duration(op.max_temp_duration) if op.max_temp_duration else "no cap",
                ),
                (
                    "per transaction limit",
                    format_amount(op.transaction_credit_limit)
                    if op.transaction_credit_limit is not None
                    else "no cap",
                ),
                ("daily credit/refund limit", daily),
            ]
        )
    )
    return EXIT_OK


async def cmd_operator_list(db: Any, args: argparse.Namespace, config: Config) -> int:
    ops = await operator_store.list_operators(db.pool)

    def money(value: int | None) -> str:
        return "-" if value is None else format_amount(value)

    print(
        table(
            ["operator", "time zone", "max increase", "max duration", "per txn", "daily", "today"],
            [
                (
                    op.name,
                    op.time_zone,
                    describe_increase_cap(op).replace(" of the permanent limit", ""),
                    format_duration(op.max_temp_duration) if op.max_temp_duration else "-",
                    money(op.transaction_credit_limit),
                    money(op.daily_credit_limit),
                    format_amount(op.used_today),
                )
                for op in ops
            ],
        )
    )
    print(f"({len(ops)} operator{'s' if len(ops) != 1 else ''})")
    return EXIT_OK


async def cmd_threshold_set(db: Any, args: argparse.Namespace, config: Config) -> int:
    amounts, percents = parse_thresholds(args.thresholds)
    async with db.pool.acquire() as conn:
        await store.set_warning_thresholds(conn, args.account, amounts, percents)
    return await cmd_threshold_list(db, args, config)


async def cmd_threshold_list(db: Any, args: argparse.Namespace, config: Config) -> int:
    acct = await store.account_id(db.pool, args.account)
    thresholds = await store.warning_thresholds(db.pool, acct)
    print(f"account {args.account}: warning thresholds {describe_thresholds(thresholds)}")
    return EXIT_OK


async def cmd_account_class_set(db: Any, args: argparse.Namespace, config: Config) -> int:
    async with db.pool.acquire() as conn:
        created = await store.set_account_class(
            conn, args.name, transfers_allowed=args.transfers == "yes"
        )
    print(f"{'created' if created else 'updated'} account class {args.name}")
    return await cmd_account_class_list(db, args, config)


async def cmd_account_class_list(db: Any, args: argparse.Namespace, config: Config) -> int:
    rows = await store.list_account_classes(db.pool)
    print(
        table(
            ["class", "transfers", "accounts"],
            [(r["name"], "yes" if r["transfers_allowed"] else "no", r["accounts"]) for r in rows],
        )
    )
    return EXIT_OK


def _every(text: str) -> int | None:
    """``month`` (None) or ``Nd`` (N days) or ``Nw``."""
    if text.strip().lower() in ("month", "monthly", "1month"):
        return None
    duration = parse_duration(text)
    if duration.total_seconds() % 86_400 or duration.days < 1:
        raise UsageError(f"--every {text!r}: expected 'month' or a whole number of days (30d)")
    return duration.days


async def cmd_prepaid_add(db: Any, args: argparse.Namespace, config: Config) -> int:
    if args.amount <= 0:
        raise UsageError("a prepaid service needs a positive amount")
    period_days = _every(args.every)
    grace = parse_duration(args.grace) if args.grace else timedelta(0)
    operator = note_without_operator(args, "the prepaid service")
    async with db.pool.acquire() as conn:
        start: datetime | None = None
        if args.start is not None:
            acct = await store.account_id(conn, args.account)
            zone_name = await conn.fetchval("SELECT time_zone FROM accounts WHERE id = $1", acct)
            start = parse_until(args.start, await store.database_now(conn), ZoneInfo(zone_name))
        await periods.add_prepaid_service(
            conn,
            args.account,
            args.name,
            args.amount,
            period_days=period_days,
            start=start,
            grace=grace,
            operator=operator,
            changed_by=operator_name(),
        )
    every = "month" if period_days is None else f"{period_days} days"
    print(
        f"account {args.account}: {args.name} {format_amount(args.amount)} every {every}, "
        f"charged in advance; blocked {format_duration(grace)} after an unpaid period starts"
    )
    return await cmd_prepaid_list(db, args, config)


async def cmd_prepaid_list(db: Any, args: argparse.Namespace, config: Config) -> int:
    services = await periods.list_prepaid_services(db.pool, getattr(args, "account", None))
    print(
        table(
            ["account", "service", "amount", "every", "grace", "next charge (UTC)", "unpaid"],
            [
                (
                    s.account,
                    s.name + ("" if s.active else " (stopped)"),
                    format_amount(s.amount),
                    "month" if s.period_days is None else f"{s.period_days} days",
                    format_duration(s.grace),
                    s.next_charge_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
                    if s.active
                    else "-",
                    format_amount(s.unpaid),
                )
                for s in services
            ],
        )
    )
    return EXIT_OK


async def cmd_prepaid_stop(db: Any, args: argparse.Namespace, config: Config) -> int:
    async with db.pool.acquire() as conn:
        await periods.stop_prepaid_service(conn, args.account, args.name)
    print(f"account {args.account}: {args.name} stopped; charges already made stay")
    return EXIT_OK


async def cmd_prepaid_run(db: Any, args: argparse.Namespace, config: Config) -> int:
    done = await periods.run_prepaid_periods(db.pool)
    print(
        f"charged {done.charged} period{'s' if done.charged != 1 else ''}; "
        f"blocked {done.blocked}, unblocked {done.unblocked} account"
        f"{'s' if done.unblocked != 1 else ''}"
    )
    return EXIT_OK


async def cmd_outbox_list(db: Any, args: argparse.Namespace, config: Config) -> int:
    rows = await db.pool.fetch(
        """SELECT o.id, o.created_at, o.topic, a.name AS account, o.attempts, o.delivered_at,
                  o.abandoned_at, o.last_error, o.payload->>'threshold' AS threshold,
                  o.payload->>'available' AS available
           FROM outbox o LEFT JOIN accounts a ON a.id = o.account_id
           WHERE NOT $1 OR (o.delivered_at IS NULL AND o.abandoned_at IS NULL)
           ORDER BY o.id DESC LIMIT $2""",
        args.pending,
        args.limit,
    )

    def state(r: Any) -> str:
        if r["delivered_at"]:
            return "delivered"
        if r["abandoned_at"]:
            return f"abandoned: {r['last_error']}"
        return "pending" + (f" (last error: {r['last_error']})" if r["last_error"] else "")

    print(
        table(
            ["id", "when (UTC)", "topic", "account", "threshold", "available", "tries", "state"],
            [
                (
                    r["id"],
                    r["created_at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                    r["topic"],
                    r["account"] or "-",
                    r["threshold"] or "",
                    r["available"] or "",
                    r["attempts"],
                    state(r),
                )
                for r in reversed(rows)
            ],
        )
    )
    return EXIT_OK


class ProgressBar:
    """``importing [#####.....] 50% 500/1000`` on stderr: redrawn in place on a terminal,
    a line per tenth otherwise (logs stay short)."""

    def __init__(self, label: str, stream: Any = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = -1

    def __call__(self, done: int, total: int) -> None:
        percent = 100 * done // total if total else 100
        step = percent if self.tty else percent // 10 * 10
        if step == self._last and done != total:
            return
        self._last = step
        filled = percent // 5
        bar = f"{self.label} [{'#' * filled}{'.' * (20 - filled)}] {percent:3d}% {done}/{total}"
        if self.tty:
            self.stream.write("\r" + bar + ("\n" if done == total else ""))
        else:
            self.stream.write(bar + "\n")
        self.stream.flush()


async def cmd_import_accounts(db: Any, args: argparse.Namespace, config: Config) -> int:
    try:
        with open(args.file, encoding="utf-8-sig", newline="") as handle:  # noqa: ASYNC230
            rows = account_import.parse_accounts_csv(handle)
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{args.file} is not UTF-8 text ({exc.reason})") from None
    operator = note_without_operator(args, "the import")
    print(
        f"checked {args.file}: {len(rows)} account{'s' if len(rows) != 1 else ''}", file=sys.stderr
    )
    async with db.pool.acquire() as conn:
        count = await account_import.import_accounts(
            conn,
            rows,
            operator=operator,
            changed_by=operator_name(),
            note=f"opening balance (import of {os.path.basename(args.file)})",
            progress=ProgressBar("importing"),
            dry_run=args.dry_run,
        )
    if args.dry_run:
        print(f"dry run: {count} accounts would be imported; nothing was written")
    else:
        print(f"imported {count} account{'s' if count != 1 else ''} from {args.file}")
    return EXIT_OK


# --- parsers -----------------------------------------------------------------------------------


def _account_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--status", choices=[s.value for s in AccountStatus])
    parser.add_argument(
        "--credit-limit",
        type=amount_arg,
        metavar="AMOUNT",
        help="permanent credit (debit) limit: 0 prepaid, >0 postpaid, <0 buffer",
    )
    parser.add_argument("--min-balance", type=amount_arg, metavar="AMOUNT")
    parser.add_argument("--limit-basis", choices=[b.value for b in LimitBasis])
    parser.add_argument("--time-zone", metavar="ZONE", help="IANA name, e.g. Europe/Zurich")
    parser.add_argument("--max-sessions", type=count_arg, metavar="N", help="-1 removes the cap")
    parser.add_argument(
        "--max-setups-per-s", type=count_arg, metavar="N", help="-1 removes the cap"
    )
    parser.add_argument("--tariff", metavar="NAME")
    parser.add_argument(
        "--rate-limit",
        type=rate_limit_arg,
        metavar="UP/DOWN",
        help="bandwidth in kbit/s sent to data NAS (Mikrotik-Rate-Limit, WISPr); 'none' removes",
    )
    parser.add_argument(
        "--class", dest="account_class", metavar="NAME", help="account class ('' for none)"
    )
    parser.add_argument(
        "--transfers",
        choices=["yes", "no", "class"],
        help="subscriber-to-subscriber transfers: yes, no, or as the class says",
    )
    parser.add_argument("--rate-plan", metavar="NAME", help="rating by destination ('' for none)")
    parser.add_argument("--currency", metavar="CODE", help="ISO 4217 (default USD)")
    _operator_option(parser, "records who set the credit limit")


def _operator_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--operator",
        metavar="NAME",
        help=f"the operator making the change ({what}); default ${OPERATOR_ENV}",
    )


def _operator_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--time-zone", metavar="ZONE", help="the operator's day ends at midnight here"
    )
    parser.add_argument(
        "--max-temp-increase",
        action="append",
        metavar="AMOUNT|N%",
        help="largest temporary credit-limit increase: an amount, a percentage of the permanent "
        "limit, or both (give the option twice); 'none' removes the cap",
    )
    parser.add_argument(
        "--max-temp-duration", metavar="30d", help="longest temporary increase ('none': no cap)"
    )
    parser.add_argument(
        "--daily-limit", metavar="AMOUNT", help="credits + refunds per day ('none': no cap)"
    )
    parser.add_argument(
        "--transaction-limit", metavar="AMOUNT", help="largest single credit or refund ('none')"
    )


def admin_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ocs",
        description="Administer ocs: accounts, money, limits, tariffs, schema.",
        epilog="The config file is --config, else $OCS_CONFIG, else the built-in defaults "
        "(embedded PostgreSQL under var/, as 'make run' uses).",
    )
    parser.add_argument("--config", metavar="FILE", help="TOML config file")
    parser.add_argument("--version", action="version", version=f"ocs {__version__}")
    top = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    db = top.add_parser("db", help="schema").add_subparsers(
        dest="sub", required=True, metavar="SUB"
    )
    db.add_parser("migrate", help="apply pending schema migrations").set_defaults(
        func=cmd_db_migrate, migrate=False
    )

    acct = top.add_parser("account", help="accounts").add_subparsers(
        dest="sub", required=True, metavar="SUB"
    )
    p = acct.add_parser("create", help="create an account")
    p.add_argument("name")
    _account_options(p)
    p.set_defaults(func=cmd_account_create)
    p = acct.add_parser("update", help="change an account's settings")
    p.add_argument("name")
    _account_options(p)
    p.set_defaults(func=cmd_account_update)
    p = acct.add_parser("show", help="balance, limits, available credit and today's decision")
    p.add_argument("name")
    p.set_defaults(func=cmd_account_show)
    p = acct.add_parser("list", help="list accounts")
    p.add_argument("--prefix", default="", help="only names starting with this")
    p.add_argument("--limit", type=int, default=1000)
    p.set_defaults(func=cmd_account_list)

    ident = top.add_parser("identity", help="subscriber identities").add_subparsers(
        dest="sub", required=True, metavar="SUB"
    )
    p = ident.add_parser("add", help="attach an identity to an account")
    p.add_argument("account")
    p.add_argument("kind", choices=[k.value for k in IdentityKind])
    p.add_argument("value")
    p.add_argument(
        "--password",
        metavar="PW",
        help="RADIUS requests for this identity must prove it (PAP, CHAP, MS-CHAPv2); "
        "'-' reads it from stdin",
    )
    p.add_argument(
        "--password-storage",
        choices=["hash", "nt-hash", "cleartext"],
        default="hash",
        help="hash (PBKDF2): PAP only; nt-hash: PAP and MS-CHAPv2; cleartext: also CHAP",
    )
    p.set_defaults(func=cmd_identity_add)

    pay = top.add_parser("payment", help="payments").add_subparsers(
        dest="sub", required=True, metavar="SUB"
    )
    p = pay.add_parser("add", help="record a payment (idempotent with --external-id)")
    p.add_argument("account")
    p.add_argument("amount", type=amount_arg)
    p.add_argument(
        "--external-id", help="the payment's id in the payment system; a repeat is a no-op"
    )
    p.add_argument("--kind", choices=["payment", "card_charge"], default="payment")
    p.add_argument("--note")
    _operator_option(p, "payments do not count towards the daily credit/refund limit")
    p.set_defaults(func=cmd_payment_add)

    credit = top.add_parser("credit", help="manual and promotional credits").add_subparsers(
        dest="sub", required=True, metavar="SUB"
    )
    p = credit.add_parser("add", help="credit an account (counts towards the operator's limits)")
    p.add_argument("account")
    p.add_argument("amount", type=amount_arg)
    p.add_argument("--promotional", action="store_true", help="a promotional credit")
    p.add_argument("--external-id", help="an id from another system; a repeat is a no-op")
    p.add_argument("--note")
    _operator_option(p, "required")
    p.set_defaults(func=cmd_credit_add)

    refund = top.add_parser("refund", help="refunds").add_subparsers(
        dest="sub", required=True, metavar="SUB"
    )
    p = refund.add_parser("add", help="refund (take AMOUNT off the balance; counts as a credit)")
    p.add_argument("account")
    p.add_argument("amount", type=amount_arg)
    p.add_argument("--external-id", help="an id from another system; a repeat is a no-op")
    p.add_argument("--note")
    _operator_option(p, "required")
    p.set_defaults(func=cmd_refund_add)

    p = top.add_parser(
        "transfer", help="move funds between two subscribers (both must allow transfers)"
    )
    p.add_argument("from_account", metavar="FROM")
    p.add_argument("to_account", metavar="TO")
    p.add_argument("amount", type=amount_arg)
    p.add_argument("--external-id", help="an id from another system; a repeat is a no-op")
    p.add_argument("--note")
    _operator_option(p, "optional: a subscriber's own transfer names none")
    p.set_defaults(func=cmd_transfer)

    cl = top.add_parser("credit-limit", help="credit limits").add_subparsers(
        dest="sub", required=True, metavar="SUB"
    )
    p = cl.add_parser("set", help="set the permanent limit, or a --temporary increase")
    p.add_argument("account")
    p.add_argument("value", metavar="AMOUNT|N%")
    p.add_argument(
        "--temporary", action="store_true", help="a temporary increase (amount or percent)"
    )
    p.add_argument("--until", metavar="WHEN", help="+7d, +12h, 2026-12-31 or 2026-12-31T18:00")
    p.add_argument("--reason")
    _operator_option(p, "a temporary increase must be within the operator's allowance")
    p.set_defaults(func=cmd_credit_limit_set)
    p = cl.add_parser("history", help="every change of an account's limit")
    p.add_argument("account")
    p.set_defaults(func=cmd_credit_limit_history)

    tar = top.add_parser("tariff", help="tariffs").add_subparsers(
        dest="sub", required=True, metavar="SUB"
    )
    p = tar.add_parser("set", help="create a tariff or change its prices")
    p.add_argument("name")
    p.add_argument("--per-minute", type=amount_arg, metavar="AMOUNT")
    p.add_argument("--increment", type=seconds_arg, metavar="S", help="billing increment (s)")
    p.add_argument("--minimum", type=seconds_arg, metavar="S", help="minimum billed duration (s)")
    p.add_argument("--per-mb", type=amount_arg, metavar="AMOUNT", help="per 1,000,000 bytes")
    p.add_argument("--connection-fee", type=amount_arg, metavar="AMOUNT")
    p.add_argument("--per-event", type=amount_arg, metavar="AMOUNT")
    p.set_defaults(func=cmd_tariff_set)
    tar.add_parser("list", help="list tariffs").set_defaults(func=cmd_tariff_list)

    ops = top.add_parser("operator", help="operators and their limits").add_subparsers(
        dest="sub", required=True, metavar="SUB"
    )
    p = ops.add_parser("create", help="create an operator")
    p.add_argument("name")
    _operator_options(p)
    p.set_defaults(func=cmd_operator_create)
    p = ops.add_parser("update", help="change an operator's limits")
    p.add_argument("name")
    _operator_options(p)
    p.set_defaults(func=cmd_operator_update)
    p = ops.add_parser("show", help="an operator's limits and today's credit/refund usage")
    p.add_argument("name")
    p.set_defaults(func=cmd_operator_show)
    ops.add_parser("list", help="list operators").set_defaults(func=cmd_operator_list)

    thr = top.add_parser("threshold", help="low funds / credit limit warnings").add_subparsers(
        dest="sub", required=True, metavar="SUB"
    )
    p = thr.add_parser("set", help="replace an account's warning thresholds")
    p.add_argument("account")
    p.add_argument(
        "thresholds",
        metavar="LIST",
        help="comma-separated available-credit amounts, or (postpaid) percentages of the "
        "permanent limit: '50,10,20%%'; '' or 'none' removes them",
    )
    p.set_defaults(func=cmd_threshold_set)
    p = thr.add_parser("list", help="an account's warning thresholds")
    p.add_argument("account")
    p.set_defaults(func=cmd_threshold_list)

    cls = top.add_parser("account-class", help="account classes").add_subparsers(
        dest="sub", required=True, metavar="SUB"
    )
    p = cls.add_parser("set", help="create or change an account class")
    p.add_argument("name")
    p.add_argument("--transfers", choices=["yes", "no"], required=True)
    p.set_defaults(func=cmd_account_class_set)
    cls.add_parser("list", help="list account classes").set_defaults(func=cmd_account_class_list)

    pre = top.add_parser("prepaid", help="recurring prepaid service charges").add_subparsers(
        dest="sub", required=True, metavar="SUB"
    )
    p = pre.add_parser("add", help="charge an account AMOUNT in advance every period")
    p.add_argument("account")
    p.add_argument("name", help="the service, e.g. internet-50")
    p.add_argument("amount", type=amount_arg)
    p.add_argument("--every", default="month", metavar="month|Nd", help="the period (month)")
    p.add_argument("--start", metavar="WHEN", help="first period's start (now): 2026-01-01, +1d")
    p.add_argument(
        "--grace", metavar="3d", help="block this long after an unpaid period starts (0)"
    )
    _operator_option(p, "recorded on the service and its charges")
    p.set_defaults(func=cmd_prepaid_add)
    p = pre.add_parser("list", help="prepaid services")
    p.add_argument("account", nargs="?")
    p.set_defaults(func=cmd_prepaid_list)
    p = pre.add_parser("stop", help="stop charging a service")
    p.add_argument("account")
    p.add_argument("name")
    p.set_defaults(func=cmd_prepaid_stop)
    pre.add_parser("run", help="charge due periods now (the daemon does this too)").set_defaults(
        func=cmd_prepaid_run
    )

    out = top.add_parser("outbox", help="notifications for webhooks").add_subparsers(
        dest="sub", required=True, metavar="SUB"
    )
    p = out.add_parser("list", help="the latest outbox rows")
    p.add_argument("--pending", action="store_true", help="only rows not yet delivered")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_outbox_list)

    imp = top.add_parser("import", help="bulk import").add_subparsers(
        dest="sub", required=True, metavar="SUB"
    )
    p = imp.add_parser(
        "accounts", help="accounts, identities and opening balances from CSV (all or nothing)"
    )
    p.add_argument("file", metavar="FILE.csv")
    p.add_argument("--dry-run", action="store_true", help="check everything, write nothing")
    _operator_option(p, "recorded on credit limits and opening balances")
    p.set_defaults(func=cmd_import_accounts)

    rates_cli.register(top)

    demo = top.add_parser("demo", help="demo data").add_subparsers(
        dest="sub", required=True, metavar="SUB"
    )
    demo.add_parser("load", help="create or reset the demo accounts").set_defaults(
        func=cmd_demo_load
    )

    p = top.add_parser("status", help="ask the running ocsd (its /status on metrics.listen)")
    p.add_argument("--url", help="the daemon's status URL (default: from metrics.listen)")
    p.add_argument("--json", action="store_true", help="print the daemon's JSON as it is")
    p.set_defaults(local=cmd_status)
    p = top.add_parser("check-config", help="validate a configuration file (exit 0 or 2)")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(local=cmd_check_config)
    return parser


# --- operations (no database: the running daemon, or a file) ---------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415

    from ocs.ops.status_client import (  # noqa: PLC0415
        StatusUnavailable,
        fetch_status,
        format_status,
        status_url,
    )

    try:
        url = args.url or status_url(load_config(args.config))
        data = fetch_status(url)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except StatusUnavailable as exc:
        return _fail(str(exc), EXIT_DATABASE)
    print(json.dumps(data, indent=2) if args.json else format_status(data))
    return EXIT_OK


def cmd_check_config(args: argparse.Namespace) -> int:
    from ocs.radius.setup import RadiusSetupError, build_clients, load_dictionary  # noqa: PLC0415

    try:
        config = load_config(args.file)
        if config.radius.enabled:
            build_clients(config.radius, load_dictionary(config.radius.dictionary))
    except (ConfigError, RadiusSetupError) as exc:
        print(f"ocs: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"configuration OK ({config.source})")
    return EXIT_OK


Command = Callable[[Any, argparse.Namespace, Config], Awaitable[int]]


async def _run_admin(func: Command, args: argparse.Namespace, config: Config) -> int:
    apply = getattr(args, "migrate", True)
    async with open_database(config.database, apply_migrations=apply) as db:
        return await func(db, args, config)


def _fail(message: str, code: int) -> int:
    print(f"ocs: error: {message}", file=sys.stderr)
    return code


def admin_main(argv: Sequence[str] | None = None) -> int:
    args = admin_parser().parse_args(argv)
    local = getattr(args, "local", None)
    if local is not None:
        return int(local(args))
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    import logging  # noqa: PLC0415

    logging.basicConfig(level=logging.WARNING, format="ocs: %(levelname)s: %(message)s")
    try:
        return asyncio.run(_run_admin(args.func, args, config))
    except DatabaseUnavailable as exc:
        return _fail(str(exc), EXIT_DATABASE)
    except (UsageError, AmountError, IdentityError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except store.StoreError as exc:
        return _fail(str(exc), EXIT_REFUSED)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)


def daemon_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ocsd", description="The ocs online charging daemon.")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML config file (else $OCS_CONFIG, else built-in defaults)",
    )
    parser.add_argument(
        "--check-config", action="store_true", help="validate the configuration and exit"
    )
    parser.add_argument(
        "--load-demo", action="store_true", help="development: (re)load the demo accounts at start"
    )
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--version", action="version", version=f"ocsd {__version__}")
    return parser


def daemon_main(argv: Sequence[str] | None = None) -> int:
    args = daemon_parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"ocsd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.check_config:
        print(f"configuration OK ({config.source})")
        return EXIT_OK

    from ocs.app import main  # noqa: PLC0415

    return main(config, config_path=args.config, load_demo=args.load_demo, worker=args.worker)
