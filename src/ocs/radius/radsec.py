"""RADIUS over TLS (RadSec, RFC 6614): TCP connections carrying RADIUS packets, fed to the same
front as UDP datagrams.

Rules of this file:
- Only clients configured with ``tls = true`` are served here (by source address), and only
  here (the front drops their UDP datagrams). Their certificate is checked by the TLS layer
  (mutual TLS, the configured CA).
- The stream is cut by the RADIUS Length field. A length below 20 or above 4096 octets, or a
  client that is not a RadSec client, closes the connection (counted).
- Packets go through ``RadiusFront.enqueue`` like datagrams (the bounded queue, the same drop
  causes); replies are written back on the connection they came from. Access-Request and
  Status-Server are handled as on the auth port, Accounting-Request as on the acct port.
- ``max_connections`` bounds the connections; more are closed at once.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Iterable
from typing import Any, Final

from ocs.radius import codec
from ocs.radius.front import RadiusFront

log = logging.getLogger("ocs.radius")

MIN_LENGTH: Final = 20
MAX_LENGTH: Final = 4096


class _Writer:
    """``sendto`` for the front: writes a reply on the TLS connection."""

    def __init__(self, connection: RadSecConnection) -> None:
        self.connection = connection

    def sendto(self, data: bytes, addr: Any = None) -> None:
        transport = self.connection.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)


class _Side:
    """What the front reads of a listener: its kind, TLS, and where replies go."""

    tls = True
    relayed = False

    def __init__(self, kind: str, connection: RadSecConnection) -> None:
        self.kind = kind
        self.transport = _Writer(connection)


class RadSecConnection(asyncio.Protocol):
    def __init__(self, server: RadSecServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.addr: tuple[str, int] = ("?", 0)
        self.auth = _Side("auth", self)
        self.acct = _Side("acct", self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if peer:
            self.addr = (str(peer[0]), int(peer[1]))
        server = self.server
        client = server.front.clients.lookup(self.addr[0])
        if client is None or not client.tls:
            log.warning("radsec: connection from %s, not a RadSec client; closed", self.addr[0])
            server.front._drop["unknown_client"].inc()
            transport.close()
            return
        if len(server.connections) >= server.max_connections:
            log.warning("radsec: connection from %s refused: too many connections", self.addr[0])
            transport.close()
            return
        server.connections.add(self)
        log.info("radsec: client connected name=%s address=%s", client.name, self.addr[0])

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        buffer = self.buffer
        buffer += data
        front = self.server.front
        arrived = time.perf_counter()
        while len(buffer) >= 4:
            length = int.from_bytes(buffer[2:4], "big")
            if not MIN_LENGTH <= length <= MAX_LENGTH:
                front._drop["malformed"].inc()
                log.warning("radsec: bad packet length %d from %s; closing", length, self.addr[0])
                transport.close()
                return
            if len(buffer) < length:
                return
            packet = bytes(buffer[:length])
            del buffer[:length]
            side = self.acct if packet[0] == codec.ACCOUNTING_REQUEST else self.auth
            front.enqueue(side, packet, self.addr, arrived)


class RadSecServer:
    def __init__(
        self, front: RadiusFront, ssl_context: ssl.SSLContext, *, max_connections: int = 256
    ) -> None:
        self.front = front
        self.ssl_context = ssl_context
        self.max_connections = max_connections
        self.connections: set[RadSecConnection] = set()
        self._servers: list[asyncio.AbstractServer] = []
        self.bound: list[tuple[str, int]] = []

    async def start(
        self, addresses: Iterable[str], *, reuse_port: bool = False
    ) -> list[tuple[str, int]]:
        """Listen on every ``host:port``; workers share the ports (``reuse_port``)."""
        loop = asyncio.get_running_loop()
        for address in addresses:
            host, _, port = address.rpartition(":")
            host = host.strip("[]")
            server = await loop.create_server(
                lambda: RadSecConnection(self),
                host=host,
                port=int(port),
                family=socket.AF_INET6 if ":" in host else socket.AF_INET,
                reuse_address=True,
                reuse_port=reuse_port or None,
                ssl=self.ssl_context,
                ssl_handshake_timeout=10.0,
                backlog=256,
            )
            self._servers.append(server)
            for sock in server.sockets:
                name = sock.getsockname()
                self.bound.append((str(name[0]), int(name[1])))
        return self.bound

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.close()
        self._servers.clear()
