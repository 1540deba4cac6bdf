"""Running sessions, credit reservations and setup rates, per account, in this process.

Rules of this file:
- Every reservation expires: a lost stop or termination cannot hold credit forever (CGRateS
  gives every session a TTL for the same reason).
- Time is passed in (monotonic seconds); nothing here reads a clock or awaits.
- A reservation is the credit a session may still spend: its grant at the account's tariff.
  New sessions see ``available - reserved``, so twenty calls set up in the same second cannot
  each spend the same balance.
- Reservations made at admission (RADIUS Access-Accept) before the session is known by its
  accounting id are *pending*; the session's start claims the oldest pending one of its account.
- Several instances (``redis.url``): the book also holds *remote* figures, the reservations and
  running sessions each other instance holds per account, as last heard through Redis
  (``ocs.store.redis_sync``). ``reserved`` and ``active_sessions`` answer local + remote, so a
  decision still reads only dictionaries here. Local changes mark their account *dirty*; the sync
  task takes the dirty set, publishes those accounts' local figures and sets the remote ones.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from ocs.charging.table import SHARDS, ShardedTable
from ocs.longlived import LongLivedDict

Reservation = tuple[int, int, float]
"""(account id, amount in micro-units, expiry in monotonic seconds).

A plain tuple on purpose: the cyclic garbage collector stops tracking an exact tuple of
numbers after it has seen it once, so hundreds of thousands of held admissions add nothing to
its full passes. A NamedTuple looks the same but stays tracked (only exact tuples are
untracked): measured here, 200,000 of them made every full collection 21 ms instead of 3.5."""
_ACCOUNT: Final = 0
_AMOUNT: Final = 1
_EXPIRES: Final = 2


@dataclass(slots=True)
class _AccountState:
    reserved: int = 0
    sessions: int = 0
    setups: deque[float] = field(default_factory=deque)
    # Keys of pending reservations, oldest first. A dict used as an ordered set, not a deque:
    # the collector untracks a dict of strings (a deque it walks item by item on every full
    # pass; 225,000 pending keys made those passes 16-24 ms here), and removal is O(1).
    # The value is the grant's length in seconds (what the claiming session's hold lasts).
    pending: dict[str, float] = field(default_factory=dict)


_RESERVATION, _SESSION = 0, 1
_IDLE_SWEEP_S = 10.0
# Deadlines are deleted lazily; once stale ones outnumber the live ones this much, the heap is
# rebuilt from what is held. Without it every ended session left its deadline behind until
# that passed (an hour for a RADIUS session): under steady traffic memory grew for an hour
# (the soak saw 1 KB a session). Touches and re-sized holds add no entries, so it is ended
# sessions and claimed admissions that bring a rebuild on. The rebuild reads the tables a
# slice at a time (``_SCAN_PER_STEP`` keys for each heap step of ``max_work``) into a new heap
# while the old one goes on serving; done in one step, it stalled the loop about 1 s per
# million sessions held.
_STALE_FACTOR = 4
_STALE_MIN = 4096
# Per heap step of budget (about 3 µs: a slice of the daemon's 100 steps is about 0.3 ms), a
# rebuild reads 16 entries into the new heap, and 256 entries of the old one are freed (each
# much cheaper than a step).
_SCAN_PER_STEP = 16
_FREE_PER_STEP = 256
# Up to this many held, a rebuild is one step (a millisecond or two): reading two thousand
# shards in slices costs more than the rebuild itself when few entries are live, as under
# Diameter churn (a heap of some thousand entries rebuilt every tick).
_REBUILD_AT_ONCE = 4096
_SWEEP_CHUNK = 2_000  # accounts looked at per bounded expire() call


class SessionBook:
    """In-process bookkeeping; one instance per daemon, shared with other daemons through the
    remote figures a sync task keeps up to date."""

    def __init__(
        self,
        *,
        setup_window_s: float = 1.0,
        stale_min: int = _STALE_MIN,
        rebuild_at_once: int = _REBUILD_AT_ONCE,
    ) -> None:
        # (deadline, kind, key): every reservation's and session's expiry, lazily deleted
        self._deadlines: list[tuple[float, int, str]] = []
        # A rebuild under way: the new heap (every deadline queued meanwhile goes in both), and
        # where its reading of the tables stands: the shard listed last (``_shard_deadlines``:
        # 0 to SHARDS - 1 the reservations', then the sessions'), its entries as they were
        # when it was listed, the next of them.
        self._rebuild: list[tuple[float, int, str]] | None = None
        # Stale entries tolerated beyond the factor, and the most held for a one-step rebuild
        # (tests make rebuilds frequent and sliced with small ones).
        self._stale_min = stale_min
        self._rebuild_at_once = rebuild_at_once
        self._scan_shard = 0
        self._scan_entries: list[tuple[float, int, str]] = []
        self._scan_next = 0
        # The heap a rebuild replaced, freed a slice at a time (freeing millions of entries at
        # once took 150 ms here).
        self._discard: list[tuple[float, int, str]] = []
        self._next_idle_sweep = 0.0
        self._sweep: list[int] | None = None  # accounts left to look at in this idle sweep
        self._window = setup_window_s
        self._accounts: dict[int, _AccountState] = LongLivedDict()
        # The two tables that grow with the load (millions of admissions waiting out their
        # ring timeout): sharded, so that growing them never stalls the requests (table.py).
        self._reservations: ShardedTable[str, Reservation] = ShardedTable()
        # running session key -> [account id, expiry (monotonic)]
        self._sessions: ShardedTable[str, tuple[int, float]] = ShardedTable()
        # Other instances: account -> [reserved, sessions] summed over them, and per instance.
        self._remote: dict[int, tuple[int, int]] = LongLivedDict()
        self._remote_by_instance: dict[str, dict[int, tuple[int, int]]] = {}
        # Accounts whose local figures changed since the last ``take_dirty``; None: not shared.
        self._dirty: set[int] | None = None
        # Running sessions that expired since the last ``take_expired`` (their owner closes them).
        self._expired_sessions: list[str] = []

    def _state(self, account_id: int) -> _AccountState:
        state = self._accounts.get(account_id)
        if state is None:
            state = self._accounts[account_id] = _AccountState()
        return state

    # --- what a new-session decision needs ---------------------------------------------------

    def reserved(self, account_id: int) -> int:
        """Credit (micro-units) held for the account's sessions, here and elsewhere."""
        state = self._accounts.get(account_id)
        local = state.reserved if state is not None else 0
        remote = self._remote.get(account_id)
        return local if remote is None else local + remote[0]

    def active_sessions(self, account_id: int) -> int:
        """The account's running sessions, here and elsewhere."""
        state = self._accounts.get(account_id)
        local = state.sessions if state is not None else 0
        remote = self._remote.get(account_id)
        return local if remote is None else local + remote[1]

    def figures(self, account_id: int, now: float) -> tuple[int, int, int]:
        """``reserved``, ``active_sessions`` and ``setups_in_window`` at once (a decision
        needs all three)."""
        state = self._accounts.get(account_id)
        remote = self._remote.get(account_id)
        if state is None:
            return (0, 0, 0) if remote is None else (remote[0], remote[1], 0)
        setups = state.setups
        if setups:
            horizon = now - self._window
            while setups and setups[0] <= horizon:
                setups.popleft()
        if remote is None:
            return state.reserved, state.sessions, len(setups)
        return state.reserved + remote[0], state.sessions + remote[1], len(setups)

    def setups_in_window(self, account_id: int, now: float) -> int:
        state = self._accounts.get(account_id)
        if state is None:
            return 0
        horizon = now - self._window
        while state.setups and state.setups[0] <= horizon:
            state.setups.popleft()
        return len(state.setups)

    def is_running(self, session_key: str) -> bool:
        return session_key in self._sessions

    # --- changes ------------------------------------------------------------------------------

    def admit(
        self,
        key: str,
        account_id: int,
        amount: int,
        now: float,
        ttl_s: float,
        *,
        grant_s: float = 0.0,
    ) -> None:
        """A new session was admitted: count its setup, hold its credit as a pending reservation
        until its start claims it (or ``ttl_s`` passes). ``grant_s``: how long the grant runs
        once started (the claiming session's hold lasts that long)."""
        state = self._state(account_id)
        state.setups.append(now)
        expires_at = now + ttl_s
        held = (account_id, amount, expires_at)
        # A new name almost always: one lookup stores it (a miss in a table of millions costs
        # a few cache misses; a pop before the store made it two).
        queue = True
        if not self._reservations.add(key, held):
            # The same admission again (a call attempted again under its name): the earlier
            # hold goes, this one replaces it (and its deadline, if it comes first, moves).
            before = self._release_reservation(key)
            self._reservations[key] = held
            queue = _needs_deadline(before, expires_at)
        self._count_hold(key, state, account_id, amount, expires_at, queue=queue)
        state.pending[key] = grant_s

    def start(
        self,
        session_key: str,
        account_id: int,
        now: float,
        ttl_s: float,
        *,
        claim: Iterable[str] | None = None,
        amount: int | None = None,
    ) -> tuple[int, float, str | None]:
        """The session runs (accounting Start, CCR-Initial): it counts against ``max_sessions``
        until it ends or ``ttl_s`` passes without news. Its hold is, by what is given: the
        pending reservations named in ``claim`` (a CCR-Initial's services), ``amount`` (rebuilt
        after a restart), or else the oldest pending reservation of its account (a RADIUS
        Start: the admission it follows). Returns the amount held for it, the longest grant
        (seconds) among the admissions it claimed, and the first of them (None: none)."""
        if session_key in self._sessions:
            self.touch(session_key, now, ttl_s)
            held = self._reservations.get(session_key)
            return (held[_AMOUNT] if held is not None else 0), 0.0, None
        state = self._state(account_id)
        total = 0
        grant_s = 0.0
        first: str | None = None
        if amount is not None:
            total = amount
        else:
            if claim is not None:
                keys = list(claim)
            else:
                oldest = next(iter(state.pending), None)
                keys = [oldest] if oldest is not None else []
            for pending in keys:
                grant_s = max(grant_s, state.pending.pop(pending, 0.0))
                held = self._reservations.pop(pending)
                if held is not None:
                    state.reserved -= held[_AMOUNT]
                    total += held[_AMOUNT]
                    if first is None:
                        first = pending
        if total:
            self._reserve(session_key, account_id, total, now + ttl_s)
        self._sessions[session_key] = (account_id, now + ttl_s)
        self._queue(now + ttl_s, _SESSION, session_key)
        state.sessions += 1
        if self._dirty is not None:
            self._dirty.add(account_id)
        return total, grant_s, first

    def touch(self, session_key: str, now: float, ttl_s: float) -> None:
        """News from a running session (interim update): move its expiry. A later expiry adds
        no deadline: the one the session has comes first, and ``expire`` then moves it to the
        new expiry. (One deadline per interim update made stale entries pile up: with a million
        sessions the heap's rebuild, every few interim intervals, stalled the loop 0.9-1.3 s.)"""
        expires_at = now + ttl_s
        running = self._sessions.get(session_key)
        if running is not None:
            self._sessions[session_key] = (running[0], expires_at)
            if expires_at < running[1]:
                self._queue(expires_at, _SESSION, session_key)
        held = self._reservations.get(session_key)
        if held is not None:
            self._reservations[session_key] = (held[_ACCOUNT], held[_AMOUNT], expires_at)
            if expires_at < held[_EXPIRES]:
                self._queue(expires_at, _RESERVATION, session_key)

    def reserve(self, key: str, account_id: int, amount: int, now: float, ttl_s: float) -> None:
        """Hold (or re-size) the credit of a running session (the next quota of a CCR-U)."""
        before = self._release_reservation(key)
        expires_at = now + ttl_s
        queue = _needs_deadline(before, expires_at)  # one per key, not one per CCR-Update
        self._reserve(key, account_id, amount, expires_at, queue=queue)

    def end(self, session_key: str) -> None:
        """The session ended (Stop, CCR-Termination, Accounting-On/Off): release everything."""
        self._release_reservation(session_key)
        running = self._sessions.pop(session_key)
        if running is not None:
            state = self._accounts.get(running[0])
            if state is not None and state.sessions > 0:
                state.sessions -= 1
            if self._dirty is not None:
                self._dirty.add(running[0])

    def expire(self, now: float, max_work: int | None = None) -> int:
        """Drop reservations and sessions whose time is up; returns how many. Call it often.

        Work is proportional to what expires, not to what is held: deadlines sit in a heap
        (entries made stale by a release are skipped when they surface; a touched session's
        moves to its new expiry), rebuilt a slice at a time once stale entries pile up. With
        ``max_work``, one call does at most that many heap steps (a rebuild's entries count a
        fraction of a step each) and sweeps at most ``_SWEEP_CHUNK`` accounts; ``expiry_due``
        then says whether to call again. A caller on the event loop yields between calls, so
        100,000 admissions expiring together, or a million sessions to rebuild the heap from,
        never stall the requests behind them."""
        expired = 0
        if self._rebuild is None and not self._discard:
            live = len(self._reservations) + len(self._sessions)
            if len(self._deadlines) > _STALE_FACTOR * live + self._stale_min:
                if live <= self._rebuild_at_once:
                    self._compact()
                else:
                    self._start_rebuild()
        budget = -1 if max_work is None else max_work
        if self._rebuild is not None:
            # First: a small rebuild is over at once, and the expiries below then pop no stale
            # entries one by one (under Diameter churn most of the old heap's due ones are).
            budget = self._scan(budget)
        deadlines = self._deadlines
        while budget and deadlines and deadlines[0][0] <= now:
            budget -= 1
            _, kind, key = heapq.heappop(deadlines)
            if kind == _RESERVATION:
                held = self._reservations.get(key)
                if held is not None:
                    if held[_EXPIRES] <= now:
                        self._release_reservation(key)
                        expired += 1
                    else:  # touched since: the deadline moves to the new expiry
                        self._queue(held[_EXPIRES], _RESERVATION, key)
            else:
                running = self._sessions.get(key)
                if running is not None:
                    if running[1] <= now:
                        self.end(key)
                        self._expired_sessions.append(key)
                        expired += 1
                    else:
                        self._queue(running[1], _SESSION, key)
        if self._discard and budget:
            keep = 0 if budget < 0 else max(len(self._discard) - budget * _FREE_PER_STEP, 0)
            del self._discard[keep:]
        # Idle accounts (nothing held, no recent setup) are dropped now and then, not on every
        # call, and in chunks: the pass is over every account with state.
        if self._sweep is None and now >= self._next_idle_sweep:
            self._next_idle_sweep = now + _IDLE_SWEEP_S
            self._sweep = list(self._accounts)
        sweep = self._sweep
        if sweep is not None:
            take = len(sweep) if max_work is None else min(len(sweep), _SWEEP_CHUNK)
            horizon = now - self._window
            accounts = self._accounts
            for account_id in sweep[len(sweep) - take :]:
                state = accounts.get(account_id)
                if state is not None and _idle(state, horizon):
                    del accounts[account_id]
            del sweep[len(sweep) - take :]
            if not sweep:
                self._sweep = None
        return expired

    def _queue(self, deadline: float, kind: int, key: str) -> None:
        """Add a deadline (to the new heap too while one is being built)."""
        heapq.heappush(self._deadlines, (deadline, kind, key))
        if self._rebuild is not None:
            heapq.heappush(self._rebuild, (deadline, kind, key))

    def _compact(self) -> None:
        """Rebuild the heap from what is held, in one step: for small tables. The old heap is
        freed in slices (it can be large: a million sessions closed at once leave theirs)."""
        self._discard = self._deadlines
        deadlines: list[tuple[float, int, str]] = []
        for shard in range(2 * SHARDS):
            deadlines += self._shard_deadlines(shard)
        heapq.heapify(deadlines)
        self._deadlines = deadlines

    def _shard_deadlines(self, shard: int) -> list[tuple[float, int, str]]:
        """One entry per key of a shard at its current expiry: shards 0 to SHARDS - 1 are the
        reservations', SHARDS to 2 * SHARDS - 1 the running sessions'."""
        if shard < SHARDS:
            held = self._reservations.shard(shard)
            return [(v[_EXPIRES], _RESERVATION, k) for k, v in held.items()]
        running = self._sessions.shard(shard - SHARDS)
        return [(v[1], _SESSION, k) for k, v in running.items()]

    def _start_rebuild(self) -> None:
        self._rebuild = []
        self._scan_shard = -1
        self._scan_entries = []
        self._scan_next = 0

    def _scan(self, steps: int) -> int:
        """Read up to ``steps`` * ``_SCAN_PER_STEP`` keys (-1: all) of the tables into the
        rebuild's heap, one entry each at its expiry when its shard was listed; once every
        shard of both is read, the new heap replaces the old. Returns the steps left (-1 for
        -1). O(held) in all, amortised over the stale entries it drops. What changes after a
        shard is listed keeps the heap right: a later expiry moves the entry when it surfaces
        (as for a touch), an earlier one or a new key is queued into the new heap too
        (``_queue``), and a key gone leaves a stale entry."""
        rebuild = self._rebuild
        assert rebuild is not None
        budget = -1 if steps < 0 else steps * _SCAN_PER_STEP
        while budget:
            if self._scan_next >= len(self._scan_entries):
                self._scan_shard += 1
                if self._scan_shard == 2 * SHARDS:
                    self._discard = self._deadlines
                    self._deadlines = rebuild
                    self._rebuild = None
                    self._scan_entries = []
                    return -1 if budget < 0 else budget // _SCAN_PER_STEP
                self._scan_entries = self._shard_deadlines(self._scan_shard)
                self._scan_next = 0
                continue
            heapq.heappush(rebuild, self._scan_entries[self._scan_next])
            self._scan_next += 1
            budget -= 1
        return 0

    @property
    def deadline_count(self) -> int:
        """Entries in the deadline heap, stale ones included (bounded by rebuilds)."""
        return len(self._deadlines)

    def take_expired(self) -> list[str]:
        """The running sessions ``expire`` ended since the last call (their time ran out with
        no news): whoever runs them records the close."""
        expired, self._expired_sessions = self._expired_sessions, []
        return expired

    def running_account(self, session_key: str) -> int | None:
        """The account of a running session, or None."""
        running = self._sessions.get(session_key)
        return running[0] if running is not None else None

    def held_for(self, key: str) -> int:
        """Credit (micro-units) held under ``key`` in this process (0: none)."""
        held = self._reservations.get(key)
        return held[_AMOUNT] if held is not None else 0

    def local_sessions(self, account_id: int) -> int:
        """The account's running sessions in this process only."""
        state = self._accounts.get(account_id)
        return state.sessions if state is not None else 0

    def expiry_due(self, now: float) -> bool:
        """Work is left that ``expire(now, max_work)`` stopped short of."""
        deadlines = self._deadlines
        return (
            bool(self._sweep)
            or self._rebuild is not None
            or bool(self._discard)
            or bool(deadlines and deadlines[0][0] <= now)
        )

    # --- sharing with other instances ---------------------------------------------------------

    def track_changes(self) -> None:
        """Start recording which accounts' local figures change (for ``take_dirty``)."""
        if self._dirty is None:
            self._dirty = set()

    def take_dirty(self) -> set[int]:
        """The accounts whose local figures changed since the last call; the set starts anew."""
        dirty = self._dirty
        if dirty is None:
            return set()
        self._dirty = set()
        return dirty

    def unsynced(self, account_id: int) -> bool:
        """Whether this instance's figures for the account changed since the sync task last
        took them (the other instances do not know them yet)."""
        return self._dirty is not None and account_id in self._dirty

    def mark_dirty(self, account_ids: Iterable[int]) -> None:
        """Have these accounts published again (a failed publish, a reconnection)."""
        if self._dirty is not None:
            self._dirty.update(account_ids)

    def local_figures(self, account_id: int) -> tuple[int, int]:
        """This instance's own (reserved micro-units, running sessions) for the account."""
        state = self._accounts.get(account_id)
        return (state.reserved, state.sessions) if state is not None else (0, 0)

    def local_accounts(self) -> list[int]:
        """Accounts for which this instance holds credit or runs sessions."""
        return [a for a, s in self._accounts.items() if s.reserved or s.sessions]

    def set_remote(self, instance: str, account_id: int, reserved: int, sessions: int) -> None:
        """What ``instance`` holds for the account now (replacing what it held before)."""
        held = self._remote_by_instance.get(instance)
        if held is None:
            if not reserved and not sessions:
                return
            held = self._remote_by_instance[instance] = {}
        before = held.pop(account_id, (0, 0))
        if reserved or sessions:
            held[account_id] = (reserved, sessions)
        elif not held:
            del self._remote_by_instance[instance]
        self._add_remote(account_id, reserved - before[0], sessions - before[1])

    def forget_instance(self, instance: str) -> int:
        """Drop everything ``instance`` held (it stopped, or its heartbeat expired); returns
        how many accounts it held figures for."""
        held = self._remote_by_instance.pop(instance, None)
        if held is None:
            return 0
        for account_id, (reserved, sessions) in held.items():
            self._add_remote(account_id, -reserved, -sessions)
        return len(held)

    def clear_remote(self) -> None:
        """Forget every other instance (Redis unreachable: decide from local state alone)."""
        self._remote.clear()
        self._remote_by_instance.clear()

    def remote_instances(self) -> list[str]:
        """Instances that hold figures for at least one account, as last heard."""
        return list(self._remote_by_instance)

    def remote_figures(self, account_id: int) -> tuple[int, int]:
        """(reserved micro-units, running sessions) that other instances hold for the account."""
        return self._remote.get(account_id, (0, 0))

    @property
    def remote_account_count(self) -> int:
        return len(self._remote)

    # --- internals ----------------------------------------------------------------------------

    def _add_remote(self, account_id: int, reserved: int, sessions: int) -> None:
        if not reserved and not sessions:
            return
        old_reserved, old_sessions = self._remote.get(account_id, (0, 0))
        new = (old_reserved + reserved, old_sessions + sessions)
        if new == (0, 0):
            self._remote.pop(account_id, None)
        else:
            self._remote[account_id] = new

    def _reserve(
        self, key: str, account_id: int, amount: int, expires_at: float, *, queue: bool = True
    ) -> None:
        self._reservations[key] = (account_id, amount, expires_at)
        self._count_hold(key, self._state(account_id), account_id, amount, expires_at, queue=queue)

    def _count_hold(
        self,
        key: str,
        state: _AccountState,
        account_id: int,
        amount: int,
        expires_at: float,
        *,
        queue: bool,
    ) -> None:
        """What a hold just stored under ``key`` changes besides the table: its deadline (not
        when ``queue`` is False: the key's earlier deadline is still due first), its account's
        reserved figure, the accounts to publish."""
        if queue:
            self._queue(expires_at, _RESERVATION, key)
        state.reserved += amount
        if self._dirty is not None:
            self._dirty.add(account_id)

    def _release_reservation(self, key: str) -> Reservation | None:
        """Drop the hold under ``key``; returns it (None: there was none)."""
        held = self._reservations.pop(key)
        if held is not None:
            if self._dirty is not None:
                self._dirty.add(held[_ACCOUNT])
            state = self._accounts.get(held[_ACCOUNT])
            if state is not None:
                state.reserved -= held[_AMOUNT]
                state.pending.pop(key, None)
        return held

    @property
    def reservation_count(self) -> int:
        return len(self._reservations)

    @property
    def session_count(self) -> int:
        return len(self._sessions)


def _needs_deadline(before: Reservation | None, expires_at: float) -> bool:
    """Whether a hold replacing ``before`` needs a deadline of its own: not when it expires
    no earlier, since ``before``'s deadline (at or before its expiry) is still to come and then
    moves to this expiry, as for a touch."""
    return before is None or expires_at < before[_EXPIRES]


def _idle(state: _AccountState, horizon: float) -> bool:
    while state.setups and state.setups[0] <= horizon:
        state.setups.popleft()
    return not state.setups and state.sessions == 0 and state.reserved == 0 and not state.pending
