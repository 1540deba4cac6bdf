"""The focused RADIUS codec, byte for byte against pyrad, plus golden bytes and fuzzing."""

import hashlib
import hmac
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyrad import packet as pyrad_packet
from pyrad.dictionary import Dictionary

from ocs.radius import codec
from ocs.radius.codec import MalformedPacket, Packet, SharedSecret

DICTIONARY_PATH = Path(__file__).resolve().parents[2] / "dictionaries" / "dictionary"
SECRET = b"testing123"
SHARED = SharedSecret(SECRET)
FIXED_AUTHENTICATOR = bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f0")
MIKROTIK = 14988
CISCO = 9


@pytest.fixture(scope="module")
def dictionary() -> Dictionary:
    return Dictionary(str(DICTIONARY_PATH))


def pyrad_access_request(
    dictionary: Dictionary,
    *,
    identifier: int = 7,
    authenticator: bytes = FIXED_AUTHENTICATOR,
    proxy_states: tuple[bytes, ...] = (),
    message_authenticator: bool = True,
) -> pyrad_packet.AuthPacket:
    """A typical NAS Access-Request built by pyrad (MA first, as pyrad places it)."""
    request = pyrad_packet.AuthPacket(
        code=pyrad_packet.AccessRequest,
        id=identifier,
        secret=SECRET,
        authenticator=authenticator,
        dict=dictionary,
    )
    request["User-Name"] = "alice@example.net"
    request["User-Password"] = request.PwCrypt("secret-password")
    request["NAS-IP-Address"] = "192.0.2.1"
    request["NAS-Port"] = 17
    request["Calling-Station-Id"] = "+4930123456"
    for state in proxy_states:
        # AddAttribute appends; item assignment would replace the earlier Proxy-State.
        request.AddAttribute("Proxy-State", state)
    if message_authenticator:
        request.add_message_authenticator()
    return request


def hand_made(
    attributes: bytes = b"",
    *,
    code: int = codec.ACCESS_REQUEST,
    identifier: int = 1,
    length: int | None = None,
    authenticator: bytes = FIXED_AUTHENTICATOR,
) -> bytes:
    """Header + raw attribute octets, with a Length field that may lie."""
    if length is None:
        length = 20 + len(attributes)
    return struct.pack("!BBH", code, identifier, length) + authenticator + attributes


# --- Access-Request from pyrad ---------------------------------------------------------------


def test_pyrad_access_request_parses(dictionary: Dictionary) -> None:
    request = pyrad_access_request(dictionary, proxy_states=(b"ps-1", b"ps-2"))
    wire = request.RequestPacket()

    parsed = codec.parse_packet(wire)

    assert parsed.code == codec.ACCESS_REQUEST
    assert parsed.identifier == 7
    assert parsed.authenticator == FIXED_AUTHENTICATOR
    assert parsed.raw == wire
    assert [t for t, _ in parsed.attributes] == [80, 1, 2, 4, 5, 31, 33, 33]
    assert parsed.message_authenticator_offset == 22
    assert parsed.get_str(codec.USER_NAME) == "alice@example.net"
    assert parsed.get(codec.NAS_IP_ADDRESS) == bytes([192, 0, 2, 1])
    assert parsed.get_int(codec.NAS_PORT) == 17
    assert parsed.get_str(codec.CALLING_STATION_ID) == "+4930123456"
    assert parsed.get_all(codec.PROXY_STATE) == [b"ps-1", b"ps-2"]
    assert request.PwDecrypt(parsed.get(codec.USER_PASSWORD)) == "secret-password"


def test_message_authenticator_agrees_with_pyrad(dictionary: Dictionary) -> None:
    wire = pyrad_access_request(dictionary).RequestPacket()
    decoded = pyrad_packet.AuthPacket(packet=wire, secret=SECRET, dict=dictionary)

    assert decoded.verify_message_authenticator() is True
    assert codec.verify_message_authenticator(codec.parse_packet(wire), SHARED) is True


def test_any_tampered_octet_fails_the_message_authenticator(dictionary: Dictionary) -> None:
    wire = pyrad_access_request(dictionary).RequestPacket()
    checked = 0
    for index in range(len(wire)):
        tampered = bytearray(wire)
        tampered[index] ^= 0x01
        try:
            parsed = codec.parse_packet(bytes(tampered))
        except MalformedPacket:
            continue  # a length octet changed: dropped before any check
        checked += 1
        assert codec.verify_message_authenticator(parsed, SHARED) is False, index
    # Every octet but the Length field and attribute length octets reaches the MA check.
    assert checked > len(wire) - 10


def test_wrong_secret_fails_the_message_authenticator(dictionary: Dictionary) -> None:
    wire = pyrad_access_request(dictionary).RequestPacket()
    decoded = pyrad_packet.AuthPacket(packet=wire, secret=b"wrong-secret", dict=dictionary)

    assert decoded.verify_message_authenticator() is False
    parsed = codec.parse_packet(wire)
    assert codec.verify_message_authenticator(parsed, SharedSecret(b"wrong-secret")) is False


def test_missing_message_authenticator_is_false_not_an_error(dictionary: Dictionary) -> None:
    wire = pyrad_access_request(dictionary, message_authenticator=False).RequestPacket()
    parsed = codec.parse_packet(wire)

    assert parsed.message_authenticator_offset is None
    assert codec.verify_message_authenticator(parsed, SHARED) is False
    # pyrad raises instead of answering False.
    decoded = pyrad_packet.AuthPacket(packet=wire, secret=SECRET, dict=dictionary)
    with pytest.raises(Exception, match="No Message-Authenticator"):
        decoded.verify_message_authenticator()


def test_message_authenticator_not_first_still_verifies(dictionary: Dictionary) -> None:
    # Clients that append the MA last (older radclient, many NASes) must be accepted too.
    attributes = [(codec.USER_NAME, b"bob"), codec.attr_int(codec.NAS_PORT, 3)]
    body = b"".join(bytes((t, len(v) + 2)) + v for t, v in attributes) + bytes((80, 18)) + bytes(16)
    header = struct.pack("!BBH", codec.ACCESS_REQUEST, 9, 20 + len(body)) + FIXED_AUTHENTICATOR
    mac = hmac.digest(SECRET, header + body, "md5")
    wire = header + body[:-16] + mac

    parsed = codec.parse_packet(wire)

    assert parsed.message_authenticator_offset == len(wire) - 16
    assert codec.verify_message_authenticator(parsed, SHARED) is True
    decoded = pyrad_packet.AuthPacket(packet=wire, secret=SECRET, dict=dictionary)
    assert decoded.verify_message_authenticator() is True


# --- Replies decoded by pyrad ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "attributes"),
    [
        (codec.ACCESS_ACCEPT, [codec.attr_int(codec.SESSION_TIMEOUT, 3600)]),
        (codec.ACCESS_REJECT, [codec.attr_str(codec.REPLY_MESSAGE, "insufficient credit")]),
        (codec.ACCESS_CHALLENGE, [(codec.STATE, b"\x01\x02")]),
        (codec.ACCESS_ACCEPT, []),
    ],
)
def test_reply_is_accepted_by_pyrad(
    dictionary: Dictionary, code: int, attributes: list[tuple[int, bytes]]
) -> None:
    request = pyrad_access_request(dictionary)
    parsed = codec.parse_packet(request.RequestPacket())

    wire = codec.encode_reply(code, parsed.identifier, parsed.authenticator, SHARED, attributes)

    assert wire[20:22] == bytes((80, 18)), "Message-Authenticator must be the first attribute"
    reply = request.CreateReply(packet=wire)
    assert reply.code == code
    assert request.VerifyReply(reply, wire, enforce_ma=True) is True
    assert (
        reply.verify_message_authenticator(
            original_authenticator=request.authenticator, original_code=request.code
        )
        is True
    )
    ours = codec.parse_packet(wire)
    assert codec.verify_response_authenticator(ours, parsed.authenticator, SHARED) is True
    assert codec.verify_message_authenticator(
        ours, SHARED, request_authenticator=parsed.authenticator
    )
    assert list(ours.attributes[1:]) == attributes


def test_reply_attributes_decode_in_pyrad(dictionary: Dictionary) -> None:
    request = pyrad_access_request(dictionary)
    attributes = [
        codec.attr_int(codec.SESSION_TIMEOUT, 3600),
        codec.attr_int(codec.IDLE_TIMEOUT, 300),
        codec.attr_str(codec.REPLY_MESSAGE, "Grüße"),
        codec.attr_vsa(MIKROTIK, 8, b"2M/4M"),
    ]

    wire = codec.encode_reply(codec.ACCESS_ACCEPT, 7, FIXED_AUTHENTICATOR, SHARED, attributes)
    reply = request.CreateReply(packet=wire)

    assert reply["Session-Timeout"] == [3600]
    assert reply["Idle-Timeout"] == [300]
    assert reply["Reply-Message"] == ["Grüße"]
    assert reply["Mikrotik-Rate-Limit"] == ["2M/4M"]


def test_reply_is_byte_identical_to_pyrads(dictionary: Dictionary) -> None:
    request = pyrad_access_request(dictionary, proxy_states=(b"ps-1", b"ps-2"))
    received = pyrad_packet.AuthPacket(
        packet=request.RequestPacket(), secret=SECRET, dict=dictionary
    )
    pyrad_reply = received.CreateReply()  # copies Proxy-State, adds the MA first
    pyrad_reply["Session-Timeout"] = 3600
    pyrad_reply["Reply-Message"] = "ok"
    pyrad_wire = pyrad_reply.ReplyPacket()

    parsed = codec.parse_packet(received.raw_packet)
    ours = codec.encode_reply(
        codec.ACCESS_ACCEPT,
        parsed.identifier,
        parsed.authenticator,
        SHARED,
        [
            *codec.copy_proxy_state(parsed),
            codec.attr_int(codec.SESSION_TIMEOUT, 3600),
            codec.attr_str(codec.REPLY_MESSAGE, "ok"),
        ],
    )

    assert ours == pyrad_wire


def test_pyrads_reply_verifies_with_our_codec(dictionary: Dictionary) -> None:
    request = pyrad_access_request(dictionary)
    received = pyrad_packet.AuthPacket(
        packet=request.RequestPacket(), secret=SECRET, dict=dictionary
    )
    pyrad_reply = received.CreateReply()
    pyrad_reply.code = pyrad_packet.AccessReject
    pyrad_reply["Reply-Message"] = "blocked"

    parsed = codec.parse_packet(pyrad_reply.ReplyPacket())

    assert parsed.attributes[0][0] == codec.MESSAGE_AUTHENTICATOR  # pyrad puts it first too
    assert codec.verify_response_authenticator(parsed, FIXED_AUTHENTICATOR, SHARED) is True
    assert codec.verify_message_authenticator(
        parsed, SHARED, request_authenticator=FIXED_AUTHENTICATOR
    )
    assert not codec.verify_response_authenticator(parsed, bytes(16), SHARED)
    assert not codec.verify_message_authenticator(parsed, SHARED, request_authenticator=bytes(16))
    # A reply's MA cannot be checked without the request's authenticator.
    assert not codec.verify_message_authenticator(parsed, SHARED)
    assert not codec.verify_response_authenticator(parsed, b"short", SHARED)


def test_pyrad_accepts_unsigned_replies_unless_told_to_enforce(dictionary: Dictionary) -> None:
    # Why our daemon's future client must verify MA itself: pyrad's default is lenient.
    request = pyrad_access_request(dictionary)
    received = pyrad_packet.AuthPacket(
        packet=request.RequestPacket(), secret=SECRET, dict=dictionary
    )
    unsigned = received.CreateReply(message_authenticator=False).ReplyPacket()
    reply = request.CreateReply(packet=unsigned)

    assert request.VerifyReply(reply, unsigned) is True
    assert request.VerifyReply(reply, unsigned, enforce_ma=True) is False
    assert codec.verify_message_authenticator(codec.parse_packet(unsigned), SHARED) is False


# --- Golden bytes ----------------------------------------------------------------------------

# Access-Accept, identifier 42, request authenticator FIXED_AUTHENTICATOR, secret "testing123",
# Proxy-State "proxy-1", Session-Timeout 3600, Reply-Message "Welcome". Computed once and
# checked with pyrad (VerifyReply with enforce_ma, and byte-identical to pyrad's own reply).
GOLDEN_ACCEPT = bytes.fromhex(
    "022a003e90a3cbe8e75cc63865b3d8970729ebb15012fee128c8597e756f3b678b3583f687572109"
    "70726f78792d311b0600000e10120957656c636f6d65"
)


def test_golden_access_accept(dictionary: Dictionary) -> None:
    attributes = [
        (codec.PROXY_STATE, b"proxy-1"),
        codec.attr_int(codec.SESSION_TIMEOUT, 3600),
        codec.attr_str(codec.REPLY_MESSAGE, "Welcome"),
    ]

    wire = codec.encode_reply(codec.ACCESS_ACCEPT, 42, FIXED_AUTHENTICATOR, SHARED, attributes)

    assert wire.hex() == GOLDEN_ACCEPT.hex()
    request = pyrad_packet.AuthPacket(
        id=42, secret=SECRET, authenticator=FIXED_AUTHENTICATOR, dict=dictionary
    )
    request.AddAttribute("Proxy-State", b"proxy-1")
    assert request.VerifyReply(request.CreateReply(packet=wire), wire, enforce_ma=True)


def test_golden_access_request_matches_pyrad(dictionary: Dictionary) -> None:
    pyrad_wire = pyrad_access_request(dictionary, identifier=3).RequestPacket()
    parsed = codec.parse_packet(pyrad_wire)

    ours = codec.encode_request(
        codec.ACCESS_REQUEST,
        3,
        SHARED,
        parsed.attributes[1:],
        authenticator=FIXED_AUTHENTICATOR,
    )

    assert ours == pyrad_wire


# --- Accounting, Status-Server, Disconnect and CoA -------------------------------------------


def pyrad_accounting_request(
    dictionary: Dictionary, *, message_authenticator: bool
) -> pyrad_packet.AcctPacket:
    request = pyrad_packet.AcctPacket(id=99, secret=SECRET, dict=dictionary)
    request["User-Name"] = "alice@example.net"
    request["Acct-Status-Type"] = "Interim-Update"
    request["Acct-Session-Id"] = "5f3a-0001"
    request["Acct-Session-Time"] = 600
    request["Acct-Input-Octets"] = 123456
    request["Acct-Output-Gigawords"] = 2
    if message_authenticator:
        request.add_message_authenticator()
    return request


@pytest.mark.parametrize("message_authenticator", [True, False])
def test_pyrad_accounting_request_authenticator(
    dictionary: Dictionary, message_authenticator: bool
) -> None:
    wire = pyrad_accounting_request(
        dictionary, message_authenticator=message_authenticator
    ).RequestPacket()

    parsed = codec.parse_packet(wire)

    assert parsed.code == codec.ACCOUNTING_REQUEST
    assert parsed.get_int(codec.ACCT_STATUS_TYPE) == 3
    assert parsed.get_int(codec.ACCT_INPUT_OCTETS) == 123456
    assert parsed.get_int(codec.ACCT_OUTPUT_GIGAWORDS) == 2
    assert codec.verify_request_authenticator(parsed, SHARED) is True
    assert codec.verify_request_authenticator(parsed, SharedSecret(b"wrong")) is False
    assert codec.verify_message_authenticator(parsed, SHARED) is message_authenticator
    assert codec.verify_message_authenticator(parsed, SharedSecret(b"wrong")) is False


def test_access_request_has_no_request_authenticator_to_verify(dictionary: Dictionary) -> None:
    parsed = codec.parse_packet(pyrad_access_request(dictionary).RequestPacket())
    assert codec.verify_request_authenticator(parsed, SHARED) is False


def test_accounting_response_is_accepted_by_pyrad(dictionary: Dictionary) -> None:
    request = pyrad_accounting_request(dictionary, message_authenticator=True)
    parsed = codec.parse_packet(request.RequestPacket())

    wire = codec.encode_reply(
        codec.ACCOUNTING_RESPONSE, parsed.identifier, parsed.authenticator, SHARED, []
    )

    reply = request.CreateReply(packet=wire)
    assert request.VerifyReply(reply, wire) is True
    ours = codec.parse_packet(wire)
    # Accounting-Response MA is signed over 16 zero octets, like FreeRADIUS and pyrad do.
    assert codec.verify_message_authenticator(ours, SHARED)
    assert codec.verify_response_authenticator(ours, parsed.authenticator, SHARED)


def test_our_accounting_request_is_accepted_by_pyrad(dictionary: Dictionary) -> None:
    wire = codec.encode_request(
        codec.ACCOUNTING_REQUEST,
        5,
        SHARED,
        [
            codec.attr_str(codec.USER_NAME, "bob"),
            codec.attr_int(codec.ACCT_STATUS_TYPE, 1),
            codec.attr_str(codec.ACCT_SESSION_ID, "abc"),
        ],
    )

    decoded = pyrad_packet.AcctPacket(packet=wire, secret=SECRET, dict=dictionary)
    assert decoded.VerifyAcctRequest() is True
    assert decoded.verify_message_authenticator() is True
    assert decoded["Acct-Status-Type"] == ["Start"]
    assert wire == pyrad_byte_twin_of_accounting_request(dictionary)


def pyrad_byte_twin_of_accounting_request(dictionary: Dictionary) -> bytes:
    request = pyrad_packet.AcctPacket(id=5, secret=SECRET, dict=dictionary)
    request["User-Name"] = "bob"
    request["Acct-Status-Type"] = "Start"
    request["Acct-Session-Id"] = "abc"
    request.add_message_authenticator()
    wire: bytes = request.RequestPacket()
    return wire


def test_status_server_and_its_accounting_response(dictionary: Dictionary) -> None:
    wire = codec.encode_request(codec.STATUS_SERVER, 11, SHARED, [])
    decoded = pyrad_packet.AcctPacket(packet=wire, secret=SECRET, dict=dictionary)
    assert decoded.VerifyAcctRequest() is True  # pyrad checks the MA of Status-Server

    parsed = codec.parse_packet(wire)
    assert codec.verify_message_authenticator(parsed, SHARED)
    reply = codec.encode_reply(
        codec.ACCOUNTING_RESPONSE,
        11,
        parsed.authenticator,
        SHARED,
        [],
        request_code=codec.STATUS_SERVER,
    )
    assert decoded.VerifyReply(decoded.CreateReply(packet=reply), reply, enforce_ma=True)
    ours = codec.parse_packet(reply)
    assert codec.verify_message_authenticator(
        ours,
        SHARED,
        request_authenticator=parsed.authenticator,
        request_code=codec.STATUS_SERVER,
    )
    assert not codec.verify_message_authenticator(ours, SHARED)


@pytest.mark.parametrize(
    ("request_code", "reply_code"),
    [
        (codec.DISCONNECT_REQUEST, codec.DISCONNECT_ACK),
        (codec.DISCONNECT_REQUEST, codec.DISCONNECT_NAK),
        (codec.COA_REQUEST, codec.COA_ACK),
        (codec.COA_REQUEST, codec.COA_NAK),
    ],
)
def test_dynamic_authorization_round_trip(
    dictionary: Dictionary, request_code: int, reply_code: int
) -> None:
    wire = codec.encode_request(
        request_code, 77, SHARED, [codec.attr_str(codec.ACCT_SESSION_ID, "5f3a-0001")]
    )
    decoded = pyrad_packet.CoAPacket(packet=wire, secret=SECRET, dict=dictionary)
    assert decoded.VerifyCoARequest() is True
    assert decoded.verify_message_authenticator() is True
    parsed = codec.parse_packet(wire)
    assert codec.verify_request_authenticator(parsed, SHARED)
    assert codec.verify_message_authenticator(parsed, SHARED)

    reply = codec.encode_reply(
        reply_code, 77, parsed.authenticator, SHARED, [codec.attr_int(codec.ERROR_CAUSE, 503)]
    )

    assert decoded.VerifyReply(decoded.CreateReply(packet=reply), reply, enforce_ma=True)


def test_encode_request_rejects_misuse() -> None:
    with pytest.raises(ValueError, match="computed Request Authenticator"):
        codec.encode_request(codec.ACCOUNTING_REQUEST, 1, SHARED, [], authenticator=bytes(16))
    with pytest.raises(ValueError, match="not a request code"):
        codec.encode_request(codec.ACCESS_ACCEPT, 1, SHARED, [])
    with pytest.raises(ValueError, match="16 octets"):
        codec.encode_request(codec.ACCESS_REQUEST, 1, SHARED, [], authenticator=b"short")


def test_encode_request_without_message_authenticator() -> None:
    wire = codec.encode_request(
        codec.ACCESS_REQUEST, 1, SHARED, [(codec.USER_NAME, b"x")], message_authenticator=False
    )
    parsed = codec.parse_packet(wire)
    assert parsed.attributes == ((codec.USER_NAME, b"x"),)
    assert len(parsed.authenticator) == 16


# --- Proxy-State and Vendor-Specific ---------------------------------------------------------


def test_proxy_state_is_echoed_in_order(dictionary: Dictionary) -> None:
    request = pyrad_access_request(dictionary, proxy_states=(b"first", b"\x00second", b"third"))
    parsed = codec.parse_packet(request.RequestPacket())

    echoed = codec.copy_proxy_state(parsed)
    wire = codec.encode_reply(
        codec.ACCESS_REJECT,
        parsed.identifier,
        parsed.authenticator,
        SHARED,
        [*echoed, codec.attr_str(codec.REPLY_MESSAGE, "unknown account")],
    )

    assert echoed == [(33, b"first"), (33, b"\x00second"), (33, b"third")]
    assert codec.parse_packet(wire).get_all(codec.PROXY_STATE) == [
        b"first",
        b"\x00second",
        b"third",
    ]
    # pyrad's VerifyReply rejects Proxy-State the request did not carry (BlastRADIUS check).
    assert request.VerifyReply(request.CreateReply(packet=wire), wire, enforce_ma=True)
    assert codec.copy_proxy_state(codec.parse_packet(hand_made())) == []


def test_vendor_attributes_from_pyrad(dictionary: Dictionary) -> None:
    request = pyrad_access_request(dictionary)
    request["Mikrotik-Group"] = "prepaid"
    request["Mikrotik-Rate-Limit"] = "1M/2M"
    request["Cisco-AVPair"] = "shell:priv-lvl=15"
    parsed = codec.parse_packet(request.RequestPacket())

    assert parsed.vendor_attributes(MIKROTIK) == [(3, b"prepaid"), (8, b"1M/2M")]
    assert parsed.vendor_attributes(CISCO) == [(1, b"shell:priv-lvl=15")]
    assert parsed.vendor_attributes(2636) == []


def test_vendor_attributes_several_in_one_and_malformed_skipped() -> None:
    two_in_one = struct.pack("!I", MIKROTIK) + bytes((1, 6)) + b"\x00\x00\x04\x00"
    two_in_one += bytes((8, 5)) + b"1M/"
    overrun = struct.pack("!I", MIKROTIK) + bytes((8, 40)) + b"short"
    zero_length = struct.pack("!I", MIKROTIK) + bytes((8, 0)) + b"xx"
    lone_octet = struct.pack("!I", MIKROTIK) + bytes((8, 3)) + b"a" + b"\x07"
    too_short = struct.pack("!I", MIKROTIK) + b"\x01"
    attributes = b"".join(
        bytes((26, len(v) + 2)) + v
        for v in (too_short, overrun, two_in_one, zero_length, lone_octet)
    )

    parsed = codec.parse_packet(hand_made(attributes))

    assert parsed.vendor_attributes(MIKROTIK) == [(1, b"\x00\x00\x04\x00"), (8, b"1M/")]


def test_attr_vsa_round_trip() -> None:
    assert codec.attr_vsa(MIKROTIK, 8, b"2M/4M") == (
        26,
        b"\x00\x00\x3a\x8c\x08\x07" + b"2M/4M",
    )
    assert codec.attr_vsa(MIKROTIK, 3, bytes(247))[1][5] == 249
    with pytest.raises(ValueError, match="at most 247"):
        codec.attr_vsa(MIKROTIK, 3, bytes(248))
    with pytest.raises(ValueError, match="bad vendor"):
        codec.attr_vsa(MIKROTIK, 256, b"")


# --- Malformed packets -----------------------------------------------------------------------

MA = bytes((80, 18)) + bytes(16)


@pytest.mark.parametrize(
    ("datagram", "reason"),
    [
        (b"", "too_short"),
        (hand_made()[:19], "too_short"),
        (hand_made(length=19), "bad_length"),
        (hand_made(length=0), "bad_length"),
        (hand_made(bytes(4077), length=4097), "too_long"),
        (hand_made(length=65535), "too_long"),
        (hand_made(b"\x01\x05abc", length=30), "truncated"),
        (hand_made(b"\x01\x01"), "attribute_too_short"),
        (hand_made(b"\x01\x00abc"), "attribute_too_short"),
        (hand_made(b"\x01\x05abc" + b"\x1b"), "attribute_overrun"),
        (hand_made(b"\x01\x09abc"), "attribute_overrun"),
        (hand_made(b"\x01\x05abcdef", length=26), "attribute_overrun"),
        (hand_made(bytes((80, 17)) + bytes(15)), "bad_message_authenticator_length"),
        (hand_made(bytes((80, 2))), "bad_message_authenticator_length"),
        (hand_made(bytes((80, 19)) + bytes(17)), "bad_message_authenticator_length"),
        (hand_made(MA + b"\x01\x03a" + MA), "duplicate_message_authenticator"),
    ],
)
def test_malformed_reason(datagram: bytes, reason: str) -> None:
    with pytest.raises(MalformedPacket) as caught:
        codec.parse_packet(datagram)
    assert caught.value.reason == reason
    assert reason in codec.MALFORMED_REASONS
    assert isinstance(caught.value, ValueError)


def test_bad_integer_attribute() -> None:
    parsed = codec.parse_packet(hand_made(b"\x1b\x05abc" + b"\x1c\x06\x00\x00\x01\x00"))
    with pytest.raises(MalformedPacket) as caught:
        parsed.get_int(codec.SESSION_TIMEOUT)
    assert caught.value.reason == "bad_attribute"
    assert parsed.get_int(codec.IDLE_TIMEOUT) == 256


def test_malformed_reasons_are_a_closed_set() -> None:
    with pytest.raises(ValueError, match="unknown MalformedPacket reason"):
        MalformedPacket("something_new")


def test_padding_after_length_is_ignored(dictionary: Dictionary) -> None:
    wire = pyrad_access_request(dictionary).RequestPacket()

    parsed = codec.parse_packet(wire + b"\xff" * 37)

    assert parsed.raw == wire
    assert codec.verify_message_authenticator(parsed, SHARED)
    assert parsed == codec.parse_packet(wire)


def test_length_longer_than_datagram_is_dropped(dictionary: Dictionary) -> None:
    wire = pyrad_access_request(dictionary).RequestPacket()
    with pytest.raises(MalformedPacket) as caught:
        codec.parse_packet(wire[:-1])
    assert caught.value.reason == "truncated"


def test_header_only_packet() -> None:
    parsed = codec.parse_packet(hand_made(code=codec.STATUS_SERVER, identifier=200))
    assert parsed.attributes == ()
    assert parsed.identifier == 200
    assert parsed.message_authenticator_offset is None
    assert parsed.get(codec.USER_NAME) is None
    assert parsed.get_all(codec.USER_NAME) == []
    assert parsed.get_int(codec.SESSION_TIMEOUT) is None
    assert parsed.get_str(codec.USER_NAME) is None


def test_4096_octet_limit() -> None:
    # 20 octets of header + 15 attributes of 255 octets + one of 251 fill 4096 exactly.
    attributes = (bytes((25, 255)) + bytes(253)) * 15 + bytes((25, 251)) + bytes(249)
    largest = hand_made(attributes)
    assert len(largest) == 4096

    assert len(codec.parse_packet(largest).attributes) == 16
    with pytest.raises(MalformedPacket) as caught:
        codec.parse_packet(largest, max_length=4095)
    assert caught.value.reason == "too_long"
    with pytest.raises(MalformedPacket) as caught:
        codec.parse_packet(hand_made(attributes + b"\x01\x02"))
    assert caught.value.reason == "too_long"


def test_attribute_type_zero_and_unknown_codes_are_kept() -> None:
    # What to do with them is the adapter's policy, not the codec's.
    parsed = codec.parse_packet(hand_made(b"\x00\x03x\xff\x02", code=250))
    assert parsed.code == 250
    assert parsed.attributes == ((0, b"x"), (255, b""))


def test_get_str_replaces_bad_utf8() -> None:
    parsed = codec.parse_packet(hand_made(b"\x01\x05a\xffb"))
    assert parsed.get_str(codec.USER_NAME) == "a\ufffdb"


# --- Encoding limits and helpers -------------------------------------------------------------


def test_reply_limits() -> None:
    longest = (codec.CLASS, bytes(253))
    codec.encode_reply(codec.ACCESS_ACCEPT, 0, bytes(16), SHARED, [longest])
    with pytest.raises(ValueError, match="254 octets"):
        codec.encode_reply(codec.ACCESS_ACCEPT, 0, bytes(16), SHARED, [(25, bytes(254))])
    # 38 octets of header and MA + 15 x 255 = 3863, + 233 = 4096; one octet more is too long.
    fits = [longest] * 15 + [(25, bytes(4096 - 38 - 15 * 255 - 2))]
    assert len(codec.encode_reply(codec.ACCESS_ACCEPT, 0, bytes(16), SHARED, fits)) == 4096
    with pytest.raises(ValueError, match="4097 octets"):
        codec.encode_reply(
            codec.ACCESS_ACCEPT, 0, bytes(16), SHARED, [*fits[:-1], (25, bytes(232))]
        )
    with pytest.raises(ValueError, match="identifier"):
        codec.encode_reply(codec.ACCESS_ACCEPT, 256, bytes(16), SHARED, [])
    with pytest.raises(ValueError, match="16 octets"):
        codec.encode_reply(codec.ACCESS_ACCEPT, 1, bytes(15), SHARED, [])
    with pytest.raises(ValueError, match="request code"):
        codec.encode_reply(codec.ACCESS_REQUEST, 1, bytes(16), SHARED, [])


def test_attr_int() -> None:
    assert codec.attr_int(codec.SESSION_TIMEOUT, 3600) == (27, b"\x00\x00\x0e\x10")
    assert codec.attr_int(codec.ACCT_INPUT_OCTETS, 2**32 - 1) == (42, b"\xff\xff\xff\xff")
    for bad in (-1, 2**32):
        with pytest.raises(ValueError, match=r"0\.\.2\*\*32-1"):
            codec.attr_int(codec.SESSION_TIMEOUT, bad)


@pytest.mark.parametrize(
    ("text", "expected_octets"),
    [
        ("", 0),
        ("a" * 253, 253),
        ("a" * 300, 253),
        ("é" * 200, 252),  # 2-octet characters: 126 fit
        ("a" + "€" * 100, 253),  # 1 + 84 x 3
        ("€" * 100, 252),  # 84 x 3 = 252; a 3-octet character does not fit in 1 octet
        ("🙂" * 70, 252),  # 4-octet characters: 63 fit
    ],
)
def test_attr_str_truncates_at_a_character_boundary(text: str, expected_octets: int) -> None:
    attribute_type, value = codec.attr_str(codec.REPLY_MESSAGE, text)
    assert attribute_type == codec.REPLY_MESSAGE
    assert len(value) == expected_octets
    decoded = value.decode("utf-8")  # strict: no split character
    assert text.startswith(decoded)


# --- SharedSecret ----------------------------------------------------------------------------


@pytest.mark.parametrize("secret", [b"x", SECRET, bytes(range(64)), bytes(range(65)), b"k" * 300])
def test_hmac_md5_matches_the_standard_library(secret: bytes) -> None:
    shared = SharedSecret(secret)
    for data in (b"", b"abc", bytes(range(256)) * 3):
        assert shared.hmac_md5(data) == hmac.digest(secret, data, "md5")
    assert shared.secret == secret


def test_shared_secret_never_shows_in_repr() -> None:
    shared = SharedSecret(b"super-secret-value")
    for text in (repr(shared), str(shared), f"{shared}", repr([shared])):
        assert "super-secret" not in text
        assert "***" in text
    assert not hasattr(shared, "__dict__")


def test_shared_secret_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        SharedSecret(b"")
    with pytest.raises(TypeError, match="bytes"):
        SharedSecret("testing123")  # type: ignore[arg-type]


def test_packet_is_frozen() -> None:
    """Compiled (what ``make run`` runs), setting an attribute raises; interpreted, only mypy
    refuses it (the attributes are ``Final``): a setter that raised would slow every parse."""
    if not codec.__file__.endswith(".so"):
        pytest.skip("interpreted: Packet's attributes are Final to mypy only")
    parsed = codec.parse_packet(hand_made())
    with pytest.raises(AttributeError):
        parsed.code = 2  # type: ignore[misc]


# --- Fuzzing ---------------------------------------------------------------------------------


def _valid_request() -> bytes:
    return codec.encode_request(
        codec.ACCESS_REQUEST,
        17,
        SHARED,
        [
            codec.attr_str(codec.USER_NAME, "alice"),
            codec.attr_int(codec.NAS_PORT, 1),
            (codec.PROXY_STATE, b"p"),
            codec.attr_vsa(MIKROTIK, 8, b"1M/2M"),
        ],
        authenticator=FIXED_AUTHENTICATOR,
    )


VALID_REQUEST = _valid_request()
VALID_ACCOUNTING = codec.encode_request(
    codec.ACCOUNTING_REQUEST,
    3,
    SHARED,
    [codec.attr_int(codec.ACCT_STATUS_TYPE, 2), codec.attr_str(codec.ACCT_SESSION_ID, "s1")],
)


@st.composite
def mutated_packets(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from([VALID_REQUEST, VALID_ACCOUNTING, GOLDEN_ACCEPT])))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        kind = draw(st.sampled_from(["flip", "truncate", "length", "octet", "append", "insert"]))
        if kind == "flip" and data:
            index = draw(st.integers(min_value=0, max_value=len(data) - 1))
            data[index] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif kind == "truncate":
            del data[draw(st.integers(min_value=0, max_value=len(data))) :]
        elif kind == "length" and len(data) >= 4:
            data[2:4] = struct.pack("!H", draw(st.integers(min_value=0, max_value=65535)))
        elif kind == "octet" and data:
            index = draw(st.integers(min_value=0, max_value=len(data) - 1))
            data[index] = draw(st.integers(min_value=0, max_value=255))
        elif kind == "append":
            data += draw(st.binary(max_size=40))
        elif kind == "insert":
            index = draw(st.integers(min_value=0, max_value=len(data)))
            data[index:index] = draw(st.binary(min_size=1, max_size=20))
    return bytes(data)


def _exercise(packet: Packet, request_authenticator: bytes | None, vendor_id: int) -> None:
    """Everything the daemon may call on a parsed packet: only MalformedPacket may escape."""
    for shared in (SHARED, SharedSecret(b"other")):
        assert isinstance(codec.verify_message_authenticator(packet, shared), bool)
        assert isinstance(
            codec.verify_message_authenticator(
                packet, shared, request_authenticator=request_authenticator
            ),
            bool,
        )
        assert isinstance(codec.verify_request_authenticator(packet, shared), bool)
        assert isinstance(
            codec.verify_response_authenticator(packet, request_authenticator or b"", shared),
            bool,
        )
    packet.vendor_attributes(vendor_id)
    codec.copy_proxy_state(packet)
    for attribute_type in (codec.USER_NAME, codec.NAS_PORT, codec.ACCT_STATUS_TYPE):
        packet.get_str(attribute_type)
        packet.get_all(attribute_type)
        try:
            packet.get_int(attribute_type)
        except MalformedPacket as error:
            assert error.reason == "bad_attribute"


def _parse_or_drop(datagram: bytes) -> Packet | None:
    try:
        packet = codec.parse_packet(datagram)
    except MalformedPacket as error:
        assert error.reason in codec.MALFORMED_REASONS
        return None
    assert len(packet.raw) <= min(len(datagram), codec.MAX_PACKET_LENGTH)
    assert len(packet.authenticator) == 16
    return packet


FUZZ_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@FUZZ_SETTINGS
@given(
    datagram=st.binary(max_size=300),
    request_authenticator=st.none() | st.binary(min_size=0, max_size=20),
    vendor_id=st.sampled_from([MIKROTIK, CISCO, 0]),
)
def test_fuzz_arbitrary_bytes(
    datagram: bytes, request_authenticator: bytes | None, vendor_id: int
) -> None:
    packet = _parse_or_drop(datagram)
    if packet is not None:
        _exercise(packet, request_authenticator, vendor_id)


@FUZZ_SETTINGS
@given(
    datagram=mutated_packets(),
    request_authenticator=st.none() | st.binary(min_size=16, max_size=16),
    vendor_id=st.sampled_from([MIKROTIK, CISCO]),
)
def test_fuzz_mutated_packets(
    datagram: bytes, request_authenticator: bytes | None, vendor_id: int
) -> None:
    packet = _parse_or_drop(datagram)
    if packet is not None:
        _exercise(packet, request_authenticator, vendor_id)


@FUZZ_SETTINGS
@given(
    identifier=st.integers(min_value=0, max_value=255),
    request_authenticator=st.binary(min_size=16, max_size=16),
    code=st.sampled_from([codec.ACCESS_ACCEPT, codec.ACCESS_REJECT, codec.ACCESS_CHALLENGE]),
    attributes=st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=255).filter(lambda t: t not in (33, 80)),
            st.binary(max_size=253),
        ),
        max_size=12,
    ),
)
def test_fuzz_reply_round_trip(
    identifier: int,
    request_authenticator: bytes,
    code: int,
    attributes: list[tuple[int, bytes]],
) -> None:
    wire = codec.encode_reply(code, identifier, request_authenticator, SHARED, attributes)

    parsed = codec.parse_packet(wire)
    assert parsed.attributes[1:] == tuple(attributes)
    assert codec.verify_message_authenticator(
        parsed, SHARED, request_authenticator=request_authenticator
    )
    assert codec.verify_response_authenticator(parsed, request_authenticator, SHARED)
    # pyrad without a dictionary checks the same bytes (no attribute decoding involved).
    request = pyrad_packet.AuthPacket(
        id=identifier, secret=SECRET, authenticator=request_authenticator
    )
    assert request.VerifyReply(request.CreateReply(packet=wire), wire, enforce_ma=True)
    expected_authenticator = hashlib.md5(
        wire[:4] + request_authenticator + wire[20:] + SECRET
    ).digest()
    assert parsed.authenticator == expected_authenticator


def test_a_reply_without_message_authenticator(dictionary: Dictionary) -> None:
    """For an Accounting-Response over RadSec (see encode_reply): authentic, without an MA."""
    request = pyrad_accounting_request(dictionary, message_authenticator=True)
    parsed = codec.parse_packet(request.RequestPacket())
    wire = codec.encode_reply(
        codec.ACCOUNTING_RESPONSE,
        parsed.identifier,
        parsed.authenticator,
        SHARED,
        [(codec.PROXY_STATE, b"p")],
        message_authenticator=False,
    )
    reply = codec.parse_packet(wire)
    assert reply.message_authenticator_offset is None
    assert reply.attributes == ((codec.PROXY_STATE, b"p"),)
    assert codec.verify_response_authenticator(reply, parsed.authenticator, SHARED)
    assert request.VerifyReply(request.CreateReply(packet=wire), wire) is True


def test_a_parsed_packet_is_a_value() -> None:
    """Two parses of the same octets are equal and hash alike; a different octet is not."""
    key = codec.SharedSecret(b"s3cret")
    wire = codec.encode_request(
        codec.ACCESS_REQUEST, 9, key, [codec.attr_str(codec.USER_NAME, "alice")]
    )
    first, again = codec.parse_packet(wire), codec.parse_packet(bytes(wire))
    assert first == again and hash(first) == hash(again)
    assert first != codec.parse_packet(wire[:-1] + bytes([wire[-1] ^ 1]))
    assert first != wire
    assert repr(first).startswith("Packet(code=1, identifier=9, ")


def test_md5_is_cpythons_own_where_it_has_one_and_hashlibs_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib

    data = bytes(range(256)) * 3
    own = codec._builtin_md5()
    assert own is importlib.import_module("_md5").md5
    assert own(data).digest() == hashlib.md5(data).digest()
    state = own(b"k" * 64)
    state.update(data)
    assert state.copy().digest() == hashlib.md5(b"k" * 64 + data).digest()

    def missing(name: str) -> object:
        raise ImportError(name)

    monkeypatch.setattr(importlib, "import_module", missing)
    assert codec._builtin_md5() is hashlib.md5
