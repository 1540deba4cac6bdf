"""One ledger of sessions, end to end: the edges where money was lost, doubled or overspent
(issue "One place decides, one ledger of sessions"), each a scenario against real daemons
(``ocsd`` subprocesses), a real PostgreSQL and, where instances share it, a real Redis.

After every scenario the ledger is checked to the micro-unit: each account's balance moved by
exactly the rated sum of the distinct usage sent, and what its sessions were charged equals
what its usage records say.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from diameter_peer import Peer, ccr, granted, result_code, units
from support import ROOT, free_port, run_ocs, write_config
from test_redis import REDIS_SERVER, RedisServer, require

from ocs.core import parse_amount
from ocs.diameter import codec as dcodec
from ocs.radius import codec
from ocs.store.embedded import EmbeddedPostgres

pytestmark = pytest.mark.integration

SECRET = codec.SharedSecret(b"testing123")
INITIAL, UPDATE, TERMINATION = 1, 2, 3
START, STOP, INTERIM = 1, 2, 3


@dataclass
class Radius:
    """A RADIUS client for one daemon, as a NAS at 127.0.0.1 would be."""

    auth: int
    acct: int
    _id: int = 0

    def _next(self) -> int:
        self._id = (self._id + 1) % 256
        return self._id

    def _exchange(self, port: int, packet: bytes, timeout: float = 3.0) -> codec.Packet | None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.sendto(packet, ("127.0.0.1", port))
            try:
                return codec.parse_packet(sock.recvfrom(4096)[0])
            except TimeoutError:
                return None

    def access(self, user: str) -> codec.Packet | None:
        packet = codec.encode_request(
            codec.ACCESS_REQUEST,
            self._next(),
            SECRET,
            [codec.attr_str(codec.USER_NAME, user), (codec.NAS_IP_ADDRESS, b"\x7f\x00\x00\x01")],
        )
        return self._exchange(self.auth, packet)

    def accounting(
        self,
        status: int,
        user: str,
        session: str,
        seconds: int = 0,
        *,
        octets: int = 0,
        event_time: datetime | None = None,
    ) -> codec.Packet | None:
        attributes = [
            codec.attr_str(codec.USER_NAME, user),
            codec.attr_int(codec.ACCT_STATUS_TYPE, status),
            codec.attr_str(codec.ACCT_SESSION_ID, session),
            (codec.NAS_IP_ADDRESS, b"\x7f\x00\x00\x01"),
            codec.attr_int(codec.ACCT_SESSION_TIME, seconds),
            codec.attr_int(codec.ACCT_OUTPUT_OCTETS, octets),
        ]
        if event_time is not None:
            attributes.append(codec.attr_int(codec.EVENT_TIMESTAMP, int(event_time.timestamp())))
        packet = codec.encode_request(
            codec.ACCOUNTING_REQUEST, self._next(), SECRET, attributes, message_authenticator=False
        )
        return self._exchange(self.acct, packet)


def reply_message(reply: codec.Packet) -> str:
    raw = reply.get(codec.REPLY_MESSAGE)
    return raw.decode() if raw is not None else ""


@dataclass
class Lab:
    """One daemon of a scenario (RADIUS and Diameter on free loopback ports)."""

    dsn: str
    daemons: object
    tmp_path: Path
    name: str = "ocs"
    extra: str = ""
    write_behind_s: float = 0.05
    radius: Radius = field(init=False)
    diameter_port: int = field(init=False)
    config: Path = field(init=False)

    def __post_init__(self) -> None:
        self.radius = Radius(free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM))
        self.diameter_port = free_port(socket.SOCK_STREAM)
        self.config = write_config(
            self.tmp_path / f"{self.name}.toml",
            f"""
[daemon]
lock_file = "{self.tmp_path / (self.name + ".lock")}"
graceful_timeout_s = 3.0
[metrics]
listen = "127.0.0.1:0"
[usage]
spool_file = "{self.tmp_path / (self.name + ".spool")}"
write_behind_s = {self.write_behind_s}
[radius]
enabled = true
auth_listen = ["127.0.0.1:{self.radius.auth}"]
acct_listen = ["127.0.0.1:{self.radius.acct}"]
dictionary = "{ROOT / "dictionaries" / "dictionary"}"
[[radius.clients]]
address = "127.0.0.1"
secret = "testing123"
[diameter]
enabled = true
listen = ["127.0.0.1:{self.diameter_port}"]
origin_host = "ocs.localdomain"
origin_realm = "localdomain"
[[diameter.peers]]
origin_host = "*.localdomain"
address = "127.0.0.0/8"
{self.extra}
""",
        )

    def start(self):
        daemon = self.daemons("--config", str(self.config), dsn=self.dsn)  # type: ignore[operator]
        daemon.wait_for("msg='ready")
        return daemon

    async def peer(self, host: str = "pcef.localdomain") -> Peer:
        peer = await Peer.connect("127.0.0.1", self.diameter_port)
        await peer.open(host)
        return peer


async def _fetch(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def sql(dsn: str, query: str, *args: object) -> list[asyncpg.Record]:
    return asyncio.run(_fetch(dsn, query, *args))


def balance(dsn: str, account: str) -> int:
    [row] = sql(dsn, "SELECT balance_micros FROM account_snapshots WHERE name = $1", account)
    return int(row["balance_micros"])


def assert_ledger(dsn: str, account: str, before: int, charged: int) -> None:
    """The balance moved by exactly ``charged``; the sessions' charges and the usage records
    agree with it, to the micro-unit."""
    assert before - balance(dsn, account) == charged
    [row] = sql(
        dsn,
        """SELECT
             (SELECT COALESCE(sum(amount), 0) * 1000000 FROM usage_records u
              WHERE u.account_id = a.id)::bigint AS records,
             (SELECT COALESCE(sum(charged), 0) * 1000000 FROM sessions s
              WHERE s.account_id = a.id)::bigint AS sessions
           FROM accounts a WHERE a.name = $1""",
        account,
    )
    assert row["records"] == row["sessions"] == charged, (account, dict(row), charged)


def money(text: str) -> int:
    return parse_amount(text)


@pytest.fixture
def lab(dsn: str, daemons, tmp_path: Path) -> Lab:
    run_ocs("demo", "load", dsn=dsn)
    return Lab(dsn, daemons, tmp_path)


# --- money lost -------------------------------------------------------------------------------


def test_1_an_acct_session_id_reused_by_the_nas_is_charged_in_full(lab: Lab) -> None:
    """300 s, then the NAS reuses the Acct-Session-Id (after a reboot) for 250 s: 550 s."""
    daemon = lab.start()
    before = balance(lab.dsn, "postpaid")
    nas = lab.radius
    for seconds in (300, 250):
        assert nas.access("postpaid").code == codec.ACCESS_ACCEPT
        assert nas.accounting(START, "postpaid", "reused-1").code == codec.ACCOUNTING_RESPONSE
        stop = nas.accounting(STOP, "postpaid", "reused-1", seconds=seconds)
        assert stop.code == codec.ACCOUNTING_RESPONSE
    assert_ledger(lab.dsn, "postpaid", before, money("0.55"))
    rows = sql(lab.dsn, "SELECT generation, seconds FROM sessions ORDER BY generation")
    assert [(r["generation"], r["seconds"]) for r in rows] == [(1, 300), (2, 250)]
    assert daemon.stop() == 0


@pytest.mark.parametrize("pause_s", [0.0, 1.5])
def test_1b_a_session_id_reused_while_open_across_a_kill_9_is_answered_and_charged(
    lab: Lab, pause_s: float
) -> None:
    """Start and an Interim-Update (100 s), the daemon killed, the NAS reboots and reuses the
    Acct-Session-Id with a new Start while the old session is still open in the store: the
    new Start is answered (the old generation closed as superseded, in the same transaction
    as the new one opens), and both are charged: 100 s + 250 s. The same whether the new
    Start comes at once or after the restarted daemon has written what it had to (CI once
    found the old generation closed before the Start came: a race, now gone)."""
    daemon = lab.start()
    before = balance(lab.dsn, "postpaid")
    nas = lab.radius
    assert nas.accounting(START, "postpaid", "reboot-1").code == codec.ACCOUNTING_RESPONSE
    interim = nas.accounting(INTERIM, "postpaid", "reboot-1", seconds=100)
    assert interim.code == codec.ACCOUNTING_RESPONSE
    daemon.kill()
    again = lab.start()
    time.sleep(pause_s)
    assert nas.accounting(START, "postpaid", "reboot-1").code == codec.ACCOUNTING_RESPONSE
    stop = nas.accounting(STOP, "postpaid", "reboot-1", seconds=250)
    assert stop.code == codec.ACCOUNTING_RESPONSE
    assert_ledger(lab.dsn, "postpaid", before, money("0.35"))
    rows = sql(
        lab.dsn,
        "SELECT generation, seconds, close_reason FROM sessions WHERE session_key = 'reboot-1' "
        "ORDER BY generation",
    )
    assert [tuple(r) for r in rows] == [(1, 100, "superseded"), (2, 250, "stop")]
    assert "sessions_one_open" not in again.output()
    assert again.stop() == 0


@pytest.mark.parametrize("pause_s", [0.0, 1.5])
def test_1c_a_session_without_a_hold_runs_on_across_a_kill_9(lab: Lab, pause_s: float) -> None:
    """An accounting-only session (a Start with no Access-Request before it: nothing held)
    is open when the daemon is killed. After the restart, whether the NAS speaks again at
    once or after the restarted daemon has written what it had to, the session is still the
    same one: its Interim and Stop are charged to it, once, and its own Stop closes it."""
    daemon = lab.start()
    before = balance(lab.dsn, "postpaid")
    nas = lab.radius
    assert nas.accounting(START, "postpaid", "quiet-1").code == codec.ACCOUNTING_RESPONSE
    assert nas.accounting(INTERIM, "postpaid", "quiet-1", seconds=100).code == (
        codec.ACCOUNTING_RESPONSE
    )
    daemon.kill()
    again = lab.start()
    time.sleep(pause_s)
    assert nas.accounting(INTERIM, "postpaid", "quiet-1", seconds=200).code == (
        codec.ACCOUNTING_RESPONSE
    )
    assert nas.accounting(STOP, "postpaid", "quiet-1", seconds=250).code == (
        codec.ACCOUNTING_RESPONSE
    )
    assert_ledger(lab.dsn, "postpaid", before, money("0.25"))
    rows = sql(
        lab.dsn,
        "SELECT generation, seconds, close_reason FROM sessions WHERE session_key = 'quiet-1'",
    )
    assert [tuple(r) for r in rows] == [(1, 250, "stop")]
    assert again.stop() == 0


def test_2_an_acct_session_id_reused_for_another_account_is_answered_and_charged(
    lab: Lab,
) -> None:
    daemon = lab.start()
    before = {a: balance(lab.dsn, a) for a in ("postpaid", "prepaid-ok")}
    nas = lab.radius
    for user, seconds in (("postpaid", 100), ("prepaid-ok", 50)):
        assert nas.accounting(START, user, "shared").code == codec.ACCOUNTING_RESPONSE
        assert nas.accounting(STOP, user, "shared", seconds).code == codec.ACCOUNTING_RESPONSE
    assert_ledger(lab.dsn, "postpaid", before["postpaid"], money("0.10"))
    assert_ledger(lab.dsn, "prepaid-ok", before["prepaid-ok"], money("0.05"))
    assert sql(lab.dsn, "SELECT count(*) AS n FROM unmatched_usage")[0]["n"] == 0
    assert "CheckViolation" not in daemon.output()
    assert daemon.stop() == 0


def test_3_a_session_id_reused_after_its_termination_is_charged_again(lab: Lab) -> None:
    daemon = lab.start()
    before = balance(lab.dsn, "postpaid")

    async def scenario() -> None:
        peer = await lab.peer()
        for _ in range(2):
            assert result_code(await peer.request(ccr("re;1", INITIAL, 0, user="postpaid"))) == (
                2001
            )
            update = ccr("re;1", UPDATE, 1, user="postpaid", used=units(446, time_s=200))
            assert result_code(await peer.request(update)) == 2001
            final = ccr("re;1", TERMINATION, 2, user="postpaid", used=units(446, time_s=100))
            assert result_code(await peer.request(final)) == 2001
        peer.close()

    asyncio.run(scenario())
    assert_ledger(lab.dsn, "postpaid", before, money("0.60"))
    assert daemon.stop() == 0


def test_3b_a_session_id_restarted_while_its_usage_is_in_the_store_is_charged_in_full(
    lab: Lab,
) -> None:
    """A PCEF restarts a Session-Id whose session reported 100 s (so its generation is open
    in the store) with a new CCR-Initial, reports 30 s (opening the new generation in the
    store while the old one is still open there) and ends it with 20 s more: every CCA 2001;
    the first generation closed as superseded with its 100 s, the second charged its 50 s."""
    daemon = lab.start()
    before = balance(lab.dsn, "postpaid")

    async def scenario() -> None:
        peer = await lab.peer()
        assert result_code(await peer.request(ccr("again;1", INITIAL, 0, user="postpaid"))) == (
            2001
        )
        update = ccr("again;1", UPDATE, 1, user="postpaid", used=units(446, time_s=100))
        assert result_code(await peer.request(update)) == 2001
        assert result_code(await peer.request(ccr("again;1", INITIAL, 0, user="postpaid"))) == (
            2001
        )
        update = ccr("again;1", UPDATE, 1, user="postpaid", used=units(446, time_s=30))
        assert result_code(await peer.request(update)) == 2001
        final = ccr("again;1", TERMINATION, 2, user="postpaid", used=units(446, time_s=20))
        assert result_code(await peer.request(final)) == 2001
        peer.close()

    asyncio.run(scenario())
    assert_ledger(lab.dsn, "postpaid", before, money("0.15"))
    rows = sql(
        lab.dsn,
        "SELECT generation, seconds, close_reason FROM sessions WHERE session_key = 'again;1' "
        "ORDER BY generation",
    )
    assert [tuple(r) for r in rows] == [(1, 100, "superseded"), (2, 50, "ccr_t")]
    assert daemon.stop() == 0


@pytest.mark.parametrize(
    ("ending", "expected"),  # expected: (its Result-Code, close_reason, closed_by_final)
    [
        # The Session-Id restarted for a subscriber without credit: the old session ends here.
        (ccr("gone;1", INITIAL, 0, user="prepaid-empty"), (4012, "superseded", False)),
        # A CCR-T reporting nothing more: the CCR-U before it carried all the usage.
        (ccr("gone;1", TERMINATION, 2, user="postpaid"), (2001, "final", True)),
    ],
    ids=["restarted-for-a-refused-subscriber", "ccr-t-without-usage"],
)
def test_3c_a_session_ended_while_its_start_is_queued_is_closed_in_the_store(
    dsn: str, daemons, tmp_path: Path, ending: bytes, expected: tuple[int, str, bool]
) -> None:
    """CCR-I and a CCR-U (100 s) whose report opened the generation in the store while the
    session's start was still queued behind its answer; then the session ends. Its
    generation must be closed in the store too, its hold released. Before, the queued start
    and the close were dropped together ("started and ended between two flushes"), leaving
    the generation open with its hold, to be resumed at the next start-up."""
    run_ocs("demo", "load", dsn=dsn)
    lab = Lab(dsn, daemons, tmp_path, write_behind_s=2.0)  # the start stays queued
    daemon = lab.start()
    before = balance(lab.dsn, "postpaid")

    async def scenario() -> None:
        peer = await lab.peer()
        assert result_code(await peer.request(ccr("gone;1", INITIAL, 0, user="postpaid"))) == (2001)
        update = ccr("gone;1", UPDATE, 1, user="postpaid", used=units(446, time_s=100))
        assert result_code(await peer.request(update)) == 2001
        assert result_code(await peer.request(ending)) == expected[0]
        peer.close()

    asyncio.run(scenario())
    query = (
        "SELECT generation, seconds, close_reason, closed_by_final, hold_micros FROM sessions "
        "WHERE session_key = 'gone;1' ORDER BY generation"
    )
    deadline = time.monotonic() + 15
    rows = sql(lab.dsn, query)
    while rows[0]["close_reason"] is None and time.monotonic() < deadline:
        time.sleep(0.2)  # the close is written behind (2 s here)
        rows = sql(lab.dsn, query)
    assert [tuple(r) for r in rows] == [(1, 100, *expected[1:], 0)]
    assert_ledger(lab.dsn, "postpaid", before, money("0.10"))
    assert daemon.stop() == 0


def test_4_tcc_never_ends_a_session_whose_grant_runs_and_late_usage_is_charged(
    dsn: str, daemons, tmp_path: Path
) -> None:
    run_ocs("demo", "load", dsn=dsn)
    lab = Lab(dsn, daemons, tmp_path)
    lab.config.write_text(
        lab.config.read_text().replace(
            'origin_realm = "localdomain"\n',
            'origin_realm = "localdomain"\ntcc_s = 1\nvalidity_time_s = 1800\n',
            1,
        )
    )
    daemon = lab.start()
    before = balance(dsn, "postpaid")

    async def scenario() -> None:
        peer = await lab.peer()
        assert result_code(await peer.request(ccr("tcc;1", INITIAL, 0, user="postpaid"))) == 2001
        await asyncio.sleep(2.5)  # Tcc has passed twice over; the grant (3600 s) has not
        update = ccr("tcc;1", UPDATE, 1, user="postpaid", used=units(446, time_s=200))
        assert result_code(await peer.request(update)) == 2001
        final = ccr("tcc;1", TERMINATION, 2, user="postpaid", used=units(446, time_s=100))
        assert result_code(await peer.request(final)) == 2001
        peer.close()

    asyncio.run(scenario())
    assert_ledger(dsn, "postpaid", before, money("0.30"))
    [row] = sql(dsn, "SELECT close_reason FROM sessions WHERE session_key = 'tcc;1'")
    assert row["close_reason"] == "ccr_t"  # closed by its own CCR-T, not by a timer
    assert daemon.stop() == 0


# --- money duplicated -------------------------------------------------------------------------


def test_5_an_old_update_retransmitted_after_many_others_is_charged_once(lab: Lab) -> None:
    daemon = lab.start()
    before = balance(lab.dsn, "postpaid")

    async def scenario() -> None:
        peer = await lab.peer()
        assert result_code(await peer.request(ccr("rt;1", INITIAL, 0, user="postpaid"))) == 2001
        first = ccr("rt;1", UPDATE, 1, user="postpaid", used=units(446, time_s=100))
        assert result_code(await peer.request(first)) == 2001
        for n in range(2, 11):
            later = ccr("rt;1", UPDATE, n, user="postpaid", used=units(446, time_s=10))
            assert result_code(await peer.request(later)) == 2001
        # CCR-U #1 again with the T flag, as a client that failed over sends it (its
        # End-to-End id is another one here, so no transport cache can answer it).
        again = ccr(
            "rt;1", UPDATE, 1, user="postpaid", used=units(446, time_s=100), retransmit=True
        )
        assert result_code(await peer.request(again)) == 2001
        peer.close()

    asyncio.run(scenario())
    assert_ledger(lab.dsn, "postpaid", before, money("0.19"))
    assert daemon.stop() == 0


def test_6_an_update_committed_before_kill_9_and_retransmitted_after_is_charged_once(
    lab: Lab,
) -> None:
    daemon = lab.start()
    before = balance(lab.dsn, "postpaid")
    update = ccr("k9;1", UPDATE, 1, user="postpaid", used=units(446, time_s=100), end_to_end=4711)

    async def before_crash() -> None:
        peer = await lab.peer()
        assert result_code(await peer.request(ccr("k9;1", INITIAL, 0, user="postpaid"))) == 2001
        assert result_code(await peer.request(update)) == 2001
        peer.close()

    asyncio.run(before_crash())
    daemon.kill()  # SIGKILL, right after the CCA
    again = lab.start()
    retransmitted = ccr(
        "k9;1",
        UPDATE,
        1,
        user="postpaid",
        used=units(446, time_s=100),
        end_to_end=4711,
        retransmit=True,
    )

    async def after_restart() -> None:
        peer = await lab.peer()
        assert result_code(await peer.request(retransmitted)) == 2001
        final = ccr("k9;1", TERMINATION, 2, user="postpaid", used=units(446, time_s=50))
        assert result_code(await peer.request(final)) == 2001
        peer.close()

    asyncio.run(after_restart())
    assert_ledger(lab.dsn, "postpaid", before, money("0.15"))
    assert again.stop() == 0


# --- overspend beyond the rules ---------------------------------------------------------------


def test_7_holds_of_running_sessions_survive_a_kill_9(lab: Lab) -> None:
    """prepaid-ok's 1.00 buys 1000 s: a RADIUS call holds all of it. Another account's
    Diameter session holds all of its credit too. After kill -9 and a restart, neither can
    start a second session until the first ends."""
    assert run_ocs("account", "create", "dia", "--tariff", "demo", dsn=lab.dsn).code == 0
    assert run_ocs("identity", "add", "dia", "user_name", "dia", dsn=lab.dsn).code == 0
    assert run_ocs("payment", "add", "dia", "1.00", dsn=lab.dsn).code == 0
    daemon = lab.start()
    nas = lab.radius
    assert nas.access("prepaid-ok").code == codec.ACCESS_ACCEPT
    assert nas.accounting(START, "prepaid-ok", "call-1").code == codec.ACCOUNTING_RESPONSE

    async def open_diameter() -> None:
        peer = await lab.peer()
        answer = await peer.request(ccr("hold;1", INITIAL, 0, user="dia"))
        assert result_code(answer) == 2001 and granted(answer) == {dcodec.AVP_CC_TIME: 1000}
        peer.close()

    asyncio.run(open_diameter())
    time.sleep(0.5)  # the Diameter session's hold is written behind its answer
    daemon.kill()
    again = lab.start()
    assert "holds rebuilt sessions=2" in again.output()
    refused = nas.access("prepaid-ok")
    assert refused.code == codec.ACCESS_REJECT
    assert reply_message(refused) == "insufficient credit: held by 1 running session"

    async def second_diameter() -> None:
        peer = await lab.peer()
        second = await peer.request(ccr("hold;2", INITIAL, 0, user="dia"))
        assert result_code(second) == dcodec.DIAMETER_CREDIT_LIMIT_REACHED
        # The first ends (its CCR-T reaches the restarted daemon): the hold is released.
        final = ccr("hold;1", TERMINATION, 1, user="dia", used=units(446, time_s=100))
        assert result_code(await peer.request(final)) == 2001
        third = await peer.request(ccr("hold;3", INITIAL, 0, user="dia"))
        assert result_code(third) == 2001 and granted(third) == {dcodec.AVP_CC_TIME: 900}
        peer.close()

    asyncio.run(second_diameter())
    assert nas.accounting(STOP, "prepaid-ok", "call-1", 60).code == codec.ACCOUNTING_RESPONSE
    assert nas.access("prepaid-ok").code == codec.ACCESS_ACCEPT
    assert again.stop() == 0


def test_8_a_volume_tariff_holds_volume_so_parallel_sessions_cannot_overspend(lab: Lab) -> None:
    run_ocs("tariff", "set", "data", "--per-mb", "0.01", dsn=lab.dsn)
    run_ocs("account", "create", "surfer", "--tariff", "data", dsn=lab.dsn)
    run_ocs("identity", "add", "surfer", "user_name", "surfer", dsn=lab.dsn)
    run_ocs("payment", "add", "surfer", "0.01", dsn=lab.dsn)  # buys 1 MB
    daemon = lab.start()
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        clients = [Radius(lab.radius.auth, lab.radius.acct, n * 20) for n in range(10)]
        replies = list(pool.map(lambda c: c.access("surfer"), clients))
    accepted = [r for r in replies if r is not None and r.code == codec.ACCESS_ACCEPT]
    assert len(accepted) == 1
    assert all(r is not None for r in replies)
    # The one admitted holds the price of the megabyte; it is the session's Session-Timeout
    # that the longest grant gives (3600 s), not a time the per-minute price would buy.
    assert accepted[0].get_int(codec.SESSION_TIMEOUT) == 3600
    assert daemon.stop() == 0


def test_9_a_client_clock_cannot_move_usage_into_a_closed_month(lab: Lab) -> None:
    run_ocs(
        "account",
        "create",
        "monthly",
        "--credit-limit",
        "10",
        "--limit-basis",
        "unbilled",
        "--tariff",
        "demo",
        dsn=lab.dsn,
    )
    run_ocs("identity", "add", "monthly", "user_name", "monthly", dsn=lab.dsn)
    daemon = lab.start()
    nas = lab.radius
    started = datetime.now(UTC)
    assert nas.accounting(START, "monthly", "m-1").code == codec.ACCOUNTING_RESPONSE
    # The Stop says it happened 40 days ago: last month, whenever this runs.
    liar = started - timedelta(days=40)
    stop = nas.accounting(STOP, "monthly", "m-1", seconds=600, event_time=liar)
    assert stop.code == codec.ACCOUNTING_RESPONSE
    [row] = sql(lab.dsn, "SELECT occurred_at FROM usage_records WHERE session_id = 'm-1'")
    assert row["occurred_at"] >= started - timedelta(seconds=5)
    [credit] = sql(
        lab.dsn,
        "SELECT (ocs_available_credit(id) * 1000000)::bigint AS c FROM accounts "
        "WHERE name = 'monthly'",
    )
    assert credit["c"] == money("9.40")  # this month's usage: 600 s at 0.06/min
    assert daemon.stop() == 0


def test_10_a_running_session_without_credit_continues_only_within_the_overdraft(
    dsn: str, daemons, tmp_path: Path
) -> None:
    run_ocs("demo", "load", dsn=dsn)
    run_ocs("account", "create", "thin", "--tariff", "demo", dsn=dsn)
    run_ocs("identity", "add", "thin", "user_name", "thin", dsn=dsn)
    run_ocs("payment", "add", "thin", "0.06", dsn=dsn)  # 60 s
    lab = Lab(dsn, daemons, tmp_path, extra="[grant]\noverdraft_s = 120\n")
    daemon = lab.start()
    before = balance(dsn, "thin")

    async def scenario() -> None:
        peer = await lab.peer()
        first = await peer.request(ccr("od;1", INITIAL, 0, user="thin"))
        assert granted(first) == {dcodec.AVP_CC_TIME: 60}
        spent = ccr("od;1", UPDATE, 1, user="thin", used=units(446, time_s=60))
        overdraft = await peer.request(spent)
        # The credit buys nothing now: the overdraft's 120 s, marked as the last grant.
        assert result_code(overdraft) == 2001
        assert granted(overdraft) == {dcodec.AVP_CC_TIME: 120}
        assert overdraft.find(dcodec.AVP_FINAL_UNIT_INDICATION) is not None
        more = ccr("od;1", UPDATE, 2, user="thin", used=units(446, time_s=120))
        refused = await peer.request(more)
        assert result_code(refused) == dcodec.DIAMETER_CREDIT_LIMIT_REACHED
        final = ccr("od;1", TERMINATION, 3, user="thin", used=units(446, time_s=0))
        assert result_code(await peer.request(final)) == 2001
        peer.close()

    asyncio.run(scenario())
    assert_ledger(dsn, "thin", before, money("0.18"))  # 180 s: never more than 60 + 120
    assert balance(dsn, "thin") == -money("0.12")
    assert daemon.stop() == 0


@pytest.fixture
def redis_url(tmp_path: Path):
    require(REDIS_SERVER, "redis-server")
    assert REDIS_SERVER is not None
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisServer(REDIS_SERVER, free_port(socket.SOCK_STREAM), workdir)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def redis_section(url: str) -> str:
    return f'[redis]\nurl = "{url}"\nsync_interval_s = 0.02\ninstance_ttl_s = 2.0\n'


def test_11_a_burst_split_across_two_instances_admits_what_one_would(
    dsn: str, daemons, tmp_path: Path, redis_url: str
) -> None:
    run_ocs("demo", "load", dsn=dsn)
    a = Lab(dsn, daemons, tmp_path, name="a", extra=redis_section(redis_url))
    b = Lab(dsn, daemons, tmp_path, name="b", extra=redis_section(redis_url))
    first, second = a.start(), b.start()
    time.sleep(0.5)  # both have heard of each other
    # prepaid-ok's 1.00 buys one grant of 1000 s; twenty setups at once, ten to each.
    clients = [
        Radius(lab.radius.auth, lab.radius.acct, n * 10) for lab in (a, b) for n in range(10)
    ]
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(lambda c: c.access("prepaid-ok"), clients))
    assert all(r is not None for r in replies)
    accepted = [r for r in replies if r.code == codec.ACCESS_ACCEPT]
    assert len(accepted) == 1, [r.get_int(codec.SESSION_TIMEOUT) for r in accepted]
    assert first.stop() == 0 and second.stop() == 0


def test_7b_with_redis_a_restarted_instance_publishes_its_holds_again(
    dsn: str, daemons, tmp_path: Path, redis_url: str
) -> None:
    run_ocs("demo", "load", dsn=dsn)
    a = Lab(dsn, daemons, tmp_path, name="a", extra=redis_section(redis_url))
    b = Lab(dsn, daemons, tmp_path, name="b", extra=redis_section(redis_url))
    first, second = a.start(), b.start()
    assert a.radius.access("prepaid-ok").code == codec.ACCESS_ACCEPT
    assert a.radius.accounting(START, "prepaid-ok", "r-1").code == codec.ACCOUNTING_RESPONSE
    time.sleep(0.3)
    assert b.radius.access("prepaid-ok").code == codec.ACCESS_REJECT  # A's hold, through Redis
    first.kill()
    again = a.start()  # same instance name: it rebuilds its sessions and publishes them
    assert "holds rebuilt sessions=1" in again.output()
    time.sleep(2.5)  # longer than instance_ttl_s: the crashed instance's own figures are gone
    refused = b.radius.access("prepaid-ok")
    assert refused.code == codec.ACCESS_REJECT
    assert reply_message(refused) == "insufficient credit: held by 1 running session"
    assert again.stop() == 0 and second.stop() == 0


def test_12_a_transfer_cannot_take_credit_a_running_session_holds(lab: Lab) -> None:
    run_ocs("account", "update", "prepaid-ok", "--transfers", "yes", dsn=lab.dsn)
    run_ocs("account", "create", "friend", "--transfers", "yes", dsn=lab.dsn)
    daemon = lab.start()

    async def start_call() -> Peer:
        peer = await lab.peer()
        answer = await peer.request(ccr("tx;1", INITIAL, 0, user="prepaid-ok"))
        assert granted(answer) == {dcodec.AVP_CC_TIME: 1000}  # the whole 1.00 held
        return peer

    loop = asyncio.new_event_loop()
    peer = loop.run_until_complete(start_call())
    time.sleep(0.5)  # written behind the answer
    refused = run_ocs("transfer", "prepaid-ok", "friend", "0.50", dsn=lab.dsn)
    assert refused.code == 1
    assert "held by 1 running sessions" in refused.err
    refund = run_ocs("refund", "add", "prepaid-ok", "0.50", "--operator", "x", dsn=lab.dsn)
    assert refund.code != 0
    final = ccr("tx;1", TERMINATION, 1, user="prepaid-ok", used=units(446, time_s=100))
    assert result_code(loop.run_until_complete(peer.request(final))) == 2001
    peer.close()
    loop.close()
    time.sleep(0.3)
    assert run_ocs("transfer", "prepaid-ok", "friend", "0.50", dsn=lab.dsn).code == 0
    assert daemon.stop() == 0


# --- found in review --------------------------------------------------------------------------


def test_a_session_without_a_stop_is_closed_when_its_grant_ends(
    dsn: str, daemons, tmp_path: Path
) -> None:
    run_ocs("demo", "load", dsn=dsn)
    lab = Lab(dsn, daemons, tmp_path, extra="[grant]\nmax_time_s = 2\nsession_margin_s = 0.5\n")
    daemon = lab.start()
    nas = lab.radius
    start_balance = balance(dsn, "postpaid")
    assert nas.access("postpaid").get_int(codec.SESSION_TIMEOUT) == 2
    assert nas.accounting(START, "postpaid", "lost-stop").code == codec.ACCOUNTING_RESPONSE
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        [row] = sql(dsn, "SELECT closed_at, close_reason, hold_micros FROM sessions")
        if row["closed_at"] is not None:
            break
        time.sleep(0.2)
    assert (row["close_reason"], row["hold_micros"]) == ("grant_ended", 0)
    # Charged the time it was granted (grant.unended_sessions = "charge_grant", the default).
    assert start_balance - balance(dsn, "postpaid") == money("0.002")
    # A Stop that comes after all is charged to it: only what goes beyond the grant.
    assert nas.accounting(STOP, "postpaid", "lost-stop", 2).code == codec.ACCOUNTING_RESPONSE
    assert nas.accounting(STOP, "postpaid", "lost-stop", 3).code == codec.ACCOUNTING_RESPONSE
    assert_ledger(dsn, "postpaid", start_balance, money("0.003"))
    assert daemon.stop() == 0


@pytest.fixture
def private_postgres(tmp_path: Path):
    """A PostgreSQL of this test's own (the test freezes it); yields (DSN, data directory)."""
    data = tmp_path / "pg"
    server = EmbeddedPostgres(data)
    dsn = server.start()
    try:
        yield dsn, data
    finally:
        server.stop()


def postgres_pids(data: Path) -> list[int]:
    """The postmaster (first line of postmaster.pid) and every process it started."""
    postmaster = int((data / "postmaster.pid").read_text().split()[0])
    pids = [postmaster]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == postmaster:
                pids.append(int(entry.name))
    return pids


def test_shutdown_is_bounded_while_the_database_hangs(
    private_postgres, daemons, tmp_path: Path
) -> None:
    """PostgreSQL stops answering (SIGSTOP) with a Stop in flight; SIGTERM still ends the
    daemon within its graceful timeout (no wait without a bound: the usage writer's
    connection and commit, the drain at exit)."""
    dsn, data = private_postgres
    run_ocs("demo", "load", dsn=dsn)
    lab = Lab(
        dsn,
        daemons,
        tmp_path,
        extra="[database]\ncommand_timeout_s = 30\n",
    )
    daemon = lab.start()
    assert lab.radius.accounting(START, "postpaid", "hang").code == codec.ACCOUNTING_RESPONSE
    pids = postgres_pids(data)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(lab.radius.accounting, STOP, "postpaid", "hang", 30)
            time.sleep(0.5)
            started = time.monotonic()
            code = daemon.stop(timeout=30)
            took = time.monotonic() - started
            pending.result()
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    assert code == 0
    assert took < 3.0 + 3.0, took  # graceful_timeout_s and a little
    assert "Traceback" not in daemon.output()
