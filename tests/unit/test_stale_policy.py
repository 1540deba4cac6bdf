"""The database away and the account not cached: with ``on_stale = "accept"`` a new session
is admitted without figures, for the largest grant of its unit and never more."""

from __future__ import annotations

import pytest
from memory_store import MemoryStore

from ocs.charging.cache import AccountCache
from ocs.charging.pipeline import CachePolicy, Charging, SourceUnavailable
from ocs.charging.sessions import SessionBook
from ocs.core import GrantLimits
from ocs.core.identity import IdentityKind
from ocs.core.model import ServiceUnit


class AwayStore(MemoryStore):
    async def find_account(self, kind: IdentityKind, value: str) -> None:
        raise SourceUnavailable("the database is away")


LIMITS = GrantLimits(max_time_s=1800, max_volume_bytes=50_000_000, max_events=20)


@pytest.mark.parametrize(
    ("unit", "requested", "granted"),
    [
        (ServiceUnit.TIME, None, 1800),
        (ServiceUnit.VOLUME, None, 50_000_000),
        (ServiceUnit.EVENT, None, 20),  # was the volume cap: 50,000,000 events
        (ServiceUnit.EVENT, 5, 5),
        (ServiceUnit.TIME, 60, 60),
    ],
)
async def test_accept_when_stale_grants_at_most_the_units_largest_grant(
    unit: ServiceUnit, requested: int | None, granted: int
) -> None:
    store = AwayStore(accounts={}, identities={})
    charging = Charging(
        cache=AccountCache(),
        sessions=SessionBook(),
        source=store,
        sink=store,
        limits=LIMITS,
        policy=CachePolicy(on_stale="accept"),
    )
    decision = await charging.admit(
        IdentityKind.USER_NAME, "not-cached", unit=unit, requested=requested
    )
    assert decision.admitted
    assert (decision.unit, decision.granted_units) == (unit, granted)
    assert charging.stats.stale_policy_applied == 1
