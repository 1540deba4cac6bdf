"""``ocs demo load`` and ``ocs db migrate``."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from ocs import admin
from ocs.admin.demo import DEMO_ACCOUNTS, load_demo
from ocs.cli.common import EXIT_OK, Subparsers, describe_decision, group, table
from ocs.config import Config
from ocs.core import format_amount
from ocs.store.migrate import available_migrations, migrate


async def cmd_db_migrate(db: Any, args: argparse.Namespace, config: Config) -> int:
    async with db.pool.acquire() as conn:
        applied = await migrate(conn)
    newest = max(m.version for m in available_migrations())
    for m in applied:
        print(f"applied {m.version:04d}_{m.name}")
    print(f"schema is at version {newest}" + ("" if applied else " (nothing to do)"))
    return EXIT_OK


async def cmd_demo_load(db: Any, args: argparse.Namespace, config: Config) -> int:
    async with db.pool.acquire() as conn:
        await load_demo(conn)
        now = datetime.now(UTC)
        limits = config.grant.limits()
        rows = []
        for demo in DEMO_ACCOUNTS:
            overview = await admin.account_overview(conn, demo.name, now=now, limits=limits)
            rows.append(
                (
                    demo.name,
                    demo.e164,
                    format_amount(overview.snapshot.balance),
                    format_amount(overview.available),
                    describe_decision(overview.decision),
                )
            )
    print(table(["account", "e164", "balance", "available", "new session now"], rows))
    return EXIT_OK


def register_db(top: Subparsers) -> None:
    db = group(top, "db", "schema")
    db.add_parser("migrate", help="apply pending schema migrations").set_defaults(
        func=cmd_db_migrate, migrate=False
    )


def register(top: Subparsers) -> None:
    demo = group(top, "demo", "demo data")
    demo.add_parser("load", help="create or reset the demo accounts").set_defaults(
        func=cmd_demo_load
    )
