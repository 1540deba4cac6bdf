"""Command lines: ``ocsd`` (the daemon) and ``ocs`` (administration).

Exit codes: 0 done; 1 the request was refused (unknown account, conflict, bad amount);
2 bad usage or configuration; 3 the database cannot be reached or used.
This is the only module that imports ``ocs.app``.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import re
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from ocs import __version__
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
from ocs.core.model import AccountSnapshot, CreditDecision, RefusalReason, ServiceUnit
from ocs.core.money import AmountError
from ocs.store import accounts as store
from ocs.store.database import DatabaseUnavailable, open_database
from ocs.store.demo import DEMO_ACCOUNTS, load_demo
from ocs.store.migrate import available_migrations, migrate

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_DATABASE = 0, 1, 2, 3


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


REASON_TEXT = {
    RefusalReason.UNKNOWN_ACCOUNT: "unknown account",
    RefusalReason.INSUFFICIENT_CREDIT: "insufficient credit",
    RefusalReason.BLOCKED: "account blocked",
    RefusalReason.CLOSED: "account closed",
    RefusalReason.TOO_MANY_SESSIONS: "too many sessions",
    RefusalReason.SETUP_RATE_EXCEEDED: "session setup rate exceeded",
}


def describe_decision(decision: CreditDecision) -> str:
    if decision.admitted:
        unit = {ServiceUnit.TIME: "s", ServiceUnit.VOLUME: "bytes", ServiceUnit.EVENT: "events"}
        return f"admitted, grant {decision.granted_units} {unit[decision.unit]}"
    assert decision.reason is not None
    why = REASON_TEXT[decision.reason]
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


def seconds_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected seconds >= 0")
    return value


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
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


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
    )


async def cmd_account_create(db: Any, args: argparse.Namespace, config: Config) -> int:
    async with db.pool.acquire() as conn:
        await store.create_account(
            conn, args.name, _settings_from(args), changed_by=operator_name()
        )
    print(f"created account {args.name}")
    return await cmd_account_show(db, args, config)


async def cmd_account_update(db: Any, args: argparse.Namespace, config: Config) -> int:
    async with db.pool.acquire() as conn:
        await store.update_account(
            conn, args.name, _settings_from(args), changed_by=operator_name()
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
    pairs, _ = account_report(
        snapshot, identities, tariff_name, datetime.now(UTC), config.grant.limits()
    )
    print(fields(pairs))
    print("(the daemon also counts running sessions and setups; this check assumes none)")
    return EXIT_OK


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
    normal = await store.add_identity(db.pool, args.account, IdentityKind(args.kind), args.value)
    print(f"account {args.account}: {args.kind} {normal}")
    return EXIT_OK


async def cmd_payment_add(db: Any, args: argparse.Namespace, config: Config) -> int:
    if args.amount <= 0:
        raise UsageError("a payment must be a positive amount (refunds come with operators)")
    async with db.pool.acquire() as conn:
        result = await store.add_ledger_entry(
            conn,
            args.account,
            args.kind,
            args.amount,
            external_id=args.external_id,
            note=args.note,
        )
    if result.created:
        print(
            f"recorded {args.kind} {format_amount(args.amount)} to {args.account} "
            f"(entry {result.entry_id}); balance now {format_amount(result.balance)}"
        )
    else:
        print(
            f"{args.kind} with external id {args.external_id!r} was recorded before "
            f"(entry {result.entry_id}); nothing changed; balance {format_amount(result.balance)}"
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
            )
            print(f"account {args.account}: temporary increase {value} until {until.isoformat()}")
        else:
            if args.until is not None:
                raise UsageError("--until only applies with --temporary")
            assert amount is not None
            await store.set_credit_limit(
                conn, acct, amount, changed_by=operator_name(), reason=args.reason
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
            ["when (UTC)", "by", "kind", "old", "new", "temporary", "until", "why"],
            [
                (
                    r["changed_at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                    r["changed_by"],
                    "temporary" if r["temporary"] else "permanent",
                    money(r["old_limit"]),
                    money(r["new_limit"]),
                    (
                        f"{r['temp_percent']}%"
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
    p.set_defaults(func=cmd_payment_add)

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

    demo = top.add_parser("demo", help="demo data").add_subparsers(
        dest="sub", required=True, metavar="SUB"
    )
    demo.add_parser("load", help="create or reset the demo accounts").set_defaults(
        func=cmd_demo_load
    )
    return parser


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

    from ocs.app import Daemon, DaemonError  # noqa: PLC0415
    from ocs.logs import setup_logging  # noqa: PLC0415

    setup_logging(config.log.level, config.log.format)
    daemon = Daemon(config, load_demo_data=args.load_demo)
    runner: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run
    if config.daemon.use_uvloop:
        import uvloop  # noqa: PLC0415

        runner = uvloop.run
    try:
        runner(daemon.run())
    except DaemonError as exc:
        print(f"ocsd: error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except DatabaseUnavailable as exc:
        print(f"ocsd: error: {exc}", file=sys.stderr)
        return EXIT_DATABASE
    except KeyboardInterrupt:
        return 130
    return EXIT_OK
