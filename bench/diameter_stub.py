"""A Diameter server with no logic, in Python on uvloop: the floor of a Python daemon.

The same answers as ``bench/diameter_stub.c`` (CER -> CEA, DWR -> DWA, DPR -> DPA, CCR -> CCA
with Session-Id copied, Result-Code 2001, Origin-Host, Origin-Realm, Auth-Application-Id 4,
CC-Request-Type and CC-Request-Number copied), one asyncio protocol per connection, every
request read in one go answered with one write. No allow-list, no state, no validation: what
ocsd spends per CCR beyond this stub is its own logic; what this stub spends beyond the C one
is Python and the event loop.

    .venv/bin/python bench/diameter_stub.py 127.0.0.1 3868 [seconds]
    .venv/bin/python bench/diameter_load.py --port 3868 --users 10000 --server-pid PID
"""

from __future__ import annotations

import asyncio
import ipaddress
import struct
import sys

import uvloop

ORIGIN_HOST = b"stub.localdomain"
ORIGIN_REALM = b"localdomain"
_U32 = struct.Struct("!I")
_AVP_HEAD = struct.Struct("!II")


def avp(code: int, data: bytes) -> bytes:
    total = 8 + len(data)
    return _AVP_HEAD.pack(code, 0x40000000 | total) + data + b"\0" * (-total & 3)


RESULT = avp(268, _U32.pack(2001)) + avp(264, ORIGIN_HOST) + avp(296, ORIGIN_REALM)
CEA_TAIL = (
    avp(257, bytes((0, 1, 127, 0, 0, 1))) + avp(266, _U32.pack(0)) + avp(269, b"stub")
    + avp(258, _U32.pack(4))
)  # fmt: skip
AUTH_APP = avp(258, _U32.pack(4))


def answer(req: bytes | memoryview, start: int, length: int) -> bytes:
    command = _U32.unpack_from(req, start + 4)[0] & 0xFFFFFF
    session = b""
    tail = b""
    pos = start + 20
    end = start + length
    while pos + 8 <= end:
        code, word = _AVP_HEAD.unpack_from(req, pos)
        avp_len = word & 0xFFFFFF
        header = 12 if word & 0x80000000 else 8
        if avp_len < header or pos + avp_len > end:
            break
        if code == 263:
            session = avp(263, bytes(req[pos + header : pos + avp_len]))
        elif (code == 416 or code == 415) and avp_len - header == 4:  # noqa: PLR1714
            tail += avp(code, bytes(req[pos + header : pos + avp_len]))
        pos += (avp_len + 3) & ~3
    if command == 257:
        body = session + RESULT + CEA_TAIL
    elif command == 272:
        body = session + RESULT + AUTH_APP + tail
    else:
        body = session + RESULT
    head = bytearray(req[start : start + 20])
    head[4] &= 0x7F & ~0x10  # R and T cleared (P kept)
    head[0:4] = _U32.pack((1 << 24) | (20 + len(body)))
    return bytes(head) + body


class Stub(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        out = []
        pos = 0
        size = len(buffer)
        while size - pos >= 20:
            length = _U32.unpack_from(buffer, pos)[0] & 0xFFFFFF
            if length < 20:
                assert self.transport is not None
                self.transport.close()
                return
            if size - pos < length:
                break
            if buffer[pos + 4] & 0x80:  # requests only
                out.append(answer(buffer, pos, length))
            pos += length
        self.buffer = buffer[pos:]
        if out and self.transport is not None:
            self.transport.write(b"".join(out))


async def main(host: str, port: int, seconds: float) -> None:
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit("loopback addresses only")
    server = await asyncio.get_running_loop().create_server(Stub, host, port, reuse_address=True)
    async with server:
        await asyncio.sleep(seconds)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    uvloop.run(
        main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else 600)
    )
