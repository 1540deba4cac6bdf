"""LongLivedDict: start-up tables that the heap freeze at "ready" really takes."""

from __future__ import annotations

import gc
from collections import deque

from ocs.charging.sessions import SessionBook
from ocs.longlived import FULL_COLLECTION_EVERY, LongLivedDict, space_full_collections


def test_a_plain_dict_of_untracked_values_is_untracked_and_a_long_lived_one_is_not() -> None:
    plain: dict[str, tuple[int, float]] = {}
    kept: LongLivedDict[str, tuple[int, float]] = LongLivedDict()
    assert not gc.is_tracked(plain)  # why plain dicts escape a freeze made while they are empty
    assert gc.is_tracked(kept)
    plain["a"] = kept["a"] = (1, 2.0)
    gc.collect()
    assert not gc.is_tracked(plain)  # and would be tracked again, young, by the next new tuple
    assert gc.is_tracked(kept)
    assert kept == {"a": (1, 2.0)}


def test_a_freeze_keeps_a_long_lived_table_out_of_later_collections() -> None:
    book = SessionBook()
    gc.collect()
    gc.freeze()
    try:
        for n in range(1_000):
            book.admit(f"nas|{n}", n % 10, 1_000, 0.0, 30.0)
        collected = {id(o) for o in gc.get_objects()}
        assert id(book._reservations) not in collected
        assert id(book._accounts) not in collected
    finally:
        gc.unfreeze()


def _full_collections(rounds: int) -> int:
    """Full collections during a load like a busy daemon's after its freeze: every object
    outlives a few young collections (a request in flight), then becomes cyclic garbage."""
    window: deque[list[object]] = deque(maxlen=500)
    before = gc.get_stats()[2]["collections"]
    for _ in range(rounds):
        held: list[object] = []
        held.append(held)
        window.append(held)
    window.clear()
    return gc.get_stats()[2]["collections"] - before


def test_full_collections_are_spaced_after_the_freeze_and_still_run() -> None:
    saved, enabled = gc.get_threshold(), gc.isenabled()
    gc.enable()
    gc.collect()
    gc.freeze()
    try:
        gc.collect()  # what the oldest generation kept: next to nothing, as in the daemon
        gc.set_threshold(100, 10, 10)  # CPython's default policy, with a small young threshold
        default = _full_collections(300_000)
        space_full_collections()
        assert gc.get_threshold() == (100, 10, FULL_COLLECTION_EVERY)
        gc.collect()
        spaced = _full_collections(300_000)
    finally:
        gc.set_threshold(*saved)
        gc.unfreeze()
        if not enabled:
            gc.disable()
    # The default: a full pass every 10 middle ones (the quarter rule never holds them back).
    assert default >= 15
    # Spaced: a tenth as many, and still some, so cyclic garbage is freed in the end.
    assert 1 <= spaced <= default // 5
