"""The in-process account cache: snapshots by account id, account ids by identity.

Rules of this file:
- Lookups never await and never touch the database: they are dictionary reads.
- Time is passed in (monotonic seconds); nothing here reads a clock.
- An entry's age is measured from the later of when it was loaded and when the whole cache was
  last validated against the database (a successful full load or change poll proves every entry
  not reported as changed is still current). So a healthy sidecar keeps every entry fresh with
  one cheap query, and when the database goes away entries age from the last proof.
- Unknown identities are remembered for a short time (bounded), so a flood of requests for a
  name that does not exist cannot turn into a flood of queries. A change to some account never
  clears that memory: an identity that appears is taken out of it by itself (``set_identities``).
- After a full load the cache is authoritative: it holds every identity there is, and new ones
  arrive by NOTIFY (the sidecar), so an identity it does not hold is unknown without a query.
- Stored credentials (RADIUS passwords) are kept only for the identities that have one, apart
  from the identity index, so the common identity without one costs a lookup in an empty or
  small dictionary. They are opaque strings here (ocs.radius.auth reads them).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from ocs.core.identity import IdentityKind
from ocs.core.model import AccountSnapshot


class AccountCache:
    """Memory matters here (a million accounts): snapshots are stored as they are, the time and
    version of an entry are kept apart only for entries refreshed after the bulk load, and
    identities are indexed per kind by their value (no tuple per key)."""

    def __init__(
        self, *, negative_ttl_s: float = 10.0, negative_max_entries: int = 100_000
    ) -> None:
        self._entries: dict[int, AccountSnapshot] = {}
        self._loaded_at: dict[int, float] = {}  # entries refreshed after the bulk load
        self._versions: dict[int, Any] = {}
        self._bulk_loaded_at = 0.0
        self._identities: dict[str, dict[str, int]] = {kind.value: {} for kind in IdentityKind}
        self._unknown: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._negative_ttl_s = negative_ttl_s
        self._negative_max = negative_max_entries
        self._credentials: dict[tuple[str, str], str] = {}
        self.validated_at: float | None = None
        # True once a full load put every account and identity here (the sidecar keeps it so).
        self.authoritative = False

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def identity_count(self) -> int:
        return sum(len(index) for index in self._identities.values())

    # --- writes (the loader and the pipeline) ----------------------------------------------

    def replace_all(
        self,
        snapshots: Iterable[AccountSnapshot],
        identities: Iterable[tuple[str, str, int]],
        loaded_at: float,
        *,
        authoritative: bool = False,
    ) -> None:
        """Swap in a new content; readers never see a half state. ``authoritative``: it is
        every account there is (a full load), so an identity not in it is unknown."""
        entries = {s.account_id: s for s in snapshots}
        index: dict[str, dict[str, int]] = {kind.value: {} for kind in IdentityKind}
        for kind, value, account in identities:
            owner = entries.get(account)
            # One string object for both the name and its user name: a million of them add up.
            shared = owner.name if owner is not None and owner.name == value else value
            index.setdefault(kind, {})[shared] = account
        self._entries, self._identities = entries, index
        self._loaded_at, self._versions = {}, {}
        self._bulk_loaded_at = loaded_at
        self._unknown.clear()
        self.validated_at = loaded_at
        self.authoritative = authoritative

    def adopt_all(
        self,
        entries: dict[int, AccountSnapshot],
        identities: dict[str, dict[str, int]],
        loaded_at: float,
        *,
        authoritative: bool = True,
    ) -> None:
        """``replace_all`` for the bulk loader, which builds the dictionaries this cache keeps
        itself (snapshots by account id; account ids by kind, then value): they are taken as
        they are, not copied, so the caller must not keep using them. Every kind gets an
        index, even an empty one."""
        for kind in IdentityKind:
            identities.setdefault(kind.value, {})
        self._entries, self._identities = entries, identities
        self._loaded_at, self._versions = {}, {}
        self._bulk_loaded_at = loaded_at
        self._unknown.clear()
        self.validated_at = loaded_at
        self.authoritative = authoritative

    def put(self, snapshot: AccountSnapshot, loaded_at: float, version: Any = None) -> bool:
        """Store a snapshot unless the cache holds one read from a newer row; True if stored.
        ``version`` is the row's change stamp, when known: a read that started before a newer
        one finished must not overwrite it."""
        account = snapshot.account_id
        current = self._versions.get(account)
        if version is not None and current is not None and version < current:
            return False
        self._entries[account] = snapshot
        self._loaded_at[account] = loaded_at
        if version is None:
            self._versions.pop(account, None)
        else:
            self._versions[account] = version
        return True

    def remove(self, account_id: int) -> None:
        self._entries.pop(account_id, None)
        self._loaded_at.pop(account_id, None)
        self._versions.pop(account_id, None)

    def set_identities(self, account_id: int, identities: Iterable[tuple[str, str]]) -> None:
        """Point these identities (kind, normalized value) at the account.

        Identities are only ever added or moved by the writers ocs has (the database refuses
        one that belongs to another account), so nothing is scanned for removal here: that
        would cost a pass over every identity for every changed account. An identity deleted
        by hand in SQL stays in this cache until the next full load."""
        for kind, value in identities:
            self._identities.setdefault(kind, {})[value] = account_id
            self._unknown.pop((kind, value), None)

    def add_identity(self, kind: IdentityKind, value: str, account_id: int) -> None:
        self._identities[kind.value][value] = account_id
        self._unknown.pop((kind.value, value), None)

    def replace_credentials(self, credentials: dict[tuple[str, str], str]) -> None:
        """Every identity's stored credential by (kind, normalized value): a full load."""
        self._credentials = dict(credentials)

    def set_credential(self, kind: str, value: str, credential: str | None) -> None:
        """Give an identity its stored credential, or take it away (None)."""
        if credential is None:
            self._credentials.pop((kind, value), None)
        else:
            self._credentials[(kind, value)] = credential

    def mark_validated(self, now: float) -> None:
        """Every entry not reported changed is known current as of ``now``."""
        self.validated_at = now

    def remember_unknown(self, kind: IdentityKind, value: str, now: float) -> None:
        key = (kind.value, value)
        self._unknown[key] = now + self._negative_ttl_s
        self._unknown.move_to_end(key)
        while len(self._unknown) > self._negative_max:
            self._unknown.popitem(last=False)

    def forget_unknown(self) -> None:
        self._unknown.clear()

    @property
    def unknown_count(self) -> int:
        return len(self._unknown)

    # --- reads (the hot path) ----------------------------------------------------------------

    def account_for(self, kind: IdentityKind, normalized_value: str) -> int | None:
        return self._identities[kind._value_].get(normalized_value)

    def known_unknown(self, kind: IdentityKind, normalized_value: str, now: float) -> bool:
        """True while the identity is remembered as not existing."""
        expires = self._unknown.get((kind.value, normalized_value))
        if expires is None:
            return False
        if now >= expires:
            del self._unknown[(kind.value, normalized_value)]
            return False
        return True

    def get(self, account_id: int) -> AccountSnapshot | None:
        return self._entries.get(account_id)

    def credential(self, kind: IdentityKind, normalized_value: str) -> str | None:
        """The identity's stored credential, or None (no password to check)."""
        credentials = self._credentials
        if not credentials:
            return None
        return credentials.get((kind.value, normalized_value))

    @property
    def credential_count(self) -> int:
        return len(self._credentials)

    def loaded_at(self, account_id: int) -> float:
        return self._loaded_at.get(account_id, self._bulk_loaded_at)

    def version(self, account_id: int) -> Any:
        return self._versions.get(account_id)

    def age_s(self, account_id: int, now: float) -> float:
        """Seconds since the entry was last known to match the database."""
        proven = self._loaded_at.get(account_id, self._bulk_loaded_at)
        if self.validated_at is not None and self.validated_at > proven:
            proven = self.validated_at
        return now - proven

    def oldest_age_s(self, now: float) -> float | None:
        """Age of the least recently proven entry (for the metric and /readyz)."""
        if not self._entries:
            return None
        oldest = self._bulk_loaded_at
        if len(self._loaded_at) == len(self._entries):
            oldest = min(self._loaded_at.values())
        if self.validated_at is not None and self.validated_at > oldest:
            oldest = self.validated_at
        return now - oldest

    def account_ids(self) -> list[int]:
        return list(self._entries)
