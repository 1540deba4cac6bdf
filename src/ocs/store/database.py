"""Opening the database: a configured DSN, or the embedded server, plus a connection pool."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from ocs.config import DatabaseConfig
from ocs.store.embedded import EmbeddedDatabaseError, EmbeddedPostgres
from ocs.store.migrate import MigrationError, migrate

log = logging.getLogger(__name__)


class DatabaseUnavailable(RuntimeError):
    """PostgreSQL cannot be reached or used; the message says where and why."""


def redact_dsn(dsn: str) -> str:
    """The DSN without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", dsn)


@dataclass(slots=True)
class Database:
    pool: asyncpg.Pool
    dsn: str
    embedded: bool


async def _connect_pool(dsn: str, config: DatabaseConfig) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=config.pool_min_size,
            max_size=config.pool_max_size,
            timeout=config.connect_timeout_s,
            command_timeout=config.command_timeout_s,
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        detail = str(exc) or type(exc).__name__
        raise DatabaseUnavailable(
            f"cannot connect to PostgreSQL at {redact_dsn(dsn)}: {detail}"
        ) from exc
    assert pool is not None
    return pool


@asynccontextmanager
async def open_database(
    config: DatabaseConfig, *, apply_migrations: bool = True
) -> AsyncIterator[Database]:
    """Connect (starting the embedded server when no DSN is set), migrate, yield, close."""
    embedded: EmbeddedPostgres | None = None
    dsn = config.dsn
    if dsn is None:
        embedded = EmbeddedPostgres(config.embedded_dir)
        try:
            dsn = await asyncio.to_thread(embedded.start)
        except EmbeddedDatabaseError as exc:
            raise DatabaseUnavailable(str(exc)) from exc
    try:
        pool = await _connect_pool(dsn, config)
        try:
            if apply_migrations:
                async with pool.acquire() as conn:
                    try:
                        await migrate(conn)
                    except MigrationError as exc:
                        raise DatabaseUnavailable(f"schema migration failed: {exc}") from exc
            yield Database(pool=pool, dsn=dsn, embedded=embedded is not None)
        finally:
            try:
                await asyncio.wait_for(pool.close(), timeout=config.command_timeout_s)
            except TimeoutError:
                pool.terminate()
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
