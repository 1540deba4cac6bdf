"""The hot path's constructors (``ocs.core.trusted``) build what the dataclass would."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from ocs.core.ledger import Generation, Hold, Step
from ocs.core.model import Tariff, Usage
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
