"""The Diameter peer: RFC 6733 §5.6 state table (responder side), the RFC 3539 watchdog, and the
base messages a peer connection exchanges (CER/CEA, DWR/DWA, DPR/DPA).

Pure: no sockets, no asyncio, no clock (every timed entry point takes ``now``, a monotonic
float in seconds, and returns deadlines), randomness injected.

Rules of this file (h11 ``_state.py`` style):
- Everything that affects the peer state machine lives in ``TRANSITIONS``: a table keyed by
  (state, event) giving (next state, actions). ``PeerStateMachine.handle`` only looks it up. A
  pair not in the table is illegal: ``handle`` raises ``PeerProtocolError`` carrying a result
  code and leaves the machine CLOSED; the adapter answers a request with that code (E bit for
  3xxx) if it can, then closes the connection.
- We only accept connections (the RFC's "R-" side: our peers dial us) and never send a CER, so
  the initiator states and the election (§5.6.4) do not exist here. WAIT_CER stands for "the
  transport is up, the peer's CER has not arrived": the RFC folds it into R-Conn-CER.
- The table decides what to do; it does not decide whether a CER is acceptable
  (``capabilities_exchange`` does, and the adapter feeds RCV_CER_ACCEPTED or RCV_CER_REJECTED)
  nor when a DWR is due (``Watchdog`` does, and the adapter feeds WATCHDOG_DWR_DUE or
  WATCHDOG_EXPIRED). TIMEOUT is the adapter's timer for the state it is in: the CER wait in
  WAIT_CER, the DPA wait in CLOSING, the peer's transport close in WAIT_DISCONNECT.
- Messages that arrive in OPEN, CLOSING and WAIT_DISCONNECT are processed: a peer may not have
  seen our DPR yet, and a CCR-T in flight carries usage we must record (graceful drain).
- Answers we never asked for (a CEA, an unexpected DPA or DWA) are dropped in OPEN and later
  states (RFC 6733 §6.2: answers without a pending request are discarded); before the CER they
  are a protocol violation.
"""

import ipaddress
import random
from collections.abc import Callable, Mapping, Sequence
from enum import Enum, IntEnum
from types import MappingProxyType
from typing import Final, NamedTuple

from ocs.diameter.codec import (
    APP_COMMON,
    APP_CREDIT_CONTROL,
    APP_RELAY,
    AVP_ACCT_APPLICATION_ID,
    AVP_AUTH_APPLICATION_ID,
    AVP_DISCONNECT_CAUSE,
    AVP_ERROR_MESSAGE,
    AVP_FAILED_AVP,
    AVP_FIRMWARE_REVISION,
    AVP_HOST_IP_ADDRESS,
    AVP_ORIGIN_HOST,
    AVP_ORIGIN_REALM,
    AVP_ORIGIN_STATE_ID,
    AVP_PRODUCT_NAME,
    AVP_RESULT_CODE,
    AVP_SUPPORTED_VENDOR_ID,
    AVP_VENDOR_ID,
    AVP_VENDOR_SPECIFIC_APPLICATION_ID,
    CMD_CAPABILITIES_EXCHANGE,
    CMD_DEVICE_WATCHDOG,
    CMD_DISCONNECT_PEER,
    DIAMETER_NO_COMMON_APPLICATION,
    DIAMETER_SUCCESS,
    DIAMETER_UNABLE_TO_COMPLY,
    DIAMETER_UNKNOWN_PEER,
    FLAG_REQUEST,
    VENDOR_3GPP,
    Header,
    Message,
    MissingAvp,
    answer_header_for,
    avp_address,
    avp_grouped,
    avp_u32,
    avp_utf8,
    encode_avp,
    encode_identity,
    encode_message,
    encode_with_header,
    is_protocol_error,
)

# --- The state table -------------------------------------------------------------------------


class PeerState(Enum):
    CLOSED = "closed"  # no transport connection
    WAIT_CER = "wait-cer"  # connection accepted, waiting for the peer's CER
    OPEN = "open"  # capabilities exchanged: application traffic flows
    CLOSING = "closing"  # we sent DPR, waiting for the DPA
    WAIT_DISCONNECT = "wait-disconnect"  # the peer sent DPR, we answered; it closes the transport


class PeerEvent(Enum):
    CONNECTION_ACCEPTED = "connection-accepted"  # our listener accepted a transport connection
    RCV_CER_ACCEPTED = "rcv-cer-accepted"  # a CER that capabilities_exchange accepted (2001)
    RCV_CER_REJECTED = "rcv-cer-rejected"  # a CER it refused (3010, 5010, 5005 ...)
    RCV_CEA = "rcv-cea"
    RCV_DWR = "rcv-dwr"
    RCV_DWA = "rcv-dwa"
    RCV_DPR = "rcv-dpr"
    RCV_DPA = "rcv-dpa"
    RCV_MESSAGE = "rcv-message"  # any application request or answer (CCR, RAA, ...)
    WATCHDOG_DWR_DUE = "watchdog-dwr-due"  # Watchdog.on_timeout said SEND_DWR
    WATCHDOG_EXPIRED = "watchdog-expired"  # Watchdog.on_timeout said CLOSE
    TIMEOUT = "timeout"  # the adapter's timer for the current state ran out
    STOP = "stop"  # our own shutdown
    PEER_DISCONNECTED = "peer-disconnected"  # the transport closed or failed


class PeerAction(Enum):
    SEND_CEA = "send-cea"  # CEA with 2001
    SEND_ERROR_CEA = "send-error-cea"  # CEA with the refusal's result code (E bit for 3xxx)
    SEND_DWA = "send-dwa"
    SEND_DWR = "send-dwr"
    SEND_DPA = "send-dpa"
    SEND_DPR = "send-dpr"
    PROCESS = "process"  # hand the message to the application
    REJECT_UNKNOWN_PEER = "reject-unknown-peer"  # answer a request 3010 with the E bit
    CLOSE = "close"  # close the transport connection


_S = PeerState
_E = PeerEvent
_A = PeerAction

Transition = tuple[PeerState, tuple[PeerAction, ...]]

TRANSITIONS: Final[Mapping[tuple[PeerState, PeerEvent], Transition]] = MappingProxyType(
    {
        # CLOSED: only our listener can start something.
        (_S.CLOSED, _E.CONNECTION_ACCEPTED): (_S.WAIT_CER, ()),
        (_S.CLOSED, _E.STOP): (_S.CLOSED, ()),
        (_S.CLOSED, _E.PEER_DISCONNECTED): (_S.CLOSED, ()),  # a late report of our own close
        # WAIT_CER: the RFC's R-Conn-CER, split in two (§5.6 Closed → R-Open).
        (_S.WAIT_CER, _E.RCV_CER_ACCEPTED): (_S.OPEN, (_A.SEND_CEA,)),
        (_S.WAIT_CER, _E.RCV_CER_REJECTED): (_S.CLOSED, (_A.SEND_ERROR_CEA, _A.CLOSE)),
        # Anything but a CER first comes from a peer we do not know yet (§5.3).
        (_S.WAIT_CER, _E.RCV_MESSAGE): (_S.CLOSED, (_A.REJECT_UNKNOWN_PEER, _A.CLOSE)),
        (_S.WAIT_CER, _E.RCV_DWR): (_S.CLOSED, (_A.REJECT_UNKNOWN_PEER, _A.CLOSE)),
        (_S.WAIT_CER, _E.RCV_DPR): (_S.CLOSED, (_A.REJECT_UNKNOWN_PEER, _A.CLOSE)),
        (_S.WAIT_CER, _E.TIMEOUT): (_S.CLOSED, (_A.CLOSE,)),  # silent peers are cut off
        (_S.WAIT_CER, _E.STOP): (_S.CLOSED, (_A.CLOSE,)),
        (_S.WAIT_CER, _E.PEER_DISCONNECTED): (_S.CLOSED, (_A.CLOSE,)),
        # OPEN (§5.6 R-Open).
        (_S.OPEN, _E.RCV_MESSAGE): (_S.OPEN, (_A.PROCESS,)),
        (_S.OPEN, _E.RCV_DWR): (_S.OPEN, (_A.SEND_DWA,)),
        (_S.OPEN, _E.RCV_DWA): (_S.OPEN, ()),  # the adapter has told the Watchdog
        (_S.OPEN, _E.RCV_CER_ACCEPTED): (_S.OPEN, (_A.SEND_CEA,)),  # R-Rcv-CER: R-Snd-CEA
        (_S.OPEN, _E.RCV_CER_REJECTED): (_S.CLOSED, (_A.SEND_ERROR_CEA, _A.CLOSE)),
        (_S.OPEN, _E.RCV_CEA): (_S.OPEN, ()),  # unsolicited answer: dropped
        (_S.OPEN, _E.RCV_DPA): (_S.OPEN, ()),  # unsolicited answer: dropped
        (_S.OPEN, _E.RCV_DPR): (_S.WAIT_DISCONNECT, (_A.SEND_DPA,)),
        (_S.OPEN, _E.WATCHDOG_DWR_DUE): (_S.OPEN, (_A.SEND_DWR,)),
        (_S.OPEN, _E.WATCHDOG_EXPIRED): (_S.CLOSED, (_A.CLOSE,)),
        (_S.OPEN, _E.TIMEOUT): (_S.OPEN, ()),  # no state timer runs in OPEN: a stale wake-up
        (_S.OPEN, _E.STOP): (_S.CLOSING, (_A.SEND_DPR,)),
        (_S.OPEN, _E.PEER_DISCONNECTED): (_S.CLOSED, (_A.CLOSE,)),
        # CLOSING: we sent DPR (§5.6 Closing); "the receiver of the DPA initiates the
        # transport disconnect" (§5.4), so that is us.
        (_S.CLOSING, _E.RCV_DPA): (_S.CLOSED, (_A.CLOSE,)),
        (_S.CLOSING, _E.RCV_MESSAGE): (_S.CLOSING, (_A.PROCESS,)),
        (_S.CLOSING, _E.RCV_DWR): (_S.CLOSING, (_A.SEND_DWA,)),
        (_S.CLOSING, _E.RCV_DWA): (_S.CLOSING, ()),
        (_S.CLOSING, _E.RCV_CEA): (_S.CLOSING, ()),
        (_S.CLOSING, _E.RCV_DPR): (_S.CLOSING, (_A.SEND_DPA,)),  # both sides said goodbye
        (_S.CLOSING, _E.WATCHDOG_DWR_DUE): (_S.CLOSING, (_A.SEND_DWR,)),
        (_S.CLOSING, _E.WATCHDOG_EXPIRED): (_S.CLOSED, (_A.CLOSE,)),
        (_S.CLOSING, _E.TIMEOUT): (_S.CLOSED, (_A.CLOSE,)),  # no DPA in time
        (_S.CLOSING, _E.STOP): (_S.CLOSING, ()),  # already stopping
        (_S.CLOSING, _E.PEER_DISCONNECTED): (_S.CLOSED, (_A.CLOSE,)),
        # WAIT_DISCONNECT: we sent DPA; the peer closes the transport (§5.4).
        (_S.WAIT_DISCONNECT, _E.PEER_DISCONNECTED): (_S.CLOSED, (_A.CLOSE,)),
        (_S.WAIT_DISCONNECT, _E.TIMEOUT): (_S.CLOSED, (_A.CLOSE,)),
        (_S.WAIT_DISCONNECT, _E.STOP): (_S.CLOSED, (_A.CLOSE,)),
        (_S.WAIT_DISCONNECT, _E.RCV_MESSAGE): (_S.WAIT_DISCONNECT, (_A.PROCESS,)),
        (_S.WAIT_DISCONNECT, _E.RCV_DWR): (_S.WAIT_DISCONNECT, (_A.SEND_DWA,)),
        (_S.WAIT_DISCONNECT, _E.RCV_DWA): (_S.WAIT_DISCONNECT, ()),
        (_S.WAIT_DISCONNECT, _E.RCV_CEA): (_S.WAIT_DISCONNECT, ()),
        (_S.WAIT_DISCONNECT, _E.RCV_DPA): (_S.WAIT_DISCONNECT, ()),
        (_S.WAIT_DISCONNECT, _E.RCV_DPR): (_S.WAIT_DISCONNECT, (_A.SEND_DPA,)),
        (_S.WAIT_DISCONNECT, _E.WATCHDOG_DWR_DUE): (_S.WAIT_DISCONNECT, ()),
        (_S.WAIT_DISCONNECT, _E.WATCHDOG_EXPIRED): (_S.CLOSED, (_A.CLOSE,)),
    }
)

# Result code of an illegal (state, event) pair: before the CER the peer is unknown to us
# (3010, answered with the E bit); anything else is an adapter bug or a CER on a connection
# that is going away, which we cannot comply with.
_ILLEGAL_RESULT_CODES: Final[Mapping[PeerState, int]] = MappingProxyType(
    {PeerState.WAIT_CER: DIAMETER_UNKNOWN_PEER}
)


class PeerProtocolError(Exception):
    """``event`` is not allowed in ``state``; ``result_code`` is for the answer (if any)."""

    def __init__(self, state: PeerState, event: PeerEvent, result_code: int):
        super().__init__(f"{event.value} is not allowed in state {state.value}")
        self.state = state
        self.event = event
        self.result_code = result_code


class PeerStateMachine:
    """One peer connection's state; ``handle`` returns what the adapter must do, in order."""

    __slots__ = ("_state",)

    def __init__(self, state: PeerState = PeerState.CLOSED) -> None:
        self._state = state

    @property
    def state(self) -> PeerState:
        return self._state

    def handle(self, event: PeerEvent) -> tuple[PeerAction, ...]:
        """Apply ``event``; return the actions. Raises ``PeerProtocolError`` (state → CLOSED)."""
        state = self._state
        transition = TRANSITIONS.get((state, event))
        if transition is None:
            self._state = PeerState.CLOSED
            raise PeerProtocolError(
                state, event, _ILLEGAL_RESULT_CODES.get(state, DIAMETER_UNABLE_TO_COMPLY)
            )
        self._state, actions = transition
        return actions


# --- Watchdog (RFC 3539 §3.4.1) --------------------------------------------------------------


class WatchdogAction(Enum):
    SEND_DWR = "send-dwr"
    CLOSE = "close"


WATCHDOG_EVENTS: Final[Mapping[WatchdogAction, PeerEvent]] = MappingProxyType(
    {
        WatchdogAction.SEND_DWR: PeerEvent.WATCHDOG_DWR_DUE,
        WatchdogAction.CLOSE: PeerEvent.WATCHDOG_EXPIRED,
    }
)
"""The peer event to feed for each watchdog decision."""

DEFAULT_TW_INIT_S: Final = 30.0  # RFC 3539 §3.4.1: Twinit SHOULD default to 30 s
MIN_TW_INIT_S: Final = 6.0  # ... and MUST NOT be set lower than 6 s
TW_JITTER_S: Final = 2.0  # Tw = Twinit ± up to 2 s, drawn afresh each time the timer is set


class Watchdog:
    """The RFC 3539 §3.4.1 watchdog for one OPEN connection, with ``now`` passed in.

    Any message received resets the timer (``on_traffic``); a DWA also clears the pending
    DWR (``on_dwa``). When the timer expires with nothing pending, send a DWR; when it expires
    again with the DWR still unanswered, close. The RFC's SUSPECT step (fail over, then close
    after one more Tw) is folded into CLOSE: as a server we have nothing to fail over to.
    """

    __slots__ = ("_deadline", "_pending", "_rng", "_tw_init_s")

    def __init__(
        self,
        *,
        now: float,
        tw_init_s: float = DEFAULT_TW_INIT_S,
        rng: random.Random | None = None,
    ) -> None:
        if not tw_init_s >= MIN_TW_INIT_S:
            raise ValueError(f"tw_init_s must be at least {MIN_TW_INIT_S} s, got {tw_init_s}")
        self._tw_init_s = tw_init_s
        self._rng = rng if rng is not None else random.Random()
        self._pending = False
        self._deadline = now + self._tw()

    def _tw(self) -> float:
        return self._tw_init_s + self._rng.uniform(-TW_JITTER_S, TW_JITTER_S)

    @property
    def pending(self) -> bool:
        """A DWR was sent and its DWA has not arrived."""
        return self._pending

    def next_deadline(self) -> float:
        """When ``on_timeout`` should be called next (same clock as ``now``)."""
        return self._deadline

    def on_traffic(self, now: float) -> None:
        """Any message other than a DWA arrived from the peer."""
        self._deadline = now + self._tw()

    def on_dwa(self, now: float) -> None:
        """A DWA arrived (whatever its Result-Code: the peer is alive)."""
        self._pending = False
        self._deadline = now + self._tw()

    def on_timeout(self, now: float) -> WatchdogAction | None:
        """The timer fired. None if it is early (re-arm for ``next_deadline()``)."""
        if now < self._deadline:
            return None
        if self._pending:
            return WatchdogAction.CLOSE
        self._pending = True
        self._deadline = now + self._tw()
        return WatchdogAction.SEND_DWR


# --- Capabilities exchange (RFC 6733 §5.3) ---------------------------------------------------


class CapabilitiesResult(NamedTuple):
    """What to answer a CER with: 2001 and the applications both sides support, or the
    refusal's code (3010 DIAMETER_UNKNOWN_PEER, 5010 DIAMETER_NO_COMMON_APPLICATION)."""

    result_code: int
    common_apps: frozenset[int]


PeerAllowed = Callable[[str, str, str], bool]
"""``allowed(origin_host, origin_realm, peer_address)``: is this peer on our allow-list?"""


def capabilities_exchange(
    cer: Message,
    *,
    allowed: PeerAllowed,
    peer_address: str,
    our_apps: frozenset[int] = frozenset({APP_CREDIT_CONTROL}),
) -> CapabilitiesResult:
    """Judge a CER (RFC 6733 §5.3). Pure: the allow-list is the ``allowed`` callable.

    An unknown peer → 3010; no common application → 5010. A peer advertising the Relay
    application (0xffffffff, as freeDiameter does) supports all of ours; Auth-Application-Id
    counts at the top level and inside Vendor-Specific-Application-Id. Raises
    ``MalformedMessage`` (``MissingAvp`` 5005 without Origin-Host or Origin-Realm, 5004 or 5014
    for a bad value) for an error CEA.
    """
    header = cer.header
    if header.command_code != CMD_CAPABILITIES_EXCHANGE or not header.is_request:
        raise ValueError("capabilities_exchange needs a Capabilities-Exchange-Request")
    origin_host_avp = cer.find(AVP_ORIGIN_HOST)
    if origin_host_avp is None:
        raise MissingAvp(AVP_ORIGIN_HOST, where="the CER")
    origin_realm_avp = cer.find(AVP_ORIGIN_REALM)
    if origin_realm_avp is None:
        raise MissingAvp(AVP_ORIGIN_REALM, where="the CER")
    origin_host = origin_host_avp.as_identity()
    origin_realm = origin_realm_avp.as_identity()
    if not allowed(origin_host, origin_realm, peer_address):
        return CapabilitiesResult(DIAMETER_UNKNOWN_PEER, frozenset())
    peer_apps: set[int] = set()
    for avp in cer.avps:
        if avp.vendor_id:
            continue
        if avp.code == AVP_AUTH_APPLICATION_ID:
            peer_apps.add(avp.as_u32())
        elif avp.code == AVP_VENDOR_SPECIFIC_APPLICATION_ID:
            for member in avp.grouped():
                if member.code == AVP_AUTH_APPLICATION_ID and not member.vendor_id:
                    peer_apps.add(member.as_u32())
        elif avp.code == AVP_ACCT_APPLICATION_ID and avp.as_u32() == APP_RELAY:
            peer_apps.add(APP_RELAY)
    common = frozenset(our_apps) if APP_RELAY in peer_apps else our_apps & peer_apps
    if not common:
        return CapabilitiesResult(DIAMETER_NO_COMMON_APPLICATION, frozenset())
    return CapabilitiesResult(DIAMETER_SUCCESS, frozenset(common))


# --- Base messages ---------------------------------------------------------------------------


class DisconnectCause(IntEnum):
    """Disconnect-Cause (RFC 6733 §5.4.3)."""

    REBOOTING = 0
    BUSY = 1
    DO_NOT_WANT_TO_TALK_TO_YOU = 2


def _origin(origin_host: str, origin_realm: str) -> list[bytes]:
    return [
        encode_avp(AVP_ORIGIN_HOST, encode_identity(origin_host)),
        encode_avp(AVP_ORIGIN_REALM, encode_identity(origin_realm)),
    ]


def _error_avps(error_message: str | None, failed_avp: bytes | None) -> list[bytes]:
    avps: list[bytes] = []
    if error_message:
        avps.append(avp_utf8(AVP_ERROR_MESSAGE, error_message, mandatory=False))
    if failed_avp is not None:
        avps.append(encode_avp(AVP_FAILED_AVP, failed_avp))
    return avps


def _answer(request: Header, result_code: int, avps: list[bytes]) -> bytes:
    return encode_with_header(
        answer_header_for(request, error=is_protocol_error(result_code)), avps
    )


def build_cea(
    request: Header,
    *,
    result_code: int,
    origin_host: str,
    origin_realm: str,
    host_ip_addresses: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address | str],
    vendor_id: int = 0,
    product_name: str = "ocs",
    firmware_revision: int | None = None,
    origin_state_id: int | None = None,
    auth_application_ids: Sequence[int] = (APP_CREDIT_CONTROL,),
    vendor_specific_application_ids: Sequence[tuple[int, int]] = (
        (VENDOR_3GPP, APP_CREDIT_CONTROL),
    ),
    supported_vendor_ids: Sequence[int] = (VENDOR_3GPP,),
    error_message: str | None = None,
    failed_avp: bytes | None = None,
) -> bytes:
    """Capabilities-Exchange-Answer (RFC 6733 §5.3.2), in its ABNF order.

    ``vendor_specific_application_ids`` are (Vendor-Id, Auth-Application-Id) pairs. Product-Name
    and Firmware-Revision go without the M bit (§4.5 table). E bit for a 3xxx result.
    """
    if not host_ip_addresses:
        raise ValueError("a CEA needs at least one Host-IP-Address")
    avps = [avp_u32(AVP_RESULT_CODE, result_code), *_origin(origin_host, origin_realm)]
    avps.extend(avp_address(AVP_HOST_IP_ADDRESS, address) for address in host_ip_addresses)
    avps.append(avp_u32(AVP_VENDOR_ID, vendor_id))
    avps.append(avp_utf8(AVP_PRODUCT_NAME, product_name, mandatory=False))
    if origin_state_id is not None:
        avps.append(avp_u32(AVP_ORIGIN_STATE_ID, origin_state_id))
    avps.extend(_error_avps(error_message, failed_avp))
    avps.extend(avp_u32(AVP_SUPPORTED_VENDOR_ID, vendor) for vendor in supported_vendor_ids)
    avps.extend(avp_u32(AVP_AUTH_APPLICATION_ID, app) for app in auth_application_ids)
    avps.extend(
        avp_grouped(
            AVP_VENDOR_SPECIFIC_APPLICATION_ID,
            (avp_u32(AVP_VENDOR_ID, vendor), avp_u32(AVP_AUTH_APPLICATION_ID, app)),
        )
        for vendor, app in vendor_specific_application_ids
    )
    if firmware_revision is not None:
        avps.append(avp_u32(AVP_FIRMWARE_REVISION, firmware_revision, mandatory=False))
    return _answer(request, result_code, avps)


def build_dwr(
    *,
    origin_host: str,
    origin_realm: str,
    hop_by_hop: int,
    end_to_end: int,
    origin_state_id: int | None = None,
) -> bytes:
    """Device-Watchdog-Request (RFC 6733 §5.5.1)."""
    avps = _origin(origin_host, origin_realm)
    if origin_state_id is not None:
        avps.append(avp_u32(AVP_ORIGIN_STATE_ID, origin_state_id))
    return encode_message(
        command_code=CMD_DEVICE_WATCHDOG,
        application_id=APP_COMMON,
        hop_by_hop=hop_by_hop,
        end_to_end=end_to_end,
        avps=avps,
        flags=FLAG_REQUEST,
    )


def build_dwa(
    request: Header,
    *,
    origin_host: str,
    origin_realm: str,
    result_code: int = DIAMETER_SUCCESS,
    origin_state_id: int | None = None,
    error_message: str | None = None,
    failed_avp: bytes | None = None,
) -> bytes:
    """Device-Watchdog-Answer (RFC 6733 §5.5.2)."""
    avps = [avp_u32(AVP_RESULT_CODE, result_code), *_origin(origin_host, origin_realm)]
    avps.extend(_error_avps(error_message, failed_avp))
    if origin_state_id is not None:
        avps.append(avp_u32(AVP_ORIGIN_STATE_ID, origin_state_id))
    return _answer(request, result_code, avps)


def build_dpr(
    *,
    origin_host: str,
    origin_realm: str,
    hop_by_hop: int,
    end_to_end: int,
    disconnect_cause: DisconnectCause = DisconnectCause.REBOOTING,
) -> bytes:
    """Disconnect-Peer-Request (RFC 6733 §5.4.1); REBOOTING is the cause for a shutdown."""
    avps = _origin(origin_host, origin_realm)
    avps.append(avp_u32(AVP_DISCONNECT_CAUSE, disconnect_cause))
    return encode_message(
        command_code=CMD_DISCONNECT_PEER,
        application_id=APP_COMMON,
        hop_by_hop=hop_by_hop,
        end_to_end=end_to_end,
        avps=avps,
        flags=FLAG_REQUEST,
    )


def build_dpa(
    request: Header,
    *,
    origin_host: str,
    origin_realm: str,
    result_code: int = DIAMETER_SUCCESS,
    error_message: str | None = None,
    failed_avp: bytes | None = None,
) -> bytes:
    """Disconnect-Peer-Answer (RFC 6733 §5.4.2)."""
    avps = [avp_u32(AVP_RESULT_CODE, result_code), *_origin(origin_host, origin_realm)]
    avps.extend(_error_avps(error_message, failed_avp))
    return _answer(request, result_code, avps)
