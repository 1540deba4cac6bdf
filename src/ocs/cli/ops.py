"""``ocs status`` and ``ocs check-config``: operations that need no database."""

from __future__ import annotations

import argparse
import json
import sys

from ocs.cli.common import EXIT_DATABASE, EXIT_OK, EXIT_USAGE, Subparsers
from ocs.config import ConfigError, load_config


def fail(message: str, code: int) -> int:
    print(f"ocs: error: {message}", file=sys.stderr)
    return code


def cmd_status(args: argparse.Namespace) -> int:
    from ocs.ops.status_client import (  # noqa: PLC0415
        StatusUnavailable,
        fetch_status,
        format_status,
        status_url,
    )

    try:
        url = args.url or status_url(load_config(args.config))
        data = fetch_status(url)
    except ConfigError as exc:
        return fail(str(exc), EXIT_USAGE)
    except StatusUnavailable as exc:
        return fail(str(exc), EXIT_DATABASE)
    print(json.dumps(data, indent=2) if args.json else format_status(data))
    return EXIT_OK


def cmd_check_config(args: argparse.Namespace) -> int:
    from ocs.radius.setup import RadiusSetupError, build_clients, load_dictionary  # noqa: PLC0415

    try:
        config = load_config(args.file)
        if config.radius.enabled:
            build_clients(config.radius, load_dictionary(config.radius.dictionary))
    except (ConfigError, RadiusSetupError) as exc:
        print(f"ocs: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"configuration OK ({config.source})")
    return EXIT_OK


def register(top: Subparsers) -> None:
    p = top.add_parser("status", help="ask the running ocsd (its /status on metrics.listen)")
    p.add_argument("--url", help="the daemon's status URL (default: from metrics.listen)")
    p.add_argument("--json", action="store_true", help="print the daemon's JSON as it is")
    p.set_defaults(local=cmd_status)
    p = top.add_parser("check-config", help="validate a configuration file (exit 0 or 2)")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(local=cmd_check_config)
