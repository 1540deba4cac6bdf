"""PostgreSQL behind the charging pipeline: account lookups and durable usage recording.

Implements ``ocs.charging.pipeline.AccountSource`` and ``UsageSink``. Database failures become
``SourceUnavailable`` so the pipeline can apply its stale-data policy; the spool (a sink wrapped
around this one) keeps usage when the database is away.
"""

from __future__ import annotations

import asyncpg

from ocs.charging.pipeline import OpenSession, SourceUnavailable, UsageOutcome, UsageReport
from ocs.core.identity import IdentityKind
from ocs.core.model import AccountSnapshot, Usage
from ocs.core.money import to_decimal
from ocs.store.accounts import (
    SNAPSHOT_COLUMNS,
    VERSIONED_SNAPSHOT_COLUMNS,
    snapshot_from_row,
)

DATABASE_ERRORS = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)


class PostgresAccounts:
    """``AccountSource`` and ``UsageSink`` on an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def find_account(self, kind: IdentityKind, value: str) -> AccountSnapshot | None:
        try:
            row = await self.pool.fetchrow(
                f"""SELECT {SNAPSHOT_COLUMNS} FROM account_snapshots
                    WHERE account_id = (SELECT account_id FROM account_identities
                                        WHERE kind = $1 AND value = $2)""",
                kind.value,
                value,
            )
        except DATABASE_ERRORS as exc:
            raise SourceUnavailable(str(exc) or type(exc).__name__) from exc
        return snapshot_from_row(tuple(row)) if row else None

    async def load_account(self, account_id: int) -> AccountSnapshot | None:
        try:
            row = await self.pool.fetchrow(
                f"SELECT {SNAPSHOT_COLUMNS} FROM account_snapshots WHERE account_id = $1",
                account_id,
            )
        except DATABASE_ERRORS as exc:
            raise SourceUnavailable(str(exc) or type(exc).__name__) from exc
        return snapshot_from_row(tuple(row)) if row else None

    async def record(self, report: UsageReport, total_amount: int) -> UsageOutcome:
        """Commit the report; returns the account's figures after it. Raises
        ``SourceUnavailable`` when the database cannot take it (the spool then does)."""
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    "SELECT (charged_now * 1000000)::bigint AS charged, was_duplicate AS duplicate "
                    "FROM "
                    "ocs_record_session_usage($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                    report.source,
                    report.origin,
                    report.session_key,
                    report.account_id,
                    report.idempotency_key,
                    report.usage.seconds,
                    report.usage.octets,
                    report.usage.events,
                    to_decimal(total_amount),
                    report.final,
                    report.occurred_at,
                    report.close_reason,
                )
                snap = await conn.fetchrow(
                    f"SELECT {VERSIONED_SNAPSHOT_COLUMNS} FROM account_snapshots "
                    "WHERE account_id = $1",
                    report.account_id,
                )
        except DATABASE_ERRORS as exc:
            raise SourceUnavailable(str(exc) or type(exc).__name__) from exc
        assert row is not None
        return UsageOutcome(
            charged=row["charged"],
            duplicate=row["duplicate"],
            snapshot=snapshot_from_row(tuple(snap)) if snap else None,
            version=snap["changed_at"] if snap else None,
        )

    async def close_sessions(self, source: str, origin: str, reason: str) -> list[tuple[int, str]]:
        try:
            rows = await self.pool.fetch(
                "SELECT account_id, session_key FROM ocs_close_sessions($1, $2, $3)",
                source,
                origin,
                reason,
            )
        except DATABASE_ERRORS as exc:
            raise SourceUnavailable(str(exc) or type(exc).__name__) from exc
        return [(r["account_id"], r["session_key"]) for r in rows]

    async def record_unmatched(
        self, report: UsageReport, identity_kind: str, identity: str
    ) -> bool:
        try:
            status = await self.pool.execute(
                """INSERT INTO unmatched_usage
                       (idempotency_key, source, origin, session_key, identity_kind, identity,
                        seconds, octets, events, final, occurred_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                   ON CONFLICT (idempotency_key) DO NOTHING""",
                report.idempotency_key,
                report.source,
                report.origin,
                report.session_key,
                identity_kind,
                identity,
                report.usage.seconds,
                report.usage.octets,
                report.usage.events,
                report.final,
                report.occurred_at,
            )
        except DATABASE_ERRORS as exc:
            raise SourceUnavailable(str(exc) or type(exc).__name__) from exc
        return bool(status.endswith(" 1"))

    async def open_session(self, source: str, origin: str, session_key: str) -> OpenSession | None:
        try:
            row = await self.pool.fetchrow(
                """SELECT account_id, seconds, octets, events FROM sessions
                   WHERE source = $1 AND origin = $2 AND session_key = $3 AND closed_at IS NULL""",
                source,
                origin,
                session_key,
            )
        except DATABASE_ERRORS as exc:
            raise SourceUnavailable(str(exc) or type(exc).__name__) from exc
        if row is None:
            return None
        usage = Usage(seconds=row["seconds"], octets=row["octets"], events=row["events"])
        return OpenSession(account_id=row["account_id"], usage=usage)

    async def credit(
        self, account_id: int, amount: int, idempotency_key: str, note: str
    ) -> AccountSnapshot | None:
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    """INSERT INTO ledger_entries (account_id, kind, amount, external_id, note)
                       VALUES ($1, 'credit', $2, $3, $4)
                       ON CONFLICT (external_id) DO NOTHING""",
                    account_id,
                    to_decimal(amount),
                    idempotency_key,
                    note,
                )
                snap = await conn.fetchrow(
                    f"SELECT {SNAPSHOT_COLUMNS} FROM account_snapshots WHERE account_id = $1",
                    account_id,
                )
        except DATABASE_ERRORS as exc:
            raise SourceUnavailable(str(exc) or type(exc).__name__) from exc
        return snapshot_from_row(tuple(snap)) if snap else None
