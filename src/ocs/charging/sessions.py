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
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(slots=True)
class Reservation:
    account_id: int
    amount: int  # micro-units
    expires_at: float  # monotonic seconds


@dataclass(slots=True)
class _AccountState:
    reserved: int = 0
    sessions: int = 0
    setups: deque[float] = field(default_factory=deque)
    pending: deque[str] = field(default_factory=deque)


class SessionBook:
    """In-process bookkeeping; one instance per daemon (a Redis-backed one shares it)."""

    def __init__(self, *, setup_window_s: float = 1.0) -> None:
        self._window = setup_window_s
        self._accounts: dict[int, _AccountState] = {}
        self._reservations: dict[str, Reservation] = {}
        # running session key -> [account id, expiry (monotonic)]
        self._sessions: dict[str, tuple[int, float]] = {}

    def _state(self, account_id: int) -> _AccountState:
        state = self._accounts.get(account_id)
        if state is None:
            state = self._accounts[account_id] = _AccountState()
        return state

    # --- what a new-session decision needs ---------------------------------------------------

    def reserved(self, account_id: int) -> int:
        state = self._accounts.get(account_id)
        return state.reserved if state is not None else 0

    def active_sessions(self, account_id: int) -> int:
        state = self._accounts.get(account_id)
        return state.sessions if state is not None else 0

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

    def admit(self, key: str, account_id: int, amount: int, now: float, ttl_s: float) -> None:
        """A new session was admitted: count its setup, hold its credit as a pending reservation
        until its start claims it (or ``ttl_s`` passes)."""
        state = self._state(account_id)
        state.setups.append(now)
        self._release_reservation(key)
        self._reserve(key, account_id, amount, now + ttl_s)
        state.pending.append(key)

    def start(self, session_key: str, account_id: int, now: float, ttl_s: float) -> None:
        """The session runs (accounting Start, CCR-Initial): it counts against ``max_sessions``
        until it ends or ``ttl_s`` passes without news, and it takes over the oldest pending
        reservation of its account, if any."""
        if session_key in self._sessions:
            self.touch(session_key, now, ttl_s)
            return
        state = self._state(account_id)
        while state.pending:
            pending = state.pending.popleft()
            held = self._reservations.pop(pending, None)
            if held is not None:
                self._reservations[session_key] = Reservation(account_id, held.amount, now + ttl_s)
                break
        self._sessions[session_key] = (account_id, now + ttl_s)
        state.sessions += 1

    def touch(self, session_key: str, now: float, ttl_s: float) -> None:
        """News from a running session (interim update): push its expiry out."""
        running = self._sessions.get(session_key)
        if running is not None:
            self._sessions[session_key] = (running[0], now + ttl_s)
        held = self._reservations.get(session_key)
        if held is not None:
            held.expires_at = now + ttl_s

    def reserve(self, key: str, account_id: int, amount: int, now: float, ttl_s: float) -> None:
        """Hold (or re-size) the credit of a running session (the next quota of a CCR-U)."""
        self._release_reservation(key)
        self._reserve(key, account_id, amount, now + ttl_s)

    def end(self, session_key: str) -> None:
        """The session ended (Stop, CCR-Termination, Accounting-On/Off): release everything."""
        self._release_reservation(session_key)
        running = self._sessions.pop(session_key, None)
        if running is not None:
            state = self._accounts.get(running[0])
            if state is not None and state.sessions > 0:
                state.sessions -= 1

    def expire(self, now: float) -> int:
        """Drop reservations and sessions whose time is up; returns how many. Call it often."""
        gone = [k for k, r in self._reservations.items() if r.expires_at <= now]
        for key in gone:
            self._release_reservation(key)
        lost = [k for k, (_, expires_at) in self._sessions.items() if expires_at <= now]
        for key in lost:
            self.end(key)
        horizon = now - self._window
        for account_id in [a for a, s in self._accounts.items() if _idle(s, horizon)]:
            del self._accounts[account_id]
        return len(gone) + len(lost)

    # --- internals ----------------------------------------------------------------------------

    def _reserve(self, key: str, account_id: int, amount: int, expires_at: float) -> None:
        self._reservations[key] = Reservation(account_id, amount, expires_at)
        self._state(account_id).reserved += amount

    def _release_reservation(self, key: str) -> None:
        held = self._reservations.pop(key, None)
        if held is not None:
            state = self._accounts.get(held.account_id)
            if state is not None:
                state.reserved -= held.amount
                if key in state.pending:
                    state.pending.remove(key)

    @property
    def reservation_count(self) -> int:
        return len(self._reservations)

    @property
    def session_count(self) -> int:
        return len(self._sessions)


def _idle(state: _AccountState, horizon: float) -> bool:
    while state.setups and state.setups[0] <= horizon:
        state.setups.popleft()
    return not state.setups and state.sessions == 0 and state.reserved == 0 and not state.pending
