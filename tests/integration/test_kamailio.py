"""Kamailio 5.6 (Debian) in front of ocsd over RADIUS, SIPp as caller and callee.

Kamailio runs docs/recipes/kamailio/kamailio.cfg with radcli; ocsd has the recipe's client
entry (profile "kamailio"). Checked here: a funded call is admitted, answered and hung up with
accounting Start and Stop; refused callers get the SIP code ocs maps from the refusal reason
(402 / 403); the dialog lives exactly as long as the grant (Session-Timeout), then Kamailio
ends it with BYEs.

Also what the session lifecycle makes true for a switch: charging from Start/Stop as received
(acc_radius sends no Acct-Session-Time), the grant-end close of a call with no Stop (charged its
grant), and a failed attempt releasing its hold at once.

With CI=true a missing kamailio or sipp is a failure, not a skip.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
from support import ROOT, DaemonProcess, free_udp_port, run_ocs, write_config
from switches import (
    IN_CI,
    KAMAILIO,
    RECIPES,
    SIPP,
    Process,
    call,
    critical_lines,
    start_kamailio,
    start_uas,
    substitute,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        (KAMAILIO is None or SIPP is None) and not IN_CI, reason="kamailio or sipp missing"
    ),
]

RECIPE = RECIPES / "kamailio"
PREPAID_OK = "15550000001"  # demo: 1.00 at 0.06/min → 1000 s
PREPAID_EMPTY = "15550000002"
BLOCKED = "15550000008"
SHORT = "15550000100"  # created here: 0.004 → a 4 s grant
SHORT_GRANT_S = 4


def query(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


def balance(dsn: str, account: str) -> Decimal:
    (row,) = query(dsn, "SELECT balance FROM accounts WHERE name = $1", account)
    return Decimal(row["balance"])


@dataclass
class Ocs:
    auth_port: int
    acct_port: int
    daemon: DaemonProcess
    dsn: str


@dataclass
class Switch:
    sip_port: int
    gateway_port: int
    process: Process
    workdir: Path


@pytest.fixture
def ocs(dsn: str, daemons, tmp_path: Path) -> Iterator[Ocs]:
    assert KAMAILIO is not None and SIPP is not None, "kamailio and sipp are required in CI"
    auth, acct = free_udp_port(), free_udp_port()
    config = write_config(
        tmp_path / "ocsd.toml",
        f"""
[daemon]
lock_file = "{tmp_path / "ocsd.lock"}"
[metrics]
listen = "127.0.0.1:0"
[usage]
spool_file = "{tmp_path / "spool"}"
[grant]
# A call cut by its grant gets no Stop from Kamailio: closed this long after the grant ends.
session_margin_s = 2
[radius]
enabled = true
auth_listen = ["127.0.0.1:{auth}"]
acct_listen = ["127.0.0.1:{acct}"]
dictionary = "{ROOT / "dictionaries" / "dictionary"}"
"""
        + (RECIPE / "ocs-client.toml").read_text(),
    )
    for args in (
        ("demo", "load"),
        ("account", "create", "short", "--tariff", "demo"),
        ("payment", "add", "short", "0.004"),
        ("identity", "add", "short", "e164", SHORT),
    ):
        done = run_ocs(*args, dsn=dsn)
        assert done.code == 0, done.err
    daemon = daemons("--config", str(config), dsn=dsn)
    daemon.wait_for("msg='ready")
    yield Ocs(auth, acct, daemon, dsn)
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.output()


@pytest.fixture
def switch(ocs: Ocs, tmp_path: Path) -> Iterator[Switch]:
    """Kamailio running the recipe against this ocsd."""
    sip_port, gateway_port = free_udp_port(), free_udp_port()
    servers, dictionary = tmp_path / "radius-servers", tmp_path / "radius-dictionary"
    servers.write_text((RECIPE / "radius-servers").read_text())
    dictionary.write_text((RECIPE / "radius-dictionary").read_text())
    radcli = tmp_path / "radiusclient.conf"
    radcli.write_text(
        substitute(
            (RECIPE / "radiusclient.conf").read_text(),
            {
                "127.0.0.1:1812": f"127.0.0.1:{ocs.auth_port}",
                "127.0.0.1:1813": f"127.0.0.1:{ocs.acct_port}",
                "/etc/kamailio/radius-servers": str(servers),
                "/etc/kamailio/radius-dictionary": str(dictionary),
            },
        )
    )
    config = substitute(
        (RECIPE / "kamailio.cfg").read_text(),
        {
            "udp:127.0.0.1:5060": f"udp:127.0.0.1:{sip_port}",
            "sip:127.0.0.1:5080": f"sip:127.0.0.1:{gateway_port}",
            "/etc/kamailio/radiusclient.conf": str(radcli),
        },
    )
    process = start_kamailio(config, tmp_path, sip_port)
    yield Switch(sip_port, gateway_port, process, tmp_path)
    process.stop()
    assert critical_lines(process) == []


@pytest.fixture
def callee(switch: Switch) -> Iterator[Process]:
    uas = start_uas("uas_answer.xml", switch.gateway_port, switch.workdir)
    yield uas
    uas.stop()


def session_rows(dsn: str, call_id: str) -> list[asyncpg.Record]:
    return query(
        dsn,
        "SELECT s.*, a.name FROM sessions s JOIN accounts a ON a.id = s.account_id "
        "WHERE s.session_key = $1",
        call_id,
    )


def wait_for_rows(dsn: str, sql: str, *args: object, timeout: float = 10) -> list[asyncpg.Record]:
    deadline = time.monotonic() + timeout
    while True:
        rows = query(dsn, sql, *args)
        if rows or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def test_a_funded_call_is_admitted_answered_and_hung_up(
    ocs: Ocs, switch: Switch, callee: Process
) -> None:
    result = call(
        "uac_call.xml",
        proxy_port=switch.sip_port,
        caller=PREPAID_OK,
        workdir=switch.workdir,
        name="funded",
        talk_ms=2000,
    )
    assert result.returncode == 0, result.describe()
    assert result.first("SIP/2.0 200", sent=False)
    assert "ocs admitted 15550000001 for 1000 s" in switch.process.output()
    # acc_radius sent Start (on the 200 OK) and Stop (on the BYE): the session opened by the
    # Start was closed by the Stop.
    assert wait_for_rows(
        ocs.dsn,
        "SELECT 1 FROM sessions WHERE session_key = $1 AND closed_at IS NOT NULL",
        "funded-1@ocs.test",
    ), "no Stop recorded"
    (session,) = session_rows(ocs.dsn, "funded-1@ocs.test")
    assert session["name"] == "prepaid-ok"
    assert session["start_key"].startswith("start|")
    assert session["closed_by_final"] and session["close_reason"] == "stop"
    # radcli sends no Message-Authenticator: accepted under "auto", with one warning.
    log = ocs.daemon.output()
    assert log.count("sends Access-Request without Message-Authenticator") == 1
    assert "dropped an Access-Request" not in log


def test_a_funded_call_is_charged_from_its_start_and_stop(
    ocs: Ocs, switch: Switch, callee: Process
) -> None:
    before = balance(ocs.dsn, "prepaid-ok")
    result = call(
        "uac_call.xml",
        proxy_port=switch.sip_port,
        caller=PREPAID_OK,
        workdir=switch.workdir,
        name="charged",
        talk_ms=3000,
    )
    assert result.returncode == 0, result.describe()
    answered = result.first("SIP/2.0 200", sent=False).at
    hung_up = result.first("BYE", sent=True).at
    talked_s = (hung_up - answered).total_seconds()
    assert wait_for_rows(
        ocs.dsn,
        "SELECT 1 FROM sessions WHERE session_key = $1 AND closed_at IS NOT NULL",
        "charged-1@ocs.test",
    )
    (session,) = session_rows(ocs.dsn, "charged-1@ocs.test")
    # The duration ocs measured from Start to Stop, billed per second at 0.06/min.
    assert abs(session["seconds"] - talked_s) <= 1.0, (session["seconds"], talked_s)
    charged = Decimal(session["seconds"]) * Decimal("0.001")
    assert session["charged"] == charged
    assert balance(ocs.dsn, "prepaid-ok") == before - charged


@pytest.mark.parametrize(
    "refusal",
    [
        (PREPAID_EMPTY, 402, "insufficient credit"),
        (BLOCKED, 403, "account blocked"),
        ("15559999999", 403, "unknown account"),
    ],
    ids=["no-credit", "blocked", "unknown"],
)
def test_a_refused_caller_gets_the_sip_code_ocs_maps(
    ocs: Ocs, switch: Switch, callee: Process, refusal: tuple[str, int, str]
) -> None:
    caller, code, reason = refusal
    result = call(
        "uac_refused.xml",
        proxy_port=switch.sip_port,
        caller=caller,
        workdir=switch.workdir,
        name=f"refused-{code}",
        replacements={'response="EXPECTED"': f'response="{code}"'},
    )
    assert result.returncode == 0, result.describe()
    final = result.first(f"SIP/2.0 {code}", sent=False)
    # The reason phrase is ocs's Reply-Message, as Kamailio got it in the Access-Reject.
    assert final.first_line == f"SIP/2.0 {code} {reason}"
    # The callee never saw the call.
    assert "INVITE" not in callee.output() or f"refused-{code}" not in callee.output()
    assert not session_rows(ocs.dsn, f"refused-{code}-1@ocs.test")


def test_the_dialog_lives_as_long_as_the_grant(ocs: Ocs, switch: Switch, callee: Process) -> None:
    result = call(
        "uac_cut.xml",
        proxy_port=switch.sip_port,
        caller=SHORT,
        workdir=switch.workdir,
        name="cut",
        timeout=40,
    )
    assert result.returncode == 0, result.describe()
    assert f"ocs admitted {SHORT} for {SHORT_GRANT_S} s" in switch.process.output()
    answered = result.first("SIP/2.0 200", sent=False).at
    ended = result.first("BYE", sent=False).at  # from Kamailio, not from the caller
    lifetime = (ended - answered).total_seconds()
    # Kamailio's dialog timer counts whole seconds from the tick before the 200 OK: the call
    # lasts the grant, give or take that second.
    assert SHORT_GRANT_S - 1 < lifetime <= SHORT_GRANT_S + 1.5, result.describe()
    # A grant of 1000 s would have let it run on: the limit is the grant, not a default.
    assert lifetime < 10


def test_a_call_cut_by_its_grant_is_charged_the_grant(
    ocs: Ocs, switch: Switch, callee: Process
) -> None:
    # Kamailio ends the call with BYEs of its own and sends no Stop (INTEROP-NOTES): ocs must
    # close the session when its grant (plus a margin) ends and charge the granted time.
    result = call(
        "uac_cut.xml",
        proxy_port=switch.sip_port,
        caller=SHORT,
        workdir=switch.workdir,
        name="cut-charged",
        timeout=40,
    )
    assert result.returncode == 0, result.describe()
    closed = wait_for_rows(
        ocs.dsn,
        "SELECT charged FROM sessions WHERE session_key = $1 AND closed_at IS NOT NULL",
        "cut-charged-1@ocs.test",
        # ocs's margin past the grant (grant.session_margin_s, 2 s in this test's config)
        timeout=15,
    )
    assert closed and closed[0]["charged"] == Decimal("0.004")
    assert balance(ocs.dsn, "short") == 0


def test_a_failed_attempt_followed_at_once_by_a_new_one_is_admitted(
    ocs: Ocs, switch: Switch
) -> None:
    busy = start_uas("uas_busy.xml", switch.gateway_port, switch.workdir)
    try:
        first = call(
            "uac_refused.xml",
            proxy_port=switch.sip_port,
            caller=PREPAID_OK,
            workdir=switch.workdir,
            name="busy",
            replacements={'response="EXPECTED"': 'response="486"'},
        )
    finally:
        busy.stop()
    assert first.returncode == 0, first.describe()
    # acc_radius sent Acct-Status-Type Failed for the unanswered INVITE.
    answering = start_uas("uas_answer.xml", switch.gateway_port, switch.workdir)
    try:
        second = call(
            "uac_call.xml",
            proxy_port=switch.sip_port,
            caller=PREPAID_OK,
            workdir=switch.workdir,
            name="retry",
            talk_ms=500,
        )
    finally:
        answering.stop()
    assert second.returncode == 0, second.describe()
    assert second.first("SIP/2.0 200", sent=False)


def test_twenty_simultaneous_calls_never_take_the_balance_below_the_rules(
    ocs: Ocs, switch: Switch, callee: Process
) -> None:
    # "short" holds 0.004 (4 s): twenty calls set up in the same second, 2 s each.
    result = call(
        "uac_try.xml",
        proxy_port=switch.sip_port,
        caller=SHORT,
        workdir=switch.workdir,
        name="twenty",
        talk_ms=2000,
        calls=20,
        timeout=60,
    )
    assert result.returncode == 0, result.describe()
    answered = [
        m for m in result.messages if m.first_line.startswith("SIP/2.0 200") and "INVITE" in m.text
    ]
    refused = [m for m in result.messages if m.first_line.startswith("SIP/2.0 402")]
    assert answered and len(answered) + len(refused) == 20
    sessions = wait_for_rows(
        ocs.dsn,
        "SELECT seconds, charged FROM sessions WHERE session_key LIKE 'twenty-%' "
        "AND closed_at IS NOT NULL",
    )
    assert len(sessions) == len(answered)
    charged = sum((Decimal(s["charged"]) for s in sessions), Decimal(0))
    # Every answered call was charged for what it lasted, and all of it was covered.
    assert all(s["seconds"] >= 1 for s in sessions)
    assert charged > 0
    assert balance(ocs.dsn, "short") == Decimal("0.004") - charged >= 0
