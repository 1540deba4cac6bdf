"""``daemon.workers = "auto"``, the default: one worker per core behind one supervisor.

The supervisor starts a local redis-server the workers share holds through, serves one
metrics endpoint for all of them (counters summed, gauges per worker), lists every worker in
``/status`` and ``ocs status``, and forwards SIGHUP; RADIUS datagrams and Diameter connections
are spread over the workers by the kernel (SO_REUSEPORT), Access-Requests by Identifier when
asked (ocs.radius.spread), and accounting is relayed to the worker of its admission.
The rest of the suite runs each daemon as one process (``support.ocs_env``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import exchange, free_port, free_udp_port, run_ocs, write_config
from test_redis import REDIS_SERVER, require
from test_session_ledger import assert_ledger, balance, money, sql

from ocs.diameter import codec as dcodec
from ocs.diameter.codec import avp_address, avp_u32, avp_utf8, encode_avp, encode_message
from ocs.radius import codec
from ocs.radius.profiles import CISCO_H323_CONF_ID, VENDOR_CISCO

pytestmark = pytest.mark.integration

SECRET = codec.SharedSecret(b"testing123")
CORES = len(os.sched_getaffinity(0))


def access(user: str, identifier: int) -> bytes:
    return codec.encode_request(
        codec.ACCESS_REQUEST,
        identifier,
        SECRET,
        [codec.attr_str(codec.USER_NAME, user), (codec.NAS_IP_ADDRESS, b"\x7f\x00\x00\x01")],
    )


def cer(host: str) -> bytes:
    return encode_message(
        command_code=dcodec.CMD_CAPABILITIES_EXCHANGE,
        application_id=0,
        hop_by_hop=1,
        end_to_end=1,
        avps=[
            encode_avp(dcodec.AVP_ORIGIN_HOST, host.encode()),
            encode_avp(dcodec.AVP_ORIGIN_REALM, b"localdomain"),
            avp_address(dcodec.AVP_HOST_IP_ADDRESS, "127.0.0.1"),
            avp_u32(dcodec.AVP_VENDOR_ID, 0),
            avp_utf8(dcodec.AVP_PRODUCT_NAME, "test_workers", mandatory=False),
            avp_u32(dcodec.AVP_AUTH_APPLICATION_ID, 4),
        ],
        flags=dcodec.FLAG_REQUEST,
    )


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return int(reply.status), reply.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def sample(text: str, name: str, **labels: str) -> list[float]:
    """Every value of ``name`` whose labels include ``labels``."""
    found = []
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            found.append(float(value))
    return found


def daemon_config(
    path: Path,
    auth: int,
    acct: int,
    metrics: int,
    *,
    radius: str = "",
    client: str = "",
    extra: str = "",
) -> Path:
    """A daemon with workers: RADIUS on loopback for one client, metrics, its own files;
    ``radius`` and ``client`` add lines to those sections, ``extra`` sections of its own."""
    return write_config(
        path,
        f"""
[daemon]
lock_file = "{path.parent / "ocsd.lock"}"
[metrics]
listen = "127.0.0.1:{metrics}"
[usage]
spool_file = "{path.parent / "spool"}"
[radius]
enabled = true
auth_listen = ["127.0.0.1:{auth}"]
acct_listen = ["127.0.0.1:{acct}"]
{radius}
[[radius.clients]]
address = "127.0.0.1"
secret = "testing123"
{client}
{extra}
""",
    )


def two_workers(daemons, dsn: str, path: Path, *, client: str, extra: str = ""):
    """A daemon of two workers on fresh ports (``daemon_config`` at ``path``), ready; returns
    it and its auth, acct and metrics ports."""
    auth, acct, metrics = free_udp_port(), free_udp_port(), free_port()
    config = daemon_config(path, auth, acct, metrics, client=client, extra=extra)
    supervisor = daemons("--config", str(config), dsn=dsn, OCS_DAEMON__WORKERS="2")
    supervisor.wait_for("workers=2'", timeout=90)
    return supervisor, auth, acct, metrics


@pytest.mark.skipif(CORES < 2, reason="auto is one process on a one-core machine")
def test_auto_runs_a_worker_per_core_as_one_daemon(dsn: str, daemons, tmp_path: Path) -> None:
    require(REDIS_SERVER, "redis-server")
    auth, acct, metrics, diameter = free_udp_port(), free_udp_port(), free_port(), free_port()
    config = daemon_config(
        tmp_path / "auto.toml",
        auth,
        acct,
        metrics,
        radius="spread_access_requests = true",
        extra=f"""
[diameter]
enabled = true
listen = ["127.0.0.1:{diameter}"]
[[diameter.peers]]
origin_host = "*.localdomain"
address = "127.0.0.1"
""",
    )
    supervisor = daemons(
        "--config", str(config), "--load-demo", dsn=dsn, OCS_DAEMON__WORKERS="auto"
    )
    out = supervisor.wait_for(f"workers={CORES}'", timeout=90)
    assert out.count("msg='worker started") == CORES
    assert "local redis started" in out

    # RADIUS: Access-Requests from one NAS socket (one source port, which the kernel's hash
    # gives to one worker) reach every worker by Identifier (radius.spread_access_requests);
    # the holds are shared.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as nas:
        answers = [exchange(auth, access("postpaid", identifier=i), nas) for i in range(40)]
    assert all(a is not None for a in answers)
    accepted = sum(a.code == codec.ACCESS_ACCEPT for a in answers if a is not None)
    assert 13 <= accepted <= 13 + CORES  # one process: 13; one unknown grant per worker

    # Diameter: connections are spread over the workers too.
    connections = []
    for n in range(16):
        conn = socket.create_connection(("127.0.0.1", diameter), timeout=5)
        conn.sendall(cer(f"peer{n}.localdomain"))
        assert conn.recv(4096)[:1] == b"\x01"  # a CEA
        connections.append(conn)

    status, body = get(f"http://127.0.0.1:{metrics}/status")
    assert status == 200
    data = json.loads(body)
    assert data["supervisor_pid"] == supervisor.proc.pid
    workers = data["workers"]
    assert [w["worker"] for w in workers] == list(range(CORES))
    held = [w["sessions"]["reservations"] for w in workers]
    assert sum(held) == accepted and all(h > 0 for h in held), held
    peers = [w["diameter"]["peers_by_state"].get("open", 0) for w in workers]
    assert sum(peers) == 16 and all(p > 0 for p in peers), peers
    for conn in connections:
        conn.close()

    # One metrics endpoint: counters summed over the workers, gauges one series per worker.
    status, body = get(f"http://127.0.0.1:{metrics}/metrics")
    assert status == 200
    text = body.decode()
    assert sample(text, "ocs_workers") == [float(CORES)]
    assert sample(text, "ocs_workers_unreachable") == [0.0]
    radius_answers = sample(text, "ocs_requests_total", protocol="radius", type="access")
    assert sum(radius_answers) == 40
    assert sample(text, "ocs_requests_total", outcome="accept", type="access") == [accepted]
    # Decisions are counted by each worker's pipeline and read when scraped.
    assert sample(text, "ocs_new_sessions_total", result="admitted") == [accepted]
    assert sum(sample(text, "ocs_new_sessions_total")) == 40
    entries = sample(text, "ocs_cache_entries")
    assert len(entries) == CORES and len(set(entries)) == 1 and entries[0] > 0
    for index in range(CORES):
        assert sample(text, "ocs_database_up", worker=str(index)) == [1.0]
    assert get(f"http://127.0.0.1:{metrics}/readyz")[0] == 200
    assert get(f"http://127.0.0.1:{metrics}/healthz")[0] == 200

    # ocs status shows every worker.
    shown = run_ocs("status", "--url", f"http://127.0.0.1:{metrics}", dsn=dsn)
    assert shown.code == 0, shown.err
    assert f"{CORES} workers" in shown.out
    for index in range(CORES):
        assert f"--- worker {index} (pid " in shown.out

    # SIGHUP reaches every worker.
    supervisor.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if supervisor.output().count("configuration reloaded") >= CORES:
            break
        time.sleep(0.1)
    out = supervisor.output()
    assert f"forwarded to workers={CORES}" in out
    assert out.count("configuration reloaded") == CORES

    assert supervisor.stop() == 0
    out = supervisor.output()
    assert out.count("msg='stopped'") == CORES + 1
    assert "Traceback" not in out
    assert not [p for p in _processes() if str(tmp_path / "ocsd.lock.redis") in p]


def _processes() -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                found.append(Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"))
            except OSError:
                continue
    return found


def test_workers_without_a_store_are_refused_and_auto_runs_one(
    dsn: str, daemons, tmp_path: Path
) -> None:
    """No redis-server on the PATH and no redis.url: a number of workers asked for is refused
    with the fix named; "auto" runs one process and says why."""
    config = write_config(
        tmp_path / "nostore.toml",
        f"""
[daemon]
lock_file = "{tmp_path / "ocsd.lock"}"
[metrics]
enabled = false
""",
    )
    empty = tmp_path / "bin"
    empty.mkdir()
    path = str(empty)  # no redis-server to be found
    refused = daemons("--config", str(config), dsn=dsn, OCS_DAEMON__WORKERS="2", PATH=path)
    assert refused.proc.wait(60) == 1
    assert "daemon.workers = 2 needs redis.url or an installed redis-server" in refused.output()
    single = daemons("--config", str(config), dsn=dsn, OCS_DAEMON__WORKERS="auto", PATH=path)
    if CORES > 1:
        single.wait_for("daemon.workers = auto runs one process", timeout=60)
    single.wait_for("msg='ready pid=", timeout=60)
    assert "worker started" not in single.output()
    assert single.stop() == 0


@dataclass(frozen=True)
class Nas:
    """How a client of one profile names its subscriber and its call."""

    profile: str
    echoes_class: bool  # else it names the call by h323-conf-id (FreeSWITCH)

    def subscriber(self, n: int) -> tuple[int, bytes]:
        if self.echoes_class:
            return codec.attr_str(codec.USER_NAME, f"wk{n}")
        return codec.attr_str(codec.CALLING_STATION_ID, f"+4144555{n:04d}")

    def call(self, n: int, attempt: int) -> list[tuple[int, bytes]]:
        if self.echoes_class:
            return []
        return [codec.attr_vsa(VENDOR_CISCO, CISCO_H323_CONF_ID, f"conf-{n}-{attempt}".encode())]

    def access(self, n: int, identifier: int, attempt: int = 0) -> bytes:
        return codec.encode_request(
            codec.ACCESS_REQUEST,
            identifier,
            SECRET,
            [
                self.subscriber(n),
                (codec.NAS_IP_ADDRESS, b"\x7f\x00\x00\x01"),
                *self.call(n, attempt),
            ],
        )

    def accounting(
        self, n: int, identifier: int, klass: bytes | None, *, stop_after_s: int = 0
    ) -> bytes:
        """A Start, or with ``stop_after_s`` the Stop of a session that lasted that long."""
        attributes = [
            self.subscriber(n),
            codec.attr_int(codec.ACCT_STATUS_TYPE, 2 if stop_after_s else 1),
            codec.attr_str(codec.ACCT_SESSION_ID, f"call-{n}"),
            (codec.NAS_IP_ADDRESS, b"\x7f\x00\x00\x01"),
            *self.call(n, 0),
        ]
        if stop_after_s:
            attributes.append(codec.attr_int(codec.ACCT_SESSION_TIME, stop_after_s))
        if klass is not None:
            attributes.append((codec.CLASS, klass))
        return codec.encode_request(
            codec.ACCOUNTING_REQUEST, identifier, SECRET, attributes, message_authenticator=False
        )


def prepaid_users(dsn: str, nas: Nas, count: int = 8) -> list[str]:
    """The demo data, and ``count`` accounts wk0... on the demo tariff with 1.00 each (1000 s),
    named as ``nas`` names its subscribers."""
    users = [f"wk{n}" for n in range(count)]
    run_ocs("demo", "load", dsn=dsn)
    for n, user in enumerate(users):
        assert run_ocs("account", "create", user, "--tariff", "demo", dsn=dsn).code == 0
        kind, value = ("user_name", user) if nas.echoes_class else ("e164", f"+4144555{n:04d}")
        assert run_ocs("identity", "add", user, kind, value, dsn=dsn).code == 0
        assert run_ocs("payment", "add", user, "1.00", dsn=dsn).code == 0
    return users


@pytest.mark.skipif(CORES < 2, reason="auto is one process on a one-core machine")
@pytest.mark.parametrize(
    "nas",
    [Nas("generic", echoes_class=True), Nas("freeswitch", echoes_class=False)],
    ids=lambda nas: nas.profile,
)
def test_a_call_holds_its_credit_whichever_worker_its_start_reaches(
    dsn: str, daemons, tmp_path: Path, nas: Nas
) -> None:
    """Each of 8 prepaid accounts (1.00: 1000 s) is admitted (all its credit held by the
    admission), and its call starts, the Start sent from another source port, so the kernel
    may give it to either worker; it echoes the Access-Accept's Class (generic), or names the
    call by h323-conf-id as FreeSWITCH does. Once the admissions' ring timeout (2 s) has
    passed, the running calls still hold the credit: a second call of each account is
    refused. (A Start that reached the other worker used to hold nothing there, and the
    admission's hold went at the ring timeout: a second call was admitted.) Then the calls
    stop, each charged once, to the micro-unit."""
    require(REDIS_SERVER, "redis-server")
    users = prepaid_users(dsn, nas)
    supervisor, auth, acct, metrics = two_workers(
        daemons,
        dsn,
        tmp_path / "calls.toml",
        client=f'profile = "{nas.profile}"',
        extra="[grant]\nring_timeout_s = 2\n",
    )
    classes: list[bytes | None] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as nas_socket:
        for n in range(len(users)):
            accept = exchange(auth, nas.access(n, identifier=n), nas_socket)
            assert accept is not None and accept.code == codec.ACCESS_ACCEPT
            assert accept.get_int(codec.SESSION_TIMEOUT) == 1000
            klass = accept.get(codec.CLASS)
            if nas.echoes_class:
                assert klass is not None and klass.startswith(b"ocs:w")
            else:
                assert klass is None
            classes.append(klass)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other_port:
                started = exchange(acct, nas.accounting(n, n, klass), other_port)
            assert started is not None and started.code == codec.ACCOUNTING_RESPONSE
        time.sleep(3.0)  # the ring timeout has passed: only the calls hold credit now
        again = [
            exchange(auth, nas.access(n, identifier=100 + n, attempt=1), nas_socket)
            for n in range(len(users))
        ]
    codes = [a.code if a is not None else None for a in again]
    assert codes == [codec.ACCESS_REJECT] * len(users), codes
    before = {user: balance(dsn, user) for user in users}
    for n, klass in enumerate(classes):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other_port:
            stop = nas.accounting(n, 50 + n, klass, stop_after_s=60)
            stopped = exchange(acct, stop, other_port)
        assert stopped is not None and stopped.code == codec.ACCOUNTING_RESPONSE
    for user in users:  # 60 s at 0.06 a minute, charged once, where the session ran
        assert_ledger(dsn, user, before[user], money("0.06"))
    # Some requests reached a worker other than their call's and were relayed (none of the
    # 16 accounting requests, nor of the 16 FreeSWITCH Access-Requests: 1 in 65,536).
    _, body = get(f"http://127.0.0.1:{metrics}/metrics")
    text = body.decode()
    relayed_out = sum(sample(text, "ocs_radius_relayed_total", direction="out"))
    assert relayed_out == sum(sample(text, "ocs_radius_relayed_total", direction="in")) > 0
    assert sum(sample(text, "ocs_radius_relayed_total", direction="handled_here")) == 0
    relay_dir = tmp_path / "ocsd.lock.relay"
    assert sorted(p.name for p in relay_dir.iterdir()) == ["w0", "w1"]
    assert relay_dir.stat().st_mode & 0o777 == 0o700
    assert supervisor.stop() == 0
    assert not relay_dir.exists()


@pytest.mark.skipif(CORES < 2, reason="auto is one process on a one-core machine")
def test_accounting_without_the_class_meets_its_session_on_one_worker(
    dsn: str, daemons, tmp_path: Path
) -> None:
    """A generic NAS that does not echo Class (RFC 2865 says it should) and sends each request
    from a new source port: the kernel gives each to either worker. Its Start and its Stop go
    to the worker of their Acct-Session-Id, so the Stop ends the session where it runs: once
    the calls are over no worker keeps a running session or a hold, and each call is charged
    once. (Handled where they landed, as before, 8 calls left 5 sessions running and 2 holds
    10 s after their Stops, to stay until the sessions' expiry.)"""
    require(REDIS_SERVER, "redis-server")
    nas = Nas("generic", echoes_class=True)  # its profile expects the Class back; none comes
    users = prepaid_users(dsn, nas)
    supervisor, auth, acct, metrics = two_workers(
        daemons,
        dsn,
        tmp_path / "noclass.toml",
        client='profile = "generic"',
        extra="[grant]\nring_timeout_s = 2\n",
    )
    before = {user: balance(dsn, user) for user in users}
    for n in range(len(users)):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as port_a:
            accept = exchange(auth, nas.access(n, identifier=n), port_a)
        assert accept is not None and accept.code == codec.ACCESS_ACCEPT
        for identifier, stop_after_s in ((n, 0), (50 + n, 60)):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as port_b:
                request = nas.accounting(n, identifier, None, stop_after_s=stop_after_s)
                answer = exchange(acct, request, port_b)
            assert answer is not None and answer.code == codec.ACCOUNTING_RESPONSE
    for user in users:  # 60 s at 0.06 a minute, charged once
        assert_ledger(dsn, user, before[user], money("0.06"))
    # The gauges follow the books once a second; the admissions' holds end at the ring
    # timeout (2 s) on the worker that made them.
    deadline = time.monotonic() + 10
    while True:
        _, body = get(f"http://127.0.0.1:{metrics}/metrics")
        text = body.decode()
        running = sum(sample(text, "ocs_active_sessions"))
        held = sum(sample(text, "ocs_reservations"))
        if (running, held) == (0, 0) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert (running, held) == (0, 0)
    assert sum(sample(text, "ocs_radius_relayed_total", direction="out")) > 0
    assert supervisor.stop() == 0


@pytest.mark.skipif(CORES < 2, reason="auto is one process on a one-core machine")
def test_accounting_on_ends_the_nas_sessions_on_every_worker(
    dsn: str, daemons, tmp_path: Path
) -> None:
    """8 sessions of one NAS, their Starts spread over both workers (by Acct-Session-Id);
    then the NAS reboots (Accounting-On). The database closes all 8, and every worker ends
    those it runs: none is left running, counted against max_sessions, until it expires.
    (Before, the worker that took the Accounting-On ended only its own.)"""
    require(REDIS_SERVER, "redis-server")
    run_ocs("demo", "load", dsn=dsn)
    supervisor, _, acct, metrics = two_workers(
        daemons, dsn, tmp_path / "on.toml", client='profile = "generic"'
    )

    def accounting(identifier: int, status: int, session: str | None) -> None:
        attributes = [
            codec.attr_int(codec.ACCT_STATUS_TYPE, status),
            codec.attr_str(codec.NAS_IDENTIFIER, "nas-reboots"),
        ]
        if session is not None:
            attributes += [
                codec.attr_str(codec.USER_NAME, "postpaid"),
                codec.attr_str(codec.ACCT_SESSION_ID, session),
            ]
        request = codec.encode_request(
            codec.ACCOUNTING_REQUEST, identifier, SECRET, attributes, message_authenticator=False
        )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as port:
            answer = exchange(acct, request, port)
        assert answer is not None and answer.code == codec.ACCOUNTING_RESPONSE

    def running(expected: int) -> list[float]:
        deadline = time.monotonic() + 5  # the gauges follow the books once a second
        while True:
            _, body = get(f"http://127.0.0.1:{metrics}/metrics")
            found = sample(body.decode(), "ocs_active_sessions")
            if (len(found) == 2 and sum(found) == expected) or time.monotonic() > deadline:
                return found
            time.sleep(0.5)

    def open_in_database() -> int:
        query = "SELECT count(*) FROM sessions WHERE origin = $1 AND closed_at IS NULL"
        return int(sql(dsn, query, "nas-reboots")[0][0])

    for n in range(8):
        accounting(n, 1, f"reboot-{n}")
    spread = running(8)
    assert sum(spread) == 8 and min(spread) > 0, spread  # both workers run some
    assert open_in_database() == 8
    accounting(100, 7, None)  # Accounting-On
    assert running(0) == [0.0, 0.0]
    assert open_in_database() == 0
    assert supervisor.stop() == 0
