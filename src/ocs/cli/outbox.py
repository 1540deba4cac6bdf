"""``ocs outbox``: warnings waiting for (or sent to) the webhook."""

from __future__ import annotations

import argparse
from datetime import UTC
from typing import Any

from ocs.admin.outbox import OutboxEvent, list_outbox
from ocs.cli.common import EXIT_OK, Subparsers, group, table
from ocs.config import Config


def _state(event: OutboxEvent) -> str:
    if event.state == "delivered":
        return "delivered"
    if event.state == "abandoned":
        return f"abandoned: {event.last_error}"
    return "pending" + (f" (last error: {event.last_error})" if event.last_error else "")


async def cmd_outbox_list(db: Any, args: argparse.Namespace, config: Config) -> int:
    rows = await list_outbox(db.pool, pending=args.pending, limit=args.limit)
    print(
        table(
            ["id", "when (UTC)", "topic", "account", "threshold", "available", "tries", "state"],
            [
                (
                    r.id,
                    r.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                    r.topic,
                    r.account or "-",
                    r.threshold or "",
                    r.available or "",
                    r.attempts,
                    _state(r),
                )
                for r in reversed(rows)
            ],
        )
    )
    return EXIT_OK


def register(top: Subparsers) -> None:
    out = group(top, "outbox", "notifications for webhooks")
    p = out.add_parser("list", help="the latest outbox rows")
    p.add_argument("--pending", action="store_true", help="only rows not yet delivered")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_outbox_list)
