"""Client profiles, passwords and Message-Authenticator "auto" end to end: ocsd with real
PostgreSQL, driven by radclient (FreeRADIUS's client, which decodes our replies with its own
dictionaries, so names and formats are checked by someone else's code).

One daemon per profile: radclient always sends from 127.0.0.1, and ocs picks a client's profile
by source address.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
from support import ROOT, DaemonProcess, free_udp_port, run_ocs, write_config

from ocs.radius import auth

pytestmark = pytest.mark.integration

RADCLIENT = shutil.which("radclient")
IN_CI = os.environ.get("CI") == "true"
SECRET = "testing123"

StartDaemon = Callable[..., tuple[int, int, DaemonProcess]]


@pytest.fixture
def start_ocsd(dsn: str, daemons, tmp_path: Path) -> Iterator[StartDaemon]:
    """Start ocsd with the demo data and one [[radius.clients]] entry for 127.0.0.1."""
    if RADCLIENT is None:
        assert not IN_CI, "radclient (freeradius-utils) is required in CI"
        pytest.skip("no radclient")
    started: list[DaemonProcess] = []

    def start(client: str, *, radius: str = "") -> tuple[int, int, DaemonProcess]:
        auth_port, acct_port = free_udp_port(), free_udp_port()
        n = len(started)
        config = write_config(
            tmp_path / f"ocsd{n}.toml",
            f"""
[daemon]
lock_file = "{tmp_path / f"ocsd{n}.lock"}"
[metrics]
listen = "127.0.0.1:0"
[usage]
spool_file = "{tmp_path / f"spool{n}"}"
[radius]
enabled = true
auth_listen = ["127.0.0.1:{auth_port}"]
acct_listen = ["127.0.0.1:{acct_port}"]
dictionary = "{ROOT / "dictionaries" / "dictionary"}"
{radius}
[[radius.clients]]
address = "127.0.0.1"
secret = "{SECRET}"
{client}
""",
        )
        daemon = daemons("--config", str(config), dsn=dsn)
        daemon.wait_for("msg='ready")
        started.append(daemon)
        return auth_port, acct_port, daemon

    assert run_ocs("demo", "load", dsn=dsn).code == 0
    yield start
    for daemon in started:
        assert daemon.stop() == 0
        assert "Traceback" not in daemon.output()


def radclient(port: int, attributes: str, *, kind: str = "auth") -> str:
    assert RADCLIENT is not None
    done = subprocess.run(
        [RADCLIENT, "-x", "-r", "1", "-t", "3", f"127.0.0.1:{port}", kind, SECRET],
        input=attributes,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    return done.stdout + done.stderr


def ocs(*args: str, dsn: str) -> str:
    done = run_ocs(*args, dsn=dsn)
    assert done.code == 0, done.err
    return done.out


MA = "Message-Authenticator = 0x00"


def test_cisco_gets_h323_credit_and_return_codes(start_ocsd: StartDaemon) -> None:
    port, _, _ = start_ocsd('profile = "cisco"', radius='currency = "EUR"')
    out = radclient(port, f'Calling-Station-Id = "15550000001", {MA}')
    assert "Received Access-Accept" in out, out
    for line in (
        "Session-Timeout = 1000",
        'h323-credit-time = "h323-credit-time=1000"',
        'h323-return-code = "h323-return-code=0"',
        'h323-credit-amount = "h323-credit-amount=1.00"',
        'h323-currency = "h323-currency=EUR"',
    ):
        assert line in out, out
    out = radclient(port, f'Calling-Station-Id = "15550000002", {MA}')
    assert "Received Access-Reject" in out
    assert 'h323-return-code = "h323-return-code=4"' in out  # zero balance
    assert 'Reply-Message = "insufficient credit"' in out
    out = radclient(port, f'Calling-Station-Id = "15550000008", {MA}')
    assert 'h323-return-code = "h323-return-code=7"' in out  # blocked: user denied


def test_mikrotik_gets_a_volume_quota_and_rate_limit_for_a_volume_rated_account(
    start_ocsd: StartDaemon, dsn: str
) -> None:
    ocs("tariff", "set", "data", "--per-mb", "0.001", dsn=dsn)
    ocs("account", "create", "isp-1", "--tariff", "data", "--rate-limit", "512/4096", dsn=dsn)
    ocs("payment", "add", "isp-1", "5.00", dsn=dsn)
    ocs("identity", "add", "isp-1", "user_name", "isp-1", dsn=dsn)
    assert "rate limit          512 up / 4096 down kbit/s" in ocs(
        "account", "show", "isp-1", dsn=dsn
    )
    port, _, _ = start_ocsd('profile = "mikrotik"\nidle_timeout_s = 600')
    out = radclient(port, f'User-Name = "isp-1", {MA}')
    assert "Received Access-Accept" in out, out
    # 5.00 at 0.001/MB buys 5,000 MB, capped by grant.max_volume_bytes (100 MB).
    for line in (
        "Mikrotik-Total-Limit = 100000000",
        'Mikrotik-Rate-Limit = "512k/4096k"',
        "Acct-Interim-Interval = 300",
        "Idle-Timeout = 600",
    ):
        assert line in out, out
    assert "Mikrotik-Total-Limit-Gigawords" not in out
    # A time-rated account without a rate limit gets neither.
    out = radclient(port, f'User-Name = "prepaid-ok", {MA}')
    assert "Received Access-Accept" in out
    assert "Mikrotik-Total-Limit" not in out and "Mikrotik-Rate-Limit" not in out
    # The limit removed: gone from the next reply (the sidecar applies it within a second).
    ocs("account", "update", "isp-1", "--rate-limit", "none", dsn=dsn)
    assert "rate limit" not in ocs("account", "show", "isp-1", dsn=dsn)


def test_chillispot_gets_octets_and_wispr_bandwidth(start_ocsd: StartDaemon, dsn: str) -> None:
    ocs("tariff", "set", "hotspot", "--per-mb", "0.01", dsn=dsn)
    ocs("account", "create", "guest", "--tariff", "hotspot", "--rate-limit", "1000/2000", dsn=dsn)
    ocs("payment", "add", "guest", "0.50", dsn=dsn)
    ocs("identity", "add", "guest", "user_name", "guest", dsn=dsn)
    port, _, _ = start_ocsd('profile = "chillispot"')
    out = radclient(port, f'User-Name = "guest", {MA}')
    assert "Received Access-Accept" in out, out
    for line in (
        "ChilliSpot-Max-Total-Octets = 50000000",  # 0.50 at 0.01/MB
        "WISPr-Bandwidth-Max-Up = 1000000",
        "WISPr-Bandwidth-Max-Down = 2000000",
        "Acct-Interim-Interval = 300",
    ):
        assert line in out, out


def test_message_authenticator_auto_with_radclient(start_ocsd: StartDaemon) -> None:
    port, _, daemon = start_ocsd("")  # the default: "auto"
    bare = 'User-Name = "prepaid-ok"'
    assert "Received Access-Accept" in radclient(port, bare)
    daemon.wait_for("sends Access-Request without Message-Authenticator; accepted")
    assert "Received Access-Reject" in radclient(port, f'User-Name = "nobody", {MA}')
    daemon.wait_for("it is required from this address from now on")
    out = radclient(port, bare)
    assert "Received" not in out and "No reply" in out
    log = daemon.wait_for("dropped an Access-Request without Message-Authenticator")
    assert "from client 127.0.0.1 (127.0.0.1)" in log and "level=warning" in log


# --- passwords --------------------------------------------------------------------------------

PASSWORD = "clientPass"


@pytest.mark.parametrize("storage", ["hash", "nt-hash", "cleartext"])
def test_pap(start_ocsd: StartDaemon, dsn: str, storage: str) -> None:
    ocs(
        "identity",
        "add",
        "prepaid-ok",
        "user_name",
        "alice",
        "--password",
        PASSWORD,
        "--password-storage",
        storage,
        dsn=dsn,
    )
    port, _, _ = start_ocsd("")
    out = radclient(port, f'User-Name = "alice", User-Password = "wrong", {MA}')
    assert "Received Access-Reject" in out and 'Reply-Message = "authentication failed"' in out
    out = radclient(port, f'User-Name = "alice", User-Password = "{PASSWORD}", {MA}')
    assert "Received Access-Accept" in out and "Session-Timeout = 1000" in out, out
    # Without any password: refused too.
    assert "Received Access-Reject" in radclient(port, f'User-Name = "alice", {MA}')
    # The demo identity without a credential keeps the credit-only check.
    assert "Received Access-Accept" in radclient(port, f'User-Name = "postpaid", {MA}')


def test_chap_needs_a_cleartext_password(start_ocsd: StartDaemon, dsn: str) -> None:
    ocs("identity", "add", "prepaid-ok", "user_name", "carol", "--password", PASSWORD,
        "--password-storage", "cleartext", dsn=dsn)  # fmt: skip
    ocs("identity", "add", "postpaid", "user_name", "dave", "--password", PASSWORD,
        "--password-storage", "nt-hash", dsn=dsn)  # fmt: skip
    port, _, _ = start_ocsd("")
    # radclient turns a plain CHAP-Password into the CHAP response (RFC 2865 §5.3).
    out = radclient(port, f'User-Name = "carol", CHAP-Password = "{PASSWORD}", {MA}')
    assert "Received Access-Accept" in out, out
    out = radclient(port, f'User-Name = "carol", CHAP-Password = "wrong", {MA}')
    assert "Received Access-Reject" in out
    # An NT hash cannot check CHAP: refused, never waved through.
    out = radclient(port, f'User-Name = "dave", CHAP-Password = "{PASSWORD}", {MA}')
    assert "Received Access-Reject" in out


def test_mschapv2_rfc2759_vector_gets_success_and_mppe_keys(
    start_ocsd: StartDaemon, dsn: str
) -> None:
    # RFC 2759 §9.2: user "User", password "clientPass".
    ocs("identity", "add", "prepaid-ok", "user_name", "User", "--password", PASSWORD,
        "--password-storage", "nt-hash", dsn=dsn)  # fmt: skip
    port, _, _ = start_ocsd("")
    challenge = "5B5D7C7D7B3F2F3E3C2C602132262628"
    peer = "21402324255E262A28295F2B3A337C7E"
    nt_response = "82309ECD8D708B5EA08FAA3981CD83544233114A3D85D6DF"
    response = "0100" + peer + "00" * 8 + nt_response  # ident 1, flags 0
    out = radclient(
        port,
        f'User-Name = "User", MS-CHAP-Challenge = 0x{challenge}, '
        f"MS-CHAP2-Response = 0x{response}, {MA}",
    )
    assert "Received Access-Accept" in out, out
    # Ident 1, then the RFC's authenticator response.
    success = b"S=407A5589115FD0D6209F510FE9C04566932CDA56".hex()
    assert f"MS-CHAP2-Success = 0x01{success}" in out
    assert "MS-MPPE-Send-Key = " in out and "MS-MPPE-Recv-Key = " in out
    assert "MS-MPPE-Encryption-Policy = Encryption-Allowed" in out
    wrong = response[:-2] + ("00" if response[-2:] != "00" else "01")
    out = radclient(
        port,
        f'User-Name = "User", MS-CHAP-Challenge = 0x{challenge}, '
        f"MS-CHAP2-Response = 0x{wrong}, {MA}",
    )
    assert "Received Access-Reject" in out
    assert "E=691" in out


def test_a_password_given_while_the_daemon_runs_applies_at_once(
    start_ocsd: StartDaemon, dsn: str
) -> None:
    port, _, _ = start_ocsd("")
    assert "Received Access-Accept" in radclient(port, f'User-Name = "prepaid-ok", {MA}')
    # A new identity with a password: unknown to the cache until the daemon hears of it.
    ocs("identity", "add", "postpaid", "user_name", "erin", "--password", PASSWORD, dsn=dsn)
    out = radclient(port, f'User-Name = "erin", User-Password = "nope", {MA}')
    assert "Received Access-Reject" in out
    out = radclient(port, f'User-Name = "erin", User-Password = "{PASSWORD}", {MA}')
    assert "Received Access-Accept" in out
    # An existing identity given a password: required from now on.
    ocs("identity", "add", "prepaid-ok", "user_name", "prepaid-ok", "--password", PASSWORD,
        dsn=dsn)  # fmt: skip
    deadline = time.monotonic() + 5
    while "Received Access-Reject" not in (
        out := radclient(port, f'User-Name = "prepaid-ok", {MA}')
    ):
        assert time.monotonic() < deadline, out
        time.sleep(0.2)


def test_stored_credentials_are_refused_when_malformed(dsn: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("INSERT INTO accounts (name) VALUES ('x')")
            for bad in ("plain", "nt$123", "cleartext$", "pbkdf2-sha256$x$y$z"):
                with pytest.raises(asyncpg.CheckViolationError):
                    await conn.execute(
                        "INSERT INTO account_identities (account_id, kind, value, credential) "
                        "SELECT id, 'user_name', 'x', $1 FROM accounts WHERE name = 'x'",
                        bad,
                    )
            for good in (
                auth.stored_credential("pw", auth.CredentialStorage.HASH, iterations=10),
                auth.stored_credential("pw", auth.CredentialStorage.NT_HASH),
                auth.stored_credential("pw", auth.CredentialStorage.CLEARTEXT),
            ):
                await conn.execute(
                    "INSERT INTO account_identities (account_id, kind, value, credential) "
                    "SELECT id, 'user_name', $2, $1 FROM accounts WHERE name = 'x'",
                    good,
                    good[:10],
                )
            with pytest.raises(asyncpg.CheckViolationError):  # both or neither
                await conn.execute("UPDATE accounts SET rate_limit_up_kbps = 5 WHERE name = 'x'")
        finally:
            await conn.close()

    asyncio.run(run())


def test_identity_add_password_usage_errors(dsn: str) -> None:
    assert run_ocs("demo", "load", dsn=dsn).code == 0
    done = run_ocs("identity", "add", "prepaid-ok", "user_name", "z", "--password", "", dsn=dsn)
    assert done.code == 2 and "empty password" in done.err
    done = run_ocs("account", "update", "prepaid-ok", "--rate-limit", "fast", dsn=dsn)
    assert done.code == 2 and "UP/DOWN" in done.err
