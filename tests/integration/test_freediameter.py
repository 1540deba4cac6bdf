"""Interop with freeDiameter (Debian ``freediameterd``): a real Diameter peer and relay.

freeDiameterd runs with a configuration generated here (loopback, free ports, a throwaway
self-signed certificate it insists on even without TLS). It connects to two ocsd instances
(ConnectPeer), completes CER/CEA with both and DWR/DWA both ways, then relays credit-control
requests from a small client of ours to ocsd and the answers back.

Each side resets its watchdog on any message it receives, so with equal timers the direction
of the next DWR is a coin toss. The timers are therefore set apart, one direction per
connection: freeDiameter's Tw is 14 s (12-16 s jittered); ocsd "ocs.localdomain" has 6 s
(4-8 s), so its DWR always goes first and freeDiameter answers it; ocsd "ocs2.localdomain"
has 30 s (28-32 s), so freeDiameter's DWR always goes first and that ocsd answers it. Only
well-formed traffic is sent to it (INTEROP-NOTES: it is fragile under bad input); hostile
peers are tested against ocsd directly in test_diameter.py. With CI=true a missing
freeDiameterd is a failure, not a skip.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from support import ROOT, free_tcp_port, write_config

sys.path.insert(0, str(ROOT / "tests" / "unit"))
from diameter_peer import Peer, ccr, cer, granted, result_code, units

from ocs.diameter import codec

pytestmark = pytest.mark.integration

FREEDIAMETERD = shutil.which("freeDiameterd")
EXTENSIONS = Path("/usr/lib/freeDiameter")
OPENSSL = shutil.which("openssl")
IN_CI = os.environ.get("CI") == "true"


def metric(port: int, name: str, **labels: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        found = series[len(name) :]
        if wanted:
            inside = found.strip("{}").split(",")
            if not all(f'{k}="{v}"' in inside for k, v in labels.items()):
                continue
        elif found:
            continue
        total += float(value)
    return total


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout} s")


@pytest.fixture
def freediameter_binaries() -> str:
    if FREEDIAMETERD is None or not (EXTENSIONS / "dict_dcca_3gpp.fdx").exists():
        if IN_CI:
            pytest.fail(
                "freeDiameterd with its extensions is required in CI (make test installs it)"
            )
        pytest.skip("freeDiameterd (Debian freediameterd, freediameter-extensions) not installed")
    if OPENSSL is None:
        pytest.fail("openssl is needed for freeDiameter's throwaway certificate")
    return FREEDIAMETERD


def freediameter_config(tmp_path: Path, fd_port: int, ocs_port: int, ocs2_port: int) -> Path:
    subprocess.run(
        [
            str(OPENSSL),
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=fd.relay.net",
            "-keyout",
            str(tmp_path / "fd.key"),
            "-out",
            str(tmp_path / "fd.pem"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    (tmp_path / "acl_wl.conf").write_text("ALLOW_OLD_TLS ALLOW_IPSEC *.clients.net\n")
    (tmp_path / "rt_default.conf").write_text('* : "ocs.localdomain" += 100 ;\n')
    extensions = "\n".join(
        f'LoadExtension = "{EXTENSIONS / name}";'
        for name in ("dict_nasreq.fdx", "dict_rfc5777.fdx", "dict_dcca.fdx", "dict_dcca_3gpp.fdx")
    )
    return write_config(
        tmp_path / "freeDiameter.conf",
        f"""
Identity = "fd.relay.net";
Realm = "relay.net";
Port = {fd_port};
SecPort = 0;
No_SCTP;
No_IPv6;
ListenOn = "127.0.0.1";
TwTimer = 14;
TcTimer = 6;
AppServThreads = 2;
TLS_Cred = "{tmp_path / "fd.pem"}", "{tmp_path / "fd.key"}";
TLS_CA = "{tmp_path / "fd.pem"}";
{extensions}
LoadExtension = "{EXTENSIONS / "rt_default.fdx"}" : "{tmp_path / "rt_default.conf"}";
LoadExtension = "{EXTENSIONS / "acl_wl.fdx"}" : "{tmp_path / "acl_wl.conf"}";
ConnectPeer = "ocs.localdomain" {{ ConnectTo = "127.0.0.1"; Port = {ocs_port}; No_TLS; }};
ConnectPeer = "ocs2.localdomain" {{ ConnectTo = "127.0.0.1"; Port = {ocs2_port}; No_TLS; }};
""",
    )


def ocsd_config(
    tmp_path: Path, name: str, *, origin_host: str, port: int, metrics_port: int, watchdog_s: int
) -> Path:
    return write_config(
        tmp_path / f"{name}.toml",
        f"""
[daemon]
lock_file = "{tmp_path / f"{name}.lock"}"
graceful_timeout_s = 5
[metrics]
listen = "127.0.0.1:{metrics_port}"
[diameter]
enabled = true
listen = ["127.0.0.1:{port}"]
origin_host = "{origin_host}"
origin_realm = "localdomain"
watchdog_s = {watchdog_s}
[[diameter.peers]]
origin_host = "fd.relay.net"
realm = "relay.net"
address = "127.0.0.1"
""",
    )


def test_freediameter_peer_and_relay(
    freediameter_binaries: str, dsn: str, daemons, tmp_path: Path
) -> None:
    ocs_port, ocs2_port, fd_port = free_tcp_port(), free_tcp_port(), free_tcp_port()
    metrics_port, metrics2_port = free_tcp_port(), free_tcp_port()
    config = ocsd_config(
        tmp_path,
        "ocsd",
        origin_host="ocs.localdomain",
        port=ocs_port,
        metrics_port=metrics_port,
        watchdog_s=6,
    )
    config2 = ocsd_config(
        tmp_path,
        "ocsd2",
        origin_host="ocs2.localdomain",
        port=ocs2_port,
        metrics_port=metrics2_port,
        watchdog_s=30,
    )
    daemon = daemons("--config", str(config), "--load-demo", dsn=dsn)
    daemon.wait_for("msg='ready")
    # The second instance starts once the first has migrated and loaded the demo data.
    daemon2 = daemons("--config", str(config2), dsn=dsn)
    daemon2.wait_for("msg='ready")
    fd_log = (tmp_path / "freediameter.log").open("w")
    fd = subprocess.Popen(
        [
            freediameter_binaries,
            "-c",
            str(freediameter_config(tmp_path, fd_port, ocs_port, ocs2_port)),
        ],
        stdout=fd_log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    try:
        # freeDiameter connects to both and completes the capabilities exchanges.
        daemon.wait_for("peer open origin_host=fd.relay.net", timeout=30)
        daemon2.wait_for("peer open origin_host=fd.relay.net", timeout=30)
        # Our DWR answered by freeDiameter (ocsd's timer is the shorter one) ...
        wait_until(
            lambda: (
                metric(
                    metrics_port,
                    "ocs_diameter_peer_answers_total",
                    command="DWA",
                    result_code="2001",
                )
                >= 1
            ),
            25,
            "a DWR from ocsd answered by freeDiameter",
        )
        # ... and freeDiameter's DWR answered by us (freeDiameter's timer is the shorter one).
        wait_until(
            lambda: metric(metrics2_port, "ocs_diameter_answers_total", command="DWR") >= 1,
            25,
            "a DWR from freeDiameter answered by ocsd",
        )

        async def relay() -> None:
            client = await Peer.connect("127.0.0.1", fd_port)
            cea = await client.request(cer("client.clients.net", "clients.net"))
            assert result_code(cea) == 2001, cea
            for n, (user, code, seconds) in enumerate(
                [("prepaid-ok", 2001, 1000), ("blocked", 4010, None), ("nobody", 5030, None)]
            ):
                answer = await client.request(
                    ccr(
                        f"client.clients.net;relay;{n}",
                        1,
                        0,
                        user=user,
                        host="client.clients.net",
                        realm="clients.net",
                    ),
                    wait_s=10,
                )
                assert answer.header.command_code == codec.CMD_CREDIT_CONTROL
                assert result_code(answer) == code, user
                assert answer.find(codec.AVP_ORIGIN_HOST).as_identity() == "ocs.localdomain"
                expected = {codec.AVP_CC_TIME: seconds} if seconds is not None else {}
                assert granted(answer) == expected
            final = ccr(
                "client.clients.net;relay;0",
                3,
                1,
                user="prepaid-ok",
                host="client.clients.net",
                realm="clients.net",
                used=units(446, time_s=60),
            )
            assert result_code(await client.request(final, wait_s=10)) == 2001
            dpa = await client.request(
                codec.encode_message(
                    command_code=codec.CMD_DISCONNECT_PEER,
                    application_id=0,
                    hop_by_hop=99,
                    end_to_end=99,
                    avps=[
                        codec.encode_avp(codec.AVP_ORIGIN_HOST, b"client.clients.net"),
                        codec.encode_avp(codec.AVP_ORIGIN_REALM, b"clients.net"),
                        codec.avp_u32(codec.AVP_DISCONNECT_CAUSE, 0),
                    ],
                    flags=codec.FLAG_REQUEST,
                )
            )
            assert result_code(dpa) == 2001
            client.close()

        asyncio.run(relay())
        assert fd.poll() is None, "freeDiameterd exited"
        assert metric(metrics_port, "ocs_diameter_answers_total", command="CCR-I") == 3
    finally:
        if fd.poll() is None:
            fd.send_signal(signal.SIGTERM)
            try:
                fd.wait(15)
            except subprocess.TimeoutExpired:
                fd.kill()
                fd.wait(5)
        fd_log.close()
    for instance in (daemon, daemon2):
        assert instance.stop() == 0
        assert "Traceback" not in instance.output()
