"""Prepaid periods (seed 003, Splynx "Prepaid (Custom)"): a recurring service charged in advance.

A service is charged at the start of every period (monthly, or every N days, counted from its
start in the account's time zone), once per period: ``prepaid_charges`` has a unique key per
service and period, so running twice charges once. When the balance cannot cover a charge
(``balance + effective limit - min_balance < 0``) the account is blocked once the service's
grace period has passed since the period started; a payment that covers it unblocks the
account at once (a ledger trigger), and so does the next run after a limit change.

The logic is ``ocs_run_prepaid_periods`` in PostgreSQL; the daemon's sidecar calls
:func:`run_prepaid_periods` periodically, and ``ocs prepaid run`` does the same by hand. The
same run also notes temporary credit-limit increases that have ended
(``ocs_see_ended_increases``): the available credit drops then without any write, and the
warning thresholds (and the daemon's cache, through ``ocs_account_changed``) should hear of it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from ocs.core.money import to_decimal
from ocs.store.accounts import (
    Conflict,
    Executor,
    NotFound,
    account_id,
    database_rules,
    operator_id,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PeriodRun:
    """What one run did: services looked at, periods charged, accounts blocked and unblocked,
    temporary increases seen to have ended."""

    services: int = 0
    charged: int = 0
    blocked: int = 0
    unblocked: int = 0
    increases_ended: int = 0

    def __add__(self, other: PeriodRun) -> PeriodRun:
        return PeriodRun(
            self.services + other.services,
            self.charged + other.charged,
            self.blocked + other.blocked,
            self.unblocked + other.unblocked,
            self.increases_ended + other.increases_ended,
        )


async def run_prepaid_periods(
    pool: asyncpg.Pool | asyncpg.Connection,
    *,
    now: datetime | None = None,
    batch_size: int = 500,
    timeout_s: float | None = None,
) -> PeriodRun:
    """Charge every due period and block or unblock accounts, as of ``now`` (default: the
    database's clock). Each batch of ``batch_size`` services is its own transaction, so a large
    run never holds many account rows locked for long; concurrent runs skip services another run
    is charging. ``timeout_s`` bounds each batch's statement."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    total = PeriodRun()
    while True:
        row = await pool.fetchrow(
            "SELECT services, charged, blocked, unblocked FROM ocs_run_prepaid_periods($1, $2)",
            now,
            batch_size,
            timeout=timeout_s,
        )
        assert row is not None
        batch = PeriodRun(row["services"], row["charged"], row["blocked"], row["unblocked"])
        total = total + batch
        if batch.services < batch_size:
            break
    while True:
        ended: int = await pool.fetchval(
            "SELECT ocs_see_ended_increases($1, $2)", now, batch_size, timeout=timeout_s
        )
        total = total + PeriodRun(increases_ended=ended)
        if ended < batch_size:
            break
    if total.charged or total.blocked or total.unblocked:
        log.info(
            "prepaid periods charged=%d blocked=%d unblocked=%d",
            total.charged,
            total.blocked,
            total.unblocked,
        )
    return total


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
        raise ValueError("a prepaid service needs a positive amount")
    if period_days is not None and period_days < 1:
        raise ValueError("a period is at least one day")
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
