"""The Diameter stream framer: whole messages in order, partial ones kept, bad headers fatal."""

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocs.diameter import codec
from ocs.diameter.framer import DEFAULT_MAX_MESSAGE_LENGTH, Framer, FramingError


def message(hop_by_hop: int, payload_octets: int = 0) -> bytes:
    """A DWR-shaped request with one Proxy-State-like filler AVP of ``payload_octets``."""
    avps = [codec.encode_avp(codec.AVP_ORIGIN_HOST, b"peer.example.net")]
    if payload_octets:
        avps.append(codec.encode_avp(codec.AVP_PROXY_STATE, b"x" * payload_octets))
    return codec.encode_message(
        command_code=codec.CMD_DEVICE_WATCHDOG,
        application_id=0,
        hop_by_hop=hop_by_hop,
        end_to_end=hop_by_hop,
        avps=avps,
        flags=codec.FLAG_REQUEST,
    )


def header_only(version: int = 1, length: int = 20) -> bytes:
    return bytes([version]) + length.to_bytes(3, "big") + bytes(16)


def test_whole_messages_come_out_in_order() -> None:
    framer = Framer()
    first, second, third = message(1), message(2, 50), message(3, 7)
    assert framer.feed(first + second + third) == [first, second, third]
    assert framer.pending_bytes == 0


def test_a_partial_message_stays_buffered_until_complete() -> None:
    framer = Framer()
    whole = message(9, 100)
    assert framer.feed(whole[:10]) == []
    assert framer.pending_bytes == 10
    assert framer.feed(whole[10:-1]) == []
    assert framer.pending_bytes == len(whole) - 1
    assert framer.feed(whole[-1:] + message(10)[:5]) == [whole]
    assert framer.pending_bytes == 5


def test_one_octet_at_a_time() -> None:
    framer = Framer()
    stream = message(1) + message(2, 33)
    out: list[bytes] = []
    for i in range(len(stream)):
        out.extend(framer.feed(stream[i : i + 1]))
    assert out == [message(1), message(2, 33)]
    assert framer.pending_bytes == 0


def test_empty_feed_is_harmless() -> None:
    framer = Framer()
    assert framer.feed(b"") == []
    assert framer.pending_bytes == 0


@pytest.mark.parametrize(
    ("header", "result_code"),
    [
        (header_only(version=2), codec.DIAMETER_UNSUPPORTED_VERSION),  # RFC 6733 §7.1.5 5011
        (header_only(version=0), codec.DIAMETER_UNSUPPORTED_VERSION),
        (header_only(length=0), codec.DIAMETER_INVALID_MESSAGE_LENGTH),  # §7.1.5 5015
        (header_only(length=19), codec.DIAMETER_INVALID_MESSAGE_LENGTH),
        (header_only(length=16), codec.DIAMETER_INVALID_MESSAGE_LENGTH),
        (header_only(length=22), codec.DIAMETER_INVALID_MESSAGE_LENGTH),  # not a multiple of 4
        (header_only(length=65540), codec.DIAMETER_INVALID_MESSAGE_LENGTH),  # above the limit
    ],
)
def test_unusable_headers_are_fatal(header: bytes, result_code: int) -> None:
    framer = Framer()
    with pytest.raises(FramingError) as caught:
        framer.feed(header)
    assert caught.value.result_code == result_code
    assert caught.value.header == header
    assert caught.value.messages == []
    # The connection is dead: every later feed raises the same error.
    with pytest.raises(FramingError) as again:
        framer.feed(message(1))
    assert again.value.result_code == result_code


def test_a_header_is_judged_once_all_twenty_octets_are_in() -> None:
    framer = Framer()
    assert framer.feed(header_only(version=7)[:19]) == []
    with pytest.raises(FramingError):
        framer.feed(b"\0")


def test_messages_before_a_bad_header_are_handed_over_with_the_error() -> None:
    framer = Framer()
    good = message(1)
    with pytest.raises(FramingError) as caught:
        framer.feed(good + header_only(version=2))
    assert caught.value.messages == [good]
    assert caught.value.header == header_only(version=2)


def test_the_limit_is_a_parameter() -> None:
    small = Framer(max_message_length=64)
    assert small.max_message_length == 64
    assert small.feed(message(1)) == [message(1)]
    with pytest.raises(FramingError) as caught:
        small.feed(message(2, 100))
    assert caught.value.result_code == codec.DIAMETER_INVALID_MESSAGE_LENGTH
    assert Framer().max_message_length == DEFAULT_MAX_MESSAGE_LENGTH


@pytest.mark.parametrize("limit", [19, 0, 0x1000000])
def test_an_impossible_limit_is_refused(limit: int) -> None:
    with pytest.raises(ValueError, match="max_message_length"):
        Framer(max_message_length=limit)


def test_messages_of_the_maximum_length_pass() -> None:
    framer = Framer(max_message_length=65536)
    # 20 header + 16 Origin-Host + 8 filler header + payload, padded: exactly 65536 octets.
    biggest = message(5, 65536 - 20 - 24 - 8)
    assert len(biggest) == 65536
    assert framer.feed(biggest) == [biggest]


def _feed_one_octet_at_a_time(total_octets: int) -> float:
    stream = message(1, total_octets - 52)
    framer = Framer(max_message_length=1 << 20)
    started = time.perf_counter()
    out: list[bytes] = []
    for i in range(len(stream)):
        out.extend(framer.feed(stream[i : i + 1]))
    elapsed = time.perf_counter() - started
    assert out == [stream]
    return elapsed


def test_linear_when_fed_one_octet_at_a_time() -> None:
    # Not a benchmark: a quadratic framer would take 16x longer for 4x the octets; a linear one
    # about 4x. The best of three runs keeps scheduler noise out.
    small = min(_feed_one_octet_at_a_time(50_000) for _ in range(3))
    large = min(_feed_one_octet_at_a_time(200_000) for _ in range(3))
    assert large / small < 9


@settings(max_examples=300, deadline=None)
@given(
    stream=st.binary(max_size=4096),
    cuts=st.lists(st.integers(min_value=1, max_value=300), max_size=50),
)
def test_arbitrary_streams_only_ever_raise_framing_errors(stream: bytes, cuts: list[int]) -> None:
    framer = Framer(max_message_length=1024)
    pos = 0
    delivered: list[bytes] = []
    try:
        for cut in [*cuts, len(stream)]:
            delivered.extend(framer.feed(stream[pos : pos + cut]))
            pos += cut
    except FramingError as error:
        assert error.result_code in (
            codec.DIAMETER_UNSUPPORTED_VERSION,
            codec.DIAMETER_INVALID_MESSAGE_LENGTH,
        )
        delivered.extend(error.messages)
    # Whatever came out is a prefix of the stream made of well-framed messages.
    assert stream.startswith(b"".join(delivered))
    for whole in delivered:
        assert whole[0] == 1
        assert int.from_bytes(whole[1:4], "big") == len(whole)


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=400), min_size=1, max_size=8),
    cuts=st.lists(st.integers(min_value=1, max_value=97), min_size=1, max_size=40),
)
def test_valid_streams_survive_any_chunking(sizes: list[int], cuts: list[int]) -> None:
    messages = [message(i, size) for i, size in enumerate(sizes)]
    stream = b"".join(messages)
    framer = Framer()
    out: list[bytes] = []
    pos = 0
    index = 0
    while pos < len(stream):
        cut = cuts[index % len(cuts)]
        out.extend(framer.feed(stream[pos : pos + cut]))
        pos += cut
        index += 1
    assert out == messages
    assert framer.pending_bytes == 0
