"""The daemon's rate plans: what prices a new session, by the called number (issue 13).

Rules of this file:
- ``rate_for`` is the one call the pipeline makes at admission: dictionary probes and integer
  comparisons, never an await. Its answer (a ``RateMatch``) is fixed for the session: usage is
  charged at ``match.tariff`` whatever the deck says later (a price change mid-call charges the
  old price).
- An account without a rate plan is priced at its own tariff, as before rating by destination
  (the match is made once per tariff object and reused). An account whose plan prices no prefix
  of the number, or whose plan is not loaded, gets None: the pipeline refuses the session with
  ``RefusalReason.NO_RATE``.
- Plans are replaced whole (``put``), one plan at a time, by the store's feed on NOTIFY
  ``ocs_rate_plan_changed`` and by its poll; no account is reloaded for a deck change.
- The store implements ``RatePlanSource``; this module knows no SQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

from ocs.core.destinations import Rate, RateMatch, RatePlan
from ocs.core.model import AccountSnapshot, Tariff

_TARIFF_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class RatePlanSource(Protocol):
    async def load_plan(self, plan_id: int) -> RatePlan | None:
        """The plan as it is now, or None when it no longer exists."""
        ...

    async def plan_versions(self) -> dict[int, Any]:
        """Every plan's change stamp."""
        ...


class RatePlanCache:
    """Rate plans by id, with the change stamp each was loaded at."""

    def __init__(self) -> None:
        self._plans: dict[int, RatePlan] = {}
        self._versions: dict[int, Any] = {}
        self._tariff_matches: dict[int, RateMatch] = {}
        self.lookups = 0
        self.no_rate = 0
        self.missing_plan = 0

    def __len__(self) -> int:
        return len(self._plans)

    @property
    def prefix_count(self) -> int:
        return sum(plan.prefix_count for plan in self._plans.values())

    def plan(self, plan_id: int) -> RatePlan | None:
        return self._plans.get(plan_id)

    def plan_ids(self) -> list[int]:
        return list(self._plans)

    def version(self, plan_id: int) -> Any:
        return self._versions.get(plan_id)

    def put(self, plan: RatePlan, version: Any = None) -> None:
        if plan.plan_id is None:
            raise ValueError("a cached rate plan needs its id")
        self._plans[plan.plan_id] = plan
        self._versions[plan.plan_id] = version

    def remove(self, plan_id: int) -> None:
        self._plans.pop(plan_id, None)
        self._versions.pop(plan_id, None)

    def replace_all(self, plans: dict[int, tuple[RatePlan, Any]]) -> None:
        self._plans = {plan_id: plan for plan_id, (plan, _v) in plans.items()}
        self._versions = {plan_id: version for plan_id, (_p, version) in plans.items()}

    def tariff_match(self, tariff: Tariff) -> RateMatch:
        """The account's own tariff as a match (prefix ""), made once per tariff object."""
        cached = self._tariff_matches.get(id(tariff))
        if cached is not None and cached.tariff is tariff:
            return cached
        match = RateMatch(rate=Rate.from_tariff(tariff, _TARIFF_EPOCH), prefix="", tariff=tariff)
        if len(self._tariff_matches) > 4096:
            self._tariff_matches.clear()
        self._tariff_matches[id(tariff)] = match
        return match

    def rate_for(self, snapshot: AccountSnapshot, number: str, now: datetime) -> RateMatch | None:
        """What prices a new session of ``snapshot`` to ``number`` (E.164 digits, normalised;
        "" when the client named no destination) starting at ``now``; None: no rate."""
        terms = snapshot.terms
        plan_id = terms.rate_plan_id
        if plan_id is None:
            return self.tariff_match(terms.tariff)
        self.lookups += 1
        plan = self._plans.get(plan_id)
        if plan is None:
            self.missing_plan += 1
            self.no_rate += 1
            return None
        match = plan.lookup(number, now, terms.time_zone)
        if match is None:
            self.no_rate += 1
        return match
