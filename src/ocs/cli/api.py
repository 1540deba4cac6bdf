"""``ocs api``: the account API's HTTP server (``ocs.api``), in the foreground."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal

from ocs.cli.common import EXIT_USAGE, Subparsers
from ocs.config import ConfigError, load_config


def _die_with_parent() -> None:
    """Started by ocsd (``api.with_daemon``): end when the daemon ends, even by SIGKILL."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


def cmd_api(args: argparse.Namespace) -> int:
    from ocs.api.server import openapi_document, serve  # noqa: PLC0415
    from ocs.cli.ops import fail  # noqa: PLC0415

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return fail(str(exc), EXIT_USAGE)
    if args.openapi:
        print(openapi_document(config), end="")
        return 0
    if args.with_parent:
        _die_with_parent()
    return serve(config, listen=args.listen)


def register(top: Subparsers) -> None:
    p = top.add_parser("api", help="serve the account API (HTTP/JSON, OpenAPI at /openapi.json)")
    p.add_argument("--listen", metavar="HOST:PORT", help="instead of api.listen")
    p.add_argument(
        "--openapi", action="store_true", help="print the OpenAPI document and exit (no database)"
    )
    p.add_argument("--with-parent", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(local=cmd_api)
