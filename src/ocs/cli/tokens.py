"""``ocs api-token``: bearer tokens of the account API, one operator each."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from ocs import admin
from ocs.admin import tokens
from ocs.admin.parsing import parse_until
from ocs.cli.common import EXIT_OK, Subparsers, UsageError, group, operator_name, table


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if moment else "-"


async def cmd_token_create(db: Any, args: argparse.Namespace, config: Any) -> int:
    async with db.pool.acquire() as conn:
        expires_at: datetime | None = None
        if args.expires.strip().lower() != "never":
            now = await admin.database_now(conn)
            expires_at = parse_until(args.expires, now, UTC, what="--expires")
            if expires_at <= now:
                raise UsageError(f"--expires {args.expires!r} is not in the future")
        new = await tokens.create_token(
            conn,
            args.operator,
            expires_at=expires_at,
            label=args.label,
            manage_operators=args.manage_operators,
            created_by=operator_name(),
        )
    record = new.record
    print(new.token)
    print(
        f"token {record.id} for operator {record.operator}, expires "
        f"{_when(record.expires_at) + ' UTC' if record.expires_at else 'never'}"
        f"{', may manage operators' if record.manage_operators else ''}; "
        "it is shown only now (ocs keeps its SHA-256)",
        file=sys.stderr,
    )
    return EXIT_OK


async def cmd_token_list(db: Any, args: argparse.Namespace, config: Any) -> int:
    rows = await tokens.list_tokens(db.pool, args.operator)

    def state(t: tokens.ApiToken) -> str:
        if t.revoked_at:
            return f"revoked {_when(t.revoked_at)}"
        if t.expires_at and t.expires_at <= datetime.now(UTC):
            return "expired"
        return "valid"

    print(
        table(
            [
                "id",
                "operator",
                "label",
                "operators",
                "created (UTC)",
                "expires",
                "last used",
                "state",
            ],
            [
                (
                    t.id,
                    t.operator,
                    t.label or "",
                    "manage" if t.manage_operators else "-",
                    _when(t.created_at),
                    _when(t.expires_at) if t.expires_at else "never",
                    _when(t.last_used_at),
                    state(t),
                )
                for t in rows
            ],
        )
    )
    return EXIT_OK


async def cmd_token_revoke(db: Any, args: argparse.Namespace, config: Any) -> int:
    async with db.pool.acquire() as conn:
        token = await tokens.revoke_token(conn, args.id)
    print(f"token {token.id} of operator {token.operator} revoked at {_when(token.revoked_at)} UTC")
    return EXIT_OK


def register(top: Subparsers) -> None:
    tok = group(top, "api-token", "bearer tokens of the account API (ocs api)")
    p = tok.add_parser("create", help="a new token acting as OPERATOR (printed once)")
    p.add_argument("operator", metavar="OPERATOR")
    p.add_argument(
        "--expires",
        default="+90d",
        metavar="WHEN",
        help="+90d (default), +12h, 2026-12-31, 2026-12-31T18:00Z, or 'never'",
    )
    p.add_argument("--label", help="what the token is for (a billing system's name)")
    p.add_argument(
        "--manage-operators",
        action="store_true",
        help="may also create operators and change their allowances",
    )
    p.set_defaults(func=cmd_token_create)
    p = tok.add_parser("list", help="tokens (never their secrets)")
    p.add_argument("--operator", help="only this operator's")
    p.set_defaults(func=cmd_token_list)
    p = tok.add_parser("revoke", help="refuse a token from now on")
    p.add_argument("id", type=int, metavar="ID")
    p.set_defaults(func=cmd_token_revoke)
