"""The hot path's constructors (``ocs.core.trusted``) build what the dataclass would."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from datetime import UTC, date, datetime
from pathlib import Path

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
from ocs.core.trusted import assigning_init, trusted_replacer
from ocs.diameter.credit_control import MsccAnswer, ServiceUnits

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


# --- Own constructors of compiled dataclasses (``assigning_init``) ----------------------------

SOURCES = Path(__file__).resolve().parents[2] / "src" / "ocs"


def _own_init_classes() -> list[tuple[str, ast.Module, ast.ClassDef]]:
    """Every dataclass declared ``init=False`` in ``src/ocs``, with its module's tree."""
    found = []
    for path in sorted(SOURCES.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and any(
                isinstance(d, ast.Call)
                and ast.unparse(d.func) in {"dataclass", "dataclasses.dataclass"}
                and any(k.arg == "init" and ast.unparse(k.value) == "False" for k in d.keywords)
                for d in node.decorator_list
            ):
                found.append((str(path.relative_to(SOURCES)), tree, node))
    return found


OWN_INIT = _own_init_classes()


def test_the_compiled_hot_classes_have_their_own_constructor() -> None:
    names = {node.name for _path, _tree, node in OWN_INIT}
    assert {"CreditControlRequest", "ServiceUnits", "Mscc", "Generation", "Step"} <= names


@pytest.mark.parametrize(
    ("path", "tree", "node"), OWN_INIT, ids=[node.name for _p, _t, node in OWN_INIT]
)
def test_an_own_constructor_takes_and_sets_every_field_as_the_dataclass_would(
    path: str, tree: ast.Module, node: ast.ClassDef
) -> None:
    fields = [
        s
        for s in node.body
        if isinstance(s, ast.AnnAssign)
        and isinstance(s.target, ast.Name)
        and not ast.unparse(s.annotation).startswith("ClassVar")
    ]
    methods = {s.name: s for s in node.body if isinstance(s, ast.FunctionDef)}
    init = methods["__init__"]
    # Keywords only, in field order, with the field's annotation and default.
    assert [a.arg for a in init.args.args] == ["self"]
    assert init.args.vararg is None and init.args.kwarg is None
    assert [a.arg for a in init.args.kwonlyargs] == [ast.unparse(f.target) for f in fields]
    for arg, default, field in zip(
        init.args.kwonlyargs, init.args.kw_defaults, fields, strict=True
    ):
        assert arg.annotation is not None
        assert ast.unparse(arg.annotation) == ast.unparse(field.annotation), arg.arg
        given = ast.unparse(default) if default is not None else None
        declared = ast.unparse(field.value) if field.value is not None else None
        assert given == declared, arg.arg
    # Its body sets each field to its parameter, in order, then validates as __post_init__ did.
    expected = [f"self.{a.arg} = {a.arg}" for a in init.args.kwonlyargs]
    if "__post_init__" in methods:
        expected.append("self.__post_init__()")
    assert [ast.unparse(s) for s in init.body] == expected
    # The next statement of the module makes it work interpreted.
    after = tree.body[tree.body.index(node) + 1]
    assert ast.unparse(after) == f"assigning_init({node.name})", path


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, init=False)
class _Pair:
    left: int
    right: tuple[int, ...] = ()

    def __init__(self, *, left: int, right: tuple[int, ...] = ()) -> None:
        self.left = left  # type: ignore[misc]
        self.right = right  # type: ignore[misc]
        self.__post_init__()

    def __post_init__(self) -> None:
        if self.left < 0:
            raise ValueError("left must not be negative")


assigning_init(_Pair)


def test_an_own_constructor_runs_interpreted_and_the_instance_stays_frozen() -> None:
    pair = _Pair(left=1)
    assert (pair.left, pair.right) == (1, ())
    assert pair == _Pair(left=1, right=()) and hash(pair) == hash(_Pair(left=1))
    assert dataclasses.replace(pair, right=(2,)) == _Pair(left=1, right=(2,))
    assert repr(pair) == "_Pair(left=1, right=())"
    with pytest.raises(dataclasses.FrozenInstanceError):
        pair.left = 2  # type: ignore[misc]
    with pytest.raises(ValueError, match="negative"):
        _Pair(left=-1)  # __post_init__ sees the fields set
    with pytest.raises(TypeError):
        _Pair(1)  # type: ignore[misc]  # keywords only, as the dataclass's
    assert inspect.signature(_Pair).parameters.keys() == {"left", "right"}


def test_compiled_hot_classes_validate_and_stay_frozen_either_way() -> None:
    units = ServiceUnits(time_s=60)
    assert units == ServiceUnits(time_s=60, total_octets=None) and units.is_empty is False
    with pytest.raises(dataclasses.FrozenInstanceError):
        units.time_s = 1  # type: ignore[misc]
    with pytest.raises(ValueError, match="time_s"):
        ServiceUnits(time_s=-1)
    with pytest.raises(ValueError, match="result_code"):
        MsccAnswer(result_code=2**32)
    step = Step(duplicate=True)
    assert (step.generation, step.created, step.superseded, step.line) == (None, False, None, None)
    assert dataclasses.replace(GENERATION, charged=1).charged == 1
    assert dataclasses.replace(GENERATION, charged=1).hold == GENERATION.hold


# Every field away from its default: a field ``evolve`` dropped would come back as the default.
FULL_GENERATION = dataclasses.replace(
    GENERATION,
    start_key="start",
    start_wire_key="wire",
    closed_at=AT,
    close_reason="stop",
    closed_by_final=True,
    final_number=4,
    assumed_seconds=12,
)


def test_full_generation_sets_every_field_away_from_its_default() -> None:
    for spec in dataclasses.fields(Generation):
        value = getattr(FULL_GENERATION, spec.name)
        assert spec.default is dataclasses.MISSING or value != spec.default, spec.name


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"ref": 8},
        {"ref": None, "hold": None, "closed_at": None, "final_number": None},
        {"usage": Usage(seconds=90), "charged": 90_000, "assumed_seconds": 0},
        {"closed_at": AT, "close_reason": "superseded", "closed_by_final": False},
        {"start_key": None, "start_wire_key": None, "start_ref": None},
        {"generation": 3, "account_id": 6, "started_at": AT, "tariff": Tariff()},
        {f.name: getattr(GENERATION, f.name) for f in dataclasses.fields(Generation)},
    ],
)
def test_generation_evolve_matches_dataclasses_replace(changes: dict[str, object]) -> None:
    made = FULL_GENERATION.evolve(**changes)  # type: ignore[arg-type]
    assert made == dataclasses.replace(FULL_GENERATION, **changes)  # type: ignore[arg-type]
    assert type(made) is Generation and made is not FULL_GENERATION
    assert FULL_GENERATION.ref == 7 and FULL_GENERATION.hold is not None  # untouched


def test_generation_evolve_refuses_an_unknown_field() -> None:
    with pytest.raises(TypeError):
        FULL_GENERATION.evolve(colour="red")  # type: ignore[call-arg]
