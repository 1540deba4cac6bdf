"""Access-Requests of one NAS socket spread over the workers by Identifier (ocs.radius.spread)."""

from __future__ import annotations

import select
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest

from ocs.radius import codec
from ocs.radius.spread import identifier_program, spread_by_identifier


@contextmanager
def group(count: int, *, spread: bool) -> Iterator[tuple[list[socket.socket], int]]:
    """``count`` UDP sockets sharing one loopback port, as the workers do."""
    with ExitStack() as stack:
        sockets: list[socket.socket] = []
        port = 0
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(("127.0.0.1", port))
            port = sock.getsockname()[1]
            sock.settimeout(0.5)
            sockets.append(sock)
        if spread:
            for sock in sockets:
                spread_by_identifier(sock, count)
        yield sockets, port


def received(sockets: list[socket.socket], total: int) -> list[list[int]]:
    """The Identifiers each socket received, in order, once ``total`` have come (or 2 s)."""
    out: list[list[int]] = [[] for _ in sockets]
    deadline = time.monotonic() + 2.0
    while sum(map(len, out)) < total and time.monotonic() < deadline:
        ready, _, _ = select.select(sockets, [], [], 0.05)
        for sock in ready:
            out[sockets.index(sock)].append(sock.recv(4096)[1])
    return out


def send_from_one_port(port: int, identifiers: range) -> None:
    secret = codec.SharedSecret(b"testing123")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as nas:
        for identifier in identifiers:
            packet = codec.encode_request(
                codec.ACCESS_REQUEST, identifier, secret, [codec.attr_str(codec.USER_NAME, "u")]
            )
            nas.sendto(packet, ("127.0.0.1", port))


@pytest.mark.parametrize("count", [2, 3])
def test_one_nas_socket_spreads_over_the_workers_by_identifier(count: int) -> None:
    with group(count, spread=True) as (sockets, port):
        send_from_one_port(port, range(60))
        got = received(sockets, 60)
    # Socket i of the group (in the order they joined) gets Identifier % count == i.
    assert got == [[i for i in range(60) if i % count == index] for index in range(count)]


def test_without_the_program_one_nas_socket_reaches_one_worker() -> None:
    """What the program is for: the kernel's hash sends one source port to one socket."""
    with group(2, spread=False) as (sockets, port):
        send_from_one_port(port, range(20))
        got = received(sockets, 20)
    assert sorted(len(ids) for ids in got) == [0, 20]


def test_a_retransmission_reaches_the_worker_of_its_first_copy() -> None:
    with group(2, spread=True) as (sockets, port):
        send_from_one_port(port, range(7, 8))
        send_from_one_port(port, range(7, 8))  # the same Identifier again, another port even
        got = received(sockets, 2)
    assert got == [[], [7, 7]]


def test_a_datagram_too_short_for_an_identifier_is_not_lost() -> None:
    """The program's load fails (returns 0): socket 0 gets it, to be counted as malformed."""
    with group(2, spread=True) as (sockets, port):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as nas:
            nas.sendto(b"\x01", ("127.0.0.1", port))
        sockets[0].settimeout(1.0)
        assert sockets[0].recv(4096) == b"\x01"


def test_the_program() -> None:
    program = identifier_program(4)
    assert [struct.unpack("HBBI", program[i : i + 8]) for i in range(0, len(program), 8)] == [
        (0x30, 0, 0, 1),  # A = byte 1 of the payload (the Identifier)
        (0x94, 0, 0, 4),  # A %= 4
        (0x16, 0, 0, 0),  # return A
    ]
    for bad in (0, 257, -1):
        with pytest.raises(ValueError, match="sockets must be 1-256"):
            identifier_program(bad)


def test_a_socket_without_reuseport_is_refused() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        with pytest.raises(OSError):
            spread_by_identifier(sock, 2)
