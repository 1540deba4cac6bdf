"""The daemon: wires config, database, cache and listeners; owns signals and shutdown.

Start-up order: lock file (one daemon per lock), database (embedded or DSN, migrations),
optional demo data, cache warm-up, metrics endpoint, then "ready". Shutdown on SIGTERM/SIGINT
runs the same steps backwards within ``daemon.graceful_timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import gc
import logging
import os
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg

from ocs import __version__, compiled_modules, longlived, stale_compiled
from ocs.admin.demo import DEMO_OPERATOR, load_demo
from ocs.admin.tokens import create_token
from ocs.billing.cdr_export import CdrExporter, ExportSettings
from ocs.charging.cache import AccountCache
from ocs.charging.pipeline import CachePolicy, Charging
from ocs.charging.rates import RatePlanCache
from ocs.charging.sessions import SessionBook
from ocs.config import Config, permission_warning, split_host_port
from ocs.core.identity import DialPlan, IdentityKind
from ocs.core.model import RefusalReason
from ocs.diameter.handler import CreditControl
from ocs.diameter.server import DiameterServer, PeerAllowList
from ocs.metrics import DIAMETER_PEER_STATES, Metrics
from ocs.ops import notify
from ocs.ops import status as ops_status
from ocs.ops.aggregate import WorkerAggregator
from ocs.ops.http import OpsEndpoint
from ocs.ops.reload import apply_reload
from ocs.ops.tasks import log_summaries, refresh_billing_gauges
from ocs.radius.front import ClientTable, RadiusFront
from ocs.radius.radsec import RadSecServer
from ocs.radius.relay import WorkerRelay
from ocs.radius.setup import RadiusSetupError, build_clients, dial_plan_of, load_dictionary
from ocs.store import accounts as store
from ocs.store.database import Database, DatabaseUnavailable, open_database
from ocs.store.durable import SpoolingSink
from ocs.store.rate_feed import RatePlanFeed
from ocs.store.redis_sync import RedisSync
from ocs.store.sidecar import Sidecar
from ocs.store.source import PostgresAccounts
from ocs.store.spool import Spool, SpoolError
from ocs.tls import TlsSetupError, server_context

log = logging.getLogger("ocs.daemon")

EXPIRY_SLICE = 100  # heap steps per slice of expiry work (about 0.3 ms here)


def default_instance_name(config: Config) -> str:
    """Host name and lock file: the same for a daemon restarted in place, different for two
    daemons on one host (they cannot share a lock file)."""
    return f"{socket.gethostname()}:{Path(config.daemon.lock_file).resolve()}"


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


async def warm_cache(db: Database, cache: AccountCache, metrics: Metrics | None) -> datetime:
    """Load every account snapshot and identity into the cache. Returns the database time the
    load started at: the watermark from which the sidecar polls for changes."""
    started = time.monotonic()
    # A million new objects would trigger many collections that find nothing to free.
    collecting = gc.isenabled()
    gc.disable()
    try:
        async with db.pool.acquire() as conn:
            watermark: datetime = await conn.fetchval("SELECT now()")
            entries, identities = await store.load_all(conn)
            credentials = await store.load_credentials(conn)
    finally:
        if collecting:
            gc.enable()
    loaded, identity_count = len(entries), sum(len(index) for index in identities.values())
    cache.adopt_all(entries, identities, loaded_at=asyncio.get_running_loop().time())
    cache.replace_credentials(credentials)
    del entries, identities
    # The cache is long-lived: keep it out of the cyclic collector's full passes, which
    # otherwise walk every snapshot and pause the loop for hundreds of milliseconds.
    gc.collect()
    gc.freeze()
    elapsed = time.monotonic() - started
    if metrics is not None:
        metrics.cache_entries.set(len(cache))
        metrics.accounts_loaded.set(loaded)
        metrics.loader_duration.set(elapsed)
        metrics.loader_last_success.set(time.time())
    log.info(
        "cache warm accounts=%d identities=%d seconds=%.3f", len(cache), identity_count, elapsed
    )
    return watermark


class Daemon:
    def __init__(self, config: Config, *, load_demo_data: bool = False) -> None:
        self.config = config
        self.load_demo_data = load_demo_data
        self.cache = AccountCache(negative_ttl_s=config.cache.negative_ttl_s)
        self.sessions = SessionBook()
        # Rate plans by id (rating by destination), loaded at start and per plan on change.
        self.rate_plans = RatePlanCache()
        self.rate_feed: RatePlanFeed | None = None
        self.metrics = Metrics()
        self.stopping = asyncio.Event()
        self.charging: Charging | None = None
        self.radius: RadiusFront | None = None
        self.radsec: RadSecServer | None = None
        self.ssl_context: ssl.SSLContext | None = None
        self.diameter: DiameterServer | None = None
        self.sink: SpoolingSink | None = None
        self.spool: Spool | None = None
        self.redis_sync: RedisSync | None = None
        self.db: Database | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # Operations (ocs.ops): /status, /readyz, SIGHUP reload, systemd notification.
        self.started_at = time.time()
        self.ready = False
        self.sidecar: Sidecar | None = None
        self.ops_endpoint: OpsEndpoint | None = None
        self.config_view: Callable[[Config], Config] = lambda c: c  # a worker's view (for_worker)
        self.instance_name = config.daemon.instance_name or default_instance_name(config)
        self.reload_state: dict[str, object] | None = None
        self._reload_task: asyncio.Task[bool] | None = None
        self.api_child: ApiChild | None = None
        self.config_path: str | None = None
        # A worker of a supervisor (daemon.workers > 1): its index, the spools it replays at
        # start besides its own (worker 0: those of a one-process run and of workers that are
        # no more), and the port its metrics endpoint got.
        self.worker_index: int | None = None
        self.worker_count = 1
        self.orphan_spools: list[str] = []
        self.metrics_port = 0

    def request_stop(self, reason: str) -> None:
        if not self.stopping.is_set():
            log.info("stopping reason=%s", reason)
            self.stopping.set()

    def request_reload(self) -> None:
        """SIGHUP: re-read the configuration file (one reload at a time)."""
        if self.ready and (self._reload_task is None or self._reload_task.done()):
            self._reload_task = asyncio.create_task(apply_reload(self), name="reload")

    def _watch_gc(self) -> None:
        """Observe every garbage-collection pause (they stall the loop) in a histogram."""
        pauses = {gen: self.metrics.gc_pause.labels(str(gen)) for gen in (0, 1, 2)}
        started = [0.0]

        def callback(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                started[0] = time.perf_counter()
            else:
                pauses[info.get("generation", 2)].observe(time.perf_counter() - started[0])

        gc.callbacks.append(callback)

    async def run(self) -> None:
        self._watch_gc()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop, signal.Signals(signum).name)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        try:
            with exclusive_lock(self.config.daemon.lock_file):
                await self._run_locked()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)

    async def _run_locked(self) -> None:
        cfg = self.config
        log.info("starting version=%s config=%s", __version__, cfg.source)
        native = compiled_modules()
        log.info(
            "hot paths %s",
            f"compiled modules={len(native)}" if native else "interpreted (not compiled)",
        )
        if stale := stale_compiled():
            log.warning(
                "compiled modules older than their source run: %s (scripts/build_native.py)",
                ", ".join(stale),
            )
        radius_clients = None
        if cfg.radius.enabled:
            # Configuration problems surface before the database is touched.
            try:
                radius_clients = build_clients(cfg.radius, load_dictionary(cfg.radius.dictionary))
            except RadiusSetupError as exc:
                raise DaemonError(str(exc)) from None
        if (cfg.radius.enabled and cfg.radius.tls_listen) or (
            cfg.diameter.enabled and cfg.diameter.tls_listen
        ):
            try:
                self.ssl_context = server_context(cfg.tls)
            except TlsSetupError as exc:
                raise DaemonError(str(exc)) from None
        async with open_database(
            cfg.database, apply_migrations=cfg.database.migrate_on_start
        ) as db:
            self.db = db
            where = f"embedded in {cfg.database.embedded_dir}" if db.embedded else "configured DSN"
            log.info("database ready where=%s", where)
            if self.load_demo_data:
                async with db.pool.acquire() as conn:
                    names = await load_demo(conn)
                log.info("demo data loaded accounts=%d", len(names))
            try:
                self.spool = Spool(cfg.usage.spool_file, max_bytes=cfg.usage.spool_max_bytes)
            except SpoolError as exc:
                raise DaemonError(str(exc)) from None
            database = PostgresAccounts(
                db.pool,
                writers=cfg.database.usage_writers,
                batch_max=cfg.database.usage_batch_max,
                metrics=self.metrics,
                owner=self.instance_name,
                acquire_timeout_s=cfg.database.command_timeout_s,
                batch_timeout_s=cfg.database.command_timeout_s * 3,
            )
            self.sink = SpoolingSink(database, self.spool, metrics=self.metrics)
            if self.sink.depth_bytes:
                replayed = await self.sink.replay()
                log.info("usage spool replayed at start records=%d", replayed)
            await self._replay_orphan_spools(database)
            watermark = await warm_cache(db, self.cache, self.metrics)
            await self._load_rate_plans(db)
            self.charging = self._pipeline(db, self.sink)
            # Before any listener opens: the sessions this daemon ran hold their credit again.
            rebuilt = await self.charging.rebuild()
            log.info("holds rebuilt sessions=%d instance=%s", rebuilt, self.charging.owner)
            self._tasks.append(
                asyncio.create_task(self.charging.run_write_behind(), name="write-behind")
            )
            sidecar = Sidecar(
                pool=db.pool,
                dsn=db.dsn,
                cache=self.cache,
                charging=self.charging,
                metrics=self.metrics,
                sink=self.sink,
                refresh_interval_s=cfg.cache.refresh_interval_s,
                query_timeout_s=cfg.database.command_timeout_s,
                watermark=watermark,
            )
            self.metrics.database_up.set(1)
            self.sidecar = sidecar
            self._tasks.append(asyncio.create_task(sidecar.run(), name="sidecar"))
            # Ready means the change feed is live too, not only the cache warm.
            try:
                await asyncio.wait_for(sidecar.listening.wait(), cfg.database.connect_timeout_s)
            except TimeoutError:
                log.warning("change notifications not live yet; polling covers them meanwhile")
            try:
                if cfg.metrics.enabled:
                    host, port = split_host_port(cfg.metrics.listen)
                    self.ops_endpoint = OpsEndpoint(
                        registry=self.metrics.registry,
                        readiness=lambda: ops_status.readiness(self),
                        status=lambda: ops_status.status(self),
                    )
                    try:
                        port = await self.ops_endpoint.start(host, port)
                    except OSError as exc:
                        raise DaemonError(
                            f"cannot serve metrics on {cfg.metrics.listen}: {exc.strerror or exc}"
                        ) from exc
                    self.metrics_port = port
                    log.info("metrics listening address=%s port=%d path=/metrics", host, port)
                if radius_clients is not None:
                    await self._start_radius(radius_clients, db.pool)
                if cfg.diameter.enabled:
                    await self._start_diameter()
                self._tasks.append(asyncio.create_task(self._housekeeping(), name="housekeeping"))
                if cfg.redis.url is not None:
                    self.redis_sync = RedisSync.from_config(
                        self.sessions, cfg.redis, metrics=self.metrics
                    )
                    self.redis_sync.start()
                    if cfg.redis.atomic_below_grants > 0:
                        self.charging.atomic = self.redis_sync
                        self.charging.atomic_below_grants = cfg.redis.atomic_below_grants
                self._start_operations(db)
                if cfg.api.with_daemon and self.worker_index is None:
                    await self._start_api(db)
                # What start-up built lives as long as the daemon: the session book, the
                # duplicate caches and their orders. Left to the cyclic collector, the large
                # ones (hundreds of thousands of entries under load) would be walked entry by
                # entry on every full pass: 15-40 ms stalls measured at 7,500 requests/s
                # (see ocs.longlived). What is made from now on is walked by full passes, so
                # FULL_COLLECTION_EVERY middle-generation passes come between two of them.
                await self._wait_for_other_workers()
                gc.collect()
                gc.freeze()
                longlived.space_full_collections()
                log.info("ready pid=%d accounts=%d", os.getpid(), len(self.cache))
                self.ready = True
                _signal_ready(self.worker_index, self.metrics_port)
                notify.sd_notify(f"READY=1\nSTATUS=serving, {len(self.cache)} accounts cached")
                await self.stopping.wait()
            finally:
                await self._shutdown()
        log.info("stopped")

    async def _wait_for_other_workers(self, timeout_s: float = 15.0) -> None:
        """A worker is ready once it sees the others in the shared store: an admission it
        confirms there must count their holds from the first request on."""
        sync = self.redis_sync
        if self.worker_index is None or sync is None or self.worker_count < 2:
            return
        deadline = time.monotonic() + timeout_s
        while len(sync.live) < self.worker_count - 1 and time.monotonic() < deadline:  # noqa: ASYNC110  # the sync task sets it, no event to wait on
            await asyncio.sleep(0.02)
        if len(sync.live) < self.worker_count - 1:
            log.warning(
                "ready before seeing every other worker in redis (%d of %d)",
                len(sync.live),
                self.worker_count - 1,
            )

    async def _replay_orphan_spools(self, database: PostgresAccounts) -> None:
        """Usage spooled by a process that is no more (a one-process run before workers, a
        worker index beyond today's count): replayed once, exactly once as any spool is; a
        file that cannot be replayed completely now stays for the next start."""
        for path in self.orphan_spools:
            try:
                spool = Spool(path, max_bytes=self.config.usage.spool_max_bytes)
            except SpoolError as exc:
                log.warning("usage spool %s not replayed: %s", path, exc)
                continue
            try:
                sink = SpoolingSink(database, spool, metrics=self.metrics)
                if sink.depth_bytes:
                    replayed = await sink.replay()
                    log.info("usage spool replayed at start records=%d file=%s", replayed, path)
            finally:
                spool.close()

    async def _load_rate_plans(self, db: Database) -> None:
        """Rate plans for rating by destination, kept current per plan by their own feed."""
        cfg = self.config
        feed = RatePlanFeed(
            pool=db.pool,
            dsn=db.dsn,
            cache=self.rate_plans,
            poll_interval_s=cfg.cache.refresh_interval_s,
            query_timeout_s=cfg.database.command_timeout_s,
        )
        started = time.monotonic()
        prefixes = await feed.load_all()
        log.info(
            "rate plans loaded plans=%d prefixes=%d seconds=%.2f",
            len(self.rate_plans),
            prefixes,
            time.monotonic() - started,
        )
        self.rate_feed = feed
        self._tasks.append(asyncio.create_task(feed.run(), name="rate-plans"))

    def _pipeline(self, db: Database, sink: SpoolingSink) -> Charging:
        cfg = self.config
        charging = Charging(
            cache=self.cache,
            sessions=self.sessions,
            source=sink.database,
            sink=sink,
            limits=cfg.grant.limits(),
            policy=CachePolicy(
                ttl_s=cfg.cache.ttl_s,
                max_stale_s=cfg.cache.max_stale_s,
                on_stale=cfg.cache.on_stale,
                load_timeout_s=cfg.cache.load_timeout_s,
                pending_reservation_ttl_s=cfg.grant.ring_limit_s,
                session_ttl_margin_s=cfg.grant.session_margin_s,
                write_behind_s=cfg.usage.write_behind_s,
            ),
            owner=self.instance_name,
            strict=cfg.diameter.strict,
            rates=self.rate_plans,
        )
        charging.charge_unended = cfg.grant.unended_sessions == "charge_grant"
        for reason in ("admitted", *(r.value for r in RefusalReason)):
            self.metrics.decisions.labels(reason)  # each result shown from the start, at 0
        self.metrics.decisions.count_from(lambda: charging.stats.decisions)
        return charging

    async def _start_radius(self, clients: ClientTable, pool: asyncpg.Pool) -> None:
        cfg = self.config.radius
        assert self.charging is not None

        async def credential_lookup(kind: IdentityKind, value: str) -> str | None:
            return await store.credential_of(pool, kind, value)

        self.radius = RadiusFront(
            charging=self.charging,
            clients=clients,
            metrics=self.metrics,
            queue_size=cfg.queue_size,
            duplicate_window_s=cfg.duplicate_window_s,
            max_pending=cfg.max_pending,
            receive_buffer_bytes=cfg.receive_buffer_bytes,
            reuse_port=cfg.reuse_port,
            spread_auth=self.worker_count if cfg.spread_access_requests else 1,
            credential_lookup=credential_lookup,
            credential_lookup_timeout_s=self.config.cache.load_timeout_s,
        )
        relay_dir = os.environ.get(WORKER_RELAY_ENV)
        if self.worker_index is not None and self.worker_count > 1 and relay_dir:
            # Accounting naming another worker's admission goes to that worker (relay.py).
            relay = WorkerRelay(relay_dir, self.worker_index, self.worker_count)
            try:
                relay.start(self.radius.enqueue)
            except OSError as exc:
                raise DaemonError(f"cannot open the worker relay socket: {exc}") from exc
            self.radius.relay = relay
            self.radius.admission_tag = f"w{self.worker_index}|"
        try:
            bound = await self.radius.start(cfg.auth_listen, cfg.acct_listen)
        except OSError as exc:
            raise DaemonError(f"cannot open the RADIUS listeners: {exc.strerror or exc}") from exc
        for kind, host, port in bound:
            log.info("radius listening kind=%s address=%s port=%d", kind, host, port)
        if cfg.tls_listen:
            assert self.ssl_context is not None
            self.radsec = RadSecServer(
                self.radius, self.ssl_context, max_connections=cfg.tls_max_connections
            )
            try:
                tls_bound = await self.radsec.start(cfg.tls_listen, reuse_port=cfg.reuse_port)
            except OSError as exc:
                raise DaemonError(
                    f"cannot open the RadSec listeners: {exc.strerror or exc}"
                ) from exc
            for host, port in tls_bound:
                log.info("radius listening kind=radsec address=%s port=%d", host, port)
                self.radius.bound.append(("radsec", host, port))
        log.info("radius clients=%d", len(clients))

    async def _start_diameter(self) -> None:
        cfg = self.config.diameter
        assert self.charging is not None
        handler = CreditControl(
            charging=self.charging,
            origin_host=cfg.origin_host,
            origin_realm=cfg.origin_realm,
            validity_time_s=cfg.validity_time_s,
            tcc_s=cfg.tcc_s,
            dial_plan=self._diameter_dial_plan(),
        )
        self.diameter = DiameterServer(
            handler=handler,
            allowed=PeerAllowList(cfg.peers),
            metrics=self.metrics,
            origin_host=cfg.origin_host,
            origin_realm=cfg.origin_realm,
            max_message_bytes=cfg.max_message_bytes,
            max_connections=cfg.max_connections,
            cer_timeout_s=cfg.cer_timeout_s,
            read_timeout_s=cfg.read_timeout_s,
            watchdog_s=cfg.watchdog_s,
            max_pending=cfg.max_pending,
            duplicate_window_s=cfg.duplicate_window_s,
            ssl_context=self.ssl_context if cfg.tls_listen else None,
        )
        try:
            # Workers (daemon.workers > 1) share the ports, as they do RADIUS's.
            bound = await self.diameter.start(
                cfg.listen, reuse_port=self.config.radius.reuse_port, tls_listen=cfg.tls_listen
            )
        except OSError as exc:
            raise DaemonError(f"cannot open the Diameter listeners: {exc.strerror or exc}") from exc
        for host, port in bound:
            log.info("diameter listening address=%s port=%d", host, port)
        for host, port in self.diameter.bound_tls:
            log.info("diameter listening tls=true address=%s port=%d", host, port)
        log.info("diameter origin_host=%s peers=%d", cfg.origin_host, len(cfg.peers))

    def _diameter_dial_plan(self) -> DialPlan:
        try:
            return dial_plan_of(self.config.diameter, "diameter")
        except RadiusSetupError as exc:  # the same keys as a RADIUS client's
            raise DaemonError(str(exc)) from None

    async def _housekeeping(self) -> None:
        """Ten times a second: expire reservations and lost sessions, in slices with the loop
        yielded between them (after a burst, 100,000 admissions can fall due together; at
        once they would stall every request behind them by tens of milliseconds); once a
        second: refresh gauges."""
        loop = asyncio.get_running_loop()
        last_hits = last_misses = last_spooled = last_replayed = 0
        published = LedgerCounters(self.metrics)
        tick = 0
        worst_lag = 0.0
        expected = loop.time()
        while True:
            now = loop.time()
            worst_lag = max(worst_lag, now - expected)
            self.sessions.expire(now, max_work=EXPIRY_SLICE)
            slices = 1
            while self.sessions.expiry_due(now):
                await asyncio.sleep(0)
                self.sessions.expire(now, max_work=EXPIRY_SLICE)
                slices += 1
                if slices % 10 == 0:
                    gc.collect(0)
            if self.charging is not None:
                self.charging.expire_sessions()  # sessions whose grant ran out: closed
            # CPython starts a young collection when allocations outnumber deallocations by
            # 700, and it counts every freed container, tracked or not. While held
            # admissions expire in thousands, their freed tuples hold that count down, the
            # young generation grows unchecked (new requests' survivors), and the collection
            # that finally runs walks all of it: 100 ms stalls measured here. Collecting it
            # ten times a second keeps each pass small.
            gc.collect(0)
            tick += 1
            if tick % 10:
                expected = loop.time() + 0.1
                await asyncio.sleep(0.1)
                continue
            m = self.metrics
            m.loop_lag.set(worst_lag)
            worst_lag = 0.0
            m.cache_entries.set(len(self.cache))
            oldest = self.cache.oldest_age_s(now)
            m.cache_oldest_age.set(oldest if oldest is not None else 0)
            m.active_sessions.set(self.sessions.session_count)
            m.reservations.set(self.sessions.reservation_count)
            if self.sink is not None:
                m.spool_bytes.set(self.sink.depth_bytes)
                m.spool_records.labels("spooled").inc(self.sink.spooled - last_spooled)
                m.spool_records.labels("replayed").inc(self.sink.replayed - last_replayed)
                last_spooled, last_replayed = self.sink.spooled, self.sink.replayed
            if self.charging is not None:
                stats = self.charging.stats
                m.cache_lookups.labels("hit").inc(stats.cache_hits - last_hits)
                m.cache_lookups.labels("miss").inc(stats.cache_misses - last_misses)
                last_hits, last_misses = stats.cache_hits, stats.cache_misses
                published.publish(stats, self.charging.behind_depth)
            expected = loop.time() + 0.1
            await asyncio.sleep(0.1)

    def _start_operations(self, db: Database) -> None:
        """Billing-state gauges, log summaries and (under systemd) the watchdog pings."""
        self.metrics.config_last_reload.set(time.time())
        if self.config.diameter.enabled:
            for state in DIAMETER_PEER_STATES:
                self.metrics.diameter_peers.labels(state)
        timeout = self.config.database.command_timeout_s
        for name, coro in (
            ("billing-gauges", refresh_billing_gauges(db.pool, self.metrics, timeout_s=timeout)),
            ("log-summaries", log_summaries(self.metrics)),
        ):
            self._tasks.append(asyncio.create_task(coro, name=name))
        cdr = self.config.cdr
        if cdr.export != "none":
            exporter = CdrExporter(db.pool, cdr_settings(self.config))
            self._tasks.append(
                asyncio.create_task(exporter.run_forever(self.stopping), name="cdr-export")
            )
            log.info("cdr export sink=%s every_s=%g", cdr.export, cdr.interval_s)
        interval = notify.watchdog_interval_s()
        if interval is not None:
            pings = notify.watchdog_pings(interval)
            self._tasks.append(asyncio.create_task(pings, name="watchdog"))
            log.info("systemd watchdog pings every %.1f s", interval)

    async def _start_api(self, db: Database) -> None:
        """``api.with_daemon``: run ``ocs api`` beside the daemon (with ``--load-demo``, print a
        token of the demo operator for it)."""
        if self.load_demo_data:
            await log_demo_token(db)
        self.api_child = ApiChild(self.config_path)
        log.info("api started pid=%d url=http://%s", self.api_child.pid, self.config.api.listen)

    async def _shutdown(self) -> None:
        """Close listeners, let in-flight requests finish, write what is queued, stop tasks:
        all of it within one ``graceful_timeout_s``."""
        grace = self.config.daemon.graceful_timeout_s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace

        def left() -> float:
            return max(deadline - loop.time(), 0.0)

        notify.sd_notify("STOPPING=1")
        self.ready = False
        if self.radsec is not None:
            await self.radsec.stop()
        if self.api_child is not None:
            await asyncio.to_thread(self.api_child.stop, grace)
        stops = []
        if self.radius is not None:
            stops.append(self.radius.stop(grace))
        if self.diameter is not None:
            stops.append(self.diameter.stop(grace))  # in-flight answers first, then DPR
        if stops:
            await asyncio.gather(*stops, return_exceptions=True)
        if self.charging is not None:
            try:  # holds and closes queued behind the answers
                await asyncio.wait_for(self.charging.flush_behind(), left())
            except (TimeoutError, Exception) as exc:
                log.warning("stopping: queued session writes not flushed: %r", exc)
        if self.redis_sync is not None:
            await self.redis_sync.stop()  # deletes this instance's figures from Redis
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # A task stuck in a call to a database that does not answer is left to the pool's
            # termination below, which ends that call.
            await asyncio.wait(self._tasks, timeout=max(left(), 0.5))
        drained = self.sink is None or await self.sink.database.drain(max(left(), 1.0))
        if not drained:
            log.warning("stopping: usage writers did not finish in time; their reports spool")
        if self.db is not None:  # a database that does not answer must not hold the exit
            closing = asyncio.ensure_future(self.db.pool.close())
            done, _ = await asyncio.wait({closing}, timeout=max(left(), 0.5) if drained else 0.1)
            if not done:
                log.warning("stopping: the database did not answer; connections terminated")
                self.db.pool.terminate()
                await asyncio.wait({closing}, timeout=1.0)
        if self.spool is not None:
            self.spool.close()
        if self.ops_endpoint is not None:
            await self.ops_endpoint.close(max(left(), 0.5))


async def log_demo_token(db: Database) -> None:
    """``--load-demo`` with the API: a token of the demo operator, valid one day, in the log."""
    async with db.pool.acquire() as conn:
        now = await conn.fetchval("SELECT now()")
        new = await create_token(
            conn,
            DEMO_OPERATOR,
            expires_at=now + timedelta(days=1),
            label="make run demo",
            created_by="ocsd --load-demo",
        )
    log.info("api demo token for operator %s (valid one day): %s", DEMO_OPERATOR, new.token)


def cdr_settings(config: Config) -> ExportSettings:
    cdr = config.cdr
    return ExportSettings(
        sink=cdr.export,
        directory=Path(cdr.directory),
        webhook_url=cdr.webhook_url,
        webhook_secret=cdr.webhook_secret,
        interval_s=cdr.interval_s,
        batch_max_records=cdr.batch_max_records,
        timeout_s=cdr.timeout_s,
        db_timeout_s=config.database.command_timeout_s,
        backoff_initial_s=cdr.backoff_initial_s,
        backoff_max_s=cdr.backoff_max_s,
    )


class ApiChild:
    """``ocs api`` as a child process with the daemon's configuration file; it ends when the
    daemon ends (SIGTERM from ``stop``, or from the kernel if the daemon dies)."""

    def __init__(self, config_path: str | None) -> None:
        command = [
            sys.executable,
            "-c",
            "import sys; from ocs.cli import admin_main; sys.exit(admin_main())",
        ]
        if config_path is not None:
            command += ["--config", config_path]
        command += ["api", "--with-parent"]
        env = {k: v for k, v in os.environ.items() if k not in _SYSTEMD_ENV}
        self.process = subprocess.Popen(command, env=env)
        self.pid = self.process.pid

    def stop(self, timeout_s: float) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s + 5)
        except subprocess.TimeoutExpired:
            log.warning("api did not stop in time; killing pid=%d", self.pid)
            self.process.kill()
            self.process.wait()


class LedgerCounters:
    """Publishes the pipeline's session-ledger counters (plain ints) to Prometheus as deltas."""

    _FIELDS = (
        ("session_events", "expired", "sessions_expired"),
        ("session_events", "rebuilt", "holds_rebuilt"),
        ("writes_behind", "written", "behind_written"),
        ("writes_behind", "coalesced", "behind_coalesced"),
        ("writes_behind", "failed", "behind_failed"),
        ("shared_admissions", "confirmed", "atomic_confirmed"),
        ("shared_admissions", "conflict", "atomic_conflicts"),
        ("shared_admissions", "unavailable", "atomic_unavailable"),
    )

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.children = [
            (getattr(metrics, family).labels(label), field) for family, label, field in self._FIELDS
        ]
        self.last = dict.fromkeys((field for _, field in self.children), 0)

    def publish(self, stats: object, behind_depth: int) -> None:
        for child, field in self.children:
            value = getattr(stats, field)
            if value > self.last[field]:
                child.inc(value - self.last[field])
            self.last[field] = value
        self.metrics.writes_behind_queued.set(behind_depth)


# --- process model ---------------------------------------------------------------------------


READY_FD_ENV = "OCS_READY_FD"
_SYSTEMD_ENV = (notify.NOTIFY_SOCKET_ENV, notify.WATCHDOG_USEC_ENV, notify.WATCHDOG_PID_ENV)


WORKER_COUNT_ENV = "OCS_WORKER_COUNT"
WORKER_RELAY_ENV = "OCS_WORKER_RELAY_DIR"  # the workers' relay sockets (radius/relay.py)
REDIS_SERVER = "redis-server"


def worker_count(config: Config) -> int:
    """``daemon.workers`` as a number: "auto" is one per core this process may run on."""
    workers = config.daemon.workers
    if workers == "auto":
        try:
            return max(len(os.sched_getaffinity(0)), 1)
        except AttributeError:  # not Linux
            return os.cpu_count() or 1
    return int(workers)


def for_worker(config: Config, index: int) -> Config:
    """A worker's view of the configuration: shared ports (RADIUS and Diameter, SO_REUSEPORT),
    its own lock, spool and instance name, and a metrics endpoint on a free loopback port that
    the supervisor aggregates (it serves ``metrics.listen`` itself)."""
    return dataclasses.replace(
        config,
        daemon=dataclasses.replace(
            config.daemon, workers=1, lock_file=f"{config.daemon.lock_file}.worker{index}"
        ),
        radius=dataclasses.replace(config.radius, reuse_port=True),
        metrics=dataclasses.replace(config.metrics, listen="127.0.0.1:0"),
        usage=dataclasses.replace(
            config.usage, spool_file=f"{config.usage.spool_file}.worker{index}"
        ),
    )


def orphan_spools(config: Config, index: int, count: int) -> list[str]:
    """The spools worker ``index`` of ``count`` replays at start besides its own: worker 0
    takes the one-process spool and those of worker indexes ``count`` and beyond."""
    if index != 0:
        return []
    base = Path(config.usage.spool_file)
    found = [str(base)] if base.exists() else []
    for path in sorted(base.parent.glob(f"{base.name}.worker*")):
        suffix = path.name[len(base.name) + len(".worker") :]
        if suffix.isdigit() and int(suffix) >= count:
            found.append(str(path))
    return found


def _die_with_parent() -> None:
    """A worker must not outlive its supervisor (killed with SIGKILL, it cannot forward a
    signal): ask Linux to send SIGTERM when the parent dies."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        import ctypes  # noqa: PLC0415

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _signal_ready(index: int | None, metrics_port: int) -> None:
    """Tell a supervising process (``daemon.workers`` > 1) that this worker is ready, and
    where its metrics endpoint listens: ``ready INDEX PORT``."""
    fd = os.environ.get(READY_FD_ENV)
    if fd is None:
        return
    with contextlib.suppress(OSError, ValueError):
        os.write(int(fd), f"ready {index if index is not None else -1} {metrics_port}\n".encode())
        os.close(int(fd))


def _terminate_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent dies (PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes  # noqa: PLC0415

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


class LocalRedis:
    """The redis-server a supervisor starts when its workers have no ``redis.url`` to share
    holds and session counts through: a Unix socket in a private directory beside the lock
    file, no TCP port, no persistence (the holds are rebuilt from PostgreSQL at start)."""

    def __init__(self, lock_file: str) -> None:
        self.directory = Path(f"{lock_file}.redis")
        self.socket = self.directory / "redis.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket.resolve()}?db=0"

    def start(self, timeout_s: float = 10.0) -> None:
        binary = shutil.which(REDIS_SERVER)
        if binary is None:
            raise DaemonError("no redis-server to share holds between workers")
        self.directory.mkdir(mode=0o700, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                "0",
                "--unixsocket",
                str(self.socket.resolve()),
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory.resolve()),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_terminate_with_parent,  # noqa: PLW1509  # no thread runs yet; a SIGKILLed supervisor leaves no redis behind
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DaemonError(f"the local redis-server exited with {self.proc.returncode}")
            if self._answers():
                log.info("local redis started pid=%d socket=%s", self.proc.pid, self.socket)
                return
            time.sleep(0.05)
        self.stop()
        raise DaemonError(f"the local redis-server did not answer within {timeout_s:.0f} s")

    def _answers(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(0.5)
                probe.connect(str(self.socket))
                probe.sendall(b"PING\r\n")
                return probe.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Supervisor:
    """``daemon.workers`` > 1: hold the lock, prepare the database once, start the store the
    workers share holds and session counts through (``redis.url``, else a local
    redis-server), run N workers that share the ports with SO_REUSEPORT, serve one metrics
    endpoint for all of them (``ocs.ops.aggregate``), forward SIGHUP, SIGTERM and SIGINT, and
    stop them all (exit 1) if one dies on its own, so the service manager restarts the whole."""

    def __init__(
        self, config: Config, config_path: str | None, load_demo: bool, *, workers: int
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.load_demo = load_demo
        self.workers = workers
        self.children: list[subprocess.Popen[bytes]] = []
        self.stopping = False
        self.api_child: ApiChild | None = None
        self.local_redis: LocalRedis | None = None
        self.relay_dir: str | None = None
        self.aggregator: WorkerAggregator | None = None
        self.worker_env: dict[str, str] = {}

    def _prepare(self) -> None:
        async def prepare() -> None:
            async with open_database(self.config.database, apply_migrations=True) as db:
                if self.load_demo:
                    async with db.pool.acquire() as conn:
                        names = await load_demo(conn)
                    log.info("demo data loaded accounts=%d", len(names))
                    if self.config.api.with_daemon:
                        await log_demo_token(db)

        asyncio.run(prepare())

    def _shared_store(self) -> None:
        """Without ``redis.url``, the workers share holds through a local redis-server; an
        admission is confirmed in it atomically whenever the account's credit is below
        ``workers`` grants (at least ``redis.atomic_below_grants``), so N workers never admit
        more than the credit covers (README, "Sessions and the ledger")."""
        redis = self.config.redis
        threshold = redis.atomic_below_grants
        if redis.url is None:
            self.local_redis = LocalRedis(self.config.daemon.lock_file)
            self.local_redis.start()
            self.worker_env["OCS_REDIS__URL"] = self.local_redis.url
            if threshold > 0:
                threshold = max(threshold, float(self.workers))
        self.worker_env["OCS_REDIS__ATOMIC_BELOW_GRANTS"] = repr(float(threshold))

    def _spawn(self, index: int, ready_w: int) -> subprocess.Popen[bytes]:
        command = [
            sys.executable,
            "-c",
            "import sys; from ocs.cli import daemon_main; sys.exit(daemon_main())",
            "--worker",
            str(index),
        ]
        if self.config_path is not None:
            command += ["--config", self.config_path]
        env = dict(
            os.environ,
            **self.worker_env,
            **{READY_FD_ENV: str(ready_w), WORKER_COUNT_ENV: str(self.workers)},
        )
        for name in (notify.NOTIFY_SOCKET_ENV, notify.WATCHDOG_USEC_ENV, notify.WATCHDOG_PID_ENV):
            env.pop(name, None)  # the supervisor speaks to systemd for all of them
        return subprocess.Popen(command, env=env, pass_fds=(ready_w,))

    def run(self) -> int:
        workers = self.workers
        with exclusive_lock(self.config.daemon.lock_file):
            self._prepare()
            ready_r, ready_w = os.pipe()
            previous = {
                s: signal.signal(s, lambda signum, _frame: self._stop(signum))
                for s in (signal.SIGTERM, signal.SIGINT)
            }
            previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._forward_reload)
            try:
                self._shared_store()
                # The workers' relay sockets: a directory of this user's alone (0700) beside
                # the lock file, as the local redis's; a start after a crash reuses it.
                self.relay_dir = f"{self.config.daemon.lock_file}.relay"
                os.makedirs(self.relay_dir, mode=0o700, exist_ok=True)
                os.chmod(self.relay_dir, 0o700)
                self.worker_env[WORKER_RELAY_ENV] = os.path.abspath(self.relay_dir)
                for index in range(workers):
                    self.children.append(self._spawn(index, ready_w))
                    log.info("worker started index=%d pid=%d", index, self.children[-1].pid)
                os.close(ready_w)
                ports = self._wait_ready(ready_r, workers)
                if ports is not None and self.config.metrics.enabled:
                    self._serve_metrics(ports)
                if ports is not None:
                    log.info("ready pid=%d workers=%d", os.getpid(), workers)
                    notify.sd_notify(f"READY=1\nSTATUS=serving with {workers} workers")
                if self.config.api.with_daemon:
                    self.api_child = ApiChild(self.config_path)
                    log.info("api started pid=%d", self.api_child.pid)
                return self._watch()
            finally:
                os.close(ready_r)
                if self.api_child is not None:
                    self.api_child.stop(self.config.daemon.graceful_timeout_s)
                for signum, handler in previous.items():
                    signal.signal(signum, handler)
                self._stop(signal.SIGTERM)
                self._reap()
                if self.aggregator is not None:
                    self.aggregator.close()
                if self.local_redis is not None:
                    self.local_redis.stop()
                if self.relay_dir is not None:
                    shutil.rmtree(self.relay_dir, ignore_errors=True)

    def _serve_metrics(self, ports: dict[int, int]) -> None:
        host, port = split_host_port(self.config.metrics.listen)
        workers = [
            (index, child.pid, ports.get(index, 0)) for index, child in enumerate(self.children)
        ]
        self.aggregator = WorkerAggregator(workers, supervisor_pid=os.getpid())
        try:
            bound = self.aggregator.start(host, port)
        except OSError as exc:
            raise DaemonError(
                f"cannot serve metrics on {self.config.metrics.listen}: {exc.strerror or exc}"
            ) from exc
        log.info(
            "metrics listening address=%s port=%d path=/metrics workers=%d",
            host,
            bound,
            len(workers),
        )

    def _wait_ready(self, ready_r: int, workers: int) -> dict[int, int] | None:
        """Each worker's metrics port by index, once all are ready; None if one died or the
        supervisor was told to stop first."""
        ports: dict[int, int] = {}
        buffer = b""
        deadline = time.monotonic() + 300
        while len(ports) < workers and not self.stopping and time.monotonic() < deadline:
            readable, _, _ = select.select([ready_r], [], [], 0.2)
            if readable:
                chunk = os.read(ready_r, 4096)
                if not chunk:
                    break  # every worker closed its end
                buffer += chunk
                *lines, rest = buffer.split(b"\n")
                buffer = rest
                for line in lines:
                    parts = line.split()
                    if len(parts) == 3 and parts[0] == b"ready":
                        ports[int(parts[1])] = int(parts[2])
            if any(child.poll() is not None for child in self.children):
                return None
        return ports if len(ports) == workers else None

    def _forward_reload(self, _signum: int, _frame: object) -> None:
        log.info("reload requested: forwarded to workers=%d", len(self.children))
        for child in self.children:
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signal.SIGHUP)

    def _watch(self) -> int:
        interval = notify.watchdog_interval_s()
        last_ping = 0.0
        while not self.stopping:
            if interval is not None and time.monotonic() - last_ping >= interval:
                notify.sd_notify("WATCHDOG=1")
                last_ping = time.monotonic()
            for index, child in enumerate(self.children):
                code = child.poll()
                if code is not None and not self.stopping:
                    log.error("worker exited index=%d pid=%d code=%d", index, child.pid, code)
                    return 1
            if self.local_redis is not None and self.local_redis.proc is not None:
                code = self.local_redis.proc.poll()
                if code is not None and not self.stopping:
                    log.error("local redis exited code=%d", code)
                    return 1
            time.sleep(0.2)
        return 0

    def _stop(self, signum: int) -> None:
        if not self.stopping:
            log.info("stopping reason=%s", signal.Signals(signum).name)
            notify.sd_notify("STOPPING=1")
        self.stopping = True
        for child in self.children:
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signal.SIGTERM)

    def _reap(self) -> None:
        deadline = time.monotonic() + self.config.daemon.graceful_timeout_s + 10
        for child in self.children:
            try:
                child.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                log.warning("worker did not stop in time; killing pid=%d", child.pid)
                child.kill()
                child.wait()
        log.info("stopped")


def resolve_workers(config: Config) -> int:
    """How many processes ``ocsd`` runs: ``daemon.workers`` resolved, and one when the workers
    would have no store to share holds through ("auto" falls back with a warning; a number
    asked for is refused)."""
    count = worker_count(config)
    if count > 1 and config.redis.url is None and shutil.which(REDIS_SERVER) is None:
        if config.daemon.workers == "auto":
            log.warning(
                "daemon.workers = auto runs one process of %d cores: the workers would share "
                "holds through a local redis-server, and none is installed (Debian: apt-get "
                "install redis-server), nor is redis.url set",
                count,
            )
            return 1
        raise DaemonError(
            f"daemon.workers = {count} needs redis.url or an installed redis-server: the "
            "workers share holds and session counts through it (Debian: apt-get install "
            "redis-server), or set daemon.workers = 1"
        )
    return count


def main(config: Config, *, config_path: str | None, load_demo: bool, worker: int | None) -> int:
    """``ocsd``: run the daemon (or, with ``daemon.workers`` > 1, its supervisor). Exit codes:
    0 stopped cleanly, 1 start-up refused (message on stderr), 3 database unavailable."""
    from ocs.logs import setup_logging  # noqa: PLC0415

    setup_logging(config.log.level, config.log.format)
    if worker is None and config.source != "built-in defaults":
        warning = permission_warning(config.source)
        if warning is not None:
            log.warning(warning)
    try:
        if worker is None:
            count = resolve_workers(config)
            if count > 1:
                return Supervisor(config, config_path, load_demo, workers=count).run()
            config = dataclasses.replace(
                config, daemon=dataclasses.replace(config.daemon, workers=1)
            )
        count = int(os.environ.get(WORKER_COUNT_ENV, "1") or 1)
        base = config
        if worker is not None:
            config = for_worker(config, worker)
            _die_with_parent()
        daemon = Daemon(config, load_demo_data=load_demo and worker is None)
        daemon.config_path = config_path
        if worker is not None:
            index = worker
            daemon.worker_index = index
            daemon.worker_count = count
            daemon.orphan_spools = orphan_spools(base, index, count)
            daemon.config_view = lambda c: for_worker(c, index)
        if config.daemon.use_uvloop:
            import uvloop  # noqa: PLC0415

            uvloop.run(daemon.run())
        else:
            asyncio.run(daemon.run())
    except DaemonError as exc:
        print(f"ocsd: error: {exc}", file=sys.stderr)
        return 1
    except DatabaseUnavailable as exc:
        print(f"ocsd: error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130
    return 0
