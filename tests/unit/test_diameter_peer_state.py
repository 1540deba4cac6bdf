"""The peer: every (state, event) pair of the RFC 6733 §5.6 table, the RFC 3539 watchdog with a
seeded Random, the capabilities exchange, and the base messages read back by python-diameter."""

import itertools
import random

import pytest
from diameter.message import Message as LibMessage
from diameter.message.avp.grouped import VendorSpecificApplicationId
from diameter.message.commands.capabilities_exchange import (
    CapabilitiesExchangeAnswer,
    CapabilitiesExchangeRequest,
)
from diameter.message.commands.device_watchdog import DeviceWatchdogAnswer, DeviceWatchdogRequest
from diameter.message.commands.disconnect_peer import DisconnectPeerAnswer, DisconnectPeerRequest

from ocs.diameter import codec
from ocs.diameter.codec import MissingAvp
from ocs.diameter.peer_state import (
    TRANSITIONS,
    WATCHDOG_EVENTS,
    CapabilitiesResult,
    DisconnectCause,
    PeerAction,
    PeerEvent,
    PeerProtocolError,
    PeerState,
    PeerStateMachine,
    Watchdog,
    WatchdogAction,
    build_cea,
    build_dpa,
    build_dpr,
    build_dwa,
    build_dwr,
    capabilities_exchange,
)

S, E, A = PeerState, PeerEvent, PeerAction

# --- The table -------------------------------------------------------------------------------


@pytest.mark.parametrize(("state", "event"), list(itertools.product(PeerState, PeerEvent)))
def test_every_pair_is_in_the_table_or_raises(state: PeerState, event: PeerEvent) -> None:
    machine = PeerStateMachine(state)
    expected = TRANSITIONS.get((state, event))
    if expected is None:
        with pytest.raises(PeerProtocolError) as caught:
            machine.handle(event)
        assert caught.value.state is state
        assert caught.value.event is event
        # Before the CER the peer is unknown (3010); otherwise we cannot comply (5012).
        expected_code = 3010 if state is S.WAIT_CER else 5012
        assert caught.value.result_code == expected_code
        assert machine.state is S.CLOSED
    else:
        next_state, actions = expected
        assert machine.handle(event) == actions
        assert machine.state is next_state


def test_table_invariants() -> None:
    for (state, event), (next_state, actions) in TRANSITIONS.items():
        # Closing the transport always ends in CLOSED, and CLOSED never keeps a transport.
        assert (A.CLOSE in actions) == (next_state is S.CLOSED and state is not S.CLOSED), (
            state,
            event,
        )
        # A CLOSE, if any, is the last thing done.
        assert A.CLOSE not in actions[:-1]
    # Every state with a transport survives the peer going away.
    for state in PeerState:
        if state is not S.CLOSED:
            assert TRANSITIONS[(state, E.PEER_DISCONNECTED)][0] is S.CLOSED
    # Every state can be reached from CLOSED.
    reached = {S.CLOSED}
    frontier = [S.CLOSED]
    while frontier:
        current = frontier.pop()
        for (state, _event), (next_state, _actions) in TRANSITIONS.items():
            if state is current and next_state not in reached:
                reached.add(next_state)
                frontier.append(next_state)
    assert reached == set(PeerState)


def test_a_whole_connection_life() -> None:
    peer = PeerStateMachine()
    steps = [
        (E.CONNECTION_ACCEPTED, (), S.WAIT_CER),
        (E.RCV_CER_ACCEPTED, (A.SEND_CEA,), S.OPEN),
        (E.RCV_MESSAGE, (A.PROCESS,), S.OPEN),
        (E.RCV_DWR, (A.SEND_DWA,), S.OPEN),
        (E.WATCHDOG_DWR_DUE, (A.SEND_DWR,), S.OPEN),
        (E.RCV_DWA, (), S.OPEN),
        (E.STOP, (A.SEND_DPR,), S.CLOSING),
        (E.RCV_MESSAGE, (A.PROCESS,), S.CLOSING),  # drained, not refused
        (E.RCV_DPA, (A.CLOSE,), S.CLOSED),
    ]
    for event, actions, state in steps:
        assert peer.handle(event) == actions
        assert peer.state is state


def test_the_peer_says_goodbye_first() -> None:
    peer = PeerStateMachine(S.OPEN)
    assert peer.handle(E.RCV_DPR) == (A.SEND_DPA,)
    assert peer.state is S.WAIT_DISCONNECT
    assert peer.handle(E.PEER_DISCONNECTED) == (A.CLOSE,)
    assert peer.state is S.CLOSED


def test_hostile_peers() -> None:
    silent = PeerStateMachine(S.WAIT_CER)
    assert silent.handle(E.TIMEOUT) == (A.CLOSE,)
    rude = PeerStateMachine(S.WAIT_CER)
    assert rude.handle(E.RCV_MESSAGE) == (A.REJECT_UNKNOWN_PEER, A.CLOSE)
    refused = PeerStateMachine(S.WAIT_CER)
    assert refused.handle(E.RCV_CER_REJECTED) == (A.SEND_ERROR_CEA, A.CLOSE)
    dead = PeerStateMachine(S.OPEN)
    assert dead.handle(WATCHDOG_EVENTS[WatchdogAction.CLOSE]) == (A.CLOSE,)
    assert dead.state is S.CLOSED


# --- Watchdog (RFC 3539 §3.4.1) --------------------------------------------------------------


def test_watchdog_sends_a_dwr_then_closes() -> None:
    dog = Watchdog(now=1000.0, rng=random.Random(7))
    first = dog.next_deadline()
    assert 1028.0 <= first <= 1032.0
    assert dog.on_timeout(first - 0.001) is None  # early wake-up: nothing to do
    assert dog.on_timeout(first) is WatchdogAction.SEND_DWR
    assert dog.pending
    second = dog.next_deadline()
    assert first + 28.0 <= second <= first + 32.0
    assert dog.on_timeout(second) is WatchdogAction.CLOSE
    assert dog.on_timeout(second + 100) is WatchdogAction.CLOSE  # stays dead


def test_watchdog_dwa_clears_and_traffic_only_delays() -> None:
    dog = Watchdog(now=0.0, tw_init_s=10.0, rng=random.Random(1))
    assert dog.on_timeout(dog.next_deadline()) is WatchdogAction.SEND_DWR
    # Other traffic proves the link is up and pushes the timer, but the DWR stays pending.
    dog.on_traffic(20.0)
    assert 28.0 <= dog.next_deadline() <= 32.0
    assert dog.pending
    dog.on_dwa(21.0)
    assert not dog.pending
    assert 29.0 <= dog.next_deadline() <= 33.0
    assert dog.on_timeout(dog.next_deadline()) is WatchdogAction.SEND_DWR


def test_watchdog_is_deterministic_with_a_seed_and_jitters_both_ways() -> None:
    def deadlines(seed: int) -> list[float]:
        dog = Watchdog(now=0.0, rng=random.Random(seed))
        found = []
        for step in range(200):
            dog.on_traffic(float(step))
            found.append(dog.next_deadline() - step)
        return found

    assert deadlines(42) == deadlines(42)
    assert deadlines(42) != deadlines(43)
    spread = deadlines(3)
    assert min(spread) >= 28.0
    assert max(spread) <= 32.0
    assert min(spread) < 29.0
    assert max(spread) > 31.0


def test_watchdog_defaults_and_limits() -> None:
    assert 28.0 <= Watchdog(now=0.0).next_deadline() <= 32.0
    with pytest.raises(ValueError, match="at least 6"):
        Watchdog(now=0.0, tw_init_s=5.9)
    assert WATCHDOG_EVENTS[WatchdogAction.SEND_DWR] is E.WATCHDOG_DWR_DUE


# --- Capabilities exchange (RFC 6733 §5.3) ---------------------------------------------------


def cer(
    *,
    origin_host: bytes | None = b"pcef.example.net",
    auth: list[int] | None = None,
    vendor_specific: list[VendorSpecificApplicationId] | None = None,
    acct: list[int] | None = None,
) -> codec.Message:
    request = CapabilitiesExchangeRequest()
    request.header.hop_by_hop_identifier = 3
    request.header.end_to_end_identifier = 4
    if origin_host is not None:
        request.origin_host = origin_host
    request.origin_realm = b"example.net"
    request.host_ip_address = ["192.0.2.1"]
    request.vendor_id = 0
    request.product_name = "freeDiameter"
    request.auth_application_id = auth or []
    request.acct_application_id = acct or []
    request.vendor_specific_application_id = vendor_specific or []
    return codec.parse_message(request.as_bytes())


ALLOWED_CALLS: list[tuple[str, str, str]] = []


def allow_example_net(host: str, realm: str, address: str) -> bool:
    ALLOWED_CALLS.append((host, realm, address))
    return realm == "example.net"


def judge(message: codec.Message) -> CapabilitiesResult:
    return capabilities_exchange(message, allowed=allow_example_net, peer_address="192.0.2.1")


def test_capabilities_exchange_outcomes() -> None:
    assert judge(cer(auth=[4])) == CapabilitiesResult(2001, frozenset({4}))
    assert ALLOWED_CALLS[-1] == ("pcef.example.net", "example.net", "192.0.2.1")
    # freeDiameter as a relay advertises 0xffffffff: that is a common application.
    assert judge(cer(auth=[0xFFFFFFFF])) == (2001, frozenset({4}))
    # Auth-Application-Id 4 inside Vendor-Specific-Application-Id counts as well.
    vsai = [VendorSpecificApplicationId(vendor_id=10415, auth_application_id=4)]
    assert judge(cer(vendor_specific=vsai)).result_code == 2001
    # Gx only: nothing in common.
    assert judge(cer(auth=[16777238])) == (5010, frozenset())
    # Accounting-only credit control does not count.
    assert judge(cer(acct=[4])).result_code == 5010
    # Not on the allow-list: 3010, whatever it supports.
    stranger = capabilities_exchange(
        cer(auth=[4]), allowed=lambda *_: False, peer_address="198.51.100.9"
    )
    assert stranger == (3010, frozenset())


def test_capabilities_exchange_needs_origin_host() -> None:
    with pytest.raises(MissingAvp) as caught:
        capabilities_exchange(
            cer(origin_host=None, auth=[4]), allowed=allow_example_net, peer_address="x"
        )
    assert caught.value.result_code == 5005
    assert caught.value.failed_avp == bytes.fromhex("00000108 40000008")
    not_a_cer = codec.parse_message(
        build_dwr(origin_host="a", origin_realm="b", hop_by_hop=1, end_to_end=1)
    )
    with pytest.raises(ValueError, match="Capabilities-Exchange-Request"):
        capabilities_exchange(not_a_cer, allowed=allow_example_net, peer_address="x")


# --- Base messages read back by python-diameter ----------------------------------------------


def test_cea_success() -> None:
    request = cer(auth=[4]).header
    answer = build_cea(
        request,
        result_code=2001,
        origin_host="ocs.example.net",
        origin_realm="ocs.example.net",
        host_ip_addresses=["127.0.0.1", "::1"],
        firmware_revision=1,
        origin_state_id=1700000000,
    )
    lib = LibMessage.from_bytes(answer)
    assert isinstance(lib, CapabilitiesExchangeAnswer)
    assert not lib.header.is_error
    assert not lib.header.is_request
    assert (lib.header.hop_by_hop_identifier, lib.header.end_to_end_identifier) == (3, 4)
    assert lib.result_code == 2001
    assert lib.origin_host == b"ocs.example.net"
    assert lib.host_ip_address == [(1, "127.0.0.1"), (2, "::1")]
    assert lib.vendor_id == 0
    assert lib.product_name == "ocs"
    assert lib.auth_application_id == [4]
    assert lib.supported_vendor_id == [10415]
    assert lib.vendor_specific_application_id == [
        VendorSpecificApplicationId(vendor_id=10415, auth_application_id=4)
    ]
    assert lib.firmware_revision == 1
    assert lib.origin_state_id == 1700000000
    avps = codec.parse_message(answer).avps
    product = next(a for a in avps if a.code == codec.AVP_PRODUCT_NAME)
    assert not product.is_mandatory  # Product-Name MUST NOT have the M bit (§4.5)


def _cea(result_code: int, error_message: str | None = None) -> bytes:
    return build_cea(
        cer(auth=[4]).header,
        result_code=result_code,
        origin_host="ocs.example.net",
        origin_realm="ocs.example.net",
        host_ip_addresses=["127.0.0.1"],
        error_message=error_message,
    )


def test_cea_refusal_has_the_e_bit_for_3010_only() -> None:
    unknown = _cea(3010, "unknown peer")
    assert codec.parse_header(unknown).is_error
    lib = LibMessage.from_bytes(unknown)
    assert lib.result_code == 3010
    assert lib.error_message == "unknown peer"
    assert not codec.parse_header(_cea(5010)).is_error
    with pytest.raises(ValueError, match="Host-IP-Address"):
        build_cea(
            cer(auth=[4]).header,
            result_code=2001,
            origin_host="a",
            origin_realm="b",
            host_ip_addresses=[],
        )


GOLDEN_DWR = bytes.fromhex(
    "01000038 80000118 00000000 00000001 00000002"
    "00000108 4000000b 612e6200"  # Origin-Host "a.b"
    "00000128 40000009 62000000"  # Origin-Realm "b"
    "00000116 4000000c 00000005"  # Origin-State-Id 5
)
GOLDEN_DPR = bytes.fromhex(
    "01000038 8000011a 00000000 00000003 00000004"
    "00000108 4000000b 612e6200"
    "00000128 40000009 62000000"
    "00000111 4000000c 00000000"  # Disconnect-Cause REBOOTING
)


def test_requests_we_send() -> None:
    dwr = build_dwr(
        origin_host="a.b", origin_realm="b", hop_by_hop=1, end_to_end=2, origin_state_id=5
    )
    assert dwr == GOLDEN_DWR
    lib = LibMessage.from_bytes(dwr)
    assert isinstance(lib, DeviceWatchdogRequest)
    assert lib.origin_host == b"a.b"
    dpr = build_dpr(origin_host="a.b", origin_realm="b", hop_by_hop=3, end_to_end=4)
    assert dpr == GOLDEN_DPR
    lib = LibMessage.from_bytes(dpr)
    assert isinstance(lib, DisconnectPeerRequest)
    assert lib.disconnect_cause == DisconnectCause.REBOOTING
    busy = build_dpr(
        origin_host="a.b",
        origin_realm="b",
        hop_by_hop=3,
        end_to_end=4,
        disconnect_cause=DisconnectCause.BUSY,
    )
    assert LibMessage.from_bytes(busy).disconnect_cause == 1


def test_answers_we_send() -> None:
    dwr = codec.parse_header(GOLDEN_DWR)
    dwa = build_dwa(dwr, origin_host="ocs", origin_realm="realm", origin_state_id=9)
    lib = LibMessage.from_bytes(dwa)
    assert isinstance(lib, DeviceWatchdogAnswer)
    assert (lib.result_code, lib.origin_host, lib.origin_state_id) == (2001, b"ocs", 9)
    assert (lib.header.hop_by_hop_identifier, lib.header.end_to_end_identifier) == (1, 2)
    assert not lib.header.is_request
    dpr = codec.parse_header(GOLDEN_DPR)
    dpa = build_dpa(dpr, origin_host="ocs", origin_realm="realm")
    lib = LibMessage.from_bytes(dpa)
    assert isinstance(lib, DisconnectPeerAnswer)
    assert lib.result_code == 2001
    failed = build_dwa(
        dwr,
        origin_host="ocs",
        origin_realm="realm",
        result_code=5005,
        error_message="missing",
        failed_avp=MissingAvp(codec.AVP_ORIGIN_HOST).failed_avp,
    )
    parsed = codec.parse_message(failed)
    assert not parsed.header.is_error
    assert [a.code for a in parsed.avps] == [268, 264, 296, 281, 279]
