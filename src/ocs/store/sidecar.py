"""The sidecar: keeps the account cache true to PostgreSQL without touching the request path.

Rules of this file:
- Changes arrive two ways. LISTEN ``ocs_account_changed`` (raised by triggers on every write that
  matters, by any writer) reloads just those accounts within milliseconds; a usage batch's
  announcement carries its figures (migration 0062) and is applied to the cached snapshot it
  follows without a query (``_take_change``). A poll every
  ``refresh_interval_s`` reads the change stamps of the accounts whose ``changed_at`` moved since
  the last poll (an incremental watermark, with a safety margin for long transactions) and
  re-reads those it does not already know current, which catches anything a lost notification
  missed. A successful poll also proves every other entry current, which keeps the whole cache
  fresh without reloading it.
- When PostgreSQL goes away the sidecar says so once, marks the source unhealthy (the pipeline
  then decides from cached figures without waiting on the database, within ``max_stale_s``),
  reconnects with capped exponential backoff, replays the usage spool when it is back, and
  says so once.
- Nothing here runs per request. Every await on the database has a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from ocs.charging.cache import AccountCache
from ocs.charging.pipeline import Charging
from ocs.metrics import Metrics
from ocs.store.accounts import VERSIONED_SNAPSHOT_COLUMNS, snapshot_from_row
from ocs.store.durable import SpoolingSink
from ocs.store.source import DATABASE_ERRORS

log = logging.getLogger("ocs.sidecar")

WATERMARK_MARGIN = timedelta(seconds=5)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A usage batch's announcement (migration 0062), split on spaces.
_USAGE_CHANGE_FIELDS = ("account", "raised", "before", "after", "balance", "unbilled", "period")
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.2, 10.0


class Sidecar:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        dsn: str,
        cache: AccountCache,
        charging: Charging,
        metrics: Metrics,
        sink: SpoolingSink | None,
        refresh_interval_s: float,
        query_timeout_s: float,
        watermark: datetime,
    ) -> None:
        self.pool = pool
        self.dsn = dsn
        self.cache = cache
        self.charging = charging
        self.metrics = metrics
        self.sink = sink
        self.refresh_interval_s = refresh_interval_s
        self.timeout_s = query_timeout_s
        self.watermark = watermark
        self._changed: set[int] = set()
        # Per account, the change stamp as of which this sidecar knows the cached row and
        # identities current: read by it, or followed from such a read through usage
        # announcements (which change no identity). The poll skips an account stamped no later.
        self._seen: dict[int, datetime] = {}
        self._tariffs: set[int] = set()
        self._wake = asyncio.Event()
        self._listener: asyncpg.Connection | None = None
        self.listening = asyncio.Event()  # set once changes are being received
        self._healthy = True
        self.changes_applied = 0
        # Usage announcements taken without a query: applied to the cached snapshot, or
        # already held (this process's own batch).
        self.changes_taken = 0
        self.changes_current = 0
        self._lag = metrics.notification_lag
        self._applied = metrics.changes_applied

    # --- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled: the listener, the refresher and the poller."""
        tasks = [
            asyncio.create_task(self._listen_forever(), name="sidecar-listen"),
            asyncio.create_task(self._refresh_forever(), name="sidecar-refresh"),
            asyncio.create_task(self._poll_forever(), name="sidecar-poll"),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._listener is not None and not self._listener.is_closed():
                self._listener.terminate()

    def _set_health(self, healthy: bool, why: str = "") -> None:
        if healthy == self._healthy:
            return
        self._healthy = healthy
        self.charging.set_source_health(healthy)
        self.metrics.database_up.set(1 if healthy else 0)
        if healthy:
            log.info("database reachable again")
        else:
            self.metrics.database_errors.inc()
            log.warning("database unreachable: %s (deciding from cached figures)", why)

    def reload_all(self) -> int:
        """Re-read every cached account (configuration reload): queued and versioned like any
        change, so a newer figure is never overwritten. Returns how many were queued."""
        ids = self.cache.account_ids()
        self._changed.update(ids)
        self._wake.set()
        return len(ids)

    # --- LISTEN -------------------------------------------------------------------------------

    def _on_notify(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        if channel == "ocs_tariff_changed":
            try:
                self._tariffs.add(int(payload))
            except ValueError:
                return
            self._wake.set()
            return
        fields = payload.split(" ")
        try:
            account = int(fields[0])
        except ValueError:
            return
        if len(fields) > 1:
            with contextlib.suppress(ValueError):
                self._lag.set(max(time.time() - float(fields[1]), 0.0))
        if len(fields) == len(_USAGE_CHANGE_FIELDS) and self._take_change(account, fields):
            return
        self._changed.add(account)
        self._wake.set()

    def _take_change(self, account: int, fields: list[str]) -> bool:
        """A usage batch's announcement (migration 0062): the account's new balance, unbilled
        amount and period, with its change stamp before and after. Applied to the cached
        snapshot when that is the one stamped "before"; nothing to do when the cache already
        holds "after" (this process wrote the batch). False: re-read the account."""
        current = self.cache.version(account)
        if current is None:  # loaded in bulk (no stamp kept) or not cached: read it
            return False
        try:
            before = _EPOCH + timedelta(microseconds=int(fields[2]))
            after = _EPOCH + timedelta(microseconds=int(fields[3]))
            balance, unbilled = int(fields[4]), int(fields[5])
            period = None if fields[6] == "-" else date.fromisoformat(fields[6])
        except (ValueError, OverflowError):
            return False
        if current >= after:
            self._follow(account, before, after)
            self.changes_current += 1
            return True
        snapshot = self.cache.get(account)
        if current != before or snapshot is None:
            return False
        self._follow(account, before, after)
        changed = snapshot.replace(balance=balance, unbilled=unbilled, unbilled_period=period)
        self.cache.put(changed, self.charging.clock.mono(), after)
        self.changes_taken += 1
        self.changes_applied += 1
        self._applied.inc()
        return True

    async def _listen_forever(self) -> None:
        backoff = BACKOFF_MIN_S
        while True:
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(self.dsn, timeout=self.timeout_s * 2)
                conn.add_termination_listener(_setter(lost))
                await conn.add_listener("ocs_account_changed", self._on_notify)
                await conn.add_listener("ocs_tariff_changed", self._on_notify)
            except (*DATABASE_ERRORS, TimeoutError) as exc:
                self._set_health(False, str(exc) or type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            self._listener = conn
            backoff = BACKOFF_MIN_S
            log.info("listening for account changes")
            self.listening.set()
            # Whatever changed while nobody listened is caught by polling at once.
            self._wake.set()
            await self._poll_once()
            await lost.wait()
            log.warning("change listener connection lost; reconnecting")

    # --- reloading changed accounts -------------------------------------------------------------

    async def _refresh_forever(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(0.002)  # gather a burst of notifications into one query
            self._wake.clear()
            accounts, self._changed = self._changed, set()
            tariffs, self._tariffs = self._tariffs, set()
            if not accounts and not tariffs:
                continue
            try:
                await self._reload(accounts, tariffs)
            except (*DATABASE_ERRORS, TimeoutError) as exc:
                self._changed |= accounts
                self._tariffs |= tariffs
                self._set_health(False, str(exc) or type(exc).__name__)
                await asyncio.sleep(BACKOFF_MIN_S)
            except Exception:  # a bug must not stop the feed: log it, keep the rest going
                log.exception("sidecar: reloading %d accounts failed", len(accounts))
                await asyncio.sleep(BACKOFF_MIN_S)

    async def _reload(self, accounts: set[int], tariffs: set[int]) -> None:
        async with self.pool.acquire() as conn:
            rows, identities = await self._read(conn, list(accounts), list(tariffs))
        self._apply(rows, identities)

    async def _read(
        self, conn: asyncpg.Connection, accounts: list[int], tariffs: list[int]
    ) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
        """The snapshots of these accounts and of every account on these tariffs, with their
        identities (read after them)."""
        where, args = "account_id = ANY($1::bigint[])", [accounts]
        if tariffs:  # only then: with the OR the plan reads every account
            where += (
                " OR account_id IN (SELECT id FROM accounts WHERE tariff_id = ANY($2::bigint[]))"
            )
            args.append(tariffs)
        rows = await conn.fetch(
            f"SELECT {VERSIONED_SNAPSHOT_COLUMNS} FROM account_snapshots WHERE {where}",
            *args,
            timeout=self.timeout_s,
        )
        identities = await conn.fetch(
            "SELECT account_id, kind, value, credential FROM account_identities "
            "WHERE account_id = ANY($1::bigint[])",
            [r["account_id"] for r in rows],
            timeout=self.timeout_s,
        )
        return rows, identities

    def _apply(self, rows: list[asyncpg.Record], identities: list[asyncpg.Record]) -> None:
        now = self.charging.clock.mono()
        by_account: dict[int, list[tuple[str, str]]] = {}
        for r in identities:
            by_account.setdefault(r["account_id"], []).append((r["kind"], r["value"]))
        seen = self._seen
        for row in rows:
            snapshot = snapshot_from_row(tuple(row))
            stamp = row["changed_at"]
            if stamp > seen.get(snapshot.account_id, _EPOCH):
                seen[snapshot.account_id] = stamp  # its identities are read after it
            if self.cache.put(snapshot, now, stamp):
                self.cache.set_identities(
                    snapshot.account_id, by_account.get(snapshot.account_id, [])
                )
        for r in identities:
            self.cache.set_credential(r["kind"], r["value"], r["credential"])
        if rows:
            # Not forget_unknown(): every committed usage record changes an account, and
            # clearing the negative cache on each would let an unknown identity cost a query
            # per request. A new identity leaves it by itself (set_identities).
            self.changes_applied += len(rows)
            self._applied.inc(len(rows))

    # --- polling --------------------------------------------------------------------------------

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval_s)
            try:
                await self._poll_once()
            except Exception:  # a bug must not stop the polling: log it, try again next time
                log.exception("sidecar: poll failed")

    async def _poll_once(self) -> bool:
        started = self.charging.clock.mono()
        try:
            async with self.pool.acquire(timeout=self.timeout_s) as conn:
                now: datetime = await conn.fetchval("SELECT now()", timeout=self.timeout_s)
                # The stamps first: under usage load nearly every account moved since the last
                # poll, and the cache already holds most of those rows (the writer's outcomes,
                # the announcements). Only the others are read whole.
                stamps = await conn.fetch(
                    "SELECT id, changed_at FROM accounts WHERE changed_at > $1",
                    self.watermark - WATERMARK_MARGIN,
                    timeout=self.timeout_s,
                )
                behind = [r[0] for r in stamps if not self._holds(r[0], r[1])]
                rows: list[asyncpg.Record] = []
                identities: list[asyncpg.Record] = []
                if behind:
                    rows, identities = await self._read(conn, behind, [])
        except (*DATABASE_ERRORS, TimeoutError) as exc:
            self._set_health(False, str(exc) or type(exc).__name__)
            return False
        self._apply(rows, identities)
        self.watermark = now
        self.cache.mark_validated(started)
        self.metrics.loader_last_success.set(time.time())
        self._set_health(True)
        if self.sink is not None and self.sink.depth_bytes:
            try:
                await self.sink.replay()
            except (*DATABASE_ERRORS, TimeoutError) as exc:
                log.warning("spool replay failed: %s", exc)
        return True

    def _follow(self, account: int, before: datetime, after: datetime) -> None:
        """A usage announcement from ``before`` to ``after``: an account known current as of
        ``before`` is known current as of ``after`` (the batch changed no identity). Not
        from any other stamp: a change in between (an identity added while the listener was
        away) would be skipped by the poll."""
        if self._seen.get(account) == before:
            self._seen[account] = after

    def _holds(self, account: int, stamp: datetime) -> bool:
        """True if reading the account again could change nothing: this sidecar knows its
        row and identities as of ``stamp`` or later, and the cache holds such a row. Not the
        cache's stamp alone: the usage writer's outcomes advance it without identities."""
        seen = self._seen.get(account)
        current = self.cache.version(account)
        return seen is not None and seen >= stamp and current is not None and current >= stamp


def _setter(event: asyncio.Event) -> Any:
    return lambda _conn: event.set()
