"""The in-process account cache: snapshots by account id, account ids by identity.

Rules of this file:
- Lookups never await and never touch the database: they are dictionary reads.
- Entries carry the monotonic time they were loaded at, so freshness is measured, not guessed.
- Replacing the whole content is atomic for readers (new dictionaries are swapped in).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ocs.core.identity import IdentityKind
from ocs.core.model import AccountSnapshot


@dataclass(frozen=True, slots=True)
class CacheEntry:
    snapshot: AccountSnapshot
    loaded_at: float  # monotonic seconds


class AccountCache:
    def __init__(self) -> None:
        self._entries: dict[int, CacheEntry] = {}
        self._identities: dict[tuple[str, str], int] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def replace_all(
        self,
        snapshots: Iterable[AccountSnapshot],
        identities: Iterable[tuple[str, str, int]],
        loaded_at: float,
    ) -> None:
        """Swap in a complete new content (a full load)."""
        entries = {s.account_id: CacheEntry(s, loaded_at) for s in snapshots}
        index = {(kind, value): account for kind, value, account in identities}
        self._entries, self._identities = entries, index

    def put(self, snapshot: AccountSnapshot, loaded_at: float) -> None:
        self._entries[snapshot.account_id] = CacheEntry(snapshot, loaded_at)

    def add_identity(self, kind: IdentityKind, value: str, account_id: int) -> None:
        self._identities[(kind.value, value)] = account_id

    def account_for(self, kind: IdentityKind, normalized_value: str) -> int | None:
        return self._identities.get((kind.value, normalized_value))

    def get(self, account_id: int) -> CacheEntry | None:
        return self._entries.get(account_id)

    def oldest_loaded_at(self) -> float | None:
        return min((e.loaded_at for e in self._entries.values()), default=None)
