"""The RADIUS front without sockets: datagrams in, replies or counted drops out.

The pipeline runs for real (cache, credit core, session book); only the database behind it is an
in-memory stand-in, so these tests stay pure and fast. The daemon against a real PostgreSQL and
radclient is tested in tests/integration/test_radius.py.
"""

from __future__ import annotations

import asyncio
import ipaddress
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
from ocs.radius import codec
from ocs.radius.front import AttributeRef, ClientTable, RadiusClient, RadiusFront

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
    *, require_ma: bool = True, limit_proxy_state: bool = True, queue_size: int = 4096
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
        require_message_authenticator=require_ma,
        limit_proxy_state=limit_proxy_state,
        identity=AttributeRef("User-Name", codec.USER_NAME),
        identity_kind=IdentityKind.USER_NAME,
    )
    front = RadiusFront(
        charging=charging, clients=ClientTable([client]), metrics=Metrics(), queue_size=queue_size
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
