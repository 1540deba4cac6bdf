"""What ``/status`` and ``/readyz`` report: read from a running daemon, tolerant of parts it
does not have (a front that is disabled, or not built yet, is simply absent from the report).

The daemon is read by attribute (``cache``, ``config``, ``metrics``, ``sessions``, ``sink``,
``radius``, ``diameter``, ``redis_sync``, ``started_at``, ``ready``, ``stopping``) so that this
module does not import ``ocs.app`` (which imports it).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from typing import Any

from ocs import __version__
from ocs.ops.http import Readiness


def _gauges(daemon: Any) -> dict[str, float]:
    """Every unlabelled sample of the daemon's registry (one collection, public API)."""
    metrics = getattr(daemon, "metrics", None)
    if metrics is None:
        return {}
    return {
        sample.name: sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if not sample.labels
    }


def _now() -> float:
    return asyncio.get_running_loop().time()


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def readiness(daemon: Any) -> Readiness:
    """Ready when started and not stopping, and the database answers or the cache is within
    ``cache.max_stale_s`` (so decisions can still be made)."""
    stopping = getattr(daemon, "stopping", None)
    if stopping is not None and stopping.is_set():
        return Readiness(ready=False, detail={"ready": False, "reason": "stopping"})
    if not getattr(daemon, "ready", False):
        return Readiness(ready=False, detail={"ready": False, "reason": "starting"})
    database_up = _gauges(daemon).get("ocs_database_up") == 1
    max_stale_s = daemon.config.cache.max_stale_s
    oldest = daemon.cache.oldest_age_s(_now())
    cache_fresh = oldest is not None and oldest <= max_stale_s
    detail: dict[str, Any] = {
        "ready": database_up or cache_fresh,
        "database": "up" if database_up else "down",
        "cache_oldest_age_s": _round(oldest),
        "max_stale_s": max_stale_s,
    }
    if database_up:
        detail["reason"] = "database reachable"
    elif cache_fresh:
        detail["reason"] = "database unreachable; deciding from the cache within max_stale_s"
    elif oldest is None:
        detail["reason"] = "database unreachable and the cache is empty"
    else:
        detail["reason"] = "database unreachable and the cache is older than max_stale_s"
    return Readiness(ready=detail["ready"], detail=detail)


def status(daemon: Any) -> dict[str, Any]:
    """The JSON document behind ``ocs status``."""
    values = _gauges(daemon)
    started = getattr(daemon, "started_at", None)
    cache = daemon.cache
    now = _now()
    report: dict[str, Any] = {
        "version": __version__,
        "pid": os.getpid(),
        "uptime_s": _round(time.time() - started, 1) if started else None,
        "config": daemon.config.source,
        "ready": readiness(daemon).detail,
        "database": {
            "up": values.get("ocs_database_up") == 1,
            "errors_total": values.get("ocs_database_errors_total"),
        },
        "cache": {
            "entries": len(cache),
            "identities": cache.identity_count,
            "oldest_age_s": _round(cache.oldest_age_s(now)),
            "ttl_s": daemon.config.cache.ttl_s,
            "max_stale_s": daemon.config.cache.max_stale_s,
        },
        "loader": _loader(values),
        "spool": {"bytes": getattr(getattr(daemon, "sink", None), "depth_bytes", None)},
        "sessions": {
            "active": daemon.sessions.session_count,
            "reservations": daemon.sessions.reservation_count,
        },
        "accounts_below_warning_threshold": values.get("ocs_accounts_below_warning_threshold"),
        "reload": getattr(daemon, "reload_state", None),
    }
    redis_sync = getattr(daemon, "redis_sync", None)
    if redis_sync is not None:
        report["redis"] = {
            "up": bool(getattr(redis_sync, "up", False)),
            "instances": len(getattr(redis_sync, "live", ()) or ()),
            "errors": getattr(redis_sync, "errors", None),
        }
    radius = getattr(daemon, "radius", None)
    if radius is not None:
        report["radius"] = {
            "listeners": [
                {"kind": kind, "address": f"{host}:{port}"}
                for kind, host, port in getattr(radius, "bound", ())
            ],
            "clients": len(radius.clients),
            "pending": getattr(radius, "pending", None),
        }
    diameter = getattr(daemon, "diameter", None)
    if diameter is not None:
        report["diameter"] = _diameter(diameter)
    return report


def _loader(values: dict[str, float]) -> dict[str, Any]:
    last = values.get("ocs_loader_last_success_timestamp_seconds")
    return {
        "last_success_unix": last or None,
        "last_success_age_s": _round(time.time() - last, 1) if last else None,
        "last_full_load_s": _round(values.get("ocs_loader_last_duration_seconds")),
        "accounts_loaded": values.get("ocs_loader_accounts_loaded"),
        "changes_applied_total": values.get("ocs_loader_changes_applied_total"),
    }


def _diameter(server: Any) -> dict[str, Any]:
    """Listeners and peers by state, from whatever the Diameter server exposes."""
    out: dict[str, Any] = {}
    bound = getattr(server, "bound", None)
    if bound:
        out["listeners"] = [f"{b[-2]}:{b[-1]}" if isinstance(b, tuple) else str(b) for b in bound]
    bound_tls = getattr(server, "bound_tls", None)
    if bound_tls:
        out["tls_listeners"] = [f"{b[-2]}:{b[-1]}" for b in bound_tls]
    by_state = getattr(server, "peers_by_state", None)
    if callable(by_state):
        out["peers_by_state"] = dict(by_state())
    else:
        peers = getattr(server, "peers", None)
        if isinstance(peers, dict):
            peers = list(peers.values())
        if peers is not None:
            states: Counter[str] = Counter()
            for peer in peers:
                state = getattr(peer, "state", "unknown")
                states[str(getattr(state, "value", state))] += 1
            out["peers_by_state"] = dict(states)
    return out
