"""Prepaid services (seed 003, Splynx): a recurring charge made in advance every period.

Rules of this file:
- A service belongs to an account and has a name unique there; stopping it keeps the charges
  already made. The charging itself is ``ocs.billing.periods.run_prepaid_periods`` (the rules
  are ``ocs_run_prepaid_periods`` in PostgreSQL).
- Amounts are micro-units per period; ``period_days`` ``None`` is a calendar month in the
  account's time zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from ocs.admin.lookup import account_id, operator_id
from ocs.admin.parsing import InvalidRequest
from ocs.billing.periods import PeriodRun, run_prepaid_periods
from ocs.core.money import to_decimal
from ocs.store.errors import Conflict, Executor, NotFound, database_rules

__all__ = [
    "PeriodRun",
    "PrepaidService",
    "add_prepaid_service",
    "list_prepaid_services",
    "run_prepaid_periods",
    "stop_prepaid_service",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class PrepaidService:
    """``amount`` in micro-units per period; ``period_days`` ``None`` is monthly."""

    account: str
    name: str
    amount: int
    period_days: int | None
    start: datetime
    grace: timedelta
    next_period: int
    next_charge_at: datetime
    active: bool
    unpaid: int  # micro-units charged and not yet covered


async def add_prepaid_service(
    conn: asyncpg.Connection,
    account_name: str,
    name: str,
    amount: int,
    *,
    period_days: int | None = None,
    start: datetime | None = None,
    grace: timedelta = timedelta(0),
    operator: str | None = None,
    changed_by: str | None = None,
) -> int:
    """Add a recurring service to an account; its first period starts at ``start`` (default:
    now) and is charged by the next run at or after that instant."""
    if amount <= 0:
        raise InvalidRequest("a prepaid service needs a positive amount")
    if period_days is not None and period_days < 1:
        raise InvalidRequest("a period is at least one day")
    async with conn.transaction():
        acct = await account_id(conn, account_name)
        op = await operator_id(conn, operator)
        try:
            with database_rules():
                new_id: int = await conn.fetchval(
                    """INSERT INTO prepaid_services (account_id, name, amount, period_days, anchor,
                                                     grace_period, operator_id, changed_by)
                       VALUES ($1, $2, $3, $4, COALESCE($5, now()), $6, $7,
                               COALESCE($8, current_user))
                       RETURNING id""",
                    acct,
                    name,
                    to_decimal(amount),
                    period_days,
                    start,
                    grace,
                    op,
                    changed_by,
                )
        except Conflict:
            raise Conflict(
                f"account {account_name!r} has a service named {name!r} already"
            ) from None
    return new_id


async def list_prepaid_services(
    db: Executor, account_name: str | None = None
) -> list[PrepaidService]:
    rows = await db.fetch(
        """SELECT a.name AS account, s.name, (s.amount * 1000000)::bigint AS amount,
                  s.period_days, s.anchor, s.grace_period, s.next_period,
                  ocs_prepaid_period_start(s.anchor, s.period_days, a.time_zone, s.next_period)
                      AS next_charge_at,
                  s.active,
                  COALESCE((SELECT (sum(c.amount) * 1000000)::bigint FROM prepaid_charges c
                            WHERE c.service_id = s.id AND c.settled_at IS NULL), 0) AS unpaid
           FROM prepaid_services s JOIN accounts a ON a.id = s.account_id
           WHERE $1::text IS NULL OR a.name = $1
           ORDER BY a.name, s.name""",
        account_name,
    )
    return [
        PrepaidService(
            account=r["account"],
            name=r["name"],
            amount=r["amount"],
            period_days=r["period_days"],
            start=r["anchor"],
            grace=r["grace_period"],
            next_period=r["next_period"],
            next_charge_at=r["next_charge_at"],
            active=r["active"],
            unpaid=r["unpaid"],
        )
        for r in rows
    ]


async def stop_prepaid_service(conn: asyncpg.Connection, account_name: str, name: str) -> None:
    """Stop charging a service (the customer cancelled); charges already made stay."""
    acct = await account_id(conn, account_name)
    status = await conn.execute(
        "UPDATE prepaid_services SET active = false WHERE account_id = $1 AND name = $2",
        acct,
        name,
    )
    if status == "UPDATE 0":
        raise NotFound(f"account {account_name!r} has no service named {name!r}")
