"""What every ``ocs`` command module shares: exit codes, output helpers, argument types, and how
a command names the operator who makes a change.

Rules of this file:
- Output only: text tables and fields for people. No SQL (that is ``ocs.admin``'s).
- A bad argument is a ``UsageError`` (exit 2) whose message quotes it.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ocs.admin.limits import WarningThreshold
from ocs.admin.parsing import InvalidRequest, parse_duration, percent_text
from ocs.config import Config
from ocs.core import format_amount, parse_amount
from ocs.core.model import REFUSAL_TEXT, CreditDecision, RefusalReason, ServiceUnit
from ocs.core.money import AmountError

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_DATABASE = 0, 1, 2, 3

# The operator for scripts that do not pass --operator (not a config key: it names a person or a
# system, and differs between shells sharing one config file).
OPERATOR_ENV = "OCS_OPERATOR"

# A bad argument (exit 2): the service layer's InvalidRequest, under the CLI's old name.
UsageError = InvalidRequest

Command = Callable[[Any, argparse.Namespace, Config], Awaitable[int]]
Subparsers = Any  # argparse's _SubParsersAction, which it does not export


def group(top: Subparsers, name: str, help_text: str) -> Subparsers:
    """A command with sub-commands (``ocs account create``)."""
    parser: argparse.ArgumentParser = top.add_parser(name, help=help_text)
    return parser.add_subparsers(dest="sub", required=True, metavar="SUB")


# --- output ------------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table; numbers right-aligned."""
    cells = [[str(c) for c in headers], *[["" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [
        all(re.fullmatch(r"-?[\d.,]+( s)?", row[i] or "0") for row in cells[1:])
        for i in range(len(headers))
    ]
    lines = []
    for n, row in enumerate(cells):
        parts = [
            cell.rjust(widths[i]) if numeric[i] and n else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def fields(pairs: Sequence[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in pairs)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in pairs)


def describe_decision(decision: CreditDecision) -> str:
    if decision.admitted:
        unit = {ServiceUnit.TIME: "s", ServiceUnit.VOLUME: "bytes", ServiceUnit.EVENT: "events"}
        return f"admitted, grant {decision.granted_units} {unit[decision.unit]}"
    assert decision.reason is not None
    why = REFUSAL_TEXT[decision.reason]
    if decision.reason is RefusalReason.INSUFFICIENT_CREDIT:
        why += f" (available {format_amount(decision.available)})"
    return f"refused: {why}"


def describe_thresholds(thresholds: Sequence[WarningThreshold]) -> str:
    if not thresholds:
        return "none"
    return ", ".join(
        (format_amount(t.amount) if t.amount is not None else percent_text(t.percent))
        + ("" if t.armed else " (reached)")
        for t in thresholds
    )


def money_or_dash(value: int | None) -> str:
    return "-" if value is None else format_amount(value)


# --- argument types -----------------------------------------------------------------------------


def amount_arg(text: str) -> int:
    try:
        return parse_amount(text)
    except AmountError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def count_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < -1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number >= 0 (or -1 for no cap)")
    return value


def rate_limit_arg(text: str) -> tuple[int, int]:
    """UP/DOWN in kbit/s, or 'none' (given as (0, 0): remove the limit)."""
    if text.strip().lower() == "none":
        return (0, 0)
    up, sep, down = text.partition("/")
    if not sep or not up.strip().isdigit() or not down.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected UP/DOWN in kbit/s, e.g. 512/4096")
    if int(up) < 1 or int(down) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: both rates must be at least 1 kbit/s")
    return (int(up), int(down))


def seconds_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected seconds >= 0")
    return value


def duration_arg(text: str) -> Any:
    try:
        return parse_duration(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# --- who makes a change -------------------------------------------------------------------------


def operator_name() -> str:
    """The login name of the person running ``ocs``: recorded as ``changed_by``."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def named_operator(args: argparse.Namespace) -> str | None:
    """The operator a change is made by: ``--operator``, else ``$OCS_OPERATOR``."""
    return getattr(args, "operator", None) or os.environ.get(OPERATOR_ENV) or None


def required_operator(args: argparse.Namespace, what: str) -> str:
    name = named_operator(args)
    if name is None:
        raise UsageError(
            f"{what} is made by an operator: name one with --operator NAME, or set "
            f"{OPERATOR_ENV} for scripts"
        )
    return name


def note_without_operator(args: argparse.Namespace, what: str) -> str | None:
    """The operator, or ``None`` with a note that the change is the owner's own (no operator's
    allowance applies; the history records the login name)."""
    name = named_operator(args)
    if name is None:
        print(
            f"ocs: note: {what} names no operator (--operator NAME or {OPERATOR_ENV}); recorded "
            f"as made by {operator_name()!r} with no operator's allowance",
            file=sys.stderr,
        )
    return name


def operator_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--operator",
        metavar="NAME",
        help=f"the operator making the change ({what}); default ${OPERATOR_ENV}",
    )
