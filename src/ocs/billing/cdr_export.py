"""CDRs out of ocs: the record formats (CSV, JSON lines) and the daemon's exporter, which writes
every closed session exactly once to rotated CSV files or POSTs it in batches to a webhook.

Rules of this file:
- Closing a session queues it in ``cdr_outbox`` (a trigger, in the closing transaction). The
  exporter first fixes a batch (queued CDRs get a ``cdr_batches`` id, committed), then delivers
  it in a second transaction that holds the batch row (``FOR UPDATE SKIP LOCKED``, so several
  exporters never deliver one batch twice) and marks it delivered. A CDR is in one batch only.
- Files: one per batch, ``cdr-<created UTC>-<batch id>.csv``, written to a temporary name,
  fsync'd and renamed: a batch delivered again after a crash (written, not yet marked) replaces
  its own file with the same content, so every CDR is in exactly one file.
- Webhook: a JSON POST per batch with ``Idempotency-Key: ocs-cdr-batch-<id>`` (and each CDR's
  ``cdr_id``): a receiver that dedupes on either sees each CDR once. Failures are retried with
  exponential backoff (``backoff_initial_s`` doubling up to ``backoff_max_s``), never dropped.
- Money is a decimal string, instants ISO 8601 in UTC.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from ocs.billing.webhooks import DeliveryFailed, WebhookDeliverer, backoff_s
from ocs.core import format_amount
from ocs.store.cdrs import Cdr, closed_sessions

log = logging.getLogger(__name__)

CDR_FIELDS = (
    "cdr_id",
    "account",
    "account_id",
    "identities",
    "started_at",
    "ended_at",
    "duration_s",
    "octets",
    "events",
    "charged",
    "termination_cause",
    "destination",
    "rate",
    "source",
    "origin",
    "session_key",
    "generation",
)


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def cdr_record(cdr: Cdr) -> dict[str, Any]:
    """A CDR as JSON-ready values (money as decimal strings, never floats)."""
    return {
        "cdr_id": cdr.cdr_id,
        "account": cdr.account,
        "account_id": cdr.account_id,
        "identities": list(cdr.identities),
        "started_at": _instant(cdr.started_at),
        "ended_at": _instant(cdr.ended_at),
        "duration_s": cdr.duration_s,
        "octets": cdr.octets,
        "events": cdr.events,
        "charged": format_amount(cdr.charged),
        "termination_cause": cdr.termination_cause,
        "destination": cdr.destination,
        "rate": format_amount(cdr.rate) if cdr.rate is not None else None,
        "source": cdr.source,
        "origin": cdr.origin,
        "session_key": cdr.session_key,
        "generation": cdr.generation,
    }


def csv_header() -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(CDR_FIELDS)
    return out.getvalue()


def csv_rows(cdrs: Iterable[Cdr]) -> str:
    """CSV lines (no header) for ``cdrs``; identities separated by ``|``, empty for none."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for cdr in cdrs:
        record = cdr_record(cdr)
        record["identities"] = "|".join(cdr.identities)
        writer.writerow(["" if record[f] is None else record[f] for f in CDR_FIELDS])
    return out.getvalue()


def jsonl_rows(cdrs: Iterable[Cdr]) -> str:
    return "".join(
        json.dumps(cdr_record(c), separators=(",", ":"), sort_keys=True) + "\n" for c in cdrs
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportSettings:
    sink: str  # "files" or "webhook"
    directory: Path
    webhook_url: str | None
    webhook_secret: str | None
    interval_s: float
    batch_max_records: int
    timeout_s: float
    db_timeout_s: float
    backoff_initial_s: float
    backoff_max_s: float


class CdrExporter:
    """``run_once()`` batches what closed since and delivers every due batch; ``run_forever``
    repeats it every ``interval_s`` (one file, or one POST, per batch)."""

    def __init__(self, pool: asyncpg.Pool, settings: ExportSettings) -> None:
        if settings.sink not in ("files", "webhook"):
            raise ValueError(f"CDR sink {settings.sink!r}: expected files or webhook")
        self.pool = pool
        self.settings = settings
        self._poster: WebhookDeliverer | None = None
        if settings.sink == "webhook":
            if not settings.webhook_url:
                raise ValueError("a webhook CDR export needs a webhook URL")
            self._poster = WebhookDeliverer(
                pool,
                settings.webhook_url,
                timeout_s=settings.timeout_s,
                secret=settings.webhook_secret,
            )
        else:
            settings.directory.mkdir(parents=True, exist_ok=True)
        self.delivered_records = 0
        self.failed_attempts = 0

    async def form_batches(self) -> int:
        """Put queued CDRs into batches of at most ``batch_max_records``; returns how many
        batches were formed."""
        formed = 0
        while True:
            timeout = self.settings.db_timeout_s
            async with self.pool.acquire(timeout=timeout) as conn, conn.transaction():
                ids = [
                    r[0]
                    for r in await conn.fetch(
                        """SELECT session_id FROM cdr_outbox WHERE batch_id IS NULL
                           ORDER BY session_id LIMIT $1 FOR UPDATE SKIP LOCKED""",
                        self.settings.batch_max_records,
                        timeout=self.settings.db_timeout_s,
                    )
                ]
                if not ids:
                    return formed
                batch: int = await conn.fetchval(
                    "INSERT INTO cdr_batches (sink, records) VALUES ($1, $2) RETURNING id",
                    self.settings.sink,
                    len(ids),
                )
                await conn.execute(
                    "UPDATE cdr_outbox SET batch_id = $1 WHERE session_id = ANY($2::bigint[])",
                    batch,
                    ids,
                )
            formed += 1
            if len(ids) < self.settings.batch_max_records:
                return formed

    async def deliver_due(self) -> int:
        """Deliver every batch that is due (oldest first); returns the CDRs delivered."""
        delivered = 0
        while True:
            outcome = await self._deliver_next()
            if outcome is None:
                return delivered
            delivered += outcome

    async def run_once(self) -> int:
        await self.form_batches()
        return await self.deliver_due()

    async def _deliver_next(self) -> int | None:
        """CDRs delivered (0 after a failure), or None when no batch is due."""
        timeout = self.settings.db_timeout_s
        async with self.pool.acquire(timeout=timeout) as conn, conn.transaction():
            batch = await conn.fetchrow(
                """SELECT id, attempts, created_at FROM cdr_batches
                   WHERE delivered_at IS NULL AND next_attempt_at <= now()
                   ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED""",
                timeout=timeout,
            )
            if batch is None:
                return None
            ids = [
                r[0]
                for r in await conn.fetch(
                    "SELECT session_id FROM cdr_outbox WHERE batch_id = $1", batch["id"]
                )
            ]
            cdrs = await closed_sessions(conn, session_ids=ids, limit=len(ids) or 1)
            attempts = batch["attempts"] + 1
            try:
                where = await self._deliver(batch["id"], batch["created_at"], cdrs)
            except (DeliveryFailed, OSError) as exc:
                self.failed_attempts += 1
                delay = backoff_s(
                    attempts, self.settings.backoff_initial_s, self.settings.backoff_max_s
                )
                await conn.execute(
                    """UPDATE cdr_batches SET attempts = $2, last_error = $3,
                           next_attempt_at = now() + make_interval(secs => $4) WHERE id = $1""",
                    batch["id"],
                    attempts,
                    str(exc),
                    delay,
                )
                log.warning(
                    "cdr export failed batch=%d attempts=%d retry_in_s=%.1f error=%s",
                    batch["id"],
                    attempts,
                    delay,
                    exc,
                )
                return 0
            await conn.execute(
                """UPDATE cdr_batches SET attempts = $2, last_error = NULL, delivered_at = now(),
                       delivered_to = $3 WHERE id = $1""",
                batch["id"],
                attempts,
                where,
            )
        self.delivered_records += len(cdrs)
        log.info("cdr batch delivered batch=%d records=%d to=%s", batch["id"], len(cdrs), where)
        return len(cdrs)

    async def _deliver(self, batch_id: int, created_at: datetime, cdrs: list[Cdr]) -> str:
        if self._poster is not None:
            body = json.dumps(
                {"batch_id": batch_id, "cdrs": [cdr_record(c) for c in cdrs]},
                separators=(",", ":"),
                sort_keys=True,
            ).encode()
            await self._poster.post(body, idempotency_key=f"ocs-cdr-batch-{batch_id}")
            return self._poster.target.host_header + self._poster.target.path
        stamp = created_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        path = self.settings.directory / f"cdr-{stamp}-{batch_id:010d}.csv"
        await asyncio.to_thread(_write_atomically, path, csv_header() + csv_rows(cdrs))
        return str(path)

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Export until ``stop`` is set; database trouble is logged and retried next round."""
        while not stop.is_set():
            try:
                await self.run_once()
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
                log.warning("cdr export paused error=%s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.interval_s)


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="utf-8", newline="") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
