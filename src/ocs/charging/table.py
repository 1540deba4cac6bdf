"""A dictionary split into shards, for tables that grow to millions of entries.

A dict grows by building a table twice as large and moving every entry into it, in one step;
under churn (entries added as others are removed) it rebuilds at its own size whenever the
slots the removed ones leave are used up. For the session book's reservations, millions when
admissions wait out their ring timeout at tens of thousands a second, that step stalled every
request behind it: 0.5 s at 2.8 million entries and 1.0 s at 3.4 million, measured here (most
of it the kernel zeroing the new table's pages). Split over ``SHARDS`` dictionaries by the
key's hash, each step moves about a thousandth of the entries. The shards are not equally
likely: their shares of the hash space rise geometrically over a factor of two from the first
to the last. Equal shards would fill at one pace and all grow within the same second (measured:
a thousand steps back to back, a 70 ms p99 in that second); unequal ones cross their growth
thresholds one after another while the table doubles, a step of a millisecond or less every
few hundred insertions, with requests answered between them.

Each shard is a ``LongLivedDict`` (``ocs.longlived``): frozen with the start-up heap, never
walked by a full collection. Compiled with the hot paths (``scripts/build_native.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final, Generic, TypeVar

from ocs.longlived import LongLivedDict

K = TypeVar("K")
V = TypeVar("V")

SHARDS: Final = 1024
ROUTES: Final = 65536  # hash slots, shared out over the shards (a power of two: the low bits)


def _routes() -> list[int]:
    """Hash slot -> shard: shard i gets a share of the ``ROUTES`` slots proportional to
    ``2 ** (i / SHARDS)`` (44 slots for the first, 89 for the last)."""
    weights = [2.0 ** (i / SHARDS) for i in range(SHARDS)]
    total = sum(weights)
    routes: list[int] = []
    running = 0.0
    for shard, weight in enumerate(weights):
        running += weight
        end = ROUTES if shard == SHARDS - 1 else round(ROUTES * running / total)
        routes.extend([shard] * (end - len(routes)))
    return routes


_ROUTES: Final = _routes()


class ShardedTable(Generic[K, V]):
    """The few dict operations the session book uses, over ``SHARDS`` dictionaries."""

    def __init__(self) -> None:
        self._shards: list[dict[K, V]] = [LongLivedDict() for _ in range(SHARDS)]

    def _shard(self, key: K) -> dict[K, V]:
        return self._shards[_ROUTES[hash(key) & (ROUTES - 1)]]

    def get(self, key: K) -> V | None:
        return self._shard(key).get(key)

    # The shards are dict subclasses, and compiled code reaches a subclass's ``setdefault`` and
    # ``pop`` through a method lookup by name (mypyc's fast paths are for exact dicts), which
    # profiled at 4 % of an Access-Request's CPU in ``add``; ``get``, ``in``, item assignment
    # and ``del`` go straight to the dict's C functions. The values are never None.

    def pop(self, key: K) -> V | None:
        """Remove the key's entry and return its value; None when there is none."""
        shard = self._shard(key)
        value = shard.get(key)
        if value is not None:
            del shard[key]
        return value

    def add(self, key: K, value: V) -> bool:
        """Store ``value`` under ``key`` unless the key has a value already: True when stored."""
        shard = self._shard(key)
        if key in shard:
            return False
        shard[key] = value
        return True

    def __setitem__(self, key: K, value: V) -> None:
        self._shard(key)[key] = value

    def __contains__(self, key: K) -> bool:
        return key in self._shard(key)

    def shard(self, index: int) -> dict[K, V]:
        """Shard ``index`` (0 to ``SHARDS`` - 1) itself, for reading it a shard at a time."""
        return self._shards[index]

    def __len__(self) -> int:
        return sum([len(shard) for shard in self._shards])

    def items(self) -> Iterator[tuple[K, V]]:
        for shard in self._shards:
            yield from shard.items()

    def values(self) -> Iterator[V]:
        for shard in self._shards:
            yield from shard.values()

    def largest_shard(self) -> int:
        """Entries in the fullest shard (what one growth step moves, at most)."""
        return max([len(shard) for shard in self._shards])
