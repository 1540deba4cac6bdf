"""Charging-session load with a ledger: RADIUS and Diameter sessions that start, use and end,
sent the way a NAS or a PCEF sends them (retransmitted until answered), counting exactly what
was reported and acknowledged, so a test can compare the database's ledger with it.

RADIUS session: Access-Request (optional), Accounting Start, after ``hold_s`` an
Interim-Update, then a Stop with the session's Acct-Session-Time. Every request is
retransmitted unchanged (same identifier and authenticator, as RFC 5080 expects) every
``retry_s`` until an answer comes or ``give_up_s`` passes.

Diameter session: CCR-I (asking for 60 s), after ``hold_s`` a CCR-U reporting half of the
session's seconds, then a CCR-T reporting the rest. An answer of 3004 (too busy) or no answer
is retried with the T flag; a lost connection is reopened (CER) and what was pending is sent
again with the T flag. DWRs from the server are answered.

Usage seconds per session are fixed by the caller; at the demo tariff (0.06 per minute, per
second) one second is 1,000 micro-units. ``seed_load_accounts`` creates accounts for it.

Library (``RadiusLoad``, ``DiameterLoad``, ``run_mixed``) for the fault tests and
``bench/soak.py``; also a command line:

    .venv/bin/python bench/usage_load.py --radius-auth 1812 --radius-acct 1813 \\
        --diameter 3868 --sessions 500 --rate 50 --seconds-per-session 30 --duration-s 60

Bounded in sessions and time; loopback addresses only.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import ipaddress
import itertools
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from ocs.diameter import codec as dcodec
from ocs.diameter.codec import (
    FLAG_PROXIABLE,
    FLAG_REQUEST,
    FLAG_RETRANSMIT,
    avp_address,
    avp_grouped,
    avp_u32,
    avp_utf8,
    encode_avp,
    encode_message,
    peek_header,
)
from ocs.diameter.framer import Framer
from ocs.diameter.peer_state import build_dwa
from ocs.radius import codec

MAX_SESSIONS = 10_000_000
MAX_DURATION_S = 3600.0
MICROS_PER_SECOND = 1000  # the demo tariff: 0.06 per minute, billed per second


def check_loopback(host: str) -> None:
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit("loopback addresses only: this is a load generator")


@dataclasses.dataclass
class Ledger:
    """What one generator reported and what was acknowledged."""

    sessions_started: int = 0
    sessions_done: int = 0
    sessions_refused: int = 0  # admission refused: no usage sent for them
    sessions_failed: int = 0  # a request never answered within give_up_s
    requests: int = 0
    retries: int = 0
    answers: Counter[str] = dataclasses.field(default_factory=Counter)
    acked_seconds: dict[str, int] = dataclasses.field(default_factory=dict)  # session -> s
    latencies: list[float] = dataclasses.field(default_factory=list)

    @property
    def acked_micros(self) -> int:
        return sum(self.acked_seconds.values()) * MICROS_PER_SECOND

    def p99_ms(self, since: int = 0) -> float | None:
        window = sorted(self.latencies[since:])
        if not window:
            return None
        return window[min(len(window) - 1, int(len(window) * 0.99))] * 1000

    def summary(self) -> dict[str, Any]:
        return {
            "sessions_started": self.sessions_started,
            "sessions_done": self.sessions_done,
            "sessions_refused": self.sessions_refused,
            "sessions_failed": self.sessions_failed,
            "requests": self.requests,
            "retries": self.retries,
            "answers": dict(self.answers),
            "acked_seconds": sum(self.acked_seconds.values()),
            "acked_micros": self.acked_micros,
            "p99_ms": self.p99_ms(),
        }


# --------------------------------------------------------------------------------- RADIUS


class _RadiusSocket(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.waiting: dict[int, asyncio.Future[bytes]] = {}
        self.free = list(range(256))
        random.shuffle(self.free)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) >= 20:
            future = self.waiting.get(data[1])
            if future is not None and not future.done():
                future.set_result(data)


class RadiusClient:
    """Several UDP sockets to one ocsd port; identifiers handed out per socket."""

    def __init__(self, host: str, port: int, secret: bytes, sockets: int = 8) -> None:
        check_loopback(host)
        self.host, self.port = host, port
        self.secret = codec.SharedSecret(secret)
        self._count = sockets
        self._sockets: list[_RadiusSocket] = []
        self._slot_free = asyncio.Condition()

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(self._count):
            _t, proto = await loop.create_datagram_endpoint(
                _RadiusSocket, remote_addr=(self.host, self.port)
            )
            self._sockets.append(proto)

    def close(self) -> None:
        for sock in self._sockets:
            if sock.transport is not None:
                sock.transport.close()

    async def _slot(self) -> tuple[_RadiusSocket, int]:
        async with self._slot_free:
            while True:
                for sock in random.sample(self._sockets, len(self._sockets)):
                    if sock.free:
                        return sock, sock.free.pop()
                await self._slot_free.wait()

    async def _release(self, sock: _RadiusSocket, identifier: int) -> None:
        sock.waiting.pop(identifier, None)
        async with self._slot_free:
            sock.free.append(identifier)
            self._slot_free.notify()

    async def request(
        self,
        code: int,
        attributes: Sequence[tuple[int, bytes]],
        ledger: Ledger,
        *,
        retry_s: float,
        give_up_s: float,
        message_authenticator: bool,
    ) -> codec.Packet | None:
        sock, identifier = await self._slot()
        try:
            packet = codec.encode_request(
                code,
                identifier,
                self.secret,
                list(attributes),
                message_authenticator=message_authenticator,
            )
            loop = asyncio.get_running_loop()
            started = loop.time()
            future: asyncio.Future[bytes] = loop.create_future()
            sock.waiting[identifier] = future
            ledger.requests += 1
            while True:
                assert sock.transport is not None
                sock.transport.sendto(packet)
                left = give_up_s - (loop.time() - started)
                if left <= 0:
                    return None
                try:
                    data = await asyncio.wait_for(asyncio.shield(future), min(retry_s, left))
                except TimeoutError:
                    ledger.retries += 1
                    continue
                ledger.latencies.append(loop.time() - started)
                return codec.parse_packet(data)
        finally:
            await self._release(sock, identifier)


@dataclasses.dataclass
class RadiusLoad:
    """RADIUS sessions (Access-Request, Start, Interim, Stop) against one ocsd."""

    host: str
    auth_port: int | None
    acct_port: int
    users: Sequence[str]
    secret: bytes = b"testing123"
    seconds_per_session: int = 30
    hold_s: float = 0.2
    retry_s: float = 1.0
    give_up_s: float = 180.0
    nas_id: str = "load-nas"
    run_id: str = dataclasses.field(default_factory=lambda: f"{time.time_ns():x}")
    ledger: Ledger = dataclasses.field(default_factory=Ledger)

    async def open(self) -> None:
        self.acct = RadiusClient(self.host, self.acct_port, self.secret)
        await self.acct.open()
        self.auth = None
        if self.auth_port is not None:
            self.auth = RadiusClient(self.host, self.auth_port, self.secret)
            await self.auth.open()

    def close(self) -> None:
        self.acct.close()
        if self.auth is not None:
            self.auth.close()

    async def session(self, n: int) -> None:
        ledger = self.ledger
        ledger.sessions_started += 1
        user = self.users[n % len(self.users)].encode()
        key = f"{self.run_id}-r{n}"
        timing = {"retry_s": self.retry_s, "give_up_s": self.give_up_s}
        if self.auth is not None:
            reply = await self.auth.request(
                codec.ACCESS_REQUEST,
                [(codec.USER_NAME, user), (codec.NAS_IDENTIFIER, self.nas_id.encode())],
                ledger,
                message_authenticator=True,
                **timing,
            )
            outcome = "timeout" if reply is None else f"access_{reply.code}"
            ledger.answers[outcome] += 1
            if reply is None:
                ledger.sessions_failed += 1
                return
            if reply.code != codec.ACCESS_ACCEPT:
                ledger.sessions_refused += 1
                return
        seconds = self.seconds_per_session
        for status, used in ((1, 0), (3, seconds // 2), (2, seconds)):
            if status != 1:
                await asyncio.sleep(self.hold_s / 2)
            reply = await self.acct.request(
                codec.ACCOUNTING_REQUEST,
                [
                    (codec.USER_NAME, user),
                    codec.attr_int(codec.ACCT_STATUS_TYPE, status),
                    codec.attr_str(codec.ACCT_SESSION_ID, key),
                    (codec.NAS_IDENTIFIER, self.nas_id.encode()),
                    codec.attr_int(codec.ACCT_SESSION_TIME, used),
                ],
                ledger,
                message_authenticator=False,
                **timing,
            )
            if reply is None:
                ledger.answers["acct_timeout"] += 1
                ledger.sessions_failed += 1
                return
            ledger.answers[f"acct_{reply.code}"] += 1
        ledger.acked_seconds[key] = seconds
        ledger.sessions_done += 1


# ------------------------------------------------------------------------------- Diameter

_RESULT_CODE = dcodec.AVP_RESULT_CODE


def _result_code(message: bytes) -> int | None:
    try:
        found = dcodec.parse_message(message).find(_RESULT_CODE)
    except dcodec.MalformedMessage:
        return None
    return found.as_u32() if found is not None else None


class _DiameterConnection(asyncio.Protocol):
    def __init__(self, client: DiameterClient) -> None:
        self.client = client
        self.framer = Framer(1 << 20)
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.client.cer())  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed before the CEA"))
        if not self.lost.done():
            self.lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        for message in self.framer.feed(data):
            command = int.from_bytes(message[5:8], "big")
            if message[4] & FLAG_REQUEST:
                if command == dcodec.CMD_DEVICE_WATCHDOG and self.transport is not None:
                    self.transport.write(
                        build_dwa(
                            peek_header(message),
                            origin_host=self.client.origin_host,
                            origin_realm="localdomain",
                            origin_state_id=self.client.state_id,
                        )
                    )
                continue
            if command == dcodec.CMD_CAPABILITIES_EXCHANGE:
                if _result_code(message) == 2001:
                    self.opened.set_result(None)
                else:
                    self.opened.set_exception(ConnectionError("CER refused"))
                continue
            hop = int.from_bytes(message[12:16], "big")
            future = self.client.waiting.pop(hop, None)
            if future is not None and not future.done():
                future.set_result(message)


class DiameterClient:
    """One Diameter peer connection that comes back when it is lost."""

    def __init__(self, host: str, port: int, origin_host: str) -> None:
        check_loopback(host)
        self.host, self.port, self.origin_host = host, port, origin_host
        self.state_id = int(time.time()) & 0xFFFFFFFF
        self.waiting: dict[int, asyncio.Future[bytes]] = {}
        self._hops = itertools.count(random.getrandbits(24))
        self._connection: _DiameterConnection | None = None
        self._connecting: asyncio.Lock | None = None
        self.reconnects = 0

    def cer(self) -> bytes:
        hop = self.next_hop()
        return encode_message(
            command_code=dcodec.CMD_CAPABILITIES_EXCHANGE,
            application_id=0,
            hop_by_hop=hop,
            end_to_end=hop,
            avps=[
                encode_avp(dcodec.AVP_ORIGIN_HOST, self.origin_host.encode()),
                encode_avp(dcodec.AVP_ORIGIN_REALM, b"localdomain"),
                avp_address(dcodec.AVP_HOST_IP_ADDRESS, "127.0.0.1"),
                avp_u32(dcodec.AVP_VENDOR_ID, 0),
                avp_utf8(dcodec.AVP_PRODUCT_NAME, "usage-load", mandatory=False),
                avp_u32(dcodec.AVP_AUTH_APPLICATION_ID, 4),
            ],
            flags=FLAG_REQUEST,
        )

    def next_hop(self) -> int:
        return next(self._hops) & 0xFFFFFFFF

    async def connected(self) -> _DiameterConnection:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            current = self._connection
            if current is not None and not current.lost.done():
                return current
            loop = asyncio.get_running_loop()
            while True:
                try:
                    _t, connection = await loop.create_connection(
                        lambda: _DiameterConnection(self), self.host, self.port
                    )
                    await asyncio.wait_for(connection.opened, 5)
                except (OSError, TimeoutError, ConnectionError):
                    await asyncio.sleep(0.5)
                    continue
                if current is not None:
                    self.reconnects += 1
                self._connection = connection
                return connection

    def close(self) -> None:
        if self._connection is not None and self._connection.transport is not None:
            self._connection.transport.close()

    async def request(
        self,
        build: Callable[[int, int, bool], bytes],
        ledger: Ledger,
        *,
        retry_s: float,
        give_up_s: float,
    ) -> int | None:
        """Send until a final answer (not 3004) comes; returns its Result-Code (None: none
        within ``give_up_s``). ``build(hop_by_hop, end_to_end, retransmit)``."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        end_to_end = self.next_hop()
        retransmit = False
        ledger.requests += 1
        while loop.time() - started < give_up_s:
            connection = await self.connected()
            hop = self.next_hop()
            future: asyncio.Future[bytes] = loop.create_future()
            self.waiting[hop] = future
            assert connection.transport is not None
            connection.transport.write(build(hop, end_to_end, retransmit))
            left = give_up_s - (loop.time() - started)
            done, _ = await asyncio.wait(
                {future, connection.lost},
                timeout=min(retry_s, max(left, 0.01)),
                return_when=asyncio.FIRST_COMPLETED,
            )
            self.waiting.pop(hop, None)
            if future in done:
                code = _result_code(future.result())
                if code != dcodec.DIAMETER_TOO_BUSY:
                    ledger.latencies.append(loop.time() - started)
                    return code
                # Refused for now (the server keeps that answer for this End-to-End id):
                # try again as a new request; its usage key makes it count once.
                ledger.answers["3004_retried"] += 1
                ledger.retries += 1
                await asyncio.sleep(min(retry_s, 0.5))
                end_to_end, retransmit = self.next_hop(), False
                continue
            ledger.retries += 1
            retransmit = True
        return None


def ccr(
    session_id: str,
    origin_host: str,
    request_type: int,
    number: int,
    user: str,
    *,
    requested_s: int | None = None,
    used_s: int | None = None,
) -> Callable[[int, int, bool], bytes]:
    avps = [
        avp_utf8(dcodec.AVP_SESSION_ID, session_id),
        encode_avp(dcodec.AVP_ORIGIN_HOST, origin_host.encode()),
        encode_avp(dcodec.AVP_ORIGIN_REALM, b"localdomain"),
        encode_avp(dcodec.AVP_DESTINATION_REALM, b"localdomain"),
        avp_u32(dcodec.AVP_AUTH_APPLICATION_ID, 4),
        avp_utf8(dcodec.AVP_SERVICE_CONTEXT_ID, "32260@3gpp.org"),
        avp_u32(dcodec.AVP_CC_REQUEST_TYPE, request_type),
        avp_u32(dcodec.AVP_CC_REQUEST_NUMBER, number),
        avp_utf8(dcodec.AVP_USER_NAME, user),
    ]
    if requested_s is not None:
        avps.append(
            avp_grouped(
                dcodec.AVP_REQUESTED_SERVICE_UNIT, [avp_u32(dcodec.AVP_CC_TIME, requested_s)]
            )
        )
    if used_s is not None:
        avps.append(
            avp_grouped(dcodec.AVP_USED_SERVICE_UNIT, [avp_u32(dcodec.AVP_CC_TIME, used_s)])
        )

    def build(hop: int, end_to_end: int, retransmit: bool) -> bytes:
        flags = FLAG_REQUEST | FLAG_PROXIABLE | (FLAG_RETRANSMIT if retransmit else 0)
        return encode_message(
            command_code=dcodec.CMD_CREDIT_CONTROL,
            application_id=4,
            hop_by_hop=hop,
            end_to_end=end_to_end,
            avps=avps,
            flags=flags,
        )

    return build


@dataclasses.dataclass
class DiameterLoad:
    """Diameter credit-control sessions (CCR-I, CCR-U, CCR-T) against one ocsd."""

    host: str
    port: int
    users: Sequence[str]
    connections: int = 2
    seconds_per_session: int = 30
    hold_s: float = 0.2
    retry_s: float = 1.0
    give_up_s: float = 180.0
    run_id: str = dataclasses.field(default_factory=lambda: f"{time.time_ns():x}")
    ledger: Ledger = dataclasses.field(default_factory=Ledger)

    async def open(self) -> None:
        self.clients = [
            DiameterClient(self.host, self.port, f"load{i}-{os.getpid()}.localdomain")
            for i in range(self.connections)
        ]
        for client in self.clients:
            await client.connected()

    def close(self) -> None:
        for client in self.clients:
            client.close()

    async def session(self, n: int) -> None:
        ledger = self.ledger
        ledger.sessions_started += 1
        client = self.clients[n % len(self.clients)]
        user = self.users[n % len(self.users)]
        session_id = f"{client.origin_host};{self.run_id};{n}"
        timing = {"retry_s": self.retry_s, "give_up_s": self.give_up_s}
        code = await client.request(
            ccr(session_id, client.origin_host, 1, 0, user, requested_s=60), ledger, **timing
        )
        ledger.answers[f"CCR-I_{code}"] += 1
        if code is None:
            ledger.sessions_failed += 1
            return
        if code != 2001:
            ledger.sessions_refused += 1
            return
        first = self.seconds_per_session // 2
        steps = ((2, 1, first), (3, 2, self.seconds_per_session - first))
        for request_type, number, used in steps:
            await asyncio.sleep(self.hold_s / 2)
            code = await client.request(
                ccr(session_id, client.origin_host, request_type, number, user, used_s=used),
                ledger,
                **timing,
            )
            label = "CCR-U" if request_type == 2 else "CCR-T"
            ledger.answers[f"{label}_{code}"] += 1
            if code != 2001:
                ledger.sessions_failed += 1
                return
        ledger.acked_seconds[session_id] = self.seconds_per_session
        ledger.sessions_done += 1


# ------------------------------------------------------------------------------ pacing


async def paced(
    load: RadiusLoad | DiameterLoad,
    *,
    rate: float,
    sessions: int,
    duration_s: float,
    max_open: int = 2000,
    stop: asyncio.Event | None = None,
) -> None:
    """Start ``rate`` sessions a second until ``sessions`` or ``duration_s`` (or ``stop``);
    then wait for every started session to finish."""
    if not 0 < sessions <= MAX_SESSIONS or not 0 < duration_s <= MAX_DURATION_S:
        raise ValueError("sessions and duration must be positive and bounded")
    loop = asyncio.get_running_loop()
    started = loop.time()
    gate = asyncio.Semaphore(max_open)
    tasks: set[asyncio.Task[None]] = set()

    async def one(n: int) -> None:
        try:
            await load.session(n)
        finally:
            gate.release()

    for n in range(sessions):
        if loop.time() - started >= duration_s or (stop is not None and stop.is_set()):
            break
        due = started + n / rate
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        await gate.acquire()
        task = asyncio.create_task(one(n))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    while tasks:
        await asyncio.gather(*tasks, return_exceptions=True)


SEED_SQL = """
WITH made AS (
    INSERT INTO accounts (name, status, credit_limit, tariff_id)
    SELECT $1 || lpad(i::text, 4, '0'), 'active', 1000000,
           (SELECT id FROM tariffs WHERE name = 'demo')
    FROM generate_series(1, $2::int) AS i
    ON CONFLICT (name) DO NOTHING
    RETURNING id, name)
INSERT INTO account_identities (account_id, kind, value)
SELECT id, 'user_name', name FROM made
"""


async def seed_load_accounts(conn: Any, count: int, prefix: str = "load-") -> list[str]:
    """``count`` postpaid accounts (limit 1,000,000.00, the demo tariff) named prefix0001...;
    the demo data must be loaded first (its tariff)."""
    await conn.execute(SEED_SQL, prefix, count)
    return [f"{prefix}{i:04d}" for i in range(1, count + 1)]


async def _main(args: argparse.Namespace) -> None:
    users = [u for u in args.users.split(",") if u]
    loads: list[tuple[RadiusLoad | DiameterLoad, float]] = []
    if args.radius_acct:
        loads.append(
            (
                RadiusLoad(
                    host=args.host,
                    auth_port=args.radius_auth,
                    acct_port=args.radius_acct,
                    users=users,
                    seconds_per_session=args.seconds_per_session,
                    hold_s=args.hold_s,
                ),
                args.rate,
            )
        )
    if args.diameter:
        loads.append(
            (
                DiameterLoad(
                    host=args.host,
                    port=args.diameter,
                    users=users,
                    seconds_per_session=args.seconds_per_session,
                    hold_s=args.hold_s,
                ),
                args.rate,
            )
        )
    for load, _ in loads:
        await load.open()
    started = time.perf_counter()
    await asyncio.gather(
        *(
            paced(load, rate=rate, sessions=args.sessions, duration_s=args.duration_s)
            for load, rate in loads
        )
    )
    elapsed = time.perf_counter() - started
    for load, _ in loads:
        load.close()
        name = type(load).__name__
        print(f"{name}: {elapsed:.1f} s {load.ledger.summary()}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--radius-auth", type=int)
    p.add_argument("--radius-acct", type=int)
    p.add_argument("--diameter", type=int)
    p.add_argument("--users", default="postpaid")
    p.add_argument("--sessions", type=int, default=500)
    p.add_argument("--rate", type=float, default=50.0, help="new sessions per second each")
    p.add_argument("--seconds-per-session", type=int, default=30)
    p.add_argument("--hold-s", type=float, default=0.2)
    p.add_argument("--duration-s", type=float, default=60.0)
    args = p.parse_args()
    check_loopback(args.host)
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
