"""ShardedTable: the dict operations the session book uses, spread over shards."""

from __future__ import annotations

import itertools
import random

from hypothesis import given
from hypothesis import strategies as st

from ocs.charging.table import ROUTES, SHARDS, ShardedTable, _routes

KEYS = st.one_of(st.text(max_size=12), st.integers(min_value=-(2**70), max_value=2**70))
OPS = st.lists(st.tuples(st.sampled_from(["set", "add", "pop", "get", "in"]), KEYS, st.integers()))


@given(OPS)
def test_it_behaves_as_a_dict(ops: list[tuple[str, object, int]]) -> None:
    table: ShardedTable[object, int] = ShardedTable()
    model: dict[object, int] = {}
    for op, key, value in ops:
        if op == "set":
            table[key] = value
            model[key] = value
        elif op == "add":
            assert table.add(key, value) == (key not in model)
            model.setdefault(key, value)
        elif op == "pop":
            assert table.pop(key) == model.pop(key, None)
        elif op == "get":
            assert table.get(key) == model.get(key)
        else:
            assert (key in table) == (key in model)
        assert len(table) == len(model)
    assert sorted(table.items(), key=repr) == sorted(model.items(), key=repr)
    assert sorted(table.values()) == sorted(model.values())


def test_keys_spread_over_the_shards() -> None:
    """What one growth step moves is a shard's entries: with 200,000 reservation keys, no
    shard holds more than about twice its share (195)."""
    table: ShardedTable[str, int] = ShardedTable()
    rng = random.Random(7)
    for n in range(200_000):
        table[
            f"radius-auth|127.0.0.1|{rng.randrange(65536)}|{n % 256}|{rng.getrandbits(128):032x}"
        ] = n
    assert len(table) == 200_000
    assert table.largest_shard() < 2 * 200_000 // SHARDS


def test_the_shards_shares_rise_over_a_factor_of_two() -> None:
    """Unequal shards cross their growth thresholds one after another instead of together:
    every hash slot has a shard, and the shares rise from 44 slots to 89 (rounding may take
    one slot back between neighbours)."""
    routes = _routes()
    assert len(routes) == ROUTES
    shares = [routes.count(shard) for shard in range(SHARDS)]
    assert all(after >= before - 1 for before, after in itertools.pairwise(shares))
    assert (min(shares), shares[0], shares[-1]) == (44, 44, 89)
