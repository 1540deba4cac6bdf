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
        ("Acct-Status-Type", "Failed", 15),
        ("Service-Type", "Sip-Session", 15),
        ("Service-Type", "SIP-Caller-AVPs", 30),
        ("Sip-Method", "Bye", 8),
        ("MS-MPPE-Encryption-Policy", "Encryption-Allowed", 1),
    ],
)
def test_value(dictionary: Dictionary, attr: str, name: str, number: int) -> None:
    assert _value(dictionary.attributes[attr], name) == number


VENDOR_IDS = {
    "Cisco": 9,
    "Mikrotik": 14988,
    "Juniper": 2636,
    "ERX": 4874,
    "Microsoft": 311,
    "Freeswitch": 27880,
    "ChilliSpot": 14559,
    "WISPr": 14122,
}


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
        ("Microsoft", "MS-CHAP-Challenge", 11, "octets"),
        ("Microsoft", "MS-CHAP2-Response", 25, "octets"),
        ("Microsoft", "MS-CHAP2-Success", 26, "octets"),
        ("Microsoft", "MS-MPPE-Send-Key", 16, "octets"),
        ("Microsoft", "MS-MPPE-Recv-Key", 17, "octets"),
        ("Freeswitch", "Freeswitch-Hangupcause", 13, "integer"),
        ("ChilliSpot", "ChilliSpot-Max-Total-Octets", 3, "integer"),
        ("ChilliSpot", "ChilliSpot-Max-Total-Gigawords", 23, "integer"),
        ("WISPr", "WISPr-Bandwidth-Max-Up", 7, "integer"),
        ("WISPr", "WISPr-Bandwidth-Max-Down", 8, "integer"),
        ("Mikrotik", "Mikrotik-Total-Limit-Gigawords", 18, "integer"),
        ("Cisco", "h323-conf-id", 24, "string"),
        ("Cisco", "h323-currency", 110, "string"),
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


def test_mppe_keys_are_salt_encrypted(dictionary: Dictionary) -> None:
    assert dictionary.attributes["MS-MPPE-Send-Key"].encrypt == 2
    assert dictionary.attributes["MS-MPPE-Recv-Key"].encrypt == 2


# What each client sends, built and read back by attribute name (pyrad encodes with the shipped
# dictionaries, then decodes the wire bytes with them).
CLIENT_PACKETS = {
    # Kamailio / OpenSIPS acc_radius: Start on the 200 OK, Failed for an unanswered INVITE.
    "kamailio-start": {
        "Acct-Status-Type": "Start",
        "Service-Type": "Sip-Session",
        "Sip-Response-Code": 200,
        "Sip-Method": "Invite",
        "Event-Timestamp": 1_796_532_612,
        "Sip-From-Tag": "18263SIPpTag001",
        "Sip-To-Tag": "18143SIPpTag011",
        "Acct-Session-Id": "call-1@test",
        "User-Name": "15550000001",
        "Class": b"ocs:radius-auth|127.0.0.1|40000|1|00",
    },
    "kamailio-failed": {
        "Acct-Status-Type": "Failed",
        "Service-Type": "Sip-Session",
        "Sip-Response-Code": 486,
        "Sip-Method": "Invite",
        "Acct-Session-Id": "call-2@test",
    },
    "opensips-cdr": {
        "Acct-Status-Type": "Stop",
        "Sip-Call-Duration": 61,
        "Sip-Call-Setuptime": 3,
        "Acct-Session-Id": "call-3@test",
    },
    "cisco-stop": {
        "Acct-Status-Type": "Stop",
        "Acct-Session-Id": "0000000A",
        "Acct-Session-Time": 61,
        "Calling-Station-Id": "15550000001",
        "h323-conf-id": "h323-conf-id=02102944 600A1899 3FD61009 0E2F3CC5",
        "h323-call-origin": "h323-call-origin=answer",
        "h323-disconnect-cause": "h323-disconnect-cause=10",
    },
    "freeswitch-stop": {
        "Acct-Status-Type": "Stop",
        "Acct-Session-Time": 61,
        "Calling-Station-Id": "15550000001",
        "h323-conf-id": "6a1e1c4a-0b3f-11ef-8a3f-0242ac120002",
        "Freeswitch-Hangupcause": "Normal-Clearing",
        "Freeswitch-Billusec": 61_000_000,
    },
    "mikrotik-interim": {
        "Acct-Status-Type": "Interim-Update",
        "Acct-Session-Id": "81a00004",
        "Acct-Input-Octets": 1000,
        "Acct-Input-Gigawords": 2,
        "Mikrotik-Rate-Limit": "512k/4096k",
    },
    "chillispot-access": {
        "User-Name": "guest",
        "ChilliSpot-Max-Total-Octets": 50_000_000,
        "ChilliSpot-Max-Total-Gigawords": 1,
        "WISPr-Bandwidth-Max-Up": 1_000_000,
        "WISPr-Location-Name": "lobby",
    },
    "mschapv2-access": {
        "User-Name": "User",
        "MS-CHAP-Challenge": bytes(range(16)),
        "MS-CHAP2-Response": bytes(50),
    },
}


@pytest.mark.parametrize("name", sorted(CLIENT_PACKETS))
def test_client_packets_decode_by_name(dictionary: Dictionary, name: str) -> None:
    attributes = CLIENT_PACKETS[name]
    request = packet.AcctPacket(dict=dictionary, secret=b"secret")
    for attribute, value in attributes.items():
        request[attribute] = value
    raw = request.RequestPacket()
    received = packet.AcctPacket(dict=dictionary, secret=b"secret", packet=raw)
    for attribute, value in attributes.items():
        assert received[attribute] == [value], attribute


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
        "dictionary.sip",
        "dictionary.microsoft",
        "dictionary.freeswitch",
        "dictionary.chillispot",
        "dictionary.wispr",
    }
