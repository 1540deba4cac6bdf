"""ocs behind FreeRADIUS (Debian's freeradius 3.2): EAP ends at FreeRADIUS, the rest is ocs's.

FreeRADIUS runs docs/recipes/freeradius/radiusd.conf (ports and paths changed, a throwaway
certificate) and proxies to ocsd, which has the recipe's ocs-client.toml. radclient and
eapol_test (wpa_supplicant's EAP peer) play the NAS and the user: PAP and accounting pass
through; EAP-PEAP with MS-CHAPv2 inside is checked by ocs against the identity's NT hash, and
ocs's Session-Timeout reaches the outer Access-Accept.

With CI=true a missing freeradius, eapol_test, radclient or openssl is a failure, not a skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import ROOT, DaemonProcess, free_udp_port, run_ocs, write_config
from switches import RECIPES, Process, find, substitute
from test_kamailio import query

pytestmark = pytest.mark.integration

FREERADIUS = find("freeradius", "/usr/sbin/freeradius")
EAPOL_TEST = shutil.which("eapol_test")
RADCLIENT = shutil.which("radclient")
OPENSSL = shutil.which("openssl")
IN_CI = os.environ.get("CI") == "true"
RECIPE = RECIPES / "freeradius"
PASSWORD = "clientPass"


@dataclass
class Stack:
    port: int  # FreeRADIUS, NAS-facing: authentication
    acct_port: int  # and accounting
    ocsd: DaemonProcess
    freeradius: Process
    workdir: Path


@pytest.fixture
def stack(dsn: str, daemons, tmp_path: Path) -> Iterator[Stack]:
    tools = (FREERADIUS, EAPOL_TEST, RADCLIENT, OPENSSL)
    if None in tools:
        assert not IN_CI, "freeradius, eapol_test, radclient and openssl are required in CI"
        pytest.skip("freeradius, eapol_test, radclient or openssl missing")
    assert FREERADIUS is not None and OPENSSL is not None
    ocs_auth, ocs_acct = free_udp_port(), free_udp_port()
    nas_auth = free_udp_port()
    nas_acct = free_udp_port()
    client = substitute(
        (RECIPE / "ocs-client.toml").read_text(),
        {"127.0.0.1:11812": f"127.0.0.1:{ocs_auth}", "127.0.0.1:11813": f"127.0.0.1:{ocs_acct}"},
    )
    config = write_config(
        tmp_path / "ocsd.toml",
        f"""
[daemon]
lock_file = "{tmp_path / "ocsd.lock"}"
[metrics]
listen = "127.0.0.1:0"
[usage]
spool_file = "{tmp_path / "spool"}"
"""
        + client.replace(
            "[radius]\n", f'[radius]\ndictionary = "{ROOT / "dictionaries" / "dictionary"}"\n'
        ),
    )
    for args in (
        ("demo", "load"),
        ("identity", "add", "postpaid", "user_name", "pp", "--password", PASSWORD,
         "--password-storage", "nt-hash"),
    ):  # fmt: skip
        done = run_ocs(*args, dsn=dsn)
        assert done.code == 0, done.err
    ocsd = daemons("--config", str(config), dsn=dsn)
    ocsd.wait_for("msg='ready")

    raddb = tmp_path / "raddb"
    (raddb / "certs").mkdir(parents=True)
    (tmp_path / "run").mkdir()
    subprocess.run(
        [OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=radius.ocs.test", "-keyout", str(raddb / "certs" / "server.key"),
         "-out", str(raddb / "certs" / "server.pem")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    (raddb / "radiusd.conf").write_text(
        substitute(
            (RECIPE / "radiusd.conf").read_text(),
            {
                "raddbdir = /etc/freeradius/ocs": f"raddbdir = {raddb}",
                "run_dir = /var/run/freeradius": f"run_dir = {tmp_path / 'run'}",
                "logdir = /var/log/freeradius": f"logdir = {tmp_path}",
                "port = 11812": f"port = {ocs_auth}",
                "port = 11813": f"port = {ocs_acct}",
                "ipaddr = *\n\t\tport = 1812\n": f"ipaddr = 127.0.0.1\n\t\tport = {nas_auth}\n",
                "ipaddr = *\n\t\tport = 1813\n": f"ipaddr = 127.0.0.1\n\t\tport = {nas_acct}\n",
            },
        )
    )
    check = subprocess.run(
        [FREERADIUS, "-XC", "-d", str(raddb)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr
    freeradius = Process(
        [FREERADIUS, "-X", "-d", str(raddb)], tmp_path / "freeradius.log", tmp_path
    )
    deadline = time.monotonic() + 20
    while "Ready to process requests" not in freeradius.output():
        assert freeradius.proc.poll() is None, freeradius.output()[-3000:]
        assert time.monotonic() < deadline, freeradius.output()[-3000:]
        time.sleep(0.2)
    yield Stack(nas_auth, nas_acct, ocsd, freeradius, tmp_path)
    freeradius.stop()
    assert ocsd.stop() == 0
    assert "Traceback" not in ocsd.output()


def radclient(port: int, attributes: str, kind: str = "auth") -> str:
    assert RADCLIENT is not None
    done = subprocess.run(
        [RADCLIENT, "-x", "-r", "1", "-t", "5", f"127.0.0.1:{port}", kind, "testing123"],
        input=attributes,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.stdout + done.stderr


def eapol(stack: Stack, identity: str, password: str) -> tuple[int, str]:
    assert EAPOL_TEST is not None
    config = stack.workdir / f"peap-{identity}-{password}.conf"
    config.write_text(
        "network={\n\tkey_mgmt=WPA-EAP\n\teap=PEAP\n"
        f'\tidentity="{identity}"\n\tanonymous_identity="anonymous"\n'
        f'\tpassword="{password}"\n\tphase2="auth=MSCHAPV2"\n\tphase1="peapver=0"\n}}\n'
    )
    done = subprocess.run(
        [EAPOL_TEST, "-c", str(config), "-a", "127.0.0.1", "-p", str(stack.port),
         "-s", "testing123", "-r", "0", "-t", "20"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def test_pap_and_plain_credit_checks_pass_through(stack: Stack) -> None:
    ma = "Message-Authenticator = 0x00"
    out = radclient(stack.port, f'User-Name = "pp", User-Password = "{PASSWORD}", {ma}')
    assert "Received Access-Accept" in out and "Session-Timeout = 3600" in out, out
    out = radclient(stack.port, f'User-Name = "pp", User-Password = "nope", {ma}')
    assert "Received Access-Reject" in out and 'Reply-Message = "authentication failed"' in out
    out = radclient(stack.port, f'User-Name = "prepaid-empty", {ma}')
    assert "Received Access-Reject" in out and 'Reply-Message = "insufficient credit"' in out
    # ocs requires Message-Authenticator from FreeRADIUS, which always sends one.
    assert "dropped an Access-Request" not in stack.ocsd.output()


def test_accounting_passes_through(stack: Stack, dsn: str) -> None:
    port = stack.acct_port
    for status, seconds in (("Start", 0), ("Stop", 61)):
        out = radclient(
            port,
            f'User-Name = "postpaid", Acct-Status-Type = {status}, Acct-Session-Id = "fr-1", '
            f"Acct-Session-Time = {seconds}, NAS-IP-Address = 127.0.0.1",
            kind="acct",
        )
        assert "Received Accounting-Response" in out, out
    (row,) = query(
        dsn, "SELECT seconds, charged, closed_at FROM sessions WHERE session_key = 'fr-1'"
    )
    assert row["seconds"] == 61 and row["closed_at"] is not None


def test_eap_peap_mschapv2_is_checked_by_ocs(stack: Stack) -> None:
    code, out = eapol(stack, "pp", PASSWORD)
    assert code == 0 and "SUCCESS" in out, out[-4000:]
    # ocs's grant, from inside the tunnel, in the outer Access-Accept.
    assert "Attribute 27 (Session-Timeout)" in out
    log = stack.freeradius.output()
    assert "Session-Timeout = 3600" in log
    code, out = eapol(stack, "pp", "wrongPass")
    assert code != 0 and "FAILURE" in out
    assert "reason=bad_credential" in stack.ocsd.output() or "authentication failed" in out
