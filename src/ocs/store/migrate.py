"""Versioned schema migrations: ``migrations/NNNN_name.sql``, applied in order, once each.

Each file runs in its own transaction under an advisory lock, so two processes starting at once
(the daemon and ``ocs db migrate``) never apply the same file twice. A file already applied whose
text has changed since is an error: migrations are append-only.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

log = logging.getLogger(__name__)

_LOCK_ID = 0x6F63735F6D6967  # "ocs_mig"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available_migrations() -> list[Migration]:
    found: list[Migration] = []
    for entry in resources.files("ocs.store").joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version: {versions}")
    return found


async def migrate(conn: asyncpg.Connection) -> list[Migration]:
    """Apply every pending migration; return those applied (empty when up to date)."""
    applied_now: list[Migration] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
        done = {r["version"]: r for r in rows}
        for migration in available_migrations():
            row = done.get(migration.version)
            if row is not None:
                if row["checksum"] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name} was changed after "
                        "it was applied; add a new migration instead"
                    )
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            log.info("applied migration version=%04d name=%s", migration.version, migration.name)
            applied_now.append(migration)
        newest_known = max((m.version for m in available_migrations()), default=0)
        newest_applied = max(done, default=0)
        if newest_applied > newest_known:
            raise MigrationError(
                f"the database is at schema version {newest_applied}, newer than this ocs "
                f"({newest_known}); upgrade ocs"
            )
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    return applied_now
