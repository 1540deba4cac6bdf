"""The write-behind queue's bound: starts and holds past it are dropped and counted; the end of
a session whose generation the store has is never dropped (it would stay open there, holding
credit)."""

from __future__ import annotations

from memory_store import MemoryStore

from ocs.charging.cache import AccountCache
from ocs.charging.pipeline import CachePolicy, Charging, SessionId
from ocs.charging.sessions import SessionBook
from ocs.core import AccountSnapshot, GrantLimits, Tariff, parse_amount
from ocs.core.model import ServiceUnit


def account(account_id: int) -> AccountSnapshot:
    return AccountSnapshot(
        account_id=account_id,
        name=f"a{account_id}",
        balance=parse_amount("100"),
        tariff=Tariff(price_per_minute=60_000),
    )


def charging_with_room_for(entries: int) -> tuple[Charging, MemoryStore]:
    accounts = {i: account(i) for i in (1, 2, 3, 4)}
    store = MemoryStore(accounts=dict(accounts), identities={})
    charging = Charging(
        cache=AccountCache(),
        sessions=SessionBook(),
        source=store,
        sink=store,
        limits=GrantLimits(),
        policy=CachePolicy(),
    )
    charging.behind_max = entries
    return charging, store


def ref(n: int) -> SessionId:
    return SessionId("diameter", "pcef.test", f"pcef.test;{n}")


async def test_past_the_bound_starts_are_dropped_but_ends_of_stored_sessions_are_not() -> None:
    charging, store = charging_with_room_for(2)
    for n in (1, 2):
        charging.start(ref(n), account(n), unit=ServiceUnit.TIME, grant_s=60)
    assert charging.behind_depth == 2
    dropped, _ = charging.start(ref(3), account(3), unit=ServiceUnit.TIME, grant_s=60)
    assert (charging.behind_depth, charging.stats.behind_failed) == (2, 1)  # its start dropped

    stored, start = charging.start(
        ref(4), account(4), unit=ServiceUnit.TIME, grant_s=60, durable=True
    )
    await charging.record_start(stored, start)
    assert store.generations[("diameter", "pcef.test", "pcef.test;4")][-1].is_open
    charging.end_unreported(stored, request_number=1)
    assert (charging.behind_depth, charging.stats.behind_failed) == (3, 1)  # kept past the bound

    charging.end_unreported(dropped, request_number=1)  # nothing of it was written: nothing to do
    assert (charging.behind_depth, charging.stats.behind_failed) == (3, 1)

    assert await charging.flush_behind() == 3
    [generation] = store.generations[("diameter", "pcef.test", "pcef.test;4")]
    assert not generation.is_open and generation.closed_by_final and generation.hold is None
    assert ("diameter", "pcef.test", "pcef.test;3") not in store.generations
