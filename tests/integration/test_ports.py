"""The tests' port picker (support.free_port): ports outside the kernel's ephemeral range, each
free for TCP and UDP, never the same twice in a row of picks, and never one somebody holds."""

from __future__ import annotations

import socket

import support
from support import free_port, free_udp_port


def test_picked_ports_are_distinct_free_and_outside_the_ephemeral_range() -> None:
    low, high = support._ephemeral_range()
    held: list[socket.socket] = []
    try:
        picked = [free_udp_port() if n % 2 else free_port() for n in range(300)]
        assert len(set(picked)) == len(picked)
        for port in picked:
            assert not low <= port <= high, port
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                sock = socket.socket(socket.AF_INET, kind)
                held.append(sock)
                sock.bind(("127.0.0.1", port))  # free for both kinds when picked
    finally:
        for sock in held:
            sock.close()


def test_a_port_somebody_holds_is_skipped() -> None:
    candidate = support._NEXT[0]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.bind(("127.0.0.1", candidate))  # UDP only: a TCP pick must skip it too
        assert free_port(socket.SOCK_STREAM) != candidate
