"""PostgreSQL behind the charging pipeline: account lookups and durable usage recording.

Implements ``ocs.charging.pipeline.AccountSource`` and ``UsageSink``. Database failures become
``SourceUnavailable`` so the pipeline can apply its stale-data policy; the spool (a sink wrapped
around this one) keeps usage when the database is away. A value PostgreSQL refuses as data
(``DATA_ERRORS``: a NUL or bad UTF-8 in text, a value too long for an index) becomes
``SourceRefused``: the input's fault, never taken for the database being down, counted in
``ocs_database_refused_total``.

Usage is written by group commit. Every committed usage record changes an account, and the
account-change trigger NOTIFYs; PostgreSQL serialises the commits of notifying transactions
(one global lock held through the WAL flush), so one record per transaction caps the daemon
near one record per commit latency (≈ 1,000/s here) however many connections it uses. Reports
are therefore queued and written by at most ``writers`` tasks, each committing whatever has
queued (up to ``batch_max``) in one transaction: its accounts locked in id order, the records
applied in arrival order by the same ``ocs_record_session_usage`` a single report uses, the
snapshots read back in one query. Every caller is answered only after that commit. A batch
that PostgreSQL refuses for one bad report (a session that belongs to another account, say) is
retried one report per transaction, so only that report fails.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, NamedTuple, cast

import asyncpg

from ocs.charging.pipeline import (
    OpenSession,
    SourceRefused,
    SourceUnavailable,
    UsageOutcome,
    UsageReport,
)
from ocs.core.identity import IdentityKind
from ocs.core.model import AccountSnapshot, Usage
from ocs.core.money import to_decimal
from ocs.metrics import Metrics
from ocs.store.accounts import (
    SNAPSHOT_COLUMNS,
    VERSIONED_SNAPSHOT_COLUMNS,
    snapshot_from_row,
)

log = logging.getLogger(__name__)

# The database away or failing (not the input's fault): a lost connection, a server shutting
# down (class 57: admin shutdown, cannot connect now, a statement cancelled or timed out), a
# client whose protocol state a dying connection broke (InternalClientError: "cannot switch to
# state 15; another operation is in progress" when the server goes away mid-transaction), or
# a command timeout. Each is an outage for the pipeline: usage goes to the spool.
DATABASE_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InternalClientError,
    asyncpg.TooManyConnectionsError,
)

# PostgreSQL (or asyncpg, encoding an argument) refusing a value: class 22 data exceptions
# (CharacterNotInRepertoire for a NUL or bad UTF-8, string too long, ...), class 54 program
# limits (an index row too large), and text Python cannot encode (a lone surrogate).
DATA_ERRORS = (asyncpg.DataError, asyncpg.ProgramLimitExceededError, UnicodeError)


_RECORD_ONE = (
    "SELECT (charged_now * 1000000)::bigint AS charged, was_duplicate AS duplicate FROM "
    "ocs_record_session_usage($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
)
_LOCK_ACCOUNTS = "SELECT id FROM accounts WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE"
_RECORD_MANY = """
    SELECT u.n, (r.charged_now * 1000000)::bigint AS charged, r.was_duplicate AS duplicate
    FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::bigint[],
                $7::bigint[], $8::bigint[], $9::numeric[], $10::boolean[], $11::timestamptz[],
                $12::text[])
         WITH ORDINALITY AS u(source, origin, session_key, account_id, idempotency_key, seconds,
                              octets, events, total, final, occurred_at, close_reason, n)
    CROSS JOIN LATERAL ocs_record_session_usage(
        u.source, u.origin, u.session_key, u.account_id, u.idempotency_key, u.seconds,
        u.octets, u.events, u.total, u.final, u.occurred_at, u.close_reason) AS r
    ORDER BY u.n"""
_SNAPSHOTS = (
    f"SELECT {VERSIONED_SNAPSHOT_COLUMNS} FROM account_snapshots "
    "WHERE account_id = ANY($1::bigint[])"
)


class _Queued(NamedTuple):
    report: UsageReport
    total_amount: int
    answer: asyncio.Future[UsageOutcome]


def _args(report: UsageReport, total_amount: int) -> tuple[Any, ...]:
    return (
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


def _outcome(row: Any, snap: Any) -> UsageOutcome:
    return UsageOutcome(
        charged=row["charged"],
        duplicate=row["duplicate"],
        snapshot=snapshot_from_row(tuple(snap)) if snap else None,
        version=snap["changed_at"] if snap else None,
    )


def _settle(answer: asyncio.Future[UsageOutcome], outcome: UsageOutcome | BaseException) -> None:
    if answer.done():  # the caller gave up (cancelled); the record stands, a retry is a no-op
        return
    if isinstance(outcome, BaseException):
        answer.set_exception(outcome)
    else:
        answer.set_result(outcome)


class PostgresAccounts:
    """``AccountSource`` and ``UsageSink`` on an asyncpg pool."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        writers: int = 2,
        batch_max: int = 256,
        metrics: Metrics | None = None,
    ) -> None:
        if writers < 1 or batch_max < 1:
            raise ValueError("writers and batch_max must be at least 1")
        self.pool = pool
        self.metrics = metrics
        self.writers = writers
        self.batch_max = batch_max
        self.batches = 0  # transactions that committed more than one report
        self.batched_reports = 0
        self.batches_refused = 0  # batches retried one report at a time
        self._queue: list[_Queued] = []
        self._writing: set[asyncio.Task[None]] = set()

    def _refused(self, operation: str, exc: BaseException) -> SourceRefused:
        if self.metrics is not None:
            self.metrics.database_refused.labels(operation).inc()
        return SourceRefused(f"{operation}: {type(exc).__name__}: {exc}")

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
        except DATA_ERRORS as exc:
            raise self._refused("find_account", exc) from None
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
        ``SourceUnavailable`` when the database cannot take it (the spool then does).

        Queued for group commit (see the module docstring); returns once it is committed."""
        answer: asyncio.Future[UsageOutcome] = asyncio.get_running_loop().create_future()
        self._queue.append(_Queued(report, total_amount, answer))
        if len(self._writing) < self.writers:
            task = asyncio.create_task(self._write_queued(), name="usage-writer")
            self._writing.add(task)
            task.add_done_callback(self._writing.discard)  # also if cancelled before it ran
        return await answer

    async def drain(self) -> None:
        """Wait until every queued report is written (at shutdown, before the pool closes)."""
        while self._writing:
            await asyncio.gather(*self._writing, return_exceptions=True)

    async def _write_queued(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self.batch_max]
                del self._queue[: self.batch_max]
                try:
                    if len(batch) == 1:
                        await self._write_one(batch[0])
                    else:
                        await self._write_batch(batch)
                except Exception as exc:  # never leave a caller waiting
                    log.exception("usage writer failed")
                    for queued in batch:
                        _settle(queued.answer, exc)
                except BaseException:  # cancelled: the callers spool what is not known written
                    for queued in batch:
                        _settle(queued.answer, SourceUnavailable("the usage writer was stopped"))
                    raise
        finally:
            # At once, not in a done-callback: a caller resumed by this writer's last answer
            # runs before such a callback and would count this writer as still coming.
            self._writing.discard(cast("asyncio.Task[None]", asyncio.current_task()))

    async def _write_one(self, queued: _Queued) -> None:
        report = queued.report
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(_RECORD_ONE, *_args(report, queued.total_amount))
                snap = await conn.fetchrow(_SNAPSHOTS, [report.account_id])
        except DATABASE_ERRORS as exc:
            _settle(queued.answer, SourceUnavailable(str(exc) or type(exc).__name__))
        except DATA_ERRORS as exc:
            _settle(queued.answer, self._refused("record_usage", exc))
        except asyncpg.PostgresError as exc:
            _settle(queued.answer, exc)
        else:
            _settle(queued.answer, _outcome(row, snap))
            if self.metrics is not None:
                self.metrics.usage_commit_batch.observe(1)

    async def _write_batch(self, batch: list[_Queued]) -> None:
        columns = list(zip(*(_args(q.report, q.total_amount) for q in batch), strict=True))
        accounts = sorted({q.report.account_id for q in batch})
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute(_LOCK_ACCOUNTS, accounts)
                rows = await conn.fetch(_RECORD_MANY, *(list(c) for c in columns))
                snaps = await conn.fetch(_SNAPSHOTS, accounts)
        except DATABASE_ERRORS as exc:
            unavailable = SourceUnavailable(str(exc) or type(exc).__name__)
            for queued in batch:
                _settle(queued.answer, unavailable)
            return
        except (asyncpg.PostgresError, UnicodeError) as exc:
            self.batches_refused += 1
            if self.metrics is not None:
                self.metrics.usage_batches_refused.inc()
            log.warning(
                "usage batch of %d refused (%s); writing its reports one by one", len(batch), exc
            )
            for queued in batch:
                await self._write_one(queued)
            return
        self.batches += 1
        self.batched_reports += len(batch)
        if self.metrics is not None:
            self.metrics.usage_commit_batch.observe(len(batch))
        by_account = {snap["account_id"]: snap for snap in snaps}
        for queued, row in zip(batch, rows, strict=True):
            _settle(queued.answer, _outcome(row, by_account.get(queued.report.account_id)))

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
        except DATA_ERRORS as exc:
            raise self._refused("close_sessions", exc) from None
        return [(r["account_id"], r["session_key"]) for r in rows]

    async def record_unmatched(
        self,
        report: UsageReport,
        identity_kind: str,
        identity: str,
        *,
        reason: str = "unknown_identity",
    ) -> bool:
        try:
            status = await self.pool.execute(
                """INSERT INTO unmatched_usage
                       (idempotency_key, source, origin, session_key, identity_kind, identity,
                        seconds, octets, events, final, occurred_at, reason)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
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
                reason,
            )
        except DATABASE_ERRORS as exc:
            raise SourceUnavailable(str(exc) or type(exc).__name__) from exc
        except DATA_ERRORS as exc:
            raise self._refused("record_unmatched", exc) from None
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
        except DATA_ERRORS as exc:
            raise self._refused("open_session", exc) from None
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
