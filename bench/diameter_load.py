"""Diameter credit-control load generator: CCR-Initial + CCR-Termination pairs against one ocsd.

Run (the daemon with the demo data and a [diameter] section allowing *.localdomain from
127.0.0.1, see the note at the end of this docstring):

    .venv/bin/python bench/diameter_load.py --port 3868 [--connections 4] [--depth 64]
        [--pairs 200000] [--duration-s 20] [--user postpaid | --users 10000] [--used-s 0]

Each connection does its own CER, then keeps ``--depth`` sessions in flight: a CCR-I (asking
for 60 s, so the account's reservations stay small), and on its answer the session's CCR-T
(reporting ``--used-s`` seconds; 0 means nothing to record, so the daemon answers from memory;
> 0 makes every CCR-T a committed database write). ``--users N`` spreads the sessions over
the first N accounts that ``bench/seed_accounts.py`` creates (its accepting ones, round robin)
instead of one ``--user``, so the writes do not all queue for one account's row. Those accounts
have no tariff unless seeded with ``--charged``: without it every record charges 0, which writes
the ledger but changes no balance and announces nothing; with it each record charges its
account and every daemon process hears of it, as in production. Requests
are pre-encoded templates whose Session-Id, identifiers and User-Name are patched in place,
so the client spends little per request.
Prints CCR/s (both kinds counted), pairs/s, p50/p99/max latency per CCR and the Result-Code
counts. Bounded by ``--pairs`` and ``--duration-s``; loopback addresses only. Figures go in
notes, not tests.

A daemon config for it (plus [database] as you run it):

    [diameter]
    enabled = true
    listen = ["127.0.0.1:3868"]
    max_connections = 64
    [[diameter.peers]]
    origin_host = "*.localdomain"
    address = "127.0.0.1"
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import statistics
import struct
import sys
import time
from collections import Counter
from pathlib import Path

from ocs.diameter import codec
from ocs.diameter.codec import (
    FLAG_PROXIABLE,
    FLAG_REQUEST,
    avp_grouped,
    avp_u32,
    avp_utf8,
    encode_avp,
    encode_message,
)
from ocs.diameter.framer import Framer

_RESULT_CODE_AVP = struct.pack(">II", codec.AVP_RESULT_CODE, 0x40000000 | 12)
_U32 = struct.Struct(">I")
_SESSION_DIGITS = 12
RUN_ID = f"{time.time_ns():x}"  # Session-Ids differ from run to run (sessions persist)


def cer(host: str) -> bytes:
    return encode_message(
        command_code=codec.CMD_CAPABILITIES_EXCHANGE,
        application_id=0,
        hop_by_hop=1,
        end_to_end=1,
        avps=[
            encode_avp(codec.AVP_ORIGIN_HOST, host.encode()),
            encode_avp(codec.AVP_ORIGIN_REALM, b"localdomain"),
            codec.avp_address(codec.AVP_HOST_IP_ADDRESS, "127.0.0.1"),
            avp_u32(codec.AVP_VENDOR_ID, 0),
            avp_utf8(codec.AVP_PRODUCT_NAME, "diameter_load", mandatory=False),
            avp_u32(codec.AVP_AUTH_APPLICATION_ID, 4),
        ],
        flags=FLAG_REQUEST,
    )


class Template:
    """A CCR with a fixed-width session number and User-Name to patch:
    ``render(hop, session, user)``, ``user`` as long as the one given here."""

    def __init__(self, host: str, request_type: int, user: str, used_s: int) -> None:
        self.marker = b"9" * _SESSION_DIGITS
        user_marker = "#" * len(user.encode())
        avps = [
            avp_utf8(codec.AVP_SESSION_ID, f"{host};{RUN_ID};{self.marker.decode()}"),
            encode_avp(codec.AVP_ORIGIN_HOST, host.encode()),
            encode_avp(codec.AVP_ORIGIN_REALM, b"localdomain"),
            encode_avp(codec.AVP_DESTINATION_REALM, b"localdomain"),
            avp_u32(codec.AVP_AUTH_APPLICATION_ID, 4),
            avp_utf8(codec.AVP_SERVICE_CONTEXT_ID, "32260@3gpp.org"),
            avp_u32(codec.AVP_CC_REQUEST_TYPE, request_type),
            avp_u32(codec.AVP_CC_REQUEST_NUMBER, 0 if request_type == 1 else 1),
            avp_grouped(
                codec.AVP_SUBSCRIPTION_ID,
                [
                    avp_u32(codec.AVP_SUBSCRIPTION_ID_TYPE, 4),  # END_USER_PRIVATE
                    avp_utf8(codec.AVP_SUBSCRIPTION_ID_DATA, "unused"),
                ],
            ),
            avp_utf8(codec.AVP_USER_NAME, user_marker),
        ]
        if request_type == 1:
            avps.append(
                avp_grouped(codec.AVP_REQUESTED_SERVICE_UNIT, [avp_u32(codec.AVP_CC_TIME, 60)])
            )
        elif used_s:
            avps.append(
                avp_grouped(codec.AVP_USED_SERVICE_UNIT, [avp_u32(codec.AVP_CC_TIME, used_s)])
            )
        message = encode_message(
            command_code=codec.CMD_CREDIT_CONTROL,
            application_id=4,
            hop_by_hop=0,
            end_to_end=0,
            avps=avps,
            flags=FLAG_REQUEST | FLAG_PROXIABLE,
        )
        self.prefix = message[:12]
        at = message.index(self.marker)
        user_at = message.index(user_marker.encode(), at)
        self.middle = message[20:at]
        self.between = message[at + _SESSION_DIGITS : user_at]
        self.suffix = message[user_at + len(user_marker) :]

    def render(self, hop_by_hop: int, session: int, user: bytes) -> bytes:
        ids = _U32.pack(hop_by_hop) * 2
        return b"".join(
            (self.prefix, ids, self.middle, b"%012d" % session, self.between, user, self.suffix)
        )


class LoadConnection(asyncio.Protocol):
    def __init__(self, bench: Bench, index: int) -> None:
        self.bench = bench
        host = f"bench-{index}.localdomain"
        self.host = host
        self.initial = Template(host, 1, bench.users[0].decode(), bench.used_s)
        self.final = Template(host, 3, bench.users[0].decode(), bench.used_s)
        self.framer = Framer(1 << 20)
        self.transport: asyncio.Transport | None = None
        self.opened = asyncio.get_running_loop().create_future()
        # hop -> (sent, session, initial)
        self.inflight: dict[int, tuple[float, int, bool]] = {}
        self.next_hop = 1000
        self.done = asyncio.get_running_loop().create_future()
        self._out: list[bytes] = []
        self.running = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(cer(self.host))  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed before the CEA"))
        if not self.done.done():
            self.done.set_result(None)

    def start(self, depth: int) -> None:
        self.running = True
        for _ in range(depth):
            self._send_initial()
        self._flush()

    def _send_initial(self) -> None:
        session = self.bench.new_session()
        if session is None:
            return
        self._send(self.initial, session, True)

    def _send(self, template: Template, session: int, initial: bool) -> None:
        hop = self.next_hop = (self.next_hop + 1) & 0xFFFFFFFF
        self.inflight[hop] = (time.perf_counter(), session, initial)
        self._out.append(template.render(hop, session, self.bench.user_of(session)))

    def _flush(self) -> None:
        if self._out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self._out))
        self._out.clear()
        if self.running and not self.inflight and not self.done.done():
            self.done.set_result(None)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        bench = self.bench
        for message in self.framer.feed(data):
            command = int.from_bytes(message[5:8], "big")
            code = _result_code(message)
            if command == codec.CMD_CAPABILITIES_EXCHANGE:
                if code == 2001:
                    self.opened.set_result(None)
                else:
                    self.opened.set_exception(ConnectionError(f"CEA {code}"))
                continue
            if command != codec.CMD_CREDIT_CONTROL or message[4] & FLAG_REQUEST:
                continue  # a DWR would be answered by a real client; runs here are short
            hop = _U32.unpack_from(message, 12)[0]
            sent, session, initial = self.inflight.pop(hop)
            bench.record(now - sent, code, initial)
            if initial and code == 2001:
                self._send(self.final, session, False)
            elif not bench.stopping():
                self._send_initial()
        self._flush()


def _result_code(message: bytes) -> int:
    at = message.find(_RESULT_CODE_AVP, 20)
    return _U32.unpack_from(message, at + 8)[0] if at >= 0 else -1


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.user = args.user
        if args.users:
            self.users = [
                b"4178%07d" % i
                for i in range(1, args.users + 1)
                if i % 10 == 5 or (i % 10 != 0 and i % 97 != 0)
            ]
            self.user = f"{args.users} seeded accounts"
        else:
            self.users = [args.user.encode()]
        self.used_s = args.used_s
        self.pairs = args.pairs
        self.duration_s = args.duration_s
        self.sessions_started = 0
        self.started = 0.0
        self.latencies: list[float] = []
        self.codes: Counter[tuple[str, int]] = Counter()
        self.answers = 0

    def stopping(self) -> bool:
        return (
            self.sessions_started >= self.pairs
            or time.perf_counter() - self.started >= self.duration_s
        )

    def new_session(self) -> int | None:
        if self.stopping():
            return None
        self.sessions_started += 1
        return self.sessions_started

    def user_of(self, session: int) -> bytes:
        return self.users[session % len(self.users)]

    def record(self, latency: float, code: int, initial: bool) -> None:
        self.answers += 1
        self.latencies.append(latency)
        self.codes[("CCR-I" if initial else "CCR-T", code)] += 1


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


def cpu_seconds(pids: list[int]) -> tuple[float, float]:
    """CPU seconds (user + system) of these processes and their descendants: (the server's,
    its embedded PostgreSQL's), the latter told apart by the process name."""
    server = database = 0.0
    seen: set[int] = set()
    for root in pids:
        for pid in _tree(root):
            if pid in seen:
                continue
            seen.add(pid)
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat.rsplit(")", 1)[1].split()
            spent = (int(fields[11]) + int(fields[12])) / _CLK_TCK
            if name.startswith(("postgres", "postmaster")):
                database += spent
            else:
                server += spent
    return server, database


async def run(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    bench = Bench(args)
    connections = []
    for index in range(args.connections):
        _transport, connection = await loop.create_connection(
            lambda index=index: LoadConnection(bench, index), args.host, args.port
        )
        await asyncio.wait_for(connection.opened, 5)
        connections.append(connection)
    bench.started = time.perf_counter()
    cpu_before = cpu_seconds(args.server_pid)
    own_before = time.process_time()
    for connection in connections:
        connection.start(args.depth)
    await asyncio.wait_for(asyncio.gather(*(c.done for c in connections)), args.duration_s + 30)
    elapsed = time.perf_counter() - bench.started
    cpu_after = cpu_seconds(args.server_pid)
    own = time.process_time() - own_before
    for connection in connections:
        if connection.transport is not None:
            connection.transport.close()
    latencies = sorted(bench.latencies)
    if not latencies:
        print("no answers")
        return
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    pairs = sum(n for (kind, _code), n in bench.codes.items() if kind == "CCR-T")
    print(
        f"{args.connections} connections x depth {args.depth}, user {bench.user!r}, "
        f"CCR-T used {args.used_s} s, {elapsed:.2f} s"
    )
    print(f"  CCR/s      {bench.answers / elapsed:10.0f}   (answers {bench.answers})")
    print(f"  pairs/s    {pairs / elapsed:10.0f}   (CCR-I + CCR-T)")
    print(
        f"  latency    p50 {p50 * 1e3:.2f} ms   p99 {p99 * 1e3:.2f} ms   "
        f"max {latencies[-1] * 1e3:.2f} ms   mean {statistics.fmean(latencies) * 1e3:.2f} ms"
    )
    for (kind, code), count in sorted(bench.codes.items()):
        print(f"  {kind} {code}: {count}")
    print(f"  client CPU {own / elapsed * 100:6.0f} %   {own / bench.answers * 1e6:.1f} µs per CCR")
    if args.server_pid:
        server = cpu_after[0] - cpu_before[0]
        database = cpu_after[1] - cpu_before[1]
        print(
            f"  server CPU {server / elapsed * 100:6.0f} %   "
            f"{server / bench.answers * 1e6:.1f} µs per CCR (pids {args.server_pid} and "
            "descendants, PostgreSQL apart)"
        )
        if database:
            print(
                f"  PostgreSQL {database / elapsed * 100:6.0f} %   "
                f"{database / bench.answers * 1e6:.1f} µs per CCR"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3868)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--depth", type=int, default=64, help="sessions in flight per connection")
    parser.add_argument("--pairs", type=int, default=200_000, help="sessions (CCR-I + CCR-T)")
    parser.add_argument("--duration-s", type=float, default=20.0, help="time bound")
    parser.add_argument("--user", default="postpaid", help="User-Name of a demo account")
    parser.add_argument(
        "--users", type=int, default=0, help="spread over N accounts of bench/seed_accounts.py"
    )
    parser.add_argument("--used-s", type=int, default=0, help="seconds reported in each CCR-T")
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument(
        "--server-pid",
        type=int,
        action="append",
        default=[],
        help="measure this server's CPU per CCR (with its descendants; repeatable)",
    )
    args = parser.parse_args()
    if not ipaddress.ip_address(args.host).is_loopback:
        parser.error("loopback addresses only: this is a load generator")
    if not 1 <= args.connections <= 64 or not 1 <= args.depth <= 4096:
        parser.error("--connections 1..64, --depth 1..4096")
    if args.no_uvloop:
        asyncio.run(run(args))
    else:
        import uvloop  # noqa: PLC0415

        uvloop.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
