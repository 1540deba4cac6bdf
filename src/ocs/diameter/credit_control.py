"""The Credit-Control fast path: CCR in (RFC 4006 §3.1, 3GPP TS 32.299 Gy), CCA out (§3.2).

Pure: stdlib and ``ocs.diameter.codec`` only. ``parse_ccr`` walks the top-level AVPs once, picks
out what the credit decision needs and skips everything else by its length: Service-Information
and the rest of the 3GPP Grouped AVPs are never descended into. ``CcaEncoder`` precomputes the
constant AVPs once per daemon and assembles each answer with one ``bytes.join``.

Rules of this file (result codes from RFC 6733 §7.1, Failed-AVP from §7.5):
- Header: not a Credit-Control command → 3001 DIAMETER_COMMAND_UNSUPPORTED; an answer → 3008
  DIAMETER_INVALID_HDR_BITS; an application id other than 4 → 3007
  DIAMETER_APPLICATION_UNSUPPORTED. Header and AVP structure as in ``codec``.
- Required (``MissingAvp``, 5005, Failed-AVP an AVP of that code with a zero-filled value of
  the minimum size): Session-Id, Origin-Host, Origin-Realm, Destination-Realm,
  Auth-Application-Id, CC-Request-Type, CC-Request-Number; inside Subscription-Id both its
  members. Service-Context-Id is required by RFC 4006 but optional here: the decision does not
  need it and some clients leave it out.
- A fixed-size value of the wrong size → 5014 DIAMETER_INVALID_AVP_LENGTH (§7.1.5 "an AVP with
  an invalid length"); a value of the right size that makes no sense (bad UTF-8, an empty or
  non-ASCII identity, an unknown CC-Request-Type or Requested-Action, Auth-Application-Id not 4)
  → 5004 DIAMETER_INVALID_AVP_VALUE. Both with the AVP as received.
- A second instance of an AVP the ABNF allows once → 5009 DIAMETER_AVP_OCCURS_TOO_MANY_TIMES
  with that second instance; except an Origin-Host or Origin-Realm repeated with the same value
  (Kamailio's cdp and ims_charging both add them): the first is used, and it is a tolerance.
- Tolerances for real clients, each named in ``CreditControlRequest.tolerances`` so the server
  counts it (``TOLERANCES``): RFC 6733 base AVPs that are not in the CCR ABNF but that clients
  send with the M bit (Accounting-Record-Type, Accounting-Record-Number,
  Vendor-Specific-Application-Id ...: ``base_avp``); Auth-Application-Id given only inside
  Vendor-Specific-Application-Id (``auth_application_id_in_vsai``); the repeated origin AVPs
  above; a SIP URI Subscription-Id with a port or parameters, which the identity's normal form
  drops (``sip_uri_normalized``).
- A top-level AVP with the M bit that is neither read here nor in ``allowed_mandatory`` → 5001
  DIAMETER_AVP_UNSUPPORTED with that AVP (§7.1.5). The default allowed set is the whole RFC
  4006 CCR ABNF, the base and NASREQ AVPs clients put at the top level, and the common 3GPP Gy
  ones (Service-Information and friends, vendor 10415), so real PCEF traffic passes. Inside
  Grouped AVPs unknown members are skipped: 3GPP adds many to MSCC and Used-Service-Unit.
- An error inside a Grouped AVP reports the Grouped hierarchy around the offending AVP.
- The CCA follows RFC 4006 §3.2 order: Session-Id, Result-Code, Origin-Host, Origin-Realm,
  Auth-Application-Id, CC-Request-Type, CC-Request-Number, Origin-State-Id,
  Granted-Service-Unit, Multiple-Services-Credit-Control, Cost-Information,
  Final-Unit-Indication, Check-Balance-Result, Validity-Time, then the request's Proxy-Info
  AVPs in their order (RFC 6733 §6.2). A 3xxx Result-Code gets the E bit and no grant.
"""

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from typing import Final

from ocs.core.identity import sip_uri_has_extras
from ocs.core.trusted import assigning_init
from ocs.diameter import codec
from ocs.diameter.codec import (
    APP_CREDIT_CONTROL,
    AVP_AUTH_APPLICATION_ID,
    AVP_CC_INPUT_OCTETS,
    AVP_CC_OUTPUT_OCTETS,
    AVP_CC_REQUEST_NUMBER,
    AVP_CC_REQUEST_TYPE,
    AVP_CC_SERVICE_SPECIFIC_UNITS,
    AVP_CC_TIME,
    AVP_CC_TOTAL_OCTETS,
    AVP_CHECK_BALANCE_RESULT,
    AVP_COST_INFORMATION,
    AVP_COST_UNIT,
    AVP_CURRENCY_CODE,
    AVP_DESTINATION_HOST,
    AVP_DESTINATION_REALM,
    AVP_EVENT_TIMESTAMP,
    AVP_EXPONENT,
    AVP_FINAL_UNIT_ACTION,
    AVP_FINAL_UNIT_INDICATION,
    AVP_GRANTED_SERVICE_UNIT,
    AVP_MULTIPLE_SERVICES_CREDIT_CONTROL,
    AVP_ORIGIN_HOST,
    AVP_ORIGIN_REALM,
    AVP_ORIGIN_STATE_ID,
    AVP_PROXY_INFO,
    AVP_RATING_GROUP,
    AVP_REQUESTED_ACTION,
    AVP_REQUESTED_SERVICE_UNIT,
    AVP_RESULT_CODE,
    AVP_SERVICE_CONTEXT_ID,
    AVP_SERVICE_IDENTIFIER,
    AVP_SESSION_ID,
    AVP_SUBSCRIPTION_ID,
    AVP_SUBSCRIPTION_ID_DATA,
    AVP_SUBSCRIPTION_ID_TYPE,
    AVP_TERMINATION_CAUSE,
    AVP_UNIT_VALUE,
    AVP_USED_SERVICE_UNIT,
    AVP_USER_NAME,
    AVP_VALIDITY_TIME,
    AVP_VALUE_DIGITS,
    AVP_VENDOR_SPECIFIC_APPLICATION_ID,
    CMD_CREDIT_CONTROL,
    DEFAULT_MAX_DEPTH,
    DIAMETER_APPLICATION_UNSUPPORTED,
    DIAMETER_AVP_OCCURS_TOO_MANY_TIMES,
    DIAMETER_AVP_UNSUPPORTED,
    DIAMETER_COMMAND_UNSUPPORTED,
    DIAMETER_INVALID_AVP_LENGTH,
    DIAMETER_INVALID_AVP_VALUE,
    DIAMETER_INVALID_HDR_BITS,
    DIAMETER_UNABLE_TO_COMPLY,
    FLAG_ERROR,
    FLAG_PROXIABLE,
    FLAG_REQUEST,
    HEADER_LENGTH,
    MAX_MESSAGE_LENGTH,
    VENDOR_3GPP,
    AvpSpan,
    Header,
    MalformedMessage,
    Message,
    MissingAvp,
    avp_grouped,
    avp_header_error,
    avp_i32,
    avp_i64,
    avp_spans,
    avp_u32,
    avp_u64,
    avp_utf8,
    check_header,
    encode_avp,
    encode_identity,
    is_protocol_error,
    ntp_to_datetime,
    padded_avp,
    peek_header,
    wrap_failed_avp,
)

__all__ = [
    "CCR_ALLOWED_MANDATORY_AVPS",
    "TOLERANCES",
    "CcaEncoder",
    "CheckBalanceResult",
    "CostInformation",
    "CreditControlRequest",
    "FinalUnitAction",
    "MalformedMessage",
    "MissingAvp",
    "Mscc",
    "MsccAnswer",
    "RequestType",
    "RequestedAction",
    "ServiceUnits",
    "SubscriptionIdType",
    "build_cca",
    "parse_ccr",
]


class RequestType(IntEnum):
    """CC-Request-Type (RFC 4006 §8.3)."""

    INITIAL = 1
    UPDATE = 2
    TERMINATION = 3
    EVENT = 4


class RequestedAction(IntEnum):
    """Requested-Action (RFC 4006 §8.41), for CC-Request-Type EVENT."""

    DIRECT_DEBITING = 0
    REFUND_ACCOUNT = 1
    CHECK_BALANCE = 2
    PRICE_ENQUIRY = 3


class SubscriptionIdType(IntEnum):
    """Subscription-Id-Type (RFC 4006 §8.47). Unknown values are kept as plain ints."""

    END_USER_E164 = 0
    END_USER_IMSI = 1
    END_USER_SIP_URI = 2
    END_USER_NAI = 3
    END_USER_PRIVATE = 4


class FinalUnitAction(IntEnum):
    """Final-Unit-Action (RFC 4006 §8.35)."""

    TERMINATE = 0
    REDIRECT = 1
    RESTRICT_ACCESS = 2


class CheckBalanceResult(IntEnum):
    """Check-Balance-Result (RFC 4006 §8.6)."""

    ENOUGH_CREDIT = 0
    NO_CREDIT = 1


_U32_MAX: Final = 0xFFFFFFFF
MAX_IDENTITY_OCTETS: Final = 255  # a DiameterIdentity is an FQDN
MAX_SESSION_ID_OCTETS: Final = 1024  # keys sessions and usage in SQL (btree rows stay small)
_U64_MAX: Final = 0xFFFFFFFFFFFFFFFF


def _check_range(name: str, value: object, maximum: int) -> None:
    # Not ``type(value) is int``: compiled (mypyc), that test is true of a bool too.
    if value is None:
        return  # the common case, tested first: this runs for every unit parsed or granted
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise ValueError(f"{name} must be an int from 0 to {maximum}, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class ServiceUnits:
    """Requested, used or granted units (RFC 4006 §8.17-8.21): seconds, octets, service units.

    None means the AVP is absent; an empty ``ServiceUnits()`` is a Requested-Service-Unit with
    no member, i.e. "whatever you grant".
    """

    time_s: int | None = None
    total_octets: int | None = None
    input_octets: int | None = None
    output_octets: int | None = None
    service_specific: int | None = None

    def __init__(
        self,
        *,
        time_s: int | None = None,
        total_octets: int | None = None,
        input_octets: int | None = None,
        output_octets: int | None = None,
        service_specific: int | None = None,
    ) -> None:
        self.time_s = time_s  # type: ignore[misc]
        self.total_octets = total_octets  # type: ignore[misc]
        self.input_octets = input_octets  # type: ignore[misc]
        self.output_octets = output_octets  # type: ignore[misc]
        self.service_specific = service_specific  # type: ignore[misc]
        self.__post_init__()

    def __post_init__(self) -> None:
        # Each field as it is: narrowed to int first, mypyc would pass True on as 1.
        _check_range("time_s", self.time_s, _U32_MAX)
        _check_range("total_octets", self.total_octets, _U64_MAX)
        _check_range("input_octets", self.input_octets, _U64_MAX)
        _check_range("output_octets", self.output_octets, _U64_MAX)
        _check_range("service_specific", self.service_specific, _U64_MAX)

    @property
    def is_empty(self) -> bool:
        return (
            self.time_s is None
            and self.total_octets is None
            and self.input_octets is None
            and self.output_octets is None
            and self.service_specific is None
        )


assigning_init(ServiceUnits)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class Mscc:
    """One Multiple-Services-Credit-Control of a CCR (RFC 4006 §8.16).

    ``service_identifier`` is the first Service-Identifier (RFC 4006 allows several; Gy
    clients send at most one). ``reporting_reason`` is the 3GPP Reporting-Reason of the MSCC,
    or else of its first Used-Service-Unit that carries one.
    """

    rating_group: int | None = None
    service_identifier: int | None = None
    requested: ServiceUnits | None = None
    used: tuple[ServiceUnits, ...] = ()
    reporting_reason: int | None = None

    def __init__(
        self,
        *,
        rating_group: int | None = None,
        service_identifier: int | None = None,
        requested: ServiceUnits | None = None,
        used: tuple[ServiceUnits, ...] = (),
        reporting_reason: int | None = None,
    ) -> None:
        self.rating_group = rating_group  # type: ignore[misc]
        self.service_identifier = service_identifier  # type: ignore[misc]
        self.requested = requested  # type: ignore[misc]
        self.used = used  # type: ignore[misc]
        self.reporting_reason = reporting_reason  # type: ignore[misc]


assigning_init(Mscc)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class CreditControlRequest:
    """What the credit decision needs from a CCR. Identities are text; units as in
    ``ServiceUnits``; ``raw_header`` is the request's 20-octet header (for the answer);
    ``proxy_infos`` are its Proxy-Info AVPs as received, copied into every answer."""

    session_id: str
    origin_host: str
    origin_realm: str
    destination_realm: str
    auth_application_id: int
    request_type: RequestType
    request_number: int
    raw_header: bytes
    destination_host: str | None = None
    service_context_id: str | None = None
    user_name: str | None = None
    subscription_ids: tuple[tuple[int, str], ...] = ()
    requested_action: RequestedAction | None = None
    requested_unit: ServiceUnits | None = None
    used_units: tuple[ServiceUnits, ...] = ()
    multiple_services: tuple[Mscc, ...] = ()
    termination_cause: int | None = None
    event_timestamp: datetime | None = None
    origin_state_id: int | None = None
    proxy_infos: tuple[bytes, ...] = ()
    tolerances: tuple[str, ...] = ()  # what was accepted from a lenient reading (module rules)
    # The called party: Service-Information/IMS-Information/Called-Party-Address (TS 32.299),
    # and the value of the AVP configured as the destination for clients that send none.
    called_party_address: str | None = None
    destination_avp_value: str | None = None

    def __init__(
        self,
        *,
        session_id: str,
        origin_host: str,
        origin_realm: str,
        destination_realm: str,
        auth_application_id: int,
        request_type: RequestType,
        request_number: int,
        raw_header: bytes,
        destination_host: str | None = None,
        service_context_id: str | None = None,
        user_name: str | None = None,
        subscription_ids: tuple[tuple[int, str], ...] = (),
        requested_action: RequestedAction | None = None,
        requested_unit: ServiceUnits | None = None,
        used_units: tuple[ServiceUnits, ...] = (),
        multiple_services: tuple[Mscc, ...] = (),
        termination_cause: int | None = None,
        event_timestamp: datetime | None = None,
        origin_state_id: int | None = None,
        proxy_infos: tuple[bytes, ...] = (),
        tolerances: tuple[str, ...] = (),
        called_party_address: str | None = None,
        destination_avp_value: str | None = None,
    ) -> None:
        self.session_id = session_id  # type: ignore[misc]
        self.origin_host = origin_host  # type: ignore[misc]
        self.origin_realm = origin_realm  # type: ignore[misc]
        self.destination_realm = destination_realm  # type: ignore[misc]
        self.auth_application_id = auth_application_id  # type: ignore[misc]
        self.request_type = request_type  # type: ignore[misc]
        self.request_number = request_number  # type: ignore[misc]
        self.raw_header = raw_header  # type: ignore[misc]
        self.destination_host = destination_host  # type: ignore[misc]
        self.service_context_id = service_context_id  # type: ignore[misc]
        self.user_name = user_name  # type: ignore[misc]
        self.subscription_ids = subscription_ids  # type: ignore[misc]
        self.requested_action = requested_action  # type: ignore[misc]
        self.requested_unit = requested_unit  # type: ignore[misc]
        self.used_units = used_units  # type: ignore[misc]
        self.multiple_services = multiple_services  # type: ignore[misc]
        self.termination_cause = termination_cause  # type: ignore[misc]
        self.event_timestamp = event_timestamp  # type: ignore[misc]
        self.origin_state_id = origin_state_id  # type: ignore[misc]
        self.proxy_infos = proxy_infos  # type: ignore[misc]
        self.tolerances = tolerances  # type: ignore[misc]
        self.called_party_address = called_party_address  # type: ignore[misc]
        self.destination_avp_value = destination_avp_value  # type: ignore[misc]

    @property
    def destination(self) -> str | None:
        """What the call is rated by: the Called-Party-Address, else the configured AVP."""
        if self.called_party_address is not None:
            return self.called_party_address
        return self.destination_avp_value

    @property
    def header(self) -> Header:
        return peek_header(self.raw_header)

    @property
    def end_to_end(self) -> int:
        return int.from_bytes(self.raw_header[16:20], "big")

    @property
    def hop_by_hop(self) -> int:
        return int.from_bytes(self.raw_header[12:16], "big")


assigning_init(CreditControlRequest)


# --- Parsing ---------------------------------------------------------------------------------


def _allowed(*pairs: tuple[int, int]) -> frozenset[tuple[int, int]]:
    return frozenset(pairs)


_IETF: Final = 0
CCR_ALLOWED_MANDATORY_AVPS: Final = _allowed(
    # RFC 4006 §3.1 CCR ABNF (those not read by parse_ccr are skipped).
    (419, _IETF),  # CC-Sub-Session-Id
    (50, _IETF),  # Acct-Multi-Session-Id
    (278, _IETF),  # Origin-State-Id
    (439, _IETF),  # Service-Identifier
    (455, _IETF),  # Multiple-Services-Indicator
    (440, _IETF),  # Service-Parameter-Info
    (411, _IETF),  # CC-Correlation-Id
    (458, _IETF),  # User-Equipment-Info
    (284, _IETF),  # Proxy-Info
    (282, _IETF),  # Route-Record
    # Base and later IETF AVPs seen at the top level of CCRs.
    (277, _IETF),  # Auth-Session-State
    (301, _IETF),  # DRMP (RFC 7944)
    (621, _IETF),  # OC-Supported-Features (RFC 7683)
    (650, _IETF),  # Load (RFC 8583)
    (653, _IETF),  # User-Equipment-Info-Extension (RFC 8506)
    # NASREQ (RFC 7155) AVPs gateways put at the top level.
    (4, _IETF),  # NAS-IP-Address
    (8, _IETF),  # Framed-IP-Address
    (30, _IETF),  # Called-Station-Id
    (31, _IETF),  # Calling-Station-Id
    (32, _IETF),  # NAS-Identifier
    (44, _IETF),  # Acct-Session-Id
    (61, _IETF),  # NAS-Port-Type
    (87, _IETF),  # NAS-Port-Id
    (97, _IETF),  # Framed-IPv6-Prefix
    # 3GPP TS 32.299 Gy and TS 29.061 AVPs (vendor 10415).
    (873, VENDOR_3GPP),  # Service-Information
    (2055, VENDOR_3GPP),  # AoC-Request-Type
    (628, VENDOR_3GPP),  # Supported-Features
    (1016, VENDOR_3GPP),  # QoS-Information
    (1032, VENDOR_3GPP),  # RAT-Type
    (1, VENDOR_3GPP),  # 3GPP-IMSI
    (2, VENDOR_3GPP),  # 3GPP-Charging-Id
    (3, VENDOR_3GPP),  # 3GPP-PDP-Type
    (5, VENDOR_3GPP),  # 3GPP-GPRS-Negotiated-QoS-Profile
    (6, VENDOR_3GPP),  # 3GPP-SGSN-Address
    (7, VENDOR_3GPP),  # 3GPP-GGSN-Address
    (8, VENDOR_3GPP),  # 3GPP-IMSI-MCC-MNC
    (9, VENDOR_3GPP),  # 3GPP-GGSN-MCC-MNC
    (10, VENDOR_3GPP),  # 3GPP-NSAPI
    (12, VENDOR_3GPP),  # 3GPP-Selection-Mode
    (13, VENDOR_3GPP),  # 3GPP-Charging-Characteristics
    (18, VENDOR_3GPP),  # 3GPP-SGSN-MCC-MNC
    (20, VENDOR_3GPP),  # 3GPP-IMEISV
    (21, VENDOR_3GPP),  # 3GPP-RAT-Type
    (22, VENDOR_3GPP),  # 3GPP-User-Location-Info
    (23, VENDOR_3GPP),  # 3GPP-MS-TimeZone
)
"""Top-level CCR AVPs accepted with the M bit although ``parse_ccr`` does not read them."""

# RFC 6733 base AVPs that are not in the RFC 4006 CCR ABNF but that real clients send with the
# M bit (Kamailio's ims_charging: 480, 485, 260). Accepted, and counted as a tolerance.
CCR_TOLERATED_BASE_AVPS: Final = _allowed(
    (480, _IETF),  # Accounting-Record-Type
    (485, _IETF),  # Accounting-Record-Number
    (483, _IETF),  # Accounting-Realtime-Required
    (287, _IETF),  # Accounting-Sub-Session-Id
    (259, _IETF),  # Acct-Application-Id
    (AVP_VENDOR_SPECIFIC_APPLICATION_ID, _IETF),  # 260, read for Auth-Application-Id
)

# The tolerances a CCR can be read with (bounded metric labels; module rules).
TOLERANCES: Final = (
    "base_avp",
    "auth_application_id_in_vsai",
    "duplicate_origin_host",
    "duplicate_origin_realm",
    "sip_uri_normalized",
)
# 3GPP TS 32.299 §7.2: Service-Information > IMS-Information > Called-Party-Address, the
# destination a call is rated by (issue 13).
AVP_SERVICE_INFORMATION: Final = 873
AVP_IMS_INFORMATION: Final = 876
AVP_CALLED_PARTY_ADDRESS: Final = 832

_unpack_u32 = struct.Struct(">I").unpack_from
_unpack_avp_header = struct.Struct(">II").unpack_from
_unpack_u64 = struct.Struct(">Q").unpack_from
_raw = padded_avp


def _wrong_size(data: bytes, span: AvpSpan, expected: int) -> MalformedMessage:
    code, _flags, vendor_id, avp_start, data_start, data_end = span
    return MalformedMessage(
        f"AVP {codec.avp_name(code, vendor_id)} has a {data_end - data_start}-octet value, "
        f"expected {expected}",
        result_code=DIAMETER_INVALID_AVP_LENGTH,
        failed_avp=_raw(data, avp_start, data_end),
    )


def _invalid(data: bytes, span: AvpSpan, why: str) -> MalformedMessage:
    code, _flags, vendor_id, avp_start, _data_start, data_end = span
    return MalformedMessage(
        f"AVP {codec.avp_name(code, vendor_id)}: {why}",
        result_code=DIAMETER_INVALID_AVP_VALUE,
        failed_avp=_raw(data, avp_start, data_end),
    )


def _too_many(data: bytes, span: AvpSpan) -> MalformedMessage:
    code, _flags, vendor_id, avp_start, _data_start, data_end = span
    return MalformedMessage(
        f"AVP {codec.avp_name(code, vendor_id)} occurs more than once",
        result_code=DIAMETER_AVP_OCCURS_TOO_MANY_TIMES,
        failed_avp=_raw(data, avp_start, data_end),
    )


def _u32(data: bytes, span: AvpSpan) -> int:
    data_start = span[4]
    if span[5] - data_start != 4:
        raise _wrong_size(data, span, 4)
    return int(_unpack_u32(data, data_start)[0])


def _u64(data: bytes, span: AvpSpan) -> int:
    data_start = span[4]
    if span[5] - data_start != 8:
        raise _wrong_size(data, span, 8)
    return int(_unpack_u64(data, data_start)[0])


def _utf8(data: bytes, span: AvpSpan) -> str:
    try:
        text = data[span[4] : span[5]].decode()
    except UnicodeDecodeError:
        raise _invalid(data, span, "not valid UTF-8") from None
    return text


# DiameterIdentities already checked, by their octets: a peer sends the same few (its own
# Origin-Host and realm, ours) in every request. Bounded; cleared when full.
_IDENTITIES: dict[bytes, str] = {}
_IDENTITIES_MAX: Final = 4096


def _identity(data: bytes, span: AvpSpan) -> str:
    raw = data[span[4] : span[5]]
    known = _IDENTITIES.get(raw)
    if known is not None:
        return known
    text = _check_identity(data, span, raw)
    if len(_IDENTITIES) >= _IDENTITIES_MAX:
        _IDENTITIES.clear()
    _IDENTITIES[raw] = text
    return text


def _check_identity(data: bytes, span: AvpSpan, raw: bytes) -> str:
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise _invalid(data, span, "a DiameterIdentity must be ASCII") from None
    if not text:
        raise _invalid(data, span, "empty DiameterIdentity")
    if len(raw) > MAX_IDENTITY_OCTETS or not text.isprintable() or " " in text:
        # An FQDN (RFC 6733 §4.3.1): no spaces, no control characters, at most 255 octets.
        raise _invalid(data, span, "a DiameterIdentity must be an FQDN")
    return text


def _session_id(data: bytes, span: AvpSpan) -> str:
    """Session-Id (RFC 6733 §8.8): UTF-8 text; also no NUL or control characters and at most
    ``MAX_SESSION_ID_OCTETS``, as it keys sessions and usage in SQL."""
    text = _utf8(data, span)
    if not text:
        raise _invalid(data, span, "empty Session-Id")
    if span[5] - span[4] > MAX_SESSION_ID_OCTETS:
        raise _invalid(data, span, f"a Session-Id longer than {MAX_SESSION_ID_OCTETS} octets")
    if not text.isprintable():
        raise _invalid(data, span, "a Session-Id with a NUL or control characters")
    return text


def _too_deep(data: bytes, span: AvpSpan, max_depth: int) -> MalformedMessage:
    code, _flags, vendor_id, avp_start, _data_start, data_end = span
    return MalformedMessage(
        f"AVP {codec.avp_name(code, vendor_id)} nests deeper than {max_depth} levels",
        result_code=DIAMETER_UNABLE_TO_COMPLY,
        failed_avp=_raw(data, avp_start, data_end),
    )


def _members(data: bytes, span: AvpSpan, depth: int, max_depth: int) -> list[AvpSpan]:
    """The member spans of the Grouped AVP ``span`` found at nesting level ``depth``."""
    if depth >= max_depth:
        raise _too_deep(data, span, max_depth)
    return avp_spans(data, span[4], span[5])


_NO_UNITS: Final = ServiceUnits()
_SUBSCRIPTION_ID_TYPES: Final = tuple(SubscriptionIdType)


def _units(
    data: bytes, span: AvpSpan, depth: int, max_depth: int
) -> tuple[ServiceUnits, int | None]:
    """A Requested- or Used-Service-Unit, and the 3GPP Reporting-Reason found in it.

    Walks its members inline (same checks as ``codec.avp_spans``): it runs for every MSCC.
    """
    if depth >= max_depth:
        raise _too_deep(data, span, max_depth)
    time_s: int | None = None
    total: int | None = None
    uplink: int | None = None
    downlink: int | None = None
    specific: int | None = None
    reason: int | None = None
    pos = span[4]
    end = span[5]
    try:
        while pos < end:
            if end - pos < 8:
                raise avp_header_error(data, pos, end)
            code, word = _unpack_avp_header(data, pos)
            length = word & 0xFFFFFF
            flags = word >> 24
            if flags & 0x80:
                if length < 12 or pos + length > end or end - pos < 12:
                    raise avp_header_error(data, pos, end)
                vendor_id = _unpack_u32(data, pos + 8)[0]
                data_start = pos + 12
            else:
                if length < 8 or pos + length > end:
                    raise avp_header_error(data, pos, end)
                vendor_id = 0
                data_start = pos + 8
            if flags & 0x1F and flags & 0x40:
                raise avp_header_error(data, pos, end)
            size = pos + length - data_start
            if vendor_id == 0:
                if code == AVP_CC_TIME:
                    if size != 4:
                        raise _wrong_size(data, (code, flags, 0, pos, data_start, pos + length), 4)
                    time_s = _unpack_u32(data, data_start)[0]
                elif code in _U64_UNITS:
                    if size != 8:
                        raise _wrong_size(data, (code, flags, 0, pos, data_start, pos + length), 8)
                    value = _unpack_u64(data, data_start)[0]
                    if code == AVP_CC_TOTAL_OCTETS:
                        total = value
                    elif code == AVP_CC_INPUT_OCTETS:
                        uplink = value
                    elif code == AVP_CC_OUTPUT_OCTETS:
                        downlink = value
                    else:
                        specific = value
            elif code == codec.AVP_3GPP_REPORTING_REASON and vendor_id == VENDOR_3GPP:
                reason = _u32(data, (code, flags, vendor_id, pos, data_start, pos + length))
            pos += (length + 3) & ~3
    except MalformedMessage as error:
        wrap_failed_avp(error, span[0], span[1], span[2])
        raise
    empty = time_s is None and total is None and uplink is None and downlink is None
    if empty and specific is None:  # an empty Requested-Service-Unit, as in most CCR-I
        return _NO_UNITS, reason
    # Read from Unsigned32/64 fields: in range by construction (ServiceUnits' own check).
    units = ServiceUnits(
        time_s=time_s,
        total_octets=total,
        input_octets=uplink,
        output_octets=downlink,
        service_specific=specific,
    )
    return units, reason


_U64_UNITS: Final = frozenset(
    (AVP_CC_TOTAL_OCTETS, AVP_CC_INPUT_OCTETS, AVP_CC_OUTPUT_OCTETS, AVP_CC_SERVICE_SPECIFIC_UNITS)
)


def _mscc(data: bytes, span: AvpSpan, max_depth: int) -> Mscc:
    rating_group: int | None = None
    service_identifier: int | None = None
    reporting_reason: int | None = None
    usu_reason: int | None = None
    requested: ServiceUnits | None = None
    used: list[ServiceUnits] = []
    try:
        for member in _members(data, span, 1, max_depth):
            code = member[0]
            if member[2] == 0:
                if code == AVP_USED_SERVICE_UNIT:
                    units, reason = _units(data, member, 2, max_depth)
                    used.append(units)
                    if usu_reason is None:
                        usu_reason = reason
                elif code == AVP_REQUESTED_SERVICE_UNIT:
                    if requested is not None:
                        raise _too_many(data, member)
                    requested = _units(data, member, 2, max_depth)[0]
                elif code == AVP_RATING_GROUP:
                    if rating_group is not None:
                        raise _too_many(data, member)
                    rating_group = _u32(data, member)
                elif code == AVP_SERVICE_IDENTIFIER:
                    value = _u32(data, member)
                    if service_identifier is None:
                        service_identifier = value
            elif code == codec.AVP_3GPP_REPORTING_REASON and member[2] == VENDOR_3GPP:
                reporting_reason = _u32(data, member)
    except MalformedMessage as error:
        wrap_failed_avp(error, span[0], span[1], span[2])
        raise
    return Mscc(
        rating_group=rating_group,
        service_identifier=service_identifier,
        requested=requested,
        used=tuple(used),
        reporting_reason=reporting_reason if reporting_reason is not None else usu_reason,
    )


def _subscription_id(data: bytes, span: AvpSpan, max_depth: int) -> tuple[int, str]:
    """Subscription-Id (RFC 4006 §8.46); members walked inline as in ``_units``."""
    if max_depth <= 1:
        raise _too_deep(data, span, max_depth)
    id_type: int | None = None
    id_data: str | None = None
    pos = span[4]
    end = span[5]
    try:
        while pos < end:
            if end - pos < 8:
                raise avp_header_error(data, pos, end)
            code, word = _unpack_avp_header(data, pos)
            length = word & 0xFFFFFF
            flags = word >> 24
            if flags & 0x80:
                if length < 12 or pos + length > end or end - pos < 12:
                    raise avp_header_error(data, pos, end)
                code = -1  # vendor members are skipped
            elif length < 8 or pos + length > end:
                raise avp_header_error(data, pos, end)
            if flags & 0x1F and flags & 0x40:
                raise avp_header_error(data, pos, end)
            if code == AVP_SUBSCRIPTION_ID_TYPE:
                id_type = _u32(data, (code, flags, 0, pos, pos + 8, pos + length))
            elif code == AVP_SUBSCRIPTION_ID_DATA:
                id_data = _utf8(data, (code, flags, 0, pos, pos + 8, pos + length))
            pos += (length + 3) & ~3
        if id_type is None:
            raise MissingAvp(AVP_SUBSCRIPTION_ID_TYPE, where="Subscription-Id")
        if id_data is None:
            raise MissingAvp(AVP_SUBSCRIPTION_ID_DATA, where="Subscription-Id")
    except MalformedMessage as error:
        wrap_failed_avp(error, span[0], span[1], span[2])
        raise
    if id_type < len(_SUBSCRIPTION_ID_TYPES):
        return _SUBSCRIPTION_ID_TYPES[id_type], id_data
    return id_type, id_data  # an unknown type is the decision's business, not ours


def _called_party_address(data: bytes, span: AvpSpan, max_depth: int) -> str | None:
    """Called-Party-Address from a Service-Information AVP (its IMS-Information), if any.

    Only this path is descended into; every other member is skipped by its length. A second
    IMS-Information or Called-Party-Address is 5009, as the TS 32.299 ABNF allows one each.
    """
    found: str | None = None
    try:
        ims: AvpSpan | None = None
        for member in _members(data, span, 1, max_depth):
            if member[0] == AVP_IMS_INFORMATION and member[2] == VENDOR_3GPP:
                if ims is not None:
                    raise _too_many(data, member)
                ims = member
        if ims is None:
            return None
        try:
            for member in _members(data, ims, 2, max_depth):
                if member[0] == AVP_CALLED_PARTY_ADDRESS and member[2] == VENDOR_3GPP:
                    if found is not None:
                        raise _too_many(data, member)
                    found = _utf8(data, member)
        except MalformedMessage as error:
            wrap_failed_avp(error, ims[0], ims[1], ims[2])
            raise
    except MalformedMessage as error:
        wrap_failed_avp(error, span[0], span[1], span[2])
        raise
    return found


# Top-level AVPs (vendor 0) that parse_ccr reads. Kinds below _FIRST_REPEATED may occur once
# (RFC 4006 §3.1 ABNF); the others any number of times.
(
    _UNKNOWN,
    _SESSION_ID,
    _ORIGIN_HOST,
    _ORIGIN_REALM,
    _DESTINATION_REALM,
    _AUTH_APPLICATION_ID,
    _CC_REQUEST_TYPE,
    _CC_REQUEST_NUMBER,
    _EVENT_TIMESTAMP,
    _SERVICE_CONTEXT_ID,
    _DESTINATION_HOST,
    _ORIGIN_STATE_ID,
    _USER_NAME,
    _REQUESTED_SERVICE_UNIT,
    _TERMINATION_CAUSE,
    _REQUESTED_ACTION,
    _MSCC,
    _SUBSCRIPTION_ID,
    _USED_SERVICE_UNIT,
    _PROXY_INFO,
    _VSAI,
) = range(21)
_FIRST_REPEATED: Final = _MSCC
_TOP_LEVEL_KINDS: Final[dict[int, int]] = {
    AVP_SESSION_ID: _SESSION_ID,
    AVP_ORIGIN_HOST: _ORIGIN_HOST,
    AVP_ORIGIN_REALM: _ORIGIN_REALM,
    AVP_DESTINATION_REALM: _DESTINATION_REALM,
    AVP_AUTH_APPLICATION_ID: _AUTH_APPLICATION_ID,
    AVP_CC_REQUEST_TYPE: _CC_REQUEST_TYPE,
    AVP_CC_REQUEST_NUMBER: _CC_REQUEST_NUMBER,
    AVP_EVENT_TIMESTAMP: _EVENT_TIMESTAMP,
    AVP_SERVICE_CONTEXT_ID: _SERVICE_CONTEXT_ID,
    AVP_DESTINATION_HOST: _DESTINATION_HOST,
    AVP_ORIGIN_STATE_ID: _ORIGIN_STATE_ID,
    AVP_USER_NAME: _USER_NAME,
    AVP_REQUESTED_SERVICE_UNIT: _REQUESTED_SERVICE_UNIT,
    AVP_TERMINATION_CAUSE: _TERMINATION_CAUSE,
    AVP_REQUESTED_ACTION: _REQUESTED_ACTION,
    AVP_MULTIPLE_SERVICES_CREDIT_CONTROL: _MSCC,
    AVP_SUBSCRIPTION_ID: _SUBSCRIPTION_ID,
    AVP_USED_SERVICE_UNIT: _USED_SERVICE_UNIT,
    AVP_PROXY_INFO: _PROXY_INFO,
    AVP_VENDOR_SPECIFIC_APPLICATION_ID: _VSAI,
}
_ORIGIN_KINDS: Final = {
    _ORIGIN_HOST: "duplicate_origin_host",
    _ORIGIN_REALM: "duplicate_origin_realm",
}
_REQUEST_TYPES: Final = (None, *RequestType)
_REQUESTED_ACTIONS: Final = tuple(RequestedAction)


def _ccr_header(data: bytes) -> None:
    flags, command_code, application_id = check_header(data)
    if command_code != CMD_CREDIT_CONTROL:
        raise MalformedMessage(
            f"command {command_code} is not Credit-Control",
            result_code=DIAMETER_COMMAND_UNSUPPORTED,
        )
    if not flags & FLAG_REQUEST:
        raise MalformedMessage(
            "a Credit-Control answer is not a request", result_code=DIAMETER_INVALID_HDR_BITS
        )
    if application_id != APP_CREDIT_CONTROL:
        raise MalformedMessage(
            f"application {application_id} is not Diameter Credit-Control",
            result_code=DIAMETER_APPLICATION_UNSUPPORTED,
        )


def _required(span: AvpSpan | None, code: int) -> AvpSpan:
    if span is None:
        raise MissingAvp(code, where="the CCR")
    return span


def parse_ccr(
    message: bytes | Message,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    allowed_mandatory: frozenset[tuple[int, int]] = CCR_ALLOWED_MANDATORY_AVPS,
    tolerated: frozenset[tuple[int, int]] = CCR_TOLERATED_BASE_AVPS,
    destination_avp: tuple[int, int] | None = None,
) -> CreditControlRequest:
    """Parse one framed Credit-Control-Request (module rules); one pass over its AVPs.

    ``destination_avp`` (code, vendor id) names a top-level UTF8String AVP to read as the
    called number when the request carries no Called-Party-Address (clients outside IMS).

    Raises ``MalformedMessage`` (``MissingAvp`` for 5005) with the result code and Failed-AVP
    for the answer. Structure errors are found first, then repeated AVPs, then missing ones,
    then bad values.
    """
    data = message.raw if isinstance(message, Message) else message
    _ccr_header(data)

    # One walk (``codec.avp_spans`` inlined: this loop is the hot path) that only files the
    # spans by kind; values are decoded afterwards, each by straight-line code.
    once: list[AvpSpan | None] = [None] * _FIRST_REPEATED
    repeated: list[tuple[int, AvpSpan]] = []
    tolerances: list[str] = []
    service_information: AvpSpan | None = None
    destination_span: AvpSpan | None = None
    unpack_header = _unpack_avp_header
    kinds = _TOP_LEVEL_KINDS
    end = len(data)
    pos = HEADER_LENGTH
    while pos < end:
        if end - pos < 8:
            raise avp_header_error(data, pos, end)
        code, word = unpack_header(data, pos)
        length = word & 0xFFFFFF
        flags = word >> 24
        if flags & 0x80:  # V bit: never one of ours at the top level
            if length < 12 or pos + length > end or end - pos < 12:
                raise avp_header_error(data, pos, end)
            vendor_id = _unpack_u32(data, pos + 8)[0]
            kind = _UNKNOWN
        else:
            if length < 8 or pos + length > end:
                raise avp_header_error(data, pos, end)
            vendor_id = 0
            kind = kinds.get(code, _UNKNOWN)
        if flags & 0x1F and flags & 0x40:  # reserved bits with the M bit
            raise avp_header_error(data, pos, end)
        if kind == _UNKNOWN:
            if flags & 0x40 and (code, vendor_id) not in allowed_mandatory:
                if (code, vendor_id) not in tolerated:
                    raise MalformedMessage(
                        f"AVP {codec.avp_name(code, vendor_id)} with the M bit is not "
                        "supported here",
                        result_code=DIAMETER_AVP_UNSUPPORTED,
                        failed_avp=_raw(data, pos, pos + length),
                    )
                if "base_avp" not in tolerances:
                    tolerances.append("base_avp")
            if vendor_id == VENDOR_3GPP and code == AVP_SERVICE_INFORMATION:
                span = (code, flags, vendor_id, pos, pos + 12, pos + length)
                if service_information is not None:
                    raise _too_many(data, span)
                service_information = span
            if destination_avp is not None and (code, vendor_id) == destination_avp:
                header_size = 12 if vendor_id else 8
                if destination_span is None:  # the first one counts
                    destination_span = (
                        code,
                        flags,
                        vendor_id,
                        pos,
                        pos + header_size,
                        pos + length,
                    )
        else:
            span = (code, flags, 0, pos, pos + 8, pos + length)
            if kind >= _FIRST_REPEATED:
                if kind == _VSAI and "base_avp" not in tolerances:
                    tolerances.append("base_avp")
                repeated.append((kind, span))
            elif once[kind] is None:
                once[kind] = span
            else:
                first = once[kind]
                duplicate = _ORIGIN_KINDS.get(kind)
                if (
                    duplicate is None
                    or first is None
                    or data[first[4] : first[5]] != data[span[4] : span[5]]
                ):
                    raise _too_many(data, span)
                if duplicate not in tolerances:
                    tolerances.append(duplicate)
        pos += (length + 3) & ~3

    session_id = _session_id(data, _required(once[_SESSION_ID], AVP_SESSION_ID))
    origin_host = _identity(data, _required(once[_ORIGIN_HOST], AVP_ORIGIN_HOST))
    origin_realm = _identity(data, _required(once[_ORIGIN_REALM], AVP_ORIGIN_REALM))
    destination_realm = _identity(data, _required(once[_DESTINATION_REALM], AVP_DESTINATION_REALM))
    optional = once[_AUTH_APPLICATION_ID]
    if optional is None:
        # Only inside Vendor-Specific-Application-Id (Kamailio's cdp puts it there).
        optional = _auth_application_in_vsai(data, repeated, max_depth)
        if optional is not None:
            tolerances.append("auth_application_id_in_vsai")
    span = _required(optional, AVP_AUTH_APPLICATION_ID)
    auth_application_id = _u32(data, span)
    if auth_application_id != APP_CREDIT_CONTROL:
        raise _invalid(data, span, "Auth-Application-Id must be 4")
    span = _required(once[_CC_REQUEST_TYPE], AVP_CC_REQUEST_TYPE)
    value = _u32(data, span)
    if not 1 <= value <= 4:
        raise _invalid(data, span, f"unknown CC-Request-Type {value}")
    request_type = _REQUEST_TYPES[value]
    request_number = _u32(data, _required(once[_CC_REQUEST_NUMBER], AVP_CC_REQUEST_NUMBER))
    if not session_id:
        raise _invalid(data, _required(once[_SESSION_ID], AVP_SESSION_ID), "empty Session-Id")

    optional = once[_EVENT_TIMESTAMP]
    event_timestamp = ntp_to_datetime(_u32(data, optional)) if optional else None
    optional = once[_SERVICE_CONTEXT_ID]
    service_context_id = _utf8(data, optional) if optional else None
    optional = once[_DESTINATION_HOST]
    destination_host = _identity(data, optional) if optional else None
    optional = once[_ORIGIN_STATE_ID]
    origin_state_id = _u32(data, optional) if optional else None
    optional = once[_USER_NAME]
    user_name = _utf8(data, optional) if optional else None
    optional = once[_REQUESTED_SERVICE_UNIT]
    requested_unit = _units(data, optional, 1, max_depth)[0] if optional else None
    optional = once[_TERMINATION_CAUSE]
    termination_cause = _u32(data, optional) if optional else None
    requested_action: RequestedAction | None = None
    optional = once[_REQUESTED_ACTION]
    if optional:
        value = _u32(data, optional)
        if value >= len(_REQUESTED_ACTIONS):
            raise _invalid(data, optional, f"unknown Requested-Action {value}")
        requested_action = _REQUESTED_ACTIONS[value]

    subscription_ids: list[tuple[int, str]] = []
    used_units: list[ServiceUnits] = []
    multiple_services: list[Mscc] = []
    proxy_infos: list[bytes] = []
    sip_uri_extras = False
    for kind, span in repeated:
        if kind == _MSCC:
            multiple_services.append(_mscc(data, span, max_depth))
        elif kind == _SUBSCRIPTION_ID:
            found = _subscription_id(data, span, max_depth)
            subscription_ids.append(found)
            if found[0] == SubscriptionIdType.END_USER_SIP_URI and not sip_uri_extras:
                sip_uri_extras = sip_uri_has_extras(found[1])
        elif kind == _USED_SERVICE_UNIT:
            used_units.append(_units(data, span, 1, max_depth)[0])
        elif kind == _PROXY_INFO:
            proxy_infos.append(_raw(data, span[3], span[5]))
        # _VSAI: read above for Auth-Application-Id only.
    if sip_uri_extras:
        tolerances.append("sip_uri_normalized")

    called_party_address = (
        _called_party_address(data, service_information, max_depth)
        if service_information is not None
        else None
    )
    destination_avp_value = _utf8(data, destination_span) if destination_span else None

    assert request_type is not None  # 1 <= value <= 4 above
    return CreditControlRequest(
        session_id=session_id,
        origin_host=origin_host,
        origin_realm=origin_realm,
        destination_realm=destination_realm,
        destination_host=destination_host,
        auth_application_id=auth_application_id,
        service_context_id=service_context_id,
        request_type=request_type,
        request_number=request_number,
        user_name=user_name,
        subscription_ids=tuple(subscription_ids) if subscription_ids else (),
        requested_action=requested_action,
        requested_unit=requested_unit,
        used_units=tuple(used_units) if used_units else (),
        multiple_services=tuple(multiple_services) if multiple_services else (),
        termination_cause=termination_cause,
        event_timestamp=event_timestamp,
        origin_state_id=origin_state_id,
        proxy_infos=tuple(proxy_infos) if proxy_infos else (),
        raw_header=data[:HEADER_LENGTH],
        tolerances=tuple(tolerances) if tolerances else (),
        called_party_address=called_party_address,
        destination_avp_value=destination_avp_value,
    )


def _auth_application_in_vsai(
    data: bytes, repeated: list[tuple[int, AvpSpan]], max_depth: int
) -> AvpSpan | None:
    """The Auth-Application-Id inside the first Vendor-Specific-Application-Id that has one."""
    for kind, span in repeated:
        if kind != _VSAI:
            continue
        try:
            members = _members(data, span, 1, max_depth)
        except MalformedMessage as error:
            wrap_failed_avp(error, span[0], span[1], span[2])
            raise
        for member in members:
            if member[0] == AVP_AUTH_APPLICATION_ID and member[2] == 0:
                return member
    return None


# --- Encoding --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class MsccAnswer:
    """One Multiple-Services-Credit-Control of a CCA (RFC 4006 §8.16): the result, grant and
    validity for one rating group / service."""

    result_code: int
    rating_group: int | None = None
    service_identifier: int | None = None
    granted: ServiceUnits | None = None
    validity_time_s: int | None = None
    final_unit_action: FinalUnitAction | None = None

    def __init__(
        self,
        *,
        result_code: int,
        rating_group: int | None = None,
        service_identifier: int | None = None,
        granted: ServiceUnits | None = None,
        validity_time_s: int | None = None,
        final_unit_action: FinalUnitAction | None = None,
    ) -> None:
        self.result_code = result_code  # type: ignore[misc]
        self.rating_group = rating_group  # type: ignore[misc]
        self.service_identifier = service_identifier  # type: ignore[misc]
        self.granted = granted  # type: ignore[misc]
        self.validity_time_s = validity_time_s  # type: ignore[misc]
        self.final_unit_action = final_unit_action  # type: ignore[misc]
        self.__post_init__()

    def __post_init__(self) -> None:
        _check_range("result_code", self.result_code, _U32_MAX)
        _check_range("rating_group", self.rating_group, _U32_MAX)
        _check_range("service_identifier", self.service_identifier, _U32_MAX)
        _check_range("validity_time_s", self.validity_time_s, _U32_MAX)
        if self.final_unit_action is not None:
            FinalUnitAction(self.final_unit_action)


assigning_init(MsccAnswer)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class CostInformation:
    """Cost-Information (RFC 4006 §8.7): ``value_digits`` × 10^``exponent`` of the ISO 4217
    ``currency_code`` (e.g. micro-units: exponent -6). Never a float."""

    value_digits: int
    currency_code: int
    exponent: int = 0
    cost_unit: str | None = None

    def __init__(
        self,
        *,
        value_digits: int,
        currency_code: int,
        exponent: int = 0,
        cost_unit: str | None = None,
    ) -> None:
        self.value_digits = value_digits  # type: ignore[misc]
        self.currency_code = currency_code  # type: ignore[misc]
        self.exponent = exponent  # type: ignore[misc]
        self.cost_unit = cost_unit  # type: ignore[misc]
        self.__post_init__()

    def __post_init__(self) -> None:
        if not -(2**63) <= self.value_digits < 2**63:
            raise ValueError(f"value_digits must fit an Integer64, got {self.value_digits}")
        if not -(2**31) <= self.exponent < 2**31:
            raise ValueError(f"exponent must fit an Integer32, got {self.exponent}")
        _check_range("currency_code", self.currency_code, _U32_MAX)


assigning_init(CostInformation)


def _service_units(code: int, units: ServiceUnits) -> bytes:
    members: list[bytes] = []
    if units.time_s is not None:
        members.append(avp_u32(AVP_CC_TIME, units.time_s))
    if units.total_octets is not None:
        members.append(avp_u64(AVP_CC_TOTAL_OCTETS, units.total_octets))
    if units.input_octets is not None:
        members.append(avp_u64(AVP_CC_INPUT_OCTETS, units.input_octets))
    if units.output_octets is not None:
        members.append(avp_u64(AVP_CC_OUTPUT_OCTETS, units.output_octets))
    if units.service_specific is not None:
        members.append(avp_u64(AVP_CC_SERVICE_SPECIFIC_UNITS, units.service_specific))
    return avp_grouped(code, members)


def _final_unit_indication(action: int) -> bytes:
    return avp_grouped(AVP_FINAL_UNIT_INDICATION, (avp_u32(AVP_FINAL_UNIT_ACTION, action),))


_CCA_PREFIX: Final = struct.Struct(">II")
_RESULT_CODE_CACHE_LIMIT: Final = 64


class CcaEncoder:
    """Builds CCAs for one daemon identity; the constant AVPs are encoded once, here."""

    __slots__ = (
        "_auth_application_id",
        "_origin",
        "_origin_host",
        "_origin_realm",
        "_origin_state_id",
        "_request_types",
        "_result_codes",
    )

    def __init__(
        self, *, origin_host: str, origin_realm: str, origin_state_id: int | None = None
    ) -> None:
        self._origin_host = origin_host
        self._origin_realm = origin_realm
        self._origin = encode_avp(AVP_ORIGIN_HOST, encode_identity(origin_host)) + encode_avp(
            AVP_ORIGIN_REALM, encode_identity(origin_realm)
        )
        self._origin_state_id = origin_state_id
        self._auth_application_id = avp_u32(AVP_AUTH_APPLICATION_ID, APP_CREDIT_CONTROL)
        self._request_types = {kind: avp_u32(AVP_CC_REQUEST_TYPE, kind) for kind in RequestType}
        self._result_codes: dict[int, bytes] = {}

    def _result_code(self, result_code: int) -> bytes:
        encoded = self._result_codes.get(result_code)
        if encoded is None:
            encoded = avp_u32(AVP_RESULT_CODE, result_code)
            if len(self._result_codes) < _RESULT_CODE_CACHE_LIMIT:
                self._result_codes[result_code] = encoded
        return encoded

    def _mscc(self, answer: MsccAnswer) -> bytes:
        # RFC 4006 §8.16 member order.
        members: list[bytes] = []
        if answer.granted is not None:
            members.append(_service_units(AVP_GRANTED_SERVICE_UNIT, answer.granted))
        if answer.service_identifier is not None:
            members.append(avp_u32(AVP_SERVICE_IDENTIFIER, answer.service_identifier))
        if answer.rating_group is not None:
            members.append(avp_u32(AVP_RATING_GROUP, answer.rating_group))
        if answer.validity_time_s is not None:
            members.append(avp_u32(AVP_VALIDITY_TIME, answer.validity_time_s))
        members.append(self._result_code(answer.result_code))
        if answer.final_unit_action is not None:
            members.append(_final_unit_indication(answer.final_unit_action))
        return avp_grouped(AVP_MULTIPLE_SERVICES_CREDIT_CONTROL, members)

    def build(
        self,
        request: CreditControlRequest,
        *,
        result_code: int,
        granted: ServiceUnits | None = None,
        validity_time_s: int | None = None,
        mscc_answers: Sequence[MsccAnswer] = (),
        final_unit_action: FinalUnitAction | None = None,
        cost_information: CostInformation | None = None,
        check_balance_result: CheckBalanceResult | None = None,
    ) -> bytes:
        """The CCA for ``request`` (module rules for order and the E bit).

        ``granted`` is the top-level Granted-Service-Unit (single-service clients);
        ``mscc_answers`` one entry per rating group of a Gy client; ``validity_time_s`` and
        ``final_unit_action`` at the top level go with ``granted``.
        """
        protocol_error = is_protocol_error(result_code)
        if protocol_error and (
            granted is not None
            or mscc_answers
            or cost_information is not None
            or final_unit_action is not None
        ):
            raise ValueError(f"a {result_code} protocol error answer carries no grant")
        parts = [
            avp_utf8(AVP_SESSION_ID, request.session_id),
            self._result_code(result_code),
            self._origin,
            self._auth_application_id,
            self._request_types[request.request_type],
            avp_u32(AVP_CC_REQUEST_NUMBER, request.request_number),
        ]
        if self._origin_state_id is not None:
            parts.append(avp_u32(AVP_ORIGIN_STATE_ID, self._origin_state_id))
        if granted is not None:
            parts.append(_service_units(AVP_GRANTED_SERVICE_UNIT, granted))
        for answer in mscc_answers:
            parts.append(self._mscc(answer))
        if cost_information is not None:
            parts.append(_cost_information(cost_information))
        if final_unit_action is not None:
            parts.append(_final_unit_indication(final_unit_action))
        if check_balance_result is not None:
            parts.append(avp_u32(AVP_CHECK_BALANCE_RESULT, check_balance_result))
        if validity_time_s is not None:
            parts.append(avp_u32(AVP_VALIDITY_TIME, validity_time_s))
        parts.extend(request.proxy_infos)
        body = b"".join(parts)
        length = HEADER_LENGTH + len(body)
        if length > MAX_MESSAGE_LENGTH:
            raise ValueError(f"a Diameter message cannot exceed {MAX_MESSAGE_LENGTH} octets")
        raw_header = request.raw_header
        flags = (raw_header[4] & FLAG_PROXIABLE) | (FLAG_ERROR if protocol_error else 0)
        # Same command code, application id, Hop-by-Hop and End-to-End ids; R and T cleared.
        return (
            _CCA_PREFIX.pack(0x01000000 | length, (flags << 24) | CMD_CREDIT_CONTROL)
            + raw_header[8:HEADER_LENGTH]
            + body
        )

    def build_error(
        self, request_data: bytes, error: MalformedMessage, *, error_message: str | None = None
    ) -> bytes:
        """The answer to a CCR that ``parse_ccr`` refused with ``error``.

        Carries what can be salvaged from the request (Session-Id, CC-Request-Type and -Number,
        Proxy-Info), the error's result code and Failed-AVP; the E bit for 3xxx only.
        ``error_message`` defaults to the error's text.
        """
        request_type: bytes | None = None
        request_number: bytes | None = None
        for code, _, vendor_id, _, data_start, data_end in codec.lenient_avp_spans(
            request_data, HEADER_LENGTH, len(request_data)
        ):
            if vendor_id or data_end - data_start != 4:
                continue
            value = int(_unpack_u32(request_data, data_start)[0])
            if code == AVP_CC_REQUEST_TYPE and request_type is None and 1 <= value <= 4:
                request_type = self._request_types[RequestType(value)]
            elif code == AVP_CC_REQUEST_NUMBER and request_number is None:
                request_number = avp_u32(AVP_CC_REQUEST_NUMBER, value)
        extra = [self._auth_application_id]
        extra.extend(avp for avp in (request_type, request_number) if avp is not None)
        text = error_message if error_message is not None else str(error)
        return codec.build_error_answer(
            request_data,
            origin_host=self._origin_host,
            origin_realm=self._origin_realm,
            result_code=error.result_code,
            failed_avp=error.failed_avp,
            error_message=text[:200],
            origin_state_id=self._origin_state_id,
            extra_avps=extra,
        )


def _cost_information(cost: CostInformation) -> bytes:
    members = [
        avp_grouped(
            AVP_UNIT_VALUE,
            [avp_i64(AVP_VALUE_DIGITS, cost.value_digits)]
            + ([avp_i32(AVP_EXPONENT, cost.exponent)] if cost.exponent else []),
        ),
        avp_u32(AVP_CURRENCY_CODE, cost.currency_code),
    ]
    if cost.cost_unit is not None:
        members.append(avp_utf8(AVP_COST_UNIT, cost.cost_unit))
    return avp_grouped(AVP_COST_INFORMATION, members)


def build_cca(
    request: CreditControlRequest,
    *,
    origin_host: str,
    origin_realm: str,
    result_code: int,
    granted: ServiceUnits | None = None,
    validity_time_s: int | None = None,
    mscc_answers: Sequence[MsccAnswer] = (),
    final_unit_action: FinalUnitAction | None = None,
    cost_information: CostInformation | None = None,
    check_balance_result: CheckBalanceResult | None = None,
) -> bytes:
    """One CCA without a long-lived ``CcaEncoder`` (tests, rare paths); see ``CcaEncoder``."""
    return CcaEncoder(origin_host=origin_host, origin_realm=origin_realm).build(
        request,
        result_code=result_code,
        granted=granted,
        validity_time_s=validity_time_s,
        mscc_answers=mscc_answers,
        final_unit_action=final_unit_action,
        cost_information=cost_information,
        check_balance_result=check_balance_result,
    )
