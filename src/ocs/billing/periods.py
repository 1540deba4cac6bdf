"""Prepaid periods (seed 003, Splynx "Prepaid (Custom)"): a recurring service charged in advance.

A service is charged at the start of every period (monthly, or every N days, counted from its
start in the account's time zone), once per period: ``prepaid_charges`` has a unique key per
service and period, so running twice charges once. When the balance cannot cover a charge
(``balance + effective limit - min_balance < 0``) the account is blocked once the service's
grace period has passed since the period started; a payment that covers it unblocks the
account at once (a ledger trigger), and so does the next run after a limit change.

The logic is ``ocs_run_prepaid_periods`` in PostgreSQL; :func:`run_prepaid_periods` calls it
(``ocs prepaid run`` and ``POST /prepaid-runs``). Adding, listing and stopping services is the
service layer's (``ocs.admin.prepaid``). The
same run also notes temporary credit-limit increases that have ended
(``ocs_see_ended_increases``): the available credit drops then without any write, and the
warning thresholds (and the daemon's cache, through ``ocs_account_changed``) should hear of it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import asyncpg

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
