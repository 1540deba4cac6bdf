"""Bulk import of accounts, identities and opening balances from CSV (``ocs import accounts``).

The file has a header row. ``name`` is required; every other column is optional and an empty
cell means the default:

    name, status, credit_limit, min_balance, limit_basis, time_zone, tariff, max_sessions,
    max_setups_per_s, account_class, transfers, opening_balance,
    user_name, e164, imsi, sip_uri, nai, calling_station_id, private

Identity columns hold one value or several separated by ``|`` (spaces are part of a value, as
in ``+41 44 000 00 01``, and are removed by normalisation). Amounts are decimal
(``12.50``). The whole file is checked first and every problem is reported with its line
number; then everything is written in one transaction, so an error (also one only the database
can see, such as a name that exists already) leaves nothing half-imported.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg

from ocs.admin.accounts import AccountSettings, TransfersSetting, create_account
from ocs.admin.lookup import operator_id
from ocs.core.identity import IdentityError, IdentityKind, normalize_identity
from ocs.core.model import AccountStatus, LimitBasis
from ocs.core.money import AmountError, parse_amount, to_decimal
from ocs.store.errors import StoreError

IDENTITY_COLUMNS: tuple[str, ...] = tuple(k.value for k in IdentityKind)
ACCOUNT_COLUMNS: tuple[str, ...] = (
    "name",
    "status",
    "credit_limit",
    "min_balance",
    "limit_basis",
    "time_zone",
    "tariff",
    "max_sessions",
    "max_setups_per_s",
    "account_class",
    "transfers",
    "opening_balance",
)
KNOWN_COLUMNS = frozenset(ACCOUNT_COLUMNS + IDENTITY_COLUMNS)
MAX_REPORTED_PROBLEMS = 50


class ImportFailed(StoreError):
    """The file cannot be imported; ``problems`` are ``line N: ...`` messages."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        shown = self.problems[:MAX_REPORTED_PROBLEMS]
        more = len(self.problems) - len(shown)
        text = "nothing was imported:\n  " + "\n  ".join(shown)
        if more:
            text += f"\n  ... and {more} more"
        super().__init__(text)


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportRow:
    line: int
    name: str
    settings: AccountSettings
    identities: tuple[tuple[IdentityKind, str], ...]  # normalised
    opening_balance: int  # micro-units


def _amount(cell: str, column: str) -> int:
    try:
        return parse_amount(cell)
    except AmountError as exc:
        raise ValueError(f"{column}: {exc}") from None


def _count(cell: str, column: str) -> int:
    try:
        value = int(cell)
    except ValueError:
        raise ValueError(f"{column}: {cell!r} is not a whole number") from None
    if value < 0:
        raise ValueError(f"{column}: {cell!r} must be 0 or more")
    return value


def _choice(cell: str, column: str, allowed: Iterable[str]) -> str:
    options = list(allowed)
    if cell not in options:
        raise ValueError(f"{column}: {cell!r} is not one of {', '.join(options)}")
    return cell


def _row(line: int, cells: dict[str, str]) -> ImportRow:
    name = cells.get("name", "")
    if not name:
        raise ValueError("name is empty")

    def get(column: str) -> str | None:
        return cells.get(column) or None

    zone = get("time_zone")
    if zone is not None:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "Europe" is a directory
            raise ValueError(f"time_zone: unknown time zone {zone!r}") from None
    status = get("status")
    basis = get("limit_basis")
    transfers = get("transfers")
    settings = AccountSettings(
        status=AccountStatus(_choice(status, "status", AccountStatus)) if status else None,
        credit_limit=_amount(v, "credit_limit") if (v := get("credit_limit")) else None,
        min_balance=_amount(v, "min_balance") if (v := get("min_balance")) else None,
        limit_basis=LimitBasis(_choice(basis, "limit_basis", LimitBasis)) if basis else None,
        time_zone=zone,
        max_sessions=_count(v, "max_sessions") if (v := get("max_sessions")) else None,
        max_setups_per_s=_count(v, "max_setups_per_s") if (v := get("max_setups_per_s")) else None,
        tariff=get("tariff"),
        account_class=get("account_class"),
        transfers=_transfers(_choice(transfers, "transfers", ("yes", "no", "class")))
        if transfers
        else None,
    )
    identities: list[tuple[IdentityKind, str]] = []
    for column in IDENTITY_COLUMNS:
        for value in filter(None, (v.strip() for v in (cells.get(column) or "").split("|"))):
            kind = IdentityKind(column)
            try:
                identities.append((kind, normalize_identity(kind, value)))
            except IdentityError as exc:
                raise ValueError(f"{column}: {exc}") from None
    opening = _amount(v, "opening_balance") if (v := get("opening_balance")) else 0
    return ImportRow(
        line=line,
        name=name,
        settings=settings,
        identities=tuple(identities),
        opening_balance=opening,
    )


def _transfers(value: str) -> TransfersSetting:
    if value == "yes":
        return "yes"
    if value == "no":
        return "no"
    return "class"


def parse_accounts_csv(lines: Iterable[str]) -> list[ImportRow]:
    """Check a whole CSV file; raises ``ImportFailed`` listing every problem by line number."""
    reader = csv.reader(lines, strict=True)
    problems: list[str] = []
    try:
        header = next(reader)
    except StopIteration:
        raise ImportFailed(["line 1: the file is empty (expected a header row)"]) from None
    except csv.Error as exc:
        raise ImportFailed([f"line 1: {exc}"]) from None
    columns = [h.strip().lower() for h in header]
    unknown = [c for c in columns if c not in KNOWN_COLUMNS]
    if unknown:
        problems.append(
            f"line 1: unknown column{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(c) for c in unknown)} (known: {', '.join(sorted(KNOWN_COLUMNS))})"
        )
    if "name" not in columns:
        problems.append("line 1: the header has no 'name' column")
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        problems.append(f"line 1: column {', '.join(duplicates)} appears twice")
    if problems:
        raise ImportFailed(problems)

    rows: list[ImportRow] = []
    names: dict[str, int] = {}
    identities: dict[tuple[IdentityKind, str], int] = {}
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(f"line {reader.line_num}: {exc}")
            break
        line = reader.line_num
        if not any(cell.strip() for cell in record):
            continue  # blank line
        if len(record) != len(columns):
            problems.append(
                f"line {line}: {len(record)} field{'s' if len(record) != 1 else ''}, "
                f"the header has {len(columns)}"
            )
            continue
        cells = {c: v.strip() for c, v in zip(columns, record, strict=True)}
        try:
            row = _row(line, cells)
        except ValueError as exc:
            problems.append(f"line {line}: {exc}")
            continue
        if row.name in names:
            problems.append(f"line {line}: account {row.name!r} is also on line {names[row.name]}")
            continue
        names[row.name] = line
        for identity in row.identities:
            if identity in identities:
                problems.append(
                    f"line {line}: {identity[0].value} {identity[1]!r} is also on line "
                    f"{identities[identity]}"
                )
            identities.setdefault(identity, line)
        rows.append(row)
    if problems:
        raise ImportFailed(problems)
    return rows


Progress = Callable[[int, int], None]


class _DryRun(Exception):
    pass


async def import_accounts(
    conn: asyncpg.Connection,
    rows: Sequence[ImportRow],
    *,
    operator: str | None = None,
    changed_by: str | None = None,
    note: str = "opening balance (import)",
    progress: Progress | None = None,
    dry_run: bool = False,
) -> int:
    """Write the checked rows in one transaction; returns how many accounts were created.

    Credit limits go through ``ocs_set_credit_limit`` (the history names the operator); an
    opening balance is an ``adjustment`` ledger entry. The first row the database refuses
    raises ``ImportFailed`` naming its line, and the whole import is rolled back. With
    ``dry_run`` everything is checked, also by the database, and then rolled back.
    """
    total = len(rows)
    try:
        async with conn.transaction():
            op = await operator_id(conn, operator)
            for done, row in enumerate(rows, start=1):
                try:
                    await _write(
                        conn, row, op=op, operator=operator, changed_by=changed_by, note=note
                    )
                except StoreError as exc:
                    raise ImportFailed([f"line {row.line}: {exc}"]) from None
                except asyncpg.PostgresError as exc:  # e.g. an amount too large for numeric(20,6)
                    raise ImportFailed([f"line {row.line}: {exc}"]) from None
                if progress is not None:
                    progress(done, total)
            if dry_run:
                raise _DryRun
    except _DryRun:
        pass
    return total


async def _write(
    conn: asyncpg.Connection,
    row: ImportRow,
    *,
    op: int | None,
    operator: str | None,
    changed_by: str | None,
    note: str,
) -> None:
    account = await create_account(
        conn, row.name, row.settings, changed_by=changed_by, operator=operator
    )
    for kind, value in row.identities:
        owner = await conn.fetchval(
            """SELECT a.name FROM account_identities i JOIN accounts a ON a.id = i.account_id
               WHERE i.kind = $1 AND i.value = $2""",
            kind.value,
            value,
        )
        if owner is not None:
            raise StoreError(f"{kind.value} {value!r} belongs to account {owner!r} already")
        await conn.execute(
            "INSERT INTO account_identities (account_id, kind, value) VALUES ($1, $2, $3)",
            account,
            kind.value,
            value,
        )
    if row.opening_balance:
        await conn.execute(
            """INSERT INTO ledger_entries (account_id, kind, amount, operator_id, changed_by, note)
               VALUES ($1, 'adjustment', $2, $3, COALESCE($4, current_user), $5)""",
            account,
            to_decimal(row.opening_balance),
            op,
            changed_by,
            note,
        )
