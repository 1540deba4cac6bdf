"""Periodic operations work on the daemon's loop: billing-state gauges from SQL, and the
rate-limited log summaries."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ocs.logs import log_suppressed_summaries
from ocs.metrics import Metrics
from ocs.store.billing_state import billing_state
from ocs.store.source import DATABASE_ERRORS

log = logging.getLogger("ocs.ops")

BILLING_STATE_INTERVAL_S = 30.0
SUMMARY_INTERVAL_S = 1.0


async def refresh_billing_gauges(
    pool: Any, metrics: Metrics, *, timeout_s: float, interval_s: float = BILLING_STATE_INTERVAL_S
) -> None:
    """Every ``interval_s``: accounts under a warning threshold and pending outbox events.
    A failure leaves the last values and is counted as a database error."""
    while True:
        try:
            async with pool.acquire(timeout=timeout_s) as conn:
                state = await billing_state(conn, timeout_s)
        except (*DATABASE_ERRORS, TimeoutError) as exc:
            metrics.database_errors.inc()
            log.debug("billing gauges not refreshed: %s", exc)
        except Exception:  # a bug or a SQL error must not stop the loop: log it, try again
            log.exception("billing gauges not refreshed")
        else:
            metrics.accounts_below_threshold.set(state.accounts_below_warning_threshold)
            metrics.outbox_pending.set(state.outbox_pending_events)
        await asyncio.sleep(interval_s)


async def log_summaries(metrics: Metrics, interval_s: float = SUMMARY_INTERVAL_S) -> None:
    """Write "suppressed N similar lines" summaries and count what the rate limit left out."""
    try:
        while True:
            await asyncio.sleep(interval_s)
            suppressed = log_suppressed_summaries()
            if suppressed:
                metrics.log_lines_suppressed.inc(suppressed)
    finally:
        suppressed = log_suppressed_summaries(force=True)
        if suppressed:
            metrics.log_lines_suppressed.inc(suppressed)
