"""The hot path's constructors (``ocs.core.trusted``) build what the dataclass would."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime

import pytest

from ocs.core.ledger import Generation, Hold, Step
from ocs.core.model import (
    AccountSnapshot,
    AccountStatus,
    AccountTerms,
    LimitBasis,
    Tariff,
    Usage,
)
from ocs.core.trusted import trusted_builder, trusted_replacer

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
GENERATION = Generation(
    ref=7,
    generation=2,
    account_id=5,
    start_ref="s-1",
    started_at=AT,
    tariff=Tariff(price_per_minute=60_000),
    usage=Usage(seconds=30),
    charged=30_000,
    hold=Hold(amount=1_000, until=AT),
)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"ref": 8},
        {"usage": Usage(seconds=90), "charged": 90_000, "hold": None},
        {"closed_at": AT, "close_reason": "stop", "closed_by_final": True, "final_number": 3},
        {field.name: getattr(GENERATION, field.name) for field in dataclasses.fields(Generation)},
    ],
)
def test_replacer_matches_dataclasses_replace(changes: dict[str, object]) -> None:
    evolve = trusted_replacer(Generation)
    made = evolve(GENERATION, **changes)
    assert made == dataclasses.replace(GENERATION, **changes)
    assert type(made) is Generation
    assert made is not GENERATION
    assert GENERATION.ref == 7  # the original is untouched


def test_replacer_sets_a_field_to_none() -> None:
    # None is a value to set, not "keep": only the replacer's own sentinel keeps a field.
    assert trusted_replacer(Generation)(GENERATION, hold=None).hold is None


def test_replacer_refuses_an_unknown_field() -> None:
    with pytest.raises(TypeError):
        trusted_replacer(Generation)(GENERATION, colour="red")


def test_replacer_copies_are_frozen() -> None:
    made = trusted_replacer(Step)(Step(duplicate=False), created=True)
    assert made == Step(duplicate=False, created=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.created = False  # type: ignore[misc]


def test_builder_fills_defaults_and_matches_init() -> None:
    build = trusted_builder(Step, "duplicate", "created")
    assert build(False, True) == Step(duplicate=False, created=True)
    full = trusted_builder(Usage)
    assert full(1, 2, 3) == Usage(seconds=1, octets=2, events=3)


def test_builder_refuses_unknown_or_missing_fields() -> None:
    with pytest.raises(TypeError, match="no field"):
        trusted_builder(Step, "colour")
    with pytest.raises(TypeError, match="no default"):
        trusted_builder(Generation, "ref")


# --- AccountSnapshot.replace of what charging changes (the sidecar, per charged record) ------

TERM_VALUES: dict[str, object] = {
    "status": AccountStatus.ACTIVE,
    "credit_limit": 5_000_000,
    "limit_basis": LimitBasis.UNBILLED,
    "unbilled": 1_200_000,
    "unbilled_period": date(2026, 3, 1),
    "max_sessions": 2,
    "tariff": Tariff(price_per_minute=60_000),
    "rate_plan_id": 4,
}
SNAPSHOT = AccountSnapshot(account_id=9, name="acme", balance=3_000_000, **TERM_VALUES)  # type: ignore[arg-type]
TERMS = SNAPSHOT.terms


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"balance": 2_400_000},
        {"balance": 2_400_000, "unbilled": 1_800_000},
        {"balance": -5, "unbilled": 0, "unbilled_period": None},
        {"unbilled_period": date(2026, 4, 1)},
        {"balance": 3_000_000, "unbilled": 1_200_000, "unbilled_period": date(2026, 3, 1)},
    ],
)
def test_charging_replace_matches_the_validated_constructor(changes: dict[str, object]) -> None:
    made = SNAPSHOT.replace(**changes)
    values = {"account_id": 9, "name": "acme", "balance": 3_000_000, **TERM_VALUES, **changes}
    assert made == AccountSnapshot(**values)  # type: ignore[arg-type]
    assert type(made.terms) is AccountTerms
    assert SNAPSHOT.balance == 3_000_000 and SNAPSHOT.terms.unbilled == 1_200_000  # untouched


def test_charging_replace_shares_the_terms_unless_the_unbilled_figures_change() -> None:
    # A million cached accounts share a few terms objects: a balance change must not copy them.
    assert SNAPSHOT.replace(balance=1).terms is TERMS
    assert SNAPSHOT.replace(balance=1, unbilled=1_200_000).terms is TERMS
    assert SNAPSHOT.replace(unbilled=7).terms is not TERMS
    with pytest.raises(dataclasses.FrozenInstanceError):
        SNAPSHOT.replace(unbilled=7).terms.unbilled = 8  # type: ignore[misc]


@pytest.mark.parametrize(
    "changes",
    [
        {"balance": "12"},
        {"balance": True},
        {"balance": 1.5},
        {"unbilled": 2.5},
        {"balance": 1, "unbilled": "3"},
        {"colour": "red"},
        {"balance": 1, "credit_limit": 1.5},
    ],
)
def test_replace_still_refuses_what_the_constructor_refuses(changes: dict[str, object]) -> None:
    with pytest.raises(TypeError):
        SNAPSHOT.replace(**changes)


def test_replace_of_other_terms_still_validates_them() -> None:
    assert SNAPSHOT.replace(balance=1, credit_limit=7).terms.credit_limit == 7
    assert SNAPSHOT.replace(max_sessions=None).terms.max_sessions is None
