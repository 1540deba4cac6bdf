"""``ocs payment``, ``ocs credit``, ``ocs refund`` and ``ocs transfer``."""

from __future__ import annotations

import argparse
from typing import Any

from ocs import admin
from ocs.cli.common import (
    EXIT_OK,
    Subparsers,
    UsageError,
    amount_arg,
    group,
    named_operator,
    note_without_operator,
    operator_name,
    operator_option,
    required_operator,
)
from ocs.config import Config
from ocs.core import format_amount


def _report(args: argparse.Namespace, kind: str, amount: int, result: admin.LedgerResult) -> int:
    what = kind.replace("_", " ")
    by = f" by {args.operator_used}" if args.operator_used else ""
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


async def cmd_payment_add(db: Any, args: argparse.Namespace, config: Config) -> int:
    if args.amount <= 0:
        raise UsageError("a payment must be a positive amount (a refund is 'ocs refund add')")
    args.operator_used = note_without_operator(args, "the payment")
    async with db.pool.acquire() as conn:
        result = await admin.record_payment(
            conn,
            args.account,
            args.amount,
            kind=args.kind,
            external_id=args.external_id,
            note=args.note,
            operator=args.operator_used,
            changed_by=operator_name(),
        )
    return _report(args, args.kind, args.amount, result)


async def cmd_credit_add(db: Any, args: argparse.Namespace, config: Config) -> int:
    kind = "promotional_credit" if args.promotional else "credit"
    if args.amount <= 0:
        raise UsageError("a credit must be a positive amount")
    args.operator_used = required_operator(args, f"a {kind.replace('_', ' ')}")
    async with db.pool.acquire() as conn:
        result = await admin.record_credit(
            conn,
            args.account,
            args.amount,
            operator=args.operator_used,
            promotional=args.promotional,
            external_id=args.external_id,
            note=args.note,
            changed_by=operator_name(),
        )
    return _report(args, kind, args.amount, result)


async def cmd_refund_add(db: Any, args: argparse.Namespace, config: Config) -> int:
    if args.amount <= 0:
        raise UsageError("give the refund as a positive amount; it is taken off the balance")
    args.operator_used = required_operator(args, "a refund")
    async with db.pool.acquire() as conn:
        result = await admin.record_refund(
            conn,
            args.account,
            args.amount,
            operator=args.operator_used,
            external_id=args.external_id,
            note=args.note,
            changed_by=operator_name(),
        )
    return _report(args, "refund", -args.amount, result)


async def cmd_transfer(db: Any, args: argparse.Namespace, config: Config) -> int:
    if args.amount <= 0:
        raise UsageError("a transfer must be a positive amount")
    async with db.pool.acquire() as conn:
        result = await admin.transfer(
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


def register(top: Subparsers) -> None:
    pay = group(top, "payment", "payments")
    p = pay.add_parser("add", help="record a payment (idempotent with --external-id)")
    p.add_argument("account")
    p.add_argument("amount", type=amount_arg)
    p.add_argument(
        "--external-id", help="the payment's id in the payment system; a repeat is a no-op"
    )
    p.add_argument("--kind", choices=["payment", "card_charge"], default="payment")
    p.add_argument("--note")
    operator_option(p, "payments do not count towards the daily credit/refund limit")
    p.set_defaults(func=cmd_payment_add)

    credit = group(top, "credit", "manual and promotional credits")
    p = credit.add_parser("add", help="credit an account (counts towards the operator's limits)")
    p.add_argument("account")
    p.add_argument("amount", type=amount_arg)
    p.add_argument("--promotional", action="store_true", help="a promotional credit")
    p.add_argument("--external-id", help="an id from another system; a repeat is a no-op")
    p.add_argument("--note")
    operator_option(p, "required")
    p.set_defaults(func=cmd_credit_add)

    refund = group(top, "refund", "refunds")
    p = refund.add_parser("add", help="refund (take AMOUNT off the balance; counts as a credit)")
    p.add_argument("account")
    p.add_argument("amount", type=amount_arg)
    p.add_argument("--external-id", help="an id from another system; a repeat is a no-op")
    p.add_argument("--note")
    operator_option(p, "required")
    p.set_defaults(func=cmd_refund_add)

    p = top.add_parser(
        "transfer", help="move funds between two subscribers (both must allow transfers)"
    )
    p.add_argument("from_account", metavar="FROM")
    p.add_argument("to_account", metavar="TO")
    p.add_argument("amount", type=amount_arg)
    p.add_argument("--external-id", help="an id from another system; a repeat is a no-op")
    p.add_argument("--note")
    operator_option(p, "optional: a subscriber's own transfer names none")
    p.set_defaults(func=cmd_transfer)
