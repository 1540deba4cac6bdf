"""Rating by destination through the daemon (issue 13): one account, calls to numbers of
different prices get different grants and charges over RADIUS (Called-Station-Id) and Diameter
(Called-Party-Address); a number no deck prices is refused with its own reason; a price
scheduled to change during a call does not change that call's price."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from diameter_peer import ccr, granted, result_code, units
from support import run_ocs
from test_session_ledger import (
    START,
    STOP,
    Lab,
    Radius,
    assert_ledger,
    balance,
    reply_message,
    sql,
)

from ocs.admin.lookup import database_now
from ocs.core import parse_amount
from ocs.diameter import codec as dcodec
from ocs.radius import codec

pytestmark = pytest.mark.integration

INITIAL, UPDATE, TERMINATION = 1, 2, 3
RADCLIENT = shutil.which("radclient")

# Prices per minute, billed per second: a landline call is cheap, a mobile one ten times dearer.
DECK = """prefix,description,price_per_minute,minimum,increment,connection_fee,effective_from
41,Switzerland,0.06,1,1,0,2000-01-01T00:00:00Z
4179,Switzerland Mobile,0.60,1,1,0,2000-01-01T00:00:00Z
"""


def ok(*args: str, dsn: str) -> str:
    result = run_ocs(*args, dsn=dsn)
    assert result.code == 0, (args, result.out, result.err)
    return result.out


def access_to(nas: Radius, user: str, called: str) -> codec.Packet:
    packet = codec.encode_request(
        codec.ACCESS_REQUEST,
        nas._next(),
        codec.SharedSecret(b"testing123"),
        [
            codec.attr_str(codec.USER_NAME, user),
            codec.attr_str(codec.CALLED_STATION_ID, called),
            (codec.NAS_IP_ADDRESS, b"\x7f\x00\x00\x01"),
        ],
    )
    reply = nas._exchange(nas.auth, packet)
    assert reply is not None
    return reply


@pytest.fixture
def rated(dsn: str, daemons, tmp_path: Path) -> Lab:
    run_ocs("demo", "load", dsn=dsn)
    ok("rate-plan", "create", "retail", "--currency", "USD", dsn=dsn)
    deck = tmp_path / "deck.csv"
    deck.write_text(DECK)
    ok("rates", "import", "retail", str(deck), dsn=dsn)
    ok("rate-plan", "assign", "retail", "--account", "prepaid-ok", dsn=dsn)
    return Lab(dsn, daemons, tmp_path)


def test_radius_grants_and_charges_by_the_called_number(rated: Lab) -> None:
    daemon = rated.start()
    nas = rated.radius
    before = balance(rated.dsn, "prepaid-ok")
    # prepaid-ok has 1.00: 1000 s to a landline ...
    assert access_to(nas, "prepaid-ok", "+41441234567").get_int(codec.SESSION_TIMEOUT) == 1000
    assert nas.accounting(START, "prepaid-ok", "land").code == codec.ACCOUNTING_RESPONSE
    assert nas.accounting(STOP, "prepaid-ok", "land", 30).code == codec.ACCOUNTING_RESPONSE
    # ... and with 0.97 left, 97 s to a mobile (ten times the price).
    assert access_to(nas, "prepaid-ok", "0041791234567").get_int(codec.SESSION_TIMEOUT) == 97
    assert nas.accounting(START, "prepaid-ok", "mobile").code == codec.ACCOUNTING_RESPONSE
    assert nas.accounting(STOP, "prepaid-ok", "mobile", 30).code == codec.ACCOUNTING_RESPONSE
    refused = access_to(nas, "prepaid-ok", "+8613800000000")
    assert refused.code == codec.ACCESS_REJECT
    assert reply_message(refused) == "no rate for the destination"
    assert_ledger(rated.dsn, "prepaid-ok", before, parse_amount("0.33"))  # 0.03 + 0.30
    assert daemon.stop() == 0


def test_radclient_sees_the_grant_of_the_number_it_calls(rated: Lab) -> None:
    """FreeRADIUS's radclient, as a NAS would send it: a national Swiss number (the client's
    dial plan says 41 / 0) and an international one get the grants of their rates."""
    assert RADCLIENT is not None, "radclient (freeradius-utils) is required in CI"
    rated.config.write_text(
        rated.config.read_text().replace(
            'secret = "testing123"\n',
            'secret = "testing123"\ncountry_code = "41"\nnational_prefix = "0"\n',
            1,
        )
        # each admission's hold lapses at once: the calls below never start
        + "[grant]\nring_timeout_s = 0.1\n"
    )
    daemon = rated.start()

    def radclient(called: str) -> str:
        done = subprocess.run(
            [
                RADCLIENT,
                "-x",
                "-r",
                "1",
                "-t",
                "2",
                f"127.0.0.1:{rated.radius.auth}",
                "auth",
                "testing123",
            ],
            input=(
                'User-Name = "prepaid-ok", NAS-IP-Address = 127.0.0.1, '
                f'Called-Station-Id = "{called}", Message-Authenticator = 0x00'
            ),
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        time.sleep(0.3)  # the hold has lapsed
        return done.stdout + done.stderr

    assert "Session-Timeout = 1000" in radclient("044 668 18 00")  # national: 41 44...
    assert "Session-Timeout = 100" in radclient("079 123 45 67")  # national mobile: 4179...
    assert "Session-Timeout = 100" in radclient("+41 79 123 45 67")
    refused = radclient("+86 138 0000 0000")
    assert "Access-Reject" in refused and "no rate for the destination" in refused
    assert daemon.stop() == 0


def test_diameter_grants_and_charges_by_the_called_party(rated: Lab) -> None:
    daemon = rated.start()
    before = balance(rated.dsn, "prepaid-ok")

    async def scenario() -> None:
        peer = await rated.peer()
        mobile = await peer.request(
            ccr("d;m", INITIAL, 0, user="prepaid-ok", called="tel:+41791234567")
        )
        assert result_code(mobile) == 2001 and granted(mobile) == {dcodec.AVP_CC_TIME: 100}
        final = ccr("d;m", TERMINATION, 1, user="prepaid-ok", used=units(446, time_s=60))
        assert result_code(await peer.request(final)) == 2001
        land = await peer.request(
            ccr("d;l", INITIAL, 0, user="prepaid-ok", called="sip:+41441234567@ims.example")
        )
        # 1.00 - 0.60 = 0.40 left: 400 s to a landline
        assert result_code(land) == 2001 and granted(land) == {dcodec.AVP_CC_TIME: 400}
        final = ccr("d;l", TERMINATION, 1, user="prepaid-ok", used=units(446, time_s=60))
        assert result_code(await peer.request(final)) == 2001
        nowhere = await peer.request(
            ccr("d;x", INITIAL, 0, user="prepaid-ok", called="tel:+8613800000000")
        )
        assert result_code(nowhere) == dcodec.DIAMETER_RATING_FAILED
        peer.close()

    asyncio.run(scenario())
    assert_ledger(rated.dsn, "prepaid-ok", before, parse_amount("0.66"))
    assert daemon.stop() == 0


def test_a_price_change_during_a_call_does_not_change_its_price(rated: Lab, tmp_path: Path) -> None:
    daemon = rated.start()
    nas = rated.radius
    before = balance(rated.dsn, "prepaid-ok")
    assert access_to(nas, "prepaid-ok", "+41791234567").code == codec.ACCESS_ACCEPT
    assert nas.accounting(START, "prepaid-ok", "during").code == codec.ACCOUNTING_RESPONSE
    # A new mobile price, from a moment two seconds on (read from the database's clock).
    now = asyncio.run(_database_now(rated.dsn))
    when = (now + timedelta(seconds=2)).isoformat()
    change = tmp_path / "change.csv"
    change.write_text(
        "prefix,description,price_per_minute,minimum,increment,connection_fee,effective_from\n"
        f"4179,Switzerland Mobile,1.20,1,1,0,{when}\n"
    )
    ok("rates", "import", "retail", str(change), dsn=rated.dsn)
    time.sleep(3)  # the new price is in force, and the daemon has the plan again
    assert nas.accounting(STOP, "prepaid-ok", "during", 30).code == codec.ACCOUNTING_RESPONSE
    assert_ledger(rated.dsn, "prepaid-ok", before, parse_amount("0.30"))  # the old 0.60/min
    # A call that starts now pays the new price: 0.70 left buys 35 s.
    assert access_to(nas, "prepaid-ok", "+41791234567").get_int(codec.SESSION_TIMEOUT) == 35
    rows = sql(rated.dsn, "SELECT price_per_minute_micros FROM sessions")
    assert [r["price_per_minute_micros"] for r in rows] == [parse_amount("0.60")]
    assert daemon.stop() == 0


async def _database_now(dsn: str) -> datetime:
    conn = await asyncpg.connect(dsn)
    try:
        return await database_now(conn)
    finally:
        await conn.close()
