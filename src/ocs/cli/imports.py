"""``ocs import accounts``: accounts, identities and opening balances from CSV."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ocs.admin import account_import
from ocs.cli.common import (
    EXIT_OK,
    Subparsers,
    UsageError,
    group,
    note_without_operator,
    operator_name,
    operator_option,
)
from ocs.config import Config


class ProgressBar:
    """``importing [#####.....] 50% 500/1000`` on stderr: redrawn in place on a terminal,
    a line per tenth otherwise (logs stay short)."""

    def __init__(self, label: str, stream: Any = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = -1

    def __call__(self, done: int, total: int) -> None:
        percent = 100 * done // total if total else 100
        step = percent if self.tty else percent // 10 * 10
        if step == self._last and done != total:
            return
        self._last = step
        filled = percent // 5
        bar = f"{self.label} [{'#' * filled}{'.' * (20 - filled)}] {percent:3d}% {done}/{total}"
        if self.tty:
            self.stream.write("\r" + bar + ("\n" if done == total else ""))
        else:
            self.stream.write(bar + "\n")
        self.stream.flush()


async def cmd_import_accounts(db: Any, args: argparse.Namespace, config: Config) -> int:
    try:
        with open(args.file, encoding="utf-8-sig", newline="") as handle:  # noqa: ASYNC230
            rows = account_import.parse_accounts_csv(handle)
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{args.file} is not UTF-8 text ({exc.reason})") from None
    operator = note_without_operator(args, "the import")
    print(
        f"checked {args.file}: {len(rows)} account{'s' if len(rows) != 1 else ''}", file=sys.stderr
    )
    async with db.pool.acquire() as conn:
        count = await account_import.import_accounts(
            conn,
            rows,
            operator=operator,
            changed_by=operator_name(),
            note=f"opening balance (import of {os.path.basename(args.file)})",
            progress=ProgressBar("importing"),
            dry_run=args.dry_run,
        )
    if args.dry_run:
        print(f"dry run: {count} accounts would be imported; nothing was written")
    else:
        print(f"imported {count} account{'s' if count != 1 else ''} from {args.file}")
    return EXIT_OK


def register(top: Subparsers) -> None:
    imp = group(top, "import", "bulk import")
    p = imp.add_parser(
        "accounts", help="accounts, identities and opening balances from CSV (all or nothing)"
    )
    p.add_argument("file", metavar="FILE.csv")
    p.add_argument("--dry-run", action="store_true", help="check everything, write nothing")
    operator_option(p, "recorded on credit limits and opening balances")
    p.set_defaults(func=cmd_import_accounts)
