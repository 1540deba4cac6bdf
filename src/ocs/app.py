"""The daemon: wires config, database, cache and listeners; owns signals and shutdown.

Start-up order: lock file (one daemon per lock), database (embedded or DSN, migrations),
optional demo data, cache warm-up, metrics endpoint, then "ready". Shutdown on SIGTERM/SIGINT
runs the same steps backwards within ``daemon.graceful_timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

from ocs import __version__
from ocs.charging.cache import AccountCache
from ocs.charging.pipeline import CachePolicy, Charging
from ocs.charging.sessions import SessionBook
from ocs.config import Config, split_host_port
from ocs.core.model import CreditDecision, RefusalReason
from ocs.metrics import Metrics
from ocs.radius.front import ClientTable, RadiusFront
from ocs.radius.setup import RadiusSetupError, build_clients, load_dictionary
from ocs.store import accounts as store
from ocs.store.database import Database, open_database
from ocs.store.demo import load_demo
from ocs.store.source import PostgresAccounts

log = logging.getLogger("ocs.daemon")


class DaemonError(RuntimeError):
    """A start-up failure with a message for the operator (no traceback needed)."""


@contextlib.contextmanager
def exclusive_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (with our pid in it) for the daemon's lifetime."""
    lock_path = Path(path)
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        handle = lock_path.open("a+")
    except OSError as exc:
        raise DaemonError(f"cannot open lock file {lock_path}: {exc}") from exc
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise DaemonError(
                f"another ocsd is already running with lock file {lock_path} (pid {holder}); "
                "stop it first, or give this one its own daemon.lock_file"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


async def warm_cache(db: Database, cache: AccountCache, metrics: Metrics | None) -> int:
    """Load every account snapshot and identity into the cache; returns the account count."""
    started = time.monotonic()
    snapshots = []
    async with db.pool.acquire() as conn:
        async for batch in store.iter_snapshots(conn):
            snapshots.extend(batch)
            if len(snapshots) % 100_000 < len(batch):
                log.info("loading accounts loaded=%d", len(snapshots))
        identities = await store.all_identities(conn)
    cache.replace_all(snapshots, identities, loaded_at=asyncio.get_running_loop().time())
    elapsed = time.monotonic() - started
    if metrics is not None:
        metrics.cache_entries.set(len(cache))
        metrics.accounts_loaded.set(len(snapshots))
        metrics.loader_duration.set(elapsed)
        metrics.loader_last_success.set(time.time())
    log.info(
        "cache warm accounts=%d identities=%d seconds=%.3f", len(cache), len(identities), elapsed
    )
    return len(cache)


class Daemon:
    def __init__(self, config: Config, *, load_demo_data: bool = False) -> None:
        self.config = config
        self.load_demo_data = load_demo_data
        self.cache = AccountCache(negative_ttl_s=config.cache.negative_ttl_s)
        self.sessions = SessionBook()
        self.metrics = Metrics()
        self.stopping = asyncio.Event()
        self.charging: Charging | None = None
        self.radius: RadiusFront | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def request_stop(self, reason: str) -> None:
        if not self.stopping.is_set():
            log.info("stopping reason=%s", reason)
            self.stopping.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop, signal.Signals(signum).name)
        try:
            with exclusive_lock(self.config.daemon.lock_file):
                await self._run_locked()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)

    async def _run_locked(self) -> None:
        cfg = self.config
        log.info("starting version=%s config=%s", __version__, cfg.source)
        radius_clients = None
        if cfg.radius.enabled:
            # Configuration problems surface before the database is touched.
            try:
                radius_clients = build_clients(cfg.radius, load_dictionary(cfg.radius.dictionary))
            except RadiusSetupError as exc:
                raise DaemonError(str(exc)) from None
        async with open_database(
            cfg.database, apply_migrations=cfg.database.migrate_on_start
        ) as db:
            where = f"embedded in {cfg.database.embedded_dir}" if db.embedded else "configured DSN"
            log.info("database ready where=%s", where)
            if self.load_demo_data:
                async with db.pool.acquire() as conn:
                    names = await load_demo(conn)
                log.info("demo data loaded accounts=%d", len(names))
            await warm_cache(db, self.cache, self.metrics)
            self.charging = self._pipeline(db)
            try:
                if cfg.metrics.enabled:
                    host, port = split_host_port(cfg.metrics.listen)
                    try:
                        port = self.metrics.serve(host, port)
                    except OSError as exc:
                        raise DaemonError(
                            f"cannot serve metrics on {cfg.metrics.listen}: {exc.strerror or exc}"
                        ) from exc
                    log.info("metrics listening address=%s port=%d path=/metrics", host, port)
                if radius_clients is not None:
                    await self._start_radius(radius_clients)
                self._tasks.append(asyncio.create_task(self._housekeeping(), name="housekeeping"))
                log.info("ready pid=%d accounts=%d", os.getpid(), len(self.cache))
                await self.stopping.wait()
            finally:
                await self._shutdown()
        log.info("stopped")

    def _pipeline(self, db: Database) -> Charging:
        cfg = self.config
        accounts = PostgresAccounts(db.pool)
        charging = Charging(
            cache=self.cache,
            sessions=self.sessions,
            source=accounts,
            sink=accounts,
            limits=cfg.grant.limits(),
            policy=CachePolicy(
                ttl_s=cfg.cache.ttl_s,
                max_stale_s=cfg.cache.max_stale_s,
                on_stale=cfg.cache.on_stale,
                load_timeout_s=cfg.cache.load_timeout_s,
                pending_reservation_ttl_s=cfg.grant.admission_hold_s,
            ),
        )
        results = {}
        for reason in ("admitted", *(r.value for r in RefusalReason)):
            results[reason] = self.metrics.decisions.labels(reason)

        def count(decision: CreditDecision) -> None:
            key = "admitted" if decision.admitted else str(decision.reason)
            results[key].inc()

        charging.on_decision = count
        return charging

    async def _start_radius(self, clients: ClientTable) -> None:
        cfg = self.config.radius
        assert self.charging is not None
        self.radius = RadiusFront(
            charging=self.charging,
            clients=clients,
            metrics=self.metrics,
            queue_size=cfg.queue_size,
            duplicate_window_s=cfg.duplicate_window_s,
            max_pending=cfg.max_pending,
            receive_buffer_bytes=cfg.receive_buffer_bytes,
            reuse_port=cfg.reuse_port,
        )
        try:
            bound = await self.radius.start(cfg.auth_listen, cfg.acct_listen)
        except OSError as exc:
            raise DaemonError(f"cannot open the RADIUS listeners: {exc.strerror or exc}") from exc
        for kind, host, port in bound:
            log.info("radius listening kind=%s address=%s port=%d", kind, host, port)
        log.info("radius clients=%d", len(clients))

    async def _housekeeping(self) -> None:
        """Once a second: expire reservations and lost sessions, refresh gauges."""
        loop = asyncio.get_running_loop()
        last_hits = last_misses = 0
        while True:
            now = loop.time()
            self.sessions.expire(now)
            m = self.metrics
            m.cache_entries.set(len(self.cache))
            oldest = self.cache.oldest_age_s(now)
            m.cache_oldest_age.set(oldest if oldest is not None else 0)
            m.active_sessions.set(self.sessions.session_count)
            m.reservations.set(self.sessions.reservation_count)
            if self.charging is not None:
                stats = self.charging.stats
                m.cache_lookups.labels("hit").inc(stats.cache_hits - last_hits)
                m.cache_lookups.labels("miss").inc(stats.cache_misses - last_misses)
                last_hits, last_misses = stats.cache_hits, stats.cache_misses
            await asyncio.sleep(1.0)

    async def _shutdown(self) -> None:
        """Close listeners, let in-flight requests finish within graceful_timeout_s, stop tasks."""
        grace = self.config.daemon.graceful_timeout_s
        if self.radius is not None:
            await self.radius.stop(grace)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await asyncio.wait_for(asyncio.to_thread(self.metrics.close), grace)
        except TimeoutError:
            log.warning("metrics endpoint did not close within graceful_timeout_s")
