"""Micro-benchmark: the focused RADIUS codec against pyrad on the Access-Request hot path.

One operation = parse an Access-Request (with Message-Authenticator), verify the MA, build the
Access-Accept (MA first, Session-Timeout, Proxy-State echoed). Prints µs per operation, the
median of 5 runs of N iterations, and the ratio. Runs in a few seconds:

    .venv/bin/python bench/radius_codec.py

Figures are noisy on a shared VM (±10-20 %); write them in notes, not in tests.
"""

import statistics
import time
from collections.abc import Callable
from pathlib import Path

from pyrad import packet as pyrad_packet
from pyrad.dictionary import Dictionary

from ocs.radius import codec

DICTIONARY_PATH = Path(__file__).resolve().parents[1] / "dictionaries" / "dictionary"
SECRET = b"testing123"
RUNS = 5


def make_request(dictionary: Dictionary) -> bytes:
    """A typical NAS Access-Request, as pyrad builds it (MA first)."""
    request = pyrad_packet.AuthPacket(
        code=pyrad_packet.AccessRequest, id=42, secret=SECRET, dict=dictionary
    )
    request["User-Name"] = "alice@example.net"
    request["User-Password"] = request.PwCrypt("secret-password")
    request["NAS-IP-Address"] = "192.0.2.1"
    request["NAS-Port"] = 17
    request["Service-Type"] = "Framed-User"
    request["Called-Station-Id"] = "00-11-22-33-44-55:ssid"
    request["Calling-Station-Id"] = "+4930123456"
    request["NAS-Identifier"] = "bng-1"
    request["Acct-Session-Id"] = "5f3a-0001"
    request.AddAttribute("Proxy-State", b"proxy-1")
    request.add_message_authenticator()
    wire: bytes = request.RequestPacket()
    return wire


def cpu_us_per_op(operation: Callable[[], object], iterations: int) -> float:
    """Process CPU time per call of operation over one run of iterations, in microseconds.

    CPU time rather than wall time: other processes on a 2-vCPU VM preempt us, and what the
    daemon's ceiling depends on is the CPU each request costs.
    """
    started = time.process_time_ns()
    for _ in range(iterations):
        operation()
    return (time.process_time_ns() - started) / iterations / 1000


def median_us_per_op(
    operations: dict[str, tuple[Callable[[], object], int]],
) -> dict[str, float]:
    """Median over RUNS interleaved runs of each named (operation, iterations), in µs/op.

    Runs are interleaved so that a burst of load on the machine hits every operation alike.
    """
    for operation, _ in operations.values():
        operation()  # warm up caches and lazy imports
    samples: dict[str, list[float]] = {name: [] for name in operations}
    for _ in range(RUNS):
        for name, (operation, iterations) in operations.items():
            samples[name].append(cpu_us_per_op(operation, iterations))
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    dictionary = Dictionary(str(DICTIONARY_PATH))
    wire = make_request(dictionary)
    shared = codec.SharedSecret(SECRET)
    parsed = codec.parse_packet(wire)
    reply_attributes = [codec.attr_int(codec.SESSION_TIMEOUT, 3600)]

    def ours() -> bytes:
        request = codec.parse_packet(wire)
        if not codec.verify_message_authenticator(request, shared):
            raise AssertionError("our MA check failed")
        return codec.encode_reply(
            codec.ACCESS_ACCEPT,
            request.identifier,
            request.authenticator,
            shared,
            [*codec.copy_proxy_state(request), *reply_attributes],
        )

    def theirs() -> bytes:
        request = pyrad_packet.AuthPacket(packet=wire, secret=SECRET, dict=dictionary)
        if not request.verify_message_authenticator():
            raise AssertionError("pyrad MA check failed")
        reply = request.CreateReply()
        reply["Session-Timeout"] = 3600
        reply_wire: bytes = reply.ReplyPacket()
        return reply_wire

    if ours() != theirs():
        raise AssertionError("ours and pyrad's replies differ")

    operations: dict[str, tuple[Callable[[], object], int]] = {
        "ours: parse + verify MA + reply": (ours, 20_000),
        "  parse_packet": (lambda: codec.parse_packet(wire), 20_000),
        "  verify_message_authenticator": (
            lambda: codec.verify_message_authenticator(parsed, shared),
            20_000,
        ),
        "  encode_reply": (
            lambda: codec.encode_reply(
                codec.ACCESS_ACCEPT, 42, parsed.authenticator, shared, reply_attributes
            ),
            20_000,
        ),
        "  SharedSecret.hmac_md5(request)": (lambda: shared.hmac_md5(wire), 20_000),
        "pyrad: decode + verify MA + reply": (theirs, 3_000),
        "  pyrad decode": (
            lambda: pyrad_packet.AuthPacket(packet=wire, secret=SECRET, dict=dictionary),
            3_000,
        ),
    }
    results = median_us_per_op(operations)

    print(f"Access-Request of {len(wire)} octets, {len(parsed.attributes)} attributes;")
    print(f"CPU µs per operation, median of {RUNS} interleaved runs")
    for name, us in results.items():
        print(f"{name:<36}{us:>8.2f}")
    ratio = (
        results["pyrad: decode + verify MA + reply"] / results["ours: parse + verify MA + reply"]
    )
    print(f"{'ratio pyrad / ours':<36}{ratio:>8.1f}x")


if __name__ == "__main__":
    main()
