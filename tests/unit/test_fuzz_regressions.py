"""The fuzzers' seeds and every input that once crashed a receive path, replayed through the
same in-process targets (fuzz/harness.py) without instrumentation: each must be handled with
no exception, no internal error counted and no hostile value reaching the store. The short
coverage-guided run itself is tests/unit/test_fuzz_short.py; ``make fuzz`` runs a million
inputs per path."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "fuzz"))

import harness  # noqa: E402

CASES = [
    (target, path)
    for target in ("radius", "diameter")
    for folder in ("corpus", "regressions")
    for path in sorted((ROOT / "fuzz" / folder / target).glob("*"))
    if path.is_file()
]


@pytest.fixture(scope="module")
def targets() -> dict[str, object]:
    return {name: make() for name, make in harness.TARGETS.items()}


def test_there_are_seeds_for_both_paths() -> None:
    found = {target for target, _ in CASES}
    assert found == {"radius", "diameter"}
    assert len(CASES) >= 40


@pytest.mark.parametrize(
    ("target", "path"), CASES, ids=[f"{t}/{p.parent.parent.name}/{p.name[:12]}" for t, p in CASES]
)
def test_replayed_without_a_crash(targets: dict[str, object], target: str, path: Path) -> None:
    targets[target].one(path.read_bytes())  # type: ignore[attr-defined]


def test_the_strict_store_would_catch_a_hostile_value() -> None:
    """The check the fuzzers rely on does fail for what PostgreSQL refuses."""
    for value in ("a\x00b", "a\ud800", "x" * 3000):
        with pytest.raises(harness.HostileValueReachedStore):
            harness._check_text("value", value, indexed=True)
    harness._check_text("value", "grüße", indexed=True)


def test_a_resigned_request_passes_authentication() -> None:
    """The re-signing mode reaches past the authenticator checks (else the fuzzer would not)."""
    target = harness.RadiusTarget()
    body = bytes([0x81, 5]) + bytes(16) + bytes([1, 12]) + b"prepaid-ok"
    target.one(bytes([2]) + body)
    assert target.listeners["auth"].transport.sent == 1
