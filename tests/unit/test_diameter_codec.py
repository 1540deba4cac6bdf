"""The Diameter header and AVP codec: golden bytes, python-diameter cross-checks, RFC 6733 §7
error codes and Failed-AVP contents, and fuzzing."""

import contextlib
import ipaddress
from datetime import UTC, datetime

import pytest
from diameter.message import Message as LibMessage
from diameter.message.avp import Avp as LibAvp
from diameter.message.commands.capabilities_exchange import CapabilitiesExchangeRequest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocs.diameter import codec
from ocs.diameter.codec import Avp, MalformedMessage, MissingAvp

# --- Golden bytes (worked out by hand from RFC 6733 §3 and §4) -------------------------------

GOLDEN_SESSION_ID_AVP = bytes.fromhex("00000107 4000000b 616263 00")  # Session-Id "abc", padded
GOLDEN_RESULT_CODE_AVP = bytes.fromhex("0000010c 4000000c 000007d1")  # Result-Code 2001
GOLDEN_VENDOR_AVP = bytes.fromhex("00000368 c0000010 000028af 00000002")  # 3GPP Reporting-Reason
GOLDEN_ADDRESS_AVP = bytes.fromhex("00000101 4000000e 0001 7f000001 0000")  # Host-IP 127.0.0.1
GOLDEN_DWR = bytes.fromhex(
    "0100002c 80000118 00000000 11223344 55667788"  # version 1, length 44, R, 280, app 0
    "00000108 4000000b 612e6200"  # Origin-Host "a.b"
    "00000128 40000009 62000000"  # Origin-Realm "b"
)


def test_golden_avps() -> None:
    assert codec.encode_avp(codec.AVP_SESSION_ID, b"abc") == GOLDEN_SESSION_ID_AVP
    assert codec.avp_utf8(codec.AVP_SESSION_ID, "abc") == GOLDEN_SESSION_ID_AVP
    assert codec.avp_u32(codec.AVP_RESULT_CODE, 2001) == GOLDEN_RESULT_CODE_AVP
    assert (
        codec.avp_u32(codec.AVP_3GPP_REPORTING_REASON, 2, vendor_id=codec.VENDOR_3GPP)
        == GOLDEN_VENDOR_AVP
    )
    assert codec.avp_address(codec.AVP_HOST_IP_ADDRESS, "127.0.0.1") == GOLDEN_ADDRESS_AVP
    assert codec.encode_avp(1, b"", mandatory=False) == bytes.fromhex("00000001 00000008")


def test_golden_message() -> None:
    built = codec.encode_message(
        command_code=codec.CMD_DEVICE_WATCHDOG,
        application_id=codec.APP_COMMON,
        hop_by_hop=0x11223344,
        end_to_end=0x55667788,
        avps=[
            codec.encode_avp(codec.AVP_ORIGIN_HOST, b"a.b"),
            codec.encode_avp(codec.AVP_ORIGIN_REALM, b"b"),
        ],
        flags=codec.FLAG_REQUEST,
    )
    assert built == GOLDEN_DWR
    message = codec.parse_message(GOLDEN_DWR)
    assert message.header == codec.Header(
        version=1,
        length=44,
        flags=0x80,
        command_code=280,
        application_id=0,
        hop_by_hop=0x11223344,
        end_to_end=0x55667788,
    )
    assert message.header.is_request
    assert not message.header.is_proxiable
    assert not message.header.is_error
    assert not message.header.is_retransmit
    assert message.header.pack() == GOLDEN_DWR[:20]
    assert [avp.code for avp in message.avps] == [264, 296]
    assert message.avps[0].data == b"a.b"
    assert message.avps[0].raw == GOLDEN_DWR[20:32]
    assert message.avps[1].as_identity() == "b"


def test_typed_encoders_and_accessors_round_trip() -> None:
    cases: list[tuple[bytes, str, object]] = [
        (codec.avp_u32(1000, 0xFFFFFFFF), "as_u32", 0xFFFFFFFF),
        (codec.avp_u64(1000, 2**64 - 1), "as_u64", 2**64 - 1),
        (codec.avp_i32(1000, -5), "as_i32", -5),
        (codec.avp_i64(1000, -(2**63)), "as_i64", -(2**63)),
        (codec.avp_utf8(1000, "grüße"), "as_utf8", "grüße"),
        (codec.avp_address(1000, "2001:db8::1"), "as_address", ipaddress.ip_address("2001:db8::1")),
        (codec.avp_address(1000, ipaddress.IPv4Address("10.0.0.1")), "as_address",
         ipaddress.IPv4Address("10.0.0.1")),
        (codec.avp_u32(1000, 7, vendor_id=10415, mandatory=False), "as_u32", 7),
    ]  # fmt: skip
    for encoded, accessor, expected in cases:
        (avp,) = _avps_of(encoded)
        assert getattr(avp, accessor)() == expected
        assert avp.raw == encoded


@pytest.mark.parametrize(
    "when",
    [
        datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(2040, 1, 1, tzinfo=UTC),  # after the 2036 NTP roll-over (RFC 4330 §3)
    ],
)
def test_time_round_trips_across_the_ntp_eras(when: datetime) -> None:
    (avp,) = _avps_of(codec.avp_time(codec.AVP_EVENT_TIMESTAMP, when))
    assert avp.as_time() == when
    assert avp.data == (
        int((when - datetime(1900, 1, 1, tzinfo=UTC)).total_seconds()) % 2**32
    ).to_bytes(4, "big")
    if when.year < 2036:
        # python-diameter reads the same instant (as a naive local datetime). Its era-1 base
        # is an hour off (2085974896 instead of 2**32 - 2208988800), so only era 0 here.
        lib = LibAvp.from_bytes(avp.raw)
        assert lib.value.timestamp() == when.timestamp()


def test_time_outside_the_format_is_refused() -> None:
    with pytest.raises(ValueError, match="range"):
        codec.avp_time(55, datetime(1960, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="timezone-aware"):
        codec.avp_time(55, datetime(2024, 1, 1))  # naive on purpose


def _avps_of(*avps: bytes) -> tuple[Avp, ...]:
    return codec.parse_message(_request(*avps)).avps


def _request(*avps: bytes, command_code: int = 272, application_id: int = 4) -> bytes:
    return codec.encode_message(
        command_code=command_code,
        application_id=application_id,
        hop_by_hop=1,
        end_to_end=2,
        avps=avps,
        flags=codec.FLAG_REQUEST | codec.FLAG_PROXIABLE,
    )


def _with_header_word(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + value.to_bytes(4, "big") + data[offset + 4 :]


# --- Cross-checks with python-diameter -------------------------------------------------------


def test_library_reads_what_we_encode() -> None:
    data = _request(
        codec.avp_utf8(codec.AVP_SESSION_ID, "ocs;1;2"),
        codec.avp_u32(codec.AVP_RESULT_CODE, 4012),
        codec.avp_u64(codec.AVP_CC_TOTAL_OCTETS, 2**40),
        codec.avp_address(codec.AVP_HOST_IP_ADDRESS, "192.0.2.7"),
        codec.avp_grouped(
            codec.AVP_SUBSCRIPTION_ID,
            [
                codec.avp_u32(codec.AVP_SUBSCRIPTION_ID_TYPE, 1),
                codec.avp_utf8(codec.AVP_SUBSCRIPTION_ID_DATA, "262011234567890"),
            ],
        ),
    )
    lib = LibMessage.from_bytes(data, plain_msg=True)
    assert lib.header.length == len(data)
    assert lib.header.hop_by_hop_identifier == 1
    values = [avp.value for avp in lib.avps]
    assert values[:4] == ["ocs;1;2", 4012, 2**40, (1, "192.0.2.7")]
    assert [(avp.code, avp.value) for avp in values[4]] == [(450, 1), (444, "262011234567890")]


def test_we_read_what_the_library_encodes() -> None:
    cer = CapabilitiesExchangeRequest()
    cer.header.hop_by_hop_identifier = 77
    cer.header.end_to_end_identifier = 88
    cer.origin_host = b"pcef.example.net"
    cer.origin_realm = b"example.net"
    cer.host_ip_address = ["192.0.2.1", "2001:db8::2"]
    cer.vendor_id = 10415
    cer.product_name = "pcef"
    cer.auth_application_id = [4]
    data = cer.as_bytes()
    message = codec.parse_message(data)
    assert message.header.command_code == 257
    assert message.header.is_request
    assert (message.header.hop_by_hop, message.header.end_to_end) == (77, 88)
    origin_host = message.find(codec.AVP_ORIGIN_HOST)
    assert origin_host is not None
    assert origin_host.as_identity() == "pcef.example.net"
    assert [a.as_address() for a in message.find_all(codec.AVP_HOST_IP_ADDRESS)] == [
        ipaddress.ip_address("192.0.2.1"),
        ipaddress.ip_address("2001:db8::2"),
    ]
    product = message.find(codec.AVP_PRODUCT_NAME)
    assert product is not None
    assert product.as_utf8() == "pcef"
    assert message.find(9999) is None


# --- Header errors (RFC 6733 §3, §7.1) -------------------------------------------------------


def test_header_errors_carry_their_result_codes() -> None:
    good = _request(codec.avp_utf8(codec.AVP_SESSION_ID, "s"))
    word0 = int.from_bytes(good[:4], "big")
    word1 = int.from_bytes(good[4:8], "big")
    cases = {
        "version 2": (_with_header_word(good, 0, (2 << 24) | len(good)), 5011),
        "length > octets": (_with_header_word(good, 0, word0 + 4), 5015),
        "length < octets": (_with_header_word(good, 0, word0 - 4), 5015),
        "short": (good[:12], 5015),
        "reserved flag": (_with_header_word(good, 4, word1 | 0x01000000), 5013),
        "request with E": (_with_header_word(good, 4, word1 | 0x20000000), 3008),
        "answer with T": (_with_header_word(good, 4, (word1 & 0x7FFFFFFF) | 0x10000000), 3008),
    }
    for name, (data, result_code) in cases.items():
        with pytest.raises(MalformedMessage) as caught:
            codec.parse_message(data)
        assert caught.value.result_code == result_code, name
        assert caught.value.failed_avp is None, name


def test_length_not_a_multiple_of_four_is_refused() -> None:
    data = _request() + b"\0\0"
    data = _with_header_word(data, 0, (1 << 24) | len(data))
    with pytest.raises(MalformedMessage) as caught:
        codec.parse_header(data)
    assert caught.value.result_code == codec.DIAMETER_INVALID_MESSAGE_LENGTH


def test_peek_header_does_not_judge() -> None:
    data = _with_header_word(_request(), 0, (9 << 24) | 20)
    assert codec.peek_header(data).version == 9
    with pytest.raises(ValueError, match="20 octets"):
        codec.peek_header(data[:19])


def test_answer_header_copies_ids_and_clears_r_and_t() -> None:
    request = codec.Header(
        version=1,
        length=100,
        flags=codec.FLAG_REQUEST | codec.FLAG_PROXIABLE | codec.FLAG_RETRANSMIT,
        command_code=272,
        application_id=4,
        hop_by_hop=5,
        end_to_end=6,
    )
    answer = codec.answer_header_for(request)
    assert answer.flags == codec.FLAG_PROXIABLE
    assert (answer.command_code, answer.application_id) == (272, 4)
    assert (answer.hop_by_hop, answer.end_to_end) == (5, 6)
    error = codec.answer_header_for(request, error=True)
    assert error.flags == codec.FLAG_PROXIABLE | codec.FLAG_ERROR
    not_proxiable = codec.answer_header_for(
        codec.Header(
            version=1,
            length=20,
            flags=codec.FLAG_REQUEST,
            command_code=257,
            application_id=0,
            hop_by_hop=1,
            end_to_end=1,
        )
    )
    assert not_proxiable.flags == 0
    encoded = codec.encode_with_header(answer, [GOLDEN_RESULT_CODE_AVP])
    assert codec.parse_header(encoded).length == 32


# --- AVP errors (RFC 6733 §4.1, §7.1.5 5014, §7.5 Failed-AVP) --------------------------------


def test_avp_header_cut_short_is_padded_to_eight_octets() -> None:
    data = _request(codec.avp_u32(codec.AVP_RESULT_CODE, 1)) + bytes.fromhex("0000010c")
    data = _with_header_word(data, 0, (1 << 24) | len(data))
    with pytest.raises(MalformedMessage) as caught:
        codec.parse_message(data)
    assert caught.value.result_code == codec.DIAMETER_INVALID_AVP_LENGTH
    # The four octets received, zero-padded to a header whose AVP Length is rewritten to 8.
    assert caught.value.failed_avp == bytes.fromhex("0000010c 00000008")


def test_vendor_avp_cut_short_before_its_vendor_id() -> None:
    data = _request() + bytes.fromhex("00000368 c0000010")
    data = _with_header_word(data, 0, (1 << 24) | len(data))
    with pytest.raises(MalformedMessage) as caught:
        codec.parse_message(data)
    assert caught.value.result_code == codec.DIAMETER_INVALID_AVP_LENGTH
    assert caught.value.failed_avp == bytes.fromhex("00000368 c000000c 00000000")


def test_avp_length_overrunning_the_message() -> None:
    bad = bytes.fromhex("0000010c 40000040 000007d1")  # Result-Code claiming 64 octets
    with pytest.raises(MalformedMessage) as caught:
        codec.parse_message(_request(bad))
    assert caught.value.result_code == codec.DIAMETER_INVALID_AVP_LENGTH
    # Header copy, zero-filled Unsigned32, AVP Length set to what is sent (12).
    assert caught.value.failed_avp == bytes.fromhex("0000010c 4000000c 00000000")


def test_avp_length_below_its_header() -> None:
    bad = bytes.fromhex("00000107 40000004 00000000")  # Session-Id with AVP Length 4
    with pytest.raises(MalformedMessage) as caught:
        codec.parse_message(_request(bad))
    assert caught.value.result_code == codec.DIAMETER_INVALID_AVP_LENGTH
    assert caught.value.failed_avp == bytes.fromhex("00000107 40000008")
    vendor_bad = bytes.fromhex("00000368 c000000a 000028af")  # vendor AVP with length 10
    with pytest.raises(MalformedMessage) as caught:
        codec.parse_message(_request(vendor_bad))
    assert caught.value.failed_avp == bytes.fromhex("00000368 c0000010 000028af 00000000")


def test_reserved_avp_bits_with_m_bit_are_refused_and_without_tolerated() -> None:
    with_m = bytes.fromhex("0000010c 4100000c 000007d1")
    with pytest.raises(MalformedMessage) as caught:
        codec.parse_message(_request(with_m))
    assert caught.value.result_code == codec.DIAMETER_INVALID_AVP_BITS
    assert caught.value.failed_avp == with_m
    without_m = bytes.fromhex("0000010c 0100000c 000007d1")
    (avp,) = _avps_of(without_m)
    assert avp.as_u32() == 2001
    protected = bytes.fromhex("0000010c 6000000c 000007d1")  # P bit: accepted
    assert _avps_of(protected)[0].as_u32() == 2001


def test_missing_padding_after_the_last_avp_is_tolerated() -> None:
    inner = codec.avp_utf8(codec.AVP_SUBSCRIPTION_ID_DATA, "abcde")[:-3]  # 13 octets, no pad
    grouped = codec.encode_avp(codec.AVP_SUBSCRIPTION_ID, inner)
    (avp,) = _avps_of(grouped)
    (member,) = avp.grouped()
    assert member.as_utf8() == "abcde"
    assert member.raw == codec.avp_utf8(codec.AVP_SUBSCRIPTION_ID_DATA, "abcde")


def test_wrong_size_values_are_5014_and_bad_values_5004() -> None:
    five_octets = codec.encode_avp(codec.AVP_RESULT_CODE, b"\0\0\0\0\1")
    bad_utf8 = codec.encode_avp(codec.AVP_SESSION_ID, b"\xff\xfe")
    bad_family = codec.encode_avp(codec.AVP_HOST_IP_ADDRESS, b"\x00\x03\x01\x02\x03\x04")
    short_v4 = codec.encode_avp(codec.AVP_HOST_IP_ADDRESS, b"\x00\x01\x01\x02\x03")
    tiny = codec.encode_avp(codec.AVP_HOST_IP_ADDRESS, b"\x00")
    non_ascii_identity = codec.encode_avp(codec.AVP_ORIGIN_HOST, "hôte".encode())
    empty_identity = codec.encode_avp(codec.AVP_ORIGIN_HOST, b"")
    avps = _avps_of(
        five_octets, bad_utf8, bad_family, short_v4, tiny, non_ascii_identity, empty_identity
    )
    expectations = [
        (avps[0], "as_u32", 5014),
        (avps[0], "as_i32", 5014),
        (avps[0], "as_u64", 5014),
        (avps[0], "as_i64", 5014),
        (avps[0], "as_time", 5014),
        (avps[1], "as_utf8", 5004),
        (avps[2], "as_address", 5004),
        (avps[3], "as_address", 5004),
        (avps[4], "as_address", 5014),
        (avps[5], "as_identity", 5004),
        (avps[6], "as_identity", 5004),
    ]
    for avp, accessor, result_code in expectations:
        with pytest.raises(MalformedMessage) as caught:
            getattr(avp, accessor)()
        assert caught.value.result_code == result_code, accessor
        assert caught.value.failed_avp == avp.raw


def test_grouped_errors_report_the_hierarchy() -> None:
    bad_member = bytes.fromhex("000001c2 40000040 00000001")  # Subscription-Id-Type, length 64
    grouped = codec.encode_avp(codec.AVP_SUBSCRIPTION_ID, bad_member)
    (avp,) = _avps_of(grouped)
    with pytest.raises(MalformedMessage) as caught:
        avp.grouped()
    assert caught.value.result_code == codec.DIAMETER_INVALID_AVP_LENGTH
    # Subscription-Id header around the zero-filled Subscription-Id-Type (RFC 6733 §7.5).
    assert caught.value.failed_avp == bytes.fromhex("000001bb 40000014 000001c2 4000000c 00000000")


def _nested(levels: int) -> bytes:
    avp = codec.avp_u32(codec.AVP_CC_TIME, 1)
    for _ in range(levels):
        avp = codec.avp_grouped(codec.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL, [avp])
    return avp


def test_nesting_deeper_than_max_depth_is_refused() -> None:
    def descend(avp: Avp) -> int:
        depth = avp.depth
        if avp.code == codec.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL:
            for member in avp.grouped():
                depth = max(depth, descend(member))
        return depth

    (ok,) = codec.parse_message(_request(_nested(7)), max_depth=8).avps
    assert descend(ok) == 8
    (too_deep,) = codec.parse_message(_request(_nested(8)), max_depth=8).avps
    with pytest.raises(MalformedMessage) as caught:
        descend(too_deep)
    assert caught.value.result_code == codec.DIAMETER_UNABLE_TO_COMPLY
    (shallow,) = codec.parse_message(_request(_nested(2)), max_depth=2).avps
    with pytest.raises(MalformedMessage):
        descend(shallow)
    with pytest.raises(ValueError, match="max_depth"):
        codec.parse_message(_request(), max_depth=0)


def test_deep_nesting_never_recurses_out_of_the_stack() -> None:
    (avp,) = codec.parse_message(_request(_nested(2000)), max_depth=8).avps
    current = avp
    with pytest.raises(MalformedMessage):
        while True:
            (current,) = current.grouped()


def test_missing_avp_example_is_zero_filled_at_minimum_size() -> None:
    assert MissingAvp(codec.AVP_CC_REQUEST_NUMBER).failed_avp == bytes.fromhex(
        "0000019f 4000000c 00000000"
    )
    assert MissingAvp(codec.AVP_SESSION_ID).failed_avp == bytes.fromhex("00000107 40000008")
    assert MissingAvp(codec.AVP_CC_TOTAL_OCTETS).failed_avp == bytes.fromhex(
        "000001a5 40000010 00000000 00000000"
    )
    vendor = MissingAvp(codec.AVP_3GPP_REPORTING_REASON, vendor_id=codec.VENDOR_3GPP)
    assert vendor.failed_avp == bytes.fromhex("00000368 c0000010 000028af 00000000")
    assert vendor.result_code == codec.DIAMETER_MISSING_AVP
    assert "Reporting-Reason" in str(vendor)


# --- Error answers (RFC 6733 §7.2) -----------------------------------------------------------


def _proxy_info(state: bytes) -> bytes:
    return codec.avp_grouped(
        codec.AVP_PROXY_INFO,
        [
            codec.encode_avp(codec.AVP_PROXY_HOST, b"dra.example.net"),
            codec.encode_avp(codec.AVP_PROXY_STATE, state),
        ],
    )


def test_protocol_error_answer_has_the_e_bit_and_the_7_2_layout() -> None:
    request = _request(
        codec.avp_utf8(codec.AVP_SESSION_ID, "pcef;1;2"),
        _proxy_info(b"one"),
        _proxy_info(b"two"),
    )
    failed = codec.avp_u32(codec.AVP_CC_REQUEST_TYPE, 9)
    answer = codec.build_error_answer(
        request,
        origin_host="ocs.example.net",
        origin_realm="example.net",
        result_code=codec.DIAMETER_TOO_BUSY,
        failed_avp=failed,
        error_message="too busy",
        origin_state_id=42,
    )
    header = codec.parse_header(answer)
    assert header.flags == codec.FLAG_ERROR | codec.FLAG_PROXIABLE
    assert (header.hop_by_hop, header.end_to_end, header.command_code) == (1, 2, 272)
    avps = codec.parse_message(answer).avps
    assert [a.code for a in avps] == [263, 264, 296, 268, 278, 281, 279, 284, 284]
    assert avps[0].as_utf8() == "pcef;1;2"
    assert avps[3].as_u32() == 3004
    assert not avps[5].is_mandatory  # Error-Message MUST NOT have the M bit
    assert avps[6].data == failed
    assert [a.raw for a in avps[7:]] == [_proxy_info(b"one"), _proxy_info(b"two")]
    lib = LibMessage.from_bytes(answer)
    assert lib.header.is_error
    assert lib.session_id == "pcef;1;2"
    assert lib.result_code == 3004
    assert lib.origin_host == b"ocs.example.net"


def test_permanent_failure_answer_has_no_e_bit() -> None:
    header = codec.peek_header(_request())
    answer = codec.build_error_answer(
        header,
        origin_host="ocs.example.net",
        origin_realm="example.net",
        result_code=codec.DIAMETER_MISSING_AVP,
        failed_avp=MissingAvp(codec.AVP_CC_REQUEST_NUMBER).failed_avp,
        session_id="given",
        extra_avps=[codec.avp_u32(codec.AVP_AUTH_APPLICATION_ID, 4)],
    )
    parsed = codec.parse_message(answer)
    assert parsed.header.flags == codec.FLAG_PROXIABLE
    assert [a.code for a in parsed.avps] == [263, 264, 296, 268, 279, 258]
    failed = parsed.avps[4].grouped()
    assert [(a.code, a.data) for a in failed] == [(415, bytes(4))]


def test_error_answer_to_garbage_salvages_nothing_and_still_answers() -> None:
    garbage = _with_header_word(_request(codec.avp_utf8(codec.AVP_SESSION_ID, "x")), 0, 0x0200001C)
    answer = codec.build_error_answer(
        garbage,
        origin_host="ocs",
        origin_realm="realm",
        result_code=codec.DIAMETER_UNSUPPORTED_VERSION,
    )
    parsed = codec.parse_message(answer)
    assert parsed.avps[0].as_utf8() == "x"  # Session-Id still found
    bad_session = _request(codec.encode_avp(codec.AVP_SESSION_ID, b"\xff"))
    answer = codec.build_error_answer(
        bad_session, origin_host="ocs", origin_realm="realm", result_code=5004
    )
    assert codec.parse_message(answer).avps[0].code == codec.AVP_ORIGIN_HOST


def test_identities_must_be_ascii() -> None:
    with pytest.raises(ValueError, match="DiameterIdentity"):
        codec.build_error_answer(
            _request(), origin_host="hôte", origin_realm="realm", result_code=5012
        )
    with pytest.raises(ValueError, match="DiameterIdentity"):
        codec.encode_identity("")


def test_result_code_classes() -> None:
    assert codec.is_protocol_error(3010)
    assert not codec.is_protocol_error(2001)
    assert not codec.is_protocol_error(5005)
    assert codec.avp_name(263) == "263 (Session-Id)"
    assert codec.avp_name(873, 10415) == "873/10415 (Service-Information)"
    assert codec.avp_name(99999) == "99999"


def test_oversized_messages_are_refused_when_encoding() -> None:
    with pytest.raises(ValueError, match="exceed"):
        codec.encode_message(
            command_code=272,
            application_id=4,
            hop_by_hop=0,
            end_to_end=0,
            avps=[b"\0" * codec.MAX_MESSAGE_LENGTH],
        )


# --- Fuzzing ---------------------------------------------------------------------------------

SEED_MESSAGE = _request(
    codec.avp_utf8(codec.AVP_SESSION_ID, "pcef.example.net;42;7"),
    codec.encode_avp(codec.AVP_ORIGIN_HOST, b"pcef.example.net"),
    codec.avp_u32(codec.AVP_CC_REQUEST_TYPE, 1),
    codec.avp_grouped(
        codec.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL,
        [
            codec.avp_grouped(codec.AVP_REQUESTED_SERVICE_UNIT, [codec.avp_u32(420, 60)]),
            codec.avp_u32(codec.AVP_RATING_GROUP, 100),
        ],
    ),
    codec.avp_address(codec.AVP_HOST_IP_ADDRESS, "192.0.2.1"),
    codec.avp_u32(codec.AVP_3GPP_REPORTING_REASON, 2, vendor_id=codec.VENDOR_3GPP),
)


def _exercise(avp: Avp) -> None:
    for accessor in (
        avp.as_u32,
        avp.as_u64,
        avp.as_i32,
        avp.as_i64,
        avp.as_utf8,
        avp.as_identity,
        avp.as_address,
        avp.as_time,
    ):
        with contextlib.suppress(MalformedMessage):
            accessor()
    try:
        members = avp.grouped()
    except MalformedMessage:
        return
    for member in members:
        _exercise(member)


@settings(max_examples=500, deadline=None)
@given(
    edits=st.lists(
        st.tuples(st.integers(min_value=0, max_value=len(SEED_MESSAGE) - 1), st.integers(0, 255)),
        min_size=1,
        max_size=6,
    ),
    cut=st.integers(min_value=0, max_value=len(SEED_MESSAGE)),
)
def test_mutated_messages_only_raise_malformed_message(
    edits: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(SEED_MESSAGE)
    for offset, value in edits:
        data[offset] = value
    for candidate in (bytes(data), bytes(data[:cut])):
        try:
            message = codec.parse_message(candidate, max_depth=4)
        except MalformedMessage as error:
            assert 3000 <= error.result_code < 6000
            continue
        for avp in message.avps:
            _exercise(avp)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=20, max_size=300))
def test_random_bytes_only_raise_malformed_message(data: bytes) -> None:
    fixed = bytes([1]) + len(data).to_bytes(3, "big") + data[4:]
    for candidate in (data, fixed):
        try:
            message = codec.parse_message(candidate)
        except MalformedMessage:
            continue
        for avp in message.avps:
            _exercise(avp)
        codec.build_error_answer(candidate, origin_host="o", origin_realm="r", result_code=5012)
