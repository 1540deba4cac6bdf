"""Keeps the daemon's rate plans true to PostgreSQL, one plan at a time (issue 13).

Rules of this file:
- At start every plan is loaded (``load_all``). After that a plan is reloaded only when it
  changed: LISTEN ``ocs_rate_plan_changed`` (raised by migration 0020's triggers on a deck
  import, a band, a plan's decks; payload "<plan id> <epoch>") reloads it within
  milliseconds, and a poll every ``poll_interval_s`` compares every plan's ``changed_at`` with
  the loaded one, catching lost notifications, new plans and deleted ones.
- A reload replaces the plan whole in the cache (never a half-built plan); a large plan is
  indexed in steps that yield to the event loop (``RateDeckBuilder``).
- Accounts are not reloaded for a deck change: an account names its plan by id.
- Nothing here runs per request; every await on the database has a timeout, and a failure is
  logged and retried on the next notification or poll, never fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg

from ocs.charging.rates import RatePlanCache
from ocs.core.destinations import RatePlan
from ocs.store.rates import load_all_rate_plans, load_rate_plan, rate_plan_versions
from ocs.store.source import DATABASE_ERRORS

log = logging.getLogger("ocs.rates")

CHANNEL = "ocs_rate_plan_changed"
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.2, 10.0


class RatePlanFeed:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        dsn: str,
        cache: RatePlanCache,
        poll_interval_s: float = 30.0,
        query_timeout_s: float = 30.0,
    ) -> None:
        self.pool = pool
        self.dsn = dsn
        self.cache = cache
        self.poll_interval_s = poll_interval_s
        self.timeout_s = query_timeout_s
        self._changed: set[int] = set()
        self._wake = asyncio.Event()
        self.listening = asyncio.Event()
        self.reloads = 0

    # --- the RatePlanSource protocol --------------------------------------------------------

    async def load_plan(self, plan_id: int) -> RatePlan | None:
        async with self.pool.acquire(timeout=self.timeout_s) as conn:
            return await load_rate_plan(conn, plan_id)

    async def plan_versions(self) -> dict[int, Any]:
        async with self.pool.acquire(timeout=self.timeout_s) as conn:
            return await asyncio.wait_for(rate_plan_versions(conn), self.timeout_s)

    # --- start and run -------------------------------------------------------------------------

    async def load_all(self) -> int:
        """Load every plan (start-up); returns how many prefixes were loaded."""
        async with self.pool.acquire(timeout=self.timeout_s) as conn:
            plans = await load_all_rate_plans(conn)
        self.cache.replace_all(plans)
        return self.cache.prefix_count

    async def run(self) -> None:
        tasks = [
            asyncio.create_task(self._listen_forever(), name="rates-listen"),
            asyncio.create_task(self._reload_forever(), name="rates-reload"),
            asyncio.create_task(self._poll_forever(), name="rates-poll"),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        plan, _, _stamp = payload.partition(" ")
        with contextlib.suppress(ValueError):
            self._changed.add(int(plan))
            self._wake.set()

    async def _listen_forever(self) -> None:
        backoff = BACKOFF_MIN_S
        while True:
            lost = asyncio.Event()
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.dsn, timeout=self.timeout_s)
                conn.add_termination_listener(_setter(lost))
                await conn.add_listener(CHANNEL, self._on_notify)
            except (*DATABASE_ERRORS, TimeoutError) as exc:
                log.debug("rate plan listener cannot connect: %s", exc)
                if conn is not None:
                    conn.terminate()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            backoff = BACKOFF_MIN_S
            self.listening.set()
            try:
                await self._poll_once()  # whatever changed while nobody listened
                await lost.wait()
            finally:
                self.listening.clear()
                if not conn.is_closed():
                    conn.terminate()
            log.warning("rate plan listener connection lost; reconnecting")

    async def _reload_forever(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(0.01)  # a burst of notifications, one reload
            self._wake.clear()
            plans, self._changed = self._changed, set()
            for plan_id in sorted(plans):
                try:
                    await self._reload(plan_id)
                except (*DATABASE_ERRORS, TimeoutError) as exc:
                    log.warning("rate plan %d reload failed: %s (poll retries)", plan_id, exc)
                except Exception:  # a bug must not stop the feed
                    log.exception("rate plan %d reload failed", plan_id)

    async def _reload(self, plan_id: int) -> None:
        async with self.pool.acquire(timeout=self.timeout_s) as conn:
            stamp = await conn.fetchval(
                "SELECT changed_at FROM rate_plans WHERE id = $1", plan_id, timeout=self.timeout_s
            )
            plan = await load_rate_plan(conn, plan_id) if stamp is not None else None
        if plan is None:
            self.cache.remove(plan_id)
            log.info("rate plan removed plan=%d", plan_id)
            return
        self.cache.put(plan, stamp)
        self.reloads += 1
        log.info(
            "rate plan reloaded plan=%s prefixes=%d decks=%d",
            plan.name,
            plan.prefix_count,
            len(plan.decks),
        )

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval_s)
            try:
                await self._poll_once()
            except (*DATABASE_ERRORS, TimeoutError) as exc:
                log.debug("rate plan poll failed: %s", exc)
            except Exception:
                log.exception("rate plan poll failed")

    async def _poll_once(self) -> None:
        versions = await self.plan_versions()
        stale = {p for p, stamp in versions.items() if self.cache.version(p) != stamp}
        gone = set(self.cache.plan_ids()) - set(versions)
        if stale or gone:
            self._changed |= stale | gone
            self._wake.set()


def _setter(event: asyncio.Event) -> Any:
    return lambda _conn: event.set()
