"""The RADIUS dictionaries in dictionaries/ load in pyrad and define what ocs relies on."""

import logging
from pathlib import Path

import pytest
from pyrad import packet, tools
from pyrad.dictionary import Attribute, Dictionary

DICT_DIR = Path(__file__).resolve().parents[2] / "dictionaries"
TOP = DICT_DIR / "dictionary"


@pytest.fixture(scope="module")
def dictionary() -> Dictionary:
    return Dictionary(str(TOP))


def _value(attr: Attribute, name: str) -> object:
    """Decoded number of the named VALUE (pyrad stores VALUEs encoded)."""
    return tools.DecodeAttr(attr.type, attr.values.GetForward(name))


def _includes(path: Path) -> list[Path]:
    """Files named by the $INCLUDE lines of path, relative to its directory."""
    found = []
    for line in path.read_text().splitlines():
        tokens = line.split("#", 1)[0].split()
        if tokens and tokens[0].upper() in ("$INCLUDE", "$INCLUDE-"):
            found.append((path.parent / " ".join(tokens[1:])).resolve())
    return found


def test_loads_without_skips_or_warnings(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pyrad"):
        d = Dictionary(str(TOP))
    assert d.skipped_attributes == set()
    assert [r.getMessage() for r in caplog.records] == []


@pytest.mark.parametrize(
    ("name", "code", "datatype"),
    [
        ("User-Name", 1, "string"),
        ("User-Password", 2, "string"),
        ("NAS-IP-Address", 4, "ipaddr"),
        ("Service-Type", 6, "integer"),
        ("Framed-IP-Address", 8, "ipaddr"),
        ("Reply-Message", 18, "string"),
        ("State", 24, "octets"),
        ("Class", 25, "octets"),
        ("Session-Timeout", 27, "integer"),
        ("Idle-Timeout", 28, "integer"),
        ("Called-Station-Id", 30, "string"),
        ("Calling-Station-Id", 31, "string"),
        ("NAS-Identifier", 32, "string"),
        ("Acct-Status-Type", 40, "integer"),
        ("Acct-Input-Octets", 42, "integer"),
        ("Acct-Output-Octets", 43, "integer"),
        ("Acct-Session-Id", 44, "string"),
        ("Acct-Session-Time", 46, "integer"),
        ("Acct-Terminate-Cause", 49, "integer"),
        ("Acct-Multi-Session-Id", 50, "string"),
        ("Acct-Input-Gigawords", 52, "integer"),
        ("Acct-Output-Gigawords", 53, "integer"),
        ("Event-Timestamp", 55, "date"),
        ("NAS-Port-Type", 61, "integer"),
        ("Message-Authenticator", 80, "octets"),
        ("Acct-Interim-Interval", 85, "integer"),
        ("NAS-Port-Id", 87, "string"),
        ("Error-Cause", 101, "integer"),
    ],
)
def test_standard_attribute(dictionary: Dictionary, name: str, code: int, datatype: str) -> None:
    attr = dictionary.attributes[name]
    assert attr.code == code
    assert attr.type == datatype
    assert attr.vendor == ""
    assert dictionary.attrindex.GetForward(name) == code


def test_user_password_is_hidden(dictionary: Dictionary) -> None:
    assert dictionary.attributes["User-Password"].encrypt == 1


@pytest.mark.parametrize(
    ("attr", "name", "number"),
    [
        ("Acct-Status-Type", "Start", 1),
        ("Acct-Status-Type", "Stop", 2),
        ("Acct-Status-Type", "Interim-Update", 3),
        ("Acct-Status-Type", "Accounting-On", 7),
        ("Acct-Status-Type", "Accounting-Off", 8),
        ("Acct-Terminate-Cause", "User-Request", 1),
        ("Acct-Terminate-Cause", "Idle-Timeout", 4),
        ("Acct-Terminate-Cause", "Session-Timeout", 5),
        ("Acct-Terminate-Cause", "Admin-Reset", 6),
        ("Service-Type", "Framed-User", 2),
        ("Service-Type", "Authorize-Only", 17),
        ("NAS-Port-Type", "Ethernet", 15),
        ("NAS-Port-Type", "PPPoEoVLAN", 33),
        ("Error-Cause", "Residual-Session-Context-Removed", 201),
        ("Error-Cause", "Missing-Attribute", 402),
        ("Error-Cause", "Session-Context-Not-Found", 503),
    ],
)
def test_value(dictionary: Dictionary, attr: str, name: str, number: int) -> None:
    assert _value(dictionary.attributes[attr], name) == number


VENDOR_IDS = {"Cisco": 9, "Mikrotik": 14988, "Juniper": 2636, "ERX": 4874}


@pytest.mark.parametrize(("vendor", "vendor_id"), sorted(VENDOR_IDS.items()))
def test_vendor_id(dictionary: Dictionary, vendor: str, vendor_id: int) -> None:
    assert dictionary.vendors.GetForward(vendor) == vendor_id


@pytest.mark.parametrize(
    ("vendor", "name", "code", "datatype"),
    [
        ("Cisco", "Cisco-AVPair", 1, "string"),
        ("Cisco", "h323-credit-time", 102, "string"),
        ("Mikrotik", "Mikrotik-Rate-Limit", 8, "string"),
        ("Mikrotik", "Mikrotik-Total-Limit", 17, "integer"),
        ("Juniper", "Juniper-Local-User-Name", 1, "string"),
        ("ERX", "ERX-Service-Activate", 65, "string"),
    ],
)
def test_vendor_attribute(
    dictionary: Dictionary, vendor: str, name: str, code: int, datatype: str
) -> None:
    attr = dictionary.attributes[name]
    assert attr.vendor == vendor
    assert attr.code == code
    assert attr.type == datatype
    assert dictionary.attrindex.GetForward(name) == (VENDOR_IDS[vendor], code)


def test_erx_service_activate_is_tagged(dictionary: Dictionary) -> None:
    assert dictionary.attributes["ERX-Service-Activate"].has_tag


def test_accounting_packet_round_trip(dictionary: Dictionary) -> None:
    request = packet.AcctPacket(dict=dictionary, secret=b"secret")
    request["Acct-Status-Type"] = "Interim-Update"
    request["Acct-Session-Id"] = "sess-1"
    request["Acct-Input-Gigawords"] = 1
    request["Event-Timestamp"] = 1_700_000_000
    request["Mikrotik-Rate-Limit"] = "10M/20M"
    request["Cisco-AVPair"] = "subscriber:accounting-list=default"
    raw = request.RequestPacket()

    received = packet.AcctPacket(dict=dictionary, secret=b"secret", packet=raw)
    assert received["Acct-Status-Type"] == ["Interim-Update"]
    assert received["Acct-Session-Id"] == ["sess-1"]
    assert received["Acct-Input-Gigawords"] == [1]
    assert received["Event-Timestamp"] == [1_700_000_000]
    assert received["Mikrotik-Rate-Limit"] == ["10M/20M"]
    assert received["Cisco-AVPair"] == ["subscriber:accounting-list=default"]


def test_every_file_is_included_from_the_top() -> None:
    reachable = {TOP.resolve()}
    todo = [TOP.resolve()]
    while todo:
        for included in _includes(todo.pop()):
            assert included.is_file(), f"missing $INCLUDE target {included}"
            if included not in reachable:
                reachable.add(included)
                todo.append(included)
    on_disk = {p.resolve() for p in DICT_DIR.iterdir() if p.is_file()}
    assert sorted(p.name for p in on_disk - reachable) == []
    assert {p.name for p in reachable} >= {
        "dictionary.rfc2865",
        "dictionary.rfc2866",
        "dictionary.rfc2869",
        "dictionary.rfc5176",
        "dictionary.cisco",
        "dictionary.juniper",
        "dictionary.mikrotik",
    }
