"""The RADIUS front: datagrams in, charging pipeline, replies out.

Rules of this file:
- ``datagram_received`` never awaits and never decides: it appends to a bounded queue, or drops
  and counts when the queue is full. One worker drains the queue.
- The worker answers what the cache can answer synchronously (the hot path: Access-Request for a
  cached account). The replies it makes while it handles a run of queued datagrams are sent
  together when the run ends (at most ``SEND_BATCH`` at a time): a client that sent the run is
  woken once per run rather than once per reply (waking it was an eighth of the daemon's CPU
  in a profile; README, Performance). Replies made later, by tasks, are sent at once.
- Anything that needs the database (a cache miss, every accounting request) runs as a task, at
  most ``max_pending`` at once; beyond that the request is dropped and counted (the NAS
  retransmits).
- Packets from unknown sources, with a bad authenticator, malformed, or with a code that does not
  belong on the port are dropped and counted by cause (bounded labels), never answered.
- Message-Authenticator on Access-Request (BlastRADIUS, CVE-2024-3596), per client: ``true``
  drops a request without one; ``false`` accepts it; ``auto`` (the default) accepts it until that
  client address has sent one, and requires it from then on (FreeRADIUS 3.2.5). A wrong one is
  always dropped. Every drop for a missing one is a warning naming the client and the fix, at
  most one a minute per client (the others are counted into the next). Replies always carry one,
  first.
- A retransmission (same client address and port, identifier and authenticator) within
  ``duplicate_window_s`` gets the cached reply and causes no second decision or charge (RFC 5080).
- What the kernel drops when a socket's receive buffer is full is read from the socket once a
  second and counted (``receive_buffer_full``); nothing else would see it.
- An Accounting-Response is sent only after the usage is durable.
- Text from the wire is checked before it is used: an identity that cannot be one (a NUL,
  bytes that are not UTF-8, control characters, too long) is an unknown subscriber, counted by
  cause (``ocs_invalid_identities_total``); accounting whose identity, Acct-Session-Id or
  NAS-Identifier is such text is kept in ``unmatched_usage`` with the reason and the value
  escaped (``printable``). Such bytes never reach SQL.
- Each client has a profile (``ocs.radius.profiles``): which reply attributes its Access-Accept
  and Access-Reject carry beyond Session-Timeout / Reply-Message, and which attribute names a
  call in its accounting.
- An identity with a credential must prove its password (PAP, CHAP, MS-CHAPv2;
  ``ocs.radius.auth``) before its credit is looked at: a wrong or missing one is an
  Access-Reject for ``bad_credential`` and holds no credit. An identity the cache does not know
  has its credential looked up before it is admitted; identities without one cost one
  dictionary lookup.
- Nothing here knows SQL or balances: the pipeline does.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol, cast

from ocs.charging.errors import SourceRefused, SourceUnavailable, SpoolFull
from ocs.charging.pipeline import (
    CalledNumber,
    Charging,
    SessionId,
    unit_of_tariff,
)
from ocs.core.identity import (
    INTERNATIONAL,
    MAX_PRINTABLE_KEY_CHARS,
    DialPlan,
    IdentityError,
    IdentityKind,
    IdentityProblem,
    check_text,
    identity_from_bytes,
    printable,
)
from ocs.core.ledger import Counting, ReportKind
from ocs.core.model import CreditDecision, RefusalReason, ServiceUnit, Usage, refusal_text
from ocs.longlived import LongLivedDict
from ocs.metrics import DROP_CAUSES, Metrics
from ocs.radius import auth, codec
from ocs.radius.codec import MalformedPacket, Packet, SharedSecret
from ocs.radius.profiles import PROFILES, AccountingStyle, ReplySettings
from ocs.radius.relay import WorkerRelay, admission_owner, call_owner
from ocs.radius.spread import spread_by_identifier

# Looks a stored credential up in the database: (kind, normalized value) → stored form or None.
CredentialLookup = Callable[[IdentityKind, str], Awaitable[str | None]]

log = logging.getLogger("ocs.radius")

# (client address, port, identifier, authenticator): what makes a retransmission (RFC 5080)
ReplyKey = tuple[object, ...]

STATUS_START, STATUS_STOP, STATUS_INTERIM = 1, 2, 3
STATUS_ACCOUNTING_ON, STATUS_ACCOUNTING_OFF = 7, 8
STATUS_FAILED = 15  # RFC 2866 §5.1: a session that never began (a call not answered)
# What a client without Class relays by its call key (relay.py): admissions and accounting.
_CALL_CODES = frozenset((codec.ACCESS_REQUEST, codec.ACCOUNTING_REQUEST))
_STATUS_NAMES = {
    1: "start",
    2: "stop",
    3: "interim",
    7: "accounting_on",
    8: "accounting_off",
    15: "failed",
}


@dataclass(frozen=True, slots=True)
class AttributeRef:
    """An attribute by number, possibly vendor-specific (vendor 0: standard)."""

    name: str
    code: int
    vendor: int = 0

    def read(self, packet: Packet) -> str | None:
        raw = self.read_bytes(packet)
        return None if raw is None else raw.decode("utf-8", "replace")

    def read_bytes(self, packet: Packet) -> bytes | None:
        if self.vendor == 0:
            return packet.get(self.code)
        for vendor_type, value in packet.vendor_attributes(self.vendor):
            if vendor_type == self.code:
                return value
        return None


class MessageAuthenticatorPolicy(StrEnum):
    """Whether an Access-Request must carry a Message-Authenticator (config values)."""

    REQUIRED = "true"
    NOT_REQUIRED = "false"
    AUTO = "auto"  # required from a client address once it has sent one


# How often a client's missing Message-Authenticator is warned about (the rest are counted).
MA_WARNING_INTERVAL_S = 60.0
# How often a socket's kernel drops are warned about (every drop is counted).
DROP_WARNING_INTERVAL_S = 60.0
_MAX_LEARNED_ADDRESSES = 65536
# Replies the drain makes are sent together, at most this many at a time (see ``_drain``).
SEND_BATCH = 32
# getsockopt(SOL_SOCKET, SO_MEMINFO): nine u32 counters (linux/sock_diag.h); the ninth is the
# datagrams the socket dropped. Python's socket module does not name the option.
_SO_MEMINFO = 55
_MEMINFO_BYTES = 36
_MEMINFO_DROPS_AT = 32


ACCT_SESSION_ID_REF = AttributeRef("Acct-Session-Id", codec.ACCT_SESSION_ID)


@dataclass(frozen=True, slots=True)
class RadiusClient:
    """One ``[[radius.clients]]`` entry, resolved: its profile's choices with the entry's own
    settings applied (``ocs.radius.setup.build_clients``)."""

    name: str
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    secret: SharedSecret
    require_message_authenticator: MessageAuthenticatorPolicy
    limit_proxy_state: bool
    identity: AttributeRef
    identity_kind: IdentityKind
    reply: ReplySettings = field(default_factory=lambda: ReplySettings(profile=PROFILES["generic"]))
    call_key: AttributeRef = ACCT_SESSION_ID_REF
    accounting: AccountingStyle = AccountingStyle.INTERVAL
    disconnect_port: int | None = 3799
    dial_plan: DialPlan = INTERNATIONAL  # how its called numbers are written
    tls: bool = False  # RadSec only (radius/radsec.py); its UDP datagrams are dropped


class ClientTable:
    """NAS clients by source address: exact addresses first, then the most specific network."""

    def __init__(self, clients: Iterable[RadiusClient]) -> None:
        self._exact: dict[str, RadiusClient] = {}
        self._networks: list[RadiusClient] = []
        for client in clients:
            if client.network.num_addresses == 1:
                self._exact[str(client.network.network_address)] = client
            else:
                self._networks.append(client)
        self._networks.sort(key=lambda c: c.network.prefixlen, reverse=True)
        self._seen: dict[str, RadiusClient | None] = {}

    def lookup(self, address: str) -> RadiusClient | None:
        found = self._exact.get(address)
        if found is not None or not self._networks:
            return found
        if address in self._seen:
            return self._seen[address]
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        match = next((c for c in self._networks if ip in c.network), None)
        if len(self._seen) < 65536:  # bounded: a scan of random sources cannot grow it forever
            self._seen[address] = match
        return match

    def __len__(self) -> int:
        return len(self._exact) + len(self._networks)


class _Sends(Protocol):
    def sendto(self, data: bytes, addr: Any = None, /) -> None: ...


class Listener(Protocol):
    """What the front reads of where a request came in: its kind ("auth" or "acct"), whether it
    is TLS (RadSec), and where its replies go (a UDP socket's transport here, a RadSec
    connection in ``radius/radsec.py``). A protocol, not a class: compiled (mypyc), an argument
    annotated with a class is checked to be one."""

    @property
    def kind(self) -> str: ...

    @property
    def tls(self) -> bool: ...

    @property
    def relayed(self) -> bool: ...  # relayed here by another worker (radius/relay.py)

    @property
    def transport(self) -> _Sends | None: ...


class _Exchange:
    """One request on its way to an answer. (Not a dataclass: its generated ``__init__`` would
    run interpreted in this compiled module, once per datagram.)"""

    __slots__ = ("addr", "arrived", "client", "key", "listener", "packet")

    def __init__(
        self,
        *,
        listener: Listener,
        client: RadiusClient,
        packet: Packet,
        addr: tuple[str | int, ...],
        key: ReplyKey,
        arrived: float,  # perf_counter seconds
    ) -> None:
        self.listener = listener
        self.client = client
        self.packet = packet
        self.addr = addr
        self.key = key
        self.arrived = arrived


class _Listener(asyncio.DatagramProtocol):
    """One UDP socket: bounded queue in, ``sendto`` out."""

    tls = False  # RadSec's listeners (radius/radsec.py) say True
    relayed = False  # the workers' relay's listeners (radius/relay.py) say True

    def __init__(self, front: RadiusFront, kind: str) -> None:
        self.front = front
        self.kind = kind  # "auth" or "acct"
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport is not an asyncio.DatagramTransport subclass, but behaves as one.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.front.enqueue(self, data, addr, time.perf_counter())

    def error_received(self, exc: Exception) -> None:
        log.debug("udp error on %s listener: %s", self.kind, exc)


class RadiusFront:
    def __init__(
        self,
        *,
        charging: Charging,
        clients: ClientTable,
        metrics: Metrics,
        queue_size: int = 4096,
        duplicate_window_s: float = 5.0,
        max_pending: int = 1024,
        receive_buffer_bytes: int = 4 * 1024 * 1024,
        reuse_port: bool = False,
        spread_auth: int = 1,
        credential_lookup: CredentialLookup | None = None,
        credential_lookup_timeout_s: float = 2.0,
    ) -> None:
        self.charging = charging
        self.credential_lookup = credential_lookup
        self.credential_lookup_timeout_s = credential_lookup_timeout_s
        self.clients = clients
        self.metrics = metrics
        self.queue_size = queue_size
        self.duplicate_window_s = duplicate_window_s
        self.max_pending = max_pending
        self.receive_buffer_bytes = receive_buffer_bytes
        self.reuse_port = reuse_port
        # Workers sharing the ports: Access-Requests spread over them by Identifier (spread.py).
        self.spread_auth = spread_auth
        # With workers: this worker's relay, and the tag its admissions' names begin with, so
        # that their accounting is relayed here (relay.py). Set by the daemon.
        self.relay: WorkerRelay | None = None
        self.admission_tag = ""
        self._queue: deque[tuple[Listener, bytes, tuple[str | int, ...], float]] = deque()
        # The drain's, while it waits for a datagram (asyncio.Event's wait and set are
        # interpreted: 2 % of a request's CPU profiled, with a run of one or two datagrams).
        self._wakeup: asyncio.Future[None] | None = None
        # Replies made while the drain handles a run of datagrams, sent together when the run
        # ends (or every SEND_BATCH replies); None: send at once (outside the drain).
        self._outbox: list[tuple[_Sends, bytes, tuple[str | int, ...]]] | None = None
        self._listeners: list[_Listener] = []
        self.bound: list[tuple[str, str, int]] = []  # (kind, host, port) listening, for /status
        self._worker: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        # retransmission key -> (expiry, reply; None while the first copy is in progress)
        self._replies: dict[ReplyKey, tuple[float, bytes | None]] = LongLivedDict()
        self._reply_order: deque[tuple[float, ReplyKey]] = deque()
        # The UDP sockets, read once a second for what the kernel dropped (receive_buffer_full).
        self._sockets: list[socket.socket] = []
        # Per socket: drops seen so far, when the next warning may be logged, drops since the
        # last warning.
        self._kernel_drops: list[tuple[int, float, int]] = []
        self._drop_counter: asyncio.Task[None] | None = None
        # Message-Authenticator "auto": client addresses that have sent one (so must from now
        # on), addresses accepted without one (warned once), and the warnings' rate limit.
        self._ma_learned: set[tuple[str, str]] = set()
        self._ma_exposed: set[tuple[str, str]] = set()
        self._ma_warned: dict[str, tuple[float, int]] = {}
        self._bind_metrics()

    def _bind_metrics(self) -> None:
        m = self.metrics
        self._drop = {c: m.dropped.labels("radius", c) for c in DROP_CAUSES}
        self._dup = m.duplicates.labels("radius")
        self._lat_auth = m.latency.labels("radius", "access")
        self._lat_acct = m.latency.labels("radius", "accounting")
        self._accept = m.requests.labels("radius", "access", "accept")
        self._rejects: dict[str, object] = {}
        self._acct_ok: dict[str, object] = {}
        self._invalid = {p: m.invalid_identities.labels("radius", p.value) for p in IdentityProblem}

    # --- sockets -------------------------------------------------------------------------------

    async def start(self, auth: Iterable[str], acct: Iterable[str]) -> list[tuple[str, str, int]]:
        """Open every listener; returns (kind, host, port) actually bound. Raises OSError."""
        loop = asyncio.get_running_loop()
        bound: list[tuple[str, str, int]] = []
        for kind, addresses in (("auth", auth), ("acct", acct)):
            for address in addresses:
                host, _, port = address.rpartition(":")
                host = host.strip("[]")
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_DGRAM)
                try:
                    if self.reuse_port:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer_bytes)
                    if family == socket.AF_INET6:
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    sock.bind((host, int(port)))
                except OSError:
                    sock.close()
                    raise
                if kind == "auth" and self.reuse_port and self.spread_auth > 1:
                    try:
                        spread_by_identifier(sock, self.spread_auth)
                    except OSError as exc:
                        log.warning(
                            "radius: cannot spread Access-Requests over the workers by "
                            "Identifier (%s); the kernel spreads them by source address and "
                            "port address=%s",
                            exc.strerror or exc,
                            address,
                        )
                sock.setblocking(False)
                listener = _Listener(self, kind)
                await loop.create_datagram_endpoint(_factory(listener), sock=sock)
                self._listeners.append(listener)
                self._sockets.append(sock)
                self._kernel_drops.append((_kernel_drops(sock), 0.0, 0))
                name = sock.getsockname()
                bound.append((kind, str(name[0]), int(name[1])))
        self._worker = asyncio.create_task(self._drain(), name="radius-worker")
        self._drop_counter = asyncio.create_task(self._read_kernel_drops(), name="radius-drops")
        self.bound = bound
        return bound

    async def stop(self, timeout_s: float) -> None:
        """Stop listening; let requests waiting on the database finish within ``timeout_s``."""
        for task in (self._worker, self._drop_counter):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._pending:
            _done, still = await asyncio.wait(self._pending, timeout=timeout_s)
            for task in still:
                task.cancel()
            await asyncio.gather(*still, return_exceptions=True)
        for listener in self._listeners:
            if listener.transport is not None:
                listener.transport.close()
        self._listeners.clear()
        self._sockets.clear()
        self._kernel_drops.clear()
        if self.relay is not None:
            self.relay.close()

    # --- the queue -----------------------------------------------------------------------------

    def enqueue(
        self, listener: Listener, data: bytes, addr: tuple[str | int, ...], arrived: float
    ) -> None:
        queue = self._queue
        if len(queue) >= self.queue_size:
            self._drop["queue_full"].inc()
            _log_drop("queue_full", addr[0])
            return
        if not queue:  # else the drain is awake already: it empties the queue before it waits
            waiter = self._wakeup
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        queue.append((listener, data, addr, arrived))

    async def _drain(self) -> None:
        queue = self._queue
        loop = asyncio.get_running_loop()
        while True:
            if not queue:
                waiter: asyncio.Future[None] = loop.create_future()
                self._wakeup = waiter
                try:
                    await waiter
                finally:
                    self._wakeup = None
            processed = 0
            outbox: list[tuple[_Sends, bytes, tuple[str | int, ...]]] = []
            self._outbox = outbox
            while queue:
                listener, data, addr, arrived = queue.popleft()
                try:
                    self.handle(listener, data, addr, arrived)
                except Exception:  # the one boundary: the worker must outlive any packet
                    log.exception("radius: unexpected error handling a packet from %s", addr[0])
                    self._drop["internal_error"].inc()
                processed += 1
                if len(outbox) >= SEND_BATCH:
                    self._flush(outbox)
                if processed % 256 == 0:
                    self._flush(outbox)
                    self._outbox = None
                    await asyncio.sleep(0)  # let replies and timers run during a burst
                    self._outbox = outbox
            self._flush(outbox)
            self._outbox = None
            self._expire_replies(time.monotonic())

    def _flush(self, outbox: list[tuple[_Sends, bytes, tuple[str | int, ...]]]) -> None:
        """Send the replies the drain made since the last flush, in their order."""
        for transport, reply, addr in outbox:
            try:
                transport.sendto(reply, addr)
            except Exception:  # as for a packet: counted, and the others still go out
                log.exception("radius: unexpected error sending a reply to %s", addr[0])
                self._drop["internal_error"].inc()
        outbox.clear()

    async def _read_kernel_drops(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._count_kernel_drops(time.monotonic())

    def _count_kernel_drops(self, now: float) -> None:
        """Count what each socket's kernel counter says was dropped since the last look; warn
        at most once per ``DROP_WARNING_INTERVAL_S`` per socket, with the drops since the last
        warning (a sustained overload would otherwise log a line a second)."""
        for index, sock in enumerate(self._sockets):
            try:
                drops = _kernel_drops(sock)
            except OSError:
                continue
            seen, next_warning, unwarned = self._kernel_drops[index]
            new = drops - seen
            if new > 0:
                self._drop["receive_buffer_full"].inc(new)
                unwarned += new
            if unwarned and now >= next_warning:
                log.warning(
                    "radius: the kernel dropped %d datagrams on a full receive buffer%s; the "
                    "daemon is overloaded (more workers), or bursts need a larger "
                    "radius.receive_buffer_bytes port=%d",
                    unwarned,
                    "" if next_warning == 0.0 else " since the last warning",
                    sock.getsockname()[1],
                )
                next_warning, unwarned = now + DROP_WARNING_INTERVAL_S, 0
            self._kernel_drops[index] = (drops, next_warning, unwarned)

    # --- per packet ----------------------------------------------------------------------------

    def handle(
        self, listener: Listener, data: bytes, addr: tuple[str | int, ...], arrived: float
    ) -> None:
        """Everything a datagram needs that does not await; schedules the rest."""
        host = str(addr[0])
        client = self.clients.lookup(host)
        if client is None or client.tls != listener.tls:  # a RadSec client only over TLS
            self._drop["unknown_client"].inc()
            log.debug("radius: dropped datagram from unknown client %s", host)
            return
        try:
            packet = codec.parse_packet(data)
        except MalformedPacket as exc:
            self._drop["malformed"].inc()
            log.debug("radius: malformed packet from %s: %s", host, exc.reason)
            return
        key = (host, addr[1], packet.identifier, packet.authenticator)
        cached = self._replies.get(key)
        if cached is not None and cached[0] > time.monotonic():
            if cached[1] is None:
                self._drop["duplicate_in_progress"].inc()
                _log_drop("duplicate_in_progress", host)
            else:
                self._dup.inc()
                self._send(listener, cached[1], addr)
            return
        ex = _Exchange(
            listener=listener, client=client, packet=packet, addr=addr, key=key, arrived=arrived
        )
        relay = self.relay
        if relay is not None:
            if listener.relayed:
                self.metrics.radius_relayed.labels("in").inc()
            else:
                owner = _owner(client, packet, relay)
                if owner != relay.index:
                    if self._may_wait():
                        self._replies[key] = (time.monotonic() + self.duplicate_window_s, None)
                        self._spawn(self._relay(ex, relay, owner), key)
                    return
        self._dispatch(ex)

    def _dispatch(self, ex: _Exchange) -> None:
        listener, packet, host = ex.listener, ex.packet, str(ex.addr[0])
        if listener.kind == "auth":
            if packet.code == codec.ACCESS_REQUEST:
                self._access_request(ex)
            elif packet.code == codec.STATUS_SERVER:
                self._status_server(ex)
            else:
                self._drop["wrong_code"].inc()
                _log_drop("wrong_code", host, code=packet.code, port="auth")
        elif packet.code == codec.ACCOUNTING_REQUEST:
            self._accounting_request(ex)
        elif packet.code == codec.STATUS_SERVER:
            self._status_server(ex)
        else:
            self._drop["wrong_code"].inc()
            _log_drop("wrong_code", host, code=packet.code, port="acct")

    # --- Access-Request ------------------------------------------------------------------------

    def _access_request(self, ex: _Exchange) -> None:
        client, packet = ex.client, ex.packet
        policy = client.require_message_authenticator
        if packet.message_authenticator_offset is not None:
            if not codec.verify_message_authenticator(packet, client.secret):
                self._drop["bad_authenticator"].inc()
                log.debug("radius: bad Message-Authenticator from %s", client.name)
                return
            if policy is MessageAuthenticatorPolicy.AUTO:
                self._learn_message_authenticator(client, str(ex.key[0]))
        elif policy is not MessageAuthenticatorPolicy.NOT_REQUIRED and self._requires_ma(
            client, str(ex.key[0])
        ):
            self._drop["missing_message_authenticator"].inc()
            self._warn_missing_ma(client, str(ex.key[0]))
            return
        elif client.limit_proxy_state and packet.get(codec.PROXY_STATE) is not None:
            self._drop["proxy_state_without_message_authenticator"].inc()
            _log_drop("proxy_state_without_message_authenticator", client.name)
            return

        identity = self._identity(client, packet)
        if identity is None:
            self._reply_access(ex, None)
            return
        kind, value = identity
        checked: auth.AuthResult | None = None
        stored = self.charging.cache.credential(kind, value)
        if stored is not None:
            if auth.is_slow(stored):  # PBKDF2: off the event loop
                if self._may_wait():
                    self._replies[ex.key] = (time.monotonic() + self.duplicate_window_s, None)
                    self._spawn(self._access_slow(ex, kind, value, stored=stored), ex.key)
                return
            checked = self._authenticate(ex, stored)
            if not checked.ok:
                self._refuse_credential(ex, checked)
                return
        # The unit is the account's: time, or volume where its tariff prices only volume.
        admission = self._admission(ex)
        decision = self.charging.admit_cached(
            kind,
            value,
            unit=None,
            reservation_key=admission,
            destination=_called(client, packet),
        )
        if decision is not None:
            self._reply_access(ex, decision, checked, admission)
            return
        if not self._may_wait():
            return
        self._replies[ex.key] = (time.monotonic() + self.duplicate_window_s, None)
        self._spawn(self._access_slow(ex, kind, value, checked=checked), ex.key)

    # --- Message-Authenticator policy ------------------------------------------------------------

    def _learn_message_authenticator(self, client: RadiusClient, host: str) -> None:
        key = (client.name, host)
        if key in self._ma_learned:
            return
        if len(self._ma_learned) < _MAX_LEARNED_ADDRESSES:
            self._ma_learned.add(key)
            self._ma_exposed.discard(key)
            log.info(
                "radius: client %s (%s) sends Message-Authenticator; it is required from this "
                'address from now on (require_message_authenticator = "auto")',
                client.name,
                host,
            )

    def _requires_ma(self, client: RadiusClient, host: str) -> bool:
        """Whether this Access-Request without a Message-Authenticator must be dropped."""
        if client.require_message_authenticator is MessageAuthenticatorPolicy.REQUIRED:
            return True
        key = (client.name, host)
        if key in self._ma_learned:
            return True
        if key not in self._ma_exposed and len(self._ma_exposed) < _MAX_LEARNED_ADDRESSES:
            self._ma_exposed.add(key)
            log.warning(
                "radius: client %s (%s) sends Access-Request without Message-Authenticator; "
                'accepted (require_message_authenticator = "auto"), and exposed to forged '
                "replies (BlastRADIUS, CVE-2024-3596). Fix: make the NAS send "
                "Message-Authenticator, then set require_message_authenticator = true",
                client.name,
                host,
            )
        return False

    def _warn_missing_ma(self, client: RadiusClient, host: str) -> None:
        """One warning per client per ``MA_WARNING_INTERVAL_S``, naming the fix."""
        now = time.monotonic()
        next_at, suppressed = self._ma_warned.get(client.name, (0.0, 0))
        if now < next_at:
            self._ma_warned[client.name] = (next_at, suppressed + 1)
            return
        self._ma_warned[client.name] = (now + MA_WARNING_INTERVAL_S, 0)
        more = f" ({suppressed} more since the last warning)" if suppressed else ""
        if client.require_message_authenticator is MessageAuthenticatorPolicy.REQUIRED:
            why = "the client is configured with require_message_authenticator = true"
            fix = (
                "make the NAS send Message-Authenticator, or (if it cannot, as radcli cannot) "
                'set require_message_authenticator = "auto" or false for this client'
            )
        else:
            why = (
                "this address sent one before, so it is required now "
                '(require_message_authenticator = "auto")'
            )
            fix = (
                "if this NAS really sends none (radcli, Kamailio, FreeSWITCH), give it its own "
                "[[radius.clients]] entry with require_message_authenticator = false; otherwise "
                "the request may be forged"
            )
        log.warning(
            "radius: dropped an Access-Request without Message-Authenticator from client %s "
            "(%s): %s. Fix: %s%s",
            client.name,
            host,
            why,
            fix,
            more,
            extra={"reason": "missing_message_authenticator"},
        )

    async def _access_slow(
        self,
        ex: _Exchange,
        kind: IdentityKind,
        value: str,
        *,
        checked: auth.AuthResult | None = None,
        stored: str | None = None,
    ) -> None:
        """Whatever needs a wait: a slow password check, a credential the cache may not know
        yet, the database for the account."""
        try:
            if checked is None:
                if stored is None:
                    stored = await self._lookup_credential(kind, value)
                if stored is not None:
                    if auth.is_slow(stored):
                        checked = await asyncio.to_thread(self._authenticate, ex, stored)
                    else:
                        checked = self._authenticate(ex, stored)
                    if not checked.ok:
                        self._refuse_credential(ex, checked)
                        return
            decision = await self.charging.admit(
                kind,
                value,
                unit=None,
                reservation_key=self._admission(ex),
                destination=_called(ex.client, ex.packet),
            )
        except Exception:
            self._replies.pop(ex.key, None)
            raise
        self._reply_access(ex, decision, checked)

    async def _lookup_credential(self, kind: IdentityKind, value: str) -> str | None:
        """The identity's credential from the database, for an identity the cache does not
        know (it may have been given one a moment ago). None when there is none, or when the
        database cannot say (then the credit decision's own outage policy applies)."""
        if self.credential_lookup is None:
            return None
        try:
            stored = await asyncio.wait_for(
                self.credential_lookup(kind, value), self.credential_lookup_timeout_s
            )
        except (TimeoutError, OSError, SourceUnavailable) as exc:
            log.debug("radius: credential lookup failed: %s", exc)
            return None
        if stored is not None:
            self.charging.cache.set_credential(kind.value, value, stored)
        return stored

    def _authenticate(self, ex: _Exchange, stored: str) -> auth.AuthResult:
        """The request's password against the stored credential (ocs.radius.auth)."""
        packet = ex.packet
        user_name = packet.get_str(codec.USER_NAME) or ""
        try:
            return auth.authenticate(stored, packet, ex.client.secret, user_name)
        except auth.CredentialError:
            log.error("radius: a stored credential cannot be read (client %s)", ex.client.name)
            return auth.AuthResult(False, "none")

    def _refuse_credential(self, ex: _Exchange, checked: auth.AuthResult) -> None:
        decision = CreditDecision(
            admitted=False,
            reason=RefusalReason.BAD_CREDENTIAL,
            unit=ServiceUnit.TIME,
            granted_units=0,
            available=0,
            effective_limit=0,
        )
        self.charging.count_decision(decision)
        log.debug(
            "radius: authentication failed method=%s client=%s", checked.method, ex.client.name
        )
        self._reply_access(ex, decision, checked)

    def _identity(self, client: RadiusClient, packet: Packet) -> tuple[IdentityKind, str] | None:
        identity, _problem = self._checked_identity(client, packet)
        return identity

    def _checked_identity(
        self, client: RadiusClient, packet: Packet
    ) -> tuple[tuple[IdentityKind, str] | None, IdentityProblem | None]:
        """The identity in normal form, or None and why not (None: the attribute is absent).
        A value that cannot be an identity is counted by cause and never looked up."""
        raw = client.identity.read_bytes(packet)
        if raw is None:
            return None, None
        try:
            return (client.identity_kind, identity_from_bytes(client.identity_kind, raw)), None
        except IdentityError as exc:
            self._invalid[exc.problem].inc()
            log.debug(
                "radius: not an identity",
                extra={"reason": exc.problem.value, "source": client.name},
            )
            return None, exc.problem

    def _reply_access(
        self,
        ex: _Exchange,
        decision: CreditDecision | None,
        checked: auth.AuthResult | None = None,
        admission: str | None = None,
    ) -> None:
        client, packet = ex.client, ex.packet
        if decision is not None and decision.admitted:
            code = codec.ACCESS_ACCEPT
            # A volume grant holds the price of the bytes the credit buys; the session's time
            # is then the configured longest.
            seconds = (
                decision.granted_units
                if decision.unit is ServiceUnit.TIME
                else self.charging.limits.max_time_s
            )
            attributes = client.reply.accept_attributes(
                decision, admission or self._admission(ex), session_timeout_s=seconds
            )
            self._accept.inc()
        else:
            code = codec.ACCESS_REJECT
            reason = decision.reason if decision is not None else None
            attributes = client.reply.reject_attributes(
                reason, text=refusal_text(decision) if decision is not None else None
            )
            label = reason.value if reason is not None else "unknown_account"
            counter = self._rejects.get(label)
            if counter is None:
                counter = self._rejects[label] = self.metrics.requests.labels(
                    "radius", "access", f"reject_{label}"
                )
            counter.inc()  # type: ignore[attr-defined]
            log.debug("radius: Access-Reject reason=%s client=%s", label, client.name)
        if checked is not None and checked.ok is (code == codec.ACCESS_ACCEPT):
            # MS-CHAP2-Success and the MPPE keys with an Accept, MS-CHAP-Error with a Reject
            # for the password; a password that was right but a refused credit gets neither.
            attributes.extend(checked.reply_attributes)
        attributes.extend(codec.copy_proxy_state(packet))
        reply = codec.encode_reply(
            code, packet.identifier, packet.authenticator, client.secret, attributes
        )
        self._remember(ex.key, reply)
        self._send(ex.listener, reply, ex.addr)
        self._lat_auth.observe(time.perf_counter() - ex.arrived)

    def _status_server(self, ex: _Exchange) -> None:
        client, packet, listener = ex.client, ex.packet, ex.listener
        # RFC 5997: Status-Server must carry a valid Message-Authenticator.
        if packet.message_authenticator_offset is None or not codec.verify_message_authenticator(
            packet, client.secret
        ):
            self._drop["bad_authenticator"].inc()
            _log_drop("bad_authenticator", client.name, code=packet.code)
            return
        code = codec.ACCESS_ACCEPT if listener.kind == "auth" else codec.ACCOUNTING_RESPONSE
        reply = codec.encode_reply(
            code,
            packet.identifier,
            packet.authenticator,
            client.secret,
            [],
            request_code=codec.STATUS_SERVER,
        )
        self._remember(ex.key, reply)
        self._send(listener, reply, ex.addr)

    # --- Accounting-Request ----------------------------------------------------------------------

    def _accounting_request(self, ex: _Exchange) -> None:
        client, packet = ex.client, ex.packet
        if not codec.verify_request_authenticator(packet, client.secret):
            self._drop["bad_authenticator"].inc()
            _log_drop("bad_authenticator", client.name, code=packet.code)
            return
        if packet.message_authenticator_offset is not None and not (
            codec.verify_message_authenticator(packet, client.secret)
        ):
            self._drop["bad_authenticator"].inc()
            _log_drop("bad_authenticator", client.name, code=packet.code)
            return
        if not self._may_wait():
            return
        self._replies[ex.key] = (time.monotonic() + self.duplicate_window_s, None)
        self._spawn(self._accounting(ex), ex.key)

    async def _relay(self, ex: _Exchange, relay: WorkerRelay, owner: int) -> None:
        """A request another worker must handle (``_owner``): it does, checks and all, and
        its answer goes out from here. If it cannot be reached, the request is handled here."""
        try:
            reply = await relay.forward(
                owner, ex.packet.raw, ex.addr, tls=ex.listener.tls, kind=ex.listener.kind
            )
        except ConnectionError as exc:
            log.debug("radius: request handled here, not by worker %d: %s", owner, exc)
            self.metrics.radius_relayed.labels("handled_here").inc()
            self._replies.pop(ex.key, None)
            self._dispatch(ex)
            return
        if reply is None:  # not answered in time: nor here, the NAS retransmits
            self._drop["relay_timeout"].inc()
            _log_drop("relay_timeout", ex.client.name, worker=owner)
            return
        self.metrics.radius_relayed.labels("out").inc()
        self._remember(ex.key, reply)
        self._send(ex.listener, reply, ex.addr)

    async def _close_origin_on_other_workers(
        self, ex: _Exchange, relay: WorkerRelay, name: str
    ) -> None:
        """Accounting-On/Off, passed on to every other worker before it is answered: the
        database has closed all the NAS's sessions, but each worker's book holds those that
        started there, and would keep them running (counted, holding credit) until they
        expire. Each worker handles the copy as its own and ends its sessions of the NAS."""
        for worker in range(relay.count):
            if worker == relay.index:
                continue
            try:
                answer = await relay.forward(
                    worker, ex.packet.raw, ex.addr, tls=ex.listener.tls, kind=ex.listener.kind
                )
            except ConnectionError as exc:
                answer, why = None, str(exc)
            else:
                why = "no answer in time"
            if answer is None:
                log.warning(
                    "radius: %s not passed on to worker %d (%s); its sessions of this NAS run "
                    "until they expire",
                    name,
                    worker,
                    why,
                )

    async def _accounting(self, ex: _Exchange) -> None:
        client, packet, addr, key = ex.client, ex.packet, ex.addr, ex.key
        try:
            status = packet.get_int(codec.ACCT_STATUS_TYPE)
        except MalformedPacket:
            status = None
        name = _STATUS_NAMES.get(status or 0, "other")
        origin = _origin(packet, str(addr[0]))
        try:
            if status in (STATUS_ACCOUNTING_ON, STATUS_ACCOUNTING_OFF):
                if _bad_text(None, origin) is not None:
                    # No session can be open under such an origin (their usage was kept
                    # unmatched): nothing to close, and such text never goes to SQL.
                    log.info("radius: %s from an origin that is no text; nothing closed", name)
                else:
                    closed = await self.charging.close_origin("radius", origin, name)
                    log.info("radius: %s from %s closed %d sessions", name, origin, closed)
                    if self.relay is not None and not ex.listener.relayed:
                        await self._close_origin_on_other_workers(ex, self.relay, name)
            elif status in (STATUS_START, STATUS_STOP, STATUS_INTERIM):
                await self._usage(client, packet, origin, status)
            elif status == STATUS_FAILED:
                # The admission this attempt had (named by the Class of its Access-Accept)
                # holds nothing any more: released now, not at the ring timeout.
                admission = _admission_of(packet)
                if admission is not None:
                    self.charging.release_admission(admission)
            else:
                log.debug("radius: Accounting-Request with status %s from %s", status, origin)
        except SpoolFull as exc:
            # Neither the database nor the spool can keep it: not acknowledged, the NAS retries.
            self._replies.pop(key, None)
            self._drop["spool_full"].inc()
            log.error("radius: accounting not recorded: %s", exc)
            return
        except SourceRefused as exc:
            # The database refused a value of this request as data: the request's fault, not
            # the database's. Not durable, so not acknowledged; counted, no traceback.
            self._replies.pop(key, None)
            self._drop["refused_by_database"].inc()
            log.warning("radius: accounting refused by the database as data: %s", exc)
            return
        except SourceUnavailable as exc:
            # Not durable, so not acknowledged: the NAS retransmits.
            self._replies.pop(key, None)
            self.metrics.database_errors.inc()
            self._drop["database_unavailable"].inc()
            log.warning("radius: accounting not recorded (database unavailable): %s", exc)
            return
        attributes = codec.copy_proxy_state(packet)
        reply = codec.encode_reply(
            codec.ACCOUNTING_RESPONSE,
            packet.identifier,
            packet.authenticator,
            client.secret,
            attributes,
            message_authenticator=not ex.listener.tls,  # RadSec: see codec.encode_reply
        )
        self._remember(key, reply)
        self._send(ex.listener, reply, addr)
        counter = self._acct_ok.get(name)
        if counter is None:
            counter = self._acct_ok[name] = self.metrics.requests.labels(
                "radius", "accounting", name
            )
        counter.inc()  # type: ignore[attr-defined]
        self._lat_acct.observe(time.perf_counter() - ex.arrived)

    async def _usage(self, client: RadiusClient, packet: Packet, origin: str, status: int) -> None:
        """Start, Interim-Update or Stop: a report for the session ledger (the pipeline and the
        store decide its generation and whether it is a repeat, at any age). An identity, call
        key or NAS-Identifier that is no text SQL takes is kept unmatched with the reason,
        escaped."""
        # The call's name is the profile's attribute: Acct-Session-Id, or h323-conf-id...
        raw_session = client.call_key.read_bytes(packet)
        session_id = raw_session.decode("utf-8", "replace") if raw_session else ""
        usage = _usage_of(packet)
        status_name = _STATUS_NAMES[status]
        client_at = _event_time(packet)
        identity, problem = self._checked_identity(client, packet)
        bad_text = _bad_text(raw_session, origin)
        if bad_text is not None:  # the session cannot be keyed in SQL: kept, escaped
            identity = None
            session_id = printable(raw_session or b"", MAX_PRINTABLE_KEY_CHARS)
            origin = printable(origin, MAX_PRINTABLE_KEY_CHARS)
        report_key = f"{status_name}|{usage.seconds}|{usage.octets}"
        ref = SessionId("radius", origin, session_id)
        # With the client's Event-Timestamp (the same in every retransmission of the message)
        # the report is known again whatever generation of the key it finds.
        wire_key = (
            f"radius|{origin}|{session_id}|{report_key}|{int(client_at.timestamp())}"
            if client_at is not None
            else None
        )
        kind = {STATUS_START: ReportKind.OPEN, STATUS_STOP: ReportKind.FINAL}.get(
            status, ReportKind.USAGE
        )
        snapshot = await self.charging.account(*identity) if identity is not None else None
        if snapshot is None or not session_id:
            if bad_text is not None:
                reason = bad_text
            elif not session_id:
                reason = "no_session_id"
            elif problem is not None:
                reason = f"identity_{problem.value}"
            else:
                reason = "unknown_identity" if identity is not None else "no_identity"
            raw = printable(client.identity.read_bytes(packet) or b"")
            await self.charging.record_unmatched(
                self.charging.unmatched_report(
                    SessionId("radius", origin, session_id or "-"),
                    kind=kind,
                    usage=usage,
                    report_key=f"{report_key}|{wire_key or ''}|{raw}",
                    client_at=client_at,
                ),
                identity_kind=(identity[0].value if identity else client.identity_kind.value),
                identity=(identity[1] if identity else raw),
                reason=reason,
            )
            self.metrics.usage_records.labels("radius", "unmatched").inc()
            return
        admission = _admission_of(packet)
        timed = client.accounting is AccountingStyle.TRANSACTION
        if kind is ReportKind.OPEN:
            session, report = self.charging.start(
                ref,
                snapshot,
                unit=unit_of_tariff(snapshot.tariff),
                grant_s=None,
                identity=identity,
                # Its own admission when the client echoes the Class; else the oldest of the
                # account's (the order of Access-Requests and Starts).
                claim=[admission] if admission is not None else None,
                report_key=report_key,
                wire_key=wire_key,
                client_at=client_at,
                durable=True,
                timed=timed,
            )
            outcome = await self.charging.record_start(session, report)
        else:
            if admission is not None and self.charging.session(ref) is None:
                # A Stop (or Interim) with no Start seen: its admission's hold goes now.
                self.charging.release_admission(admission)
            outcome = (
                await self.charging.report(
                    ref,
                    kind=kind,
                    usage=usage,
                    counting=Counting.CUMULATIVE,
                    report_key=report_key,
                    snapshot=snapshot,
                    wire_key=wire_key,
                    client_at=client_at,
                    close_reason="stop" if kind is ReportKind.FINAL else None,
                    timed=timed,
                )
            ).outcome
        result = "duplicate" if outcome.duplicate else "charged"
        self.metrics.usage_records.labels("radius", result).inc()
        if outcome.charged:
            self.metrics.charged.inc(outcome.charged / 1_000_000)

    # --- helpers -------------------------------------------------------------------------------

    def _may_wait(self) -> bool:
        if len(self._pending) >= self.max_pending:
            self._drop["too_many_pending"].inc()
            _log_drop("too_many_pending", "-")
            return False
        return True

    def _spawn(self, coro: Coroutine[Any, Any, None], key: ReplyKey) -> None:
        task = asyncio.ensure_future(coro)
        self._pending.add(task)
        task.add_done_callback(lambda done: self._task_done(done, key))

    def _task_done(self, task: asyncio.Future[None], key: ReplyKey) -> None:
        self._pending.discard(task)
        held = self._replies.get(key)
        if held is not None and held[1] is None:
            # Not answered (failed, cancelled, or deliberately unacknowledged): the
            # retransmission must be handled afresh, not dropped as "in progress".
            del self._replies[key]
        if not task.cancelled() and task.exception() is not None:
            self._drop["internal_error"].inc()
            log.error("radius: request failed", exc_info=task.exception())

    def _remember(self, key: ReplyKey, reply: bytes) -> None:
        if self.duplicate_window_s <= 0:
            self._replies.pop(key, None)
            return
        if len(self._replies) >= 200_000 and key not in self._replies:
            return  # bounded: under a flood the retransmission cache stops growing
        expires = time.monotonic() + self.duplicate_window_s
        self._replies[key] = (expires, reply)
        self._reply_order.append((expires, key))

    def _expire_replies(self, now: float) -> None:
        order = self._reply_order
        while order and order[0][0] <= now:
            _, key = order.popleft()
            held = self._replies.get(key)
            if held is not None and held[0] <= now:
                del self._replies[key]

    def _admission(self, ex: _Exchange) -> str:
        """The name of an Access-Request's admission (its pending reservation, and its
        Access-Accept's Class): with workers, this worker's tag first."""
        return self.admission_tag + _reservation_key(ex)

    def _send(self, listener: Listener, reply: bytes, addr: tuple[str | int, ...]) -> None:
        transport = listener.transport
        if transport is not None:
            outbox = self._outbox
            if outbox is None:
                transport.sendto(reply, addr)
            else:
                outbox.append((transport, reply, addr))

    @property
    def pending(self) -> int:
        return len(self._pending)


def _kernel_drops(sock: socket.socket) -> int:
    """Datagrams the kernel has dropped on this socket since it was made (``SO_MEMINFO``'s
    ``SK_MEMINFO_DROPS``: a full receive buffer, mostly); 0 where Linux does not say."""
    raw = sock.getsockopt(socket.SOL_SOCKET, _SO_MEMINFO, _MEMINFO_BYTES)
    if len(raw) < _MEMINFO_BYTES:
        return 0
    return int.from_bytes(raw[_MEMINFO_DROPS_AT : _MEMINFO_DROPS_AT + 4], sys.byteorder)


def _log_drop(cause: str, source: object, **detail: object) -> None:
    """One debug line per dropped request (rate-limited by the log handler per cause); the
    source is an address or a client name, never anything secret."""
    log.debug("radius: request dropped", extra={"reason": cause, "source": source, **detail})


def _factory(listener: _Listener) -> Callable[[], _Listener]:
    return lambda: listener


def _called(client: RadiusClient, packet: Packet) -> CalledNumber | None:
    """The number called (Called-Station-Id), as the client writes it: rating by destination
    normalises it by the client's dial plan when an account has a rate plan."""
    raw = packet.get_str(codec.CALLED_STATION_ID)
    return CalledNumber(raw, client.dial_plan) if raw else None


def _owner(client: RadiusClient, packet: Packet, relay: WorkerRelay) -> int:
    """The worker that must handle a request (relay.py): an Accounting-Request naming an
    admission (its Class) goes to the worker that made it; a client that echoes no Class has
    its Access-Requests and accounting go to the worker of their call key. Accounting without
    a Class of ours from a client expected to echo one also goes by its call key, so a
    session's Start, Interim-Updates and Stop meet on one worker whatever source ports they
    come from (handled where they landed, a Stop could miss its Start's worker, which then
    kept the session running, and counted, until its expiry). Else this one."""
    if client.reply.profile.class_attribute:
        if packet.code != codec.ACCOUNTING_REQUEST:
            return relay.index
        admission = _admission_of(packet)
        owner = admission_owner(admission) if admission is not None else None
        if owner is not None:
            return owner
    elif packet.code not in _CALL_CODES:
        return relay.index
    call = client.call_key.read_bytes(packet)
    return call_owner(call, relay.count) if call else relay.index


def _admission_of(packet: Packet) -> str | None:
    """The admission an accounting request names: the Class of its Access-Accept, echoed
    (``ocs.radius.profiles.class_value``); None when it carries none of ours."""
    raw = packet.get(codec.CLASS)
    if raw is None or not raw.startswith(b"ocs:"):
        return None
    return raw[4:].decode("utf-8", "replace")


def _reservation_key(ex: _Exchange) -> str:  # see RadiusFront._admission for the tag
    """The admission's pending reservation, until the session's Start claims it. An
    Access-Request that names its call (the client's call key: Acct-Session-Id, h323-conf-id
    ...) holds under that name, so an attempt of the same call again replaces the hold
    instead of adding to it; else each request holds its own."""
    call = ex.client.call_key.read(ex.packet)
    if call:
        return f"radius-call|{ex.key[0]}|{call}"
    host, port = ex.key[0], ex.key[1]
    return f"radius-auth|{host}|{port}|{ex.packet.identifier}|{ex.packet.authenticator.hex()}"


def _origin(packet: Packet, source: str) -> str:
    """Who the session belongs to: NAS-Identifier, else NAS-IP-Address, else the source address."""
    nas_id = packet.get_str(codec.NAS_IDENTIFIER)
    if nas_id:
        return nas_id
    raw = packet.get(codec.NAS_IP_ADDRESS)
    if raw is not None and len(raw) == 4:
        return str(ipaddress.IPv4Address(raw))
    raw6 = packet.get(codec.NAS_IPV6_ADDRESS)
    if raw6 is not None and len(raw6) == 16:
        return str(ipaddress.IPv6Address(raw6))
    return source


def _bad_text(raw_session: bytes | None, origin: str) -> str | None:
    """Why the Acct-Session-Id or the origin cannot go into SQL as they are (None: they can)."""
    for what, value in (("session_id", raw_session), ("origin", origin)):
        if value is None:
            continue
        try:
            text = value.decode("utf-8") if isinstance(value, bytes) else value
        except UnicodeDecodeError:
            return f"{what}_{IdentityProblem.INVALID_UTF8.value}"
        try:
            check_text(text, what=what)
        except IdentityError as exc:
            return f"{what}_{exc.problem.value}"
    return None


def _event_time(packet: Packet) -> datetime | None:
    """The client's Event-Timestamp (RFC 2869 §5.3), if it sent a plausible one."""
    try:
        stamp = packet.get_int(codec.EVENT_TIMESTAMP)
    except MalformedPacket:
        return None
    if not stamp:
        return None
    return datetime.fromtimestamp(stamp, UTC)


def _counter(packet: Packet, low: int, high: int) -> int:
    try:
        value = packet.get_int(low) or 0
        gigawords = packet.get_int(high) or 0
    except MalformedPacket:
        return 0
    return (gigawords << 32) + value


def _usage_of(packet: Packet) -> Usage:
    """Cumulative usage of the session: Acct-Session-Time and both directions' octets with
    their Gigawords (RFC 2869 §5.1, §5.2)."""
    try:
        seconds = packet.get_int(codec.ACCT_SESSION_TIME) or 0
    except MalformedPacket:
        seconds = 0
    octets = _counter(packet, codec.ACCT_INPUT_OCTETS, codec.ACCT_INPUT_GIGAWORDS) + _counter(
        packet, codec.ACCT_OUTPUT_OCTETS, codec.ACCT_OUTPUT_GIGAWORDS
    )
    return Usage(seconds=seconds, octets=octets)
