"""The RADIUS front without sockets: datagrams in, replies or counted drops out.

The pipeline runs for real (cache, credit core, session book); only the database behind it is an
in-memory stand-in, so these tests stay pure and fast. The daemon against a real PostgreSQL and
radclient is tested in tests/integration/test_radius.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from memory_store import MemoryStore
from pyrad.dictionary import Dictionary
from pyrad.packet import AuthPacket

from ocs.charging.cache import AccountCache
from ocs.charging.pipeline import CachePolicy, Charging
from ocs.charging.sessions import SessionBook
from ocs.core import AccountSnapshot, AccountStatus, GrantLimits, Tariff, parse_amount
from ocs.core.identity import IdentityKind
from ocs.metrics import DROP_CAUSES, Metrics
from ocs.radius import auth as radius_auth
from ocs.radius import codec
from ocs.radius.front import (
    SEND_BATCH,
    AttributeRef,
    ClientTable,
    MessageAuthenticatorPolicy,
    RadiusClient,
    RadiusFront,
    _kernel_drops,
)

SECRET = b"testing123"
KEY = codec.SharedSecret(SECRET)
NAS = ("127.0.0.1", 40000)
DICTIONARY = Path(__file__).resolve().parents[2] / "dictionaries" / "dictionary"
TARIFF = Tariff(price_per_minute=parse_amount("0.06"))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def wall(self) -> datetime:
        return datetime(2026, 11, 22, 12, 0, tzinfo=UTC)

    def mono(self) -> float:
        return self.now


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[object, ...]]] = []

    def sendto(self, data: bytes, addr: tuple[object, ...]) -> None:
        self.sent.append((data, addr))


class FakeListener:
    tls = False

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.transport = FakeTransport()


def snapshot(account_id: int, name: str, balance: str, **kw: object) -> AccountSnapshot:
    return AccountSnapshot(
        account_id=account_id, name=name, balance=parse_amount(balance), tariff=TARIFF, **kw
    )  # type: ignore[arg-type]


def make_front(
    *,
    require_ma: bool | MessageAuthenticatorPolicy = True,
    limit_proxy_state: bool = True,
    queue_size: int = 4096,
    receive_buffer_bytes: int = 4 * 1024 * 1024,
) -> tuple[RadiusFront, MemoryStore, FakeClock]:
    accounts = {
        1: snapshot(1, "prepaid-ok", "1.00"),
        2: snapshot(2, "prepaid-empty", "0.00"),
        3: snapshot(3, "blocked", "100", status=AccountStatus.BLOCKED),
    }
    identities = {("user_name", a.name): a.account_id for a in accounts.values()}
    store = MemoryStore(accounts=dict(accounts), identities=identities)
    clock = FakeClock()
    cache = AccountCache()
    cache.replace_all(
        [accounts[1], accounts[2]],
        [("user_name", "prepaid-ok", 1), ("user_name", "prepaid-empty", 2)],
        loaded_at=clock.mono(),
    )
    charging = Charging(
        cache=cache,
        sessions=SessionBook(),
        source=store,
        sink=store,
        limits=GrantLimits(),
        policy=CachePolicy(),
        clock=clock,
    )
    client = RadiusClient(
        name="nas",
        network=ipaddress.ip_network("127.0.0.0/8"),
        secret=KEY,
        require_message_authenticator=(
            require_ma
            if isinstance(require_ma, MessageAuthenticatorPolicy)
            else MessageAuthenticatorPolicy.REQUIRED
            if require_ma
            else MessageAuthenticatorPolicy.NOT_REQUIRED
        ),
        limit_proxy_state=limit_proxy_state,
        identity=AttributeRef("User-Name", codec.USER_NAME),
        identity_kind=IdentityKind.USER_NAME,
    )
    front = RadiusFront(
        charging=charging,
        clients=ClientTable([client]),
        metrics=Metrics(),
        queue_size=queue_size,
        receive_buffer_bytes=receive_buffer_bytes,
    )
    return front, store, clock


def access_request(user: str | None, *, identifier: int = 1, ma: bool = True, extra=()) -> bytes:
    attributes = [codec.attr_str(codec.USER_NAME, user)] if user is not None else []
    attributes.append((codec.NAS_IP_ADDRESS, b"\x7f\x00\x00\x01"))
    attributes += list(extra)
    return codec.encode_request(
        codec.ACCESS_REQUEST, identifier, KEY, attributes, message_authenticator=ma
    )


def accounting(
    status: int, user: str, session: str, *, seconds: int = 0, identifier: int = 7
) -> bytes:
    attributes = [
        codec.attr_str(codec.USER_NAME, user),
        codec.attr_int(codec.ACCT_STATUS_TYPE, status),
        codec.attr_str(codec.ACCT_SESSION_ID, session),
        (codec.NAS_IP_ADDRESS, b"\x7f\x00\x00\x01"),
        codec.attr_int(codec.ACCT_SESSION_TIME, seconds),
    ]
    return codec.encode_request(
        codec.ACCOUNTING_REQUEST, identifier, KEY, attributes, message_authenticator=False
    )


def drops(front: RadiusFront) -> dict[str, float]:
    registry = front.metrics.registry
    return {
        cause: registry.get_sample_value(
            "ocs_dropped_packets_total", {"protocol": "radius", "cause": cause}
        )
        or 0.0
        for cause in DROP_CAUSES
    }


def replies(listener: FakeListener) -> list[codec.Packet]:
    return [codec.parse_packet(data) for data, _ in listener.transport.sent]


async def settle(front: RadiusFront) -> None:
    for _ in range(50):
        if not front._pending:
            return
        await asyncio.sleep(0)
    await asyncio.gather(*front._pending)


async def test_access_accept_carries_the_grant_and_message_authenticator_first() -> None:
    front, _store, _ = make_front()
    auth = FakeListener("auth")
    request = access_request("prepaid-ok")
    front.handle(auth, request, NAS, 0.0)  # type: ignore[arg-type]
    (reply,) = replies(auth)
    assert reply.code == codec.ACCESS_ACCEPT
    assert reply.attributes[0][0] == codec.MESSAGE_AUTHENTICATOR
    assert reply.get_int(codec.SESSION_TIMEOUT) == 1000
    # pyrad agrees the reply is authentic (response authenticator and Message-Authenticator).
    pyrad_request = AuthPacket(secret=SECRET, dict=Dictionary(str(DICTIONARY)), packet=request)
    pyrad_reply = pyrad_request.CreateReply(packet=auth.transport.sent[0][0])
    assert pyrad_request.VerifyReply(pyrad_reply, auth.transport.sent[0][0])
    assert pyrad_reply.verify_message_authenticator(
        original_authenticator=pyrad_request.authenticator
    )


@pytest.mark.parametrize(
    ("user", "message"),
    [
        ("prepaid-empty", b"insufficient credit"),
        ("blocked", b"account blocked"),  # not cached: asked from the store
        ("nobody", b"unknown account"),
        (None, b"unknown account"),
    ],
)
async def test_access_reject_says_why(user: str | None, message: bytes) -> None:
    front, _, _ = make_front()
    auth = FakeListener("auth")
    front.handle(auth, access_request(user), NAS, 0.0)  # type: ignore[arg-type]
    await settle(front)
    (reply,) = replies(auth)
    assert reply.code == codec.ACCESS_REJECT
    assert reply.get(codec.REPLY_MESSAGE) == message


async def test_unknown_identity_is_asked_once_then_remembered() -> None:
    front, store, _ = make_front()
    auth = FakeListener("auth")
    for identifier in (1, 2, 3):
        front.handle(auth, access_request("nobody", identifier=identifier), NAS, 0.0)  # type: ignore[arg-type]
        await settle(front)
    assert store.lookups == 1
    assert len(auth.transport.sent) == 3


@pytest.mark.parametrize(
    ("datagram", "source", "cause"),
    [
        (access_request("prepaid-ok"), ("10.9.9.9", 1), "unknown_client"),
        (access_request("prepaid-ok", ma=False), NAS, "missing_message_authenticator"),
        (access_request("prepaid-ok")[:-1] + b"\x00", NAS, "bad_authenticator"),
        (b"\x01\x02\x00", NAS, "malformed"),
        (access_request("prepaid-ok")[:30], NAS, "malformed"),
        (accounting(1, "prepaid-ok", "s"), NAS, "wrong_code"),
    ],
    ids=["unknown-client", "no-ma", "bad-ma", "too-short", "truncated", "acct-on-auth-port"],
)
def test_bad_datagrams_are_dropped_and_counted(
    datagram: bytes, source: tuple[str, int], cause: str
) -> None:
    front, _, _ = make_front()
    auth = FakeListener("auth")
    front.handle(auth, datagram, source, 0.0)  # type: ignore[arg-type]
    assert auth.transport.sent == []
    assert drops(front)[cause] == 1


def test_wrong_secret_is_a_bad_authenticator() -> None:
    front, _, _ = make_front()
    auth = FakeListener("auth")
    forged = codec.encode_request(
        codec.ACCESS_REQUEST,
        1,
        codec.SharedSecret(b"guessed"),
        [codec.attr_str(codec.USER_NAME, "prepaid-ok")],
    )
    front.handle(auth, forged, NAS, 0.0)  # type: ignore[arg-type]
    assert auth.transport.sent == []
    assert drops(front)["bad_authenticator"] == 1


def test_proxy_state_without_message_authenticator() -> None:
    front, _, _ = make_front(require_ma=False)
    auth = FakeListener("auth")
    proxied = access_request("prepaid-ok", ma=False, extra=[(codec.PROXY_STATE, b"p1")])
    front.handle(auth, proxied, NAS, 0.0)  # type: ignore[arg-type]
    assert drops(front)["proxy_state_without_message_authenticator"] == 1
    # Without Proxy-State, a client that does not require Message-Authenticator is answered.
    front.handle(auth, access_request("prepaid-ok", ma=False), NAS, 0.0)  # type: ignore[arg-type]
    assert len(auth.transport.sent) == 1


def test_auto_accepts_until_the_address_has_sent_a_message_authenticator(
    caplog: pytest.LogCaptureFixture,
) -> None:
    front, _, _ = make_front(require_ma=MessageAuthenticatorPolicy.AUTO)
    auth = FakeListener("auth")
    other_nas = ("127.0.0.2", 40000)
    with caplog.at_level("INFO", logger="ocs.radius"):
        # Never sent one: accepted, with one warning about the exposure (not one per request).
        for identifier in (1, 2):
            request = access_request("prepaid-ok", identifier=identifier, ma=False)
            front.handle(auth, request, NAS, 0.0)  # type: ignore[arg-type]
        assert len(replies(auth)) == 2  # answered (the second is refused: credit is held)
        exposed = [r for r in caplog.records if "accepted" in r.getMessage()]
        assert len(exposed) == 1 and exposed[0].levelname == "WARNING"
        assert "nas (127.0.0.1)" in exposed[0].getMessage()
        # It sends one: from now on this address must.
        front.handle(auth, access_request("prepaid-ok", identifier=3), NAS, 0.0)  # type: ignore[arg-type]
        assert len(auth.transport.sent) == 3
        caplog.clear()
        for identifier in range(4, 9):
            request = access_request("prepaid-ok", identifier=identifier, ma=False)
            front.handle(auth, request, NAS, 0.0)  # type: ignore[arg-type]
    assert len(auth.transport.sent) == 3
    assert drops(front)["missing_message_authenticator"] == 5
    # One warning for the five drops, naming the client, the address and the fix.
    (warning,) = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert warning.levelname == "WARNING"
    text = warning.getMessage()
    assert "client nas (127.0.0.1)" in text and "sent one before" in text
    assert "require_message_authenticator = false" in text
    # Another address of the same client entry has not sent one: still accepted.
    front.handle(auth, access_request("prepaid-ok", identifier=9, ma=False), other_nas, 0.0)  # type: ignore[arg-type]
    assert len(auth.transport.sent) == 4
    # A wrong Message-Authenticator is dropped under auto as under true.
    forged = codec.encode_request(
        codec.ACCESS_REQUEST, 10, codec.SharedSecret(b"guessed"), [codec.attr_str(1, "x")]
    )
    front.handle(auth, forged, other_nas, 0.0)  # type: ignore[arg-type]
    assert drops(front)["bad_authenticator"] == 1


def test_missing_message_authenticator_warnings_are_rate_limited_per_client(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    front, _, _ = make_front(require_ma=True)
    auth = FakeListener("auth")
    clock = [5000.0]
    monkeypatch.setattr("ocs.radius.front.time.monotonic", lambda: clock[0])
    with caplog.at_level("WARNING", logger="ocs.radius"):
        for identifier in range(3):
            request = access_request("prepaid-ok", identifier=identifier, ma=False)
            front.handle(auth, request, NAS, 0.0)  # type: ignore[arg-type]
        clock[0] += 61.0
        front.handle(auth, access_request("prepaid-ok", identifier=9, ma=False), NAS, 0.0)  # type: ignore[arg-type]
    warnings = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(warnings) == 2
    assert "require_message_authenticator = true" in warnings[0]
    assert '"auto" or false' in warnings[0]
    assert warnings[1].endswith("(2 more since the last warning)")
    assert drops(front)["missing_message_authenticator"] == 4


def test_proxy_state_is_echoed_in_order() -> None:
    front, _, _ = make_front()
    auth = FakeListener("auth")
    states = [(codec.PROXY_STATE, b"first"), (codec.PROXY_STATE, b"second")]
    front.handle(auth, access_request("prepaid-ok", extra=states), NAS, 0.0)  # type: ignore[arg-type]
    (reply,) = replies(auth)
    assert reply.get_all(codec.PROXY_STATE) == [b"first", b"second"]


def test_retransmission_gets_the_cached_reply_without_a_second_decision() -> None:
    front, _, _ = make_front()
    auth = FakeListener("auth")
    request = access_request("prepaid-ok")
    front.handle(auth, request, NAS, 0.0)  # type: ignore[arg-type]
    front.handle(auth, request, NAS, 0.0)  # type: ignore[arg-type]
    first, second = (data for data, _ in auth.transport.sent)
    assert first == second
    assert front.charging.stats.decisions == {"admitted": 1}
    # A new request (new authenticator) from the same user is a new decision: the first one's
    # grant is still held, so the balance covering one session is not spent twice.
    front.handle(auth, access_request("prepaid-ok"), NAS, 0.0)  # type: ignore[arg-type]
    third = replies(auth)[-1]
    assert third.code == codec.ACCESS_REJECT


def test_full_queue_drops_and_counts() -> None:
    front, _, _ = make_front(queue_size=2)
    auth = FakeListener("auth")
    for _ in range(5):
        front.enqueue(auth, access_request("prepaid-ok"), NAS, 0.0)  # type: ignore[arg-type]
    assert drops(front)["queue_full"] == 3


async def test_the_drain_answers_a_burst_and_wakes_for_the_next_datagram() -> None:
    """The queue wakes the drain only when it was empty (the drain empties it before it waits
    again): a burst queued at once is answered whole, and so is a datagram after a pause."""
    front, _, _ = make_front()
    auth = FakeListener("auth")
    drain = asyncio.create_task(front._drain())
    try:
        for identifier in range(1, 4):
            request = access_request("prepaid-ok", identifier=identifier)
            front.enqueue(auth, request, NAS, 0.0)  # type: ignore[arg-type]
        for _ in range(20):
            await asyncio.sleep(0)
        assert [r.identifier for r in replies(auth)] == [1, 2, 3]
        front.enqueue(auth, access_request("prepaid-ok", identifier=4), NAS, 0.0)  # type: ignore[arg-type]
        for _ in range(20):
            await asyncio.sleep(0)
        assert [r.identifier for r in replies(auth)] == [1, 2, 3, 4]
    finally:
        drain.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drain


async def test_the_drain_sends_a_runs_replies_together() -> None:
    """Replies made while the drain handles a run of datagrams go out together, SEND_BATCH at
    a time, in order (a client woken once per run, not once per reply); one that cannot be
    sent is counted and the others still go out."""
    front, _, _ = make_front()
    auth = FakeListener("auth")
    waiting_at_send: list[int] = []  # datagrams still queued when each reply went out
    sent = auth.transport.sent

    def sendto(data: bytes, addr: tuple[object, ...]) -> None:
        waiting_at_send.append(len(front._queue))
        if len(waiting_at_send) == 3:
            raise RuntimeError("the third reply cannot be sent")
        sent.append((data, addr))

    auth.transport.sendto = sendto  # type: ignore[method-assign]
    drain = asyncio.create_task(front._drain())
    try:
        run = SEND_BATCH + 8
        for identifier in range(run):
            request = access_request("prepaid-ok", identifier=identifier)
            front.enqueue(auth, request, NAS, 0.0)  # type: ignore[arg-type]
        for _ in range(20):
            await asyncio.sleep(0)
        # The first SEND_BATCH replies left with 8 datagrams still queued, the rest at the end.
        assert waiting_at_send == [8] * SEND_BATCH + [0] * 8
        assert [r.identifier for r in replies(auth)] == [i for i in range(run) if i != 2]
        assert drops(front)["internal_error"] == 1
        # Outside a run (a reply made by a task, later): sent at once.
        front._send(auth, b"later", NAS)  # type: ignore[arg-type]
        assert sent[-1] == (b"later", NAS)
    finally:
        drain.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drain


async def test_kernel_drops_on_a_full_receive_buffer_are_counted_once_and_warned_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A real socket with a small buffer, flooded while the loop is busy: the front counts
    exactly what the socket reports as dropped, once, as receive_buffer_full, and answers
    what fitted. A second flood within the minute is counted at once and warned about when
    the minute is up, with its own figure."""
    front, _, _ = make_front(receive_buffer_bytes=4096)
    bound = await front.start(["127.0.0.1:0"], [])
    (_kind, host, port) = bound[0]
    nas = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    nas.bind(("127.0.0.1", 0))
    nas.setblocking(False)
    loop = asyncio.get_running_loop()
    (sock,) = front._sockets

    def flood() -> None:  # the loop does not run while these are sent: the buffer overflows
        for identifier in range(200):
            nas.sendto(access_request("prepaid-empty", identifier=identifier), (host, port))

    async def answers(expected: int) -> int:
        answered = 0
        with contextlib.suppress(TimeoutError):
            while answered < expected:
                await asyncio.wait_for(loop.sock_recv(nas, 4096), 2)
                answered += 1
        return answered

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if "full receive buffer" in r.getMessage()]

    try:
        with caplog.at_level("WARNING", logger="ocs.radius"):
            nas.sendto(access_request("prepaid-ok"), (host, port))
            reply = await asyncio.wait_for(loop.sock_recv(nas, 4096), 5)
            assert codec.parse_packet(reply).code == codec.ACCESS_ACCEPT
            front._count_kernel_drops(100.0)
            assert drops(front)["receive_buffer_full"] == 0
            assert warnings() == []

            flood()
            first = _kernel_drops(sock)
            assert first > 0
            front._count_kernel_drops(100.0)
            assert drops(front)["receive_buffer_full"] == first
            front._count_kernel_drops(101.0)  # counted once, not again
            assert drops(front)["receive_buffer_full"] == first
            (warning,) = warnings()
            assert f"dropped {first} datagrams on a full receive buffer;" in warning
            assert f"port={port}" in warning
            assert await answers(200 - first) == 200 - first

            flood()  # within the minute: counted now, warned about when the minute is up
            second = _kernel_drops(sock) - first
            assert second > 0
            front._count_kernel_drops(130.0)
            assert drops(front)["receive_buffer_full"] == first + second
            assert len(warnings()) == 1
            front._count_kernel_drops(160.0)
            assert len(warnings()) == 2
            assert (
                f"dropped {second} datagrams on a full receive buffer since the last"
                in (warnings()[1])
            )
            front._count_kernel_drops(300.0)  # nothing new: no warning
            assert len(warnings()) == 2
            assert drops(front)["receive_buffer_full"] == first + second
            assert await answers(200 - second) == 200 - second
    finally:
        nas.close()
        await front.stop(1.0)


async def test_accounting_start_stop_charges_once_and_updates_the_cache() -> None:
    front, store, _ = make_front()
    acct, auth = FakeListener("acct"), FakeListener("auth")
    front.handle(auth, access_request("prepaid-ok"), NAS, 0.0)  # type: ignore[arg-type]
    front.handle(acct, accounting(1, "prepaid-ok", "s1", identifier=1), NAS, 0.0)  # type: ignore[arg-type]
    await settle(front)
    assert front.charging.sessions.active_sessions(1) == 1
    stop = accounting(2, "prepaid-ok", "s1", seconds=120, identifier=2)
    front.handle(acct, stop, NAS, 0.0)  # type: ignore[arg-type]
    await settle(front)
    # The same Stop again, as a new packet (new id): recorded once.
    front.handle(acct, accounting(2, "prepaid-ok", "s1", seconds=120, identifier=3), NAS, 0.0)  # type: ignore[arg-type]
    await settle(front)
    assert [r.code for r in replies(acct)] == [codec.ACCOUNTING_RESPONSE] * 3
    assert sum(store.recorded.values()) == parse_amount("0.12")
    assert front.charging.sessions.active_sessions(1) == 0
    assert front.charging.sessions.reserved(1) == 0
    # The next decision sees the charge at once.
    front.handle(auth, access_request("prepaid-ok", identifier=9), NAS, 0.0)  # type: ignore[arg-type]
    assert replies(auth)[-1].get_int(codec.SESSION_TIMEOUT) == 880


async def test_accounting_with_a_bad_authenticator_is_dropped() -> None:
    front, store, _ = make_front()
    acct = FakeListener("acct")
    forged = bytearray(accounting(2, "prepaid-ok", "s1", seconds=100))
    forged[-1] ^= 0xFF
    front.handle(acct, bytes(forged), NAS, 0.0)  # type: ignore[arg-type]
    await settle(front)
    assert acct.transport.sent == [] and store.recorded == {}
    assert drops(front)["bad_authenticator"] == 1


async def test_an_attempt_of_the_same_call_replaces_its_hold_and_failed_releases_it() -> None:
    """Two Access-Requests naming one call (Acct-Session-Id) hold once, not twice; an
    attempt without a name holds its own; Acct-Status-Type Failed naming the admission by the
    Class it was given releases that hold at once."""
    front, _store, _ = make_front()
    auth, acct = FakeListener("auth"), FakeListener("acct")
    call = [codec.attr_str(codec.ACCT_SESSION_ID, "call-1")]
    for identifier in (1, 2):
        request = access_request("prepaid-ok", identifier=identifier, extra=call)
        front.handle(auth, request, NAS, 0.0)  # type: ignore[arg-type]
    await settle(front)
    book = front.charging.sessions
    assert book.reserved(1) == parse_amount("1.00")  # one hold: the whole 1.00 buys 1000 s
    accept = codec.parse_packet(auth.transport.sent[-1][0])
    assert accept.code == codec.ACCESS_ACCEPT
    klass = accept.get(codec.CLASS)
    assert klass is not None and klass.startswith(b"ocs:")
    failed = codec.encode_request(
        codec.ACCOUNTING_REQUEST,
        9,
        KEY,
        [
            codec.attr_str(codec.USER_NAME, "prepaid-ok"),
            codec.attr_int(codec.ACCT_STATUS_TYPE, 15),
            codec.attr_str(codec.ACCT_SESSION_ID, "call-1"),
            (codec.CLASS, klass),
            (codec.NAS_IP_ADDRESS, b"\x7f\x00\x00\x01"),
        ],
        message_authenticator=False,
    )
    front.handle(acct, failed, NAS, 0.0)  # type: ignore[arg-type]
    await settle(front)
    assert [r.code for r in replies(acct)] == [codec.ACCOUNTING_RESPONSE]
    assert book.reserved(1) == 0


async def test_a_cancelled_accounting_task_leaves_no_in_progress_marker() -> None:
    """A request whose task is cancelled (shutdown, or a stuck database) was never answered:
    its retransmission must be handled afresh, not dropped as a duplicate in progress."""
    front, store, _ = make_front()
    acct = FakeListener("acct")
    store.gate = asyncio.Event()  # the database does not answer yet
    packet = accounting(2, "prepaid-ok", "c1", seconds=30, identifier=9)
    front.handle(acct, packet, NAS, 0.0)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    [task] = list(front._pending)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    store.gate.set()
    front.handle(acct, packet, NAS, 0.0)  # type: ignore[arg-type]  # the NAS retransmits
    await settle(front)
    assert [r.code for r in replies(acct)] == [codec.ACCOUNTING_RESPONSE]
    assert drops(front).get("duplicate_in_progress", 0) == 0


async def test_usage_of_an_unknown_identity_is_kept_not_lost() -> None:
    front, store, _ = make_front()
    acct = FakeListener("acct")
    front.handle(acct, accounting(2, "ghost", "s9", seconds=60), NAS, 0.0)  # type: ignore[arg-type]
    await settle(front)
    assert len(acct.transport.sent) == 1
    assert [(r.entry.usage.seconds, why) for r, why in store.unmatched] == [
        (60, "unknown_identity")
    ]


def _valid_datagrams() -> list[bytes]:
    return [
        access_request("prepaid-ok", identifier=5),
        access_request("nobody", identifier=6, extra=[(codec.PROXY_STATE, b"x")]),
        accounting(1, "prepaid-ok", "f1"),
        accounting(2, "prepaid-ok", "f1", seconds=30),
    ]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from(_valid_datagrams()),
    flips=st.lists(st.tuples(st.integers(0, 4095), st.integers(1, 255)), max_size=4),
    cut=st.one_of(st.none(), st.integers(0, 200)),
    junk=st.binary(max_size=64),
    port=st.sampled_from(["auth", "acct"]),
)
def test_any_datagram_is_answered_or_counted(
    base: bytes, flips: list[tuple[int, int]], cut: int | None, junk: bytes, port: str
) -> None:
    """Mutated and random datagrams: no exception escapes; each is answered or counted dropped."""

    async def scenario() -> None:
        front, _, _ = make_front()
        listener = FakeListener(port)
        datagram = bytearray(base)
        for position, xor in flips:
            if position < len(datagram):
                datagram[position] ^= xor
        data = bytes(datagram[:cut] if cut is not None else datagram) + junk
        for sample in (data, junk):
            before_sent = len(listener.transport.sent)
            before_drops = sum(drops(front).values())
            before_dups = front.charging.stats.decisions.copy()
            front.handle(listener, sample, NAS, 0.0)  # type: ignore[arg-type]
            await settle(front)
            answered = len(listener.transport.sent) - before_sent
            dropped = sum(drops(front).values()) - before_drops
            assert answered + dropped == 1, (sample.hex(), answered, dropped, before_dups)
            assert drops(front)["internal_error"] == 0

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("name", "cause"),
    [
        (b"prepaid-ok\x00", "nul_byte"),
        (b"prepaid\xff", "invalid_utf8"),
        (b"prepaid\x01ok", "control_character"),
    ],
)
async def test_a_name_that_cannot_be_an_identity_is_unknown_without_a_lookup(
    name: bytes, cause: str
) -> None:
    front, store, _ = make_front()
    auth, acct = FakeListener("auth"), FakeListener("acct")
    request = codec.encode_request(
        codec.ACCESS_REQUEST, 1, KEY, [(codec.USER_NAME, name)], message_authenticator=True
    )
    front.handle(auth, request, NAS, 0.0)  # type: ignore[arg-type]
    await settle(front)
    (reply,) = replies(auth)
    assert reply.code == codec.ACCESS_REJECT
    assert reply.get(codec.REPLY_MESSAGE) == b"unknown account"
    stop = codec.encode_request(
        codec.ACCOUNTING_REQUEST,
        2,
        KEY,
        [
            (codec.USER_NAME, name),
            codec.attr_int(codec.ACCT_STATUS_TYPE, 2),
            codec.attr_str(codec.ACCT_SESSION_ID, "s1"),
            codec.attr_int(codec.ACCT_SESSION_TIME, 30),
        ],
        message_authenticator=True,
    )
    front.handle(acct, stop, NAS, 0.0)  # type: ignore[arg-type]
    await settle(front)
    assert [r.code for r in replies(acct)] == [codec.ACCOUNTING_RESPONSE]
    assert store.lookups == 0  # never looked up
    ((report, reason),) = store.unmatched
    assert report.entry.usage.seconds == 30
    assert reason == f"identity_{cause}"
    (kept,) = store.unmatched_reasons
    assert kept[2] == f"identity_{cause}"
    kept[1].encode("utf-8")  # escaped: valid UTF-8
    assert "\x00" not in kept[1]
    counted = front.metrics.registry.get_sample_value(
        "ocs_invalid_identities_total", {"protocol": "radius", "cause": cause}
    )
    assert counted == 2


# --- passwords (ocs as the NAS's only RADIUS server) ---------------------------------------

PASSWORD = "s3cret-pass"


def pap_request(user: str, password: str, *, identifier: int = 1) -> bytes:
    authenticator = bytes([identifier]) * 16
    hidden = radius_auth.hide_password(password.encode(), KEY, authenticator)
    return codec.encode_request(
        codec.ACCESS_REQUEST,
        identifier,
        KEY,
        [codec.attr_str(codec.USER_NAME, user), (codec.USER_PASSWORD, hidden)],
        authenticator=authenticator,
    )


def reject_count(front: RadiusFront, label: str) -> float:
    return (
        front.metrics.registry.get_sample_value(
            "ocs_requests_total",
            {"protocol": "radius", "type": "access", "outcome": f"reject_{label}"},
        )
        or 0.0
    )


@pytest.mark.parametrize(
    "storage",
    [radius_auth.CredentialStorage.CLEARTEXT, radius_auth.CredentialStorage.NT_HASH],
)
async def test_a_wrong_password_is_refused_before_the_credit_is_looked_at(
    storage: radius_auth.CredentialStorage,
) -> None:
    front, _, _ = make_front()
    stored = radius_auth.stored_credential(PASSWORD, storage)
    front.charging.cache.set_credential("user_name", "prepaid-ok", stored)
    auth = FakeListener("auth")
    for identifier, password in ((1, "wrong"), (2, "")):
        request = pap_request("prepaid-ok", password or "x", identifier=identifier)
        if not password:  # no password attribute at all
            request = access_request("prepaid-ok", identifier=identifier)
        front.handle(auth, request, NAS, 0.0)  # type: ignore[arg-type]
    await settle(front)
    assert [r.code for r in replies(auth)] == [codec.ACCESS_REJECT] * 2
    assert {r.get(codec.REPLY_MESSAGE) for r in replies(auth)} == {b"authentication failed"}
    assert reject_count(front, "bad_credential") == 2
    assert front.charging.stats.decisions == {"bad_credential": 2}  # ocs_new_sessions_total
    # No credit was held for them: the right password gets the whole grant.
    assert front.charging.sessions.reserved(1) == 0
    front.handle(auth, pap_request("prepaid-ok", PASSWORD, identifier=3), NAS, 0.0)  # type: ignore[arg-type]
    accepted = replies(auth)[-1]
    assert accepted.code == codec.ACCESS_ACCEPT
    assert accepted.get_int(codec.SESSION_TIMEOUT) == 1000


async def test_a_hashed_password_is_checked_off_the_event_loop() -> None:
    front, _, _ = make_front()
    stored = radius_auth.stored_credential(
        PASSWORD, radius_auth.CredentialStorage.HASH, iterations=2000
    )
    front.charging.cache.set_credential("user_name", "prepaid-ok", stored)
    auth = FakeListener("auth")
    front.handle(auth, pap_request("prepaid-ok", "nope", identifier=1), NAS, 0.0)  # type: ignore[arg-type]
    assert auth.transport.sent == []  # not answered synchronously: a thread checks it
    await settle(front)
    front.handle(auth, pap_request("prepaid-ok", PASSWORD, identifier=2), NAS, 0.0)  # type: ignore[arg-type]
    await settle(front)
    assert [r.code for r in replies(auth)] == [codec.ACCESS_REJECT, codec.ACCESS_ACCEPT]


async def test_an_identity_without_a_credential_keeps_the_credit_only_check() -> None:
    front, _, _ = make_front()
    auth = FakeListener("auth")
    # Whatever password comes along is not looked at.
    front.handle(auth, pap_request("prepaid-ok", "anything"), NAS, 0.0)  # type: ignore[arg-type]
    assert replies(auth)[0].code == codec.ACCESS_ACCEPT
    assert front.charging.cache.credential_count == 0


async def test_an_identity_unknown_to_the_cache_has_its_credential_looked_up() -> None:
    asked: list[tuple[IdentityKind, str]] = []

    async def lookup(kind: IdentityKind, value: str) -> str | None:
        asked.append((kind, value))
        return "cleartext$" + PASSWORD if value == "late" else None

    front, store, _ = make_front()
    front.credential_lookup = lookup
    late = snapshot(4, "late", "5.00")
    store.accounts[4] = late
    store.identities[("user_name", "late")] = 4
    auth = FakeListener("auth")
    front.handle(auth, pap_request("late", "wrong", identifier=1), NAS, 0.0)  # type: ignore[arg-type]
    await settle(front)
    front.handle(auth, pap_request("late", PASSWORD, identifier=2), NAS, 0.0)  # type: ignore[arg-type]
    await settle(front)
    assert [r.code for r in replies(auth)] == [codec.ACCESS_REJECT, codec.ACCESS_ACCEPT]
    assert replies(auth)[0].get(codec.REPLY_MESSAGE) == b"authentication failed"
    # Asked once: the credential is in the cache now, with the account.
    assert asked == [(IdentityKind.USER_NAME, "late")]
    assert front.charging.cache.credential(IdentityKind.USER_NAME, "late") is not None


async def test_mschapv2_accept_carries_success_and_mppe_keys() -> None:
    front, _, _ = make_front()
    front.charging.cache.set_credential(
        "user_name",
        "prepaid-ok",
        radius_auth.stored_credential(PASSWORD, radius_auth.CredentialStorage.NT_HASH),
    )
    challenge, peer = bytes(range(16)), bytes(range(16, 32))
    nt = radius_auth.generate_nt_response(
        challenge, peer, b"prepaid-ok", radius_auth.nt_password_hash(PASSWORD)
    )
    request = access_request(
        "prepaid-ok",
        extra=[
            codec.attr_vsa(311, radius_auth.MS_CHAP_CHALLENGE, challenge),
            codec.attr_vsa(311, radius_auth.MS_CHAP2_RESPONSE, b"\x07\x00" + peer + bytes(8) + nt),
        ],
    )
    auth = FakeListener("auth")
    front.handle(auth, request, NAS, 0.0)  # type: ignore[arg-type]
    (reply,) = replies(auth)
    assert reply.code == codec.ACCESS_ACCEPT
    microsoft = dict(reply.vendor_attributes(311))
    assert microsoft[radius_auth.MS_CHAP2_SUCCESS][:3] == b"\x07S="
    assert {radius_auth.MS_MPPE_SEND_KEY, radius_auth.MS_MPPE_RECV_KEY} <= set(microsoft)
    # The Send-Key decrypts (RFC 2548) to the RFC 3079 server send key of this exchange.
    master = radius_auth.mppe_master_key(radius_auth.nt_password_hash(PASSWORD), nt)
    send = radius_auth.decrypt_mppe_key(microsoft[radius_auth.MS_MPPE_SEND_KEY], KEY, request[4:20])
    assert send == radius_auth.mppe_start_key(master, send=True, server=True)


async def test_a_right_password_with_a_refused_credit_gets_no_mschap_success() -> None:
    front, _, _ = make_front()
    front.charging.cache.set_credential(
        "user_name",
        "prepaid-empty",
        radius_auth.stored_credential(PASSWORD, radius_auth.CredentialStorage.NT_HASH),
    )
    challenge, peer = bytes(range(16)), bytes(range(16, 32))
    nt = radius_auth.generate_nt_response(
        challenge, peer, b"prepaid-empty", radius_auth.nt_password_hash(PASSWORD)
    )
    request = access_request(
        "prepaid-empty",
        extra=[
            codec.attr_vsa(311, radius_auth.MS_CHAP_CHALLENGE, challenge),
            codec.attr_vsa(311, radius_auth.MS_CHAP2_RESPONSE, b"\x07\x00" + peer + bytes(8) + nt),
        ],
    )
    auth = FakeListener("auth")
    front.handle(auth, request, NAS, 0.0)  # type: ignore[arg-type]
    (reply,) = replies(auth)
    assert reply.code == codec.ACCESS_REJECT
    assert reply.get(codec.REPLY_MESSAGE) == b"insufficient credit"
    assert reply.vendor_attributes(311) == []  # no success, no keys, no E=691
