"""``ocs credit-limit`` and ``ocs threshold``."""

from __future__ import annotations

import argparse
from datetime import UTC
from decimal import Decimal, InvalidOperation
from typing import Any

from ocs import admin
from ocs.admin.parsing import parse_money, parse_thresholds, parse_until, percent_text
from ocs.cli.common import (
    EXIT_OK,
    Subparsers,
    UsageError,
    describe_thresholds,
    group,
    money_or_dash,
    note_without_operator,
    operator_name,
    operator_option,
    table,
)
from ocs.config import Config
from ocs.core import format_amount


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
        amount = parse_money(value)
    operator = note_without_operator(args, "the credit limit change")
    async with db.pool.acquire() as conn:
        await admin.account_id(conn, args.account)  # an unknown account first, as ever
        if args.temporary:
            if args.until is None:
                raise UsageError("--temporary needs --until (e.g. +7d or 2026-12-31)")
            if amount is not None and amount < 0:
                raise UsageError("a temporary increase cannot be negative")
            zone = await admin.account_time_zone(conn, args.account)
            until = parse_until(args.until, await admin.database_now(conn), zone)
            await admin.give_temporary_increase(
                conn,
                args.account,
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
            await admin.set_permanent_limit(
                conn,
                args.account,
                amount,
                changed_by=operator_name(),
                reason=args.reason,
                operator=operator,
            )
            print(f"account {args.account}: credit limit {format_amount(amount)}")
    return EXIT_OK


async def cmd_credit_limit_history(db: Any, args: argparse.Namespace, config: Config) -> int:
    acct = await admin.account_id(db.pool, args.account)
    rows = await admin.credit_limit_history(db.pool, acct)
    print(
        table(
            ["when (UTC)", "operator", "by", "kind", "old", "new", "temporary", "until", "why"],
            [
                (
                    r["changed_at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                    r["operator"] or "-",
                    r["changed_by"],
                    "temporary" if r["temporary"] else "permanent",
                    money_or_dash(r["old_limit"]),
                    money_or_dash(r["new_limit"]),
                    (
                        percent_text(r["temp_percent"])
                        if r["temp_percent"] is not None
                        else money_or_dash(r["temp_amount"])
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


async def cmd_threshold_set(db: Any, args: argparse.Namespace, config: Config) -> int:
    amounts, percents = parse_thresholds(args.thresholds)
    async with db.pool.acquire() as conn:
        await admin.set_warning_thresholds(conn, args.account, amounts, percents)
    return await cmd_threshold_list(db, args, config)


async def cmd_threshold_list(db: Any, args: argparse.Namespace, config: Config) -> int:
    acct = await admin.account_id(db.pool, args.account)
    thresholds = await admin.warning_thresholds(db.pool, acct)
    print(f"account {args.account}: warning thresholds {describe_thresholds(thresholds)}")
    return EXIT_OK


def register(top: Subparsers) -> None:
    cl = group(top, "credit-limit", "credit limits")
    p = cl.add_parser("set", help="set the permanent limit, or a --temporary increase")
    p.add_argument("account")
    p.add_argument("value", metavar="AMOUNT|N%")
    p.add_argument(
        "--temporary", action="store_true", help="a temporary increase (amount or percent)"
    )
    p.add_argument("--until", metavar="WHEN", help="+7d, +12h, 2026-12-31 or 2026-12-31T18:00")
    p.add_argument("--reason")
    operator_option(p, "a temporary increase must be within the operator's allowance")
    p.set_defaults(func=cmd_credit_limit_set)
    p = cl.add_parser("history", help="every change of an account's limit")
    p.add_argument("account")
    p.set_defaults(func=cmd_credit_limit_history)


def register_thresholds(top: Subparsers) -> None:
    thr = group(top, "threshold", "low funds / credit limit warnings")
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
