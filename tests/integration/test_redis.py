"""Several instances sharing session counts and reservations through a real redis-server.

Each test starts its own ``redis-server`` on a free loopback port (no persistence) and stops it by
pid at the end. In one process: two SessionBook + RedisSync pairs stand for two instances. End to
end: two ``ocsd`` daemons on one PostgreSQL and one Redis, driven over RADIUS. Two tests start a
three-master Redis Cluster instead (three ``redis-server`` and ``redis-cli --cluster create``).

With ``CI=true`` a missing redis-server (or redis-cli) fails these tests; elsewhere they are
skipped.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from support import (
    ROOT,
    exchange,
    free_tcp_port,
    free_udp_port,
    real_clock_env,
    run_ocs,
    write_config,
)

from ocs.charging.cache import AccountCache
from ocs.charging.pipeline import CachePolicy, Charging, UsageOutcome, UsageReport
from ocs.charging.sessions import SessionBook
from ocs.core import AccountSnapshot, GrantLimits, Tariff, parse_amount
from ocs.core.identity import IdentityKind
from ocs.core.model import RefusalReason
from ocs.metrics import Metrics
from ocs.radius import codec
from ocs.store.redis_sync import KeyLayout, RedisSync

pytestmark = pytest.mark.integration

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")
INTERVAL_S = 0.02
INSTANCE_TTL_S = 1.0
ACCOUNT = 42


def free_cluster_port() -> int:
    """A free loopback port whose cluster bus port (+10000) is free too."""
    for _ in range(100):
        port = random.randrange(20_000, 50_000)
        try:
            with socket.socket() as one, socket.socket() as bus:
                one.bind(("127.0.0.1", port))
                bus.bind(("127.0.0.1", port + 10_000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisServer:
    """``redis-server`` as a subprocess on a fixed loopback port; can be stopped and restarted."""

    def __init__(self, binary: str, port: int, workdir: Path, extra: tuple[str, ...] = ()) -> None:
        self.binary = binary
        self.port = port
        self.workdir = workdir
        self.extra = extra
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=real_clock_env(),
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("redis-server did not answer PING within 10 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


def require(binary: str | None, name: str) -> str:
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} (Debian package redis-server) is required in CI")
        pytest.skip(f"no {name}")
    return binary


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    require(REDIS_SERVER, "redis-server")
    assert REDIS_SERVER is not None
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisServer(REDIS_SERVER, free_tcp_port(), workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def eventually(
    check: Callable[[], bool], timeout_s: float = 5.0, what: str = "condition"
) -> float:
    """Wait until ``check()`` holds; returns how long it took."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not check():
        if loop.time() - started > timeout_s:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        await asyncio.sleep(0.005)
    return loop.time() - started


@dataclass
class Instance:
    book: SessionBook
    sync: RedisSync
    metrics: Metrics

    def metric(self, name: str) -> float | None:
        return self.metrics.registry.get_sample_value(name)


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[list[RedisServer]]:
    """Three masters on free loopback ports, all 16384 slots assigned; stopped by pid."""
    server, cli = require(REDIS_SERVER, "redis-server"), require(REDIS_CLI, "redis-cli")
    workdir = tmp_path / "cluster"
    workdir.mkdir()
    nodes = []
    for _ in range(3):
        port = free_cluster_port()
        options = ("--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf")
        nodes.append(RedisServer(server, port, workdir, options))
    try:
        for node in nodes:
            node.start()
        created = subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            timeout=30,
            check=False,
            env=real_clock_env(),
        )
        assert created.returncode == 0, created.stdout.decode() + created.stderr.decode()
        deadline = time.monotonic() + 10
        for node in nodes:
            while True:
                info = subprocess.run(
                    [cli, "-p", str(node.port), "cluster", "info"],
                    capture_output=True,
                    timeout=5,
                    check=False,
                    env=real_clock_env(),
                ).stdout
                if b"cluster_state:ok" in info and b"cluster_slots_ok:16384" in info:
                    break
                assert time.monotonic() < deadline, info.decode()
                time.sleep(0.05)
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def make_instances(url: str) -> tuple[Callable[[], Instance], list[Instance]]:
    made: list[Instance] = []

    def make() -> Instance:
        book, metrics = SessionBook(), Metrics()
        sync = RedisSync(
            book,
            url=url,
            key_prefix="t",
            sync_interval_s=INTERVAL_S,
            instance_ttl_s=INSTANCE_TTL_S,
            timeout_s=0.5,
            metrics=metrics,
        )
        sync.start()
        made.append(Instance(book, sync, metrics))
        return made[-1]

    return make, made


@pytest.fixture
async def instances(redis_server: RedisServer) -> AsyncIterator[Callable[[], Instance]]:
    """Make SessionBook + RedisSync pairs on the test's Redis; all stopped at the end."""
    make, made = make_instances(redis_server.url)
    yield make
    for instance in made:
        await instance.sync.stop()


@pytest.fixture
async def server_client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A client of the test's Redis server, to read and plant keys; closed at the end."""
    client = aioredis.from_url(redis_server.url)
    yield client
    await client.aclose()


def mono() -> float:
    return asyncio.get_running_loop().time()


async def up(*members: Instance) -> None:
    await eventually(lambda: all(m.sync.up for m in members), what="redis sync up")
    await eventually(lambda: all(len(m.sync.live) == len(members) - 1 for m in members))


# --- two instances in one process ---------------------------------------------------------------


async def test_a_session_on_one_instance_counts_on_the_other(instances, redis_server) -> None:
    a, b = instances(), instances()
    await up(a, b)
    a.book.start("call-1", ACCOUNT, mono(), ttl_s=600)
    took = await eventually(lambda: b.book.active_sessions(ACCOUNT) == 1, what="B sees A's call")
    assert took < 20 * INTERVAL_S + 0.5
    assert b.book.local_figures(ACCOUNT) == (0, 0)
    b.book.start("call-2", ACCOUNT, mono(), ttl_s=600)
    await eventually(lambda: a.book.active_sessions(ACCOUNT) == 2, what="A sees B's call")
    a.book.end("call-1")
    await eventually(lambda: b.book.active_sessions(ACCOUNT) == 1, what="B sees the end")
    assert a.book.active_sessions(ACCOUNT) == 1

    # The keys: one per (account, instance), hash-tagged by account, with the instance TTL.
    client = aioredis.from_url(redis_server.url)
    try:
        keys = KeyLayout("t")
        # "reserved sessions version": the version is B's, raised per round and confirmation.
        value = await client.get(keys.account(ACCOUNT, b.sync.instance))
        reserved, sessions, version = value.split()
        assert (reserved, sessions) == (b"0", b"1") and 0 < int(version) <= b.sync._version
        assert await client.get(keys.account(ACCOUNT, a.sync.instance)) is None  # zero: deleted
        assert 0 < await client.pttl(keys.account(ACCOUNT, b.sync.instance)) <= 1000
        assert keys.account(ACCOUNT, "x") == "t:{acct:42}:i:x"
        assert sorted(m.decode() for m in await client.zrange(keys.instances, 0, -1)) == sorted(
            [a.sync.instance, b.sync.instance]
        )
    finally:
        await client.aclose()


async def test_figures_set_before_an_instance_starts_reach_it(instances) -> None:
    """A (re)starting instance rebuilds the others' figures from the stream's history, with no
    decision having looked at the account before."""
    a = instances()
    a.book.start("call-1", ACCOUNT, mono(), ttl_s=600)
    a.book.admit("auth-9", ACCOUNT + 1, 123, mono(), ttl_s=600)
    await up(a)
    await asyncio.sleep(5 * INTERVAL_S)
    b = instances()
    await eventually(lambda: b.book.active_sessions(ACCOUNT) == 1, what="B learns the history")
    assert b.book.reserved(ACCOUNT + 1) == 123


async def test_figures_stay_known_past_the_instance_ttl(instances) -> None:
    """Non-zero figures are re-published before their keys expire and re-announced, so a long
    call is still counted (and a late joiner still learns it) after several instance TTLs."""
    a, b = instances(), instances()
    a.book.start("long-call", ACCOUNT, mono(), ttl_s=600)
    await up(a, b)
    await asyncio.sleep(3 * INSTANCE_TTL_S)
    assert b.book.active_sessions(ACCOUNT) == 1
    c = instances()
    await eventually(lambda: c.book.active_sessions(ACCOUNT) == 1, what="C learns the call")


@dataclass
class MemoryStore:
    """AccountSource and UsageSink in memory, for admissions only (these tests record no
    usage; tests/unit/memory_store.py has the full one)."""

    accounts: dict[int, AccountSnapshot]
    recorded: list[UsageReport] = field(default_factory=list)

    async def find_account(self, kind: IdentityKind, value: str) -> AccountSnapshot | None:
        return next((a for a in self.accounts.values() if a.name == value), None)

    async def load_account(self, account_id: int) -> AccountSnapshot | None:
        return self.accounts.get(account_id)

    async def record(self, report: UsageReport) -> UsageOutcome:
        self.recorded.append(report)
        return UsageOutcome(charged=0, duplicate=False, snapshot=None)

    async def close_sessions(self, source: str, origin: str, reason: str) -> list[tuple[int, str]]:
        return []

    async def record_unmatched(
        self, report: UsageReport, identity_kind: str, identity: str, reason: str
    ) -> bool:
        return True

    async def session_generations(self, source: str, origin: str, key: str) -> list[object]:
        return []

    async def open_generations(self, owner: str) -> list[object]:
        return []


class FixedWall:
    def wall(self) -> datetime:
        return datetime(2026, 11, 22, 12, 0, tzinfo=UTC)

    def mono(self) -> float:
        return asyncio.get_running_loop().time()


def charging_for(book: SessionBook, snapshot: AccountSnapshot) -> Charging:
    cache = AccountCache()
    cache.replace_all([snapshot], [("user_name", snapshot.name, snapshot.account_id)], mono())
    return Charging(
        cache=cache,
        sessions=book,
        source=MemoryStore({snapshot.account_id: snapshot}),
        sink=MemoryStore({snapshot.account_id: snapshot}),
        limits=GrantLimits(max_time_s=600),
        policy=CachePolicy(),
        clock=FixedWall(),
    )


async def test_a_reservation_on_one_instance_lowers_what_the_other_sees(instances) -> None:
    # 1.00 at 0.06/min buys 1000 s; a grant is capped at 600 s = 0.60 held for it.
    snapshot = AccountSnapshot(
        account_id=ACCOUNT,
        name="shared",
        balance=parse_amount("1.00"),
        tariff=Tariff(price_per_minute=parse_amount("0.06")),
    )
    a, b = instances(), instances()
    await up(a, b)
    charging_a, charging_b = charging_for(a.book, snapshot), charging_for(b.book, snapshot)
    user = (IdentityKind.USER_NAME, "shared")

    first = charging_a.admit_cached(*user, reservation_key="auth-1")
    assert first is not None and first.admitted and first.granted_units == 600
    await eventually(lambda: b.book.reserved(ACCOUNT) == parse_amount("0.60"), what="hold seen")
    second = charging_b.admit_cached(*user, reservation_key="auth-2")
    assert second is not None and second.admitted
    assert second.available == parse_amount("0.40")
    assert second.granted_units == 400  # what is left, not another 600 s
    await eventually(lambda: a.book.reserved(ACCOUNT) == parse_amount("1.00"))
    third = charging_a.admit_cached(*user, reservation_key="auth-3")
    assert third is not None and not third.admitted
    assert third.reason is RefusalReason.CREDIT_HELD  # the balance is there, held by both
    # B's session ends before it started (a reject from further down): its hold is released.
    b.book.end("auth-2")
    await eventually(lambda: a.book.reserved(ACCOUNT) == parse_amount("0.60"))
    fourth = charging_a.admit_cached(*user, reservation_key="auth-4")
    assert fourth is not None and fourth.admitted and fourth.granted_units == 400


async def test_redis_going_away_degrades_to_local_state_and_comes_back(
    instances, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = instances(), instances()
    await up(a, b)
    a.book.start("call-a", ACCOUNT, mono(), ttl_s=600)
    b.book.start("call-b", ACCOUNT, mono(), ttl_s=600)
    await eventually(
        lambda: a.book.active_sessions(ACCOUNT) == 2 == b.book.active_sessions(ACCOUNT)
    )
    assert a.metric("ocs_redis_up") == 1

    caplog.set_level("INFO", logger="ocs.redis")
    redis_server.stop()
    await eventually(lambda: not a.sync.up and not b.sync.up, what="both notice")
    for instance in (a, b):
        assert instance.metric("ocs_redis_up") == 0
        # Only what it holds itself: the other's call is no longer counted.
        assert instance.book.active_sessions(ACCOUNT) == 1
    # Still serving: local changes go on and are counted locally.
    a.book.start("call-a2", ACCOUNT, mono(), ttl_s=600)
    a.book.end("call-a")
    assert a.book.active_sessions(ACCOUNT) == 1
    await asyncio.sleep(0.5)  # several failed rounds with backoff...
    assert a.metric("ocs_redis_errors_total") >= 2
    downs = [r for r in caplog.records if "redis unavailable" in r.getMessage()]
    assert len(downs) == 2  # ...but one line per instance

    redis_server.start()  # an empty Redis: everything must be published again
    await eventually(lambda: a.sync.up and b.sync.up, timeout_s=10, what="both reconnect")
    await eventually(
        lambda: a.book.active_sessions(ACCOUNT) == 2 == b.book.active_sessions(ACCOUNT),
        what="re-synced",
    )
    assert a.metric("ocs_redis_up") == 1 == b.metric("ocs_redis_up")
    ups = [r for r in caplog.records if "redis sync up" in r.getMessage()]
    assert len(ups) == 2


async def test_an_instance_that_vanishes_is_forgotten_after_its_ttl(instances) -> None:
    a, b, c = instances(), instances(), instances()
    await up(a, b, c)
    a.book.start("call-a", ACCOUNT, mono(), ttl_s=600)
    c.book.start("call-c", ACCOUNT, mono(), ttl_s=600)
    await eventually(lambda: b.book.active_sessions(ACCOUNT) == 2)

    # A crashes: no goodbye. B keeps counting its call until A's heartbeat is instance_ttl_s old.
    await a.sync.stop(retire=False)
    crashed = mono()
    await asyncio.sleep(INSTANCE_TTL_S / 2)
    assert b.book.active_sessions(ACCOUNT) == 2
    await eventually(lambda: b.book.active_sessions(ACCOUNT) == 1, timeout_s=3 * INSTANCE_TTL_S)
    assert mono() - crashed >= INSTANCE_TTL_S * 0.9
    assert a.sync.instance not in b.sync.live

    # C stops cleanly: it deletes its keys and heartbeat, and B forgets it at once.
    await c.sync.stop()
    took = await eventually(lambda: b.book.active_sessions(ACCOUNT) == 0)
    assert took < INSTANCE_TTL_S / 2
    assert b.sync.live == set()


async def test_a_burst_of_changes_goes_out_in_a_few_batched_rounds(instances) -> None:
    a, b = instances(), instances()
    await up(a, b)
    rounds = a.sync.rounds
    await asyncio.sleep(20 * INTERVAL_S)
    assert 5 <= a.sync.rounds - rounds <= 25  # idle: one round per interval
    rounds = a.sync.rounds
    for n in range(2000):
        a.book.admit(f"auth-{n}", 1000 + n % 100, 1, mono(), ttl_s=60)
    await eventually(lambda: b.book.remote_account_count == 100, what="B sees 100 accounts")
    assert a.sync.rounds - rounds <= 10
    assert all(b.book.reserved(1000 + n) == 20 for n in range(100))


async def test_a_confirmed_figure_is_not_undone_by_an_older_announcement(
    redis_server: RedisServer,
) -> None:
    """B reads A's key when it confirms an admission, then A's announcement of a round that
    took its figures before that key was written: B keeps the newer figure (the older one
    would let B admit against credit A holds), and takes A's announcements again once they are
    as new."""
    hold = 100
    a_book, b_book = SessionBook(), SessionBook()
    a, b = (
        RedisSync(book, url=redis_server.url, key_prefix="t", instance_ttl_s=60.0, timeout_s=0.5)
        for book in (a_book, b_book)
    )
    try:
        for sync in (a, b, a):  # rounds by hand: each lists the other as live
            await sync.sync_once()
        assert a.live == {b.instance} and b.live == {a.instance}

        a_book.admit("a-1", ACCOUNT, hold, mono(), ttl_s=600)
        await a.sync_once()  # announces one hold
        a_book.admit("a-2", ACCOUNT, hold, mono(), ttl_s=600)
        assert await a.confirm(ACCOUNT, 0)  # A's key: two holds; not announced yet
        b_book.admit("b-1", ACCOUNT, hold, mono(), ttl_s=600)
        assert not await b.confirm(ACCOUNT, 0)  # A holds more than B knew: refused
        assert b_book.remote_figures(ACCOUNT) == (2 * hold, 0)
        await b.sync_once()  # reads A's older announcement (one hold)
        assert b_book.remote_figures(ACCOUNT) == (2 * hold, 0)

        await a.sync_once()  # announces two holds: as new as the key B read
        await b.sync_once()
        assert b_book.remote_figures(ACCOUNT) == (2 * hold, 0)
        assert b._heard == {}  # nothing older can come now
        a_book.end("a-2")
        await a.sync_once()
        await b.sync_once()
        assert b_book.remote_figures(ACCOUNT) == (hold, 0)  # newer announcements apply
    finally:
        await a.stop()
        await b.stop()


async def test_announcements_without_or_with_a_bad_version_are_read_as_before(
    redis_server: RedisServer,
) -> None:
    """An announcement without a version (an ocsd from before versions) is applied as it
    comes; one whose version is not a number is skipped like any malformed announcement, and
    the round goes on."""
    keys = KeyLayout("t")
    b = RedisSync(SessionBook(), url=redis_server.url, key_prefix="t", instance_ttl_s=60.0)
    client = aioredis.from_url(redis_server.url)
    try:
        seconds, micros = await client.time()
        await client.zadd(keys.instances, {"old": seconds * 1000 + micros // 1000})
        await client.xadd(keys.changes, {"i": "old", "d": f"{ACCOUNT} 300 1"})
        await client.xadd(keys.changes, {"i": "old", "d": f"{ACCOUNT + 1} 500 1", "v": "x"})
        await b.sync_once()
        assert b.live == {"old"}
        assert b.book.remote_figures(ACCOUNT) == (300, 1)
        assert b.book.remote_figures(ACCOUNT + 1) == (0, 0)
    finally:
        await client.aclose()
        await b.stop()


# --- each instance's key: no write replaces a newer version -------------------------------------

HOLD = 100


def by_hand(url: str) -> RedisSync:
    """An instance whose rounds the test runs itself (sync_once), with a TTL that never runs out
    within a test."""
    return RedisSync(SessionBook(), url=url, key_prefix="t", instance_ttl_s=60.0, timeout_s=0.5)


async def own_key(client: aioredis.Redis | RedisCluster, sync: RedisSync) -> bytes | None:
    value: bytes | None = await client.get(KeyLayout("t").account(ACCOUNT, sync.instance))
    return value


async def check_older_rounds_leave_the_key(url: str, client: aioredis.Redis | RedisCluster) -> None:
    """A round that took its figures before a confirmation took its own, but that reaches Redis
    after it (another connection), leaves the key the confirmation wrote: its SET would lower
    the hold, its DEL would drop it."""
    a = by_hand(url)
    real_round = a._round
    holds: list[str] = []

    def admit() -> None:
        holds.append(f"a-{len(holds)}")
        a.book.admit(holds[-1], ACCOUNT, HOLD, mono(), ttl_s=600)

    async def confirmed_first(batch: list[tuple[int, int, int]], version: int) -> list[object]:
        # The round's figures and version are taken; a hold more is confirmed (a newer version)
        # and its write runs in Redis before the round's.
        admit()
        assert await a.confirm(ACCOUNT, 0)
        return await real_round(batch, version)

    try:
        await a.sync_once()
        admit()
        a._round = confirmed_first  # type: ignore[method-assign]
        await a.sync_once()  # SET of one hold, older than the key's two
        assert await own_key(client, a) == b"%d 0 %d" % (2 * HOLD, a._version)

        for hold in holds:
            a.book.end(hold)
        await a.sync_once()  # DEL (0 0), older than the key's one hold
        assert await own_key(client, a) == b"%d 0 %d" % (HOLD, a._version)

        del a._round
        await a.sync_once()  # the next round is newer: it writes
        assert await own_key(client, a) == b"%d 0 %d" % (HOLD, a._version)
        a.book.end(holds[-1])
        await a.sync_once()
        assert await own_key(client, a) is None
    finally:
        await a.stop()


async def check_versionless_keys_are_written_over(
    url: str, client: aioredis.Redis | RedisCluster
) -> None:
    """A key without a version (two fields: an ocsd from before versions; or a third field
    that is not a number) is replaced by a round's SET and DEL and by a confirmation, as
    before versions. Its second field (99) is
    above any version here: a check that took the last field for a version would skip it."""
    a = by_hand(url)
    key = KeyLayout("t").account(ACCOUNT, a.instance)
    try:
        await a.sync_once()
        await client.set(key, "900 99")
        a.book.admit("a-1", ACCOUNT, HOLD, mono(), ttl_s=600)
        await a.sync_once()
        assert await own_key(client, a) == b"%d 0 %d" % (HOLD, a._version)

        await client.set(key, "900 99")
        a.book.admit("a-2", ACCOUNT, HOLD, mono(), ttl_s=600)
        assert await a.confirm(ACCOUNT, 0)
        assert await own_key(client, a) == b"%d 0 %d" % (2 * HOLD, a._version)

        # A third field that is not a number (written by hand, or damaged) is no version.
        await client.set(key, "900 99 x")
        a.book.admit("a-3", ACCOUNT, HOLD, mono(), ttl_s=600)
        await a.sync_once()
        assert await own_key(client, a) == b"%d 0 %d" % (3 * HOLD, a._version)

        await client.set(key, "900 99")
        a.book.end("a-1")
        a.book.end("a-2")
        a.book.end("a-3")
        await a.sync_once()
        assert await own_key(client, a) is None
    finally:
        await a.stop()


async def check_newer_writes_replace_the_key(
    url: str, client: aioredis.Redis | RedisCluster
) -> None:
    """Rounds and confirmations in their order each replace the key; versions compare as
    numbers (10 is newer than 9, though not as text)."""
    a = by_hand(url)
    try:
        await a.sync_once()
        a._version = 8
        a.book.admit("a-1", ACCOUNT, HOLD, mono(), ttl_s=600)
        await a.sync_once()
        assert await own_key(client, a) == b"%d 0 9" % HOLD
        a.book.admit("a-2", ACCOUNT, HOLD, mono(), ttl_s=600)
        await a.sync_once()
        assert await own_key(client, a) == b"%d 0 10" % (2 * HOLD)
        a.book.admit("a-3", ACCOUNT, HOLD, mono(), ttl_s=600)
        assert await a.confirm(ACCOUNT, 0)
        assert await own_key(client, a) == b"%d 0 11" % (3 * HOLD)
        for hold in ("a-1", "a-2", "a-3"):
            a.book.end(hold)
        await a.sync_once()
        assert await own_key(client, a) is None
    finally:
        await a.stop()


async def test_a_round_older_than_the_key_leaves_it(
    redis_server: RedisServer, server_client: aioredis.Redis
) -> None:
    await check_older_rounds_leave_the_key(redis_server.url, server_client)


async def test_a_confirmation_older_than_the_key_leaves_it(
    redis_server: RedisServer, server_client: aioredis.Redis
) -> None:
    """A confirmation that took its figures before a round took its own, but that reaches Redis
    after it, leaves the key the round wrote; it is admitted all the same (the others hold
    nothing)."""
    a = by_hand(redis_server.url)
    real_evalsha = a.client.evalsha

    async def round_first(sha: str, *args: object) -> object:
        if sha == a._confirm_sha:  # the confirmation's figures (one hold) and version are taken
            del a.client.evalsha
            a.book.admit("a-2", ACCOUNT, HOLD, mono(), ttl_s=600)
            await a.sync_once()  # two holds, a newer version: in Redis first
        return await real_evalsha(sha, *args)

    try:
        await a.sync_once()
        a.book.admit("a-1", ACCOUNT, HOLD, mono(), ttl_s=600)
        a.client.evalsha = round_first  # type: ignore[method-assign]
        assert await a.confirm(ACCOUNT, 0)
        assert await own_key(server_client, a) == b"%d 0 %d" % (2 * HOLD, a._version)
    finally:
        await a.stop()


async def test_a_key_without_a_version_is_written_over_as_before(
    redis_server: RedisServer, server_client: aioredis.Redis
) -> None:
    await check_versionless_keys_are_written_over(redis_server.url, server_client)


async def test_newer_writes_replace_the_key(
    redis_server: RedisServer, server_client: aioredis.Redis
) -> None:
    await check_newer_writes_replace_the_key(redis_server.url, server_client)


# --- Redis Cluster ------------------------------------------------------------------------------


async def test_two_instances_share_figures_through_a_redis_cluster(redis_cluster) -> None:
    """Each instance names a different node; the sync detects the cluster, its script touches
    the {sync} slot alone, and the account keys land on the nodes their hash tags pick."""
    first, second, _ = redis_cluster
    make_a, made_a = make_instances(first.url)
    make_b, made_b = make_instances(second.url)
    client = RedisCluster.from_url(first.url)
    try:
        a, b = make_a(), make_b()
        await up(a, b)
        assert a.sync.cluster is True and b.sync.cluster is True
        keys = KeyLayout("t")
        await client.initialize()

        # One account per master: hash tags {acct:ID} on three different nodes.
        accounts: dict[str, int] = {}
        for account in range(1, 1000):
            node = client.get_node_from_key(keys.account(account, a.sync.instance))
            accounts.setdefault(node.name, account)
            if len(accounts) == 3:
                break
        assert sorted(accounts) == sorted(f"127.0.0.1:{n.port}" for n in redis_cluster)

        for n, account in enumerate(accounts.values()):
            a.book.start(f"call-{n}", account, mono(), ttl_s=600)
            a.book.admit(f"auth-{n}", account, 100 + n, mono(), ttl_s=600)
        for n, account in enumerate(accounts.values()):
            await eventually(lambda account=account: b.book.active_sessions(account) == 1)
            assert b.book.reserved(account) == 100 + n
            assert b.book.local_figures(account) == (0, 0)
            key = keys.account(account, a.sync.instance)
            assert (await client.get(key)).split()[:2] == [b"%d" % (100 + n), b"1"]
            assert 0 < await client.pttl(key) <= 1000

        # B's calls count on A; an end reaches B and deletes A's key.
        second_account, third_account = list(accounts.values())[1:]
        b.book.start("call-b", second_account, mono(), ttl_s=600)
        await eventually(lambda: a.book.active_sessions(second_account) == 2, what="A sees B")
        a.book.end("call-2")
        a.book.end("auth-2")
        await eventually(lambda: b.book.active_sessions(third_account) == 0, what="B sees end")
        await eventually(lambda: b.book.reserved(third_account) == 0)
        assert await client.get(keys.account(third_account, a.sync.instance)) is None

        # Still counted past the instance TTL (re-published per key, re-announced).
        await asyncio.sleep(1.5 * INSTANCE_TTL_S)
        assert b.book.active_sessions(second_account) == 2
        value = await client.get(keys.account(second_account, a.sync.instance))
        assert value.split()[:2] == [b"101", b"1"]  # and A's version

        # A stops cleanly: its keys on every node and its heartbeat go, B forgets it at once.
        await a.sync.stop()
        made_a.clear()
        await eventually(lambda: b.book.active_sessions(second_account) == 1, what="forgotten")
        for account in accounts.values():
            assert await client.get(keys.account(account, a.sync.instance)) is None
        assert [m.decode() for m in await client.zrange(keys.instances, 0, -1)] == [b.sync.instance]
        assert a.metric("ocs_redis_errors_total") == 0 == b.metric("ocs_redis_errors_total")
    finally:
        for instance in made_a + made_b:
            await instance.sync.stop()
        await client.aclose()


async def test_on_a_redis_cluster_no_write_replaces_a_newer_key(redis_cluster) -> None:
    """The account keys' writes that go out beside the round (KEY_SCRIPT) compare versions as
    the round's script does on one server; a node missing that script is given it again."""
    url = redis_cluster[0].url
    client = RedisCluster.from_url(url)
    try:
        await check_older_rounds_leave_the_key(url, client)
        await check_versionless_keys_are_written_over(url, client)
        await check_newer_writes_replace_the_key(url, client)

        a = by_hand(url)
        try:
            await a.sync_once()
            assert a.cluster is True and a._key_sha is not None
            a._key_sha = "0" * 40  # as if the key's node had restarted: NOSCRIPT
            a.book.admit("a-1", ACCOUNT, HOLD, mono(), ttl_s=600)
            await a.sync_once()
            assert await own_key(client, a) == b"%d 0 %d" % (HOLD, a._version)
            assert a._key_sha != "0" * 40
        finally:
            await a.stop()
    finally:
        await client.aclose()


# --- two daemons ---------------------------------------------------------------------------------

SECRET = codec.SharedSecret(b"testing123")


def access(user: str, identifier: int) -> bytes:
    return codec.encode_request(
        codec.ACCESS_REQUEST,
        identifier,
        SECRET,
        [codec.attr_str(codec.USER_NAME, user), (codec.NAS_IP_ADDRESS, b"\x7f\x00\x00\x01")],
    )


def accounting(status: int, user: str, session: str, identifier: int, seconds: int = 0) -> bytes:
    return codec.encode_request(
        codec.ACCOUNTING_REQUEST,
        identifier,
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


def daemon_config(tmp_path: Path, name: str, redis_url: str) -> tuple[Path, int, int]:
    auth, acct = free_udp_port(), free_udp_port()
    config = write_config(
        tmp_path / f"{name}.toml",
        f"""
[daemon]
lock_file = "{tmp_path / (name + ".lock")}"
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
[redis]
url = "{redis_url}"
key_prefix = "e2e"
sync_interval_s = 0.02
""",
    )
    return config, auth, acct


def wait_for_reply(
    port: int, make: Callable[[int], bytes], accept: Callable[[codec.Packet], bool]
) -> codec.Packet:
    """Send fresh requests until one's reply satisfies ``accept`` (5 s at most)."""
    deadline = time.monotonic() + 5
    n = 100
    while True:
        reply = exchange(port, make(n))
        if reply is not None and accept(reply):
            return reply
        if time.monotonic() > deadline:
            raise AssertionError(f"last reply: {reply and (reply.code, reply.attributes)}")
        n = (n + 1) % 256
        time.sleep(0.02)


def test_two_daemons_share_a_session_cap(
    dsn: str, daemons, tmp_path: Path, redis_server: RedisServer
) -> None:
    for args in (
        ("tariff", "set", "voice", "--per-minute", "0.06"),
        ("account", "create", "one-line", "--credit-limit", "100", "--tariff", "voice"),
        ("identity", "add", "one-line", "user_name", "one-line"),
        ("account", "update", "one-line", "--max-sessions", "1"),
    ):
        done = run_ocs(*args, dsn=dsn)
        assert done.code == 0, done.err
    config_a, _auth_a, acct_a = daemon_config(tmp_path, "a", redis_server.url)
    config_b, auth_b, _acct_b = daemon_config(tmp_path, "b", redis_server.url)
    a = daemons("--config", str(config_a), dsn=dsn)
    b = daemons("--config", str(config_b), dsn=dsn)
    for daemon in (a, b):
        daemon.wait_for("msg='ready")
        daemon.wait_for("redis sync up")

    start = exchange(acct_a, accounting(1, "one-line", "call-1", 2))
    assert start is not None and start.code == codec.ACCOUNTING_RESPONSE
    # B has never decided for this account nor seen this call: A's announcement tells it.
    refused = wait_for_reply(
        auth_b, lambda n: access("one-line", n), lambda r: r.code == codec.ACCESS_REJECT
    )
    assert refused.get(codec.REPLY_MESSAGE) == b"too many sessions"
    stop = exchange(acct_a, accounting(2, "one-line", "call-1", 3, seconds=30))
    assert stop is not None and stop.code == codec.ACCOUNTING_RESPONSE
    admitted = wait_for_reply(
        auth_b, lambda n: access("one-line", n), lambda r: r.code == codec.ACCESS_ACCEPT
    )
    assert admitted.get_int(codec.SESSION_TIMEOUT) == 3600

    for daemon in (a, b):
        assert daemon.stop() == 0
        out = daemon.output()
        assert "Traceback" not in out
        assert "redis unavailable" not in out


def test_a_daemon_keeps_serving_without_redis(
    dsn: str, daemons, tmp_path: Path, redis_server: RedisServer
) -> None:
    run_ocs("demo", "load", dsn=dsn)
    config, auth, acct = daemon_config(tmp_path, "a", redis_server.url)
    daemon = daemons("--config", str(config), dsn=dsn)
    daemon.wait_for("redis sync up")
    redis_server.stop()
    daemon.wait_for("redis unavailable")
    assert exchange(auth, access("prepaid-ok", 1)).code == codec.ACCESS_ACCEPT
    assert exchange(acct, accounting(1, "postpaid", "c-1", 2)).code == codec.ACCOUNTING_RESPONSE
    redis_server.start()
    deadline = time.monotonic() + 15
    while daemon.output().count("redis sync up") < 2:
        assert time.monotonic() < deadline, daemon.output()
        time.sleep(0.05)
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.output()
    assert daemon.output().count("redis unavailable") == 1
