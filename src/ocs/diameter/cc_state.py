"""The credit-control session as the server sees it (RFC 4006 §7), as a table.

Rules of this file:
- Everything that moves a credit-control session between states lives in ``TABLE``: the key is
  (state, event), the value the next state and what the handler does. A pair that is not in
  the table is a protocol error with its Result-Code (``IllegalTransition``).
- States are this process's: ``IDLE`` means it runs no session of that Session-Id (never
  started, ended, or started before a restart or by another instance); ``OPEN`` that it does.
- Where this table departs from RFC 4006 §7's server machine, it is on purpose:
  * a CCR-Initial for an open session starts a new one (the client reused the Session-Id): the
    old one is closed with what it reported, the new one is charged in full;
  * a CCR-Update or CCR-Termination for an IDLE session is not refused with 5002 when the
    store knows the session: late usage is charged to its generation (the store decides which),
    and an open one is carried on here. Only a Session-Id the store never saw, named by a
    request with no identity of its own, is 5002 DIAMETER_UNKNOWN_SESSION_ID;
  * the session supervision timer (Tcc) never ends a session before its grant and its
    Validity-Time have run out (the grant's end plus a margin is when it expires).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from ocs.diameter.codec import DIAMETER_UNABLE_TO_COMPLY


class CcState(StrEnum):
    IDLE = "idle"
    OPEN = "open"


class CcEvent(StrEnum):
    CCR_INITIAL = "ccr_initial"
    CCR_UPDATE = "ccr_update"
    CCR_TERMINATION = "ccr_termination"
    CCR_EVENT = "ccr_event"
    GRANT_ENDED = "grant_ended"  # the session's grant and Validity-Time ran out, no news


class CcAction(StrEnum):
    ADMIT = "admit"  # decide the services, start the session (a new generation)
    SUPERSEDE_AND_ADMIT = "supersede_and_admit"  # the Session-Id again: end the old, admit
    CONTINUE = "continue"  # record the usage, grant the next quotas
    TERMINATE = "terminate"  # record the final usage, end the session
    LATE_USAGE = "late_usage"  # usage for a session not open here: the store places it
    LATE_FINAL = "late_final"  # the final report of a session not open here
    EVENT = "event"  # a one-shot request (RFC 4006 §6.3 .. §6.5)
    CLOSE = "close"  # ended by its timer: closed with what it reported


@dataclass(frozen=True, slots=True)
class Transition:
    next_state: CcState
    action: CcAction


TABLE: Final[dict[tuple[CcState, CcEvent], Transition]] = {
    (CcState.IDLE, CcEvent.CCR_INITIAL): Transition(CcState.OPEN, CcAction.ADMIT),
    (CcState.IDLE, CcEvent.CCR_UPDATE): Transition(CcState.OPEN, CcAction.LATE_USAGE),
    (CcState.IDLE, CcEvent.CCR_TERMINATION): Transition(CcState.IDLE, CcAction.LATE_FINAL),
    (CcState.IDLE, CcEvent.CCR_EVENT): Transition(CcState.IDLE, CcAction.EVENT),
    (CcState.OPEN, CcEvent.CCR_INITIAL): Transition(CcState.OPEN, CcAction.SUPERSEDE_AND_ADMIT),
    (CcState.OPEN, CcEvent.CCR_UPDATE): Transition(CcState.OPEN, CcAction.CONTINUE),
    (CcState.OPEN, CcEvent.CCR_TERMINATION): Transition(CcState.IDLE, CcAction.TERMINATE),
    (CcState.OPEN, CcEvent.CCR_EVENT): Transition(CcState.OPEN, CcAction.EVENT),
    (CcState.OPEN, CcEvent.GRANT_ENDED): Transition(CcState.IDLE, CcAction.CLOSE),
}


class IllegalTransition(Exception):
    """An event the session cannot take in its state; ``result_code`` is the answer's."""

    def __init__(self, state: CcState, event: CcEvent) -> None:
        super().__init__(f"{event.value} in state {state.value}")
        self.state = state
        self.event = event
        self.result_code = DIAMETER_UNABLE_TO_COMPLY


def transition(state: CcState, event: CcEvent) -> Transition:
    """The table's entry for (state, event); raises ``IllegalTransition`` for a missing one."""
    found = TABLE.get((state, event))
    if found is None:
        raise IllegalTransition(state, event)
    return found
