"""The CCR fast path and the CCA builder: real Gy traffic built by python-diameter, answers read
back by python-diameter, RFC 6733 §7 error codes with Failed-AVP, golden bytes and fuzzing."""

from datetime import UTC, datetime

import pytest
from diameter.message import Message as LibMessage
from diameter.message.avp.grouped import (
    GrantedServiceUnit,
    PsInformation,
    QosInformation,
    RequestedServiceUnit,
    ServiceInformation,
    UsedServiceUnit,
    UserEquipmentInfo,
)
from diameter.message.commands.credit_control import CreditControlAnswer as LibCca
from diameter.message.commands.credit_control import CreditControlRequest as LibCcr
from hypothesis import given, settings
from hypothesis import strategies as st

from ocs.diameter import codec
from ocs.diameter.codec import MalformedMessage, MissingAvp
from ocs.diameter.credit_control import (
    CcaEncoder,
    CheckBalanceResult,
    CostInformation,
    CreditControlRequest,
    FinalUnitAction,
    Mscc,
    MsccAnswer,
    RequestedAction,
    RequestType,
    ServiceUnits,
    SubscriptionIdType,
    build_cca,
    parse_ccr,
)

ENCODER = CcaEncoder(origin_host="ocs.example.net", origin_realm="ocs.example.net")


def gy_ccr_initial() -> bytes:
    """A 3GPP Gy CCR-Initial as a P-GW sends it (TS 32.299 §6.4.2, PS-Information)."""
    ccr = LibCcr()
    ccr.header.hop_by_hop_identifier = 0x1234
    ccr.header.end_to_end_identifier = 0x5678
    ccr.header.application_id = 4
    ccr.session_id = "pgw.example.net;1234567;42"
    ccr.origin_host = b"pgw.example.net"
    ccr.origin_realm = b"example.net"
    ccr.destination_realm = b"ocs.example.net"
    ccr.service_context_id = "32251@3gpp.org"
    ccr.cc_request_type = 1
    ccr.cc_request_number = 0
    ccr.event_timestamp = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    ccr.origin_state_id = 1700000000
    ccr.add_subscription_id(0, "491701234567")
    ccr.add_subscription_id(1, "262011234567890")
    ccr.multiple_services_indicator = 1
    ccr.add_multiple_services_credit_control(
        requested_service_unit=RequestedServiceUnit(), rating_group=100, service_identifier=1
    )
    ccr.add_multiple_services_credit_control(
        requested_service_unit=RequestedServiceUnit(cc_total_octets=10_000_000),
        rating_group=200,
    )
    ccr.user_equipment_info = UserEquipmentInfo(
        user_equipment_info_type=0, user_equipment_info_value=b"3534900698733190"
    )
    ccr.service_information = ServiceInformation(
        ps_information=PsInformation(
            tgpp_charging_id=b"\x00\x00\x00\x01",
            tgpp_pdp_type=0,
            pdp_address=["10.45.0.7"],
            sgsn_address=["192.0.2.10"],
            ggsn_address=["192.0.2.20"],
            tgpp_imsi_mcc_mnc="26201",
            tgpp_ggsn_mcc_mnc="26201",
            tgpp_nsapi=b"5",
            called_station_id="internet",
            tgpp_selection_mode="0",
            tgpp_charging_characteristics="0800",
            tgpp_sgsn_mcc_mnc="26201",
            tgpp_ms_timezone=b"\x40\x00",
            tgpp_user_location_info=bytes.fromhex("8262f210000162f21000000101"),
            tgpp_rat_type=b"\x06",
            qos_information=QosInformation(
                qos_class_identifier=9,
                max_requested_bandwith_ul=100_000_000,
                max_requested_bandwith_dl=100_000_000,
            ),
        )
    )
    return ccr.as_bytes()


def gy_ccr_update() -> bytes:
    ccr = LibCcr()
    ccr.header.hop_by_hop_identifier = 7
    ccr.header.end_to_end_identifier = 8
    ccr.header.application_id = 4
    ccr.session_id = "pgw.example.net;1234567;42"
    ccr.origin_host = b"pgw.example.net"
    ccr.origin_realm = b"example.net"
    ccr.destination_realm = b"ocs.example.net"
    ccr.destination_host = b"ocs.example.net"
    ccr.service_context_id = "32251@3gpp.org"
    ccr.cc_request_type = 2
    ccr.cc_request_number = 1
    ccr.user_name = "alice@example.net"
    ccr.add_subscription_id(1, "262011234567890")
    ccr.add_multiple_services_credit_control(
        requested_service_unit=RequestedServiceUnit(),
        used_service_unit=[
            UsedServiceUnit(cc_time=60, cc_total_octets=1500, reporting_reason=3),
            UsedServiceUnit(cc_input_octets=500, cc_output_octets=1000),
        ],
        rating_group=100,
    )
    return ccr.as_bytes()


# --- Parsing real traffic --------------------------------------------------------------------


def test_gy_ccr_initial_parses() -> None:
    request = parse_ccr(gy_ccr_initial())
    assert request.session_id == "pgw.example.net;1234567;42"
    assert request.origin_host == "pgw.example.net"
    assert request.origin_realm == "example.net"
    assert request.destination_realm == "ocs.example.net"
    assert request.destination_host is None
    assert request.auth_application_id == 4
    assert request.service_context_id == "32251@3gpp.org"
    assert request.request_type is RequestType.INITIAL
    assert request.request_number == 0
    assert request.event_timestamp == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert request.origin_state_id == 1700000000
    assert request.subscription_ids == (
        (SubscriptionIdType.END_USER_E164, "491701234567"),
        (SubscriptionIdType.END_USER_IMSI, "262011234567890"),
    )
    assert request.multiple_services == (
        Mscc(rating_group=100, service_identifier=1, requested=ServiceUnits()),
        Mscc(rating_group=200, requested=ServiceUnits(total_octets=10_000_000)),
    )
    assert request.requested_unit is None
    assert request.used_units == ()
    assert request.proxy_infos == ()
    assert (request.hop_by_hop, request.end_to_end) == (0x1234, 0x5678)
    assert request.header.command_code == 272
    assert request.header.is_request


def test_gy_ccr_update_with_usage_parses() -> None:
    request = parse_ccr(gy_ccr_update())
    assert request.request_type is RequestType.UPDATE
    assert request.request_number == 1
    assert request.destination_host == "ocs.example.net"
    assert request.user_name == "alice@example.net"
    (mscc,) = request.multiple_services
    assert mscc.rating_group == 100
    assert mscc.requested == ServiceUnits()
    assert mscc.used == (
        ServiceUnits(time_s=60, total_octets=1500),
        ServiceUnits(input_octets=500, output_octets=1000),
    )
    assert mscc.reporting_reason == 3  # QUOTA_EXHAUSTED, from the Used-Service-Unit


def test_parse_accepts_a_parsed_message_too() -> None:
    data = gy_ccr_initial()
    assert parse_ccr(codec.parse_message(data)) == parse_ccr(data)


# --- Building CCRs with our own encoders, for the error cases --------------------------------


def _ccr(
    *extra: bytes,
    omit: tuple[int, ...] = (),
    replace: dict[int, bytes] | None = None,
    command_code: int = 272,
    application_id: int = 4,
    flags: int = codec.FLAG_REQUEST | codec.FLAG_PROXIABLE,
) -> bytes:
    base = {
        codec.AVP_SESSION_ID: codec.avp_utf8(codec.AVP_SESSION_ID, "sbc.example.net;1;1"),
        codec.AVP_ORIGIN_HOST: codec.encode_avp(codec.AVP_ORIGIN_HOST, b"sbc.example.net"),
        codec.AVP_ORIGIN_REALM: codec.encode_avp(codec.AVP_ORIGIN_REALM, b"example.net"),
        codec.AVP_DESTINATION_REALM: codec.encode_avp(
            codec.AVP_DESTINATION_REALM, b"ocs.example.net"
        ),
        codec.AVP_AUTH_APPLICATION_ID: codec.avp_u32(codec.AVP_AUTH_APPLICATION_ID, 4),
        codec.AVP_CC_REQUEST_TYPE: codec.avp_u32(codec.AVP_CC_REQUEST_TYPE, 4),
        codec.AVP_CC_REQUEST_NUMBER: codec.avp_u32(codec.AVP_CC_REQUEST_NUMBER, 0),
    }
    base.update(replace or {})
    avps = [avp for code, avp in base.items() if code not in omit]
    return codec.encode_message(
        command_code=command_code,
        application_id=application_id,
        hop_by_hop=11,
        end_to_end=22,
        avps=[*avps, *extra],
        flags=flags,
    )


def _refused(data: bytes) -> MalformedMessage:
    with pytest.raises(MalformedMessage) as caught:
        parse_ccr(data)
    return caught.value


def test_minimal_event_ccr_parses_with_defaults() -> None:
    request = parse_ccr(
        _ccr(
            codec.avp_u32(codec.AVP_REQUESTED_ACTION, 2),
            codec.avp_u32(codec.AVP_TERMINATION_CAUSE, 1),
            codec.avp_grouped(codec.AVP_REQUESTED_SERVICE_UNIT, [codec.avp_u32(420, 30)]),
            codec.avp_grouped(
                codec.AVP_USED_SERVICE_UNIT,
                [codec.avp_u64(codec.AVP_CC_SERVICE_SPECIFIC_UNITS, 3)],
            ),
            codec.encode_avp(codec.AVP_USER_NAME, b"bob"),
        )
    )
    assert request.request_type is RequestType.EVENT
    assert request.requested_action is RequestedAction.CHECK_BALANCE
    assert request.termination_cause == 1
    assert request.requested_unit == ServiceUnits(time_s=30)
    assert request.used_units == (ServiceUnits(service_specific=3),)
    assert request.user_name == "bob"
    assert request.service_context_id is None
    assert request.event_timestamp is None


@pytest.mark.parametrize(
    ("code", "failed_avp"),
    [
        (codec.AVP_SESSION_ID, "00000107 40000008"),
        (codec.AVP_ORIGIN_HOST, "00000108 40000008"),
        (codec.AVP_ORIGIN_REALM, "00000128 40000008"),
        (codec.AVP_DESTINATION_REALM, "0000011b 40000008"),
        (codec.AVP_AUTH_APPLICATION_ID, "00000102 4000000c 00000000"),
        (codec.AVP_CC_REQUEST_TYPE, "000001a0 4000000c 00000000"),
        (codec.AVP_CC_REQUEST_NUMBER, "0000019f 4000000c 00000000"),
    ],
)
def test_missing_required_avps_are_5005_with_a_zero_filled_example(
    code: int, failed_avp: str
) -> None:
    error = _refused(_ccr(omit=(code,)))
    assert isinstance(error, MissingAvp)
    assert error.result_code == codec.DIAMETER_MISSING_AVP
    assert error.failed_avp == bytes.fromhex(failed_avp)
    assert error.code == code


def test_bad_values() -> None:
    cases: list[tuple[int, bytes, int]] = [
        # A fixed-size value of the wrong size: 5014 (RFC 6733 §7.1.5 "invalid length").
        (codec.AVP_CC_REQUEST_NUMBER,
         codec.encode_avp(codec.AVP_CC_REQUEST_NUMBER, b"\0\0\0\0\0"), 5014),
        (codec.AVP_CC_REQUEST_TYPE, codec.encode_avp(codec.AVP_CC_REQUEST_TYPE, b"\1"), 5014),
        # Right size, wrong content: 5004.
        (codec.AVP_CC_REQUEST_TYPE, codec.avp_u32(codec.AVP_CC_REQUEST_TYPE, 9), 5004),
        (codec.AVP_CC_REQUEST_TYPE, codec.avp_u32(codec.AVP_CC_REQUEST_TYPE, 0), 5004),
        (codec.AVP_AUTH_APPLICATION_ID, codec.avp_u32(codec.AVP_AUTH_APPLICATION_ID, 3), 5004),
        (codec.AVP_SESSION_ID, codec.encode_avp(codec.AVP_SESSION_ID, b""), 5004),
        (codec.AVP_SESSION_ID, codec.encode_avp(codec.AVP_SESSION_ID, b"\xc3\x28"), 5004),
        (codec.AVP_ORIGIN_HOST, codec.encode_avp(codec.AVP_ORIGIN_HOST, "hôte".encode()), 5004),
        (codec.AVP_ORIGIN_REALM, codec.encode_avp(codec.AVP_ORIGIN_REALM, b""), 5004),
    ]  # fmt: skip
    for code, bad, result_code in cases:
        error = _refused(_ccr(replace={code: bad}))
        assert error.result_code == result_code, bad.hex()
        assert error.failed_avp == bad


def test_bad_optional_values() -> None:
    for bad, result_code in [
        (codec.avp_u32(codec.AVP_REQUESTED_ACTION, 4), 5004),
        (codec.encode_avp(codec.AVP_EVENT_TIMESTAMP, b"\0\0\0"), 5014),
        (codec.encode_avp(codec.AVP_DESTINATION_HOST, b""), 5004),
        (codec.encode_avp(codec.AVP_USER_NAME, b"\xff"), 5004),
        (codec.encode_avp(codec.AVP_ORIGIN_STATE_ID, b"\0"), 5014),
    ]:
        error = _refused(_ccr(bad))
        assert error.result_code == result_code, bad.hex()
        assert error.failed_avp == bad


def test_avps_allowed_once_are_5009_with_the_second_instance() -> None:
    second = codec.avp_utf8(codec.AVP_SESSION_ID, "another")
    error = _refused(_ccr(second))
    assert error.result_code == codec.DIAMETER_AVP_OCCURS_TOO_MANY_TIMES
    assert error.failed_avp == second
    rsu = codec.avp_grouped(codec.AVP_REQUESTED_SERVICE_UNIT, [])
    assert _refused(_ccr(rsu, rsu)).result_code == 5009


def test_unknown_mandatory_avps_are_5001_and_others_pass() -> None:
    unknown_m = codec.avp_u32(99999, 1)
    error = _refused(_ccr(unknown_m))
    assert error.result_code == codec.DIAMETER_AVP_UNSUPPORTED
    assert error.failed_avp == unknown_m
    unknown_vendor_m = codec.avp_u32(5555, 1, vendor_id=9)
    assert _refused(_ccr(unknown_vendor_m)).failed_avp == unknown_vendor_m
    # Without the M bit, or in the allowed set, they are skipped.
    parse_ccr(_ccr(codec.avp_u32(99999, 1, mandatory=False)))
    parse_ccr(
        _ccr(
            codec.avp_grouped(
                codec.AVP_3GPP_SERVICE_INFORMATION,
                [codec.avp_grouped(codec.AVP_3GPP_PS_INFORMATION, [], vendor_id=10415)],
                vendor_id=10415,
            ),
            codec.avp_u32(455, 1),  # Multiple-Services-Indicator
            codec.avp_u32(codec.AVP_AUTH_SESSION_STATE, 1),
            codec.encode_avp(codec.AVP_ROUTE_RECORD, b"dra.example.net"),
        )
    )
    # The allowed set is a parameter.
    parse_ccr(_ccr(unknown_m), allowed_mandatory=frozenset({(99999, 0)}))


def test_header_must_be_a_credit_control_request() -> None:
    assert _refused(_ccr(command_code=271)).result_code == codec.DIAMETER_COMMAND_UNSUPPORTED
    assert _refused(_ccr(flags=codec.FLAG_PROXIABLE)).result_code == 3008
    assert _refused(_ccr(application_id=0)).result_code == codec.DIAMETER_APPLICATION_UNSUPPORTED
    truncated = _ccr()[:-4]
    assert _refused(truncated).result_code == codec.DIAMETER_INVALID_MESSAGE_LENGTH


def test_errors_inside_groups_report_the_hierarchy() -> None:
    no_data = codec.avp_grouped(
        codec.AVP_SUBSCRIPTION_ID, [codec.avp_u32(codec.AVP_SUBSCRIPTION_ID_TYPE, 1)]
    )
    error = _refused(_ccr(no_data))
    assert isinstance(error, MissingAvp)
    # Subscription-Id { Subscription-Id-Data (empty) } (RFC 6733 §7.5).
    assert error.failed_avp == bytes.fromhex("000001bb 40000010 000001bc 40000008")
    no_type = codec.avp_grouped(
        codec.AVP_SUBSCRIPTION_ID, [codec.avp_utf8(codec.AVP_SUBSCRIPTION_ID_DATA, "x")]
    )
    assert _refused(_ccr(no_type)).failed_avp == bytes.fromhex(
        "000001bb 40000014 000001c2 4000000c 00000000"
    )
    bad_time = codec.encode_avp(codec.AVP_CC_TIME, bytes(8))
    mscc = codec.avp_grouped(
        codec.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL,
        [
            codec.avp_u32(codec.AVP_RATING_GROUP, 1),
            codec.avp_grouped(codec.AVP_REQUESTED_SERVICE_UNIT, [bad_time]),
        ],
    )
    error = _refused(_ccr(mscc))
    assert error.result_code == codec.DIAMETER_INVALID_AVP_LENGTH
    # MSCC { Requested-Service-Unit { CC-Time (the 8-octet one) } }.
    assert error.failed_avp == codec.avp_grouped(
        codec.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL,
        [codec.avp_grouped(codec.AVP_REQUESTED_SERVICE_UNIT, [bad_time])],
    )
    duplicate_rg = codec.avp_grouped(
        codec.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL,
        [codec.avp_u32(codec.AVP_RATING_GROUP, 1), codec.avp_u32(codec.AVP_RATING_GROUP, 2)],
    )
    assert _refused(_ccr(duplicate_rg)).result_code == 5009


def test_unknown_subscription_id_types_are_kept() -> None:
    odd = codec.avp_grouped(
        codec.AVP_SUBSCRIPTION_ID,
        [
            codec.avp_u32(codec.AVP_SUBSCRIPTION_ID_TYPE, 7),
            codec.avp_utf8(codec.AVP_SUBSCRIPTION_ID_DATA, "x"),
            codec.avp_u32(1, 1, vendor_id=10415),  # vendor members are skipped
        ],
    )
    assert parse_ccr(_ccr(odd)).subscription_ids == ((7, "x"),)


def test_depth_limit_applies_to_grouped_avps() -> None:
    mscc = codec.avp_grouped(
        codec.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL,
        [codec.avp_grouped(codec.AVP_USED_SERVICE_UNIT, [codec.avp_u32(420, 1)])],
    )
    assert parse_ccr(_ccr(mscc), max_depth=3).multiple_services[0].used == (ServiceUnits(time_s=1),)
    with pytest.raises(MalformedMessage) as caught:
        parse_ccr(_ccr(mscc), max_depth=2)
    assert caught.value.result_code == codec.DIAMETER_UNABLE_TO_COMPLY


# --- Building CCAs ---------------------------------------------------------------------------

GOLDEN_REQUEST = _ccr()
GOLDEN_CCA = bytes.fromhex(
    "010000a4 40000110 00000004 0000000b 00000016"  # length 164, P, 272, app 4, ids 11/22
    "00000107 4000001b 7362632e 6578616d 706c652e 6e65743b 313b3100"  # Session-Id
    "0000010c 4000000c 000007d1"  # Result-Code 2001
    "00000108 40000017 6f63732e 6578616d 706c652e 6e657400"  # Origin-Host
    "00000128 40000017 6f63732e 6578616d 706c652e 6e657400"  # Origin-Realm
    "00000102 4000000c 00000004"  # Auth-Application-Id 4
    "000001a0 4000000c 00000004"  # CC-Request-Type EVENT
    "0000019f 4000000c 00000000"  # CC-Request-Number 0
    "000001af 40000014 000001a4 4000000c 0000003c"  # Granted-Service-Unit { CC-Time 60 }
)


def test_golden_cca() -> None:
    request = parse_ccr(GOLDEN_REQUEST)
    answer = ENCODER.build(request, result_code=2001, granted=ServiceUnits(time_s=60))
    assert answer == GOLDEN_CCA


def test_cca_reads_back_in_the_library() -> None:
    data = gy_ccr_initial()
    request = parse_ccr(data)
    encoder = CcaEncoder(
        origin_host="ocs.example.net", origin_realm="ocs.example.net", origin_state_id=99
    )
    answer = encoder.build(
        request,
        result_code=2001,
        mscc_answers=[
            MsccAnswer(
                result_code=2001,
                rating_group=100,
                service_identifier=1,
                granted=ServiceUnits(time_s=3600),
                validity_time_s=600,
            ),
            MsccAnswer(
                result_code=4012,
                rating_group=200,
                final_unit_action=FinalUnitAction.TERMINATE,
            ),
        ],
        cost_information=CostInformation(value_digits=1_500_000, exponent=-6, currency_code=978),
    )
    lib = LibMessage.from_bytes(answer)
    assert isinstance(lib, LibCca)
    assert lib.header.is_request is False
    assert lib.header.is_proxyable is True
    assert lib.header.is_error is False
    assert lib.header.application_id == 4
    assert (lib.header.hop_by_hop_identifier, lib.header.end_to_end_identifier) == (
        0x1234,
        0x5678,
    )
    assert lib.session_id == "pgw.example.net;1234567;42"
    assert lib.result_code == 2001
    assert lib.origin_host == b"ocs.example.net"
    assert lib.origin_realm == b"ocs.example.net"
    assert lib.auth_application_id == 4
    assert lib.cc_request_type == 1
    assert lib.cc_request_number == 0
    assert lib.origin_state_id == 99
    first, second = lib.multiple_services_credit_control
    assert first.granted_service_unit == GrantedServiceUnit(cc_time=3600)
    assert first.rating_group == 100
    assert first.service_identifier == [1]
    assert first.validity_time == 600
    assert first.result_code == 2001
    assert second.rating_group == 200
    assert second.result_code == 4012
    assert second.final_unit_indication.final_unit_action == 0
    assert second.granted_service_unit is None
    assert lib.cost_information.unit_value.value_digits == 1_500_000
    assert lib.cost_information.unit_value.exponent == -6
    assert lib.cost_information.currency_code == 978
    # Our own parser agrees on the order (RFC 4006 §3.2).
    codes = [avp.code for avp in codec.parse_message(answer).avps]
    assert codes == [263, 268, 264, 296, 258, 416, 415, 278, 456, 456, 423]


def test_top_level_grant_and_proxy_info_echo() -> None:
    proxy = codec.avp_grouped(
        codec.AVP_PROXY_INFO,
        [
            codec.encode_avp(codec.AVP_PROXY_HOST, b"dra.example.net"),
            codec.encode_avp(codec.AVP_PROXY_STATE, b"\x01\x02"),
        ],
    )
    request = parse_ccr(_ccr(proxy))
    assert request.proxy_infos == (proxy,)
    answer = build_cca(
        request,
        origin_host="ocs.example.net",
        origin_realm="ocs.example.net",
        result_code=2001,
        granted=ServiceUnits(total_octets=5_000_000, input_octets=1, output_octets=2),
        validity_time_s=300,
        final_unit_action=FinalUnitAction.REDIRECT,
        check_balance_result=CheckBalanceResult.ENOUGH_CREDIT,
    )
    parsed = codec.parse_message(answer)
    codes = [avp.code for avp in parsed.avps]
    assert codes == [263, 268, 264, 296, 258, 416, 415, 431, 430, 422, 448, 284]
    assert parsed.avps[-1].raw == proxy
    gsu = {avp.code: avp.as_u64() for avp in parsed.avps[7].grouped()}
    assert gsu == {421: 5_000_000, 412: 1, 414: 2}
    lib = LibMessage.from_bytes(answer)
    assert lib.validity_time == 300
    assert lib.check_balance_result == 0
    assert lib.final_unit_indication.final_unit_action == 1
    assert lib.proxy_info[0].proxy_host == b"dra.example.net"


def test_protocol_error_cca_has_the_e_bit_and_no_grant() -> None:
    request = parse_ccr(_ccr())
    answer = ENCODER.build(request, result_code=codec.DIAMETER_TOO_BUSY)
    assert codec.parse_header(answer).flags == codec.FLAG_PROXIABLE | codec.FLAG_ERROR
    with pytest.raises(ValueError, match="no grant"):
        ENCODER.build(request, result_code=3004, granted=ServiceUnits(time_s=1))
    refusal = ENCODER.build(request, result_code=codec.DIAMETER_CREDIT_LIMIT_REACHED)
    assert codec.parse_header(refusal).flags == codec.FLAG_PROXIABLE
    assert LibMessage.from_bytes(refusal).result_code == 4012


def test_error_answers_for_refused_ccrs() -> None:
    data = _ccr(omit=(codec.AVP_CC_REQUEST_NUMBER,))
    error = _refused(data)
    answer = ENCODER.build_error(data, error)
    parsed = codec.parse_message(answer)
    assert not parsed.header.is_error  # 5005 is a permanent failure (RFC 6733 §7.1.5)
    by_code = {avp.code: avp for avp in parsed.avps}
    assert parsed.avps[0].code == codec.AVP_SESSION_ID
    assert by_code[codec.AVP_RESULT_CODE].as_u32() == 5005
    assert by_code[codec.AVP_CC_REQUEST_TYPE].as_u32() == 4
    assert by_code[codec.AVP_AUTH_APPLICATION_ID].as_u32() == 4
    assert codec.AVP_CC_REQUEST_NUMBER not in by_code
    assert by_code[codec.AVP_FAILED_AVP].data == error.failed_avp
    assert "CC-Request-Number" in by_code[codec.AVP_ERROR_MESSAGE].as_utf8()
    lib = LibMessage.from_bytes(answer)
    assert lib.result_code == 5005
    assert lib.session_id == "sbc.example.net;1;1"

    wrong_app = _ccr(application_id=0)
    answer = ENCODER.build_error(wrong_app, _refused(wrong_app), error_message="")
    parsed = codec.parse_message(answer)
    assert parsed.header.is_error  # 3007 is a protocol error
    assert parsed.find(codec.AVP_CC_REQUEST_NUMBER) is not None
    assert parsed.find(codec.AVP_ERROR_MESSAGE) is None


def test_value_types_validate_when_built() -> None:
    for bad in (-1, 2**64, True):
        with pytest.raises(ValueError, match="total_octets"):
            ServiceUnits(total_octets=bad)
    # Not an int at all: compiled (scripts/build_native.py), the constructor's own type check
    # refuses it first, as a TypeError.
    with pytest.raises((ValueError, TypeError)):
        ServiceUnits(total_octets=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="time_s"):
        ServiceUnits(time_s=2**32)
    with pytest.raises(ValueError, match="rating_group"):
        MsccAnswer(result_code=2001, rating_group=-1)
    with pytest.raises((ValueError, TypeError)):  # TypeError: compiled, as above
        MsccAnswer(result_code=2001, final_unit_action=7)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="value_digits"):
        CostInformation(value_digits=2**63, currency_code=978)
    with pytest.raises(ValueError, match="DiameterIdentity"):
        CcaEncoder(origin_host="", origin_realm="x")
    assert ServiceUnits().is_empty
    assert not ServiceUnits(time_s=0).is_empty


def test_request_type_is_kept_as_an_enum_and_the_object_is_frozen() -> None:
    request = parse_ccr(_ccr())
    assert isinstance(request, CreditControlRequest)
    with pytest.raises(AttributeError):
        request.session_id = "x"  # type: ignore[misc]


# --- Fuzzing ---------------------------------------------------------------------------------

SEEDS = [gy_ccr_initial(), gy_ccr_update(), _ccr()]


@settings(max_examples=600, deadline=None)
@given(
    seed=st.sampled_from(SEEDS),
    edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=6),
    cut=st.integers(min_value=0),
)
def test_mutated_ccrs_only_raise_malformed_message(
    seed: bytes, edits: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(seed)
    for offset, value in edits:
        data[offset % len(data)] = value
    for candidate in (bytes(data), bytes(data[: cut % (len(data) + 1)])):
        try:
            parse_ccr(candidate)
        except MalformedMessage as error:
            assert 3000 <= error.result_code < 6000
            if len(candidate) >= codec.HEADER_LENGTH:
                answer = ENCODER.build_error(candidate, error)
                codec.parse_message(answer)  # what we send is always well formed


# --- Called-Party-Address (rating by destination, issue 13) ----------------------------------


def _service_information(*ims_members: bytes, extra: tuple[bytes, ...] = ()) -> bytes:
    v = codec.VENDOR_3GPP
    ims = codec.encode_avp(876, b"".join(ims_members), vendor_id=v)
    return codec.encode_avp(873, b"".join((*extra, ims)), vendor_id=v)


def _called(address: str) -> bytes:
    return codec.encode_avp(832, address.encode(), vendor_id=codec.VENDOR_3GPP)


# Service-Information { IMS-Information { Role-Of-Node, Calling-Party-Address,
# Called-Party-Address "tel:+41446681800" } }, as an IMS S-CSCF sends it (TS 32.299 §7.2.77).
GOLDEN_SERVICE_INFORMATION = bytes.fromhex(
    "00000369 c0000068 000028af"  # Service-Information (873), V M, 104 octets, vendor 10415
    "0000036c c000005c 000028af"  # IMS-Information (876), 92 octets
    "0000033d c0000010 000028af 00000000"  # Role-Of-Node (829) ORIGINATING_ROLE
    "0000033f c0000021 000028af 7369703a616c696365406578616d706c652e6e6574 000000"  # Calling-
    # Party-Address (831) "sip:alice@example.net", 33 octets and 3 of padding
    "00000340 c000001c 000028af 74656c3a2b3431343436363831383030"  # Called-Party-Address
    # (832) "tel:+41446681800"
)


def test_golden_service_information_decodes_the_called_party() -> None:
    role = codec.encode_avp(829, (0).to_bytes(4, "big"), vendor_id=codec.VENDOR_3GPP)
    calling = codec.encode_avp(831, b"sip:alice@example.net", vendor_id=codec.VENDOR_3GPP)
    built = _service_information(role, calling, _called("tel:+41446681800"))
    assert built == GOLDEN_SERVICE_INFORMATION
    request = parse_ccr(_ccr(GOLDEN_SERVICE_INFORMATION))
    assert request.called_party_address == "tel:+41446681800"
    assert request.destination == "tel:+41446681800"


def test_called_party_from_the_librarys_ims_information() -> None:
    """python-diameter's encoding of the same path reads back."""
    from diameter.message.avp.grouped import ImsInformation

    ccr = LibCcr()
    ccr.header.application_id = 4
    ccr.session_id = "scscf.example.net;1;1"
    ccr.origin_host = b"scscf.example.net"
    ccr.origin_realm = b"example.net"
    ccr.destination_realm = b"ocs.example.net"
    ccr.auth_application_id = 4
    ccr.cc_request_type = 1
    ccr.cc_request_number = 0
    ccr.service_information = ServiceInformation(
        ims_information=ImsInformation(
            node_functionality=0, called_party_address="sip:+12125551234@example.net;user=phone"
        )
    )
    request = parse_ccr(ccr.as_bytes())
    assert request.called_party_address == "sip:+12125551234@example.net;user=phone"


def test_no_service_information_means_no_called_party() -> None:
    request = parse_ccr(_ccr())
    assert request.called_party_address is None and request.destination is None
    ps_only = parse_ccr(gy_ccr_initial())  # PS-Information only: a data session
    assert ps_only.called_party_address is None
    no_called = parse_ccr(_ccr(_service_information()))
    assert no_called.called_party_address is None


def test_configured_destination_avp_when_there_is_no_called_party() -> None:
    called_station = codec.encode_avp(30, b"+41791234567", mandatory=False)
    data = _ccr(called_station)
    assert parse_ccr(data).destination is None  # not configured: not read
    request = parse_ccr(data, destination_avp=(30, 0))
    assert request.destination_avp_value == "+41791234567"
    assert request.destination == "+41791234567"
    both = parse_ccr(
        _ccr(called_station, _service_information(_called("tel:+44"))), destination_avp=(30, 0)
    )
    assert both.destination == "tel:+44"  # Called-Party-Address wins
    vendor = codec.encode_avp(1234, b"0791234567", vendor_id=9, mandatory=False)
    assert parse_ccr(_ccr(vendor), destination_avp=(1234, 9)).destination == "0791234567"


def test_bad_called_party_address_is_refused_with_the_hierarchy() -> None:
    bad = _service_information(codec.encode_avp(832, b"\xff\xfe", vendor_id=codec.VENDOR_3GPP))
    error = _refused(_ccr(bad))
    assert error.result_code == codec.DIAMETER_INVALID_AVP_VALUE
    assert "not valid UTF-8" in str(error)
    # Failed-AVP: Service-Information { IMS-Information { the bad Called-Party-Address } }
    assert error.failed_avp is not None
    assert error.failed_avp.startswith(bytes.fromhex("00000369c0"))
    assert bytes.fromhex("00000340c000000e000028affffe") in error.failed_avp
    twice = _service_information(_called("tel:+1"), _called("tel:+2"))
    assert _refused(_ccr(twice)).result_code == codec.DIAMETER_AVP_OCCURS_TOO_MANY_TIMES
    two_groups = _ccr(
        _service_information(_called("tel:+1")), _service_information(_called("tel:+2"))
    )
    assert _refused(two_groups).result_code == codec.DIAMETER_AVP_OCCURS_TOO_MANY_TIMES
    truncated = bytearray(_service_information(_called("tel:+41")))
    truncated[5:8] = (len(truncated) + 8).to_bytes(3, "big")  # claims more than is there
    assert _refused(_ccr(bytes(truncated))).result_code in (
        codec.DIAMETER_INVALID_AVP_LENGTH,
        5014,
        3009,
    )
