"""Kamailio 5.6 (Debian) ims_charging + cdp in front of ocsd over Diameter Ro, SIPp as phones.

Kamailio runs docs/recipes/kamailio/kamailio-ro.cfg with ro-diameter.xml; ocsd has the
recipe's [diameter] section. The same calls as over RADIUS (test_kamailio.py): granted (2001),
charged from the CCR-Termination's Used-Service-Unit, refused with 4012 (→ 402), 4010 and 5030
(→ 403). ims_charging's CCRs need ocs's leniency: Accounting-Record-Type/-Number with the M
bit, Auth-Application-Id only inside Vendor-Specific-Application-Id, the caller as a SIP URI
with a port; each is counted in ocs_diameter_tolerances_total.

With CI=true a missing kamailio or sipp is a failure, not a skip.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from support import DaemonProcess, free_tcp_port, free_udp_port, run_ocs, write_config
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
from test_kamailio import balance, query

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        (KAMAILIO is None or SIPP is None) and not IN_CI, reason="kamailio or sipp missing"
    ),
]

RECIPE = RECIPES / "kamailio"
CALLERS = {
    "prepaid-ok": "15550000001",
    "prepaid-empty": "15550000002",
    "blocked": "15550000008",
}


@dataclass
class Ocs:
    diameter_port: int
    metrics_port: int
    daemon: DaemonProcess
    dsn: str

    def metric(self, name: str, **labels: str) -> float:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        wanted = [f'{k}="{v}"' for k, v in labels.items()]
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") and all(w in line for w in wanted):
                total += float(line.rpartition(" ")[2])
        return total


@dataclass
class Switch:
    sip_port: int
    gateway_port: int
    process: Process
    workdir: Path


@pytest.fixture
def ocs(dsn: str, daemons, tmp_path: Path) -> Iterator[Ocs]:
    assert KAMAILIO is not None and SIPP is not None, "kamailio and sipp are required in CI"
    diameter, metrics = free_tcp_port(), free_tcp_port()
    section = substitute(
        (RECIPE / "ocs-diameter.toml").read_text(),
        {'listen = ["127.0.0.1:3868"]': f'listen = ["127.0.0.1:{diameter}"]'},
    )
    config = write_config(
        tmp_path / "ocsd.toml",
        f"""
[daemon]
lock_file = "{tmp_path / "ocsd.lock"}"
[metrics]
listen = "127.0.0.1:{metrics}"
[usage]
spool_file = "{tmp_path / "spool"}"
"""
        + section,
    )
    assert run_ocs("demo", "load", dsn=dsn).code == 0
    # ims_charging names the caller by the From URI (with its port): sip_uri identities.
    for account, number in CALLERS.items():
        done = run_ocs("identity", "add", account, "sip_uri", f"sip:{number}@127.0.0.1", dsn=dsn)
        assert done.code == 0, done.err
    daemon = daemons("--config", str(config), dsn=dsn)
    daemon.wait_for("msg='ready")
    yield Ocs(diameter, metrics, daemon, dsn)
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.output()


@pytest.fixture
def switch(ocs: Ocs, tmp_path: Path) -> Iterator[Switch]:
    sip_port, gateway_port = free_udp_port(), free_udp_port()
    cdp = tmp_path / "ro-diameter.xml"
    cdp.write_text(
        substitute(
            (RECIPE / "ro-diameter.xml").read_text(),
            {
                'port="3868"': f'port="{ocs.diameter_port}"',
                'port="3869"': f'port="{free_tcp_port()}"',
            },
        )
    )
    config = substitute(
        (RECIPE / "kamailio-ro.cfg").read_text(),
        {
            "udp:127.0.0.1:5060": f"udp:127.0.0.1:{sip_port}",
            "sip:127.0.0.1:5080": f"sip:127.0.0.1:{gateway_port}",
            "/etc/kamailio/ro-diameter.xml": str(cdp),
        },
    )
    process = start_kamailio(config, tmp_path, sip_port, name="kamailio-ro")
    # cdp connects to ocs on its own timer: wait for the peer to be open.
    ocs.daemon.wait_for("peer open origin_host=kamailio.ocs.test", timeout=30)
    uas = start_uas("uas_answer.xml", gateway_port, tmp_path)
    yield Switch(sip_port, gateway_port, process, tmp_path)
    uas.stop()
    process.stop()
    assert critical_lines(process) == []


def test_a_funded_call_over_ro_is_granted_and_charged(ocs: Ocs, switch: Switch) -> None:
    before = balance(ocs.dsn, "prepaid-ok")
    result = call(
        "uac_call.xml",
        proxy_port=switch.sip_port,
        caller=CALLERS["prepaid-ok"],
        workdir=switch.workdir,
        name="ro-funded",
        talk_ms=3000,
    )
    assert result.returncode == 0, result.describe()
    assert "ocs granted 15550000001" in switch.process.output()
    # The CCR-Termination's Used-Service-Unit is charged (ims_charging rounds its own timer up).
    deadline = time.monotonic() + 10
    while True:
        rows = query(
            ocs.dsn,
            "SELECT seconds, charged FROM sessions WHERE source = 'diameter' "
            "AND closed_at IS NOT NULL",
        )
        if rows or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    (session,) = rows
    assert 3 <= session["seconds"] <= 5
    charged = Decimal(session["seconds"]) * Decimal("0.001")  # 0.06/min, billed per second
    assert session["charged"] == charged
    assert balance(ocs.dsn, "prepaid-ok") == before - charged
    # ims_charging's quirks were tolerated, and counted.
    for tolerance in ("base_avp", "auth_application_id_in_vsai", "sip_uri_normalized"):
        assert ocs.metric("ocs_diameter_tolerances_total", tolerance=tolerance) >= 2
    assert ocs.metric("ocs_diameter_answers_total", command="CCR-I", result_code="2001") == 1
    assert ocs.metric("ocs_diameter_answers_total", command="CCR-T", result_code="2001") == 1


@pytest.mark.parametrize(
    ("account", "result_code", "sip_code"),
    [("prepaid-empty", 4012, 402), ("blocked", 4010, 403), (None, 5030, 403)],
    ids=["no-credit", "blocked", "unknown"],
)
def test_a_refused_caller_over_ro_gets_the_mapped_code(
    ocs: Ocs, switch: Switch, account: str | None, result_code: int, sip_code: int
) -> None:
    caller = CALLERS[account] if account else "15559999999"
    result = call(
        "uac_refused.xml",
        proxy_port=switch.sip_port,
        caller=caller,
        workdir=switch.workdir,
        name=f"ro-refused-{result_code}",
        replacements={'response="EXPECTED"': f'response="{sip_code}"'},
    )
    assert result.returncode == 0, result.describe()
    assert result.first(f"SIP/2.0 {sip_code}", sent=False)
    assert f"Result-Code {result_code}" in switch.process.output()
    assert (
        ocs.metric("ocs_diameter_answers_total", command="CCR-I", result_code=str(result_code)) == 1
    )
