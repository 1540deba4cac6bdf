"""``ocs operator``: operators (seed 004) and their allowances."""

from __future__ import annotations

import argparse
from datetime import timedelta
from decimal import Decimal
from typing import Any

from ocs.admin import operators
from ocs.admin.parsing import (
    amount_or_percent,
    format_duration,
    parse_duration,
    percent_text,
)
from ocs.cli.common import EXIT_OK, Subparsers, UsageError, fields, group, money_or_dash, table
from ocs.config import Config
from ocs.core import format_amount
from ocs.core.money import AmountError, parse_amount


def _operator_settings(args: argparse.Namespace) -> operators.OperatorSettings:
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
    return operators.OperatorSettings(
        time_zone=args.time_zone,
        max_temp_increase_amount=amount,
        max_temp_increase_percent=percent,
        max_temp_duration=duration,
        daily_credit_limit=money_or_none(args.daily_limit, "daily_credit_limit"),
        transaction_credit_limit=money_or_none(args.transaction_limit, "transaction_credit_limit"),
        clear=frozenset(clear),
    )


def describe_increase_cap(op: operators.Operator) -> str:
    caps = []
    if op.max_temp_increase_amount is not None:
        caps.append(format_amount(op.max_temp_increase_amount))
    if op.max_temp_increase_percent is not None:
        caps.append(f"{percent_text(op.max_temp_increase_percent)} of the permanent limit")
    return " and ".join(caps) if caps else "no cap"


async def cmd_operator_create(db: Any, args: argparse.Namespace, config: Config) -> int:
    settings = _operator_settings(args)
    async with db.pool.acquire() as conn:
        await operators.create_operator(conn, args.name, settings)
    print(f"created operator {args.name}")
    return await cmd_operator_show(db, args, config)


async def cmd_operator_update(db: Any, args: argparse.Namespace, config: Config) -> int:
    settings = _operator_settings(args)
    async with db.pool.acquire() as conn:
        await operators.update_operator(conn, args.name, settings)
    print(f"updated operator {args.name}")
    return await cmd_operator_show(db, args, config)


async def cmd_operator_show(db: Any, args: argparse.Namespace, config: Config) -> int:
    op = await operators.get_operator(db.pool, args.name)
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
    ops = await operators.list_operators(db.pool)

    print(
        table(
            ["operator", "time zone", "max increase", "max duration", "per txn", "daily", "today"],
            [
                (
                    op.name,
                    op.time_zone,
                    describe_increase_cap(op).replace(" of the permanent limit", ""),
                    format_duration(op.max_temp_duration) if op.max_temp_duration else "-",
                    money_or_dash(op.transaction_credit_limit),
                    money_or_dash(op.daily_credit_limit),
                    format_amount(op.used_today),
                )
                for op in ops
            ],
        )
    )
    print(f"({len(ops)} operator{'s' if len(ops) != 1 else ''})")
    return EXIT_OK


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


def register(top: Subparsers) -> None:
    ops = group(top, "operator", "operators and their limits")
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
