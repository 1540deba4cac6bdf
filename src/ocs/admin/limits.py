"""Credit limits (permanent and temporary, with their history) and warning thresholds.

Rules of this file:
- Limits change only through ``ocs_set_credit_limit`` and ``ocs_set_temporary_credit_limit``,
  which keep ``credit_limit_history`` and (with an operator) enforce the operator's allowance in
  the database: a refusal is ``Refused`` with the database's text, naming each rule it breaks
  and the figures.
- Thresholds are replaced as a whole by ``ocs_set_warning_thresholds``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg

from ocs.admin.lookup import account_id, operator_id
from ocs.core.money import to_decimal
from ocs.store.errors import Executor, database_rules


async def set_credit_limit(
    conn: asyncpg.Connection,
    account: int,
    limit: int,
    *,
    changed_by: str | None = None,
    reason: str | None = None,
    operator: str | None = None,
) -> None:
    """Set the permanent credit limit (micro-units); the history records who and why."""
    op = await operator_id(conn, operator)
    with database_rules():
        await conn.execute(
            "SELECT ocs_set_credit_limit($1, $2, $3, $4, $5)",
            account,
            to_decimal(limit),
            op,
            changed_by,
            reason,
        )


async def set_temporary_credit_limit(
    conn: asyncpg.Connection,
    account: int,
    *,
    valid_until: datetime,
    amount: int | None = None,
    percent: Decimal | None = None,
    changed_by: str | None = None,
    reason: str | None = None,
    operator: str | None = None,
    now: datetime | None = None,
) -> int:
    """Give a temporary increase (an amount in micro-units, or a percentage of the positive
    permanent limit) until ``valid_until``, replacing the active one. With an ``operator`` the
    database refuses (``Refused``, naming each rule) an increase beyond the operator's allowance
    in amount or duration. Returns the increase's id."""
    op = await operator_id(conn, operator)
    with database_rules():
        new_id: int = await conn.fetchval(
            "SELECT ocs_set_temporary_credit_limit($1, $2, $3, $4, $5, $6, $7, $8)",
            account,
            to_decimal(amount) if amount is not None else None,
            percent,
            valid_until,
            op,
            changed_by,
            reason,
            now,
        )
    return new_id


async def available_credit_in_database(
    db: Executor, account: int, now: datetime | None = None
) -> int:
    """``ocs_available_credit``: DESIGN §1's figure as the database computes it for its rules
    (micro-units, no reservations)."""
    value: int = await db.fetchval(
        "SELECT (ocs_available_credit($1, $2) * 1000000)::bigint", account, now
    )
    return value


# --- warning thresholds and account classes ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class WarningThreshold:
    amount: int | None  # micro-units of available credit
    percent: Decimal | None  # of the positive permanent limit (postpaid only)
    armed: bool
    fired_at: datetime | None


async def set_warning_thresholds(
    conn: asyncpg.Connection,
    account_name: str,
    amounts: Sequence[int],
    percents: Sequence[Decimal],
) -> None:
    """Replace the account's warning thresholds (an empty list removes them)."""
    acct = await account_id(conn, account_name)
    with database_rules():
        await conn.execute(
            "SELECT ocs_set_warning_thresholds($1, $2::numeric[], $3::numeric[])",
            acct,
            [to_decimal(a) for a in amounts],
            list(percents),
        )


async def warning_thresholds(db: Executor, account: int) -> list[WarningThreshold]:
    rows = await db.fetch(
        """SELECT (amount * 1000000)::bigint AS amount, percent, armed, fired_at
           FROM account_warning_thresholds WHERE account_id = $1
           ORDER BY amount DESC NULLS LAST, percent DESC""",
        account,
    )
    return [WarningThreshold(r["amount"], r["percent"], r["armed"], r["fired_at"]) for r in rows]


async def credit_limit_history(db: Executor, account: int) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await db.fetch(
        """SELECT h.changed_at, h.changed_by, o.name AS operator, h.temporary,
                  (h.old_limit * 1000000)::bigint AS old_limit,
                  (h.new_limit * 1000000)::bigint AS new_limit,
                  (h.temp_amount * 1000000)::bigint AS temp_amount, h.temp_percent,
                  h.valid_until, h.reason
           FROM credit_limit_history h LEFT JOIN operators o ON o.id = h.operator_id
           WHERE h.account_id = $1 ORDER BY h.changed_at, h.id""",
        account,
    )
    return rows


async def give_temporary_increase(
    conn: asyncpg.Connection,
    account_name: str,
    *,
    valid_until: datetime,
    amount: int | None = None,
    percent: Decimal | None = None,
    changed_by: str | None = None,
    reason: str | None = None,
    operator: str | None = None,
) -> int:
    """``set_temporary_credit_limit`` for the account called ``account_name``."""
    async with conn.transaction():
        acct = await account_id(conn, account_name)
        return await set_temporary_credit_limit(
            conn,
            acct,
            valid_until=valid_until,
            amount=amount,
            percent=percent,
            changed_by=changed_by,
            reason=reason,
            operator=operator,
        )


async def set_permanent_limit(
    conn: asyncpg.Connection,
    account_name: str,
    limit: int,
    *,
    changed_by: str | None = None,
    reason: str | None = None,
    operator: str | None = None,
) -> None:
    """``set_credit_limit`` for the account called ``account_name``."""
    async with conn.transaction():
        acct = await account_id(conn, account_name)
        await set_credit_limit(
            conn, acct, limit, changed_by=changed_by, reason=reason, operator=operator
        )
