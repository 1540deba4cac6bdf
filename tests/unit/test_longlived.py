"""LongLivedDict: start-up tables that the heap freeze at "ready" really takes."""

from __future__ import annotations

import gc

from ocs.charging.sessions import SessionBook
from ocs.longlived import LongLivedDict


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
