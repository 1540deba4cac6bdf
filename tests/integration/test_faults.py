"""Faults under load, with counts (issue 14). Each test runs the daemon (RADIUS and Diameter on
free loopback ports) against a PostgreSQL of its own, drives it with ``bench/usage_load.py``
(sessions that start, report usage and end, retransmitted as a NAS or a PCEF would), breaks
something in the middle, and then compares the database's ledger with what the generator
reported and had acknowledged, to the micro-unit: 0 lost, 0 duplicated.

``OCS_FAULT_OUTAGE_S`` sets how long PostgreSQL stays away (10 s in ``make test``; 60 s in
``make test-faults``). Every load is bounded in sessions and time. The figures are printed
(``pytest -s``) for the notes.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from support import ROOT, DaemonProcess, free_port, run_ocs, write_config

sys.path.insert(0, str(ROOT / "bench"))
from ocs.store.embedded import EmbeddedPostgres
from usage_load import DiameterLoad, RadiusLoad, paced, seed_load_accounts

pytestmark = pytest.mark.integration

OUTAGE_S = float(os.environ.get("OCS_FAULT_OUTAGE_S", "10"))
LOAD_ACCOUNTS = 40


@dataclass
class Stack:
    """A PostgreSQL the test may stop, and the daemon's configuration and ports."""

    tmp: Path
    pg_data: Path
    server: EmbeddedPostgres
    dsn: str
    config: Path
    auth: int
    acct: int
    diameter: int
    metrics: int
    spool: Path
    users: list[str]

    def stop_postgres(self) -> None:
        self.server.stop()

    def start_postgres(self) -> None:
        self.server = EmbeddedPostgres(self.pg_data)
        self.dsn = self.server.start()

    def metric(self, name: str, **labels: str) -> float:
        return scrape(self.metrics, name, **labels)


def scrape(port: int, name: str, **labels: str) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except OSError:
        return float("nan")
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if match is None:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


def make_stack(tmp: Path, *, spool: Path | None = None, extra: str = "") -> Stack:
    pg_data = tmp / "pg"
    server = EmbeddedPostgres(pg_data)
    dsn = server.start()
    assert run_ocs("demo", "load", dsn=dsn).code == 0

    async def seed() -> list[str]:
        conn = await asyncpg.connect(dsn)
        try:
            return await seed_load_accounts(conn, LOAD_ACCOUNTS)
        finally:
            await conn.close()

    users = asyncio.run(seed())
    auth, acct = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    diameter, metrics = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
    spool = spool or tmp / "spool" / "usage.spool"
    config = write_config(
        tmp / "ocsd.toml",
        f"""
[daemon]
lock_file = "{tmp / "ocsd.lock"}"
graceful_timeout_s = 5
[metrics]
listen = "127.0.0.1:{metrics}"
[cache]
refresh_interval_s = 0.5
[usage]
spool_file = "{spool}"
[radius]
enabled = true
auth_listen = ["127.0.0.1:{auth}"]
acct_listen = ["127.0.0.1:{acct}"]
dictionary = "{ROOT / "dictionaries" / "dictionary"}"
[[radius.clients]]
address = "127.0.0.0/8"
secret = "testing123"
[diameter]
enabled = true
listen = ["127.0.0.1:{diameter}"]
[[diameter.peers]]
origin_host = "*.localdomain"
{extra}
""",
    )
    config.chmod(0o600)
    return Stack(tmp, pg_data, server, dsn, config, auth, acct, diameter, metrics, spool, users)


@pytest.fixture
def stack(tmp_path: Path):
    made = make_stack(tmp_path)
    yield made
    made.server.stop()


def loads(stack: Stack, *, give_up_s: float = 240.0) -> tuple[RadiusLoad, DiameterLoad]:
    radius = RadiusLoad(
        host="127.0.0.1",
        auth_port=stack.auth,
        acct_port=stack.acct,
        users=stack.users,
        seconds_per_session=37,
        hold_s=0.3,
        give_up_s=give_up_s,
    )
    diameter = DiameterLoad(
        host="127.0.0.1",
        port=stack.diameter,
        users=stack.users,
        seconds_per_session=53,
        hold_s=0.3,
        give_up_s=give_up_s,
    )
    return radius, diameter


async def run_loads(
    radius: RadiusLoad, diameter: DiameterLoad, *, rate: float, duration_s: float
) -> None:
    await radius.open()
    await diameter.open()
    try:
        await asyncio.gather(
            paced(radius, rate=rate, sessions=int(rate * duration_s) + 1, duration_s=duration_s),
            paced(diameter, rate=rate, sessions=int(rate * duration_s) + 1, duration_s=duration_s),
        )
    finally:
        radius.close()
        diameter.close()


async def ledger_of(dsn: str, run_id: str) -> dict[str, dict[str, int]]:
    conn = await asyncpg.connect(dsn)
    try:
        usage = await conn.fetch(
            """SELECT source, count(*) AS records, (sum(amount) * 1000000)::bigint AS micros
               FROM usage_records WHERE strpos(session_id, $1) > 0 GROUP BY source""",
            run_id,
        )
        # A key may have several generations, each a row of its own: sessions count by key.
        sessions = await conn.fetch(
            """SELECT source, count(DISTINCT session_key) AS sessions,
                      (sum(charged) * 1000000)::bigint AS micros,
                      count(*) FILTER (WHERE closed_at IS NULL) AS open,
                      count(*) FILTER (WHERE charged * 1000000 <> seconds * 1000) AS wrong
               FROM sessions WHERE strpos(session_key, $1) > 0 GROUP BY source""",
            run_id,
        )
    finally:
        await conn.close()
    out: dict[str, dict[str, int]] = {}
    for row in usage:
        out.setdefault(row["source"], {}).update(records=row["records"], usage_micros=row["micros"])
    for row in sessions:
        out.setdefault(row["source"], {}).update(
            sessions=row["sessions"],
            session_micros=row["micros"],
            open=row["open"],
            wrong=row["wrong"],
        )
    return out


def check_ledger(stack: Stack, radius: RadiusLoad, diameter: DiameterLoad) -> dict[str, Any]:
    """The database's ledger equals what was acknowledged, to the micro-unit."""
    assert radius.run_id == radius.run_id
    figures: dict[str, Any] = {}
    for source, load in (("radius", radius), ("diameter", diameter)):
        ledger = asyncio.run(ledger_of(stack.dsn, load.run_id)).get(source, {})
        sent = load.ledger
        figures[source] = {"generator": sent.summary(), "database": ledger}
        assert sent.sessions_done > 0
        assert ledger.get("usage_micros") == sent.acked_micros, (source, ledger, sent.summary())
        assert ledger.get("session_micros") == sent.acked_micros, (source, ledger)
        assert ledger.get("wrong") == 0, (source, ledger)  # no session charged twice
        assert ledger.get("open") == 0, (source, ledger)
        assert ledger.get("sessions") == sent.sessions_done, (source, ledger, sent.summary())
    return figures


def wait_spool_empty(stack: Stack, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not stack.spool.exists() or stack.spool.stat().st_size == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"the spool still holds {stack.spool.stat().st_size} bytes")


def report(name: str, figures: dict[str, Any]) -> None:
    print(f"\n{name}: {json.dumps(figures, sort_keys=True)}")


def no_traceback(daemon: DaemonProcess) -> None:
    out = daemon.output()
    assert "Traceback" not in out, out[-4000:]


# --------------------------------------------------------------------------------------------


async def _postgres_outage(
    stack: Stack, daemon: DaemonProcess
) -> tuple[RadiusLoad, DiameterLoad, dict[str, Any]]:
    radius, diameter = loads(stack)
    duration = OUTAGE_S + 8
    load = asyncio.create_task(run_loads(radius, diameter, rate=15, duration_s=duration))
    await asyncio.sleep(3)
    before = dict(radius.ledger.answers)
    await asyncio.to_thread(stack.stop_postgres)
    await asyncio.to_thread(daemon.wait_for, "database unreachable", 20)
    await asyncio.sleep(OUTAGE_S)
    during = {k: v - before.get(k, 0) for k, v in radius.ledger.answers.items()}
    spooled = stack.metric("ocs_spool_records_total", action="spooled")
    await asyncio.to_thread(stack.start_postgres)
    await asyncio.to_thread(daemon.wait_for, "database reachable again", 60)
    await load
    return radius, diameter, {"radius_answers_during_outage": during, "spooled": spooled}


def test_postgres_away_under_load_decisions_continue_and_the_ledger_is_exact(
    stack: Stack, daemons
) -> None:
    daemon = daemons("--config", str(stack.config), dsn=stack.dsn)
    daemon.wait_for("msg='ready")
    radius, diameter, outage = asyncio.run(_postgres_outage(stack, daemon))
    wait_spool_empty(stack)
    for load in (radius, diameter):
        assert load.ledger.sessions_failed == 0, load.ledger.summary()
        assert load.ledger.sessions_refused == 0, load.ledger.summary()
    answered = outage["radius_answers_during_outage"]
    assert answered.get("access_2", 0) > 0  # Access-Accept from the cache while PG was away
    assert answered.get("acct_5", 0) > 0  # accounting acknowledged (spooled) meanwhile
    assert stack.metric("ocs_spool_records_total", action="spooled") > 0
    spooled = stack.metric("ocs_spool_records_total", action="spooled")
    deadline = time.monotonic() + 10  # the counters are refreshed once a second
    while (replayed := stack.metric("ocs_spool_records_total", action="replayed")) < spooled:
        assert time.monotonic() < deadline, (replayed, spooled)
        time.sleep(0.2)
    assert replayed >= spooled > 0
    figures = check_ledger(stack, radius, diameter)
    figures["outage_s"] = OUTAGE_S
    figures["radius_answers_during_outage"] = answered
    figures["spool_records"] = {"spooled": spooled, "replayed": replayed}
    report("postgres outage", figures)
    assert daemon.stop() == 0
    no_traceback(daemon)


async def _kill_under_load(
    stack: Stack, daemons, first: DaemonProcess
) -> tuple[RadiusLoad, DiameterLoad, DaemonProcess, int]:
    radius, diameter = loads(stack)
    load = asyncio.create_task(run_loads(radius, diameter, rate=15, duration_s=14))
    await asyncio.sleep(2)
    await asyncio.to_thread(stack.stop_postgres)
    await asyncio.to_thread(first.wait_for, "database unreachable", 20)
    await asyncio.sleep(4)
    assert stack.spool.stat().st_size > 0
    first.proc.send_signal(signal.SIGKILL)  # kill -9 with a non-empty spool, under load
    await asyncio.to_thread(first.proc.wait, 10)
    held = stack.spool.stat().st_size
    await asyncio.sleep(2)
    await asyncio.to_thread(stack.start_postgres)
    second = daemons("--config", str(stack.config), dsn=stack.dsn)
    out = await asyncio.to_thread(second.wait_for, "msg='ready", 60)
    await load
    match = re.search(r"usage spool replayed at start records=(\d+)", out)
    assert match is not None, out
    assert held > 0
    return radius, diameter, second, int(match.group(1))


def test_kill_9_under_load_with_a_spool_then_restart_replays_it_once(stack: Stack, daemons) -> None:
    first = daemons("--config", str(stack.config), dsn=stack.dsn)
    first.wait_for("msg='ready")
    radius, diameter, second, replayed = asyncio.run(_kill_under_load(stack, daemons, first))
    wait_spool_empty(stack)
    assert replayed > 0
    assert radius.ledger.sessions_failed == 0, radius.ledger.summary()
    # A Diameter session admitted by the killed daemon and reported to the new one carries on
    # in the generation the store finds (or opens): none is lost, none answered 5002.
    unknown = diameter.ledger.answers.get("CCR-U_5002", 0)
    assert diameter.ledger.sessions_failed == 0, diameter.ledger.summary()
    figures = check_ledger(stack, radius, diameter)
    figures["replayed_at_start"] = replayed
    figures["diameter_sessions_unknown_after_restart"] = unknown
    report("kill -9 under load", figures)
    assert second.stop() == 0
    no_traceback(second)
    # A third start replays nothing more.
    third = daemons("--config", str(stack.config), dsn=stack.dsn)
    assert "usage spool replayed" not in third.wait_for("msg='ready")
    assert third.stop() == 0
    again = check_ledger(stack, radius, diameter)
    assert {k: again[k]["database"] for k in again} == {
        k: figures[k]["database"] for k in ("radius", "diameter")
    }


@pytest.fixture
def small_filesystem(tmp_path: Path):
    """A 64 KiB tmpfs of the test's own for the spool, unmounted afterwards."""
    mount = tmp_path / "spoolfs"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot mount a tmpfs for the spool test: {done.stderr}")
        pytest.skip(f"cannot mount a tmpfs (root needed): {done.stderr}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def _full_disk(stack: Stack, daemon: DaemonProcess) -> tuple[RadiusLoad, DiameterLoad]:
    radius, diameter = loads(stack)
    await asyncio.to_thread(stack.stop_postgres)
    await asyncio.to_thread(daemon.wait_for, "database unreachable", 20)
    load = asyncio.create_task(run_loads(radius, diameter, rate=15, duration_s=10))
    deadline = time.monotonic() + 30
    while stack.metric("ocs_spool_refused_total", reason="no_space") < 20:
        assert time.monotonic() < deadline, "the spool's file system never filled"
        await asyncio.sleep(0.2)
    await asyncio.sleep(2)
    await asyncio.to_thread(stack.start_postgres)
    await asyncio.to_thread(daemon.wait_for, "database reachable again", 60)
    await load
    return radius, diameter


def test_the_spool_file_system_full(tmp_path: Path, small_filesystem: Path, daemons) -> None:
    stack = make_stack(tmp_path, spool=small_filesystem / "usage.spool")
    try:
        daemon = daemons("--config", str(stack.config), dsn=stack.dsn)
        daemon.wait_for("msg='ready")
        radius, diameter = asyncio.run(_full_disk(stack, daemon))
        wait_spool_empty(stack)
        refused = stack.metric("ocs_spool_refused_total", reason="no_space")
        out = daemon.output()
        assert "spool refused: no_space" in out
        assert "No space left on device" in out
        # What could not be kept was not answered: the clients sent it again, and it landed
        # once PostgreSQL was back. Nothing acknowledged is missing.
        assert radius.ledger.retries + diameter.ledger.answers.get("3004_retried", 0) > 0
        for load in (radius, diameter):
            assert load.ledger.sessions_failed == 0, load.ledger.summary()
        figures = check_ledger(stack, radius, diameter)
        figures["spool_refused_no_space"] = refused
        figures["radius_drops_spool_full"] = stack.metric(
            "ocs_dropped_packets_total", protocol="radius", cause="spool_full"
        )
        figures["diameter_3004"] = stack.metric("ocs_diameter_answers_total", result_code="3004")
        report("spool file system full", figures)
        assert daemon.stop() == 0
        no_traceback(daemon)
    finally:
        stack.server.stop()


# --- Redis ------------------------------------------------------------------------------------


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Any]:
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server (Debian package redis-server) is required in CI")
        pytest.skip("no redis-server")
    sys.path.insert(0, str(Path(__file__).parent))
    from test_redis import RedisServer

    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisServer(binary, free_port(socket.SOCK_STREAM), workdir)
    server.start()
    yield server
    server.stop()


async def _redis_away(
    stack: Stack, daemon: DaemonProcess, redis: Any
) -> tuple[RadiusLoad, DiameterLoad, float]:
    radius, diameter = loads(stack)
    load = asyncio.create_task(run_loads(radius, diameter, rate=15, duration_s=12))
    await asyncio.sleep(2)
    await asyncio.to_thread(redis.stop)
    await asyncio.to_thread(daemon.wait_for, "redis unavailable", 20)
    down = stack.metric("ocs_redis_up")
    await asyncio.sleep(4)
    await asyncio.to_thread(redis.start)
    deadline = time.monotonic() + 20
    while daemon.output().count("redis sync up") < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    await load
    return radius, diameter, down


def test_redis_away_under_load_falls_back_to_local_holds(
    tmp_path: Path, redis: Any, daemons
) -> None:
    stack = make_stack(tmp_path, extra=f'[redis]\nurl = "{redis.url}"\nsync_interval_s = 0.05\n')
    try:
        daemon = daemons("--config", str(stack.config), dsn=stack.dsn)
        daemon.wait_for("redis sync up")
        radius, diameter, up_while_away = asyncio.run(_redis_away(stack, daemon, redis))
        assert up_while_away == 0
        assert stack.metric("ocs_redis_up") == 1
        out = daemon.output()
        assert out.count("redis unavailable, deciding from this instance's figures alone") == 1
        for load in (radius, diameter):
            assert load.ledger.sessions_failed == 0, load.ledger.summary()
            assert load.ledger.sessions_refused == 0, load.ledger.summary()
        figures = check_ledger(stack, radius, diameter)
        figures["redis_errors"] = stack.metric("ocs_redis_errors_total")
        report("redis away", figures)
        assert daemon.stop() == 0
        no_traceback(daemon)
    finally:
        stack.server.stop()


# --- the wall clock stepped -------------------------------------------------------------------

FAKETIME_LIBRARY = next(iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"))), None)
MONTH_END = datetime(2027, 1, 31, 23, 30, tzinfo=UTC)
THIS_MONTH = MONTH_END.strftime("%Y-%m")
NEXT_MONTH = (MONTH_END + timedelta(hours=1)).strftime("%Y-%m")


async def _clock_steps(
    stack: Stack, control: Path, offset_s: int
) -> tuple[RadiusLoad, DiameterLoad]:
    """Run the load while the daemon's wall clock is stepped +1 h (across the month's end),
    then -1 h back."""
    radius, diameter = loads(stack, give_up_s=60)
    load = asyncio.create_task(run_loads(radius, diameter, rate=12, duration_s=15))
    await asyncio.sleep(5)
    await asyncio.to_thread(control.write_text, f"{offset_s + 3600:+d}\n")
    await asyncio.sleep(5)
    await asyncio.to_thread(control.write_text, f"{offset_s:+d}\n")
    await load
    return radius, diameter


def test_wall_clock_stepped_an_hour_both_ways_under_load(stack: Stack, daemons) -> None:
    if FAKETIME_LIBRARY is None:
        if os.environ.get("CI") == "true":
            pytest.fail("libfaketime (Debian package faketime) is required in CI")
        pytest.skip("no libfaketime")
    if os.environ.get("FAKETIME"):
        # The suite itself runs under faketime (by hand: the dates runs take only 'dates'
        # tests): the outer FAKETIME would win over this test's own offset file.
        pytest.skip("this test fakes the daemon's clock itself; not under an outer faketime")
    control = stack.tmp / "faketime.rc"
    offset_s = int(MONTH_END.timestamp() - time.time())
    # Signed: once MONTH_END is in the past the offset is negative (libfaketime takes "-N").
    control.write_text(f"{offset_s:+d}\n")
    daemon = daemons(
        "--config",
        str(stack.config),
        dsn=stack.dsn,
        LD_PRELOAD=str(FAKETIME_LIBRARY),
        FAKETIME_TIMESTAMP_FILE=str(control),
        FAKETIME_NO_CACHE="1",
        FAKETIME_DONT_FAKE_MONOTONIC="1",
    )
    daemon.wait_for("msg='ready")
    # The daemon's own clock is the faked one.
    assert MONTH_END.strftime("%Y-%m-%dT%H:") in daemon.output()
    radius, diameter = asyncio.run(_clock_steps(stack, control, offset_s))
    # Monotonic timers unaffected: no session, hold or peer expired early or late.
    for load in (radius, diameter):
        assert load.ledger.sessions_failed == 0, load.ledger.summary()
        assert load.ledger.sessions_refused == 0, load.ledger.summary()
        assert load.ledger.retries == 0, load.ledger.summary()
    assert stack.metric("ocs_diameter_connections_closed_total", reason="watchdog") == 0
    deadline = time.monotonic() + 10
    while stack.metric("ocs_active_sessions") != 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stack.metric("ocs_active_sessions") == 0
    figures = check_ledger(stack, radius, diameter)

    # Usage months: each record carries the daemon's (stepped) clock: January before the
    # step, February during it, January again after it.
    async def months() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(stack.dsn)
        try:
            return await conn.fetch(
                """SELECT occurred_at, recorded_at,
                          extract(epoch FROM occurred_at - recorded_at)::int AS skew_s
                   FROM usage_records WHERE strpos(session_id, $1) > 0
                      OR strpos(session_id, $2) > 0""",
                radius.run_id,
                diameter.run_id,
            )
        finally:
            await conn.close()

    rows = asyncio.run(months())
    by_month: dict[str, int] = {}
    for row in rows:
        month = row["occurred_at"].astimezone(UTC).strftime("%Y-%m")
        by_month[month] = by_month.get(month, 0) + 1
        skew = row["skew_s"]
        stepped = abs(skew - offset_s - 3600) <= 5
        assert abs(skew - offset_s) <= 5 or stepped, skew
        assert month == (NEXT_MONTH if stepped else THIS_MONTH), (month, skew)
    assert by_month.get(THIS_MONTH, 0) > 0 and by_month.get(NEXT_MONTH, 0) > 0, by_month
    figures["usage_records_by_month"] = by_month
    report("wall clock stepped +1 h and -1 h", figures)
    assert daemon.stop() == 0
    no_traceback(daemon)
