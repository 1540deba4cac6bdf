"""The usage sink the daemon uses: PostgreSQL first, the local spool when PostgreSQL is away.

``record`` returns only once the report is committed or spooled (fsync'd); the caller answers
the client after that. ``replay`` feeds spooled reports back to PostgreSQL, in order, and
removes them from the spool once all are committed. Replays are idempotent: the ledger knows a
report it recorded by its uid, whatever became of its session meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from ocs.charging.errors import SourceUnavailable, SpoolFull
from ocs.charging.pipeline import (
    OpenGeneration,
    UsageOutcome,
    UsageReport,
)
from ocs.core.ledger import Counting, Generation, Hold, Report, ReportKind
from ocs.core.model import AccountSnapshot, Tariff, Usage, tariff_values
from ocs.metrics import Metrics
from ocs.store.accounts import zone
from ocs.store.source import PostgresAccounts
from ocs.store.spool import Spool, SpoolUnwritable

log = logging.getLogger("ocs.spool")


def _zone_name(tz: tzinfo) -> str:
    return tz.key if isinstance(tz, ZoneInfo) else "UTC"


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


def report_to_record(report: UsageReport) -> dict[str, Any]:
    """A report as one JSON object of the spool (everything the ledger needs to replay it)."""
    e = report.entry
    return {
        "v": 2,
        "source": report.source,
        "origin": report.origin,
        "session_key": report.session_key,
        "report": e.kind.value,
        "account_id": e.account_id,
        "uid": e.uid,
        "report_key": e.report_key,
        "received_at": e.received_at.isoformat(),
        "time_zone": _zone_name(e.time_zone),
        "tariff": list(tariff_values(e.tariff)),
        "seconds": e.usage.seconds,
        "octets": e.usage.octets,
        "events": e.usage.events,
        "counting": e.counting.value,
        "wire_key": e.wire_key,
        "start_ref": e.start_ref,
        "client_at": _time(e.client_at),
        "request_number": e.request_number,
        "close_reason": e.close_reason,
        "hold": [e.hold.amount, e.hold.until.isoformat()] if e.hold is not None else None,
    }


def record_to_report(record: dict[str, Any]) -> UsageReport:
    per_minute, increment, minimum, per_mb, fee, per_event = record["tariff"]
    hold = record.get("hold")
    return UsageReport(
        source=record["source"],
        origin=record["origin"],
        session_key=record["session_key"],
        entry=Report(
            kind=ReportKind(record["report"]),
            account_id=int(record["account_id"]),
            uid=record["uid"],
            report_key=record["report_key"],
            received_at=datetime.fromisoformat(record["received_at"]),
            time_zone=zone(record["time_zone"]),
            tariff=Tariff(
                price_per_minute=per_minute,
                billing_increment_s=increment,
                minimum_s=minimum,
                price_per_mb=per_mb,
                connection_fee=fee,
                price_per_event=per_event,
            ),
            usage=Usage(
                seconds=int(record["seconds"]),
                octets=int(record["octets"]),
                events=int(record["events"]),
            ),
            counting=Counting(record["counting"]),
            wire_key=record.get("wire_key"),
            start_ref=record.get("start_ref"),
            client_at=_parse_time(record.get("client_at")),
            request_number=record.get("request_number"),
            close_reason=record.get("close_reason"),
            hold=Hold(amount=int(hold[0]), until=datetime.fromisoformat(hold[1])) if hold else None,
        ),
    )


def _legacy_report(record: dict[str, Any], tariff: Tariff, time_zone: tzinfo) -> UsageReport:
    """A usage record spooled by a daemon before session generations (cumulative figures,
    rated by then; now rated again at the account's rate)."""
    final = bool(record["final"])
    return UsageReport(
        source=record["source"],
        origin=record["origin"],
        session_key=record["session_key"],
        entry=Report(
            kind=ReportKind.FINAL if final else ReportKind.USAGE,
            account_id=int(record["account_id"]),
            uid=record["idempotency_key"],
            report_key=record["idempotency_key"],
            received_at=datetime.fromisoformat(record["occurred_at"]),
            time_zone=time_zone,
            tariff=tariff,
            usage=Usage(
                seconds=int(record["seconds"]),
                octets=int(record["octets"]),
                events=int(record["events"]),
            ),
            counting=Counting.CUMULATIVE,
            close_reason=record.get("close_reason"),
        ),
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

    async def record(self, report: UsageReport) -> UsageOutcome:
        try:
            return await self.database.record(report)
        except SourceUnavailable as exc:
            entry = {"kind": "report", **report_to_record(report)}
            await self._append(entry)
            log.warning("usage spooled (database unavailable: %s) key=%s", exc, report.entry.uid)
            return UsageOutcome(charged=0, duplicate=False, snapshot=None, spooled=True)

    async def close_sessions(self, source: str, origin: str, reason: str) -> list[tuple[int, str]]:
        try:
            return await self.database.close_sessions(source, origin, reason)
        except SourceUnavailable:
            entry = {"kind": "close", "source": source, "origin": origin, "reason": reason}
            await self._append(entry)
            return []

    async def record_unmatched(
        self, report: UsageReport, identity_kind: str, identity: str, reason: str
    ) -> bool:
        try:
            return await self.database.record_unmatched(report, identity_kind, identity, reason)
        except SourceUnavailable:
            entry = {
                "kind": "unmatched",
                "identity_kind": identity_kind,
                "identity": identity,
                "reason": reason,
                **report_to_record(report),
            }
            await self._append(entry)
            return True

    async def session_generations(
        self, source: str, origin: str, session_key: str
    ) -> list[Generation]:
        return await self.database.session_generations(source, origin, session_key)

    async def open_generations(self, owner: str) -> list[OpenGeneration]:
        return await self.database.open_generations(owner)

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
                await asyncio.to_thread(self.spool.consume, offset)
            # Otherwise the replayed ones stay and are replayed again later, which their uids
            # make harmless.
            self.replayed += done
            if done:
                log.info("spool replayed records=%d remaining=%d", done, len(records) - done)
            return done

    async def _apply(self, record: dict[str, Any]) -> None:
        kind = record.get("kind")
        if kind == "report":
            await self.database.record(record_to_report(record))
        elif kind == "usage":  # spooled before session generations
            snapshot = await self.database.load_account(int(record["account_id"]))
            tariff = snapshot.tariff if snapshot is not None else Tariff()
            time_zone = snapshot.time_zone if snapshot is not None else UTC
            await self.database.record(_legacy_report(record, tariff, time_zone))
        elif kind == "close":
            await self.database.close_sessions(record["source"], record["origin"], record["reason"])
        elif kind == "unmatched":
            if "report" in record:
                report = record_to_report(record)
            else:
                report = _legacy_report(record, Tariff(), UTC)
            await self.database.record_unmatched(
                report,
                record["identity_kind"],
                record["identity"],
                record.get("reason", "unknown_identity"),
            )
        else:
            log.error("spool: record of unknown kind %r skipped", kind)
