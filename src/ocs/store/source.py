"""PostgreSQL behind the charging pipeline: account lookups and the session ledger's writes.

Implements ``ocs.charging.pipeline.AccountSource`` and ``UsageSink``. Database failures become
``SourceUnavailable`` so the pipeline can apply its stale-data policy; the spool (a sink wrapped
around this one) keeps usage when the database is away. A value PostgreSQL refuses as data
(``DATA_ERRORS``: a NUL or bad UTF-8 in text, a value too long for an index) becomes
``SourceRefused``: the input's fault, never taken for the database being down, counted in
``ocs_database_refused_total``.

Reports are written by group commit. Every committed usage record changes an account, and the
account-change trigger NOTIFYs; PostgreSQL serialises the commits of notifying transactions
(one global lock held through the WAL flush), so one record per transaction caps the daemon
near one record per commit latency (≈ 1,000/s here) however many connections it uses. Reports
are therefore queued and written by at most ``writers`` tasks, each committing whatever has
queued (up to ``batch_max``) in one transaction:

1. the batch's accounts are locked in id order;
2. every generation of the batch's session keys is read and locked (``sessions``, in id order),
   with what was recorded that could make a report a repeat (its uid; its wire key for the
   key; its report key for the key's generations);
3. the pure ledger (``ocs.core.ledger.apply_report``) decides each report in arrival order on
   that state, so reports of one session in one batch see each other;
4. changed generations are updated (a superseded one closed first: one open generation per
   key), new ones inserted and usage records inserted, one set-based statement each; the
   accounts' snapshots are read back.

Steps 1-2 are one call (``ocs_usage_batch_read``) and step 4 another (``ocs_usage_batch_write``,
both migration 0061), so a batch costs four round trips with BEGIN and COMMIT, not nine: each
round trip waits on a busy event loop while the batch holds its locks.

Every caller is answered only after that commit. A batch that PostgreSQL refuses (two daemons
opening a generation of one key at once, say) is retried one report per transaction, so only a
report that is bad on its own fails. Waits have bounds: a connection within ``acquire_timeout_s``
and the whole batch within ``batch_timeout_s``; past them the reports are unavailable (spooled).
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, cast

import asyncpg

from ocs.charging.errors import SourceRefused, SourceUnavailable
from ocs.charging.pipeline import (
    OpenGeneration,
    UsageOutcome,
    UsageReport,
)
from ocs.core.identity import IdentityKind
from ocs.core.ledger import Generation, Hold, Recorded, ReportKind, Step, apply_report
from ocs.core.model import AccountSnapshot, Usage, tariff_values
from ocs.core.money import to_decimal
from ocs.core.trusted import trusted_replacer
from ocs.metrics import Metrics
from ocs.store.accounts import (
    SNAPSHOT_COLUMNS,
    VERSIONED_SNAPSHOT_COLUMNS,
    _tariff,
    snapshot_from_row,
    zone,
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

_GENERATION_COLUMNS = (
    "s.id, s.source, s.origin, s.session_key, s.generation, s.account_id, s.start_ref, "
    "s.started_at, s.seconds, s.octets, s.events, (s.charged * 1000000)::bigint AS charged, "
    "s.start_key, s.start_wire_key, s.closed_at, s.close_reason, s.closed_by_final, "
    "s.final_number, s.hold_micros, s.hold_until, s.assumed_seconds, s.price_per_minute_micros, "
    "s.billing_increment_s, s.minimum_s, s.price_per_mb_micros, s.connection_fee_micros, "
    "s.price_per_event_micros"
)
# The batch's two calls (migration 0061): lock and read, then write and read the snapshots back.
_READ_BATCH = "SELECT * FROM ocs_usage_batch_read($1, $2, $3, $4, $5, $6, $7)"
# The batch's rows travel as one JSON array of positional arrays per table (one parameter
# each), not as one array parameter per column: asyncpg encodes an array element by element
# (4.9 µs of client CPU per generation row of 27 values, measured), json.dumps the same rows in
# 2.0, and PostgreSQL reads them faster too. Instants travel as integer microseconds since the
# epoch (``_micros``), exact both ways below 2**53 µs (PostgreSQL multiplies the interval by a
# double), that is before the year 2255: every instant written here is near the present.
_WRITE_BATCH = "SELECT * FROM ocs_usage_batch_write($1::jsonb, $2::jsonb, $3::jsonb, $4, $5)"
# The snapshot columns by name, in the order ``snapshot_from_row`` reads them (the view's own
# column order differs).
_SNAPSHOT_NAMES = tuple(c.strip() for c in VERSIONED_SNAPSHOT_COLUMNS.split(","))
_ZONES = "SELECT id, time_zone FROM accounts WHERE id = ANY($1::bigint[])"


# ``dataclasses.replace`` without its cost, for the ledger's own values (every report of a batch)
_evolve_step = trusted_replacer(Step)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_dumps = json.JSONEncoder(separators=(",", ":")).encode  # one batch's rows, as the SQL reads


def _micros(at: datetime | None) -> int | None:
    """An instant as integer microseconds since the epoch (migration 0061's SQL reads it back
    exactly); a naive one is taken as UTC, as asyncpg takes it for a timestamptz parameter."""
    if at is None:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return (at - _EPOCH) // _MICROSECOND


class _Queued(NamedTuple):
    report: UsageReport
    answer: asyncio.Future[UsageOutcome]


KeyTuple = tuple[str, str, str]


def _key(report: UsageReport) -> KeyTuple:
    return (report.source, report.origin, report.session_key)


def generation_from_row(row: Any) -> Generation:
    hold = (
        Hold(amount=row["hold_micros"], until=row["hold_until"])
        if row["hold_micros"] and row["hold_until"] is not None
        else None
    )
    return Generation(
        ref=row["id"],
        generation=row["generation"],
        account_id=row["account_id"],
        start_ref=row["start_ref"],
        started_at=row["started_at"],
        tariff=_tariff(
            row["price_per_minute_micros"],
            row["billing_increment_s"],
            row["minimum_s"],
            row["price_per_mb_micros"],
            row["connection_fee_micros"],
            row["price_per_event_micros"],
        ),
        usage=Usage(seconds=row["seconds"], octets=row["octets"], events=row["events"]),
        charged=row["charged"],
        start_key=row["start_key"],
        start_wire_key=row["start_wire_key"],
        closed_at=row["closed_at"],
        close_reason=row["close_reason"],
        closed_by_final=row["closed_by_final"],
        final_number=row["final_number"],
        hold=hold,
        assumed_seconds=row["assumed_seconds"],
    )


def _settle(answer: asyncio.Future[UsageOutcome], outcome: UsageOutcome | BaseException) -> None:
    if answer.done():  # the caller gave up (cancelled); the record stands, a retry is a no-op
        return
    if isinstance(outcome, BaseException):
        answer.set_exception(outcome)
    else:
        answer.set_result(outcome)


def _unavailable(exc: BaseException) -> SourceUnavailable:
    return SourceUnavailable(str(exc) or type(exc).__name__)


class _Plan:
    """What one batch writes, built by running the ledger over what it read."""

    def __init__(self) -> None:
        self.new: list[tuple[KeyTuple, Generation]] = []  # ref = -(index + 1) until inserted
        self.changed: dict[int, Generation] = {}
        self.lines: list[tuple[UsageReport, int, Step]] = []  # (report, generation ref, step)
        self.steps: list[Step] = []


class PostgresAccounts:
    """``AccountSource`` and ``UsageSink`` on an asyncpg pool."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        writers: int = 2,
        batch_max: int = 256,
        metrics: Metrics | None = None,
        owner: str = "ocsd",
        acquire_timeout_s: float = 5.0,
        batch_timeout_s: float = 30.0,
    ) -> None:
        if writers < 1 or batch_max < 1:
            raise ValueError("writers and batch_max must be at least 1")
        self.pool = pool
        self.metrics = metrics
        self.writers = writers
        self.batch_max = batch_max
        self.owner = owner
        self.acquire_timeout_s = acquire_timeout_s
        self.batch_timeout_s = batch_timeout_s
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
            raise _unavailable(exc) from exc
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
            raise _unavailable(exc) from exc
        return snapshot_from_row(tuple(row)) if row else None

    # --- the ledger's writes ---------------------------------------------------------------

    async def record(self, report: UsageReport) -> UsageOutcome:
        """Commit the report; returns what the ledger did and the account's figures after it.
        Raises ``SourceUnavailable`` when the database cannot take it (the spool then does).

        Queued for group commit (see the module docstring); returns once it is committed."""
        answer: asyncio.Future[UsageOutcome] = asyncio.get_running_loop().create_future()
        self._queue.append(_Queued(report, answer))
        if len(self._writing) < self.writers:
            task = asyncio.create_task(self._write_queued(), name="usage-writer")
            self._writing.add(task)
            task.add_done_callback(self._writing.discard)  # also if cancelled before it ran
        return await answer

    async def drain(self, timeout_s: float | None = None) -> bool:
        """Wait until every queued report is written (at shutdown, before the pool closes);
        False when ``timeout_s`` passed first: the writers are cancelled (their callers are
        answered unavailable, and spool) and a writer stuck in a call to a database that does
        not answer is left to the caller's termination of the pool."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while self._writing:
            left = None if deadline is None else max(deadline - loop.time(), 0.0)
            _done, pending = await asyncio.wait(set(self._writing), timeout=left)
            if pending and deadline is not None and loop.time() >= deadline:
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending, timeout=0.5)
                return False
        return True

    async def _write_queued(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self.batch_max]
                del self._queue[: self.batch_max]
                try:
                    await self._write(batch)
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

    async def _write(self, batch: list[_Queued]) -> None:
        try:
            outcomes = await asyncio.wait_for(self._commit(batch), self.batch_timeout_s)
        except DATABASE_ERRORS as exc:
            unavailable = _unavailable(exc)
            for queued in batch:
                _settle(queued.answer, unavailable)
            return
        except (asyncpg.PostgresError, UnicodeError) as exc:
            if len(batch) == 1:
                refused: BaseException = (
                    self._refused("record_usage", exc) if isinstance(exc, DATA_ERRORS) else exc
                )
                _settle(batch[0].answer, refused)
                return
            self.batches_refused += 1
            if self.metrics is not None:
                self.metrics.usage_batches_refused.inc()
            log.warning(
                "usage batch of %d refused (%s); writing its reports one by one", len(batch), exc
            )
            for queued in batch:
                await self._write([queued])
            return
        if len(batch) > 1:
            self.batches += 1
            self.batched_reports += len(batch)
        if self.metrics is not None:
            self.metrics.usage_commit_batch.observe(len(batch))
        for queued, outcome in zip(batch, outcomes, strict=True):
            _settle(queued.answer, outcome)

    async def _commit(self, batch: list[_Queued]) -> list[UsageOutcome]:
        reports = [q.report for q in batch]
        accounts = sorted({r.account_id for r in reports})
        keys = list(dict.fromkeys(_key(r) for r in reports))
        async with self.pool.acquire(timeout=self.acquire_timeout_s) as conn, conn.transaction():
            rows = await conn.fetch(
                _READ_BATCH,
                accounts,
                [k[0] for k in keys],
                [k[1] for k in keys],
                [k[2] for k in keys],
                [r.entry.uid for r in reports],
                list({r.entry.report_key for r in reports}),
                [r.entry.wire_key for r in reports if r.entry.wire_key is not None],
            )
            generations: dict[KeyTuple, list[Generation]] = {k: [] for k in keys}
            recorded_rows = []
            for row in rows:
                if row[0] == 0:
                    generations[(row["source"], row["origin"], row["session_key"])].append(
                        generation_from_row(row)
                    )
                else:
                    recorded_rows.append(row)
            for found in generations.values():
                found.sort(key=lambda g: g.generation)
            recorded = self._recorded(recorded_rows, generations)
            plan = self._plan(reports, generations, recorded)
            snaps = await self._apply(conn, plan, accounts)
        # One snapshot per account, shared by its reports' outcomes (immutable).
        by_account = {}
        for snap in snaps:
            values = tuple(snap[name] for name in _SNAPSHOT_NAMES)
            by_account[values[0]] = (snapshot_from_row(values), values[-1])
        outcomes = []
        for report, step in zip(reports, plan.steps, strict=True):
            snapshot, version = by_account.get(report.account_id, (None, None))
            outcomes.append(
                UsageOutcome(
                    charged=step.charged,
                    duplicate=step.duplicate,
                    snapshot=snapshot,
                    version=version,
                    generation=step.generation,
                )
            )
        return outcomes

    @staticmethod
    def _recorded(
        rows: list[Any], generations: dict[KeyTuple, list[Generation]]
    ) -> dict[KeyTuple, Recorded]:
        uids = frozenset(row["idempotency_key"] for row in rows)
        found: dict[KeyTuple, tuple[set[str], set[tuple[int, str]]]] = {
            k: (set(), set()) for k in generations
        }
        for row in rows:
            key = (row["source"], row["origin"], row["session_key"])
            entry = found.get(key)
            if entry is None:
                continue
            if row["wire_key"] is not None:
                entry[0].add(row["wire_key"])
            if row["session_ref"] is not None and row["report_key"] is not None:
                entry[1].add((row["session_ref"], row["report_key"]))
        for key, gens in generations.items():
            found[key][0].update(g.start_wire_key for g in gens if g.start_wire_key)
        return {
            key: Recorded(uids=uids, wire_keys=frozenset(w), report_keys=frozenset(r))
            for key, (w, r) in found.items()
        }

    def _plan(
        self,
        reports: list[UsageReport],
        generations: dict[KeyTuple, list[Generation]],
        recorded: dict[KeyTuple, Recorded],
    ) -> _Plan:
        plan = _Plan()
        # A generation made earlier in this batch gets a placeholder ref so that the reports
        # after it (and their report keys) find it.
        placeholders: dict[int, Generation] = {}
        for report in reports:
            key = _key(report)
            gens = generations[key]
            seen = recorded[key]
            step = apply_report(gens, report.entry, seen)
            plan.steps.append(step)
            if step.duplicate:
                continue
            entry = report.entry
            if step.superseded is not None:
                self._replace(gens, step.superseded, plan, key, placeholders)
            target = step.generation
            if target is None:
                continue
            if step.created:
                ref = -(len(plan.new) + 1)
                target = target.evolve(ref=ref)
                plan.new.append((key, target))
                placeholders[ref] = target
                gens.append(target)
            else:
                self._replace(gens, target, plan, key, placeholders)
            assert target.ref is not None
            if step.line is not None:
                plan.lines.append((report, target.ref, step))
            recorded[key] = Recorded(
                uids=seen.uids | {entry.uid},
                wire_keys=seen.wire_keys | ({entry.wire_key} if entry.wire_key else set()),
                report_keys=seen.report_keys | {(target.ref, entry.report_key)},
            )
        return plan

    @staticmethod
    def _replace(
        gens: list[Generation],
        changed: Generation,
        plan: _Plan,
        key: KeyTuple,
        placeholders: dict[int, Generation],
    ) -> None:
        for i, g in enumerate(gens):
            if g.ref == changed.ref:
                gens[i] = changed
                break
        assert changed.ref is not None
        if changed.ref < 0:  # made in this batch: its row is still to be inserted
            index = -changed.ref - 1
            plan.new[index] = (key, changed)
            placeholders[changed.ref] = changed
        else:
            plan.changed[changed.ref] = changed

    async def _apply(self, conn: asyncpg.Connection, plan: _Plan, accounts: list[int]) -> list[Any]:
        """Write the plan in one call (``ocs_usage_batch_write``: changed generations first, a
        superseded one closed before the one that replaces it is inserted; then new ones, then
        the usage records) and return the accounts' snapshot rows as the writes left them."""
        changed = [
            (
                ref,
                g.usage.seconds,
                g.usage.octets,
                g.usage.events,
                g.charged,
                _micros(g.closed_at),
                g.close_reason,
                g.closed_by_final,
                g.final_number,
                g.hold.amount if g.hold is not None else 0,
                _micros(g.hold.until) if g.hold is not None else None,
                g.assumed_seconds,
            )
            for ref, g in plan.changed.items()
        ]
        made: list[tuple[Any, ...]] = []
        for key, g in plan.new:
            hold = g.hold
            made.append(
                (
                    key[0],
                    key[1],
                    key[2],
                    g.generation,
                    g.account_id,
                    g.start_ref,
                    _micros(g.started_at),
                    g.usage.seconds,
                    g.usage.octets,
                    g.usage.events,
                    g.charged,
                    g.start_key,
                    g.start_wire_key,
                    _micros(g.closed_at),
                    g.close_reason,
                    g.closed_by_final,
                    g.final_number,
                    hold.amount if hold is not None else 0,
                    _micros(hold.until) if hold is not None else None,
                    *tariff_values(g.tariff),
                    g.assumed_seconds,
                )
            )
        lines: list[tuple[Any, ...]] = []
        for report, ref, step in plan.lines:
            line = step.line
            assert line is not None
            entry = report.entry
            # A generation made in this call has no id yet: its record names it by the key
            # (the report's) and its generation number, with the negative placeholder ref.
            lines.append(
                (
                    entry.account_id,
                    entry.uid,
                    report.source,
                    report.session_key,
                    line.usage.seconds,
                    line.usage.octets,
                    line.usage.events,
                    line.amount,
                    _micros(line.occurred_at),
                    ref,
                    report.origin,
                    entry.report_key,
                    entry.wire_key,
                    plan.new[-ref - 1][1].generation if ref < 0 else None,
                )
            )
        rows = await conn.fetch(
            _WRITE_BATCH, _dumps(changed), _dumps(made), _dumps(lines), self.owner, accounts
        )
        real: dict[int, int] = {}
        if plan.new:
            ids = {
                (r["source"], r["origin"], r["session_key"], r["generation"]): r["id"]
                for r in rows
                if r[0] == 0
            }
            for n, (key, g) in enumerate(plan.new):
                real[-(n + 1)] = ids[(*key, g.generation)]
        # The steps the callers see carry the real row ids.
        for i, step in enumerate(plan.steps):
            generation = step.generation
            if generation is not None and generation.ref is not None and generation.ref < 0:
                final = plan.new[-generation.ref - 1][1]
                plan.steps[i] = _evolve_step(
                    step, generation=final.evolve(ref=real[generation.ref])
                )
        return [r["snapshot"] for r in rows if r[0] == 1]

    # --- the rest of the sink ---------------------------------------------------------------

    async def close_sessions(self, source: str, origin: str, reason: str) -> list[tuple[int, str]]:
        try:
            rows = await self.pool.fetch(
                "SELECT account_id, session_key FROM ocs_close_sessions($1, $2, $3)",
                source,
                origin,
                reason,
            )
        except DATABASE_ERRORS as exc:
            raise _unavailable(exc) from exc
        except DATA_ERRORS as exc:
            raise self._refused("close_sessions", exc) from None
        return [(r["account_id"], r["session_key"]) for r in rows]

    async def record_unmatched(
        self, report: UsageReport, identity_kind: str, identity: str, reason: str
    ) -> bool:
        entry = report.entry
        try:
            status = await self.pool.execute(
                """INSERT INTO unmatched_usage
                       (idempotency_key, source, origin, session_key, identity_kind, identity,
                        seconds, octets, events, final, occurred_at, reason)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                   ON CONFLICT (idempotency_key) DO NOTHING""",
                entry.uid,
                report.source,
                report.origin,
                report.session_key,
                identity_kind,
                identity,
                entry.usage.seconds,
                entry.usage.octets,
                entry.usage.events,
                entry.kind is ReportKind.FINAL,
                entry.received_at,
                reason,
            )
        except DATABASE_ERRORS as exc:
            raise _unavailable(exc) from exc
        except DATA_ERRORS as exc:
            raise self._refused("record_unmatched", exc) from None
        return bool(status.endswith(" 1"))

    async def session_generations(
        self, source: str, origin: str, session_key: str
    ) -> list[Generation]:
        try:
            rows = await self.pool.fetch(
                f"""SELECT {_GENERATION_COLUMNS} FROM sessions s
                    WHERE s.source = $1 AND s.origin = $2 AND s.session_key = $3
                    ORDER BY s.generation""",
                source,
                origin,
                session_key,
            )
        except DATABASE_ERRORS as exc:
            raise _unavailable(exc) from exc
        except DATA_ERRORS as exc:
            raise self._refused("session_generations", exc) from None
        return [generation_from_row(r) for r in rows]

    async def open_generations(self, owner: str) -> list[OpenGeneration]:
        try:
            rows = await self.pool.fetch(
                f"""SELECT {_GENERATION_COLUMNS}, a.time_zone AS account_zone
                    FROM sessions s JOIN accounts a ON a.id = s.account_id
                    WHERE s.closed_at IS NULL AND s.owner = $1
                    ORDER BY s.id""",
                owner,
            )
        except DATABASE_ERRORS as exc:
            raise _unavailable(exc) from exc
        return [
            OpenGeneration(
                source=r["source"],
                origin=r["origin"],
                session_key=r["session_key"],
                generation=generation_from_row(r),
                time_zone=zone(r["account_zone"]),
            )
            for r in rows
        ]

    async def credit(
        self, account_id: int, amount: int, idempotency_key: str, note: str
    ) -> AccountSnapshot | None:
        try:
            async with (
                self.pool.acquire(timeout=self.acquire_timeout_s) as conn,
                conn.transaction(),
            ):
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
            raise _unavailable(exc) from exc
        return snapshot_from_row(tuple(snap)) if snap else None
