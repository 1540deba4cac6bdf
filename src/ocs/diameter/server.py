"""The Diameter transport: an asyncio TCP listener and one protocol object per peer connection.

A thin adapter (aioquic ``asyncio/protocol.py`` style): the pure layers decide, this file feeds
them bytes and ``now`` and acts on what they return. ``Framer`` cuts the stream,
``PeerStateMachine`` (RFC 6733 §5.6 table) says what each message and timer means,
``Watchdog`` (RFC 3539) says when to send a DWR or give up, ``capabilities_exchange`` judges a
CER, ``parse_ccr`` and ``CreditControl`` turn a CCR into a CCA.

Rules of this file:
- ``data_received`` never awaits. It frames every complete message of the read, answers what
  can be answered at once (CER, DWR, DPR, a CCR the cache decides) and writes all those answers
  with one ``write``. Only a CCR that needs the database becomes a task, at most
  ``max_pending`` at once across the daemon; beyond that the answer is 3004 DIAMETER_TOO_BUSY.
- One bad connection never harms another: framing errors, protocol violations and even bugs
  close that connection only (the bug is logged). A peer that is gone before its answer is
  written costs a counter, nothing else.
- Every connection has a deadline for what it owes us: a CER within ``cer_timeout_s``, the rest
  of a partial message within ``read_timeout_s`` (counted from the first octet of that message,
  however slowly the rest trickles in), a DWA within the watchdog's time, a DPA within
  ``dpa_timeout_s``. One sweep per ``tick_s`` checks them all (no timer handle per read).
- ``max_connections`` cannot be used to lock peers out: when it is reached, a new connection
  evicts the oldest one that has not completed its capabilities exchange; only when every
  connection is an open peer is the new one refused.
- Duplicates (RFC 6733 §5.5.4): a request with the T flag whose (Origin-Host, End-to-End-Id)
  was answered within ``duplicate_window_s`` gets that answer again (with its own
  Hop-by-Hop-Id); one still in progress is dropped (its answer is on the way). The cache is
  bounded in time and size.
- Answers to requests we never sent are dropped and counted (before the CER they close the
  connection: the table calls that a protocol violation).
- Shutdown: stop listening, let in-flight requests finish, then DPR to every open peer and close
  once it answers (or ``dpa_timeout_s`` passes), all within the caller's time budget.
- TLS/TCP (RFC 6733 §13): ``tls_listen`` addresses speak TLS from the first octet (mutual, the
  peer's certificate signed by the configured CA). A CER on such a connection is accepted only
  if the certificate names its Origin-Host; a peer whose allow-list entry says ``tls`` is
  refused (3010) over plain TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import itertools
import logging
import random
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Final, Protocol, cast

from ocs import __version__
from ocs.core.identity import IdentityProblem
from ocs.diameter.codec import (
    APP_COMMON,
    APP_CREDIT_CONTROL,
    AVP_RESULT_CODE,
    CMD_CAPABILITIES_EXCHANGE,
    CMD_CREDIT_CONTROL,
    CMD_DEVICE_WATCHDOG,
    CMD_DISCONNECT_PEER,
    DIAMETER_APPLICATION_UNSUPPORTED,
    DIAMETER_COMMAND_UNSUPPORTED,
    DIAMETER_SUCCESS,
    DIAMETER_TOO_BUSY,
    DIAMETER_UNABLE_TO_COMPLY,
    FLAG_REQUEST,
    FLAG_RETRANSMIT,
    MalformedMessage,
    build_error_answer,
    check_header,
    parse_message,
    peek_header,
)
from ocs.diameter.credit_control import (
    TOLERANCES,
    CcaEncoder,
    CreditControlRequest,
    parse_ccr,
)
from ocs.diameter.framer import Framer, FramingError
from ocs.diameter.handler import CreditControl
from ocs.diameter.peer_state import (
    WATCHDOG_EVENTS,
    DisconnectCause,
    PeerAction,
    PeerEvent,
    PeerProtocolError,
    PeerState,
    PeerStateMachine,
    Watchdog,
    build_cea,
    build_dpa,
    build_dpr,
    build_dwa,
    build_dwr,
    capabilities_exchange,
)
from ocs.longlived import LongLivedDict
from ocs.metrics import (
    DIAMETER_CLOSE_REASONS,
    DIAMETER_DROP_CAUSES,
    DIAMETER_PEER_STATES,
    Metrics,
)
from ocs.tls import certificate_matches

log = logging.getLogger("ocs.diameter")

DuplicateKey = tuple[str, int]  # (Origin-Host, End-to-End-Id)

DIAMETER_UNKNOWN_PEER: Final = 3010

_DUPLICATES_MAX: Final = 200_000


def firmware_revision(version: str = __version__) -> int:
    """``"1.2.3"`` → 10203 (Firmware-Revision is an Unsigned32)."""
    parts = [int(p) if p.isdigit() else 0 for p in version.split(".")[:3]]
    parts += [0] * (3 - len(parts))
    return parts[0] * 10000 + parts[1] * 100 + parts[2]


# --- The allow-list --------------------------------------------------------------------------


class PeerRule(Protocol):
    """One allow-list entry (``config.DiameterPeerConfig`` has these attributes)."""

    @property
    def origin_host(self) -> str: ...
    @property
    def realm(self) -> str | None: ...
    @property
    def address(self) -> str | None: ...


class PeerAllowList:
    """Peers allowed to connect: Origin-Host exact or ``*.domain`` (any depth below the
    domain), optionally the realm (exact) and the source address or network. Case-insensitive
    names (RFC 6733 §4.3.1 DiameterIdentity is an FQDN)."""

    def __init__(self, rules: Iterable[PeerRule]) -> None:
        self._rules: list[
            tuple[str, bool, str | None, ipaddress.IPv4Network | ipaddress.IPv6Network | None, bool]
        ] = []
        for rule in rules:
            host = rule.origin_host.lower()
            pattern = host.startswith("*.")
            network = ipaddress.ip_network(rule.address, strict=False) if rule.address else None
            realm = rule.realm.lower() if rule.realm else None
            needs_tls = bool(getattr(rule, "tls", False))
            self._rules.append((host[1:] if pattern else host, pattern, realm, network, needs_tls))

    def __len__(self) -> int:
        return len(self._rules)

    def __call__(
        self, origin_host: str, origin_realm: str, peer_address: str, *, tls: bool = False
    ) -> bool:
        host = origin_host.lower()
        realm = origin_realm.lower()
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
        try:
            ip = ipaddress.ip_address(peer_address.split("%", 1)[0])
        except ValueError:
            ip = None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        for name, pattern, rule_realm, network, needs_tls in self._rules:
            if needs_tls and not tls:
                continue
            if pattern:
                if not (host.endswith(name) and len(host) > len(name)):
                    continue
            elif host != name:
                continue
            if rule_realm is not None and realm != rule_realm:
                continue
            if network is not None and (ip is None or ip not in network):
                continue
            return True
        return False


# --- The server ------------------------------------------------------------------------------


class DiameterServer:
    """Listeners, connections, in-flight work and the duplicate cache of one daemon."""

    def __init__(
        self,
        *,
        handler: CreditControl,
        allowed: Callable[[str, str, str], bool],
        metrics: Metrics,
        origin_host: str,
        origin_realm: str,
        max_message_bytes: int = 65536,
        max_connections: int = 256,
        cer_timeout_s: float = 10.0,
        read_timeout_s: float = 30.0,
        watchdog_s: float = 30.0,
        max_pending: int = 4096,
        duplicate_window_s: float = 60.0,
        dpa_timeout_s: float = 5.0,
        tick_s: float = 0.25,
        rng: random.Random | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.allowed = allowed
        self.metrics = metrics
        self.origin_host = origin_host
        self.origin_realm = origin_realm
        self.max_message_bytes = max_message_bytes
        self.max_connections = max_connections
        self.cer_timeout_s = cer_timeout_s
        self.read_timeout_s = read_timeout_s
        self.watchdog_s = watchdog_s
        self.max_pending = max_pending
        self.duplicate_window_s = duplicate_window_s
        self.dpa_timeout_s = dpa_timeout_s
        self.tick_s = tick_s
        self.rng = rng if rng is not None else random.Random()
        self.origin_state_id = int(time.time()) & 0xFFFFFFFF
        self.firmware_revision = firmware_revision()
        self.encoder = CcaEncoder(origin_host=origin_host, origin_realm=origin_realm)
        self.connections: dict[PeerConnection, None] = {}  # insertion order: oldest first
        self._unopened: dict[PeerConnection, None] = {}  # no CER accepted yet, oldest first
        self._servers: list[asyncio.AbstractServer] = []
        self.bound: list[tuple[str, int]] = []
        self.bound_tls: list[tuple[str, int]] = []
        self._pending: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._stopping = False
        self._all_closed = asyncio.Event()
        self._hop_by_hop = itertools.count(self.rng.getrandbits(31))
        # duplicate key -> (expiry, answer; None while the first copy is in progress)
        self._answers: dict[DuplicateKey, tuple[float, bytes | None]] = LongLivedDict()
        self._answer_order: deque[tuple[float, DuplicateKey]] = deque()
        self._bind_metrics()

    def _bind_metrics(self) -> None:
        m = self.metrics
        self.drop = {c: m.dropped.labels("diameter", c) for c in DIAMETER_DROP_CAUSES}
        self.closed = {r: m.diameter_connections_closed.labels(r) for r in DIAMETER_CLOSE_REASONS}
        self.duplicates = m.duplicates.labels("diameter")
        self.latency = m.latency.labels("diameter", "ccr")
        self._peer_gauges = {
            s: m.diameter_peers.labels(s.value)
            for s in PeerState
            if s.value in DIAMETER_PEER_STATES
        }
        self.tolerances = {t: m.diameter_tolerances.labels(t) for t in TOLERANCES}
        self._answer_counters: dict[tuple[str, int], Any] = {}
        self._mscc_counters: dict[tuple[str, int], Any] = {}
        self.handler.count = self.count_answer
        invalid = {p: m.invalid_identities.labels("diameter", p.value) for p in IdentityProblem}
        self.handler.count_invalid = lambda problem: invalid[problem].inc()

    def count_answer(self, command: str, result_code: int, mscc_codes: tuple[int, ...]) -> None:
        counter = self._answer_counters.get((command, result_code))
        if counter is None:
            counter = self._answer_counters[(command, result_code)] = (
                self.metrics.diameter_answers.labels(command, str(result_code))
            )
        counter.inc()
        for code in mscc_codes:
            counter = self._mscc_counters.get((command, code))
            if counter is None:
                counter = self._mscc_counters[(command, code)] = (
                    self.metrics.diameter_mscc_results.labels(command, str(code))
                )
            counter.inc()

    # --- start and stop -------------------------------------------------------------------

    async def start(
        self,
        listen: Iterable[str],
        *,
        reuse_port: bool = False,
        tls_listen: Iterable[str] = (),
    ) -> list[tuple[str, int]]:
        """Listen on every ``host:port`` (plain TCP) and every ``tls_listen`` one (TLS/TCP,
        needs ``ssl_context``); returns the (host, port) pairs bound. Raises OSError."""
        loop = asyncio.get_running_loop()
        bound: list[tuple[str, int]] = []
        tls_addresses = list(tls_listen)
        if tls_addresses and self.ssl_context is None:
            raise ValueError("TLS listeners need an ssl_context")
        for address, tls in [(a, False) for a in listen] + [(a, True) for a in tls_addresses]:
            host, _, port = address.rpartition(":")
            host = host.strip("[]")
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            server = await loop.create_server(
                functools.partial(PeerConnection, self, tls=tls),
                host=host,
                port=int(port),
                family=family,
                reuse_address=True,
                reuse_port=reuse_port or None,
                backlog=1024,
                ssl=self.ssl_context if tls else None,
                ssl_handshake_timeout=self.cer_timeout_s if tls else None,
            )
            self._servers.append(server)
            # uvloop's Server.sockets is a list (typeshed: a tuple), which compiled code checks.
            for sock in cast(Any, server).sockets:
                name = sock.getsockname()
                (self.bound_tls if tls else bound).append((str(name[0]), int(name[1])))
        self.bound = bound
        self._sweeper = asyncio.create_task(self._sweep(), name="diameter-sweeper")
        return bound

    async def stop(self, timeout_s: float) -> None:
        """Stop listening, finish in-flight requests, say DPR to open peers, close; all within
        ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        self._stopping = True
        for server in self._servers:
            server.close()
        self._servers.clear()
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=max(deadline - loop.time(), 0) / 2)
        dpa_deadline = min(deadline, loop.time() + self.dpa_timeout_s)
        for connection in list(self.connections):
            connection.stop(loop.time(), dpa_deadline)
        if self.connections:
            self._all_closed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), max(deadline - loop.time(), 0))
        for connection in list(self.connections):
            connection.abort("shutdown")
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        still = set(self._pending)
        if still:
            _done, late = await asyncio.wait(still, timeout=max(deadline - loop.time(), 0.01))
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    # --- what operators see and change -----------------------------------------------------

    def peers_by_state(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for connection in self.connections:
            state = connection.machine.state.value
            counts[state] = counts.get(state, 0) + 1
        return counts

    def set_peers(self, rules: Iterable[PeerRule]) -> None:
        """A new allow-list (configuration reload); judges the next CERs, open peers stay."""
        self.allowed = PeerAllowList(rules)

    # --- connections ----------------------------------------------------------------------

    def admit_connection(self, connection: PeerConnection) -> bool:
        """Room for a new connection? Evicts the oldest unopened one when full."""
        if self._stopping:
            self.closed["shutdown"].inc()
            return False
        if len(self.connections) >= self.max_connections:
            if not self._unopened:
                self.closed["too_many_connections"].inc()
                return False
            oldest = next(iter(self._unopened))
            oldest.abort("evicted_idle")
        self.connections[connection] = None
        self._unopened[connection] = None
        return True

    def opened(self, connection: PeerConnection) -> None:
        self._unopened.pop(connection, None)

    def forget(self, connection: PeerConnection) -> None:
        self.connections.pop(connection, None)
        self._unopened.pop(connection, None)
        if not self.connections:
            self._all_closed.set()

    def next_hop_by_hop(self) -> int:
        return next(self._hop_by_hop) & 0xFFFFFFFF

    # --- in-flight work -------------------------------------------------------------------

    @property
    def pending(self) -> int:
        return len(self._pending)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._pending.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.drop["internal_error"].inc()
            log.error("diameter: request failed", exc_info=task.exception())

    # --- duplicates -----------------------------------------------------------------------

    def cached_answer(self, key: DuplicateKey, now: float) -> tuple[float, bytes | None] | None:
        """(expiry, answer) kept for ``key`` (answer None while in progress), or None."""
        held = self._answers.get(key)
        if held is None or held[0] <= now:
            return None
        return held

    def remember(self, key: DuplicateKey, answer: bytes | None, now: float) -> None:
        answers = self._answers
        if len(answers) >= _DUPLICATES_MAX and key not in answers:
            self._expire_answers(now)
            if len(answers) >= _DUPLICATES_MAX:
                # Bounded: the oldest answer goes first.
                _, oldest = self._answer_order.popleft()
                answers.pop(oldest, None)
        expires = now + self.duplicate_window_s
        answers[key] = (expires, answer)
        self._answer_order.append((expires, key))

    def forget_answer(self, key: DuplicateKey) -> None:
        self._answers.pop(key, None)

    def _expire_answers(self, now: float) -> None:
        order = self._answer_order
        answers = self._answers
        while order and order[0][0] <= now:
            _, key = order.popleft()
            held = answers.get(key)
            if held is not None and held[0] <= now:
                del answers[key]

    # --- timers ---------------------------------------------------------------------------

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.tick_s)
            now = loop.time()
            for connection in list(self.connections):
                try:
                    connection.on_tick(now)
                except Exception:  # a bug in one connection's timers must not stop the sweep
                    log.exception("diameter: timer error on %s", connection.peer_address)
                    connection.abort("internal_error")
            counts = self.peers_by_state()
            for state, gauge in self._peer_gauges.items():
                gauge.set(counts.get(state.value, 0))
            self._expire_answers(now)


class PeerConnection(asyncio.Protocol):
    """One peer's TCP connection."""

    def __init__(self, server: DiameterServer, *, tls: bool = False) -> None:
        self.server = server
        self.tls = tls  # TLS/TCP: the CER's Origin-Host must be named by the certificate
        self.transport: asyncio.Transport | None = None
        self.framer = Framer(server.max_message_bytes)
        self.machine = PeerStateMachine()
        self.watchdog: Watchdog | None = None
        self.peer_address = "?"
        self.peer_host: str | None = None
        self.local_address = "127.0.0.1"
        self.accepted_at = 0.0
        self.partial_since: float | None = None
        self.state_deadline: float | None = None  # CLOSING / WAIT_DISCONNECT
        self.sent: dict[int, int] = {}  # Hop-by-Hop-Id -> command code of our requests
        self._later: list[bytes] = []  # answers from tasks, written once per loop iteration
        self._flush_scheduled = False
        self._loop = asyncio.get_running_loop()

    # --- asyncio callbacks ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport) or hasattr(transport, "write")
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        if peer:
            self.peer_address = str(peer[0])
        if local:
            self.local_address = str(local[0])
        self.accepted_at = self._loop.time()
        if not self.server.admit_connection(self):
            transport.abort()  # type: ignore[attr-defined]
            self.machine = PeerStateMachine(PeerState.CLOSED)
            return
        self.machine.handle(PeerEvent.CONNECTION_ACCEPTED)

    def connection_lost(self, exc: Exception | None) -> None:
        with contextlib.suppress(PeerProtocolError):
            self.machine.handle(PeerEvent.PEER_DISCONNECTED)
        self.server.forget(self)
        self._later.clear()

    def pause_writing(self) -> None:
        # The peer does not read its answers: stop reading its requests until it does.
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        now = self._loop.time()
        out: list[bytes] = []
        messages: list[bytes] = []
        close_reason: str | None = None
        try:
            try:
                messages = self.framer.feed(data)
            except FramingError as error:
                messages = error.messages
                close_reason = "framing_error"
                framing_error: FramingError | None = error
            else:
                framing_error = None
            for message in messages:
                close_reason = self._message(message, now, out) or close_reason
                if close_reason is not None and close_reason != "framing_error":
                    break
            if framing_error is not None and close_reason == "framing_error":
                header = framing_error.header
                if header[4] & FLAG_REQUEST:
                    out.append(
                        build_error_answer(
                            header,
                            origin_host=self.server.origin_host,
                            origin_realm=self.server.origin_realm,
                            result_code=framing_error.result_code,
                            error_message=str(framing_error)[:200],
                        )
                    )
        except Exception:  # the one boundary: a bug closes this connection, not the daemon
            log.exception("diameter: unexpected error on a connection from %s", self.peer_address)
            self.server.drop["internal_error"].inc()
            close_reason = "internal_error"
        if out:
            transport.write(b"".join(out) if len(out) > 1 else out[0])
        if close_reason is not None:
            self.close(close_reason)
            return
        if messages:
            if self.watchdog is not None:
                self.watchdog.on_traffic(now)
            self.partial_since = now if self.framer.pending_bytes else None
        elif self.partial_since is None and self.framer.pending_bytes:
            self.partial_since = now

    # --- messages -------------------------------------------------------------------------

    def _message(self, data: bytes, now: float, out: list[bytes]) -> str | None:
        """Handle one framed message; return a close reason to close after writing ``out``."""
        flags = data[4]
        command = int.from_bytes(data[5:8], "big")
        if flags & FLAG_REQUEST:
            if command == CMD_CREDIT_CONTROL:
                return self._ccr(data, now, out)
            return self._base_request(data, command, now, out)
        return self._answer(data, command, now)

    def _event(self, event: PeerEvent) -> tuple[PeerAction, ...] | int:
        """Feed the table; an illegal pair gives its result code instead of actions."""
        try:
            return self.machine.handle(event)
        except PeerProtocolError as error:
            log.debug("diameter: %s from %s", error, self.peer_address)
            return error.result_code

    def _error(self, data: bytes, result_code: int, text: str | None = None) -> bytes:
        return build_error_answer(
            data,
            origin_host=self.server.origin_host,
            origin_realm=self.server.origin_realm,
            result_code=result_code,
            error_message=text,
            origin_state_id=self.server.origin_state_id,
        )

    def _not_open(
        self, data: bytes, actions: tuple[PeerAction, ...] | int, out: list[bytes]
    ) -> str:
        """A request the table refuses (before the CER: 3010 DIAMETER_UNKNOWN_PEER)."""
        code = actions if isinstance(actions, int) else 3010
        out.append(self._error(data, code, "capabilities exchange required first"))
        return "unknown_peer"

    def _ccr(self, data: bytes, now: float, out: list[bytes]) -> str | None:
        actions = self._event(PeerEvent.RCV_MESSAGE)
        if actions != (PeerAction.PROCESS,):
            return self._not_open(data, actions, out)
        server = self.server
        try:
            request = parse_ccr(data)
        except MalformedMessage as error:
            out.append(server.encoder.build_error(data, error))
            server.count_answer("CCR", error.result_code, ())
            return None
        for tolerance in request.tolerances:
            server.tolerances[tolerance].inc()
        key = (request.origin_host, request.end_to_end)
        if data[4] & FLAG_RETRANSMIT:
            held = server.cached_answer(key, now)
            if held is not None:
                cached = held[1]
                if cached is None:
                    server.drop["duplicate_in_progress"].inc()
                else:
                    server.duplicates.inc()
                    out.append(cached[:12] + data[12:16] + cached[16:])
                return None
        answer = server.handler.answer_now(request)
        if answer is not None:
            server.remember(key, answer, now)
            out.append(answer)
            return None
        if server.pending >= server.max_pending:
            server.count_answer("CCR", DIAMETER_TOO_BUSY, ())
            server.drop["too_many_pending"].inc()
            out.append(server.encoder.build(request, result_code=DIAMETER_TOO_BUSY))
            return None
        server.remember(key, None, now)
        server.spawn(self._ccr_later(request, key, time.perf_counter()))
        return None

    async def _ccr_later(
        self, request: CreditControlRequest, key: tuple[str, int], arrived: float
    ) -> None:
        server = self.server
        try:
            answer = await server.handler.answer(request)
        except asyncio.CancelledError:
            server.forget_answer(key)
            raise
        except Exception:
            log.exception("diameter: unexpected error answering a CCR from %s", self.peer_address)
            server.drop["internal_error"].inc()
            server.forget_answer(key)
            answer = server.encoder.build(request, result_code=DIAMETER_UNABLE_TO_COMPLY)
        else:
            server.remember(key, answer, self._loop.time())
        self.send_later(answer)
        server.latency.observe(time.perf_counter() - arrived)

    def send_later(self, answer: bytes) -> None:
        """Queue an answer written at the end of this loop iteration, batched with others."""
        transport = self.transport
        if transport is None or transport.is_closing():
            self.server.drop["peer_gone"].inc()
            return
        self._later.append(answer)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        later, self._later = self._later, []
        transport = self.transport
        if not later:
            return
        if transport is None or transport.is_closing():
            self.server.drop["peer_gone"].inc(len(later))
            return
        transport.write(b"".join(later))

    def _base_request(self, data: bytes, command: int, now: float, out: list[bytes]) -> str | None:
        server = self.server
        try:
            check_header(data)
        except MalformedMessage as error:
            out.append(self._error(data, error.result_code, str(error)))
            server.drop["malformed"].inc()
            return None
        header = peek_header(data)
        if command == CMD_CAPABILITIES_EXCHANGE:
            return self._cer(data, now, out)
        if command == CMD_DEVICE_WATCHDOG:
            actions = self._event(PeerEvent.RCV_DWR)
            if isinstance(actions, int) or PeerAction.REJECT_UNKNOWN_PEER in actions:
                return self._not_open(data, actions, out)
            if PeerAction.SEND_DWA in actions:
                out.append(
                    build_dwa(
                        header,
                        origin_host=server.origin_host,
                        origin_realm=server.origin_realm,
                        origin_state_id=server.origin_state_id,
                    )
                )
            server.count_answer("DWR", DIAMETER_SUCCESS, ())
            return None
        if command == CMD_DISCONNECT_PEER:
            actions = self._event(PeerEvent.RCV_DPR)
            if isinstance(actions, int) or PeerAction.REJECT_UNKNOWN_PEER in actions:
                return self._not_open(data, actions, out)
            if PeerAction.SEND_DPA in actions:
                out.append(
                    build_dpa(
                        header, origin_host=server.origin_host, origin_realm=server.origin_realm
                    )
                )
                self.state_deadline = now + server.dpa_timeout_s
            server.count_answer("DPR", DIAMETER_SUCCESS, ())
            log.info("diameter: peer said goodbye (DPR) origin_host=%s", self.peer_host)
            return None
        actions = self._event(PeerEvent.RCV_MESSAGE)
        if actions != (PeerAction.PROCESS,):
            return self._not_open(data, actions, out)
        if header.application_id not in (APP_COMMON, APP_CREDIT_CONTROL):
            code = DIAMETER_APPLICATION_UNSUPPORTED
        else:
            code = DIAMETER_COMMAND_UNSUPPORTED
        out.append(self._error(data, code, f"command {command} is not supported here"))
        server.count_answer("other", code, ())
        return None

    def _cer(self, data: bytes, now: float, out: list[bytes]) -> str | None:
        server = self.server
        failed_avp: bytes | None = None
        text: str | None = None
        origin_host: str | None = None
        allowed = server.allowed
        if isinstance(allowed, PeerAllowList):
            allowed = functools.partial(allowed, tls=self.tls)
        try:
            message = parse_message(data)
            result = capabilities_exchange(message, allowed=allowed, peer_address=self.peer_address)
            code = result.result_code
            avp = message.find(264)  # Origin-Host, validated by capabilities_exchange
            origin_host = avp.as_identity() if avp is not None else None
        except MalformedMessage as error:
            code, failed_avp, text = error.result_code, error.failed_avp, str(error)[:200]
        if code == DIAMETER_SUCCESS and self.tls and self.transport is not None:
            peercert = self.transport.get_extra_info("peercert")
            if origin_host is None or not certificate_matches(peercert, origin_host):
                code = DIAMETER_UNKNOWN_PEER
                text = "the peer's certificate does not name its Origin-Host"
        accepted = code == DIAMETER_SUCCESS
        actions = self._event(
            PeerEvent.RCV_CER_ACCEPTED if accepted else PeerEvent.RCV_CER_REJECTED
        )
        if isinstance(actions, int):
            out.append(self._error(data, actions, "unexpected CER"))
            return "protocol_error"
        header = peek_header(data)
        if accepted:
            self.peer_host = origin_host
            if self.watchdog is None:
                self.watchdog = Watchdog(now=now, tw_init_s=server.watchdog_s, rng=server.rng)
            server.opened(self)
            log.info(
                "diameter: peer open origin_host=%s address=%s", origin_host, self.peer_address
            )
        else:
            if text is None and code == 3010:
                text = "unknown peer"
            elif text is None:
                text = "no common application"
            log.warning(
                "diameter: CER refused result_code=%d origin_host=%s address=%s reason=%s",
                code,
                origin_host,
                self.peer_address,
                text,
            )
        server.count_answer("CER", code, ())
        out.append(
            build_cea(
                header,
                result_code=code,
                origin_host=server.origin_host,
                origin_realm=server.origin_realm,
                host_ip_addresses=[self.local_address],
                product_name="ocs",
                firmware_revision=server.firmware_revision,
                origin_state_id=server.origin_state_id,
                error_message=text,
                failed_avp=failed_avp,
            )
        )
        return "cer_refused" if PeerAction.CLOSE in actions else None

    def _answer(self, data: bytes, command: int, now: float) -> str | None:
        server = self.server
        hop_by_hop = int.from_bytes(data[12:16], "big")
        expected = self.sent.get(hop_by_hop)
        if expected != command:
            server.drop["unsolicited_answer"].inc()
            if self.machine.state is PeerState.WAIT_CER:
                return "protocol_error"  # an answer before the CER
            return None
        del self.sent[hop_by_hop]
        self._count_peer_answer(data, command)
        if command == CMD_DEVICE_WATCHDOG:
            if self.watchdog is not None:
                self.watchdog.on_dwa(now)
            self._event(PeerEvent.RCV_DWA)
            return None
        if command == CMD_DISCONNECT_PEER:
            actions = self._event(PeerEvent.RCV_DPA)
            if isinstance(actions, int) or PeerAction.CLOSE in actions:
                return "shutdown"
        return None

    def _count_peer_answer(self, data: bytes, command: int) -> None:
        code = 0
        with contextlib.suppress(MalformedMessage):
            avp = parse_message(data).find(AVP_RESULT_CODE)
            code = avp.as_u32() if avp is not None else 0
        name = "DWA" if command == CMD_DEVICE_WATCHDOG else "DPA"
        self.server.metrics.diameter_peer_answers.labels(name, str(code)).inc()

    # --- timers and closing ---------------------------------------------------------------

    def on_tick(self, now: float) -> None:
        """The sweep: act on every deadline that has passed."""
        if self.transport is None or self.transport.is_closing():
            return
        state = self.machine.state
        server = self.server
        if state is PeerState.WAIT_CER and now - self.accepted_at >= server.cer_timeout_s:
            self._event(PeerEvent.TIMEOUT)
            self.abort("cer_timeout")
            return
        if self.partial_since is not None and now - self.partial_since >= server.read_timeout_s:
            self.abort("read_timeout")
            return
        closing = state in (PeerState.CLOSING, PeerState.WAIT_DISCONNECT)
        if closing and self.state_deadline is not None and now >= self.state_deadline:
            self._event(PeerEvent.TIMEOUT)
            self.abort("dpa_timeout" if state is PeerState.CLOSING else "peer_dpr")
            return
        watchdog = self.watchdog
        if watchdog is None or now < watchdog.next_deadline():
            return
        decision = watchdog.on_timeout(now)
        if decision is None:
            return
        actions = self._event(WATCHDOG_EVENTS[decision])
        if isinstance(actions, int) or PeerAction.CLOSE in actions:
            self.abort("watchdog")
            return
        if PeerAction.SEND_DWR in actions:
            hop_by_hop = server.next_hop_by_hop()
            self.sent[hop_by_hop] = CMD_DEVICE_WATCHDOG
            self.transport.write(
                build_dwr(
                    origin_host=server.origin_host,
                    origin_realm=server.origin_realm,
                    hop_by_hop=hop_by_hop,
                    end_to_end=hop_by_hop,
                    origin_state_id=server.origin_state_id,
                )
            )

    def stop(self, now: float, dpa_deadline: float) -> None:
        """Our shutdown: DPR to an open peer; anything else is closed at once."""
        actions = self._event(PeerEvent.STOP)
        if isinstance(actions, int) or PeerAction.CLOSE in actions:
            self.abort("shutdown")
            return
        if PeerAction.SEND_DPR in actions and self.transport is not None:
            server = self.server
            hop_by_hop = server.next_hop_by_hop()
            self.sent[hop_by_hop] = CMD_DISCONNECT_PEER
            self.state_deadline = dpa_deadline
            self._flush()
            self.transport.write(
                build_dpr(
                    origin_host=server.origin_host,
                    origin_realm=server.origin_realm,
                    hop_by_hop=hop_by_hop,
                    end_to_end=hop_by_hop,
                    disconnect_cause=DisconnectCause.REBOOTING,
                )
            )

    def close(self, reason: str) -> None:
        """Close after what was written is flushed."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            self.server.closed[reason].inc()
            log.debug("diameter: closing connection from %s: %s", self.peer_address, reason)
            transport.close()
        self.server.forget(self)

    def abort(self, reason: str) -> None:
        """Close at once, dropping anything unwritten."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            self.server.closed[reason].inc()
            log.debug("diameter: aborting connection from %s: %s", self.peer_address, reason)
            transport.abort()
        self.server.forget(self)
