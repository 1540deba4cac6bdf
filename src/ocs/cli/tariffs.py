"""``ocs tariff``."""

from __future__ import annotations

import argparse
from typing import Any

from ocs import admin
from ocs.cli.common import EXIT_OK, Subparsers, UsageError, amount_arg, group, seconds_arg, table
from ocs.config import Config
from ocs.core import format_amount


async def cmd_tariff_set(db: Any, args: argparse.Namespace, config: Config) -> int:
    settings = admin.TariffSettings(
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
        created = await admin.set_tariff(conn, args.name, settings)
    print(f"{'created' if created else 'updated'} tariff {args.name}")
    return await cmd_tariff_list(db, args, config)


async def cmd_tariff_list(db: Any, args: argparse.Namespace, config: Config) -> int:
    rows = await admin.list_tariffs(db.pool)
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


def register(top: Subparsers) -> None:
    tar = group(top, "tariff", "tariffs")
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
