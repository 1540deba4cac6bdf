"""The cache and the sidecar against a real PostgreSQL: instant payments, outages, the spool.

Outage tests run their own PostgreSQL (not the session's shared one) so that they can stop it.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from support import ROOT, free_udp_port, run_ocs, write_config

from ocs.radius import codec
from ocs.store.embedded import EmbeddedPostgres

pytestmark = pytest.mark.integration

SECRET = codec.SharedSecret(b"testing123")


class Radius:
    """A tiny RADIUS client for one daemon."""

    def __init__(self, auth: int, acct: int) -> None:
        self.auth, self.acct = auth, acct
        self._id = 0

    def _exchange(self, port: int, packet: bytes, timeout: float) -> codec.Packet | None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.sendto(packet, ("127.0.0.1", port))
            try:
                return codec.parse_packet(sock.recvfrom(4096)[0])
            except TimeoutError:
                return None

    def access(self, user: str, timeout: float = 3.0) -> codec.Packet | None:
        self._id = (self._id + 1) % 256
        packet = codec.encode_request(
            codec.ACCESS_REQUEST, self._id, SECRET, [codec.attr_str(codec.USER_NAME, user)]
        )
        return self._exchange(self.auth, packet, timeout)

    def accounting(
        self, status: int, user: str, session: str, seconds: int = 0, timeout: float = 3.0
    ) -> codec.Packet | None:
        self._id = (self._id + 1) % 256
        packet = codec.encode_request(
            codec.ACCOUNTING_REQUEST,
            self._id,
            SECRET,
            [
                codec.attr_str(codec.USER_NAME, user),
                codec.attr_int(codec.ACCT_STATUS_TYPE, status),
                codec.attr_str(codec.ACCT_SESSION_ID, session),
                (codec.NAS_IP_ADDRESS, b"\x7f\x00\x00\x01"),
                codec.attr_int(codec.ACCT_SESSION_TIME, seconds),
            ],
            message_authenticator=False,
        )
        return self._exchange(self.acct, packet, timeout)


def daemon_config(tmp_path: Path, name: str, extra: str = "") -> tuple[Path, Radius]:
    auth, acct = free_udp_port(), free_udp_port()
    config = write_config(
        tmp_path / f"{name}.toml",
        f"""
[daemon]
lock_file = "{tmp_path / (name + ".lock")}"
graceful_timeout_s = 3.0
[metrics]
listen = "127.0.0.1:0"
[usage]
spool_file = "{tmp_path / (name + ".spool")}"
[radius]
enabled = true
auth_listen = ["127.0.0.1:{auth}"]
acct_listen = ["127.0.0.1:{acct}"]
dictionary = "{ROOT / "dictionaries" / "dictionary"}"
[[radius.clients]]
address = "127.0.0.1"
secret = "testing123"
{extra}
""",
    )
    return config, Radius(auth, acct)


def wait_until_admitted(client: Radius, user: str, limit_s: float = 2.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        reply = client.access(user, timeout=1.0)
        if reply is not None and reply.code == codec.ACCESS_ACCEPT:
            return time.monotonic() - started
        time.sleep(0.005)
    raise AssertionError(f"{user} still refused after {limit_s} s")


def test_a_payment_reaches_two_running_daemons_within_a_second(
    dsn: str, daemons, tmp_path: Path
) -> None:
    run_ocs("demo", "load", dsn=dsn)
    first_config, first = daemon_config(tmp_path, "a")
    second_config, second = daemon_config(tmp_path, "b")
    a = daemons("--config", str(first_config), dsn=dsn)
    b = daemons("--config", str(second_config), dsn=dsn)
    a.wait_for("msg='ready")
    b.wait_for("msg='ready")
    for client in (first, second):
        assert client.access("prepaid-empty").code == codec.ACCESS_REJECT

    # A payment through the CLI ...
    assert run_ocs("payment", "add", "prepaid-empty", "1.00", dsn=dsn).code == 0
    lags = [wait_until_admitted(client, "prepaid-empty") for client in (first, second)]
    assert max(lags) < 1.0, lags

    # ... and one written by another system with plain SQL.
    async def pay_with_sql() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                "INSERT INTO ledger_entries (account_id, kind, amount) "
                "SELECT id, 'payment', 2 FROM accounts WHERE name = 'buffer'"
            )
        finally:
            await conn.close()

    for client in (first, second):
        assert client.access("buffer").code == codec.ACCESS_REJECT
    asyncio.run(pay_with_sql())
    lags = [wait_until_admitted(client, "buffer") for client in (first, second)]
    assert max(lags) < 1.0, lags
    # A limit change reaches them too: blocked → active.
    assert run_ocs("account", "update", "blocked", "--status", "active", dsn=dsn).code == 0
    wait_until_admitted(first, "blocked")


def test_commit_to_changed_decision_latency(dsn: str, daemons, tmp_path: Path) -> None:
    """The p99 from a payment's commit to a changed decision, measured 30 times (figure printed
    for the notes; asserted loosely: the issue's aim is p99 under 100 ms)."""
    run_ocs("demo", "load", dsn=dsn)
    config, client = daemon_config(tmp_path, "lat")
    daemon = daemons("--config", str(config), dsn=dsn)
    daemon.wait_for("msg='ready")

    async def answer_is(code: int, limit_s: float = 5.0) -> None:
        deadline = time.monotonic() + limit_s
        reply = None
        while time.monotonic() < deadline:
            reply = await asyncio.to_thread(client.access, "prepaid-empty", 1.0)
            if reply is not None and reply.code == code:
                return
        last = (reply.code, reply.get(codec.REPLY_MESSAGE)) if reply else None
        raise AssertionError(f"no answer {code} within {limit_s} s (last {last}, {len(samples)})")

    samples: list[float] = []

    async def measure() -> list[float]:
        conn = await asyncpg.connect(dsn)
        # Large amounts: every admission holds its grant (3.60) for its accounting Start, and
        # requests are admitted until the adjustment arrives, so the payment must cover them.
        pay = (
            "INSERT INTO ledger_entries (account_id, kind, amount) SELECT id, $1, $2 "
            "FROM accounts WHERE name = 'prepaid-empty'"
        )
        try:
            for _ in range(30):
                await conn.execute(pay, "payment", 100_000)
                committed = time.monotonic()
                await answer_is(codec.ACCESS_ACCEPT)
                samples.append(time.monotonic() - committed)
                await conn.execute(pay, "adjustment", -100_000)  # refused again
                await answer_is(codec.ACCESS_REJECT)
        finally:
            await conn.close()
        return samples

    samples = sorted(asyncio.run(measure()))
    p50, p99 = statistics.median(samples), samples[int(len(samples) * 0.99) - 1]
    print(f"\ncommit -> changed decision: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
    assert p99 < 1.0  # the issue: "well within one second"; the aim (100 ms) is reported


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[tuple[str, EmbeddedPostgres]]:
    """A PostgreSQL of this test's own, which the test may stop and start."""
    data = tmp_path / "pg"
    server = EmbeddedPostgres(data)
    dsn = server.start()
    holder = {"server": server}
    yield dsn, holder  # type: ignore[misc]
    holder["server"].stop()


def _restart(holder: dict[str, EmbeddedPostgres], data: Path) -> str:
    server = EmbeddedPostgres(data)
    holder["server"] = server
    return server.start()


def _balance(dsn: str, name: str) -> str:
    return run_ocs("account", "show", name, dsn=dsn).out.split("balance", 1)[1].split()[0]


def test_database_outage_decisions_continue_and_usage_lands_once(
    own_postgres, daemons, tmp_path: Path
) -> None:
    dsn, holder = own_postgres
    run_ocs("demo", "load", dsn=dsn)
    config, client = daemon_config(tmp_path, "out", "[cache]\nrefresh_interval_s = 0.2\n")
    daemon = daemons("--config", str(config), dsn=dsn)
    daemon.wait_for("msg='ready")
    assert client.access("postpaid").code == codec.ACCESS_ACCEPT
    assert client.accounting(1, "postpaid", "outage-1").code == codec.ACCOUNTING_RESPONSE

    holder["server"].stop()  # PostgreSQL goes away mid-load
    daemon.wait_for("database unreachable", timeout=10)
    # Decisions continue from the cache (within cache.max_stale_s).
    assert client.access("postpaid").code == codec.ACCESS_ACCEPT
    assert client.access("prepaid-empty").code == codec.ACCESS_REJECT
    # Usage is acknowledged once it is in the spool; the same Stop again is acknowledged too.
    assert client.accounting(2, "postpaid", "outage-1", seconds=600).code == (
        codec.ACCOUNTING_RESPONSE
    )
    assert client.accounting(2, "postpaid", "outage-1", seconds=600).code == (
        codec.ACCOUNTING_RESPONSE
    )
    assert (tmp_path / "out.spool").stat().st_size > 0

    _restart(holder, tmp_path / "pg")  # PostgreSQL is back: the spool is replayed, once
    daemon.wait_for("database reachable again", timeout=20)
    deadline = time.monotonic() + 10
    while (tmp_path / "out.spool").stat().st_size and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (tmp_path / "out.spool").stat().st_size == 0
    assert _balance(dsn, "postpaid") == "-50.60"  # 600 s at 0.06/min, charged exactly once


@pytest.mark.parametrize(
    ("policy", "expected"), [("reject", codec.ACCESS_REJECT), ("accept", codec.ACCESS_ACCEPT)]
)
def test_past_max_stale_the_policy_decides(
    own_postgres, daemons, tmp_path: Path, policy: str, expected: int
) -> None:
    dsn, holder = own_postgres
    run_ocs("demo", "load", dsn=dsn)
    config, client = daemon_config(
        tmp_path,
        "stale",
        "[cache]\nrefresh_interval_s = 0.2\nttl_s = 0.5\nmax_stale_s = 1.5\n"
        f'on_stale = "{policy}"\n',
    )
    daemon = daemons("--config", str(config), dsn=dsn)
    daemon.wait_for("msg='ready")
    holder["server"].stop()
    daemon.wait_for("database unreachable", timeout=10)
    # Still within max_stale_s: the cached figures decide.
    assert client.access("postpaid").code == codec.ACCESS_ACCEPT
    time.sleep(2.0)
    reply = client.access("postpaid")
    assert reply is not None and reply.code == expected
    if expected == codec.ACCESS_REJECT:
        assert reply.get(codec.REPLY_MESSAGE) == b"credit data unavailable"
    _restart(holder, tmp_path / "pg")


def test_sigkill_with_a_spool_then_restart_replays_without_duplicates(
    own_postgres, daemons, tmp_path: Path
) -> None:
    dsn, holder = own_postgres
    run_ocs("demo", "load", dsn=dsn)
    config, client = daemon_config(tmp_path, "kill", "[cache]\nrefresh_interval_s = 0.2\n")
    daemon = daemons("--config", str(config), dsn=dsn)
    daemon.wait_for("msg='ready")
    assert client.accounting(1, "postpaid", "kill-1").code == codec.ACCOUNTING_RESPONSE
    holder["server"].stop()
    daemon.wait_for("database unreachable", timeout=10)
    for seconds in (60, 120):  # an interim update, then the stop
        status = 3 if seconds == 60 else 2
        assert client.accounting(status, "postpaid", "kill-1", seconds=seconds) is not None
    assert (tmp_path / "kill.spool").stat().st_size > 0
    daemon.kill()  # SIGKILL: nothing flushed beyond what was fsync'd before each answer
    _restart(holder, tmp_path / "pg")
    again = daemons("--config", str(config), dsn=dsn)
    out = again.wait_for("msg='ready")
    assert "usage spool replayed at start records=2" in out
    assert (tmp_path / "kill.spool").stat().st_size == 0
    assert _balance(dsn, "postpaid") == "-50.12"  # 120 s, once
    # A third start replays nothing more.
    assert again.stop(signal.SIGTERM) == 0
    third = daemons("--config", str(config), dsn=dsn)
    assert "usage spool replayed" not in third.wait_for("msg='ready")
    assert _balance(dsn, "postpaid") == "-50.12"
