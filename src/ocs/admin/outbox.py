"""The outbox: events for the outside world (warning thresholds crossed), as the webhook
deliverer (``ocs.billing.webhooks``) sees them.

Rules of this file:
- Read only: rows are written by the database's rules and marked by the deliverer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ocs.store.errors import Executor


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxEvent:
    id: int
    created_at: datetime
    topic: str
    account: str | None
    attempts: int
    delivered_at: datetime | None
    abandoned_at: datetime | None
    last_error: str | None
    threshold: str | None
    available: str | None
    payload: dict[str, Any]

    @property
    def state(self) -> str:
        """``delivered``, ``abandoned`` or ``pending``."""
        if self.delivered_at:
            return "delivered"
        if self.abandoned_at:
            return "abandoned"
        return "pending"


async def list_outbox(
    db: Executor, *, pending: bool = False, limit: int = 50, before: int | None = None
) -> list[OutboxEvent]:
    """The newest ``limit`` rows (newest first), only undelivered ones with ``pending``, with an
    id below ``before`` (the next page)."""
    rows = await db.fetch(
        """SELECT o.id, o.created_at, o.topic, a.name AS account, o.attempts, o.delivered_at,
                  o.abandoned_at, o.last_error, o.payload->>'threshold' AS threshold,
                  o.payload->>'available' AS available, o.payload::text AS payload
           FROM outbox o LEFT JOIN accounts a ON a.id = o.account_id
           WHERE (NOT $1 OR (o.delivered_at IS NULL AND o.abandoned_at IS NULL))
             AND ($3::bigint IS NULL OR o.id < $3)
           ORDER BY o.id DESC LIMIT $2""",
        pending,
        limit,
        before,
    )
    return [OutboxEvent(**{**dict(r), "payload": json.loads(r["payload"])}) for r in rows]
