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
from typing import Any

from ocs import __version__
from ocs.charging.cache import AccountCache
from ocs.config import Config, split_host_port
from ocs.store import accounts as store
from ocs.store.database import Database, open_database
from ocs.store.demo import load_demo

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


class Metrics:
    """The Prometheus endpoint and the daemon-level metrics (more come with each front)."""

    def __init__(self) -> None:
        from prometheus_client import (  # noqa: PLC0415  # noqa: PLC0415
            CollectorRegistry,
            Gauge,
            Info,
            gc_collector,
            platform_collector,
            process_collector,
        )

        self.registry = CollectorRegistry()
        process_collector.ProcessCollector(registry=self.registry)
        platform_collector.PlatformCollector(registry=self.registry)
        gc_collector.GCCollector(registry=self.registry)
        Info("ocs_build", "Version of the running ocsd.", registry=self.registry).info(
            {"version": __version__}
        )
        self.cache_entries = Gauge(
            "ocs_cache_entries", "Accounts in the in-process cache.", registry=self.registry
        )
        self.loader_duration = Gauge(
            "ocs_loader_last_duration_seconds",
            "How long the last full cache load took.",
            registry=self.registry,
        )
        self.loader_last_success = Gauge(
            "ocs_loader_last_success_timestamp_seconds",
            "Unix time of the last successful full cache load.",
            registry=self.registry,
        )
        self._server: Any = None

    def serve(self, listen: str) -> tuple[str, int]:
        from prometheus_client import start_http_server  # noqa: PLC0415

        host, port = split_host_port(listen)
        try:
            server, _thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise DaemonError(f"cannot serve metrics on {listen}: {exc.strerror or exc}") from exc
        self._server = server
        return host, int(server.server_port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


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
    cache.replace_all(snapshots, identities, loaded_at=time.monotonic())
    elapsed = time.monotonic() - started
    if metrics is not None:
        metrics.cache_entries.set(len(cache))
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
        self.cache = AccountCache()
        self.metrics = Metrics()
        self.stopping = asyncio.Event()

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
            if cfg.metrics.enabled:
                host, port = self.metrics.serve(cfg.metrics.listen)
                log.info("metrics listening address=%s port=%d path=/metrics", host, port)
            try:
                log.info("ready pid=%d accounts=%d", os.getpid(), len(self.cache))
                await self.stopping.wait()
            finally:
                await self._shutdown()
        log.info("stopped")

    async def _shutdown(self) -> None:
        """Close listeners; in-flight work (none yet beyond the metrics thread) drains here."""
        try:
            await asyncio.wait_for(
                asyncio.to_thread(self.metrics.close), self.config.daemon.graceful_timeout_s
            )
        except TimeoutError:
            log.warning("metrics endpoint did not close within graceful_timeout_s")
