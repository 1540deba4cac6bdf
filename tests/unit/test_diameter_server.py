"""The Diameter transport and credit-control handler in process: the server on a loopback port,
test peers as asyncio streams, the charging pipeline for real over an in-memory store (no
daemon, no database). The daemon end to end is tests/integration/test_diameter.py."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
from diameter_peer import (
    Peer,
    answer_to,
    base_request,
    ccr,
    cer,
    granted,
    mscc,
    mscc_answers,
    result_code,
    units,
)
from memory_store import MemoryStore

from ocs.charging.cache import AccountCache
from ocs.charging.pipeline import CachePolicy, Charging
from ocs.charging.sessions import SessionBook
from ocs.core import AccountSnapshot, AccountStatus, GrantLimits, Tariff, parse_amount
from ocs.diameter import codec
from ocs.diameter.handler import CreditControl
from ocs.diameter.server import DiameterServer, PeerAllowList
from ocs.metrics import Metrics

TARIFF = Tariff(price_per_minute=parse_amount("0.06"), price_per_mb=parse_amount("0.01"))
INITIAL, UPDATE, TERMINATION, EVENT = 1, 2, 3, 4
CC_TIME, CC_TOTAL_OCTETS = codec.AVP_CC_TIME, codec.AVP_CC_TOTAL_OCTETS


def snapshot(account_id: int, name: str, balance: str, **kw: object) -> AccountSnapshot:
    return AccountSnapshot(
        account_id=account_id, name=name, balance=parse_amount(balance), tariff=TARIFF, **kw
    )  # type: ignore[arg-type]


@dataclass
class Setup:
    server: DiameterServer
    store: MemoryStore
    handler: CreditControl
    port: int

    async def peer(self, host: str | None = "pcef.localdomain") -> Peer:
        peer = await Peer.connect("127.0.0.1", self.port)
        if host is not None:
            await peer.open(host)
        return peer

    def sample(self, name: str, **labels: str) -> float:
        value = self.server.metrics.registry.get_sample_value(name, labels)
        return value or 0.0

    def closed(self, reason: str) -> float:
        return self.sample("ocs_diameter_connections_closed_total", reason=reason)

    def dropped(self, cause: str) -> float:
        return self.sample("ocs_dropped_packets_total", protocol="diameter", cause=cause)


def build(**server_options: object) -> tuple[DiameterServer, MemoryStore, CreditControl]:
    limits = server_options.pop("limits", GrantLimits(max_time_s=3600, max_volume_bytes=10_000_000))
    policy = server_options.pop("policy", CachePolicy())
    accounts = {
        1: snapshot(1, "prepaid-ok", "1.00"),
        2: snapshot(2, "prepaid-empty", "0.00"),
        3: snapshot(3, "blocked", "100", status=AccountStatus.BLOCKED),
        4: snapshot(4, "postpaid", "-50.00", credit_limit=parse_amount("100")),
        5: snapshot(5, "cold", "10.00"),  # only in the store: a cache miss
    }
    identities = {("user_name", a.name): a.account_id for a in accounts.values()}
    identities[("e164", "15550000001")] = 1
    store = MemoryStore(accounts=dict(accounts), identities=identities)
    cache = AccountCache()
    loop = asyncio.get_running_loop()
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
        limits=limits,  # type: ignore[arg-type]
        policy=policy,  # type: ignore[arg-type]
    )
    handler = CreditControl(
        charging=charging,
        origin_host="ocs.localdomain",
        origin_realm="localdomain",
        validity_time_s=server_options.pop("validity_time_s", 600),  # type: ignore[arg-type]
        tcc_s=server_options.pop("tcc_s", 600.0),  # type: ignore[arg-type]
    )
    rules = [
        SimpleNamespace(origin_host="*.localdomain", realm=None, address="127.0.0.0/8"),
        SimpleNamespace(origin_host="exact.example.net", realm="example.net", address=None),
    ]
    options: dict[str, object] = {"tick_s": 0.05}
    options.update(server_options)
    server = DiameterServer(
        handler=handler,
        allowed=PeerAllowList(rules),
        metrics=Metrics(),
        origin_host="ocs.localdomain",
        origin_realm="localdomain",
        rng=random.Random(7),
        **options,  # type: ignore[arg-type]
    )
    return server, store, handler


@contextlib.asynccontextmanager
async def started(**options: object) -> AsyncIterator[Setup]:
    server, store, handler = build(**options)
    bound = await server.start(["127.0.0.1:0"])
    behind = asyncio.create_task(handler.charging.run_write_behind())  # as the daemon runs it
    try:
        yield Setup(server, store, handler, bound[0][1])
    finally:
        if store.gate is not None:
            store.gate.set()
        await server.stop(0.5)
        behind.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await behind


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    async with started() as running:
        yield running


# --- peers and the capabilities exchange -----------------------------------------------------


async def test_cea_advertises_credit_control_and_3gpp(setup: Setup) -> None:
    peer = await Peer.connect("127.0.0.1", setup.port)
    cea = await peer.open()
    assert cea.header.command_code == codec.CMD_CAPABILITIES_EXCHANGE
    assert not cea.header.is_request and not cea.header.is_error
    assert cea.find(codec.AVP_ORIGIN_HOST).as_identity() == "ocs.localdomain"
    assert cea.find(codec.AVP_AUTH_APPLICATION_ID).as_u32() == 4
    vsai = cea.find(codec.AVP_VENDOR_SPECIFIC_APPLICATION_ID).grouped()
    assert {(m.code, m.as_u32()) for m in vsai} == {(266, 10415), (258, 4)}
    assert cea.find(codec.AVP_SUPPORTED_VENDOR_ID).as_u32() == 10415
    assert str(cea.find(codec.AVP_HOST_IP_ADDRESS).as_address()) == "127.0.0.1"
    assert cea.find(codec.AVP_PRODUCT_NAME).as_utf8() == "ocs"
    assert cea.find(codec.AVP_FIRMWARE_REVISION) is not None
    peer.close()


@pytest.mark.parametrize(
    ("host", "realm", "apps", "code"),
    [
        ("stranger.example.org", "example.org", (4,), 3010),
        ("exact.example.net", "other.net", (4,), 3010),  # realm must match
        ("exact.example.net", "example.net", (4,), 2001),
        ("a.b.localdomain", "localdomain", (4,), 2001),  # *.domain at any depth
        ("localdomain", "localdomain", (4,), 3010),  # but not the domain itself
        ("pcef.localdomain", "localdomain", (16777238,), 5010),  # Gx only
        ("relay.localdomain", "localdomain", (0xFFFFFFFF,), 2001),  # a relay has them all
    ],
)
async def test_allow_list_and_common_application(
    setup: Setup, host: str, realm: str, apps: tuple[int, ...], code: int
) -> None:
    peer = await Peer.connect("127.0.0.1", setup.port)
    answer = await peer.request(cer(host, realm, apps=apps))
    assert result_code(answer) == code
    assert answer.header.is_error == (code == 3010)
    if code != 2001:
        assert await peer.closed()
    peer.close()


async def test_no_application_message_before_the_cer(setup: Setup) -> None:
    peer = await setup.peer(host=None)
    answer = await peer.request(ccr("s;1", INITIAL, 0, user="prepaid-ok"))
    assert result_code(answer) == 3010 and answer.header.is_error
    assert await peer.closed()
    assert setup.closed("unknown_peer") == 1


async def test_dwr_is_answered_and_unsolicited_answers_are_dropped(setup: Setup) -> None:
    peer = await setup.peer()
    dwr = base_request(codec.CMD_DEVICE_WATCHDOG)
    dwa = await peer.request(dwr)
    assert dwa.header.command_code == codec.CMD_DEVICE_WATCHDOG and result_code(dwa) == 2001
    # A DWA and a CCA for requests the server never sent: dropped and counted, peer stays.
    await peer.send(answer_to(dwr))
    await peer.send(answer_to(ccr("x", INITIAL, 0, user="prepaid-ok")))
    answer = await peer.request(ccr("s;2", INITIAL, 0, user="prepaid-ok"))
    assert result_code(answer) == 2001
    assert setup.dropped("unsolicited_answer") == 2


async def test_unknown_command_and_application(setup: Setup) -> None:
    peer = await setup.peer()
    rar = base_request(codec.CMD_RE_AUTH)
    answer = await peer.request(rar)
    assert result_code(answer) == codec.DIAMETER_COMMAND_UNSUPPORTED and answer.header.is_error
    gx = bytearray(ccr("s", INITIAL, 0, user="prepaid-ok"))
    gx[8:12] = (16777238).to_bytes(4, "big")
    answer = await peer.request(bytes(gx))
    assert result_code(answer) == codec.DIAMETER_APPLICATION_UNSUPPORTED
    missing = ccr("s", INITIAL, 0, user="prepaid-ok")
    # Drop CC-Request-Number (the last AVP before User-Name): 5005 with Failed-AVP.
    request = codec.parse_message(missing)
    avps = [a.raw for a in request.avps if a.code != codec.AVP_CC_REQUEST_NUMBER]
    header = request.header
    answer = await peer.request(
        codec.encode_message(
            command_code=272,
            application_id=4,
            hop_by_hop=header.hop_by_hop,
            end_to_end=header.end_to_end,
            avps=avps,
            flags=header.flags,
        )
    )
    assert result_code(answer) == codec.DIAMETER_MISSING_AVP
    assert answer.find(codec.AVP_FAILED_AVP) is not None


async def test_peer_dpr_is_answered(setup: Setup) -> None:
    peer = await setup.peer()
    dpa = await peer.request(base_request(codec.CMD_DISCONNECT_PEER))
    assert dpa.header.command_code == codec.CMD_DISCONNECT_PEER and result_code(dpa) == 2001
    peer.close()


async def test_shutdown_says_dpr_after_in_flight_answers() -> None:
    server, store, _ = build()
    port = (await server.start(["127.0.0.1:0"]))[0][1]
    peer = await Peer.connect("127.0.0.1", port)
    await peer.open()
    store.gate = asyncio.Event()
    await peer.send(ccr("slow;1", INITIAL, 0, user="cold"))  # waits for the store
    await asyncio.sleep(0.1)
    assert server.pending == 1
    stopping = asyncio.create_task(server.stop(5.0))
    await asyncio.sleep(0.1)
    store.gate.set()
    first = await peer.receive()
    assert first is not None and first.header.command_code == 272 and result_code(first) == 2001
    dpr = await peer.receive()
    assert dpr is not None and dpr.header.command_code == codec.CMD_DISCONNECT_PEER
    assert dpr.header.is_request
    await peer.send(answer_to(codec_raw(dpr)))
    await asyncio.wait_for(stopping, 5)
    assert await peer.closed()
    assert not server.connections


def codec_raw(message: codec.Message) -> bytes:
    return message.raw


# --- credit control --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("identity", "code", "grant"),
    [
        ({"user": "prepaid-ok"}, 2001, 1000),  # 1.00 at 0.06/min
        ({"e164": "+1 555-000-0001"}, 2001, 1000),  # Subscription-Id E.164, normalised
        ({"user": "postpaid"}, 2001, 3600),
        ({"user": "prepaid-empty"}, 4012, None),
        ({"user": "blocked"}, 4010, None),
        ({"user": "nobody"}, 5030, None),
        ({}, 5030, None),
        ({"user": "cold"}, 2001, 3600),  # a cache miss, asked from the store
    ],
)
async def test_ccr_initial(setup: Setup, identity: dict[str, str], code: int, grant: int) -> None:
    peer = await setup.peer()
    answer = await peer.request(ccr("pcef;i;1", INITIAL, 0, **identity))
    assert answer.header.command_code == 272 and not answer.header.is_error
    assert result_code(answer) == code
    assert answer.find(codec.AVP_SESSION_ID).as_utf8() == "pcef;i;1"
    assert answer.find(codec.AVP_CC_REQUEST_TYPE).as_u32() == INITIAL
    if grant is None:
        assert granted(answer) == {}
    else:
        assert granted(answer) == {CC_TIME: grant}
        assert answer.find(codec.AVP_VALIDITY_TIME).as_u32() == 600


async def test_ccr_initial_volume_and_requested_units(setup: Setup) -> None:
    peer = await setup.peer()
    answer = await peer.request(
        ccr("v;1", INITIAL, 0, user="prepaid-ok", requested=units(437, octets=0))
    )
    # Requested-Service-Unit with CC-Total-Octets: a volume grant. 1.00 at 0.01/MB = 100 MB,
    # capped at 10 MB.
    assert result_code(answer) == 2001 and granted(answer) == {CC_TOTAL_OCTETS: 10_000_000}
    answer = await peer.request(
        ccr("v;2", INITIAL, 0, user="postpaid", requested=units(437, time_s=120))
    )
    assert granted(answer) == {CC_TIME: 120}


async def test_mscc_is_answered_per_rating_group(setup: Setup) -> None:
    peer = await setup.peer()
    answer = await peer.request(
        ccr(
            "m;1",
            INITIAL,
            0,
            user="prepaid-ok",
            multiple=[
                mscc(100, requested=units(437, time_s=60)),
                mscc(200, requested=units(437, octets=1000)),
            ],
        )
    )
    assert result_code(answer) == 2001 and granted(answer) == {}
    assert mscc_answers(answer) == [
        {"granted": {CC_TIME: 60}, "rating_group": 100, "validity_time": 600, "result_code": 2001},
        {
            "granted": {CC_TOTAL_OCTETS: 1000},
            "rating_group": 200,
            "validity_time": 600,
            "result_code": 2001,
        },
    ]
    # Every rating group's grant is held, not only the first one's: 60 s (0.06) + 1000 bytes
    # (0.00001, rounded up to the micro-unit).
    assert setup.handler.charging.sessions.reserved(1) == parse_amount("0.06") + 10
    refused = await peer.request(
        ccr("m;2", INITIAL, 0, user="prepaid-empty", multiple=[mscc(100), mscc(200)])
    )
    assert result_code(refused) == 4012
    assert [m["result_code"] for m in mscc_answers(refused)] == [4012, 4012]
    assert setup.sample("ocs_diameter_mscc_results_total", command="CCR-I", result_code="4012") == 2


async def test_initial_update_termination_charge_the_rated_usage_once(setup: Setup) -> None:
    peer = await setup.peer()
    before = setup.store.balance(4)
    assert result_code(await peer.request(ccr("s;f", INITIAL, 0, user="postpaid"))) == 2001
    update = await peer.request(ccr("s;f", UPDATE, 1, user="postpaid", used=units(446, time_s=60)))
    assert result_code(update) == 2001 and granted(update) == {CC_TIME: 3600}
    assert setup.store.balance(4) == before - parse_amount("0.06")
    # The next quota sees the charge at once (the cache was refreshed by the store's answer).
    terminate = ccr("s;f", TERMINATION, 2, user="postpaid", used=units(446, time_s=30))
    assert result_code(await peer.request(terminate)) == 2001
    assert setup.store.balance(4) == before - parse_amount("0.09")
    # The same CCR-T again as a new message (no T flag): answered, charged once.
    again = ccr("s;f", TERMINATION, 2, user="postpaid", used=units(446, time_s=30))
    assert result_code(await peer.request(again)) == 2001
    assert setup.store.balance(4) == before - parse_amount("0.09")
    assert setup.store.charged(("diameter", "pcef.localdomain", "s;f")) == parse_amount("0.09")
    # A session nobody started, from a request that names no subscriber: 5002.
    unknown = await peer.request(ccr("s;none", UPDATE, 1))
    assert result_code(unknown) == codec.DIAMETER_UNKNOWN_SESSION_ID
    # One that names its subscriber (its CCR-I was lost): its usage is charged, never refused.
    lost = ccr("s;lost", UPDATE, 1, user="postpaid", used=units(446, time_s=60))
    assert result_code(await peer.request(lost)) == 2001
    assert setup.store.charged(("diameter", "pcef.localdomain", "s;lost")) == parse_amount("0.06")


async def test_a_session_resumed_after_a_restart_grants_in_the_unit_asked_for() -> None:
    """A CCR-U for a session this process did not start (it restarted: same store, new
    pipeline) asking for volume, with no Used-Service-Unit, gets a volume grant (the old
    handler read the unit as `a or b if c else None`, i.e. time)."""
    async with started() as first:
        peer = await first.peer()
        assert result_code(await peer.request(ccr("r;1", INITIAL, 0, user="postpaid"))) == 2001
        peer.close()
        await asyncio.sleep(0.7)  # the start is written behind
        store = first.store
    server, _, handler = build()
    handler.charging.sink = store
    handler.charging.source = store
    bound = await server.start(["127.0.0.1:0"])
    try:
        again = Setup(server, store, handler, bound[0][1])
        peer = await again.peer()
        update = ccr("r;1", UPDATE, 1, user="postpaid", requested=units(437, octets=5000))
        answer = await peer.request(update)
        assert result_code(answer) == 2001 and granted(answer) == {CC_TOTAL_OCTETS: 5000}
        peer.close()
    finally:
        await server.stop(0.5)


async def test_a_second_initial_for_a_running_session_replaces_it(setup: Setup) -> None:
    """The client reuses a Session-Id for a new session: one session, one hold (the new one's),
    not two, and not none."""
    peer = await setup.peer()
    charging = setup.handler.charging
    assert result_code(await peer.request(ccr("two;1", INITIAL, 0, user="prepaid-ok"))) == 2001
    held = charging.sessions.reserved(1)
    assert held == parse_amount("1.00")  # 1000 s at 0.06/min: all of it
    again = await peer.request(ccr("two;1", INITIAL, 0, user="prepaid-ok"))
    assert result_code(again) == 2001 and granted(again) == {CC_TIME: 1000}
    assert charging.sessions.reserved(1) == held
    assert charging.sessions.active_sessions(1) == 1 and len(charging.live) == 1


async def test_retransmission_gets_the_cached_answer(setup: Setup) -> None:
    peer = await setup.peer()
    assert result_code(await peer.request(ccr("d;1", INITIAL, 0, user="postpaid"))) == 2001
    update = ccr("d;1", UPDATE, 1, user="postpaid", used=units(446, time_s=60), end_to_end=77)
    first = await peer.request(update)
    again = ccr(
        "d;1",
        UPDATE,
        1,
        user="postpaid",
        used=units(446, time_s=60),
        end_to_end=77,
        hop_by_hop=4242,
        retransmit=True,
    )
    second = await peer.request(again)
    assert second.header.hop_by_hop == 4242
    assert second.raw[20:] == first.raw[20:]
    assert setup.sample("ocs_duplicate_requests_total", protocol="diameter") == 1
    assert setup.store.charged(("diameter", "pcef.localdomain", "d;1")) == parse_amount("0.06")


async def test_event_requests(setup: Setup) -> None:
    peer = await setup.peer()
    balance = await peer.request(ccr("e;1", EVENT, 0, user="prepaid-ok", action=2))
    assert result_code(balance) == 2001
    assert balance.find(codec.AVP_CHECK_BALANCE_RESULT).as_u32() == 0  # ENOUGH_CREDIT
    empty = await peer.request(ccr("e;2", EVENT, 0, user="prepaid-empty", action=2))
    assert empty.find(codec.AVP_CHECK_BALANCE_RESULT).as_u32() == 1  # NO_CREDIT
    price = await peer.request(
        ccr("e;3", EVENT, 0, user="prepaid-ok", action=3, requested=units(437, time_s=120))
    )
    cost = price.find(codec.AVP_COST_INFORMATION).grouped()
    unit_value = next(m for m in cost if m.code == codec.AVP_UNIT_VALUE).grouped()
    assert {m.code: m.as_i64() if m.code == 447 else m.as_i32() for m in unit_value} == {
        447: 120_000,  # 0.12 in micro-units
        429: -6,
    }
    before = setup.store.balance(1)
    debit = await peer.request(
        ccr("e;4", EVENT, 0, user="prepaid-ok", action=0, requested=units(437, time_s=60))
    )
    assert result_code(debit) == 2001 and granted(debit) == {CC_TIME: 60}
    assert setup.store.balance(1) == before - parse_amount("0.06")
    refund = await peer.request(
        ccr("e;5", EVENT, 0, user="prepaid-ok", action=1, requested=units(437, time_s=60))
    )
    assert result_code(refund) == 2001  # REFUND_ACCOUNT: the price of 60 s credited back
    assert setup.store.balance(1) == before
    missing = await peer.request(ccr("e;6", EVENT, 0, user="prepaid-ok"))
    assert result_code(missing) == codec.DIAMETER_MISSING_AVP


async def test_tcc_never_ends_a_session_whose_grant_still_runs() -> None:
    """Tcc (0.3 s here) is shorter than the grant (3600 s) and Validity-Time (600 s): the
    session stays open and its later usage is charged to it, not refused with 5002."""
    async with started(tcc_s=0.3) as setup:
        peer = await setup.peer()
        charging = setup.handler.charging
        assert result_code(await peer.request(ccr("t;1", INITIAL, 0, user="postpaid"))) == 2001
        await asyncio.sleep(0.5)
        now = asyncio.get_running_loop().time()
        charging.sessions.expire(now)
        assert charging.expire_sessions() == 0
        update = ccr("t;1", UPDATE, 1, user="postpaid", used=units(446, time_s=60))
        assert result_code(await peer.request(update)) == 2001
        final = ccr("t;1", TERMINATION, 2, user="postpaid", used=units(446, time_s=30))
        assert result_code(await peer.request(final)) == 2001
        assert setup.store.charged(("diameter", "pcef.localdomain", "t;1")) == parse_amount("0.09")


async def test_a_session_whose_grant_ended_is_closed_and_late_usage_still_charged() -> None:
    """No news after the grant (1 s) and Validity-Time ran out, plus the margin: the session is
    closed and its hold released. The client's late report is still charged to it."""
    async with started(
        tcc_s=0.1,
        validity_time_s=0,
        limits=GrantLimits(max_time_s=1),
        policy=CachePolicy(session_ttl_margin_s=0.2, write_behind_s=0.01),
    ) as setup:
        peer = await setup.peer()
        charging = setup.handler.charging
        assert result_code(await peer.request(ccr("x;1", INITIAL, 0, user="postpaid"))) == 2001
        assert charging.sessions.reserved(4) > 0
        await asyncio.sleep(1.4)
        charging.sessions.expire(asyncio.get_running_loop().time())
        assert charging.expire_sessions() == 1
        assert charging.sessions.reserved(4) == 0 and not charging.live
        await asyncio.sleep(0.1)  # the close is written behind
        # Closed with no news: charged its last quota (1 s), as nothing reported it.
        key = ("diameter", "pcef.localdomain", "x;1")
        assert setup.store.charged(key) == parse_amount("0.001")
        late = ccr("x;1", UPDATE, 1, user="postpaid", used=units(446, time_s=3))
        answer = await peer.request(late)
        assert result_code(answer) == 2001
        assert answer.find(codec.AVP_FINAL_UNIT_INDICATION) is not None  # over: no more quota
        # The late report (3 s) counts the second already charged for the quota: 3 s in all.
        assert setup.store.charged(key) == parse_amount("0.003")


# --- overload and hostile peers --------------------------------------------------------------


async def test_too_busy_beyond_max_pending() -> None:
    async with started(max_pending=1) as setup:
        setup.store.gate = asyncio.Event()
        peer = await setup.peer()
        await peer.send(ccr("b;1", INITIAL, 0, user="cold"))
        busy = await peer.request(ccr("b;2", INITIAL, 0, user="cold"))
        assert result_code(busy) == codec.DIAMETER_TOO_BUSY and busy.header.is_error
        # The cache still answers while the database is busy.
        assert result_code(await peer.request(ccr("b;3", INITIAL, 0, user="postpaid"))) == 2001
        setup.store.gate.set()
        late = await peer.receive()
        assert late is not None and result_code(late) == 2001


async def test_a_peer_gone_before_its_answer_harms_nothing(setup: Setup) -> None:
    setup.store.gate = asyncio.Event()
    peer = await setup.peer()
    await peer.send(ccr("g;1", INITIAL, 0, user="cold"))
    await asyncio.sleep(0.05)
    peer.writer.transport.abort()
    await asyncio.sleep(0.05)
    setup.store.gate.set()
    await asyncio.sleep(0.1)
    assert setup.dropped("peer_gone") == 1
    assert setup.dropped("internal_error") == 0
    other = await setup.peer("other.localdomain")
    assert result_code(await other.request(ccr("g;2", INITIAL, 0, user="postpaid"))) == 2001


async def test_silent_connection_is_closed() -> None:
    async with started(cer_timeout_s=0.2) as setup:
        peer = await setup.peer(host=None)
        assert await peer.closed(2.0)
        assert setup.closed("cer_timeout") == 1


async def test_slow_loris_is_closed() -> None:
    async with started(read_timeout_s=0.5) as setup:
        peer = await setup.peer()
        request = ccr("l;1", INITIAL, 0, user="postpaid")
        with contextlib.suppress(ConnectionError):
            for octet in request[:30]:  # one octet every 50 ms: never a whole message
                await peer.send(bytes([octet]))
                await asyncio.sleep(0.05)
        assert await peer.closed(2.0)
        assert setup.closed("read_timeout") == 1


async def test_idle_flood_does_not_lock_out_a_new_peer() -> None:
    async with started(max_connections=4, cer_timeout_s=30) as setup:
        idle = [await Peer.connect("127.0.0.1", setup.port) for _ in range(10)]
        await asyncio.sleep(0.1)
        peer = await setup.peer()
        assert result_code(await peer.request(ccr("f;1", INITIAL, 0, user="postpaid"))) == 2001
        assert setup.closed("evicted_idle") >= 7
        for connection in idle:
            connection.close()


async def test_garbage_closes_only_its_connection() -> None:
    async with started(max_message_bytes=1024) as setup:
        good = await setup.peer("good.localdomain")
        bad = await setup.peer("bad.localdomain")
        await bad.send(b"\x01\xff\xff\xf0" + bytes(100))  # a length beyond our maximum
        answer = await bad.receive()
        assert answer is None or result_code(answer) == codec.DIAMETER_INVALID_MESSAGE_LENGTH
        assert await bad.closed()
        worse = await Peer.connect("127.0.0.1", setup.port)
        await worse.send(bytes(random.Random(1).getrandbits(8) for _ in range(4000)))
        assert await worse.closed()
        assert result_code(await good.request(ccr("ok;1", INITIAL, 0, user="postpaid"))) == 2001
        assert setup.dropped("internal_error") == 0


async def test_mutated_messages_never_escape(setup: Setup) -> None:
    """A small fuzz: bit flips and truncations of real CCRs, one connection after another; no
    exception escapes and the bystander keeps being served."""
    rng = random.Random(2024)
    bystander = await setup.peer("bystander.localdomain")
    seeds = [
        ccr("z;1", INITIAL, 0, user="postpaid", multiple=[mscc(1, requested=units(437))]),
        ccr("z;2", UPDATE, 1, e164="15550000001", used=units(446, time_s=5, octets=9)),
        ccr("z;3", EVENT, 0, user="prepaid-ok", action=3),
    ]
    peer = await setup.peer("fuzz.localdomain")
    for n in range(300):
        message = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(4 if rng.random() < 0.9 else 0, len(message))
            message[position] ^= 1 << rng.randrange(8)
        if rng.random() < 0.1:
            message = message[: rng.randrange(20, len(message))]
        if peer.reader.at_eof() or peer.writer.is_closing():
            peer.close()
            peer = await setup.peer("fuzz.localdomain")
        try:
            await peer.send(bytes(message))
        except ConnectionError:
            continue
        if n % 25 == 0:
            check = await bystander.request(ccr(f"by;{n}", INITIAL, 0, user="postpaid"))
            assert result_code(check) == 2001
            # ended at once: its hold must not add up to the fuzzed sessions' own
            done = await bystander.request(ccr(f"by;{n}", TERMINATION, 1, user="postpaid"))
            assert result_code(done) == 2001
    peer.close()
    assert setup.dropped("internal_error") == 0
    check = await bystander.request(ccr("by;end", INITIAL, 0, user="postpaid"))
    assert result_code(check) == 2001
