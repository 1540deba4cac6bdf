"""Command lines: ``ocsd`` (the daemon) and ``ocs`` (administration).

Exit codes: 0 done; 1 the request was refused (unknown account, conflict, bad amount);
2 bad usage or configuration; 3 the database cannot be reached or used.

Rules of this package:
- One module per command group; each registers its sub-commands (``register``) and calls the
  service layer, ``ocs.admin``. No SQL here.
- This is the only package that imports ``ocs.app`` (the daemon) and ``ocs.api`` (the account
  API's server), each only when its command runs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from ocs import __version__
from ocs.admin.parsing import format_duration, parse_duration, parse_percent, parse_thresholds
from ocs.cli import (
    accounts,
    api,
    cdr,
    demo,
    imports,
    limits,
    money,
    operators,
    ops,
    outbox,
    prepaid,
    rates,
    tariffs,
    tokens,
)
from ocs.cli.common import (
    EXIT_DATABASE,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    Command,
    UsageError,
)
from ocs.cli.imports import ProgressBar
from ocs.config import Config, ConfigError, load_config
from ocs.core.identity import IdentityError
from ocs.core.money import AmountError
from ocs.store.database import DatabaseUnavailable, open_database
from ocs.store.errors import StoreError

__all__ = [
    "EXIT_DATABASE",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "ProgressBar",
    "UsageError",
    "admin_main",
    "admin_parser",
    "daemon_main",
    "format_duration",
    "parse_duration",
    "parse_percent",
    "parse_thresholds",
]


def admin_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ocs",
        description="Administer ocs: accounts, money, limits, tariffs, schema.",
        epilog="The config file is --config, else $OCS_CONFIG, else the built-in defaults "
        "(embedded PostgreSQL under var/, as 'make run' uses).",
    )
    parser.add_argument("--config", metavar="FILE", help="TOML config file")
    parser.add_argument("--version", action="version", version=f"ocs {__version__}")
    top = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo.register_db(top)
    accounts.register(top)
    money.register(top)
    limits.register(top)
    tariffs.register(top)
    operators.register(top)
    limits.register_thresholds(top)
    accounts.register_classes(top)
    prepaid.register(top)
    outbox.register(top)
    imports.register(top)
    rates.register(top)
    demo.register(top)
    tokens.register(top)
    cdr.register(top)
    api.register(top)
    ops.register(top)
    return parser


async def _run_admin(func: Command, args: argparse.Namespace, config: Config) -> int:
    apply = getattr(args, "migrate", True)
    async with open_database(config.database, apply_migrations=apply) as db:
        return await func(db, args, config)


def admin_main(argv: Sequence[str] | None = None) -> int:
    args = admin_parser().parse_args(argv)
    local = getattr(args, "local", None)
    if local is not None:
        return int(local(args))
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return ops.fail(str(exc), EXIT_USAGE)
    logging.basicConfig(level=logging.WARNING, format="ocs: %(levelname)s: %(message)s")
    try:
        return asyncio.run(_run_admin(args.func, args, config))
    except DatabaseUnavailable as exc:
        return ops.fail(str(exc), EXIT_DATABASE)
    except (UsageError, AmountError, IdentityError) as exc:
        return ops.fail(str(exc), EXIT_USAGE)
    except StoreError as exc:
        return ops.fail(str(exc), EXIT_REFUSED)
    except KeyboardInterrupt:
        return ops.fail("interrupted", 130)


def daemon_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ocsd", description="The ocs online charging daemon.")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML config file (else $OCS_CONFIG, else built-in defaults)",
    )
    parser.add_argument(
        "--check-config", action="store_true", help="validate the configuration and exit"
    )
    parser.add_argument(
        "--load-demo", action="store_true", help="development: (re)load the demo accounts at start"
    )
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--version", action="version", version=f"ocsd {__version__}")
    return parser


def daemon_main(argv: Sequence[str] | None = None) -> int:
    args = daemon_parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"ocsd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.check_config:
        print(f"configuration OK ({config.source})")
        return EXIT_OK

    from ocs.app import main  # noqa: PLC0415

    return main(config, config_path=args.config, load_demo=args.load_demo, worker=args.worker)
