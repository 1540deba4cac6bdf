"""ocsd's RADIUS front end to end: the daemon as a subprocess on free loopback ports with a real
PostgreSQL, driven by radclient (FreeRADIUS's client) and by our own codec."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from support import ROOT, exchange, free_udp_port, run_ocs, write_config

from ocs.radius import codec

pytestmark = pytest.mark.integration

SECRET = codec.SharedSecret(b"testing123")
RADCLIENT = shutil.which("radclient")


@pytest.fixture
def radius_daemon(dsn: str, daemons, tmp_path: Path):
    """ocsd with the demo data on free ports; yields (auth port, acct port, daemon)."""
    auth, acct = free_udp_port(), free_udp_port()
    config = write_config(
        tmp_path / "ocsd.toml",
        f"""
[daemon]
lock_file = "{tmp_path / "ocsd.lock"}"
[metrics]
listen = "127.0.0.1:0"
[radius]
enabled = true
auth_listen = ["127.0.0.1:{auth}"]
acct_listen = ["127.0.0.1:{acct}"]
dictionary = "{ROOT / "dictionaries" / "dictionary"}"
[[radius.clients]]
address = "127.0.0.0/8"
secret = "testing123"
""",
    )
    daemon = daemons("--config", str(config), "--load-demo", dsn=dsn)
    daemon.wait_for("msg='ready")
    yield auth, acct, daemon
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.output()


def access(user: str, identifier: int = 1) -> bytes:
    return codec.encode_request(
        codec.ACCESS_REQUEST,
        identifier,
        SECRET,
        [codec.attr_str(codec.USER_NAME, user), (codec.NAS_IP_ADDRESS, b"\x7f\x00\x00\x01")],
    )


def accounting(status: int, user: str, session: str, seconds: int = 0, octets: int = 0) -> bytes:
    return codec.encode_request(
        codec.ACCOUNTING_REQUEST,
        status,
        SECRET,
        [
            codec.attr_str(codec.USER_NAME, user),
            codec.attr_int(codec.ACCT_STATUS_TYPE, status),
            codec.attr_str(codec.ACCT_SESSION_ID, session),
            (codec.NAS_IP_ADDRESS, b"\x7f\x00\x00\x01"),
            codec.attr_int(codec.ACCT_SESSION_TIME, seconds),
            codec.attr_int(codec.ACCT_OUTPUT_OCTETS, octets & 0xFFFFFFFF),
            codec.attr_int(codec.ACCT_OUTPUT_GIGAWORDS, octets >> 32),
        ],
        message_authenticator=False,
    )


DEMO = [
    ("prepaid-ok", codec.ACCESS_ACCEPT, 1000, None),
    ("prepaid-empty", codec.ACCESS_REJECT, None, b"insufficient credit"),
    ("postpaid", codec.ACCESS_ACCEPT, 3600, None),
    ("buffer", codec.ACCESS_REJECT, None, b"insufficient credit"),
    ("min-balance", codec.ACCESS_REJECT, None, b"insufficient credit"),
    ("temp-increase", codec.ACCESS_ACCEPT, 3600, None),
    ("temp-expired", codec.ACCESS_REJECT, None, b"insufficient credit"),
    ("blocked", codec.ACCESS_REJECT, None, b"account blocked"),
    ("nobody", codec.ACCESS_REJECT, None, b"unknown account"),
]


def test_every_demo_account_through_access_request(radius_daemon) -> None:
    auth, _acct, _ = radius_daemon
    for n, (user, code, timeout, message) in enumerate(DEMO):
        request = access(user, identifier=n)
        reply = exchange(auth, request)
        assert reply is not None, user
        assert reply.code == code, user
        # Authentic, with Message-Authenticator first.
        assert reply.attributes[0][0] == codec.MESSAGE_AUTHENTICATOR
        assert codec.verify_response_authenticator(reply, request[4:20], SECRET)
        assert codec.verify_message_authenticator(
            reply, SECRET, request_authenticator=request[4:20]
        )
        if timeout is not None:
            assert reply.get_int(codec.SESSION_TIMEOUT) == timeout, user
        else:
            assert reply.get(codec.REPLY_MESSAGE) == message, user


def test_start_stop_changes_the_balance_by_the_rated_amount_once(radius_daemon, dsn: str) -> None:
    auth, acct, _ = radius_daemon
    assert exchange(auth, access("postpaid")).code == codec.ACCESS_ACCEPT
    assert exchange(acct, accounting(1, "postpaid", "call-1")).code == codec.ACCOUNTING_RESPONSE
    # 61 s at 0.06/min billed per second = 0.061
    stop = accounting(2, "postpaid", "call-1", seconds=61)
    assert exchange(acct, stop).code == codec.ACCOUNTING_RESPONSE
    # The same Stop sent again (a new packet, as a NAS after a restart would): charged once.
    assert exchange(acct, accounting(2, "postpaid", "call-1", seconds=61)).code == (
        codec.ACCOUNTING_RESPONSE
    )
    shown = run_ocs("account", "show", "postpaid", dsn=dsn).out
    assert "balance             -50.061" in shown
    # The daemon's next decision sees the charge without waiting for its cache to expire.
    assert exchange(auth, access("prepaid-ok")).get_int(codec.SESSION_TIMEOUT) == 1000
    assert exchange(acct, accounting(1, "prepaid-ok", "call-2")).code == codec.ACCOUNTING_RESPONSE
    assert exchange(acct, accounting(3, "prepaid-ok", "call-2", seconds=100)) is not None
    assert exchange(acct, accounting(2, "prepaid-ok", "call-2", seconds=400)) is not None
    assert exchange(auth, access("prepaid-ok", 9)).get_int(codec.SESSION_TIMEOUT) == 600


def test_volume_is_counted_with_gigawords(radius_daemon, dsn: str) -> None:
    _auth, acct, _ = radius_daemon
    # Created while the daemon runs: unknown to its cache, found in the database on first use.
    assert run_ocs("tariff", "set", "data", "--per-mb", "0.001", dsn=dsn).code == 0
    assert (
        run_ocs(
            "account", "create", "isp-1", "--credit-limit", "10", "--tariff", "data", dsn=dsn
        ).code
        == 0
    )
    assert run_ocs("identity", "add", "isp-1", "user_name", "isp-1", dsn=dsn).code == 0
    five_gib = 5 * 2**30  # needs Acct-Output-Gigawords
    reply = exchange(acct, accounting(2, "isp-1", "data-1", octets=five_gib))
    assert reply is not None and reply.code == codec.ACCOUNTING_RESPONSE
    # 5368.70912 MB at 0.001 = 5.36870912, rounded up to the micro-unit.
    assert "balance             -5.36871" in run_ocs("account", "show", "isp-1", dsn=dsn).out


@pytest.mark.skipif(RADCLIENT is None and os.environ.get("CI") != "true", reason="no radclient")
def test_radclient_interop(radius_daemon) -> None:
    assert RADCLIENT is not None, "radclient (freeradius-utils) is required in CI"
    auth, acct, _ = radius_daemon

    def radclient(port: int, kind: str, attributes: str) -> str:
        done = subprocess.run(
            [RADCLIENT, "-x", "-r", "1", "-t", "2", f"127.0.0.1:{port}", kind, "testing123"],
            input=attributes,
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        return done.stdout + done.stderr

    out = radclient(
        auth,
        "auth",
        'User-Name = "prepaid-ok", NAS-IP-Address = 127.0.0.1, Message-Authenticator = 0x00',
    )
    assert "Received Access-Accept" in out and "Session-Timeout = 1000" in out
    out = radclient(
        auth,
        "auth",
        'User-Name = "blocked", NAS-IP-Address = 127.0.0.1, Message-Authenticator = 0x00',
    )
    assert "Received Access-Reject" in out and 'Reply-Message = "account blocked"' in out
    # Without Message-Authenticator the request is not answered (BlastRADIUS).
    out = radclient(auth, "auth", 'User-Name = "prepaid-ok", NAS-IP-Address = 127.0.0.1')
    assert "Received" not in out and "No reply" in out
    # Wrong secret: not answered either.
    done = subprocess.run(
        [RADCLIENT, "-r", "1", "-t", "2", f"127.0.0.1:{auth}", "auth", "wrong-secret"],
        input='User-Name = "prepaid-ok", Message-Authenticator = 0x00',
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert "Received" not in done.stdout + done.stderr
    out = radclient(
        acct,
        "acct",
        'User-Name = "postpaid", Acct-Status-Type = Start, Acct-Session-Id = "rc-1", '
        "NAS-IP-Address = 127.0.0.1",
    )
    assert "Received Accounting-Response" in out
    out = radclient(
        acct,
        "acct",
        'User-Name = "postpaid", Acct-Status-Type = Stop, Acct-Session-Id = "rc-1", '
        "Acct-Session-Time = 30, NAS-IP-Address = 127.0.0.1",
    )
    assert "Received Accounting-Response" in out


def test_accounting_on_closes_the_nas_sessions(radius_daemon, dsn: str) -> None:
    _auth, acct, _ = radius_daemon
    for session in ("on-1", "on-2"):
        assert exchange(acct, accounting(1, "postpaid", session)) is not None
    on = codec.encode_request(
        codec.ACCOUNTING_REQUEST,
        42,
        SECRET,
        [codec.attr_int(codec.ACCT_STATUS_TYPE, 7), (codec.NAS_IP_ADDRESS, b"\x7f\x00\x00\x01")],
        message_authenticator=False,
    )
    assert exchange(acct, on).code == codec.ACCOUNTING_RESPONSE

    import asyncio

    import asyncpg

    async def open_sessions() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval("SELECT count(*) FROM sessions WHERE closed_at IS NULL")
        finally:
            await conn.close()

    assert asyncio.run(open_sessions()) == 0


def test_garbage_does_not_harm_the_daemon(radius_daemon) -> None:
    auth, acct, daemon = radius_daemon
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for payload in (b"", b"\x01", os.urandom(19), os.urandom(300), access("x")[:25]):
            for port in (auth, acct):
                sock.sendto(payload, ("127.0.0.1", port))
    time.sleep(0.2)
    assert exchange(auth, access("prepaid-ok")).code == codec.ACCESS_ACCEPT
    assert daemon.proc.poll() is None


def test_two_workers_share_the_ports_and_stop_together(dsn: str, daemons, tmp_path: Path) -> None:
    auth, acct = free_udp_port(), free_udp_port()
    config = write_config(
        tmp_path / "workers.toml",
        f"""
[daemon]
lock_file = "{tmp_path / "ocsd.lock"}"
workers = 2
[metrics]
enabled = false
[radius]
enabled = true
auth_listen = ["127.0.0.1:{auth}"]
acct_listen = ["127.0.0.1:{acct}"]
[[radius.clients]]
address = "127.0.0.1"
secret = "testing123"
""",
    )
    supervisor = daemons("--config", str(config), "--load-demo", dsn=dsn, OCS_DAEMON__WORKERS="2")
    out = supervisor.wait_for("workers=2", timeout=60)
    assert out.count("msg='ready pid=") == 3  # two workers, then the supervisor
    # Requests from many source ports are spread over both workers; all are answered. The
    # workers share their holds (a local redis-server the supervisor started): postpaid's 50.00
    # covers 13 held grants of 3600 s; one process admits those 13, N workers at most one grant
    # each beyond them, the one it admitted before the others knew (README, "Several
    # instances"); without sharing, each worker would admit 13 (26).
    answers = [exchange(auth, access("postpaid", identifier=i)) for i in range(40)]
    assert all(a is not None for a in answers)
    assert {a.code for a in answers if a is not None} <= {codec.ACCESS_ACCEPT, codec.ACCESS_REJECT}
    assert 13 <= sum(a.code == codec.ACCESS_ACCEPT for a in answers if a is not None) <= 13 + 2
    assert "local redis started" in supervisor.output()
    # A second supervisor on the same lock is refused.
    second = daemons("--config", str(config), dsn=dsn, OCS_DAEMON__WORKERS="2")
    assert second.proc.wait(30) == 1
    assert "another ocsd is already running" in second.output()
    assert supervisor.stop() == 0
    assert supervisor.output().count("msg='stopped'") == 3
    assert "Traceback" not in supervisor.output()


def _running(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def test_workers_do_not_outlive_a_killed_supervisor(dsn: str, daemons, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "orphans.toml",
        f"""
[daemon]
lock_file = "{tmp_path / "ocsd.lock"}"
workers = 2
[metrics]
enabled = false
[radius]
enabled = true
auth_listen = ["127.0.0.1:{free_udp_port()}"]
acct_listen = ["127.0.0.1:{free_udp_port()}"]
[[radius.clients]]
address = "127.0.0.1"
secret = "testing123"
""",
    )
    supervisor = daemons("--config", str(config), dsn=dsn, OCS_DAEMON__WORKERS="2")
    out = supervisor.wait_for("workers=2")
    pids = [
        int(line.split("pid=")[1].split("'")[0])
        for line in out.splitlines()
        if "worker started" in line
    ]
    assert len(pids) == 2
    supervisor.kill()  # SIGKILL: it cannot forward anything
    deadline = time.monotonic() + 15
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in pids if _running(pid)]
        time.sleep(0.1)
    assert not alive, f"workers {alive} outlived their supervisor"
