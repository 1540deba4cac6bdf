"""The usage sink the daemon uses: PostgreSQL first, the local spool when PostgreSQL is away.

``record`` returns only once the report is committed or spooled (fsync'd); the caller answers
the client after that. ``replay`` feeds spooled reports back to PostgreSQL, in order, each one
idempotent by its key, and removes them from the spool once all are committed.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from ocs.charging.pipeline import (
    OpenSession,
    SourceUnavailable,
    SpoolFull,
    UsageOutcome,
    UsageReport,
)
from ocs.core.model import AccountSnapshot, Usage
from ocs.metrics import Metrics
from ocs.store.source import PostgresAccounts
from ocs.store.spool import Spool, SpoolUnwritable

log = logging.getLogger("ocs.spool")


def _report_to_record(report: UsageReport) -> dict[str, Any]:
    return {
        "source": report.source,
        "origin": report.origin,
        "session_key": report.session_key,
        "account_id": report.account_id,
        "idempotency_key": report.idempotency_key,
        "seconds": report.usage.seconds,
        "octets": report.usage.octets,
        "events": report.usage.events,
        "final": report.final,
        "occurred_at": report.occurred_at.isoformat(),
        "close_reason": report.close_reason,
    }


def _record_to_report(record: dict[str, Any]) -> UsageReport:
    return UsageReport(
        source=record["source"],
        origin=record["origin"],
        session_key=record["session_key"],
        account_id=int(record["account_id"]),
        idempotency_key=record["idempotency_key"],
        usage=Usage(
            seconds=int(record["seconds"]),
            octets=int(record["octets"]),
            events=int(record["events"]),
        ),
        final=bool(record["final"]),
        occurred_at=datetime.fromisoformat(record["occurred_at"]),
        close_reason=record.get("close_reason"),
    )


class SpoolingSink:
    """``UsageSink``: PostgreSQL, else the spool. Raises ``SpoolFull`` when both are out."""

    def __init__(
        self, database: PostgresAccounts, spool: Spool, *, metrics: Metrics | None = None
    ) -> None:
        self.database = database
        self.spool = spool
        self.metrics = metrics
        self.refused = 0  # records neither the database nor the spool could take
        self.spooled = 0
        self.replayed = 0
        self._replaying = asyncio.Lock()

    @property
    def depth_bytes(self) -> int:
        return self.spool.size_bytes

    async def _append(self, entry: dict[str, Any]) -> None:
        """Spool ``entry`` durably; raises ``SpoolFull`` (counted and logged with the reason)."""
        try:
            await asyncio.to_thread(self.spool.append, entry)
        except SpoolFull as exc:
            reason = exc.reason if isinstance(exc, SpoolUnwritable) else "full"
            self.refused += 1
            if self.metrics is not None:
                self.metrics.spool_refused.labels(reason).inc()
            log.error("usage not kept (database unavailable, spool refused: %s): %s", reason, exc)
            raise
        self.spooled += 1

    async def record(self, report: UsageReport, total_amount: int) -> UsageOutcome:
        try:
            return await self.database.record(report, total_amount)
        except SourceUnavailable as exc:
            entry = {"kind": "usage", "total": total_amount, **_report_to_record(report)}
            await self._append(entry)
            log.warning(
                "usage spooled (database unavailable: %s) key=%s", exc, report.idempotency_key
            )
            return UsageOutcome(charged=0, duplicate=False, snapshot=None, spooled=True)

    async def close_sessions(self, source: str, origin: str, reason: str) -> list[tuple[int, str]]:
        try:
            return await self.database.close_sessions(source, origin, reason)
        except SourceUnavailable:
            entry = {"kind": "close", "source": source, "origin": origin, "reason": reason}
            await self._append(entry)
            return []

    async def record_unmatched(
        self,
        report: UsageReport,
        identity_kind: str,
        identity: str,
        *,
        reason: str = "unknown_identity",
    ) -> bool:
        try:
            return await self.database.record_unmatched(
                report, identity_kind, identity, reason=reason
            )
        except SourceUnavailable:
            entry = {
                "kind": "unmatched",
                "identity_kind": identity_kind,
                "identity": identity,
                "reason": reason,
                **_report_to_record(report),
            }
            await self._append(entry)
            return True

    async def open_session(self, source: str, origin: str, session_key: str) -> OpenSession | None:
        return await self.database.open_session(source, origin, session_key)

    async def credit(
        self, account_id: int, amount: int, idempotency_key: str, note: str
    ) -> AccountSnapshot | None:
        # Not spooled: a refund is answered 3004 while the database is away, and retried.
        return await self.database.credit(account_id, amount, idempotency_key, note)

    async def replay(self) -> int:
        """Commit spooled records; returns how many. Stops (keeping the rest) at the first
        database failure. Safe to call at any time; one replay runs at a time."""
        async with self._replaying:
            records, offset = await asyncio.to_thread(self.spool.read)
            if not records:
                if offset:
                    await asyncio.to_thread(self.spool.consume, offset)
                return 0
            done = 0
            for record in records:
                try:
                    await self._apply(record)
                except SourceUnavailable as exc:
                    log.warning("spool replay paused after %d records: %s", done, exc)
                    break
                done += 1
            if done == len(records):
                await asyncio.to_thread(self.spool.consume, offset)  # False: replayed again
            elif done:
                # Keep it simple and safe: the replayed ones stay and are replayed again later,
                # which their idempotency keys make harmless.
                pass
            self.replayed += done
            if done:
                log.info("spool replayed records=%d remaining=%d", done, len(records) - done)
            return done

    async def _apply(self, record: dict[str, Any]) -> None:
        kind = record.get("kind")
        if kind == "usage":
            await self.database.record(_record_to_report(record), int(record["total"]))
        elif kind == "close":
            await self.database.close_sessions(record["source"], record["origin"], record["reason"])
        elif kind == "unmatched":
            await self.database.record_unmatched(
                _record_to_report(record),
                record["identity_kind"],
                record["identity"],
                reason=record.get("reason", "unknown_identity"),
            )
        else:
            log.error("spool: record of unknown kind %r skipped", kind)
