"""Diameter leniency for real clients, on the bytes Kamailio's ims_charging really sends.

tests/unit/data/kamailio-ims-charging.hex holds a CER, a CCR-Initial and a CCR-Termination
captured from Kamailio 5.6.3 (Debian 12, ims_charging + cdp) talking to ocsd, once with the
recipe's settings and once with ims_charging's own origin_host/origin_realm set (then Origin-Host
and Origin-Realm come twice). What they carry that a strict RFC 4006 reading refuses:
Accounting-Record-Type (480) and Accounting-Record-Number (485) with the M bit, a
Vendor-Specific-Application-Id (260) holding the only Auth-Application-Id, and the caller as a
SIP URI with a port.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ocs.core.identity import IdentityKind
from ocs.diameter import codec
from ocs.diameter.credit_control import (
    TOLERANCES,
    RequestType,
    ServiceUnits,
    SubscriptionIdType,
    parse_ccr,
)
from ocs.diameter.handler import subscriber_identities
from ocs.diameter.peer_state import capabilities_exchange

DATA = Path(__file__).resolve().parent / "data" / "kamailio-ims-charging.hex"
CAPTURED = {
    name: bytes.fromhex(value)
    for name, value in (
        line.split() for line in DATA.read_text().splitlines() if line and line[0] != "#"
    )
}


def avps(data: bytes) -> list[tuple[int, int, bytes]]:
    return [(s[0], s[2], data[s[4] : s[5]]) for s in codec.avp_spans(data, 20, len(data))]


def test_the_captures_are_what_ims_charging_sends() -> None:
    ccr = CAPTURED["single-ccr-initial"]
    codes = [(code, vendor) for code, vendor, _ in avps(ccr)]
    # The shape the leniency is for: 480/485 with the M bit, Auth-Application-Id only inside 260.
    assert (480, 0) in codes and (485, 0) in codes and (260, 0) in codes
    assert (258, 0) not in codes
    flags = {s[0]: s[1] for s in codec.avp_spans(ccr, 20, len(ccr))}
    assert flags[480] & 0x40 and flags[485] & 0x40
    double = CAPTURED["double-ccr-initial"]
    assert [c for c, _, _ in avps(double)].count(264) == 2
    assert [c for c, _, _ in avps(double)].count(296) == 2


@pytest.mark.parametrize("variant", ["single", "double"])
def test_the_ccr_initial_is_read_with_its_tolerances(variant: str) -> None:
    request = parse_ccr(CAPTURED[f"{variant}-ccr-initial"])
    assert request.request_type is RequestType.INITIAL
    assert request.request_number == 0
    assert request.auth_application_id == 4
    assert request.origin_host == "kamailio.ocs.test"
    assert request.origin_realm == "ocs.test"
    assert request.destination_realm == "ocs.test"
    assert request.service_context_id == "ext.01.001.8.32260@3gpp.org"
    assert request.subscription_ids == (
        (SubscriptionIdType.END_USER_SIP_URI, "sip:15550000001@127.0.0.1:25090"),
    )
    (mscc,) = request.multiple_services
    assert (mscc.rating_group, mscc.service_identifier) == (100, 1000)
    assert mscc.requested == ServiceUnits(time_s=30)
    expected = ["base_avp", "auth_application_id_in_vsai", "sip_uri_normalized"]
    if variant == "double":
        expected[1:1] = ["duplicate_origin_host", "duplicate_origin_realm"]
    assert sorted(request.tolerances) == sorted(expected)
    assert set(request.tolerances) <= set(TOLERANCES)
    # The subscriber: the From URI without its port finds the account given sip:...@127.0.0.1.
    assert subscriber_identities(request)[0] == (IdentityKind.SIP_URI, "15550000001@127.0.0.1")


def test_the_ccr_termination_reports_the_time_used() -> None:
    request = parse_ccr(CAPTURED["single-ccr-termination"])
    assert request.request_type is RequestType.TERMINATION
    assert request.request_number == 1
    assert request.termination_cause == 1
    (mscc,) = request.multiple_services
    assert mscc.used == (ServiceUnits(time_s=0),)


def test_the_cdp_cer_has_a_common_application() -> None:
    message = codec.parse_message(CAPTURED["single-cer"])
    result = capabilities_exchange(
        message, allowed=lambda host, realm, address: True, peer_address="127.0.0.1"
    )
    assert result.result_code == codec.DIAMETER_SUCCESS


# --- what stays refused --------------------------------------------------------------------


def replace_avp(data: bytes, code: int, new: bytes | None, *, nth: int = 0) -> bytes:
    """The message with the nth top-level AVP of ``code`` replaced by ``new`` (None: removed),
    its length fixed."""
    spans = [s for s in codec.avp_spans(data, 20, len(data)) if s[0] == code]
    _code, _flags, _vendor, start, _data_start, end = spans[nth]
    end = (end + 3) & ~3
    body = data[20:start] + (new or b"") + data[end:]
    header = bytearray(data[:20])
    header[1:4] = (20 + len(body)).to_bytes(3, "big")
    return bytes(header) + body


def test_two_different_origin_hosts_are_still_refused() -> None:
    data = CAPTURED["double-ccr-initial"]
    other = codec.encode_avp(codec.AVP_ORIGIN_HOST, b"someone.else.test")
    with pytest.raises(codec.MalformedMessage) as caught:
        parse_ccr(replace_avp(data, codec.AVP_ORIGIN_HOST, other, nth=1))
    assert caught.value.result_code == codec.DIAMETER_AVP_OCCURS_TOO_MANY_TIMES


def test_an_unknown_mandatory_avp_is_still_5001() -> None:
    data = CAPTURED["single-ccr-initial"]
    bad = bytearray(data + codec.encode_avp(9999, b"\0\0\0\7"))  # M bit set
    bad[1:4] = len(bad).to_bytes(3, "big")
    with pytest.raises(codec.MalformedMessage) as caught:
        parse_ccr(bytes(bad))
    assert caught.value.result_code == codec.DIAMETER_AVP_UNSUPPORTED


def test_an_auth_application_id_other_than_4_inside_the_vsai_is_5004() -> None:
    data = CAPTURED["single-ccr-initial"]
    vsai = codec.avp_grouped(
        codec.AVP_VENDOR_SPECIFIC_APPLICATION_ID,
        [
            codec.avp_u32(codec.AVP_VENDOR_ID, 10415),
            codec.avp_u32(codec.AVP_AUTH_APPLICATION_ID, 5),
        ],
    )
    with pytest.raises(codec.MalformedMessage) as caught:
        parse_ccr(replace_avp(data, codec.AVP_VENDOR_SPECIFIC_APPLICATION_ID, vsai))
    assert caught.value.result_code == codec.DIAMETER_INVALID_AVP_VALUE


def test_no_auth_application_id_anywhere_is_5005() -> None:
    data = CAPTURED["single-ccr-initial"]
    with pytest.raises(codec.MissingAvp) as caught:
        parse_ccr(replace_avp(data, codec.AVP_VENDOR_SPECIFIC_APPLICATION_ID, None))
    assert caught.value.result_code == codec.DIAMETER_MISSING_AVP


def test_a_strict_ccr_has_no_tolerances() -> None:
    data = CAPTURED["single-ccr-initial"]
    for code in (480, 485):
        data = replace_avp(data, code, None)
    data = replace_avp(
        data,
        codec.AVP_VENDOR_SPECIFIC_APPLICATION_ID,
        codec.avp_u32(codec.AVP_AUTH_APPLICATION_ID, 4),
    )
    data = replace_avp(data, codec.AVP_USER_NAME, None)
    sub = codec.avp_grouped(
        codec.AVP_SUBSCRIPTION_ID,
        [
            codec.avp_u32(codec.AVP_SUBSCRIPTION_ID_TYPE, 2),
            codec.avp_utf8(codec.AVP_SUBSCRIPTION_ID_DATA, "sip:15550000001@127.0.0.1"),
        ],
    )
    data = replace_avp(data, codec.AVP_SUBSCRIPTION_ID, sub)
    assert parse_ccr(data).tolerances == ()
