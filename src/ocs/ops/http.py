"""The operations endpoint on ``metrics.listen``: an HTTP/1.1 server on the daemon's own loop.

Rules of this file:
- It runs on the event loop that answers requests, so a stuck loop fails ``/healthz`` (a thread
  server would keep answering and hide it).
- One request per connection (``Connection: close``), GET and HEAD only, request head at most
  ``MAX_HEAD_BYTES`` read within ``READ_TIMEOUT_S``; connections at most ``MAX_CONNECTIONS``.
- Routes: ``/metrics`` (Prometheus text or OpenMetrics, as the scraper asks), ``/healthz``
  (live), ``/readyz`` (200 or 503 with a JSON reason), ``/status`` (JSON for ``ocs status``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

log = logging.getLogger("ocs.ops")

READ_TIMEOUT_S = 5.0
WRITE_TIMEOUT_S = 10.0
MAX_HEAD_BYTES = 8192
MAX_CONNECTIONS = 64

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
_REASONS |= {500: "Internal Server Error", 503: "Service Unavailable"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Readiness:
    """Whether the daemon should get traffic, and why (the JSON body of /readyz)."""

    ready: bool
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    content_type: str
    body: bytes


def _json(status: int, data: Any) -> Response:
    return Response(status, "application/json", (json.dumps(data, default=str) + "\n").encode())


class OpsEndpoint:
    """Serves the registry and the daemon's health; ``readiness`` and ``status`` are called per
    request on the loop and must not block."""

    def __init__(
        self,
        *,
        registry: CollectorRegistry,
        readiness: Callable[[], Readiness],
        status: Callable[[], dict[str, Any]],
    ) -> None:
        self.registry = registry
        self.readiness = readiness
        self.status = status
        self._server: asyncio.Server | None = None
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0: any free port); returns the bound port. Raises OSError."""
        self._server = await asyncio.start_server(self._connection, host, port, backlog=128)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self, timeout_s: float) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), timeout_s)
        self._server = None

    # --- one connection --------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if self._slots.locked() or task is None:
            writer.close()  # over the cap: no answer rather than an unbounded number of tasks
            return
        self._connections.add(task)
        try:
            async with self._slots:
                await self._serve_one(reader, writer)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a client that went away or never finished its request
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(OSError, TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
        if len(head) > MAX_HEAD_BYTES:
            response = Response(400, "text/plain", b"request head too large\n")
            method = "GET"
        else:
            method, response = self._route(head)
        writer.write(_encode(response, include_body=method != "HEAD"))
        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)

    def _route(self, head: bytes) -> tuple[str, Response]:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return "GET", Response(400, "text/plain", b"bad request line\n")
        method, target = parts[0], parts[1]
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if method not in ("GET", "HEAD"):
            return method, Response(405, "text/plain", b"only GET and HEAD\n")
        path = target.split("?", 1)[0]
        try:
            return method, self._answer(path, headers)
        except Exception:  # the one boundary: a bug in a report must not kill the endpoint
            log.exception("ops endpoint: %s failed", path)
            return method, Response(500, "text/plain", b"internal error\n")

    def _answer(self, path: str, headers: dict[str, str]) -> Response:
        if path == "/metrics":
            encoder, content_type = choose_encoder(headers.get("accept", ""))
            return Response(200, content_type, encoder(self.registry))
        if path == "/healthz":
            return Response(200, "text/plain", b"ok\n")
        if path == "/readyz":
            readiness = self.readiness()
            return _json(200 if readiness.ready else 503, readiness.detail)
        if path == "/status":
            return _json(200, self.status())
        return Response(404, "text/plain", b"not found: try /metrics, /healthz, /readyz, /status\n")


def _encode(response: Response, *, include_body: bool) -> bytes:
    head = (
        f"HTTP/1.1 {response.status} {_REASONS.get(response.status, '')}\r\n"
        f"Content-Type: {response.content_type}\r\n"
        f"Content-Length: {len(response.body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    return head + response.body if include_body else head
