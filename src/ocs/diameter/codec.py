"""Diameter header and AVP layer (RFC 6733 §3, §4, §7): parse, walk and encode, nothing else.

Pure: stdlib only, no sockets, no asyncio, no clock, no logging and no python-diameter (that
library stays for the dictionary and for cross-checks in the tests).

Rules of this file:
- ``parse_header`` accepts only what RFC 6733 §3 allows and raises ``MalformedMessage`` carrying
  the §7.1 result code: a version other than 1 → 5011 DIAMETER_UNSUPPORTED_VERSION; a Message
  Length below 20, not a multiple of 4 or different from the octets given → 5015
  DIAMETER_INVALID_MESSAGE_LENGTH; a reserved command flag set → 5013
  DIAMETER_INVALID_BIT_IN_HEADER; a request with the E bit, or an answer with the T bit
  ("MUST NOT be set in answer messages") → 3008 DIAMETER_INVALID_HDR_BITS.
- AVPs must tile the message exactly (§4.1). An AVP header cut short, an AVP Length below its
  header length or running past the end of the message or of its enclosing Grouped AVP → 5014
  DIAMETER_INVALID_AVP_LENGTH. Its Failed-AVP is what §7.5 and §7.1.5 ask for: the offending
  header (padded with zeros to the minimum header length if it was cut short) and a zero-filled
  payload of the minimum length for the AVP's type. The AVP Length field is rewritten to match
  what is sent, as Erlang/OTP's diameter does: otherwise the peer cannot parse our answer.
- A reserved AVP flag bit set on an AVP with the M bit → 3009 DIAMETER_INVALID_AVP_BITS (§4.1:
  "an unrecognized bit SHOULD be considered an error if the 'M' bit is set"). The P bit is
  accepted (§4.1 only says it SHOULD be 0).
- A missing padding after the last AVP is tolerated; a Grouped AVP whose last member lacks its
  padding is common enough in the field.
- Values stay raw bytes until asked. The typed accessors (``Avp.as_u32`` and friends) raise 5014
  when the value has the wrong size for its type (§7.1.5: "an AVP with an invalid length") and
  5004 DIAMETER_INVALID_AVP_VALUE when the size is right but the content is not (bad UTF-8, an
  unknown address family). Both carry the AVP as received in ``failed_avp``.
- Grouped AVPs are split on demand (``Avp.grouped``), never recursively by the walker, and at most
  ``max_depth`` levels deep (top level is 1). Deeper nesting → 5012 DIAMETER_UNABLE_TO_COMPLY:
  RFC 6733 has no code for an implementation limit. An error inside a Grouped AVP reports the
  enclosing AVPs around the offending one in Failed-AVP (§7.5, "the grouped AVP hierarchy").
- Encoders only size, flag and pad. Error answers get the E bit exactly for 3xxx result codes
  (§7.1.3); permanent failures (5xxx) go without it (§7.1.5).
"""

import ipaddress
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

# --- Header ----------------------------------------------------------------------------------

VERSION: Final = 1
HEADER_LENGTH: Final = 20
MAX_MESSAGE_LENGTH: Final = 0xFFFFFF  # the 24-bit Message Length field
DEFAULT_MAX_DEPTH: Final = 8

# Command flags (RFC 6733 §3).
FLAG_REQUEST: Final = 0x80
FLAG_PROXIABLE: Final = 0x40
FLAG_ERROR: Final = 0x20
FLAG_RETRANSMIT: Final = 0x10
FLAGS_RESERVED: Final = 0x0F

# AVP flags (RFC 6733 §4.1).
AVP_FLAG_VENDOR: Final = 0x80
AVP_FLAG_MANDATORY: Final = 0x40
AVP_FLAG_PROTECTED: Final = 0x20
AVP_FLAGS_RESERVED: Final = 0x1F

# Command codes (RFC 6733 §3.1, RFC 4006 §3).
CMD_CAPABILITIES_EXCHANGE: Final = 257
CMD_RE_AUTH: Final = 258
CMD_CREDIT_CONTROL: Final = 272
CMD_ABORT_SESSION: Final = 274
CMD_SESSION_TERMINATION: Final = 275
CMD_DEVICE_WATCHDOG: Final = 280
CMD_DISCONNECT_PEER: Final = 282

# Application ids (RFC 6733 §2.4, RFC 4006 §1.3).
APP_COMMON: Final = 0
APP_CREDIT_CONTROL: Final = 4
APP_RELAY: Final = 0xFFFFFFFF

VENDOR_IETF: Final = 0
VENDOR_3GPP: Final = 10415

# --- Result codes (RFC 6733 §7.1, RFC 4006 §9) -----------------------------------------------

DIAMETER_MULTI_ROUND_AUTH: Final = 1001
DIAMETER_SUCCESS: Final = 2001
DIAMETER_LIMITED_SUCCESS: Final = 2002
DIAMETER_COMMAND_UNSUPPORTED: Final = 3001
DIAMETER_UNABLE_TO_DELIVER: Final = 3002
DIAMETER_REALM_NOT_SERVED: Final = 3003
DIAMETER_TOO_BUSY: Final = 3004
DIAMETER_LOOP_DETECTED: Final = 3005
DIAMETER_APPLICATION_UNSUPPORTED: Final = 3007
DIAMETER_INVALID_HDR_BITS: Final = 3008
DIAMETER_INVALID_AVP_BITS: Final = 3009
DIAMETER_UNKNOWN_PEER: Final = 3010
DIAMETER_END_USER_SERVICE_DENIED: Final = 4010
DIAMETER_CREDIT_CONTROL_NOT_APPLICABLE: Final = 4011
DIAMETER_CREDIT_LIMIT_REACHED: Final = 4012
DIAMETER_AVP_UNSUPPORTED: Final = 5001
DIAMETER_UNKNOWN_SESSION_ID: Final = 5002
DIAMETER_AUTHORIZATION_REJECTED: Final = 5003
DIAMETER_INVALID_AVP_VALUE: Final = 5004
DIAMETER_MISSING_AVP: Final = 5005
DIAMETER_AVP_NOT_ALLOWED: Final = 5008
DIAMETER_AVP_OCCURS_TOO_MANY_TIMES: Final = 5009
DIAMETER_NO_COMMON_APPLICATION: Final = 5010
DIAMETER_UNSUPPORTED_VERSION: Final = 5011
DIAMETER_UNABLE_TO_COMPLY: Final = 5012
DIAMETER_INVALID_BIT_IN_HEADER: Final = 5013
DIAMETER_INVALID_AVP_LENGTH: Final = 5014
DIAMETER_INVALID_MESSAGE_LENGTH: Final = 5015
DIAMETER_USER_UNKNOWN: Final = 5030
DIAMETER_RATING_FAILED: Final = 5031

# --- AVP codes (RFC 6733 §4.5, RFC 4006 §12, 3GPP TS 32.299 §7.2 with vendor 10415) ----------

AVP_USER_NAME: Final = 1
AVP_PROXY_STATE: Final = 33
AVP_ACCT_MULTI_SESSION_ID: Final = 50
AVP_EVENT_TIMESTAMP: Final = 55
AVP_HOST_IP_ADDRESS: Final = 257
AVP_AUTH_APPLICATION_ID: Final = 258
AVP_ACCT_APPLICATION_ID: Final = 259
AVP_VENDOR_SPECIFIC_APPLICATION_ID: Final = 260
AVP_SESSION_ID: Final = 263
AVP_ORIGIN_HOST: Final = 264
AVP_SUPPORTED_VENDOR_ID: Final = 265
AVP_VENDOR_ID: Final = 266
AVP_FIRMWARE_REVISION: Final = 267
AVP_RESULT_CODE: Final = 268
AVP_PRODUCT_NAME: Final = 269
AVP_DISCONNECT_CAUSE: Final = 273
AVP_AUTH_SESSION_STATE: Final = 277
AVP_ORIGIN_STATE_ID: Final = 278
AVP_FAILED_AVP: Final = 279
AVP_PROXY_HOST: Final = 280
AVP_ERROR_MESSAGE: Final = 281
AVP_ROUTE_RECORD: Final = 282
AVP_DESTINATION_REALM: Final = 283
AVP_PROXY_INFO: Final = 284
AVP_DESTINATION_HOST: Final = 293
AVP_ERROR_REPORTING_HOST: Final = 294
AVP_TERMINATION_CAUSE: Final = 295
AVP_ORIGIN_REALM: Final = 296
AVP_EXPERIMENTAL_RESULT: Final = 297
AVP_EXPERIMENTAL_RESULT_CODE: Final = 298
AVP_INBAND_SECURITY_ID: Final = 299
AVP_DRMP: Final = 301
AVP_CC_CORRELATION_ID: Final = 411
AVP_CC_INPUT_OCTETS: Final = 412
AVP_CC_MONEY: Final = 413
AVP_CC_OUTPUT_OCTETS: Final = 414
AVP_CC_REQUEST_NUMBER: Final = 415
AVP_CC_REQUEST_TYPE: Final = 416
AVP_CC_SERVICE_SPECIFIC_UNITS: Final = 417
AVP_CC_SESSION_FAILOVER: Final = 418
AVP_CC_SUB_SESSION_ID: Final = 419
AVP_CC_TIME: Final = 420
AVP_CC_TOTAL_OCTETS: Final = 421
AVP_CHECK_BALANCE_RESULT: Final = 422
AVP_COST_INFORMATION: Final = 423
AVP_COST_UNIT: Final = 424
AVP_CURRENCY_CODE: Final = 425
AVP_CREDIT_CONTROL: Final = 426
AVP_CREDIT_CONTROL_FAILURE_HANDLING: Final = 427
AVP_DIRECT_DEBITING_FAILURE_HANDLING: Final = 428
AVP_EXPONENT: Final = 429
AVP_FINAL_UNIT_INDICATION: Final = 430
AVP_GRANTED_SERVICE_UNIT: Final = 431
AVP_RATING_GROUP: Final = 432
AVP_REDIRECT_SERVER: Final = 434
AVP_REQUESTED_ACTION: Final = 436
AVP_REQUESTED_SERVICE_UNIT: Final = 437
AVP_RESTRICTION_FILTER_RULE: Final = 438
AVP_SERVICE_IDENTIFIER: Final = 439
AVP_SERVICE_PARAMETER_INFO: Final = 440
AVP_SUBSCRIPTION_ID: Final = 443
AVP_SUBSCRIPTION_ID_DATA: Final = 444
AVP_UNIT_VALUE: Final = 445
AVP_USED_SERVICE_UNIT: Final = 446
AVP_VALUE_DIGITS: Final = 447
AVP_VALIDITY_TIME: Final = 448
AVP_FINAL_UNIT_ACTION: Final = 449
AVP_SUBSCRIPTION_ID_TYPE: Final = 450
AVP_TARIFF_TIME_CHANGE: Final = 451
AVP_TARIFF_CHANGE_USAGE: Final = 452
AVP_G_S_U_POOL_IDENTIFIER: Final = 453
AVP_MULTIPLE_SERVICES_INDICATOR: Final = 455
AVP_MULTIPLE_SERVICES_CREDIT_CONTROL: Final = 456
AVP_G_S_U_POOL_REFERENCE: Final = 457
AVP_USER_EQUIPMENT_INFO: Final = 458
AVP_SERVICE_CONTEXT_ID: Final = 461
AVP_OC_SUPPORTED_FEATURES: Final = 621  # RFC 7683
AVP_LOAD: Final = 650  # RFC 8583
AVP_USER_EQUIPMENT_INFO_EXTENSION: Final = 653  # RFC 8506
# 3GPP TS 32.299, vendor 10415.
AVP_3GPP_REPORTING_REASON: Final = 872
AVP_3GPP_SERVICE_INFORMATION: Final = 873
AVP_3GPP_PS_INFORMATION: Final = 874
AVP_3GPP_AOC_REQUEST_TYPE: Final = 2055

# Minimum value length by (code, vendor) for the fixed-size types we know (Unsigned32 and
# Enumerated 4, Unsigned64 8, Time 4, Address 6): used to zero-fill the Failed-AVP of a missing
# or badly sized AVP (RFC 6733 §7.5). Anything not listed (strings, Grouped) has minimum 0.
AVP_MIN_DATA_LENGTH: Final[dict[tuple[int, int], int]] = {
    **dict.fromkeys(
        (
            (code, 0)
            for code in (
                AVP_EVENT_TIMESTAMP,
                AVP_AUTH_APPLICATION_ID,
                AVP_ACCT_APPLICATION_ID,
                AVP_SUPPORTED_VENDOR_ID,
                AVP_VENDOR_ID,
                AVP_FIRMWARE_REVISION,
                AVP_RESULT_CODE,
                AVP_DISCONNECT_CAUSE,
                AVP_AUTH_SESSION_STATE,
                AVP_ORIGIN_STATE_ID,
                AVP_TERMINATION_CAUSE,
                AVP_EXPERIMENTAL_RESULT_CODE,
                AVP_INBAND_SECURITY_ID,
                AVP_DRMP,
                AVP_CC_REQUEST_NUMBER,
                AVP_CC_REQUEST_TYPE,
                AVP_CC_SESSION_FAILOVER,
                AVP_CC_TIME,
                AVP_CHECK_BALANCE_RESULT,
                AVP_CURRENCY_CODE,
                AVP_CREDIT_CONTROL,
                AVP_CREDIT_CONTROL_FAILURE_HANDLING,
                AVP_DIRECT_DEBITING_FAILURE_HANDLING,
                AVP_EXPONENT,
                AVP_RATING_GROUP,
                AVP_REQUESTED_ACTION,
                AVP_SERVICE_IDENTIFIER,
                AVP_VALIDITY_TIME,
                AVP_FINAL_UNIT_ACTION,
                AVP_SUBSCRIPTION_ID_TYPE,
                AVP_TARIFF_TIME_CHANGE,
                AVP_TARIFF_CHANGE_USAGE,
                AVP_G_S_U_POOL_IDENTIFIER,
                AVP_MULTIPLE_SERVICES_INDICATOR,
            )
        ),
        4,
    ),
    **dict.fromkeys(
        (
            (code, 0)
            for code in (
                AVP_CC_INPUT_OCTETS,
                AVP_CC_OUTPUT_OCTETS,
                AVP_CC_SERVICE_SPECIFIC_UNITS,
                AVP_CC_SUB_SESSION_ID,
                AVP_CC_TOTAL_OCTETS,
                AVP_VALUE_DIGITS,
            )
        ),
        8,
    ),
    (AVP_HOST_IP_ADDRESS, 0): 6,
    (AVP_3GPP_REPORTING_REASON, VENDOR_3GPP): 4,
    (AVP_3GPP_AOC_REQUEST_TYPE, VENDOR_3GPP): 4,
}

# Names for error texts and logs (not a dictionary: the codec never needs one).
AVP_NAMES: Final[dict[tuple[int, int], str]] = {
    (AVP_USER_NAME, 0): "User-Name",
    (AVP_EVENT_TIMESTAMP, 0): "Event-Timestamp",
    (AVP_HOST_IP_ADDRESS, 0): "Host-IP-Address",
    (AVP_AUTH_APPLICATION_ID, 0): "Auth-Application-Id",
    (AVP_VENDOR_SPECIFIC_APPLICATION_ID, 0): "Vendor-Specific-Application-Id",
    (AVP_SESSION_ID, 0): "Session-Id",
    (AVP_ORIGIN_HOST, 0): "Origin-Host",
    (AVP_VENDOR_ID, 0): "Vendor-Id",
    (AVP_RESULT_CODE, 0): "Result-Code",
    (AVP_PRODUCT_NAME, 0): "Product-Name",
    (AVP_ORIGIN_STATE_ID, 0): "Origin-State-Id",
    (AVP_FAILED_AVP, 0): "Failed-AVP",
    (AVP_PROXY_INFO, 0): "Proxy-Info",
    (AVP_DESTINATION_REALM, 0): "Destination-Realm",
    (AVP_DESTINATION_HOST, 0): "Destination-Host",
    (AVP_TERMINATION_CAUSE, 0): "Termination-Cause",
    (AVP_ORIGIN_REALM, 0): "Origin-Realm",
    (AVP_CC_REQUEST_NUMBER, 0): "CC-Request-Number",
    (AVP_CC_REQUEST_TYPE, 0): "CC-Request-Type",
    (AVP_CC_TIME, 0): "CC-Time",
    (AVP_CC_TOTAL_OCTETS, 0): "CC-Total-Octets",
    (AVP_CC_INPUT_OCTETS, 0): "CC-Input-Octets",
    (AVP_CC_OUTPUT_OCTETS, 0): "CC-Output-Octets",
    (AVP_CC_SERVICE_SPECIFIC_UNITS, 0): "CC-Service-Specific-Units",
    (AVP_RATING_GROUP, 0): "Rating-Group",
    (AVP_REQUESTED_ACTION, 0): "Requested-Action",
    (AVP_REQUESTED_SERVICE_UNIT, 0): "Requested-Service-Unit",
    (AVP_SERVICE_IDENTIFIER, 0): "Service-Identifier",
    (AVP_SUBSCRIPTION_ID, 0): "Subscription-Id",
    (AVP_SUBSCRIPTION_ID_DATA, 0): "Subscription-Id-Data",
    (AVP_SUBSCRIPTION_ID_TYPE, 0): "Subscription-Id-Type",
    (AVP_USED_SERVICE_UNIT, 0): "Used-Service-Unit",
    (AVP_MULTIPLE_SERVICES_CREDIT_CONTROL, 0): "Multiple-Services-Credit-Control",
    (AVP_SERVICE_CONTEXT_ID, 0): "Service-Context-Id",
    (AVP_3GPP_REPORTING_REASON, VENDOR_3GPP): "Reporting-Reason",
    (AVP_3GPP_SERVICE_INFORMATION, VENDOR_3GPP): "Service-Information",
}


def avp_name(code: int, vendor_id: int = 0) -> str:
    """``"263 (Session-Id)"`` for texts; unknown AVPs as ``"1234/10415"``."""
    name = AVP_NAMES.get((code, vendor_id))
    label = f"{code}/{vendor_id}" if vendor_id else str(code)
    return f"{label} ({name})" if name else label


def is_protocol_error(result_code: int) -> bool:
    """3xxx codes (RFC 6733 §7.1.3): only ever sent in answers with the E bit."""
    return 3000 <= result_code < 4000


# --- Errors ----------------------------------------------------------------------------------


class MalformedMessage(ValueError):
    """A framed message we cannot accept; ``result_code`` is the RFC 6733 §7.1 answer code.

    ``failed_avp`` is the content for the Failed-AVP AVP of the answer (one whole, padded AVP,
    possibly wrapped in the Grouped AVPs that enclosed it), or None when no AVP is to blame.
    """

    def __init__(self, message: str, *, result_code: int, failed_avp: bytes | None = None):
        super().__init__(message)
        self.result_code = result_code
        self.failed_avp = failed_avp


class MissingAvp(MalformedMessage):
    """A required AVP is absent: 5005 DIAMETER_MISSING_AVP.

    ``failed_avp`` is "an example of the missing AVP complete with the Vendor-Id if applicable",
    with a zero-filled value of the minimum length for its type (RFC 6733 §7.1.5, §7.5).
    """

    def __init__(self, code: int, *, vendor_id: int = 0, where: str = "the message"):
        size = AVP_MIN_DATA_LENGTH.get((code, vendor_id), 0)
        super().__init__(
            f"missing AVP {avp_name(code, vendor_id)} in {where}",
            result_code=DIAMETER_MISSING_AVP,
            failed_avp=encode_avp(code, bytes(size), vendor_id=vendor_id),
        )
        self.code = code
        self.vendor_id = vendor_id


# --- Header ----------------------------------------------------------------------------------

_HEADER: Final = struct.Struct(">IIIII")
_HEADER_START: Final = struct.Struct(">III")
_U32: Final = struct.Struct(">I")
_U64: Final = struct.Struct(">Q")
_I32: Final = struct.Struct(">i")
_I64: Final = struct.Struct(">q")
_AVP_HEADER: Final = struct.Struct(">II")
_AVP_HEADER_V: Final = struct.Struct(">III")
_AVP_U32: Final = struct.Struct(">III")
_AVP_U32_V: Final = struct.Struct(">IIII")
_AVP_U64: Final = struct.Struct(">IIQ")
_AVP_U64_V: Final = struct.Struct(">IIIQ")
_AVP_I32: Final = struct.Struct(">IIi")
_AVP_I32_V: Final = struct.Struct(">IIIi")
_AVP_I64: Final = struct.Struct(">IIq")
_AVP_I64_V: Final = struct.Struct(">IIIq")
_PADDING: Final = (b"", b"\0\0\0", b"\0\0", b"\0")  # indexed by length % 4


@dataclass(frozen=True, slots=True, kw_only=True)
class Header:
    """The 20-octet Diameter header (RFC 6733 §3). ``flags`` is the whole flags octet."""

    version: int
    length: int
    flags: int
    command_code: int
    application_id: int
    hop_by_hop: int
    end_to_end: int

    @property
    def is_request(self) -> bool:
        return bool(self.flags & FLAG_REQUEST)

    @property
    def is_proxiable(self) -> bool:
        return bool(self.flags & FLAG_PROXIABLE)

    @property
    def is_error(self) -> bool:
        return bool(self.flags & FLAG_ERROR)

    @property
    def is_retransmit(self) -> bool:
        return bool(self.flags & FLAG_RETRANSMIT)

    def pack(self) -> bytes:
        """The header as the 20 octets it claims to be (``length`` as is)."""
        return _HEADER.pack(
            (self.version << 24) | self.length,
            (self.flags << 24) | self.command_code,
            self.application_id,
            self.hop_by_hop,
            self.end_to_end,
        )


def peek_header(data: bytes) -> Header:
    """The header fields of ``data`` without any validation (to answer what we refuse).

    Raises ValueError if ``data`` has fewer than 20 octets.
    """
    if len(data) < HEADER_LENGTH:
        raise ValueError(f"a Diameter header has {HEADER_LENGTH} octets, got {len(data)}")
    word0, word1, application_id, hop_by_hop, end_to_end = _HEADER.unpack_from(data)
    return Header(
        version=word0 >> 24,
        length=word0 & 0xFFFFFF,
        flags=word1 >> 24,
        command_code=word1 & 0xFFFFFF,
        application_id=application_id,
        hop_by_hop=hop_by_hop,
        end_to_end=end_to_end,
    )


def check_header(data: bytes) -> tuple[int, int, int]:
    """Validate the header of one framed message; return (flags, command_code, application_id).

    The cheap half of ``parse_header`` for the hot path. Raises ``MalformedMessage`` with the
    result codes listed at the top of this module.
    """
    size = len(data)
    if size < HEADER_LENGTH:
        raise MalformedMessage(
            f"{size} octets cannot hold a Diameter header",
            result_code=DIAMETER_INVALID_MESSAGE_LENGTH,
        )
    word0, word1, application_id = _HEADER_START.unpack_from(data)
    version = word0 >> 24
    if version != VERSION:
        raise MalformedMessage(
            f"Diameter version {version} is not supported",
            result_code=DIAMETER_UNSUPPORTED_VERSION,
        )
    length = word0 & 0xFFFFFF
    if length != size or length < HEADER_LENGTH or length & 3:
        raise MalformedMessage(
            f"Message Length {length} does not fit the {size} octets received "
            "(at least 20 and a multiple of 4)",
            result_code=DIAMETER_INVALID_MESSAGE_LENGTH,
        )
    flags = word1 >> 24
    if flags & FLAGS_RESERVED:
        raise MalformedMessage(
            f"reserved command flag bits set (flags 0x{flags:02x})",
            result_code=DIAMETER_INVALID_BIT_IN_HEADER,
        )
    if flags & FLAG_REQUEST:
        if flags & FLAG_ERROR:
            raise MalformedMessage(
                "a request with the E bit", result_code=DIAMETER_INVALID_HDR_BITS
            )
    elif flags & FLAG_RETRANSMIT:
        raise MalformedMessage("an answer with the T bit", result_code=DIAMETER_INVALID_HDR_BITS)
    return flags, word1 & 0xFFFFFF, application_id


def parse_header(data: bytes) -> Header:
    """Validate and return the header of one framed message (see ``check_header``)."""
    check_header(data)
    return peek_header(data)


# --- AVPs ------------------------------------------------------------------------------------

# (code, flags, vendor_id, avp_start, data_start, data_end): offsets into the message bytes.
AvpSpan = tuple[int, int, int, int, int, int]


def padded_avp(data: bytes, avp_start: int, data_end: int) -> bytes:
    """The AVP at ``data[avp_start:data_end]`` with its padding (zeros if it was missing)."""
    raw = data[avp_start:data_end]
    return raw + _PADDING[len(raw) & 3]


def avp_header_error(data: bytes, pos: int, end: int) -> MalformedMessage:
    """The error for the AVP at ``pos`` that ``avp_spans`` refused (RFC 6733 §7.1.5, §7.5)."""
    remaining = end - pos
    if remaining < 8:
        # Header cut short: pad it with zeros to the minimum header length (§7.1.5 5014).
        stub = bytearray(data[pos:end] + bytes(8 - remaining))
        stub[5:8] = (8).to_bytes(3, "big")
        return MalformedMessage(
            f"AVP header at offset {pos} cut short ({remaining} octets left)",
            result_code=DIAMETER_INVALID_AVP_LENGTH,
            failed_avp=bytes(stub),
        )
    code, word = _AVP_HEADER.unpack_from(data, pos)
    flags = word >> 24
    length = word & 0xFFFFFF
    if flags & AVP_FLAG_VENDOR and remaining < 12:
        stub = bytearray(data[pos:end] + bytes(12 - remaining))
        stub[5:8] = (12).to_bytes(3, "big")
        return MalformedMessage(
            f"AVP {code} header at offset {pos} cut short before its Vendor-Id",
            result_code=DIAMETER_INVALID_AVP_LENGTH,
            failed_avp=bytes(stub),
        )
    vendor_id = _U32.unpack_from(data, pos + 8)[0] if flags & AVP_FLAG_VENDOR else 0
    header_length = 12 if flags & AVP_FLAG_VENDOR else 8
    if length < header_length or pos + length > end:
        size = AVP_MIN_DATA_LENGTH.get((code, vendor_id), 0)
        return MalformedMessage(
            f"AVP {avp_name(code, vendor_id)} at offset {pos} has AVP Length {length}, "
            f"{remaining} octets left",
            result_code=DIAMETER_INVALID_AVP_LENGTH,
            failed_avp=encode_avp_with_flags(code, flags, vendor_id, bytes(size)),
        )
    if flags & AVP_FLAGS_RESERVED and flags & AVP_FLAG_MANDATORY:
        return MalformedMessage(
            f"AVP {avp_name(code, vendor_id)} has reserved flag bits set (0x{flags:02x})",
            result_code=DIAMETER_INVALID_AVP_BITS,
            failed_avp=padded_avp(data, pos, pos + length),
        )
    raise AssertionError(f"AVP at offset {pos} is well formed")  # pragma: no cover


def avp_spans(data: bytes, start: int, end: int) -> list[AvpSpan]:
    """Walk the AVPs in ``data[start:end]`` (one level, no descent into Grouped AVPs).

    Checks every AVP header (module rules) and raises ``MalformedMessage`` on the first bad one.
    """
    spans: list[AvpSpan] = []
    append = spans.append
    unpack_header = _AVP_HEADER.unpack_from
    unpack_u32 = _U32.unpack_from
    pos = start
    while pos < end:
        if end - pos < 8:
            raise avp_header_error(data, pos, end)
        code, word = unpack_header(data, pos)
        flags = word >> 24
        length = word & 0xFFFFFF
        if flags & AVP_FLAG_VENDOR:
            if length < 12 or pos + length > end or end - pos < 12:
                raise avp_header_error(data, pos, end)
            vendor_id = unpack_u32(data, pos + 8)[0]
            data_start = pos + 12
        else:
            if length < 8 or pos + length > end:
                raise avp_header_error(data, pos, end)
            vendor_id = 0
            data_start = pos + 8
        if flags & AVP_FLAGS_RESERVED and flags & AVP_FLAG_MANDATORY:
            raise avp_header_error(data, pos, end)
        append((code, flags, vendor_id, pos, data_start, pos + length))
        pos += (length + 3) & ~3
    return spans


def lenient_avp_spans(data: bytes, start: int, end: int) -> list[AvpSpan]:
    """Like ``avp_spans`` but stops quietly at the first bad AVP: to salvage what an error
    answer may echo (Session-Id, Proxy-Info) from a message we are refusing. Never raises."""
    spans: list[AvpSpan] = []
    pos = start
    end = min(end, len(data))
    while end - pos >= 8:
        code, word = _AVP_HEADER.unpack_from(data, pos)
        flags = word >> 24
        length = word & 0xFFFFFF
        header_length = 12 if flags & AVP_FLAG_VENDOR else 8
        if length < header_length or pos + length > end:
            break
        vendor_id = _U32.unpack_from(data, pos + 8)[0] if header_length == 12 else 0
        spans.append((code, flags, vendor_id, pos, pos + header_length, pos + length))
        pos += (length + 3) & ~3
    return spans


def wrap_failed_avp(error: MalformedMessage, code: int, flags: int, vendor_id: int) -> None:
    """Put ``error.failed_avp`` inside the Grouped AVP that enclosed it (RFC 6733 §7.5)."""
    if error.failed_avp is not None:
        error.failed_avp = encode_avp_with_flags(code, flags, vendor_id, error.failed_avp)


def ntp_to_datetime(seconds: int) -> datetime:
    """A Diameter Time value (NTP seconds) as an aware UTC datetime."""
    # RFC 6733 §4.3.1 Time: NTP seconds; with the top bit clear the value counts from
    # 2036-02-07 06:28:16 UTC (RFC 4330 §3), which keeps the format working past 2036.
    if seconds & 0x80000000:
        return _NTP_EPOCH + timedelta(seconds=seconds)
    return _NTP_ERA1 + timedelta(seconds=seconds)


def _datetime_to_ntp(when: datetime) -> int:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"a Diameter Time needs a timezone-aware datetime, got {when!r}")
    seconds = int((when - _NTP_EPOCH).total_seconds())
    # Representable: 1968-01-20 (top bit set, era 0) up to 2104 (top bit clear, era 1).
    if not 2**31 <= seconds < 2**32 + 2**31:
        raise ValueError(f"{when!r} is outside the Diameter Time range")
    return seconds & 0xFFFFFFFF


_NTP_EPOCH: Final = datetime(1900, 1, 1, tzinfo=UTC)
_NTP_ERA1: Final = _NTP_EPOCH + timedelta(seconds=2**32)


@dataclass(frozen=True, slots=True, kw_only=True)
class Avp:
    """One AVP as received. ``data`` is the value without padding; ``raw`` the whole AVP with
    its padding (what Failed-AVP carries); ``depth`` is its nesting level, 1 at the top."""

    code: int
    flags: int
    vendor_id: int
    data: bytes
    raw: bytes
    depth: int = 1
    max_depth: int = DEFAULT_MAX_DEPTH

    @property
    def is_mandatory(self) -> bool:
        return bool(self.flags & AVP_FLAG_MANDATORY)

    @property
    def name(self) -> str:
        return avp_name(self.code, self.vendor_id)

    def _wrong_size(self, expected: int) -> MalformedMessage:
        return MalformedMessage(
            f"AVP {self.name} has a {len(self.data)}-octet value, expected {expected}",
            result_code=DIAMETER_INVALID_AVP_LENGTH,
            failed_avp=self.raw,
        )

    def _invalid(self, why: str) -> MalformedMessage:
        return MalformedMessage(
            f"AVP {self.name}: {why}", result_code=DIAMETER_INVALID_AVP_VALUE, failed_avp=self.raw
        )

    def as_u32(self) -> int:
        """Unsigned32 (and Enumerated values, which are never negative in practice)."""
        if len(self.data) != 4:
            raise self._wrong_size(4)
        return int(_U32.unpack(self.data)[0])

    def as_u64(self) -> int:
        if len(self.data) != 8:
            raise self._wrong_size(8)
        return int(_U64.unpack(self.data)[0])

    def as_i32(self) -> int:
        if len(self.data) != 4:
            raise self._wrong_size(4)
        return int(_I32.unpack(self.data)[0])

    def as_i64(self) -> int:
        if len(self.data) != 8:
            raise self._wrong_size(8)
        return int(_I64.unpack(self.data)[0])

    def as_utf8(self) -> str:
        try:
            return self.data.decode()
        except UnicodeDecodeError:
            raise self._invalid("not valid UTF-8") from None

    def as_identity(self) -> str:
        """DiameterIdentity (RFC 6733 §4.3.1): an FQDN or realm in ASCII, not empty."""
        try:
            text = self.data.decode("ascii")
        except UnicodeDecodeError:
            raise self._invalid("a DiameterIdentity must be ASCII") from None
        if not text:
            raise self._invalid("empty DiameterIdentity")
        return text

    def as_address(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        """Address (RFC 6733 §4.3.1): a 2-octet IANA family (1 IPv4, 2 IPv6), then the address."""
        if len(self.data) < 2:
            raise self._wrong_size(6)
        family = int.from_bytes(self.data[:2], "big")
        address = self.data[2:]
        if family == 1 and len(address) == 4:
            return ipaddress.IPv4Address(address)
        if family == 2 and len(address) == 16:
            return ipaddress.IPv6Address(address)
        raise self._invalid(f"unsupported address family {family} with {len(address)} octets")

    def as_time(self) -> datetime:
        """Time (RFC 6733 §4.3.1): NTP seconds, as an aware UTC datetime."""
        return ntp_to_datetime(self.as_u32())

    def grouped(self) -> list["Avp"]:
        """The member AVPs of this Grouped AVP (RFC 6733 §4.4), one level down."""
        if self.depth >= self.max_depth:
            raise MalformedMessage(
                f"AVP {self.name} nests deeper than {self.max_depth} levels",
                result_code=DIAMETER_UNABLE_TO_COMPLY,
                failed_avp=self.raw,
            )
        data = self.data
        try:
            spans = avp_spans(data, 0, len(data))
        except MalformedMessage as error:
            wrap_failed_avp(error, self.code, self.flags, self.vendor_id)
            raise
        depth = self.depth + 1
        return [
            Avp(
                code=code,
                flags=flags,
                vendor_id=vendor_id,
                data=data[data_start:data_end],
                raw=padded_avp(data, avp_start, data_end),
                depth=depth,
                max_depth=self.max_depth,
            )
            for code, flags, vendor_id, avp_start, data_start, data_end in spans
        ]


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """A parsed message: its header, its top-level AVPs in wire order and the octets."""

    header: Header
    avps: tuple[Avp, ...]
    raw: bytes

    def find(self, code: int, vendor_id: int = 0) -> Avp | None:
        """The first top-level AVP with this code and vendor, or None."""
        for avp in self.avps:
            if avp.code == code and avp.vendor_id == vendor_id:
                return avp
        return None

    def find_all(self, code: int, vendor_id: int = 0) -> list[Avp]:
        return [avp for avp in self.avps if avp.code == code and avp.vendor_id == vendor_id]


def parse_message(data: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH) -> Message:
    """Parse one framed message: validated header and top-level AVPs (module rules).

    Grouped AVPs are split later, on demand, at most ``max_depth`` levels deep.
    """
    if max_depth < 1:
        raise ValueError(f"max_depth must be at least 1, got {max_depth}")
    header = parse_header(data)
    avps = tuple(
        Avp(
            code=code,
            flags=flags,
            vendor_id=vendor_id,
            data=data[data_start:data_end],
            raw=padded_avp(data, avp_start, data_end),
            depth=1,
            max_depth=max_depth,
        )
        for code, flags, vendor_id, avp_start, data_start, data_end in avp_spans(
            data, HEADER_LENGTH, len(data)
        )
    )
    return Message(header=header, avps=avps, raw=data)


# --- Encoding --------------------------------------------------------------------------------


def _flags(vendor_id: int, mandatory: bool) -> int:
    return (AVP_FLAG_VENDOR if vendor_id else 0) | (AVP_FLAG_MANDATORY if mandatory else 0)


def encode_avp_with_flags(code: int, flags: int, vendor_id: int, data: bytes) -> bytes:
    """One AVP with exactly these flags (the V bit decides whether Vendor-Id is written)."""
    if flags & AVP_FLAG_VENDOR:
        header = _AVP_HEADER_V.pack(code, (flags << 24) | (12 + len(data)), vendor_id)
    else:
        header = _AVP_HEADER.pack(code, (flags << 24) | (8 + len(data)))
    return header + data + _PADDING[len(data) & 3]


def encode_avp(code: int, data: bytes, *, vendor_id: int = 0, mandatory: bool = True) -> bytes:
    """One AVP with its padding; the V bit is set iff ``vendor_id`` is not 0."""
    return encode_avp_with_flags(code, _flags(vendor_id, mandatory), vendor_id, data)


avp_octets = encode_avp


def avp_u32(code: int, value: int, *, vendor_id: int = 0, mandatory: bool = True) -> bytes:
    """Unsigned32 or Enumerated (RFC 6733 §4.2, §4.3.1)."""
    if vendor_id:
        return _AVP_U32_V.pack(code, (_flags(vendor_id, mandatory) << 24) | 16, vendor_id, value)
    return _AVP_U32.pack(code, (_flags(0, mandatory) << 24) | 12, value)


def avp_u64(code: int, value: int, *, vendor_id: int = 0, mandatory: bool = True) -> bytes:
    if vendor_id:
        return _AVP_U64_V.pack(code, (_flags(vendor_id, mandatory) << 24) | 20, vendor_id, value)
    return _AVP_U64.pack(code, (_flags(0, mandatory) << 24) | 16, value)


def avp_i32(code: int, value: int, *, vendor_id: int = 0, mandatory: bool = True) -> bytes:
    if vendor_id:
        return _AVP_I32_V.pack(code, (_flags(vendor_id, mandatory) << 24) | 16, vendor_id, value)
    return _AVP_I32.pack(code, (_flags(0, mandatory) << 24) | 12, value)


def avp_i64(code: int, value: int, *, vendor_id: int = 0, mandatory: bool = True) -> bytes:
    if vendor_id:
        return _AVP_I64_V.pack(code, (_flags(vendor_id, mandatory) << 24) | 20, vendor_id, value)
    return _AVP_I64.pack(code, (_flags(0, mandatory) << 24) | 16, value)


def avp_utf8(code: int, text: str, *, vendor_id: int = 0, mandatory: bool = True) -> bytes:
    """UTF8String (and DiameterIdentity, which is its ASCII subset)."""
    return encode_avp(code, text.encode(), vendor_id=vendor_id, mandatory=mandatory)


def avp_address(
    code: int,
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | str,
    *,
    vendor_id: int = 0,
    mandatory: bool = True,
) -> bytes:
    """Address (RFC 6733 §4.3.1): IANA family 1 (IPv4) or 2 (IPv6), then the address."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    family = b"\x00\x01" if ip.version == 4 else b"\x00\x02"
    return encode_avp(code, family + ip.packed, vendor_id=vendor_id, mandatory=mandatory)


def avp_time(code: int, when: datetime, *, vendor_id: int = 0, mandatory: bool = True) -> bytes:
    """Time (RFC 6733 §4.3.1) from an aware datetime, to the second."""
    return avp_u32(code, _datetime_to_ntp(when), vendor_id=vendor_id, mandatory=mandatory)


def avp_grouped(
    code: int, members: Iterable[bytes], *, vendor_id: int = 0, mandatory: bool = True
) -> bytes:
    """Grouped (RFC 6733 §4.4) from already encoded, padded member AVPs."""
    return encode_avp(code, b"".join(members), vendor_id=vendor_id, mandatory=mandatory)


def encode_message(
    *,
    command_code: int,
    application_id: int,
    hop_by_hop: int,
    end_to_end: int,
    avps: Sequence[bytes],
    flags: int = 0,
) -> bytes:
    """A whole message from encoded AVPs; Message Length is computed here."""
    body = b"".join(avps)
    length = HEADER_LENGTH + len(body)
    if length > MAX_MESSAGE_LENGTH:
        raise ValueError(f"a Diameter message cannot exceed {MAX_MESSAGE_LENGTH} octets")
    return (
        _HEADER.pack(
            (VERSION << 24) | length,
            (flags << 24) | command_code,
            application_id,
            hop_by_hop,
            end_to_end,
        )
        + body
    )


def answer_header_for(request: Header, *, error: bool = False) -> Header:
    """The header of the answer to ``request`` (RFC 6733 §6.2, §7.2).

    Same command code, application id, Hop-by-Hop and End-to-End identifiers; R and T cleared;
    P as the request had it; E set if ``error``. ``length`` is a placeholder that
    ``encode_with_header`` replaces.
    """
    flags = (request.flags & FLAG_PROXIABLE) | (FLAG_ERROR if error else 0)
    return Header(
        version=VERSION,
        length=HEADER_LENGTH,
        flags=flags,
        command_code=request.command_code,
        application_id=request.application_id,
        hop_by_hop=request.hop_by_hop,
        end_to_end=request.end_to_end,
    )


def encode_with_header(header: Header, avps: Sequence[bytes]) -> bytes:
    """A message with ``header``'s fields and these AVPs (version and length recomputed)."""
    return encode_message(
        command_code=header.command_code,
        application_id=header.application_id,
        hop_by_hop=header.hop_by_hop,
        end_to_end=header.end_to_end,
        avps=avps,
        flags=header.flags,
    )


def encode_identity(text: str) -> bytes:
    """A DiameterIdentity's octets; raises ValueError unless it is non-empty ASCII."""
    if not text or not text.isascii():
        raise ValueError(f"a DiameterIdentity is a non-empty ASCII FQDN or realm, got {text!r}")
    return text.encode("ascii")


def salvage_session_and_proxy_info(data: bytes) -> tuple[str | None, tuple[bytes, ...]]:
    """Session-Id and Proxy-Info AVPs of a message we refuse, as far as it can be walked.

    An error answer carries the request's Session-Id (RFC 6733 §7.2) and its Proxy-Info AVPs
    in order (§6.2). An invalid Session-Id is left out rather than echoed.
    """
    session_id: str | None = None
    proxy_infos: list[bytes] = []
    for code, _, vendor_id, avp_start, data_start, data_end in lenient_avp_spans(
        data, HEADER_LENGTH, len(data)
    ):
        if vendor_id:
            continue
        if code == AVP_SESSION_ID and session_id is None:
            try:
                session_id = data[data_start:data_end].decode() or None
            except UnicodeDecodeError:
                session_id = None
        elif code == AVP_PROXY_INFO:
            proxy_infos.append(padded_avp(data, avp_start, data_end))
    return session_id, tuple(proxy_infos)


def build_error_answer(
    request: Header | bytes,
    *,
    origin_host: str,
    origin_realm: str,
    result_code: int,
    failed_avp: bytes | None = None,
    error_message: str | None = None,
    session_id: str | None = None,
    proxy_infos: Sequence[bytes] | None = None,
    origin_state_id: int | None = None,
    extra_avps: Sequence[bytes] = (),
) -> bytes:
    """An answer in the RFC 6733 §7.2 format to a request we refuse.

    ``request`` is its header or its octets (at least the 20-octet header; from the octets the
    Session-Id and Proxy-Info AVPs are salvaged when not given). The E bit is set for 3xxx
    protocol errors and only for them. AVP order: Session-Id (if any), Origin-Host,
    Origin-Realm, Result-Code, Origin-State-Id, Error-Message, Failed-AVP, ``extra_avps``,
    Proxy-Info.
    """
    salvaged_session: str | None = None
    salvaged_proxies: tuple[bytes, ...] = ()
    if isinstance(request, Header):
        header = request
    else:
        header = peek_header(request)
        salvaged_session, salvaged_proxies = salvage_session_and_proxy_info(request)
    if session_id is None:
        session_id = salvaged_session
    if proxy_infos is None:
        proxy_infos = salvaged_proxies
    avps: list[bytes] = []
    if session_id is not None:
        avps.append(avp_utf8(AVP_SESSION_ID, session_id))
    avps.append(encode_avp(AVP_ORIGIN_HOST, encode_identity(origin_host)))
    avps.append(encode_avp(AVP_ORIGIN_REALM, encode_identity(origin_realm)))
    avps.append(avp_u32(AVP_RESULT_CODE, result_code))
    if origin_state_id is not None:
        avps.append(avp_u32(AVP_ORIGIN_STATE_ID, origin_state_id))
    if error_message:
        # Error-Message MUST NOT have the M bit (RFC 6733 §4.5 table).
        avps.append(avp_utf8(AVP_ERROR_MESSAGE, error_message, mandatory=False))
    if failed_avp is not None:
        avps.append(encode_avp(AVP_FAILED_AVP, failed_avp))
    avps.extend(extra_avps)
    avps.extend(proxy_infos)
    return encode_with_header(answer_header_for(header, error=is_protocol_error(result_code)), avps)
