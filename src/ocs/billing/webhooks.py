"""Deliver outbox rows (warning thresholds and other events) to a webhook URL.

Rules of this file:
- A row is claimed with ``FOR UPDATE SKIP LOCKED`` and marked delivered (or its next attempt
  scheduled) in the same transaction as the HTTP request, so several deliverers, in one daemon or
  many, never deliver the same row twice as the outbox sees it. If a deliverer dies after the
  receiver answered but before the commit, the row is sent again: receivers dedupe on the
  ``Idempotency-Key`` header (``ocs-outbox-<id>``).
- Failures (connection refused, timeout, a non-2xx status) are retried with exponential backoff,
  ``backoff_initial_s * 2**(attempts-1)`` capped at ``backoff_max_s``; with ``max_attempts`` set,
  a row that failed that often is abandoned (``abandoned_at``) and logged.
- Every network and database wait is bounded (``timeout_s``, ``db_timeout_s``).
- HTTP/1.1 POST over asyncio streams (stdlib; ``https`` with the system's CA store). With a
  ``secret``, the body is signed: ``X-OCS-Signature: sha256=<hex HMAC-SHA256 of the body>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import asyncpg

log = logging.getLogger(__name__)

OUTBOX_CHANNEL = "ocs_outbox"
_MAX_STATUS_LINE = 8192


class DeliveryFailed(Exception):
    """One attempt did not deliver; the message says why (kept in ``outbox.last_error``)."""


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    scheme: str
    host: str
    port: int
    path: str  # with the query string
    host_header: str

    @classmethod
    def parse(cls, url: str) -> WebhookTarget:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"webhook URL {url!r}: expected http://host[:port]/path or https://")
        if parts.username or parts.password:
            raise ValueError("webhook URL: put credentials in a secret, not in the URL")
        default = 443 if parts.scheme == "https" else 80
        port = parts.port or default
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        host_header = shown if port == default else f"{shown}:{port}"
        path = parts.path or "/"
        if parts.query:
            path += f"?{parts.query}"
        return cls(parts.scheme, host, port, path, host_header)


@dataclass(slots=True)
class DeliveryStats:
    delivered: int = 0
    failed_attempts: int = 0
    abandoned: int = 0


def backoff_s(attempts: int, initial_s: float, max_s: float) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt (1, 2, ...)."""
    exponent = min(max(attempts - 1, 0), 62)
    return float(min(initial_s * (2**exponent), max_s))


def webhook_body(
    outbox_id: int, topic: str, account_id: int | None, created_at: datetime, payload: Any
) -> bytes:
    document = {
        "id": outbox_id,
        "topic": topic,
        "account_id": account_id,
        "created_at": created_at.isoformat(),
        "data": payload,
    }
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


class WebhookDeliverer:
    """Delivers outbox rows to ``url``. ``run_once()`` delivers what is due now and returns how
    many were delivered; ``run_forever(stop)`` repeats it, waking on ``NOTIFY ocs_outbox``, on
    the next retry's due time, or every ``poll_interval_s``."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        url: str,
        *,
        timeout_s: float = 10.0,
        db_timeout_s: float = 10.0,
        poll_interval_s: float = 5.0,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 300.0,
        max_attempts: int | None = None,
        batch_size: int = 100,
        secret: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if timeout_s <= 0 or db_timeout_s <= 0 or poll_interval_s <= 0:
            raise ValueError("timeouts and the poll interval must be positive")
        if backoff_initial_s <= 0 or backoff_max_s < backoff_initial_s:
            raise ValueError("backoff: need 0 < backoff_initial_s <= backoff_max_s")
        if max_attempts is not None and max_attempts < 1:
            raise ValueError("max_attempts must be at least 1 (or None: retry for ever)")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.pool = pool
        self.target = WebhookTarget.parse(url)
        self.timeout_s = timeout_s
        self.db_timeout_s = db_timeout_s
        self.poll_interval_s = poll_interval_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.max_attempts = max_attempts
        self.batch_size = batch_size
        self._secret = secret.encode() if secret else None
        self._ssl: ssl.SSLContext | None = None
        if self.target.scheme == "https":
            self._ssl = ssl_context or ssl.create_default_context()
        self.stats = DeliveryStats()

    # --- one pass ---------------------------------------------------------------------------

    async def run_once(self) -> int:
        """Deliver up to ``batch_size`` due rows, one transaction each; returns how many were
        delivered. Stops early when nothing more is due."""
        delivered = 0
        for _ in range(self.batch_size):
            outcome = await self._deliver_next()
            if outcome is None:
                break
            delivered += outcome
        return delivered

    async def _deliver_next(self) -> int | None:
        """1 delivered, 0 failed (retry scheduled or abandoned), None nothing due."""
        async with self.pool.acquire(timeout=self.db_timeout_s) as conn, conn.transaction():
            row = await conn.fetchrow(
                """SELECT id, topic, account_id, payload::text AS payload, attempts, created_at
                   FROM outbox
                   WHERE delivered_at IS NULL AND abandoned_at IS NULL
                     AND next_attempt_at <= now()
                   ORDER BY next_attempt_at, id
                   LIMIT 1
                   FOR UPDATE SKIP LOCKED""",
                timeout=self.db_timeout_s,
            )
            if row is None:
                return None
            body = webhook_body(
                row["id"],
                row["topic"],
                row["account_id"],
                row["created_at"],
                json.loads(row["payload"]),
            )
            attempts = row["attempts"] + 1
            try:
                status = await self.post(body, idempotency_key=f"ocs-outbox-{row['id']}")
            except DeliveryFailed as exc:
                return await self._failed(conn, row["id"], attempts, str(exc))
            await conn.execute(
                "UPDATE outbox SET delivered_at = now(), attempts = $2, last_error = NULL "
                "WHERE id = $1",
                row["id"],
                attempts,
                timeout=self.db_timeout_s,
            )
            self.stats.delivered += 1
            log.debug("webhook delivered outbox_id=%d status=%d", row["id"], status)
            return 1

    async def _failed(
        self, conn: asyncpg.Connection, outbox_id: int, attempts: int, why: str
    ) -> int:
        self.stats.failed_attempts += 1
        if self.max_attempts is not None and attempts >= self.max_attempts:
            await conn.execute(
                "UPDATE outbox SET attempts = $2, last_error = $3, abandoned_at = now() "
                "WHERE id = $1",
                outbox_id,
                attempts,
                why,
                timeout=self.db_timeout_s,
            )
            self.stats.abandoned += 1
            log.error(
                "webhook abandoned outbox_id=%d attempts=%d error=%s", outbox_id, attempts, why
            )
            return 0
        delay = backoff_s(attempts, self.backoff_initial_s, self.backoff_max_s)
        await conn.execute(
            "UPDATE outbox SET attempts = $2, last_error = $3, "
            "next_attempt_at = now() + make_interval(secs => $4) WHERE id = $1",
            outbox_id,
            attempts,
            why,
            delay,
            timeout=self.db_timeout_s,
        )
        log.warning(
            "webhook attempt failed outbox_id=%d attempts=%d retry_in_s=%.1f error=%s",
            outbox_id,
            attempts,
            delay,
            why,
        )
        return 0

    # --- HTTP -------------------------------------------------------------------------------

    async def post(self, body: bytes, *, idempotency_key: str) -> int:
        """POST ``body`` as JSON; returns the 2xx status, else raises ``DeliveryFailed``."""
        target = self.target
        headers = [
            f"POST {target.path} HTTP/1.1",
            f"Host: {target.host_header}",
            "User-Agent: ocs-webhook",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            f"Idempotency-Key: {idempotency_key}",
            "Connection: close",
        ]
        if self._secret is not None:
            digest = hmac.new(self._secret, body, hashlib.sha256).hexdigest()
            headers.append(f"X-OCS-Signature: sha256={digest}")
        request = ("\r\n".join(headers) + "\r\n\r\n").encode("ascii") + body
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                reader, writer = await asyncio.open_connection(
                    target.host,
                    target.port,
                    ssl=self._ssl,
                    server_hostname=target.host if self._ssl else None,
                    limit=_MAX_STATUS_LINE,
                )
                writer.write(request)
                await writer.drain()
                status_line = await reader.readline()
        except TimeoutError:
            raise DeliveryFailed(f"no answer within {self.timeout_s} s") from None
        except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(OSError, TimeoutError):
                    await asyncio.wait_for(writer.wait_closed(), 1.0)
        status = _status_code(status_line)
        if not 200 <= status < 300:
            raise DeliveryFailed(f"HTTP status {status}")
        return status

    # --- for ever ---------------------------------------------------------------------------

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set. Database trouble is logged and retried after
        ``poll_interval_s``; it never ends the loop."""
        wake = asyncio.Event()
        async with self._listening(wake):
            while not stop.is_set():
                delivered = 0
                try:
                    delivered = await self.run_once()
                except (
                    asyncpg.PostgresError,
                    asyncpg.InterfaceError,
                    OSError,
                    TimeoutError,
                ) as exc:
                    log.warning("webhook delivery paused error=%s", exc)
                if delivered >= self.batch_size:
                    continue  # more may be due at once
                wait_s = await self._until_next_due()
                wake.clear()
                stopping = asyncio.ensure_future(stop.wait())
                woken = asyncio.ensure_future(wake.wait())
                try:
                    await asyncio.wait(
                        {stopping, woken}, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    for task in (stopping, woken):
                        task.cancel()
                    await asyncio.gather(stopping, woken, return_exceptions=True)

    async def _until_next_due(self) -> float:
        try:
            seconds = await self.pool.fetchval(
                """SELECT EXTRACT(EPOCH FROM min(next_attempt_at) - now())::float8
                   FROM outbox WHERE delivered_at IS NULL AND abandoned_at IS NULL""",
                timeout=self.db_timeout_s,
            )
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
            return self.poll_interval_s
        if seconds is None:
            return self.poll_interval_s
        return float(min(max(seconds, 0.0), self.poll_interval_s))

    @contextlib.asynccontextmanager
    async def _listening(self, wake: asyncio.Event) -> AsyncIterator[None]:
        """LISTEN for new outbox rows on a connection of the pool; without it, poll."""

        def heard(*_: object) -> None:
            wake.set()

        conn: asyncpg.Connection | None = None
        try:
            conn = await self.pool.acquire(timeout=self.db_timeout_s)
            await conn.add_listener(OUTBOX_CHANNEL, heard)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            log.warning("webhook deliverer cannot LISTEN, polling instead error=%s", exc)
            if conn is not None:
                await self.pool.release(conn)
                conn = None
        try:
            yield
        finally:
            if conn is not None:
                with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                    await conn.remove_listener(OUTBOX_CHANNEL, heard)
                await self.pool.release(conn)


def _status_code(status_line: bytes) -> int:
    parts = status_line.decode("latin-1").split(maxsplit=2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise DeliveryFailed(f"not an HTTP answer: {status_line[:80]!r}")
    return int(parts[1])
