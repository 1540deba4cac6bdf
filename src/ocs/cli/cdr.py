"""``ocs cdr export``: every closed session in a time range as one CDR, CSV or JSON lines."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC
from typing import Any

from ocs import admin
from ocs.admin.cdrs import iter_cdrs
from ocs.admin.parsing import parse_instant
from ocs.billing.cdr_export import csv_header, csv_rows, jsonl_rows
from ocs.cli.common import EXIT_OK, Subparsers, UsageError, group
from ocs.config import Config


async def cmd_cdr_export(db: Any, args: argparse.Namespace, config: Config) -> int:
    now = await admin.database_now(db.pool)
    since = parse_instant(args.since, now, UTC, what="--since")
    until = parse_instant(args.until, now, UTC, what="--until") if args.until else None
    if until is not None and until <= since:
        raise UsageError(f"--until {args.until!r} is not after --since {args.since!r}")
    out = sys.stdout
    if args.format == "csv":
        out.write(csv_header())
    count = 0
    async for page in iter_cdrs(db.pool, since=since, until=until, account=args.account):
        out.write(csv_rows(page) if args.format == "csv" else jsonl_rows(page))
        count += len(page)
    out.flush()
    print(f"exported {count} CDR{'s' if count != 1 else ''}", file=sys.stderr)
    return EXIT_OK


def register(top: Subparsers) -> None:
    cdr = group(top, "cdr", "call detail records (closed sessions)")
    p = cdr.add_parser("export", help="CDRs of sessions that ended in a time range, to stdout")
    p.add_argument(
        "--since", required=True, metavar="WHEN", help="7d (ago), 2026-12-01, 2026-12-01T08:00Z"
    )
    p.add_argument("--until", metavar="WHEN", help="the end of the range (default: now)")
    p.add_argument("--format", choices=["csv", "jsonl"], default="csv")
    p.add_argument("--account", help="only this account's")
    p.set_defaults(func=cmd_cdr_export)
