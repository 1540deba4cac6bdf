"""Write the fuzzers' seed corpus (``fuzz/corpus/radius``, ``fuzz/corpus/diameter``).

RADIUS: the packets radclient (FreeRADIUS's client, Debian freeradius-utils) sends, captured on
a loopback socket (Access-Request with and without Message-Authenticator, by User-Name and by
Calling-Station-Id, CHAP, accounting Start/Interim/Stop with octets and Gigawords,
Accounting-On/Off, Status-Server), plus Kamailio-style transaction accounting (Start at the
200 OK, Stop at the BYE, Call-ID as Acct-Session-Id, Event-Timestamp, no Acct-Session-Time)
built with our codec. Each packet is saved as sent and in the harness's re-signed form.

Diameter: CER, DWR, DPR, and Gy CCR-I/U/T/E (Subscription-Id E.164/IMSI, User-Name, MSCC per
rating group, Requested/Used-Service-Unit, Requested-Action) built with our codec, each as sent
and in the harness's wrapped form.

    .venv/bin/python fuzz/make_corpus.py        # needs radclient; rewrites the corpus
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import _COMMANDS, _REQUEST_CODES  # noqa: E402
from ocs.diameter import codec as d  # noqa: E402
from ocs.radius import codec as r  # noqa: E402

RADCLIENT_REQUESTS = [
    (
        "auth",
        'User-Name = "prepaid-ok", User-Password = "pw", NAS-IP-Address = 127.0.0.1, '
        "Message-Authenticator = 0x00",
    ),
    (
        "auth",
        'User-Name = "postpaid", User-Password = "pw", NAS-Identifier = "bras-1", '
        "NAS-Port = 17, Framed-Protocol = PPP, Service-Type = Framed-User, "
        "Message-Authenticator = 0x00",
    ),
    ("auth", 'User-Name = "nobody", CHAP-Password = "secret", NAS-IP-Address = 127.0.0.1'),
    (
        "auth",
        'User-Name = "sip:alice@example.com", Calling-Station-Id = "+15550000001", '
        'Called-Station-Id = "15550000002", Proxy-State = 0x01020304, '
        "Message-Authenticator = 0x00",
    ),
    ("auth", "Message-Authenticator = 0x00"),  # Status-Server is sent below
    (
        "acct",
        'User-Name = "prepaid-ok", Acct-Status-Type = Start, Acct-Session-Id = "s-1", '
        "NAS-IP-Address = 127.0.0.1, Framed-IP-Address = 10.0.0.7",
    ),
    (
        "acct",
        'User-Name = "prepaid-ok", Acct-Status-Type = Interim-Update, '
        'Acct-Session-Id = "s-1", Acct-Session-Time = 60, Acct-Input-Octets = 123456, '
        "Acct-Output-Octets = 4000000000, Acct-Output-Gigawords = 2, "
        "NAS-IP-Address = 127.0.0.1",
    ),
    (
        "acct",
        'User-Name = "prepaid-ok", Acct-Status-Type = Stop, Acct-Session-Id = "s-1", '
        "Acct-Session-Time = 125, Acct-Terminate-Cause = User-Request, "
        'NAS-Identifier = "bras-1"',
    ),
    ("acct", 'Acct-Status-Type = Accounting-On, NAS-Identifier = "bras-1"'),
    ("acct", "Acct-Status-Type = Accounting-Off, NAS-IP-Address = 127.0.0.1"),
]


def capture_radclient() -> list[tuple[str, bytes]]:
    radclient = shutil.which("radclient")
    if radclient is None:
        raise SystemExit("radclient (Debian freeradius-utils) is needed to capture its packets")
    captured: list[tuple[str, bytes]] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.5)
        port = sock.getsockname()[1]
        jobs = [(kind, kind, text) for kind, text in RADCLIENT_REQUESTS]
        jobs.append(("auth", "status", "Message-Authenticator = 0x00"))
        for kind, command, text in jobs:
            subprocess.run(
                [radclient, "-r", "1", "-t", "0.3", f"127.0.0.1:{port}", command, "testing123"],
                input=text,
                text=True,
                capture_output=True,
                check=False,
                timeout=10,
            )
            try:
                data, _ = sock.recvfrom(4096)
            except TimeoutError:
                raise SystemExit(f"radclient sent nothing for {text!r}") from None
            captured.append((kind, data))
            time.sleep(0.05)
    return captured


def kamailio_style() -> list[tuple[str, bytes]]:
    secret = r.SharedSecret(b"testing123")
    common = [
        r.attr_str(r.USER_NAME, "15550000001"),
        r.attr_str(r.ACCT_SESSION_ID, "a84b4c76e66710@pc33.example.com"),
        r.attr_str(31, "sip:15550000001@example.com"),  # Calling-Station-Id
        r.attr_str(30, "sip:15550000002@example.com"),  # Called-Station-Id
        r.attr_int(r.SERVICE_TYPE, 15),  # Sip-Session
        r.attr_int(55, 1733400000),  # Event-Timestamp
        r.attr_vsa(21210, 101, b"INVITE"),  # a Kamailio Sip-Method as a VSA
        r.attr_vsa(21210, 102, b"200"),  # Sip-Response-Code
        r.attr_str(r.NAS_IDENTIFIER, "kamailio-1"),
    ]
    packets = []
    for status in (1, 2):
        attributes = [r.attr_int(r.ACCT_STATUS_TYPE, status), *common]
        packets.append(
            (
                "acct",
                r.encode_request(
                    r.ACCOUNTING_REQUEST, status, secret, attributes, message_authenticator=False
                ),
            )
        )
    # radcli sends no Message-Authenticator on Access-Request
    auth = r.encode_request(
        r.ACCESS_REQUEST,
        9,
        secret,
        [r.attr_str(r.USER_NAME, "15550000001"), r.attr_str(r.NAS_IDENTIFIER, "kamailio-1")],
        message_authenticator=False,
    )
    packets.append(("auth", auth))
    return packets


def radius_seed(kind: str, datagram: bytes) -> list[bytes]:
    port = 1 if kind == "acct" else 0
    code = datagram[0]
    selector = _REQUEST_CODES.index(code) if code in _REQUEST_CODES else 0
    has_ma = r.parse_packet(datagram).message_authenticator_offset is not None
    resigned = (
        bytes([selector | (0x80 if has_ma else 0), datagram[1]]) + datagram[4:20] + datagram[20:]
    )
    return [bytes([port]) + datagram, bytes([2 | port]) + resigned]


def diameter_messages() -> list[bytes]:
    def subscription(kind: int, value: str) -> bytes:
        return d.avp_grouped(
            d.AVP_SUBSCRIPTION_ID,
            [
                d.avp_u32(d.AVP_SUBSCRIPTION_ID_TYPE, kind),
                d.avp_utf8(d.AVP_SUBSCRIPTION_ID_DATA, value),
            ],
        )

    def units(**members: int) -> list[bytes]:
        codes = {"time": d.AVP_CC_TIME, "total": d.AVP_CC_TOTAL_OCTETS}
        out = []
        for name, value in members.items():
            code = codes[name]
            out.append(d.avp_u64(code, value) if name == "total" else d.avp_u32(code, value))
        return out

    def ccr(session: str, kind: int, number: int, *extra: bytes) -> bytes:
        avps = [
            d.avp_utf8(d.AVP_SESSION_ID, session),
            d.encode_avp(d.AVP_ORIGIN_HOST, b"pcef.localdomain"),
            d.encode_avp(d.AVP_ORIGIN_REALM, b"localdomain"),
            d.encode_avp(d.AVP_DESTINATION_REALM, b"localdomain"),
            d.avp_u32(d.AVP_AUTH_APPLICATION_ID, 4),
            d.avp_utf8(d.AVP_SERVICE_CONTEXT_ID, "32251@3gpp.org"),
            d.avp_u32(d.AVP_CC_REQUEST_TYPE, kind),
            d.avp_u32(d.AVP_CC_REQUEST_NUMBER, number),
            *extra,
        ]
        return d.encode_message(
            command_code=d.CMD_CREDIT_CONTROL,
            application_id=4,
            hop_by_hop=100 + number,
            end_to_end=200 + number,
            avps=avps,
            flags=d.FLAG_REQUEST | d.FLAG_PROXIABLE,
        )

    def base(command: int, *avps: bytes) -> bytes:
        return d.encode_message(
            command_code=command,
            application_id=0,
            hop_by_hop=7,
            end_to_end=7,
            avps=[
                d.encode_avp(d.AVP_ORIGIN_HOST, b"pcef.localdomain"),
                d.encode_avp(d.AVP_ORIGIN_REALM, b"localdomain"),
                *avps,
            ],
            flags=d.FLAG_REQUEST,
        )

    mscc = d.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL
    return [
        base(
            d.CMD_CAPABILITIES_EXCHANGE,
            d.avp_address(d.AVP_HOST_IP_ADDRESS, "127.0.0.1"),
            d.avp_u32(d.AVP_VENDOR_ID, 10415),
            d.avp_utf8(d.AVP_PRODUCT_NAME, "pcef", mandatory=False),
            d.avp_u32(d.AVP_AUTH_APPLICATION_ID, 4),
        ),
        base(d.CMD_DEVICE_WATCHDOG),
        base(d.CMD_DISCONNECT_PEER, d.avp_u32(273, 0)),
        ccr(
            "pcef.localdomain;1;1",
            1,
            0,
            subscription(0, "+15550000001"),
            subscription(1, "001010123456789"),
            d.avp_grouped(d.AVP_REQUESTED_SERVICE_UNIT, units(time=60)),
        ),
        ccr(
            "pcef.localdomain;1;2",
            1,
            0,
            d.avp_utf8(d.AVP_USER_NAME, "postpaid"),
            d.avp_grouped(
                mscc,
                [
                    d.avp_grouped(d.AVP_REQUESTED_SERVICE_UNIT, units(total=1000000)),
                    d.avp_u32(d.AVP_RATING_GROUP, 10),
                ],
            ),
            d.avp_grouped(
                mscc, [d.avp_u32(d.AVP_RATING_GROUP, 20), d.avp_u32(d.AVP_SERVICE_IDENTIFIER, 7)]
            ),
        ),
        ccr(
            "pcef.localdomain;1;1",
            2,
            1,
            subscription(0, "15550000001"),
            d.avp_grouped(d.AVP_USED_SERVICE_UNIT, units(time=30)),
            d.avp_grouped(d.AVP_REQUESTED_SERVICE_UNIT, units(time=60)),
        ),
        ccr(
            "pcef.localdomain;1;2",
            2,
            1,
            d.avp_utf8(d.AVP_USER_NAME, "postpaid"),
            d.avp_grouped(
                mscc,
                [
                    d.avp_grouped(d.AVP_USED_SERVICE_UNIT, units(total=400000)),
                    d.avp_u32(d.AVP_RATING_GROUP, 10),
                ],
            ),
        ),
        ccr(
            "pcef.localdomain;1;1",
            3,
            2,
            subscription(0, "15550000001"),
            d.avp_grouped(d.AVP_USED_SERVICE_UNIT, units(time=12)),
            d.avp_u32(d.AVP_TERMINATION_CAUSE, 1),
            d.avp_u32(d.AVP_EVENT_TIMESTAMP, 3942000000),
        ),
        ccr(
            "pcef.localdomain;1;3",
            4,
            0,
            d.avp_utf8(d.AVP_USER_NAME, "prepaid-ok"),
            d.avp_u32(d.AVP_REQUESTED_ACTION, 0),
            d.avp_grouped(d.AVP_REQUESTED_SERVICE_UNIT, [d.avp_u64(417, 3)]),  # service units
        ),
        ccr(
            "pcef.localdomain;1;4",
            4,
            0,
            d.avp_utf8(d.AVP_USER_NAME, "postpaid"),
            d.avp_u32(d.AVP_REQUESTED_ACTION, 2),
        ),
        ccr(
            "pcef.localdomain;1;5",
            4,
            0,
            d.avp_utf8(d.AVP_USER_NAME, "postpaid"),
            d.avp_u32(d.AVP_REQUESTED_ACTION, 3),
        ),
    ]


def diameter_seed(message: bytes) -> list[bytes]:
    command = int.from_bytes(message[5:8], "big")
    selector = _COMMANDS.index(command)
    wrapped = bytes([message[4], selector]) + message[12:16] + message[20:]
    return [b"\x00" + message, b"\x01" + wrapped, b"\x02" + message]


def write(directory: Path, seeds: list[bytes]) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.iterdir():
        old.unlink()
    for seed in seeds:
        (directory / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
    return len(seeds)


def main() -> int:
    radius = [
        s for kind, data in capture_radclient() + kamailio_style() for s in radius_seed(kind, data)
    ]
    diameter = [s for message in diameter_messages() for s in diameter_seed(message)]
    print(f"radius seeds: {write(HERE / 'corpus' / 'radius', radius)}")
    print(f"diameter seeds: {write(HERE / 'corpus' / 'diameter', diameter)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
