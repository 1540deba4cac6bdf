"""Spread a shared RADIUS port's requests over the workers by their Identifier.

With SO_REUSEPORT the kernel picks the socket of a UDP datagram by a hash of its addresses and
ports, so every request of one NAS socket (one source port: most NAS, BNGs included, send all
their RADIUS from one) goes to the same worker, and a few NAS can leave a worker idle while
another is saturated. A classic BPF program attached to the group (``SO_ATTACH_REUSEPORT_CBPF``)
chooses the socket instead: the kernel runs it with the data at the UDP payload, and it returns
the RADIUS Identifier (byte 1) modulo the number of workers. A NAS numbers its requests in turn,
so they spread evenly; a retransmission keeps its Identifier and its source, so it reaches the
worker that answered (or is answering) the first copy, which is where the duplicate cache is.

Only for the Access-Request ports: accounting of one session (Start, Interim, Stop) must reach
one worker, where the session runs; those ports keep the kernel's hash (one NAS socket, one
worker). While fewer sockets than workers are bound (start-up), or if the program returns an
index beyond them, the kernel falls back to its hash.
"""

from __future__ import annotations

import ctypes
import socket
import struct

SO_ATTACH_REUSEPORT_CBPF = getattr(socket, "SO_ATTACH_REUSEPORT_CBPF", 51)  # Linux, all arches

# struct sock_filter: u16 code, u8 jt, u8 jf, u32 k.
_LD_B_ABS = 0x30  # BPF_LD | BPF_B | BPF_ABS: A = packet[k] (out of range: the program returns 0)
_ALU_MOD_K = 0x94  # BPF_ALU | BPF_MOD | BPF_K: A %= k
_RET_A = 0x16  # BPF_RET | BPF_A


def identifier_program(sockets: int) -> bytes:
    """The filter: socket index = Identifier % ``sockets``."""
    if not 1 <= sockets <= 256:
        raise ValueError(f"sockets must be 1-256, not {sockets}")
    instructions = ((_LD_B_ABS, 1), (_ALU_MOD_K, sockets), (_RET_A, 0))
    return b"".join(struct.pack("HBBI", code, 0, 0, k) for code, k in instructions)


def spread_by_identifier(sock: socket.socket, sockets: int) -> None:
    """Attach the filter to ``sock``'s SO_REUSEPORT group (every member gets it; attaching the
    same program again, as each worker does, changes nothing). Raises OSError where the kernel
    refuses (not Linux, before 4.5, or a sandbox)."""
    program = identifier_program(sockets)
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = struct.pack("HP", len(program) // 8, ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
