"""``ocs api``: the account API under uvicorn, with its database pool, a request size limit and
the clean-up of old idempotency keys.

Rules of this file:
- The database is opened (and migrated) before the port opens; SIGTERM/SIGINT stop accepting,
  finish requests in flight, close the pool.
- A body larger than ``api.max_body_bytes`` is refused with 413 from its Content-Length, or as
  soon as a chunked body passes the limit; it is never read whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from fastapi import FastAPI

from ocs.admin import idempotency
from ocs.api.app import create_app
from ocs.api.problems import PROBLEM_MEDIA_TYPE, RULES
from ocs.config import Config, split_host_port
from ocs.store.database import DatabaseUnavailable, open_database

log = logging.getLogger("ocs.api")

Scope = dict[str, Any]
Message = dict[str, Any]


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``max_bytes``."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = self.max_bytes + 1
                if length > self.max_bytes:
                    await self._refuse(send)
                    return
        seen = 0
        started = refused = False

        async def limited_receive() -> Message:
            nonlocal seen, refused
            message: Message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes and not refused:
                    # Answer now; the application sees the client gone and its answer is dropped.
                    refused = True
                    if not started:
                        await self._refuse(send)
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except Exception:
            if not refused:
                raise

    async def _refuse(self, send: Any) -> None:
        status, title = RULES["body-too-large"]
        body = json.dumps(
            {
                "type": "/problems/body-too-large",
                "title": title,
                "status": status,
                "detail": f"the request body is larger than {self.max_bytes} bytes",
                "rule": "body-too-large",
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def build(config: Config) -> tuple[FastAPI, Any]:
    """The FastAPI app (its pool set by the lifespan) and the ASGI app to serve."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_database(config.database) as db:
            app.state.pool = db.pool
            cleaner = asyncio.create_task(_forget_keys(db.pool, config.api.idempotency_keep_s))
            log.info("api database ready")
            try:
                yield
            finally:
                cleaner.cancel()
                await asyncio.gather(cleaner, return_exceptions=True)
                app.state.pool = None

    app = create_app(config)
    app.router.lifespan_context = lifespan
    return app, BodyLimit(app, config.api.max_body_bytes)


async def _forget_keys(pool: asyncpg.Pool, keep_s: float) -> None:
    while True:
        try:
            async with pool.acquire() as conn:
                forgotten = await idempotency.forget_older_than(conn, keep_s)
            if forgotten:
                log.info("idempotency keys forgotten count=%d", forgotten)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("idempotency clean-up failed error=%s", exc)
        await asyncio.sleep(3600)


def _drop_colour(record: logging.LogRecord) -> bool:
    """uvicorn adds an ANSI-coloured copy of each message as an extra field: not in our logs."""
    record.__dict__.pop("color_message", None)
    return True


def openapi_document(config: Config) -> str:
    """The OpenAPI document as served at /openapi.json (docs/openapi.json), formatted."""
    return json.dumps(create_app(config).openapi(), indent=2, sort_keys=False) + "\n"


def serve(config: Config, *, listen: str | None = None) -> int:
    """Run the API until SIGTERM/SIGINT. Exit codes: 0 stopped, 1 did not start (the port is
    taken, the database unreachable: the log says which), 2 bad address."""
    import uvicorn  # noqa: PLC0415

    from ocs.logs import setup_logging  # noqa: PLC0415

    setup_logging(config.log.level, config.log.format)
    logging.getLogger("uvicorn.error").addFilter(_drop_colour)
    address = listen or config.api.listen
    from ocs.config import check_host_port  # noqa: PLC0415

    if check_host_port(address) is not None:
        log.error("api listen address %r is not host:port", address)
        return 2
    host, port = split_host_port(address)
    _, asgi = build(config)
    server = uvicorn.Server(
        uvicorn.Config(
            asgi,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=int(config.daemon.graceful_timeout_s) or 1,
            server_header=False,
        )
    )
    try:
        server.run()
    except DatabaseUnavailable as exc:
        log.error("api cannot start: %s", exc)
        return 1
    if not server.started:
        log.error("api did not start (see above)")
        return 1
    return 0
