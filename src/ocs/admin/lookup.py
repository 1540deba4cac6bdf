"""Names to ids, and the database's clock: what every administrative action starts with.

Rules of this file:
- A name that matches nothing is ``NotFound`` with a message saying how to create it.
- ``None`` for an operator is the business owner acting directly (no operator's allowance).
"""

from __future__ import annotations

from datetime import datetime, tzinfo

from ocs.store.accounts import zone
from ocs.store.errors import Executor, NotFound


async def account_id(db: Executor, name: str) -> int:
    found: int | None = await db.fetchval("SELECT id FROM accounts WHERE name = $1", name)
    if found is None:
        raise NotFound(f"no account named {name!r}")
    return found


async def operator_id(db: Executor, name: str | None) -> int | None:
    """The id of the operator called ``name``; ``None`` for ``None`` (the owner acting directly)."""
    if name is None:
        return None
    found: int | None = await db.fetchval("SELECT id FROM operators WHERE name = $1", name)
    if found is None:
        raise NotFound(f"no operator named {name!r} (create it with 'ocs operator create {name}')")
    return found


async def account_class_id(db: Executor, name: str) -> int:
    found: int | None = await db.fetchval("SELECT id FROM account_classes WHERE name = $1", name)
    if found is None:
        raise NotFound(
            f"no account class named {name!r} (create it with 'ocs account-class set {name}')"
        )
    return found


async def tariff_id(db: Executor, name: str) -> int:
    found: int | None = await db.fetchval("SELECT id FROM tariffs WHERE name = $1", name)
    if found is None:
        raise NotFound(f"no tariff named {name!r} (create it with 'ocs tariff set {name} ...')")
    return found


async def rate_plan_id(db: Executor, name: str) -> int:
    found: int | None = await db.fetchval("SELECT id FROM rate_plans WHERE name = $1", name)
    if found is None:
        raise NotFound(
            f"no rate plan named {name!r} (create it with 'ocs rate-plan create {name} "
            "--currency CODE')"
        )
    return found


async def account_time_zone(db: Executor, name: str) -> tzinfo:
    """The account's time zone (dates people type for it are read there)."""
    found: str | None = await db.fetchval("SELECT time_zone FROM accounts WHERE name = $1", name)
    if found is None:
        raise NotFound(f"no account named {name!r}")
    return zone(found)


async def database_now(db: Executor) -> datetime:
    now: datetime = await db.fetchval("SELECT now()")
    return now


async def ping(db: Executor, timeout_s: float) -> None:
    """Raises if the database does not answer a trivial query within ``timeout_s``."""
    await db.fetchval("SELECT 1", timeout=timeout_s)
