from decimal import Decimal

import pytest

from ocs.core import AmountError, format_amount, parse_amount, to_decimal
from ocs.core.identity import (
    MAX_PRINTABLE_CHARS,
    IdentityError,
    IdentityKind,
    IdentityProblem,
    identity_from_bytes,
    normalize_identity,
    printable,
    sip_uri_has_extras,
)


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("1", 1_000_000),
        ("1.00", 1_000_000),
        ("-5.00", -5_000_000),
        ("0.000001", 1),
        (" 12.5 ", 12_500_000),
        ("1e2", 100_000_000),
        (Decimal("0.06"), 60_000),
        (3, 3_000_000),
    ],
)
def test_parse_amount(text: str, micros: int) -> None:
    assert parse_amount(text) == micros


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0.0000001", "more than 6 decimal places"),
        ("abc", "not an amount"),
        ("", "not an amount"),
        ("NaN", "not a finite amount"),
        ("inf", "not a finite amount"),
        (True, "not an amount"),
    ],
)
def test_parse_amount_refuses_rather_than_rounds(text: str, message: str) -> None:
    with pytest.raises(AmountError, match=message):
        parse_amount(text)


def test_format_and_decimal_round_trip() -> None:
    assert format_amount(1_000_000) == "1.00"
    assert format_amount(-1_234_500) == "-1.2345"
    assert format_amount(1) == "0.000001"
    assert format_amount(0) == "0.00"
    assert to_decimal(-50_000_000) == Decimal("-50.000000")
    for micros in (0, 1, -1, 999_999, 123_456_789_012):
        assert parse_amount(to_decimal(micros)) == micros


@pytest.mark.parametrize(
    ("kind", "value", "normal"),
    [
        (IdentityKind.E164, "+1 555-000-0001", "15550000001"),
        (IdentityKind.E164, "15550000001", "15550000001"),
        (IdentityKind.IMSI, "001010123456789", "001010123456789"),
        (IdentityKind.SIP_URI, "SIP:alice@Example.COM", "alice@example.com"),
        # Scheme, port, parameters, headers and name-addr brackets go (a SIP proxy's From URI).
        (IdentityKind.SIP_URI, "sip:15550000001@127.0.0.1:25090", "15550000001@127.0.0.1"),
        (IdentityKind.SIP_URI, "<sips:bob@Example.com:5061;transport=tls>", "bob@example.com"),
        (IdentityKind.SIP_URI, '"Bob" <sip:bob@example.com>;tag=abc', "bob@example.com"),
        (IdentityKind.SIP_URI, "sip:bob@example.com?subject=x", "bob@example.com"),
        (IdentityKind.SIP_URI, "sip:carol@[2001:DB8::1]:5060", "carol@[2001:db8::1]"),
        (IdentityKind.SIP_URI, "sip:gateway.example.com:5060", "gateway.example.com"),
        (IdentityKind.SIP_URI, "tel:+15550000001;phone-context=example.com", "tel:+15550000001"),
        (IdentityKind.SIP_URI, "alice@example.com", "alice@example.com"),
        (IdentityKind.NAI, "bob@Realm.Example", "bob@realm.example"),
        (IdentityKind.USER_NAME, "  prepaid-ok ", "prepaid-ok"),
        (IdentityKind.CALLING_STATION_ID, "+15550000001", "+15550000001"),
    ],
)
def test_identity_normal_form(kind: IdentityKind, value: str, normal: str) -> None:
    assert normalize_identity(kind, value) == normal


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        (IdentityKind.E164, "555-CALL-NOW"),
        (IdentityKind.E164, "1234567890123456"),
        (IdentityKind.SIP_URI, "alice"),
        (IdentityKind.SIP_URI, "http://alice@example.com"),
        (IdentityKind.SIP_URI, "sip:"),
        (IdentityKind.SIP_URI, "sip:bob@[2001:db8::1"),
        (IdentityKind.USER_NAME, "   "),
    ],
)
def test_identity_errors(kind: IdentityKind, value: str) -> None:
    with pytest.raises(IdentityError):
        normalize_identity(kind, value)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"prepaid-ok\x00", IdentityProblem.NUL_BYTE),
        (b"\xff\xfe", IdentityProblem.INVALID_UTF8),
        (b"\xed\xa0\x80", IdentityProblem.INVALID_UTF8),  # an encoded surrogate
        (b"a\x1bb", IdentityProblem.CONTROL_CHARACTER),
        (b"a\tb", IdentityProblem.CONTROL_CHARACTER),
        (b"\xc2\x85a", IdentityProblem.CONTROL_CHARACTER),  # U+0085 is not a space here
        (b"a\x7f", IdentityProblem.CONTROL_CHARACTER),
        (b"x" * 254, IdentityProblem.TOO_LONG),
        ("é".encode() * 127, IdentityProblem.TOO_LONG),  # 254 octets, 127 characters
        (b"x" * 100_000, IdentityProblem.TOO_LONG),
        (b"   ", IdentityProblem.EMPTY),
        (b"", IdentityProblem.EMPTY),
    ],
)
def test_what_cannot_be_an_identity_is_refused_with_its_cause(
    raw: bytes, problem: IdentityProblem
) -> None:
    with pytest.raises(IdentityError) as refused:
        identity_from_bytes(IdentityKind.USER_NAME, raw)
    assert refused.value.problem is problem


def test_identities_at_the_limits_are_kept() -> None:
    assert identity_from_bytes(IdentityKind.USER_NAME, b"x" * 253) == "x" * 253
    assert identity_from_bytes(IdentityKind.USER_NAME, "grüße".encode()) == "grüße"
    assert identity_from_bytes(IdentityKind.E164, b"+1 555") == "1555"
    with pytest.raises(IdentityError) as refused:
        normalize_identity(IdentityKind.E164, "١٢٣")  # Arabic-Indic digits are not E.164
    assert refused.value.problem is IdentityProblem.MALFORMED
    with pytest.raises(IdentityError) as refused:
        normalize_identity(IdentityKind.USER_NAME, "a\ud800")  # a lone surrogate
    assert refused.value.problem is IdentityProblem.INVALID_UTF8


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (b"ok", "ok"),
        (b"a\x00b", "a\\x00b"),
        (b"a\xffb", "a\\xffb"),
        (b"back\\slash", "back\\\\slash"),
        ("grüße\x1b", "grüße\\x1b"),
        ("a\ud800", "a\\ud800"),
    ],
)
def test_printable_escapes_what_sql_and_terminals_refuse(raw: bytes | str, shown: str) -> None:
    assert printable(raw) == shown
    shown.encode("utf-8")  # strict: valid UTF-8, no NUL


def test_printable_is_bounded() -> None:
    long = printable(b"\x00" * 10_000)
    assert len(long) <= MAX_PRINTABLE_CHARS + 3
    assert long.endswith("...")
    short = printable(b"\x00" * 10_000, 600)
    assert len(short) <= 603 and short.endswith("...")
    assert printable(b"abc\x01", 600) == "abc\\x01"


@pytest.mark.parametrize(
    "value",
    [
        "sip:15550000001@127.0.0.1:25090",
        "<sips:bob@Example.com:5061;transport=tls>",
        "sip:carol@[2001:DB8::1]:5060",
        "tel:+15550000001",
        "sip:Alice@Example.COM",
    ],
)
def test_the_sip_uri_normal_form_is_its_own_normal_form(value: str) -> None:
    once = normalize_identity(IdentityKind.SIP_URI, value)
    assert normalize_identity(IdentityKind.SIP_URI, once) == once


@pytest.mark.parametrize(
    ("value", "extras"),
    [
        ("sip:a@b:5060", True),
        ("sip:a@b;transport=udp", True),
        ("<sip:a@b>", True),
        ("sip:a@b", False),
        ("a@b", False),
        ("not a uri", False),
    ],
)
def test_sip_uri_extras_are_recognised(value: str, extras: bool) -> None:
    assert sip_uri_has_extras(value) is extras
