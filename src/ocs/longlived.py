"""Containers that live as long as the daemon, kept out of the cyclic collector's full passes.

The daemon freezes its start-up heap (``gc.freeze()`` once the cache is warm and again just
before "ready"): what is frozen is never walked by a collection again. But CPython does not
track an empty dict: it starts tracking one when the first tracked value (a new tuple, an
object) is stored, and a full collection untracks again a dict that holds nothing tracked.
A dict made at start-up and filled under load is therefore tracked only after the freeze, and
from then on every full collection walks all of its entries. Measured here at 7,500 requests
a second, the session book's reservations and the duplicate-reply cache (about 240,000 entries
together) made each full collection 25-40 ms.

``LongLivedDict`` is a dict that is tracked from birth and never untracked (CPython untracks
only exact dicts), so the freeze moves it to the permanent generation with the rest of the
start-up heap. The price is a little speed per access (no dict-specialised bytecode for a
subclass).
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LongLivedDict(dict[K, V]):
    """A dict for tables made at start-up that live as long as the daemon."""

    __slots__ = ()
