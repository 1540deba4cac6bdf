"""A token bucket per API token: ``rate_per_s`` on average, ``burst`` at once.

Rules of this file:
- Pure bookkeeping; the clock is passed in (``now``) or read from ``time.monotonic``.
- Buckets of tokens unused for a minute are forgotten, so memory is bounded by the tokens in use.
"""

from __future__ import annotations

import time


class RateLimiter:
    def __init__(self, *, rate_per_s: float, burst: int) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._buckets: dict[int, tuple[float, float]] = {}  # token id -> (level, at)
        self._swept_at = 0.0

    def take(self, key: int, now: float | None = None) -> float:
        """Take one request from ``key``'s bucket: 0 if allowed, else the seconds until one is."""
        at = time.monotonic() if now is None else now
        level, then = self._buckets.get(key, (float(self.burst), at))
        level = min(float(self.burst), level + (at - then) * self.rate_per_s)
        if level < 1.0:
            self._buckets[key] = (level, at)
            return (1.0 - level) / self.rate_per_s
        self._buckets[key] = (level - 1.0, at)
        if at - self._swept_at > 60:
            self._swept_at = at
            idle = [k for k, (_, seen) in self._buckets.items() if at - seen > 60]
            for k in idle:
                del self._buckets[k]
        return 0.0
