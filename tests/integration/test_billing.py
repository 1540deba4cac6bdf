"""Billing rules from the seeds against a real PostgreSQL: warning thresholds and the outbox,
subscriber-to-subscriber transfers, the database's available-credit figure, prepaid periods,
webhook delivery (to a small HTTP server on 127.0.0.1) and the CSV import.

Nothing is mocked: writers are the store, raw SQL and the ``ocs`` CLI; concurrency is several
real connections at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from support import run_ocs

from ocs import admin
from ocs.admin import account_import
from ocs.admin.demo import DEMO_ACCOUNTS, load_demo
from ocs.admin.prepaid import add_prepaid_service, list_prepaid_services, run_prepaid_periods
from ocs.billing.webhooks import WebhookDeliverer
from ocs.core import available_credit, parse_amount
from ocs.core.identity import IdentityKind
from ocs.core.model import AccountStatus, LimitBasis
from ocs.store import accounts as store

pytestmark = pytest.mark.integration

ZURICH = ZoneInfo("Europe/Zurich")


def money(text: str) -> int:
    return parse_amount(text)


async def _account(conn: asyncpg.Connection, name: str, limit: str = "0", **kw: object) -> int:
    settings = admin.AccountSettings(credit_limit=money(limit), **kw)  # type: ignore[arg-type]
    return await admin.create_account(conn, name, settings)


async def _ledger(conn: asyncpg.Connection, account: int, kind: str, amount: str) -> None:
    await conn.execute(
        "INSERT INTO ledger_entries (account_id, kind, amount) VALUES ($1, $2, $3)",
        account,
        kind,
        Decimal(amount),
    )


_usage_keys = iter(range(1_000_000))


async def _use(
    conn: asyncpg.Connection, account: int, amount: str, at: datetime | None = None
) -> None:
    await conn.execute(
        """INSERT INTO usage_records (account_id, idempotency_key, source, amount, occurred_at)
           VALUES ($1, $2, 'test', $3, COALESCE($4, now()))""",
        account,
        f"k{next(_usage_keys)}",
        Decimal(amount),
        at,
    )


async def _outbox(conn: asyncpg.Connection) -> list[dict[str, object]]:
    rows = await conn.fetch("SELECT topic, payload::text AS payload FROM outbox ORDER BY id")
    return [{"topic": r["topic"], **json.loads(r["payload"])} for r in rows]


# --- warning thresholds ---------------------------------------------------------------------


async def test_thresholds_fire_once_and_rearm(conn: asyncpg.Connection, dsn: str) -> None:
    acct = await _account(conn, "prepaid")
    await _ledger(conn, acct, "payment", "100")
    await admin.set_warning_thresholds(conn, "prepaid", [money("50"), money("10")], [])
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(dsn)
    try:
        await listener.add_listener("ocs_outbox", lambda *a: heard.put_nowait(a[3]))

        await _use(conn, acct, "60")  # 40 left: crosses 50
        first = await _outbox(conn)
        assert [(r["topic"], r["threshold"], r["available"]) for r in first] == [
            ("low_funds", "50.00", "40.00")
        ]
        assert first[0]["account"] == "prepaid" and first[0]["available_micros"] == money("40")
        assert await asyncio.wait_for(heard.get(), 5) == "1"  # NOTIFY with the outbox id

        await _use(conn, acct, "5")  # 35: still below 50, nothing new
        await _ledger(conn, acct, "payment", "30")  # 65: 50 re-armed, silently
        assert len(await _outbox(conn)) == 1
        await _use(conn, acct, "20")  # 45: crosses 50 again
        await _use(conn, acct, "40")  # 5: crosses 10 (50 is still disarmed)
        rows = await _outbox(conn)
        assert [r["threshold"] for r in rows] == ["50.00", "50.00", "10.00"]
        assert [t.armed for t in await admin.warning_thresholds(conn, acct)] == [False, False]
    finally:
        await listener.close()


async def test_thresholds_are_evaluated_only_for_accounts_that_have_some(
    conn: asyncpg.Connection,
) -> None:
    """0065: the deferred evaluation is queued only for an account with thresholds; the flag
    follows every change of them."""
    plain = await _account(conn, "plain")
    watched = await _account(conn, "watched")
    flags = "SELECT name, has_warning_thresholds FROM accounts ORDER BY id"
    assert [tuple(r) for r in await conn.fetch(flags)] == [("plain", False), ("watched", False)]
    await admin.set_warning_thresholds(conn, "watched", [money("50")], [])
    assert [tuple(r) for r in await conn.fetch(flags)] == [("plain", False), ("watched", True)]
    await admin.set_warning_thresholds(conn, "watched", [money("20"), money("5")], [])
    assert [tuple(r) for r in await conn.fetch(flags)] == [("plain", False), ("watched", True)]

    calls = (
        "SELECT COALESCE(pg_stat_get_xact_function_calls("
        "'ocs_thresholds_after_change'::regproc), 0)"
    )

    async def evaluations(*accounts: int) -> int:
        async with conn.transaction():
            await conn.execute("SET LOCAL track_functions = 'pl'")
            await conn.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the deferred trigger, now
            before = await conn.fetchval(calls)  # counts not yet flushed may be pending
            for account in accounts:
                await _ledger(conn, account, "payment", "1")
            return int(await conn.fetchval(calls) - before)

    assert await evaluations(plain) == 0
    assert await evaluations(watched) == 1
    assert await evaluations(plain, watched) == 1
    await admin.set_warning_thresholds(conn, "watched", [], [])
    assert [tuple(r) for r in await conn.fetch(flags)] == [("plain", False), ("watched", False)]
    assert await evaluations(plain, watched) == 0


@pytest.mark.dates
async def test_postpaid_percentages_and_limit_changes(conn: asyncpg.Connection) -> None:
    acct = await _account(conn, "postpaid", "1000")
    await admin.set_warning_thresholds(conn, "postpaid", [money("100")], [Decimal("20")])
    await _use(conn, acct, "850")  # available 150: below 20 % of 1000 (200), above 100
    rows = await _outbox(conn)
    assert [(r["topic"], r["threshold"], r["level"]) for r in rows] == [
        ("credit_limit_warning", "20%", "200.00")
    ]
    now = await admin.database_now(conn)
    await admin.set_temporary_credit_limit(
        conn, acct, valid_until=now + timedelta(days=7), amount=money("100")
    )  # available 250: re-armed
    # Replacing the increase (revoke, then insert, in one transaction) is not a drop and a rise.
    await admin.set_temporary_credit_limit(
        conn, acct, valid_until=now + timedelta(days=8), amount=money("100")
    )
    assert len(await _outbox(conn)) == 1
    # Lowering the permanent limit to 900: available 150 again, below 20 % of 900 (180).
    await admin.set_credit_limit(conn, acct, money("900"))
    rows = await _outbox(conn)
    assert [(r["threshold"], r["level"], r["available"]) for r in rows][-1] == (
        "20%",
        "180.00",
        "150.00",
    )


@pytest.mark.dates
async def test_an_ended_temporary_increase_is_noticed_by_the_periodic_run(
    conn: asyncpg.Connection, dsn: str
) -> None:
    """The figure drops at valid_until with no write; the periodic run notes it, so the
    thresholds fire and the daemon's cache hears of the account."""
    acct = await _account(conn, "postpaid", "100")
    await _use(conn, acct, "90")
    now = await admin.database_now(conn)
    await admin.set_temporary_credit_limit(
        conn, acct, valid_until=now + timedelta(seconds=1), amount=money("50")
    )
    await admin.set_warning_thresholds(conn, "postpaid", [money("20")], [])  # 60 now: armed
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(dsn)
    try:
        await listener.add_listener("ocs_account_changed", lambda *a: heard.put_nowait(a[3]))
        await asyncio.sleep(1.2)
        assert await _outbox(conn) == []  # nothing wrote, nothing noticed yet
        done = await run_prepaid_periods(conn)
        assert done.increases_ended == 1
        assert [(r["topic"], r["available"]) for r in await _outbox(conn)] == [
            ("credit_limit_warning", "10.00")
        ]
        assert (await asyncio.wait_for(heard.get(), 5)).split()[0] == str(acct)
        assert (await run_prepaid_periods(conn)).increases_ended == 0
    finally:
        await listener.close()


@pytest.mark.dates
async def test_unbilled_thresholds_rearm_when_a_new_month_starts(conn: asyncpg.Connection) -> None:
    """On the unbilled basis the figure rises at the month's start with no write: a threshold
    that fired last month fires again this month."""
    acct = await _account(conn, "b3", "500", limit_basis=LimitBasis.UNBILLED)
    await admin.set_warning_thresholds(conn, "b3", [money("100")], [])
    now = await admin.database_now(conn)
    await _use(conn, acct, "450", now)  # 50 left this month: fires
    assert len(await _outbox(conn)) == 1
    next_month = now + timedelta(days=40)
    await _use(conn, acct, "450", next_month)  # the next month's usage, recorded now
    fired = await conn.fetchval("SELECT ocs_evaluate_warning_thresholds($1, $2)", acct, next_month)
    assert fired == 1
    assert [r["available"] for r in await _outbox(conn)] == ["50.00", "50.00"]


async def test_a_threshold_set_below_the_figure_waits_for_a_crossing(
    conn: asyncpg.Connection,
) -> None:
    acct = await _account(conn, "low")
    await _ledger(conn, acct, "payment", "5")
    await admin.set_warning_thresholds(conn, "low", [money("10")], [])
    assert [t.armed for t in await admin.warning_thresholds(conn, acct)] == [False]
    await _use(conn, acct, "1")
    assert await _outbox(conn) == []
    with pytest.raises(admin.StoreError, match="is prepaid: its warning thresholds are amounts"):
        await admin.set_warning_thresholds(conn, "low", [], [Decimal("10")])


def test_thresholds_through_the_cli(dsn: str) -> None:
    run_ocs("account", "create", "a", dsn=dsn)
    run_ocs("payment", "add", "a", "20", dsn=dsn)
    assert (
        "warning thresholds 10.00, 5.00" in run_ocs("threshold", "set", "a", "5, 10", dsn=dsn).out
    )
    run_ocs("account", "update", "a", "--min-balance", "12", dsn=dsn)  # available 8: crosses 10
    listing = run_ocs("outbox", "list", dsn=dsn).out
    assert "low_funds" in listing and "10.00" in listing and "pending" in listing
    shown = run_ocs("account", "show", "a", dsn=dsn).out
    assert "warning thresholds  10.00 (reached), 5.00" in shown
    bad = run_ocs("threshold", "set", "a", "10,,5", dsn=dsn)
    assert bad.code == 2 and "an empty item" in bad.err


# --- the database's available credit is the core's ------------------------------------------


@pytest.mark.dates
async def test_sql_available_credit_matches_the_core(conn: asyncpg.Connection) -> None:
    """The demo accounts and two odd ones, at instants derived from one reading of the
    database's clock (the demo data is set up relative to it): now, two days on, and either
    side of the next month's start in Zurich."""
    await load_demo(conn)
    odd = await _account(conn, "odd", "333.333333")
    await _ledger(conn, odd, "adjustment", "-12.345678")
    now = await admin.database_now(conn)
    await admin.set_temporary_credit_limit(
        conn, odd, valid_until=now + timedelta(days=1), percent=Decimal("12.34")
    )
    monthly = await _account(
        conn, "monthly", "500", limit_basis=LimitBasis.UNBILLED, time_zone="Europe/Zurich"
    )
    next_month = next_month_start(now, ZURICH)
    await _use(conn, monthly, "480", next_month - timedelta(hours=1))
    moments = [
        now,
        now + timedelta(days=2),
        next_month - timedelta(minutes=30),  # the month of the usage, in Zurich
        next_month + timedelta(minutes=30),  # the next month in Zurich: unbilled starts again
    ]
    names = [d.name for d in DEMO_ACCOUNTS] + ["odd", "monthly"]
    for name in names:
        snapshot = await store.snapshot_by_name(conn, name)
        assert snapshot is not None
        for at in moments:
            in_sql = await admin.available_credit_in_database(conn, snapshot.account_id, at)
            assert in_sql == available_credit(snapshot, at), (name, at)
    assert await admin.available_credit_in_database(conn, monthly, moments[2]) == money("20")
    assert await admin.available_credit_in_database(conn, monthly, moments[3]) == money("500")


def next_month_start(now: datetime, zone: ZoneInfo) -> datetime:
    """The first instant of the month after ``now``'s, in ``zone``."""
    local = now.astimezone(zone)
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    return datetime(year, month, 1, tzinfo=zone)


# Instants where a month, a day or the offset changes in the zones the tests use. Each is
# given with the zone whose calendar it is about; the SQL and the core must agree either side.
CALENDAR_EDGES = [
    ("Europe/Zurich", datetime(2027, 1, 31, 23, 59, 59)),  # last second of January
    ("Europe/Zurich", datetime(2027, 2, 1, 0, 0, 0)),
    ("Europe/Zurich", datetime(2027, 3, 28, 1, 59, 59)),  # summer time starts at 02:00
    ("Europe/Zurich", datetime(2027, 3, 28, 3, 0, 0)),
    ("Europe/Zurich", datetime(2027, 10, 31, 2, 30, 0)),  # the hour that happens twice
    ("Europe/Zurich", datetime(2027, 10, 31, 23, 59, 59)),  # a month ending on DST day
    ("America/Los_Angeles", datetime(2027, 3, 14, 1, 59, 59)),  # DST starts at 02:00
    ("America/Los_Angeles", datetime(2027, 3, 31, 23, 59, 59)),
    ("America/Los_Angeles", datetime(2027, 11, 7, 1, 30, 0)),  # DST ends: 01:30 twice
    ("America/Los_Angeles", datetime(2027, 11, 30, 23, 59, 59)),
    ("UTC", datetime(2028, 2, 29, 12, 0, 0)),  # a leap day
    ("UTC", datetime(2028, 2, 29, 23, 59, 59)),
    ("Europe/Zurich", datetime(2027, 12, 31, 23, 59, 59)),  # the year's last second
    ("America/Los_Angeles", datetime(2027, 12, 31, 23, 59, 59)),
]


@pytest.mark.dates
@pytest.mark.parametrize(("zone_name", "local"), CALENDAR_EDGES)
async def test_unbilled_month_edges_agree_in_sql_and_the_core(
    conn: asyncpg.Connection, zone_name: str, local: datetime
) -> None:
    """Usage one second before a calendar edge counts in its month until the next month starts
    in the account's zone, in PostgreSQL and in the core alike; fixed instants only, so the
    result is the same whatever day the suite runs."""
    zone = ZoneInfo(zone_name)
    at = local.replace(tzinfo=zone)
    acct = await _account(conn, "edge", "100", limit_basis=LimitBasis.UNBILLED, time_zone=zone_name)
    await _use(conn, acct, "30", at)
    snapshot = await store.snapshot_by_id(conn, acct)
    assert snapshot is not None
    assert snapshot.unbilled_period == at.astimezone(zone).date().replace(day=1)
    month_end = next_month_start(at, zone)
    for moment, expected in [
        (at, "70"),
        (month_end - timedelta(seconds=1), "70"),
        (month_end, "100"),
        (month_end + timedelta(days=1), "100"),
    ]:
        in_sql = await admin.available_credit_in_database(conn, acct, moment)
        assert in_sql == available_credit(snapshot, moment) == money(expected), (zone_name, moment)


@pytest.mark.dates
async def test_unbilled_basis_counts_usage_only(conn: asyncpg.Connection) -> None:
    """Seed 002: on the unbilled basis the limit applies to this month's usage; a payment raises
    the balance and leaves the unbilled usage (and so the available credit) as it was."""
    acct = await _account(conn, "b3", "500", limit_basis=LimitBasis.UNBILLED)
    await _use(conn, acct, "480")
    before = await admin.available_credit_in_database(conn, acct)
    await _ledger(conn, acct, "payment", "300")
    assert await admin.available_credit_in_database(conn, acct) == before == money("20")
    snapshot = await store.snapshot_by_id(conn, acct)
    assert snapshot is not None
    assert (snapshot.unbilled, snapshot.balance) == (money("480"), money("-180"))


# --- transfers --------------------------------------------------------------------------------


async def test_transfers_need_permission_on_both_sides(conn: asyncpg.Connection) -> None:
    await admin.set_account_class(conn, "family", transfers_allowed=True)
    await admin.set_account_class(conn, "business", transfers_allowed=False)
    mum = await _account(conn, "mum", account_class="family")
    await _account(conn, "kid", account_class="family")
    await _account(conn, "corp", account_class="business")
    await _account(conn, "loner")  # no class: not allowed
    await _ledger(conn, mum, "payment", "50")

    result = await admin.transfer(conn, "mum", "kid", money("10"), changed_by="mum")
    assert (result.from_balance, result.to_balance) == (money("40"), money("10"))
    with pytest.raises(admin.Refused, match="account corp may not receive transfers"):
        await admin.transfer(conn, "mum", "corp", money("1"))
    with pytest.raises(admin.Refused, match="account loner may not receive transfers"):
        await admin.transfer(conn, "mum", "loner", money("1"))
    # The account's own setting wins over its class, both ways.
    await admin.update_account(conn, "corp", admin.AccountSettings(transfers="yes"))
    await admin.transfer(conn, "mum", "corp", money("1"))
    await admin.update_account(conn, "kid", admin.AccountSettings(transfers="no"))
    with pytest.raises(
        admin.Refused, match=r"account kid may not transfer funds \(transfers: no\)"
    ):
        await admin.transfer(conn, "kid", "mum", money("1"))
    # Both ledger rows point at the transfer.
    rows = await conn.fetch(
        "SELECT kind, amount FROM ledger_entries WHERE transfer_id = $1 ORDER BY kind",
        result.transfer_id,
    )
    assert [(r["kind"], r["amount"]) for r in rows] == [
        ("transfer_in", Decimal("10")),
        ("transfer_out", Decimal("-10")),
    ]


async def test_transfers_need_the_available_funds(conn: asyncpg.Connection) -> None:
    await admin.set_account_class(conn, "open", transfers_allowed=True)
    sender = await _account(conn, "sender", account_class="open")
    await _account(conn, "receiver", account_class="open")
    await _ledger(conn, sender, "payment", "10")
    await admin.update_account(conn, "sender", admin.AccountSettings(min_balance=money("2")))
    with pytest.raises(
        admin.Refused, match=r"account sender has 8\.00 available; a transfer of 9\.00"
    ):
        await admin.transfer(conn, "sender", "receiver", money("9"))
    await admin.transfer(conn, "sender", "receiver", money("8"))
    # A buffer (negative limit) keeps money back too; a positive limit can be transferred.
    with pytest.raises(admin.Refused, match=r"has 0\.00 available"):
        await admin.transfer(conn, "sender", "receiver", money("0.01"))
    await admin.update_account(conn, "sender", admin.AccountSettings(status=AccountStatus.BLOCKED))
    with pytest.raises(admin.Refused, match="account sender is blocked"):
        await admin.transfer(conn, "sender", "receiver", money("1"))
    await _account(conn, "b3", "500", limit_basis=LimitBasis.UNBILLED, account_class="open")
    with pytest.raises(admin.Refused, match="on the unbilled basis"):
        await admin.transfer(conn, "b3", "receiver", money("1"))
    with pytest.raises(admin.StoreError, match="two different accounts"):
        await admin.transfer(conn, "receiver", "receiver", money("1"))


async def test_a_repeated_transfer_external_id_moves_money_once(conn: asyncpg.Connection) -> None:
    await admin.set_account_class(conn, "open", transfers_allowed=True)
    a = await _account(conn, "a", account_class="open")
    await _account(conn, "b", account_class="open")
    await _ledger(conn, a, "payment", "10")
    first = await admin.transfer(conn, "a", "b", money("4"), external_id="app-1")
    again = await admin.transfer(conn, "a", "b", money("4"), external_id="app-1")
    assert again == first
    with pytest.raises(admin.Conflict, match="already used for a different transfer"):
        await admin.transfer(conn, "a", "b", money("5"), external_id="app-1")


async def test_concurrent_transfers_cannot_overdraw_and_do_not_deadlock(dsn: str) -> None:
    setup = await asyncpg.connect(dsn)
    try:
        await admin.set_account_class(setup, "open", transfers_allowed=True)
        source = await _account(setup, "source", account_class="open")
        for n in range(8):
            await _account(setup, f"sink{n}", account_class="open")
        await _ledger(setup, source, "payment", "10")
        left = await _account(setup, "left", account_class="open")
        right = await _account(setup, "right", account_class="open")
        await _ledger(setup, left, "payment", "100")
        await _ledger(setup, right, "payment", "100")
    finally:
        await setup.close()
    conns = [await asyncpg.connect(dsn) for _ in range(8)]
    try:

        async def drain(n: int) -> bool:
            try:
                await admin.transfer(conns[n], "source", f"sink{n}", money("3"))
            except admin.Refused:
                return False
            return True

        # Eight transfers of 3 from a balance of 10 at once: exactly three can succeed.
        assert sum(await asyncio.gather(*(drain(n) for n in range(8)))) == 3
        check = conns[0]
        assert await check.fetchval("SELECT balance FROM accounts WHERE id = $1", source) == 1

        # Opposite transfers at once lock in the same (id) order: no deadlock, nothing lost.
        async def swap(n: int) -> None:
            frm, to = ("left", "right") if n % 2 else ("right", "left")
            for _ in range(5):
                await admin.transfer(conns[n], frm, to, money("1"))

        await asyncio.wait_for(asyncio.gather(*(swap(n) for n in range(8))), 30)
        total = await check.fetchval(
            "SELECT sum(balance) FROM accounts WHERE id = ANY($1::bigint[])", [left, right]
        )
        assert total == 200
    finally:
        for c in conns:
            await c.close()


def test_transfer_through_the_cli(dsn: str) -> None:
    run_ocs("account-class", "set", "family", "--transfers", "yes", dsn=dsn)
    run_ocs("account", "create", "mum", "--class", "family", dsn=dsn)
    run_ocs("account", "create", "kid", "--class", "family", dsn=dsn)
    run_ocs("payment", "add", "mum", "10", dsn=dsn)
    moved = run_ocs("transfer", "mum", "kid", "4", dsn=dsn)
    assert moved.code == 0, moved.err
    assert "balances now 6.00 and 4.00" in moved.out
    too_much = run_ocs("transfer", "mum", "kid", "40", dsn=dsn)
    assert too_much.code == 1 and "mum has 6.00 available" in too_much.err
    assert (
        "transfers           allowed (as its class family says)"
        in run_ocs("account", "show", "kid", dsn=dsn).out
    )


# --- prepaid periods --------------------------------------------------------------------------


@pytest.mark.dates
async def test_a_prepaid_period_run_twice_charges_once(dsn: str, conn: asyncpg.Connection) -> None:
    acct = await _account(conn, "isp")
    await _ledger(conn, acct, "payment", "30")
    start = datetime(2026, 1, 15, 8, 0, tzinfo=UTC)
    await add_prepaid_service(conn, "isp", "internet", money("30"), start=start)
    assert (await run_prepaid_periods(conn, now=start - timedelta(seconds=1))).charged == 0
    done = await run_prepaid_periods(conn, now=start)
    assert (done.charged, done.blocked) == (1, 0)
    assert (await run_prepaid_periods(conn, now=start)).charged == 0
    assert (await run_prepaid_periods(conn, now=start + timedelta(days=20))).charged == 0
    # Three runs at once in the next period (three connections): one charge between them.
    conns = [await asyncpg.connect(dsn) for _ in range(3)]
    try:
        next_month = datetime(2026, 2, 15, 8, 0, tzinfo=UTC)
        runs = await asyncio.gather(*(run_prepaid_periods(c, now=next_month) for c in conns))
        assert sum(r.charged for r in runs) == 1
    finally:
        for c in conns:
            await c.close()
    charges = await conn.fetch(
        "SELECT amount, note FROM ledger_entries WHERE kind = 'service_charge' ORDER BY id"
    )
    assert [(c["amount"], c["note"]) for c in charges] == [
        (Decimal("-30"), "internet 2026-01-15 to 2026-02-15"),
        (Decimal("-30"), "internet 2026-02-15 to 2026-03-15"),
    ]


async def test_a_payment_settling_charges_does_not_deadlock_with_a_foreign_key_check(
    dsn: str,
) -> None:
    """A payment updates the balance, then settles the account's prepaid charges. Meanwhile
    another writer's foreign-key check holds KEY SHARE on the account and that writer then
    updates it (a period run charging the account's other service does exactly this). Locking
    the account FOR UPDATE in the settling step conflicted with KEY SHARE: a deadlock (CI saw
    it in the concurrent test below). FOR NO KEY UPDATE does not."""
    start = datetime(2026, 6, 1, tzinfo=UTC)
    setup = await asyncpg.connect(dsn)
    try:
        acct = await _account(setup, "sub")
        await add_prepaid_service(setup, "sub", "internet", money("10"), start=start)
        await run_prepaid_periods(setup, now=start + timedelta(hours=1))
        assert (
            await setup.fetchval("SELECT count(*) FROM prepaid_charges WHERE settled_at IS NULL")
            == 1
        )
    finally:
        await setup.close()
    writer, payer = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        tx = writer.transaction()
        await tx.start()
        await writer.execute("SELECT 1 FROM accounts WHERE id = $1 FOR KEY SHARE", acct)
        paying = asyncio.create_task(admin.add_ledger_entry(payer, "sub", "payment", money("20")))
        await asyncio.sleep(0.5)  # the payment has updated the balance and is settling
        await asyncio.wait_for(
            writer.execute("UPDATE accounts SET min_balance = min_balance WHERE id = $1", acct),
            15,
        )
        await tx.commit()
        await asyncio.wait_for(paying, 15)
        assert (
            await writer.fetchval("SELECT count(*) FROM prepaid_charges WHERE settled_at IS NULL")
            == 0
        )
    finally:
        await writer.close()
        await payer.close()


async def test_concurrent_runs_over_many_accounts_charge_each_period_once(dsn: str) -> None:
    """Runs at once with payments arriving: no deadlock, no period charged twice."""
    start = datetime(2026, 6, 1, tzinfo=UTC)
    setup = await asyncpg.connect(dsn)
    try:
        for n in range(40):
            acct = await _account(setup, f"sub{n:02d}")
            if n % 2:
                await _ledger(setup, acct, "payment", "5")
            # Two services per account, so one account's charges may fall to different runs.
            for service in ("internet", "tv"):
                await add_prepaid_service(setup, f"sub{n:02d}", service, money("10"), start=start)
    finally:
        await setup.close()
    conns = [await asyncpg.connect(dsn) for _ in range(5)]
    try:

        async def run(conn: asyncpg.Connection) -> int:
            done = await run_prepaid_periods(conn, now=start + timedelta(hours=1), batch_size=7)
            return done.charged

        async def pay(conn: asyncpg.Connection) -> int:
            for n in range(0, 40, 3):
                await admin.add_ledger_entry(conn, f"sub{n:02d}", "payment", money("20"))
            return 0

        results = await asyncio.wait_for(
            asyncio.gather(*(run(c) for c in conns[:4]), pay(conns[4])), 60
        )
        assert sum(results) == 80
        check = conns[0]
        assert await check.fetchval("SELECT count(*) FROM prepaid_charges") == 80
        # Whatever a busy moment left behind, the next run settles or blocks.
        await run_prepaid_periods(check, now=start + timedelta(hours=2))
        unsettled_active = await check.fetchval(
            """SELECT count(DISTINCT c.account_id) FROM prepaid_charges c
               JOIN accounts a ON a.id = c.account_id
               WHERE c.settled_at IS NULL AND a.status = 'active'"""
        )
        assert unsettled_active == 0
    finally:
        for c in conns:
            await c.close()


@pytest.mark.dates
async def test_an_unpaid_period_blocks_after_the_grace_and_a_payment_unblocks(
    conn: asyncpg.Connection,
) -> None:
    acct = await _account(conn, "late")
    await _ledger(conn, acct, "payment", "5")
    start = datetime(2026, 5, 1, tzinfo=UTC)
    await add_prepaid_service(
        conn, "late", "internet", money("20"), period_days=30, start=start, grace=timedelta(days=3)
    )

    async def status() -> tuple[str, str | None]:
        row = await conn.fetchrow("SELECT status, blocked_reason FROM accounts WHERE id = $1", acct)
        assert row is not None
        return row["status"], row["blocked_reason"]

    assert (await run_prepaid_periods(conn, now=start)).charged == 1  # balance -15: unpaid
    assert (await run_prepaid_periods(conn, now=start + timedelta(days=2))).blocked == 0
    assert await status() == ("active", None)
    assert (await run_prepaid_periods(conn, now=start + timedelta(days=3))).blocked == 1
    assert await status() == ("blocked", "prepaid_unpaid")
    snapshot = await store.snapshot_by_id(conn, acct)
    assert snapshot is not None and snapshot.status is AccountStatus.BLOCKED
    [service] = await list_prepaid_services(conn, "late")
    assert service.unpaid == money("20")

    await admin.add_ledger_entry(conn, "late", "payment", money("10"))  # -5: not yet
    assert await status() == ("blocked", "prepaid_unpaid")
    await admin.add_ledger_entry(conn, "late", "payment", money("5"))  # 0: covered, at once
    assert await status() == ("active", None)
    [service] = await list_prepaid_services(conn, "late")
    assert service.unpaid == 0


@pytest.mark.dates
async def test_a_payment_does_not_lift_an_operators_block(conn: asyncpg.Connection) -> None:
    acct = await _account(conn, "fraud")
    start = datetime(2026, 5, 1, tzinfo=UTC)
    await add_prepaid_service(conn, "fraud", "internet", money("20"), start=start)
    await run_prepaid_periods(conn, now=start)
    await run_prepaid_periods(conn, now=start + timedelta(hours=1))  # grace 0: blocked by ocs
    # An operator blocks the account for another reason: ocs's reason is cleared...
    await admin.update_account(conn, "fraud", admin.AccountSettings(status=AccountStatus.ACTIVE))
    await admin.update_account(conn, "fraud", admin.AccountSettings(status=AccountStatus.BLOCKED))
    await _ledger(conn, acct, "payment", "50")
    # ...so the payment settles the charge but the account stays blocked.
    assert await conn.fetchval("SELECT status FROM accounts WHERE id = $1", acct) == "blocked"
    [service] = await list_prepaid_services(conn, "fraud")
    assert service.unpaid == 0


@pytest.mark.dates
async def test_monthly_periods_follow_the_calendar_in_the_account_zone(
    conn: asyncpg.Connection,
) -> None:
    acct = await _account(conn, "zurich", time_zone="Europe/Zurich")
    await _ledger(conn, acct, "payment", "1000")
    start = datetime(2026, 1, 31, 10, 0, tzinfo=ZURICH)
    await add_prepaid_service(conn, "zurich", "tv", money("10"), start=start)
    # Nothing ran for two months: every missed period is charged once, in advance.
    done = await run_prepaid_periods(conn, now=datetime(2026, 4, 1, tzinfo=ZURICH))
    assert done.charged == 3
    starts = await conn.fetch("SELECT period_start FROM prepaid_charges ORDER BY period")
    assert [r["period_start"].astimezone(ZURICH) for r in starts] == [
        datetime(2026, 1, 31, 10, 0, tzinfo=ZURICH),
        datetime(2026, 2, 28, 10, 0, tzinfo=ZURICH),
        datetime(2026, 3, 31, 10, 0, tzinfo=ZURICH),  # after the change to summer time
    ]
    closed = await _account(conn, "closed")
    await add_prepaid_service(conn, "closed", "tv", money("10"), start=start)
    await admin.update_account(conn, "closed", admin.AccountSettings(status=AccountStatus.CLOSED))
    assert (await run_prepaid_periods(conn, now=datetime(2026, 4, 2, tzinfo=ZURICH))).charged == 0
    assert await conn.fetchval("SELECT balance FROM accounts WHERE id = $1", closed) == 0


@pytest.mark.dates
def test_prepaid_through_the_cli(dsn: str) -> None:
    run_ocs("account", "create", "home", dsn=dsn)
    run_ocs("payment", "add", "home", "10", dsn=dsn)
    added = run_ocs(
        "prepaid", "add", "home", "internet", "25", "--every", "30d", "--grace", "0d", dsn=dsn
    )
    assert added.code == 0, added.err
    ran = run_ocs("prepaid", "run", dsn=dsn)
    assert "charged 1 period; blocked 1, unblocked 0 accounts" in ran.out, ran.out
    shown = run_ocs("account", "show", "home", dsn=dsn).out
    assert "status              blocked" in shown
    assert "blocked because     a prepaid period is unpaid" in shown
    again = run_ocs("prepaid", "run", dsn=dsn)
    assert "charged 0 periods" in again.out
    run_ocs("payment", "add", "home", "15", dsn=dsn)
    assert "status              active" in run_ocs("account", "show", "home", dsn=dsn).out
    assert run_ocs("prepaid", "stop", "home", "internet", dsn=dsn).code == 0
    assert "internet (stopped)" in run_ocs("prepaid", "list", dsn=dsn).out


# --- webhooks ---------------------------------------------------------------------------------


@dataclass
class Hook:
    """A tiny webhook receiver: fails the first ``fail_first`` requests with 503."""

    fail_first: int = 0
    always_status: int | None = None
    delay_s: float = 0.0
    received: list[tuple[str, dict[str, str], bytes, int]] = field(default_factory=list)
    url: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)
        }
        body = await reader.readexactly(int(headers["content-length"]))
        await asyncio.sleep(self.delay_s)
        if self.always_status is not None:
            status = self.always_status
        else:
            status = 503 if len(self.received) < self.fail_first else 200
        self.received.append((lines[0], headers, body, status))
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    def delivered_keys(self) -> list[str]:
        return [h["idempotency-key"] for _, h, _, status in self.received if status == 200]


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    receiver = Hook()
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    receiver.url = f"http://127.0.0.1:{port}/hooks/ocs?src=test"
    try:
        yield receiver
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    created = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    assert created is not None
    try:
        yield created
    finally:
        await created.close()


async def _event(conn: asyncpg.Connection, n: int = 1) -> list[int]:
    rows = await conn.fetch(
        """INSERT INTO outbox (topic, payload)
           SELECT 'test', jsonb_build_object('n', g, 'amount', '1.50') FROM generate_series(1, $1) g
           RETURNING id""",
        n,
    )
    return [r["id"] for r in rows]


async def test_webhook_retries_with_backoff_then_delivers_exactly_once(
    hook: Hook, pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    hook.fail_first = 2
    [outbox_id] = await _event(conn)
    deliverer = WebhookDeliverer(
        pool, hook.url, timeout_s=2, backoff_initial_s=0.05, backoff_max_s=0.2, secret="s3cret"
    )
    deadline = asyncio.get_running_loop().time() + 10
    while not hook.delivered_keys():
        assert asyncio.get_running_loop().time() < deadline, hook.received
        await deliverer.run_once()
        await asyncio.sleep(0.02)
    assert [status for *_, status in hook.received] == [503, 503, 200]
    assert {h["idempotency-key"] for _, h, _, _ in hook.received} == {f"ocs-outbox-{outbox_id}"}
    request_line, headers, body, _ = hook.received[-1]
    assert request_line == "POST /hooks/ocs?src=test HTTP/1.1"
    document = json.loads(body)
    assert (document["id"], document["topic"]) == (outbox_id, "test")
    assert document["data"] == {"n": 1, "amount": "1.50"}
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert headers["x-ocs-signature"] == f"sha256={expected}"
    row = await conn.fetchrow("SELECT * FROM outbox WHERE id = $1", outbox_id)
    assert row is not None
    assert (row["attempts"], row["last_error"]) == (3, None)
    assert row["delivered_at"] is not None
    # Delivered rows are never sent again.
    assert await deliverer.run_once() == 0
    assert len(hook.received) == 3
    assert (deliverer.stats.delivered, deliverer.stats.failed_attempts) == (1, 2)


async def test_concurrent_deliverers_deliver_each_row_once(
    hook: Hook, dsn: str, conn: asyncpg.Connection
) -> None:
    hook.delay_s = 0.01
    ids = await _event(conn, 30)
    pools = [await asyncpg.create_pool(dsn, min_size=1, max_size=2) for _ in range(3)]
    try:
        deliverers = [WebhookDeliverer(p, hook.url, timeout_s=5) for p in pools]
        counts = await asyncio.gather(*(d.run_once() for d in deliverers))
        assert sum(counts) == 30
    finally:
        for p in pools:
            await p.close()
    assert sorted(hook.delivered_keys()) == sorted(f"ocs-outbox-{i}" for i in ids)
    assert await conn.fetchval("SELECT count(*) FROM outbox WHERE delivered_at IS NULL") == 0


async def test_failing_webhook_backs_off_and_is_abandoned_after_max_attempts(
    hook: Hook, pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    hook.always_status = 500
    [outbox_id] = await _event(conn)
    deliverer = WebhookDeliverer(
        pool, hook.url, backoff_initial_s=60, backoff_max_s=600, max_attempts=2
    )
    assert await deliverer.run_once() == 0
    row = await conn.fetchrow(
        "SELECT attempts, last_error, next_attempt_at - now() AS wait FROM outbox WHERE id = $1",
        outbox_id,
    )
    assert row is not None
    assert (row["attempts"], row["last_error"]) == (1, "HTTP status 500")
    assert timedelta(seconds=55) < row["wait"] <= timedelta(seconds=60)
    assert await deliverer.run_once() == 0  # not due yet: no request
    assert len(hook.received) == 1
    await conn.execute("UPDATE outbox SET next_attempt_at = now() WHERE id = $1", outbox_id)
    await deliverer.run_once()
    abandoned = await conn.fetchval("SELECT abandoned_at FROM outbox WHERE id = $1", outbox_id)
    assert abandoned is not None and deliverer.stats.abandoned == 1


async def test_unreachable_or_silent_webhook_is_a_failed_attempt(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    silent = await asyncio.start_server(lambda r, w: asyncio.sleep(30), "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        await _event(conn)
        deliverer = WebhookDeliverer(pool, f"http://127.0.0.1:{port}/", timeout_s=0.3)
        assert await deliverer.run_once() == 0
        error = await conn.fetchval("SELECT last_error FROM outbox")
        assert error == "no answer within 0.3 s"
    finally:
        silent.close()
    await conn.execute("UPDATE outbox SET next_attempt_at = now()")
    refused = WebhookDeliverer(pool, f"http://127.0.0.1:{port}/", timeout_s=2)
    assert await refused.run_once() == 0
    assert "ConnectionRefusedError" in await conn.fetchval("SELECT last_error FROM outbox")


async def test_run_forever_wakes_on_notify_and_stops(
    hook: Hook, pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    deliverer = WebhookDeliverer(pool, hook.url, poll_interval_s=60)
    stop = asyncio.Event()
    task = asyncio.create_task(deliverer.run_forever(stop))
    try:
        await asyncio.sleep(0.3)  # listening, nothing due: waiting up to 60 s
        # A threshold crossing written by another writer: NOTIFY wakes the deliverer.
        acct = await _account(conn, "a")
        await _ledger(conn, acct, "payment", "20")
        await admin.set_warning_thresholds(conn, "a", [money("10")], [])
        await _use(conn, acct, "15")
        deadline = asyncio.get_running_loop().time() + 5
        while not hook.delivered_keys():
            assert asyncio.get_running_loop().time() < deadline, "not woken by NOTIFY"
            await asyncio.sleep(0.05)
        document = json.loads(hook.received[0][2])
        assert document["topic"] == "low_funds"
        assert document["data"]["account"] == "a" and document["data"]["available"] == "5.00"
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


# --- CSV import -------------------------------------------------------------------------------

GOOD_CSV = """name,credit_limit,time_zone,e164,user_name,opening_balance,transfers
alice,100,Europe/Zurich,+41 44 000 00 01,alice,25.50,yes
bob,,,15550000002 | +1 555 000 0003,,,
carol,0,UTC,,carol,-3,no
"""


def test_csv_import_through_the_cli(dsn: str, tmp_path: Path) -> None:
    run_ocs("operator", "create", "migration", dsn=dsn)
    path = tmp_path / "accounts.csv"
    path.write_text(GOOD_CSV)
    done = run_ocs("import", "accounts", str(path), dsn=dsn, OCS_OPERATOR="migration")
    assert done.code == 0, done.err
    assert "imported 3 accounts" in done.out
    assert "checked" in done.err and "importing [####################] 100% 3/3" in done.err
    alice = run_ocs("account", "show", "alice", dsn=dsn).out
    assert "balance             25.50" in alice
    assert "credit limit        100.00 permanent" in alice
    assert "e164 41440000001" in alice and "user_name alice" in alice
    assert "transfers           allowed (yes)" in alice
    bob = run_ocs("account", "show", "bob", dsn=dsn).out
    assert "e164 15550000002, e164 15550000003" in bob
    assert "migration" in run_ocs("credit-limit", "history", "alice", dsn=dsn).out
    # The same file again: every name exists now; nothing more is written.
    again = run_ocs("import", "accounts", str(path), dsn=dsn, OCS_OPERATOR="migration")
    assert again.code == 1 and "line 2: an account named 'alice' exists already" in again.err


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        (
            "dave,12.3456789,,,,,",
            "line 4: credit_limit: '12.3456789' has more than 6 decimal places",
        ),
        ("dave,,Mars/Base,,,,", "line 4: time_zone: unknown time zone 'Mars/Base'"),
        ("dave,,,not-a-number,,,", "line 4: e164:"),
        ("alice,,,,,,", "line 4: account 'alice' is also on line 2"),
        ("dave,,,,,,maybe", "line 4: transfers: 'maybe' is not one of yes, no, class"),
        ("dave,1", "line 4: 2 fields, the header has 7"),
    ],
)
def test_csv_error_on_line_n_imports_nothing(
    dsn: str, tmp_path: Path, bad_line: str, message: str
) -> None:
    lines = GOOD_CSV.splitlines()
    path = tmp_path / "bad.csv"
    path.write_text("\n".join([*lines[:3], bad_line, lines[3]]) + "\n")
    result = run_ocs("import", "accounts", str(path), dsn=dsn)
    assert result.code == 1, (result.out, result.err)
    assert message in result.err and "nothing was imported" in result.err
    assert "Traceback" not in result.err
    assert "(0 accounts)" in run_ocs("account", "list", dsn=dsn).out


async def test_an_error_only_the_database_sees_rolls_back_everything(
    conn: asyncpg.Connection,
) -> None:
    await _account(conn, "existing")
    await admin.add_identity(conn, "existing", IdentityKind.E164, "15550000003")
    rows = account_import.parse_accounts_csv(GOOD_CSV.splitlines(keepends=True))
    seen: list[tuple[int, int]] = []
    with pytest.raises(account_import.ImportFailed) as failed:
        await account_import.import_accounts(
            conn, rows, progress=lambda done, total: seen.append((done, total))
        )
    assert "line 3: e164 '15550000003' belongs to account 'existing' already" in str(failed.value)
    assert seen == [(1, 3)]  # alice was written, then rolled back with the rest
    assert await conn.fetchval("SELECT count(*) FROM accounts") == 1
    assert await conn.fetchval("SELECT count(*) FROM ledger_entries") == 0
    # A dry run checks with the database too and writes nothing.
    await conn.execute("DELETE FROM account_identities")
    assert await account_import.import_accounts(conn, rows, dry_run=True) == 3
    assert await conn.fetchval("SELECT count(*) FROM accounts") == 1
