"""In-process fuzz targets for both receive paths (issue 14), shared by ``fuzz/run.py``
(atheris, coverage-guided) and the regression tests (``tests/unit/test_fuzz_regressions.py``).

RADIUS: ``RadiusFront.handle`` with the real codec, client table and charging pipeline over an
in-memory store. The first input byte picks the port (auth or acct) and whether the rest is
sent as it is (the parser's robustness) or re-signed: read as code, identifier, authenticator
and attribute TLVs, then encoded with the client's secret (correct Request Authenticator and
Message-Authenticator), so the fuzzer gets past authentication into identities, accounting
and replies.

Diameter: a ``PeerConnection`` of a real ``DiameterServer`` on an in-memory transport: each
input arrives after a valid CER on a fresh connection (or, by the first byte's choice, before
any CER), through the framer, the peer state table, the CCR parser and ``CreditControl``. As
for RADIUS, the input is sent as it is or wrapped in a well-formed header (length and
flags right, command chosen from CER/CCR/DWR/DPR) around fuzzed AVPs.

A crash is: an exception out of the path, a request counted as ``internal_error`` (the
paths' catch-all boundary), or a value reaching the store that PostgreSQL would refuse as
text (``StrictStore``): hostile bytes must never reach SQL.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "unit"))

from memory_store import MemoryStore  # noqa: E402

from ocs.charging.cache import AccountCache  # noqa: E402
from ocs.charging.pipeline import CachePolicy, Charging, UsageReport  # noqa: E402
from ocs.charging.sessions import SessionBook  # noqa: E402
from ocs.core import AccountSnapshot, AccountStatus, GrantLimits, Tariff, parse_amount  # noqa: E402
from ocs.core.identity import IdentityKind  # noqa: E402
from ocs.diameter import codec as dcodec  # noqa: E402
from ocs.diameter.handler import CreditControl  # noqa: E402
from ocs.diameter.server import DiameterServer, PeerAllowList, PeerConnection  # noqa: E402
from ocs.metrics import Metrics  # noqa: E402
from ocs.radius import codec  # noqa: E402
from ocs.radius.front import (  # noqa: E402
    AttributeRef,
    ClientTable,
    MessageAuthenticatorPolicy,
    RadiusClient,
    RadiusFront,
)

SECRET = b"testing123"
KEY = codec.SharedSecret(SECRET)
NAS = ("127.0.0.1", 40000)
PEER_HOST = "pcef.localdomain"
TARIFF = Tariff(price_per_minute=parse_amount("0.06"), price_per_mb=parse_amount("0.01"))
RESET_EVERY = 2000  # fresh state now and then: memory stays bounded, runs stay comparable
MAX_INDEXED_TEXT_BYTES = 2000  # a btree index row holds at most about 2,700 octets


class HostileValueReachedStore(AssertionError):
    """A value PostgreSQL would refuse as text got as far as the store."""


def _check_text(what: str, value: Any, *, indexed: bool = False) -> None:
    if not isinstance(value, str):
        return
    if "\x00" in value:
        raise HostileValueReachedStore(f"{what} with a NUL reached the store: {value!r}")
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise HostileValueReachedStore(f"{what} not encodable reached the store: {exc}") from None
    if indexed and len(encoded) > MAX_INDEXED_TEXT_BYTES:
        raise HostileValueReachedStore(f"{what} of {len(encoded)} octets reached the store")


def _check_report(report: UsageReport) -> None:
    entry = report.entry
    _check_text("source", report.source)
    _check_text("origin", report.origin, indexed=True)
    _check_text("session_key", report.session_key, indexed=True)
    _check_text("uid", entry.uid, indexed=True)
    _check_text("report_key", entry.report_key, indexed=True)
    _check_text("wire_key", entry.wire_key, indexed=True)
    _check_text("close_reason", entry.close_reason)


class StrictStore(MemoryStore):
    """The in-memory store, refusing what PostgreSQL would refuse (as a crash)."""

    async def find_account(self, kind: IdentityKind, value: str) -> AccountSnapshot | None:
        _check_text("identity", value, indexed=True)
        return await super().find_account(kind, value)

    async def record(self, report: UsageReport) -> Any:
        _check_report(report)
        return await super().record(report)

    async def record_unmatched(
        self, report: UsageReport, identity_kind: str, identity: str, reason: str
    ) -> bool:
        _check_report(report)
        _check_text("identity_kind", identity_kind)
        _check_text("identity", identity)
        _check_text("reason", reason)
        return await super().record_unmatched(report, identity_kind, identity, reason)

    async def close_sessions(self, source: str, origin: str, reason: str) -> list[tuple[int, str]]:
        for what, value in (("source", source), ("origin", origin), ("reason", reason)):
            _check_text(what, value, indexed=True)
        return await super().close_sessions(source, origin, reason)

    async def session_generations(self, source: str, origin: str, session_key: str) -> Any:
        for what, value in (("origin", origin), ("session_key", session_key)):
            _check_text(what, value, indexed=True)
        return await super().session_generations(source, origin, session_key)

    async def credit(
        self, account_id: int, amount: int, idempotency_key: str, note: str
    ) -> AccountSnapshot:
        _check_text("idempotency_key", idempotency_key, indexed=True)
        _check_text("note", note)
        return await super().credit(account_id, amount, idempotency_key, note)


def _accounts() -> dict[int, AccountSnapshot]:
    def snap(account_id: int, name: str, balance: str, **kw: Any) -> AccountSnapshot:
        return AccountSnapshot(
            account_id=account_id, name=name, balance=parse_amount(balance), tariff=TARIFF, **kw
        )

    return {
        1: snap(1, "prepaid-ok", "1.00"),
        2: snap(2, "prepaid-empty", "0.00"),
        3: snap(3, "blocked", "100", status=AccountStatus.BLOCKED),
        4: snap(4, "postpaid", "-50.00", credit_limit=parse_amount("100")),
        5: snap(5, "cold", "10.00"),  # only in the store: a cache miss
    }


def _charging(loop: asyncio.AbstractEventLoop) -> tuple[Charging, StrictStore]:
    accounts = _accounts()
    identities = {("user_name", a.name): a.account_id for a in accounts.values()}
    identities[("e164", "15550000001")] = 1
    store = StrictStore(accounts=dict(accounts), identities=identities)
    cache = AccountCache()
    cached = [accounts[i] for i in (1, 2, 3, 4)]
    cache.replace_all(
        cached,
        [("user_name", a.name, a.account_id) for a in cached] + [("e164", "15550000001", 1)],
        loaded_at=loop.time(),
    )
    charging = Charging(
        cache=cache,
        sessions=SessionBook(),
        source=store,
        sink=store,
        limits=GrantLimits(max_time_s=3600, max_volume_bytes=10_000_000),
        policy=CachePolicy(),
    )
    return charging, store


# --- RADIUS -------------------------------------------------------------------------------


class _Transport:
    def __init__(self) -> None:
        self.sent = 0

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent += 1


class _Listener:
    tls = False

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.transport = _Transport()


_REQUEST_CODES = (
    codec.ACCESS_REQUEST,
    codec.ACCOUNTING_REQUEST,
    codec.STATUS_SERVER,
    codec.ACCESS_REQUEST,
    codec.ACCOUNTING_REQUEST,
    codec.DISCONNECT_REQUEST,
)


def resign_radius(body: bytes) -> bytes | None:
    """``body`` read as code, identifier, authenticator and TLVs, encoded with the secret."""
    if len(body) < 2:
        return None
    code = _REQUEST_CODES[body[0] % len(_REQUEST_CODES)]
    identifier = body[1]
    with_ma = bool(body[0] & 0x80)
    authenticator = body[2:18].ljust(16, b"\x00")
    attributes: list[tuple[int, bytes]] = []
    pos, size = 18, 20
    while pos + 2 <= len(body):
        kind, length = body[pos], body[pos + 1]
        if length < 2 or pos + length > len(body) or size + length > 4000:
            break
        if kind != codec.MESSAGE_AUTHENTICATOR:
            attributes.append((kind, body[pos + 2 : pos + length]))
            size += length
        pos += length
    self_vector = code in (codec.ACCESS_REQUEST, codec.STATUS_SERVER)
    return codec.encode_request(
        code,
        identifier,
        KEY,
        attributes,
        authenticator=authenticator if self_vector else None,
        message_authenticator=with_ma,
    )


class RadiusTarget:
    """One RadiusFront fed datagram by datagram."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.runs = 0
        self._reset()

    def _reset(self) -> None:
        charging, self.store = _charging(self.loop)
        clients = [
            RadiusClient(
                name="nas",
                network=ipaddress.ip_network("127.0.0.0/8"),
                secret=KEY,
                require_message_authenticator=MessageAuthenticatorPolicy.NOT_REQUIRED,
                limit_proxy_state=True,
                identity=AttributeRef("User-Name", codec.USER_NAME),
                identity_kind=IdentityKind.USER_NAME,
            ),
            RadiusClient(
                name="sip-switch",
                network=ipaddress.ip_network("10.0.0.0/8"),
                secret=KEY,
                require_message_authenticator=MessageAuthenticatorPolicy.REQUIRED,
                limit_proxy_state=True,
                identity=AttributeRef("Calling-Station-Id", 31),
                identity_kind=IdentityKind.E164,
            ),
        ]
        self.front = RadiusFront(
            charging=charging, clients=ClientTable(clients), metrics=Metrics(), duplicate_window_s=0
        )
        self._internal = self.front._drop["internal_error"]
        self.listeners = {"auth": _Listener("auth"), "acct": _Listener("acct")}

    def one(self, data: bytes) -> None:
        self.runs += 1
        if self.runs % RESET_EVERY == 0:
            self._reset()
        if not data:
            return
        mode, body = data[0], data[1:]
        datagram = resign_radius(body) if mode & 2 else body
        if datagram is None:
            return
        listener = self.listeners["acct" if mode & 1 else "auth"]
        source = ("10.1.2.3", 1812) if mode & 4 else NAS
        self.loop.run_until_complete(self._handle(listener, datagram, source))

    async def _handle(self, listener: _Listener, datagram: bytes, source: Any) -> None:
        before = self._internal.value
        self.front.handle(listener, datagram, source, 0.0)  # type: ignore[arg-type]
        pending = list(self.front._pending)
        if pending:
            results = await asyncio.gather(*pending, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        if self._internal.value != before:
            raise AssertionError("the RADIUS front counted an internal error")


# --- Diameter -----------------------------------------------------------------------------


class _TcpTransport:
    def __init__(self) -> None:
        self.closing = False
        self.written = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 3868), "sockname": ("127.0.0.1", 3868)}.get(name, default)

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None


def cer(host: str = PEER_HOST) -> bytes:
    return dcodec.encode_message(
        command_code=dcodec.CMD_CAPABILITIES_EXCHANGE,
        application_id=0,
        hop_by_hop=1,
        end_to_end=1,
        avps=[
            dcodec.encode_avp(dcodec.AVP_ORIGIN_HOST, host.encode()),
            dcodec.encode_avp(dcodec.AVP_ORIGIN_REALM, b"localdomain"),
            dcodec.avp_address(dcodec.AVP_HOST_IP_ADDRESS, "127.0.0.1"),
            dcodec.avp_u32(dcodec.AVP_VENDOR_ID, 0),
            dcodec.avp_utf8(dcodec.AVP_PRODUCT_NAME, "fuzz", mandatory=False),
            dcodec.avp_u32(dcodec.AVP_AUTH_APPLICATION_ID, 4),
        ],
        flags=dcodec.FLAG_REQUEST,
    )


CER = cer()

_COMMANDS = (
    dcodec.CMD_CREDIT_CONTROL,
    dcodec.CMD_CREDIT_CONTROL,
    dcodec.CMD_CREDIT_CONTROL,
    dcodec.CMD_CAPABILITIES_EXCHANGE,
    dcodec.CMD_DEVICE_WATCHDOG,
    dcodec.CMD_DISCONNECT_PEER,
)


def wrap_diameter(body: bytes) -> bytes | None:
    """``body`` as flags, command choice, hop-by-hop and AVPs, with a well-formed header."""
    if len(body) < 6:
        return None
    flags = body[0] | dcodec.FLAG_REQUEST if body[1] & 0x80 == 0 else body[0] & 0xF0
    flags &= 0xF0  # reserved bits clear
    command = _COMMANDS[body[1] % len(_COMMANDS)]
    application = 4 if command == dcodec.CMD_CREDIT_CONTROL else 0
    hop = int.from_bytes(body[2:6], "big")
    avps = body[6:]
    length = 20 + len(avps)
    if length > 0xFFFFFF:
        return None
    return (
        struct.pack(">I", (1 << 24) | length)
        + struct.pack(">I", (flags << 24) | command)
        + struct.pack(">III", application, hop, hop)
        + avps
    )


@dataclass
class _Server:
    server: DiameterServer
    store: StrictStore


class DiameterTarget:
    """A DiameterServer's connections fed message bytes, in memory."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.runs = 0
        self._reset()

    def _reset(self) -> None:
        charging, store = _charging(self.loop)
        handler = CreditControl(
            charging=charging,
            origin_host="ocs.localdomain",
            origin_realm="localdomain",
            validity_time_s=600,
        )
        rules = [SimpleNamespace(origin_host="*.localdomain", realm=None, address=None)]

        async def make() -> DiameterServer:
            return DiameterServer(
                handler=handler,
                allowed=PeerAllowList(rules),
                metrics=Metrics(),
                origin_host="ocs.localdomain",
                origin_realm="localdomain",
                rng=random.Random(7),
                max_message_bytes=65536,
            )

        self.server = self.loop.run_until_complete(make())
        self.store = store
        self._open: PeerConnection | None = None
        self._internal = self.server.drop["internal_error"]

    def one(self, data: bytes) -> None:
        self.runs += 1
        if self.runs % RESET_EVERY == 0:
            self._reset()
        if not data:
            return
        mode, body = data[0], data[1:]
        message = wrap_diameter(body) if mode & 1 else body
        if message is None:
            return
        self.loop.run_until_complete(self._handle(message, opened=not mode & 2, split=mode >> 2))

    def _connection(self, opened: bool) -> PeerConnection:
        """An open connection kept from input to input (a new one once it is closed), or a
        fresh one that has not sent its CER."""
        kept = self._open if opened else None
        if kept is not None and not kept.transport.is_closing():  # type: ignore[union-attr]
            return kept
        connection = PeerConnection(self.server)
        connection.connection_made(_TcpTransport())  # type: ignore[arg-type]
        if opened:
            connection.data_received(CER)
            self._open = connection
        return connection

    async def _handle(self, message: bytes, *, opened: bool, split: int) -> None:
        server = self.server
        before = self._internal.value
        connection = self._connection(opened)
        if split and len(message) > 1:  # the same bytes in two reads
            cut = split % len(message)
            connection.data_received(message[:cut])
            connection.data_received(message[cut:])
        else:
            connection.data_received(message)
        connection.data_received(message)  # the same again (a retransmission, a duplicate)
        pending = list(server._pending)
        if pending:
            results = await asyncio.gather(*pending, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        if not opened or self.runs % 64 == 0:
            connection.on_tick(self.loop.time() + 3600)  # every timer due
            connection.connection_lost(None)
        if self._internal.value != before:
            raise AssertionError("the Diameter server counted an internal error")


TARGETS = {"radius": RadiusTarget, "diameter": DiameterTarget}
