"""Counts of billing state for the operations gauges (one cheap query, run periodically)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BILLING_STATE_SQL = """
SELECT
    (SELECT count(DISTINCT account_id) FROM account_warning_thresholds WHERE NOT armed)
        AS below_threshold,
    (SELECT count(*) FROM outbox WHERE delivered_at IS NULL AND abandoned_at IS NULL)
        AS outbox_pending
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class BillingState:
    accounts_below_warning_threshold: int
    outbox_pending_events: int


async def billing_state(conn: Any, timeout_s: float) -> BillingState:
    """Accounts whose available credit crossed a warning threshold (disarmed, not yet back
    above it), and outbox events still to deliver."""
    row = await conn.fetchrow(BILLING_STATE_SQL, timeout=timeout_s)
    return BillingState(
        accounts_below_warning_threshold=int(row["below_threshold"]),
        outbox_pending_events=int(row["outbox_pending"]),
    )
