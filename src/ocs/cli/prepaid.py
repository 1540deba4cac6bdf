"""``ocs prepaid``: recurring services charged in advance (seed 003)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import Any

from ocs import admin
from ocs.admin import prepaid
from ocs.admin.parsing import format_duration, parse_duration, parse_every, parse_until
from ocs.cli.common import (
    EXIT_OK,
    Subparsers,
    UsageError,
    amount_arg,
    group,
    note_without_operator,
    operator_name,
    operator_option,
    table,
)
from ocs.config import Config
from ocs.core import format_amount


async def cmd_prepaid_add(db: Any, args: argparse.Namespace, config: Config) -> int:
    if args.amount <= 0:
        raise UsageError("a prepaid service needs a positive amount")
    period_days = parse_every(args.every)
    grace = parse_duration(args.grace) if args.grace else timedelta(0)
    operator = note_without_operator(args, "the prepaid service")
    async with db.pool.acquire() as conn:
        start: datetime | None = None
        if args.start is not None:
            zone = await admin.account_time_zone(conn, args.account)
            start = parse_until(args.start, await admin.database_now(conn), zone)
        await prepaid.add_prepaid_service(
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
    services = await prepaid.list_prepaid_services(db.pool, getattr(args, "account", None))
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
        await prepaid.stop_prepaid_service(conn, args.account, args.name)
    print(f"account {args.account}: {args.name} stopped; charges already made stay")
    return EXIT_OK


async def cmd_prepaid_run(db: Any, args: argparse.Namespace, config: Config) -> int:
    done = await prepaid.run_prepaid_periods(db.pool)
    print(
        f"charged {done.charged} period{'s' if done.charged != 1 else ''}; "
        f"blocked {done.blocked}, unblocked {done.unblocked} account"
        f"{'s' if done.unblocked != 1 else ''}"
    )
    return EXIT_OK


def register(top: Subparsers) -> None:
    pre = group(top, "prepaid", "recurring prepaid service charges")
    p = pre.add_parser("add", help="charge an account AMOUNT in advance every period")
    p.add_argument("account")
    p.add_argument("name", help="the service, e.g. internet-50")
    p.add_argument("amount", type=amount_arg)
    p.add_argument("--every", default="month", metavar="month|Nd", help="the period (month)")
    p.add_argument("--start", metavar="WHEN", help="first period's start (now): 2026-01-01, +1d")
    p.add_argument(
        "--grace", metavar="3d", help="block this long after an unpaid period starts (0)"
    )
    operator_option(p, "recorded on the service and its charges")
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
