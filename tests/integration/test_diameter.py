"""ocsd's Diameter front end to end: the daemon as a subprocess on a free loopback port with a real
PostgreSQL and the demo data, driven by test peers speaking our own codec."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from diameter_peer import (
    Peer,
    ccr,
    cer,
    granted,
    mscc,
    mscc_answers,
    result_code,
    units,
)
from support import free_port, free_tcp_port, metric, run_ocs, write_config

from ocs.diameter import codec

pytestmark = pytest.mark.integration

INITIAL, UPDATE, TERMINATION = 1, 2, 3


def diameter_config(tmp_path: Path, port: int, extra: str = "") -> Path:
    return write_config(
        tmp_path / "ocsd.toml",
        f"""
[daemon]
lock_file = "{tmp_path / "ocsd.lock"}"
graceful_timeout_s = 5
[metrics]
listen = "127.0.0.1:0"
[diameter]
enabled = true
listen = ["127.0.0.1:{port}"]
origin_host = "ocs.localdomain"
origin_realm = "localdomain"
cer_timeout_s = 1.0
read_timeout_s = 1.0
max_connections = 16
{extra}
[[diameter.peers]]
origin_host = "*.localdomain"
address = "127.0.0.0/8"
""",
    )


@pytest.fixture
def diameter_daemon(dsn: str, daemons, tmp_path: Path):
    """ocsd with the demo data on a free port; yields (port, daemon)."""
    port = free_tcp_port()
    daemon = daemons("--config", str(diameter_config(tmp_path, port)), "--load-demo", dsn=dsn)
    daemon.wait_for("msg='ready")
    yield port, daemon
    assert daemon.stop() == 0
    out = daemon.output()
    assert "Traceback" not in out
    assert "msg='stopped'" in out


def run(coro):
    return asyncio.run(coro)


async def opened(port: int, host: str = "pcef.localdomain") -> Peer:
    peer = await Peer.connect("127.0.0.1", port)
    await peer.open(host)
    return peer


# (identity, Result-Code, CC-Time granted): the demo accounts of the foundation issue.
DEMO = [
    ("prepaid-ok", 2001, 1000),
    ("prepaid-empty", 4012, None),
    ("postpaid", 2001, 3600),
    ("buffer", 4012, None),
    ("min-balance", 4012, None),
    ("temp-increase", 2001, 3600),
    ("temp-expired", 4012, None),
    ("blocked", 4010, None),
    ("nobody", 5030, None),
]


def test_every_demo_account_through_ccr_initial(diameter_daemon) -> None:
    port, _ = diameter_daemon

    async def scenario() -> None:
        peer = await opened(port)
        for n, (user, code, seconds) in enumerate(DEMO):
            answer = await peer.request(ccr(f"pcef;demo;{n}", INITIAL, 0, user=user))
            assert result_code(answer) == code, user
            expected = {codec.AVP_CC_TIME: seconds} if seconds is not None else {}
            assert granted(answer) == expected, user
        # By Subscription-Id (E.164 of postpaid, with a +) and with MSCC per rating group.
        # (prepaid-ok's 1.00 is held by its session above: a second one would be refused.)
        answer = await peer.request(
            ccr(
                "pcef;demo;e164",
                INITIAL,
                0,
                e164="+15550000003",
                multiple=[mscc(10, requested=units(437, time_s=60)), mscc(20)],
            )
        )
        assert result_code(answer) == 2001
        assert [(m["rating_group"], m["result_code"]) for m in mscc_answers(answer)] == [
            (10, 2001),
            (20, 2001),
        ]
        assert mscc_answers(answer)[0]["granted"] == {codec.AVP_CC_TIME: 60}
        peer.close()

    run(scenario())


def test_initial_update_termination_change_the_balance_by_the_rated_usage(
    diameter_daemon, dsn: str
) -> None:
    port, _ = diameter_daemon

    async def scenario() -> None:
        peer = await opened(port)
        assert result_code(await peer.request(ccr("pcef;flow;1", INITIAL, 0, user="postpaid"))) == (
            2001
        )
        used = units(446, time_s=61)
        update = await peer.request(ccr("pcef;flow;1", UPDATE, 1, user="postpaid", used=used))
        assert result_code(update) == 2001
        assert granted(update) == {codec.AVP_CC_TIME: 3600}
        final = ccr("pcef;flow;1", TERMINATION, 2, user="postpaid", used=units(446, time_s=30))
        assert result_code(await peer.request(final)) == 2001
        # The same CCR-T again (a new message after a client restart): charged once.
        again = ccr("pcef;flow;1", TERMINATION, 2, user="postpaid", used=units(446, time_s=30))
        assert result_code(await peer.request(again)) == 2001
        # Its T-flagged retransmission: the cached answer.
        retransmit = ccr(
            "pcef;flow;1",
            TERMINATION,
            2,
            user="postpaid",
            used=units(446, time_s=30),
            end_to_end=codec.peek_header(final).end_to_end,
            retransmit=True,
        )
        assert result_code(await peer.request(retransmit)) == 2001
        # prepaid-ok: 1.00 buys 1000 s; after 400 s used, the next CCR-I gets 600 s at once.
        assert result_code(await peer.request(ccr("pcef;p;1", INITIAL, 0, user="prepaid-ok"))) == (
            2001
        )
        stop = ccr("pcef;p;1", TERMINATION, 1, user="prepaid-ok", used=units(446, time_s=400))
        assert result_code(await peer.request(stop)) == 2001
        next_one = await peer.request(ccr("pcef;p;2", INITIAL, 0, user="prepaid-ok"))
        assert granted(next_one) == {codec.AVP_CC_TIME: 600}
        # A session nobody started, named by a request without a subscriber: 5002.
        unknown = await peer.request(ccr("pcef;nobody;1", UPDATE, 1))
        assert result_code(unknown) == codec.DIAMETER_UNKNOWN_SESSION_ID
        peer.close()

    run(scenario())
    # 91 s at 0.06/min billed per second = 0.091
    assert "balance             -50.091" in run_ocs("account", "show", "postpaid", dsn=dsn).out
    assert "balance             0.60" in run_ocs("account", "show", "prepaid-ok", dsn=dsn).out


def test_a_retransmission_gets_the_kept_answer_only_within_the_configured_window(
    dsn: str, daemons, tmp_path: Path
) -> None:
    """diameter.duplicate_window_s = 1: a T-flagged CCR-T within the second gets the kept
    answer (counted as a duplicate); after it, the same retransmission is handled afresh, and
    the session ledger still charges its usage once."""
    port, metrics_port = free_tcp_port(), free_port()
    config = diameter_config(tmp_path, port, extra="duplicate_window_s = 1.0")
    config.write_text(
        config.read_text().replace(
            'listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{metrics_port}"', 1
        )
    )
    daemon = daemons("--config", str(config), "--load-demo", dsn=dsn)
    daemon.wait_for("msg='ready")

    def duplicates() -> float:
        return metric(metrics_port, "ocs_duplicate_requests_total", protocol="diameter")

    async def scenario() -> None:
        peer = await opened(port)
        initial = ccr("pcef;window;1", INITIAL, 0, user="postpaid")
        assert result_code(await peer.request(initial)) == 2001
        final = ccr("pcef;window;1", TERMINATION, 1, user="postpaid", used=units(446, time_s=60))
        assert result_code(await peer.request(final)) == 2001
        end_to_end = codec.peek_header(final).end_to_end

        def retransmission() -> bytes:
            return ccr(
                "pcef;window;1",
                TERMINATION,
                1,
                user="postpaid",
                used=units(446, time_s=60),
                end_to_end=end_to_end,
                retransmit=True,
            )

        assert result_code(await peer.request(retransmission())) == 2001
        assert duplicates() == 1
        await asyncio.sleep(1.5)
        assert result_code(await peer.request(retransmission())) == 2001
        assert duplicates() == 1  # past the window: not from the kept answers
        peer.close()

    run(scenario())
    # 60 s at 0.06/min billed per second, once.
    assert "balance             -50.06\n" in run_ocs("account", "show", "postpaid", dsn=dsn).out
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.output()


def test_unknown_peer_gets_3010(diameter_daemon) -> None:
    port, _ = diameter_daemon

    async def scenario() -> None:
        peer = await Peer.connect("127.0.0.1", port)
        answer = await peer.request(cer("stranger.example.org", "example.org"))
        assert result_code(answer) == codec.DIAMETER_UNKNOWN_PEER
        assert answer.header.is_error
        assert await peer.closed()

    run(scenario())


def test_garbage_and_hostile_peers_do_not_harm_others(diameter_daemon) -> None:
    port, daemon = diameter_daemon

    async def scenario() -> None:
        good = await opened(port, "good.localdomain")
        # Garbage from an open peer: answered (5015 / 5011) or closed.
        bad = await opened(port, "bad.localdomain")
        await bad.send(os.urandom(3000))
        assert await bad.closed()
        # Garbage before any CER.
        raw = await Peer.connect("127.0.0.1", port)
        await raw.send(b"\x01\x00\x00\x14" + os.urandom(16) + os.urandom(500))
        assert await raw.closed()
        # An idle flood beyond max_connections and a slow-loris peer.
        idle = [await Peer.connect("127.0.0.1", port) for _ in range(40)]
        slow = await opened(port, "slow.localdomain")
        request = ccr("slow;1", INITIAL, 0, user="postpaid")
        for octet in request[:10]:
            try:
                await slow.send(bytes([octet]))
            except ConnectionError:
                break
            await asyncio.sleep(0.2)
        assert await slow.closed(3.0)
        fresh = await opened(port, "fresh.localdomain")
        answer = await fresh.request(ccr("fresh;1", INITIAL, 0, user="postpaid"))
        assert result_code(answer) == 2001
        answer = await good.request(ccr("good;1", INITIAL, 0, user="postpaid"))
        assert result_code(answer) == 2001
        for peer in (*idle, fresh, good):
            peer.close()

    run(scenario())
    assert daemon.proc.poll() is None


def test_shutdown_sends_dpr(dsn: str, daemons, tmp_path: Path) -> None:
    port = free_tcp_port()
    daemon = daemons("--config", str(diameter_config(tmp_path, port)), "--load-demo", dsn=dsn)
    daemon.wait_for("msg='ready")

    async def scenario() -> None:
        peer = await opened(port)
        daemon.proc.send_signal(15)
        dpr = await peer.receive(10)
        assert dpr is not None and dpr.header.command_code == codec.CMD_DISCONNECT_PEER
        from diameter_peer import answer_to

        await peer.send(answer_to(dpr.raw))
        assert await peer.closed(10)

    run(scenario())
    assert daemon.proc.wait(20) == 0
    assert "Traceback" not in daemon.output()


def test_refund_account_credits_the_price_once(diameter_daemon, dsn: str) -> None:
    port, _ = diameter_daemon
    event = 4  # CCR-Event
    refund = 1  # Requested-Action REFUND_ACCOUNT

    async def scenario() -> None:
        peer = await opened(port)
        request = ccr(
            "pcef;refund;1",
            event,
            0,
            user="prepaid-empty",
            action=refund,
            requested=units(437, time_s=120),
        )
        assert result_code(await peer.request(request)) == 2001
        again = ccr(
            "pcef;refund;1",
            event,
            0,
            user="prepaid-empty",
            action=refund,
            requested=units(437, time_s=120),
        )
        assert result_code(await peer.request(again)) == 2001  # the same refund: credited once
        peer.close()

    run(scenario())
    # 120 s at 0.06/min = 0.12, credited back once
    assert "balance             0.12" in run_ocs("account", "show", "prepaid-empty", dsn=dsn).out


def test_a_restarted_daemon_carries_on_running_sessions(dsn: str, daemons, tmp_path: Path) -> None:
    port = free_tcp_port()
    config = str(diameter_config(tmp_path, port))
    first = daemons("--config", config, "--load-demo", dsn=dsn)
    first.wait_for("msg='ready")

    async def before() -> None:
        peer = await opened(port)
        assert result_code(await peer.request(ccr("pcef;r;1", INITIAL, 0, user="postpaid"))) == 2001
        update = ccr("pcef;r;1", UPDATE, 1, user="postpaid", used=units(446, time_s=60))
        assert result_code(await peer.request(update)) == 2001
        peer.close()

    run(before())
    assert first.stop() == 0
    second = daemons("--config", config, dsn=dsn)
    second.wait_for("msg='ready")

    async def after() -> None:
        peer = await opened(port)
        update = ccr("pcef;r;1", UPDATE, 2, user="postpaid", used=units(446, time_s=30))
        assert result_code(await peer.request(update)) == 2001
        final = ccr("pcef;r;1", TERMINATION, 3, user="postpaid", used=units(446, time_s=10))
        assert result_code(await peer.request(final)) == 2001
        peer.close()

    run(after())
    assert second.stop() == 0
    # 60 + 30 + 10 = 100 s at 0.06/min = 0.10: nothing lost across the restart, nothing twice
    assert "balance             -50.10" in run_ocs("account", "show", "postpaid", dsn=dsn).out


def test_ccr_t_during_a_database_outage_is_spooled_and_lands_once(daemons, tmp_path: Path) -> None:
    from ocs.store.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(tmp_path / "pg")
    dsn = server.start()
    try:
        assert run_ocs("demo", "load", dsn=dsn).code == 0
        port = free_tcp_port()
        extra = (
            f'[usage]\nspool_file = "{tmp_path / "ccr.spool"}"\n[cache]\nrefresh_interval_s = 0.2\n'
        )
        daemon = daemons("--config", str(diameter_config(tmp_path, port, extra)), dsn=dsn)
        daemon.wait_for("msg='ready")

        async def start() -> None:
            peer = await opened(port)
            initial = ccr("pcef;out;1", INITIAL, 0, user="postpaid")
            assert result_code(await peer.request(initial)) == 2001
            update = ccr("pcef;out;1", UPDATE, 1, user="postpaid", used=units(446, time_s=20))
            assert result_code(await peer.request(update)) == 2001
            peer.close()

        run(start())
        server.stop()  # PostgreSQL goes away
        daemon.wait_for("database unreachable", timeout=10)

        async def terminate() -> None:
            peer = await opened(port)
            final = ccr("pcef;out;1", TERMINATION, 2, user="postpaid", used=units(446, time_s=40))
            assert result_code(await peer.request(final)) == 2001  # spooled, then answered
            peer.close()

        run(terminate())
        assert (tmp_path / "ccr.spool").stat().st_size > 0
        server = EmbeddedPostgres(tmp_path / "pg")
        server.start()  # back: the sidecar replays the spool
        daemon.wait_for("database reachable again", timeout=20)
        import time

        deadline = time.monotonic() + 10
        while (tmp_path / "ccr.spool").stat().st_size and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (tmp_path / "ccr.spool").stat().st_size == 0
        # 20 s + 40 s = 60 s at 0.06/min = 0.06, charged exactly once
        assert "balance             -50.06" in run_ocs("account", "show", "postpaid", dsn=dsn).out
        assert daemon.stop() == 0
    finally:
        server.stop()
