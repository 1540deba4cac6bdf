"""``ocs status``: fetch a running daemon's ``/status`` over HTTP and print it for people."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from ocs.config import Config, split_host_port

TIMEOUT_S = 5.0


class StatusUnavailable(RuntimeError):
    """Nothing answers at the status address; the message says where we looked."""


def status_url(config: Config) -> str:
    """``http://host:port/status`` from ``metrics.listen`` (a wildcard address asks loopback)."""
    if not config.metrics.enabled:
        raise StatusUnavailable(
            f"metrics.enabled = false in {config.source}: the daemon serves no status endpoint"
        )
    host, port = split_host_port(config.metrics.listen)
    if port == 0:
        raise StatusUnavailable(
            f"metrics.listen = {config.metrics.listen!r} in {config.source} picks a free port at "
            "start: give the port with --url http://HOST:PORT"
        )
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/status"


def fetch_status(url: str, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    if not url.rstrip("/").endswith("/status"):
        url = url.rstrip("/") + "/status"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            data: dict[str, Any] = json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        raise StatusUnavailable(f"{url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StatusUnavailable(f"no ocsd answers at {url} ({reason}); is it running?") from None
    except ValueError:
        raise StatusUnavailable(f"{url} did not answer with JSON: is that an ocsd?") from None
    return data


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _bytes(value: float | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return "-"  # unreachable


def _states(states: dict[str, int] | None) -> str:
    if not states:
        return "none"
    return ", ".join(f"{count} {state}" for state, count in sorted(states.items()))


def format_status(data: dict[str, Any]) -> str:
    """A readable summary: one ``name  value`` line each, sections in operational order; a
    supervisor's (``daemon.workers`` > 1) lists every worker in turn."""
    workers = data.get("workers")
    if isinstance(workers, list):
        blocks = [f"supervisor pid {data.get('supervisor_pid', '?')}, {len(workers)} workers"]
        for worker in workers:
            title = f"--- worker {worker.get('worker', '?')} (pid {worker.get('pid', '?')})"
            if "error" in worker:
                blocks.append(f"{title}: {worker['error']}")
            else:
                blocks.append(f"{title}\n{_format_one(worker)}")
        return "\n".join(blocks)
    return _format_one(data)


def _format_one(data: dict[str, Any]) -> str:
    ready = data.get("ready") or {}
    cache = data.get("cache") or {}
    loader = data.get("loader") or {}
    db = data.get("database") or {}
    sessions = data.get("sessions") or {}
    last = loader.get("last_success_unix")
    last_text = (
        datetime.fromtimestamp(last, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        + f" ({_age(loader.get('last_success_age_s'))} ago)"
        if last
        else "never"
    )
    rows: list[tuple[str, str]] = [
        ("version", f"{data.get('version', '?')} (pid {data.get('pid', '?')})"),
        ("uptime", _age(data.get("uptime_s"))),
        ("config", str(data.get("config", "-"))),
        ("ready", f"{'yes' if ready.get('ready') else 'NO'}: {ready.get('reason', '-')}"),
        ("database", "up" if db.get("up") else "DOWN"),
        (
            "cache",
            f"{cache.get('entries', '-')} accounts, {cache.get('identities', '-')} identities, "
            f"oldest {_age(cache.get('oldest_age_s'))} "
            f"(max stale {_age(cache.get('max_stale_s'))})",
        ),
        ("loader last success", last_text),
        ("last full load", _age(loader.get("last_full_load_s"))),
        ("spool", _bytes((data.get("spool") or {}).get("bytes"))),
        (
            "sessions",
            f"{sessions.get('active', '-')} active, {sessions.get('reservations', '-')} "
            "reservations",
        ),
    ]
    below = data.get("accounts_below_warning_threshold")
    if below is not None:
        rows.append(("below warning threshold", f"{below:.0f} accounts"))
    redis = data.get("redis")
    if redis:
        rows.append(
            ("redis", f"{'up' if redis.get('up') else 'DOWN'}, {redis.get('instances')} others")
        )
    radius = data.get("radius")
    if radius:
        listeners = ", ".join(f"{x['kind']} {x['address']}" for x in radius.get("listeners", []))
        rows.append(("radius", f"{listeners or 'not listening'}; {radius.get('clients')} clients"))
    diameter = data.get("diameter")
    if diameter is not None:
        listening = ", ".join(diameter.get("listeners") or []) or "-"
        rows.append(("diameter", f"{listening}; peers: {_states(diameter.get('peers_by_state'))}"))
    reload = data.get("reload")
    if reload:
        when = datetime.fromtimestamp(reload["at"], UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        rows.append(("last reload", f"{reload.get('result')} at {when}"))
    return _aligned(rows)


def _aligned(rows: Sequence[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
