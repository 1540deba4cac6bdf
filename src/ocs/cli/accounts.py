"""``ocs account``, ``ocs identity`` and ``ocs account-class``."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ocs import admin
from ocs.cli.common import (
    EXIT_OK,
    Subparsers,
    UsageError,
    amount_arg,
    count_arg,
    describe_decision,
    describe_thresholds,
    fields,
    group,
    note_without_operator,
    operator_name,
    operator_option,
    rate_limit_arg,
    table,
)
from ocs.config import Config
from ocs.core import AccountStatus, LimitBasis, format_amount
from ocs.core.identity import IdentityKind
from ocs.radius.auth import CredentialError, CredentialStorage, stored_credential

BLOCKED_REASONS = {
    "prepaid_unpaid": "a prepaid period is unpaid (a payment that covers it unblocks)"
}


def _settings_from(args: argparse.Namespace) -> admin.AccountSettings:
    return admin.AccountSettings(
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
        await admin.create_account(
            conn, args.name, _settings_from(args), changed_by=operator_name(), operator=operator
        )
    print(f"created account {args.name}")
    return await cmd_account_show(db, args, config)


async def cmd_account_update(db: Any, args: argparse.Namespace, config: Config) -> int:
    operator = (
        note_without_operator(args, "the credit limit") if args.credit_limit is not None else None
    )
    async with db.pool.acquire() as conn:
        await admin.update_account(
            conn, args.name, _settings_from(args), changed_by=operator_name(), operator=operator
        )
    print(f"updated account {args.name}")
    return await cmd_account_show(db, args, config)


def account_report(overview: admin.AccountOverview) -> list[tuple[str, str]]:
    """The lines of ``ocs account show``, ending with the decision."""
    snapshot = overview.snapshot
    now = overview.now
    tariff = snapshot.tariff
    increase = snapshot.temporary_increase
    permanent = snapshot.credit_limit
    effective = overview.effective_limit
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
    tariff_name = overview.tariff_name
    pairs = [
        ("account", f"{snapshot.name} (id {snapshot.account_id})"),
        ("status", snapshot.status.value),
        ("identities", ", ".join(f"{k} {v}" for k, v in overview.identities) or "none"),
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
    if overview.unbilled_this_period is not None:
        pairs.append(("unbilled this period", format_amount(overview.unbilled_this_period)))
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
        ("available credit", format_amount(overview.available)),
        ("new session now", describe_decision(overview.decision)),
    ]
    return pairs


async def cmd_account_show(db: Any, args: argparse.Namespace, config: Config) -> int:
    overview = await admin.account_overview(
        db.pool, args.name, now=datetime.now(UTC), limits=config.grant.limits()
    )
    pairs = account_report(overview)
    if overview.blocked_reason:
        reason = overview.blocked_reason
        pairs.insert(2, ("blocked because", BLOCKED_REASONS.get(reason, reason)))
    how = {
        "yes": "yes",
        "no": "no",
        "class": f"as its class {overview.account_class} says"
        if overview.account_class
        else "no class says yes",
    }[overview.transfers]
    allowed = "allowed" if overview.transfers_allowed else "not allowed"
    pairs.append(("transfers", f"{allowed} ({how})"))
    pairs.append(("currency", overview.currency))
    if overview.rate_plan:
        plan = f"{overview.rate_plan} (its own)"
    elif overview.class_rate_plan:
        plan = f"{overview.class_rate_plan} (its class {overview.account_class}'s)"
    else:
        plan = "none (the tariff prices every destination)"
    pairs.append(("rate plan", plan))
    pairs.append(("warning thresholds", describe_thresholds(overview.thresholds)))
    print(fields(pairs))
    print("(the daemon also counts running sessions and setups; this check assumes none)")
    return EXIT_OK


async def cmd_account_list(db: Any, args: argparse.Namespace, config: Config) -> int:
    rows = await admin.list_accounts(db.pool, limit=args.limit, prefix=args.prefix)
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
    credential = None
    if args.password is not None:
        password = sys.stdin.readline().rstrip("\r\n") if args.password == "-" else args.password
        try:
            credential = stored_credential(password, CredentialStorage(args.password_storage))
        except CredentialError as exc:
            raise UsageError(f"--password: {exc}") from None
    normal = await admin.add_identity(
        db.pool, args.account, IdentityKind(args.kind), args.value, credential=credential
    )
    stored = f" (password stored as {args.password_storage})" if credential else ""
    print(f"account {args.account}: {args.kind} {normal}{stored}")
    return EXIT_OK


async def cmd_account_class_set(db: Any, args: argparse.Namespace, config: Config) -> int:
    async with db.pool.acquire() as conn:
        created = await admin.set_account_class(
            conn, args.name, transfers_allowed=args.transfers == "yes"
        )
    print(f"{'created' if created else 'updated'} account class {args.name}")
    return await cmd_account_class_list(db, args, config)


async def cmd_account_class_list(db: Any, args: argparse.Namespace, config: Config) -> int:
    rows = await admin.list_account_classes(db.pool)
    print(
        table(
            ["class", "transfers", "accounts"],
            [(r["name"], "yes" if r["transfers_allowed"] else "no", r["accounts"]) for r in rows],
        )
    )
    return EXIT_OK


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
    operator_option(parser, "records who set the credit limit")


def register(top: Subparsers) -> None:
    acct = group(top, "account", "accounts")
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

    ident = group(top, "identity", "subscriber identities")
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


def register_classes(top: Subparsers) -> None:
    cls = group(top, "account-class", "account classes")
    p = cls.add_parser("set", help="create or change an account class")
    p.add_argument("name")
    p.add_argument("--transfers", choices=["yes", "no"], required=True)
    p.set_defaults(func=cmd_account_class_set)
    cls.add_parser("list", help="list account classes").set_defaults(func=cmd_account_class_list)
