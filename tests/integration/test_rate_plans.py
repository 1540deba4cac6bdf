"""Rating by destination against a real PostgreSQL (issue 13): the schema's rules, deck import
through the CLI, ``ocs rates show``, and the daemon's per-plan reload on NOTIFY."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from support import run_ocs

from ocs.charging.rates import RatePlanCache
from ocs.core import parse_amount
from ocs.core.destinations import charge
from ocs.store import accounts as store
from ocs.store.rate_feed import RatePlanFeed

pytestmark = pytest.mark.integration

A2BILLING = """dialprefix;destination;rateinitial;initblock;billingblock;connectcharge;startdate
41;Switzerland;0.03;60;6;0;2027-01-01 00:00:00
4179;Switzerland Mobile;0.20;60;6;0.05;2027-01-01 00:00:00
44;United Kingdom;0.02;1;1;0;2027-01-01 00:00:00
447;United Kingdom Mobile;0.10;30;6;0;2027-01-01 00:00:00
"""


def ok(*args: str, dsn: str) -> str:
    result = run_ocs(*args, dsn=dsn)
    assert result.code == 0, (args, result.out, result.err)
    return result.out


def test_import_show_schedule_and_errors_through_the_cli(dsn: str, tmp_path: Path) -> None:
    ok("rate-plan", "create", "retail", "--currency", "chf", dsn=dsn)
    deck = tmp_path / "a2billing.csv"
    deck.write_text(A2BILLING)

    dry = ok("rates", "import", "retail", str(deck), "--dry-run", dsn=dsn)
    assert "dry run" in dry and "would add 4 rates" in dry and "nothing was written" in dry
    shown = run_ocs("rates", "show", "retail", "+41791234567", "--at", "2027-02-01", dsn=dsn)
    assert shown.code == 1 and "rate          none" in shown.out  # the dry run wrote nothing

    out = ok("rates", "import", "retail", str(deck), dsn=dsn)
    assert "added 4 rates, 0 unchanged" in out and "4 prefixes" in out
    again = ok("rates", "import", "retail", str(deck), dsn=dsn)
    assert "added 0 rates, 4 unchanged" in again  # importing twice is harmless

    shown = run_ocs(
        "rates", "show", "retail", "0041 79 123 45 67", "--at", "2027-02-01T12:00", dsn=dsn
    )
    assert shown.code == 0, shown.err
    assert "number        41791234567 (from 0041 79 123 45 67)" in shown.out
    assert "0.20 CHF per minute, billed 60/6, connection fee 0.05 CHF" in shown.out
    assert "prefix 4179 (Switzerland Mobile) in deck retail" in shown.out
    assert "since 2027-01-01T00:00:00+00:00" in shown.out
    shown = ok("rates", "show", "retail", "+41441234567", "--at", "2027-02-01", dsn=dsn)
    assert "prefix 41 (Switzerland)" in shown and "0.03 CHF per minute" in shown
    none = run_ocs("rates", "show", "retail", "+8613800000000", "--at", "2027-02-01", dsn=dsn)
    assert none.code == 1 and "none: no prefix of 8613800000000" in none.out

    # A scheduled change is a new row; the old price stays in force until then.
    change = tmp_path / "april.csv"
    change.write_text("prefix,price_per_minute,minimum,increment\n4179,0.18,60,6\n")
    ok("rates", "import", "retail", str(change), "--effective-from", "2027-04-01", dsn=dsn)
    march = ok("rates", "show", "retail", "+41791234567", "--at", "2027-03-31T23:59", dsn=dsn)
    assert "0.20 CHF per minute" in march
    assert "next change   2027-04-01T00:00:00+00:00" in march
    april = ok("rates", "show", "retail", "+41791234567", "--at", "2027-04-01", dsn=dsn)
    assert "0.18 CHF per minute" in april and "next change" not in april

    # Changing a price in place is refused, with the line.
    clash = tmp_path / "clash.csv"
    clash.write_text(
        "prefix,price_per_minute,effective_from\n44,0.02,2027-01-01\n41,0.99,2027-01-01\n"
    )
    refused = run_ocs("rates", "import", "retail", str(clash), dsn=dsn)
    assert refused.code == 2
    assert "line 3: prefix 41 already has a rate from 2027-01-01" in refused.err
    assert "nothing imported" in refused.err

    # Line-numbered errors, every one of them, and nothing written.
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "prefix,price_per_minute,increment,effective_from\n"
        "49,0.05,1,2027-01-01\n"
        "4x,0.05,1,\n"
        "33,-1,1,\n"
        "34,0.0000001,1,\n"
        "39,0.05,0,\n"
        "31,0.05,1,next week\n"
        "49,0.06,1,2027-01-01\n"
    )
    refused = run_ocs("rates", "import", "retail", str(bad), dsn=dsn)
    assert refused.code == 2
    for expected in (
        "line 3: prefix '4x' is not 0 to 15 digits",
        "line 4: price '-1' must be a number >= 0",
        "line 5: price '0.0000001' is not a whole number of micro-units",
        "line 6: increment '0' is not a whole number of seconds >= 1",
        "line 7: effective from 'next week' is not a date",
        "line 8: prefix 49 repeats line 2",
    ):
        assert expected in refused.err, refused.err
    assert "added" not in refused.out
    missing = tmp_path / "missing.csv"
    missing.write_text("code,destination\n41,CH\n")
    refused = run_ocs("rates", "import", "retail", str(missing), dsn=dsn)
    assert refused.code == 2 and "no price_per_minute column" in refused.err
    mapped = tmp_path / "mapped.csv"
    mapped.write_text("Dial Code,Tarif\n43,0.04\n")
    out = ok(
        "rates", "import", "retail", str(mapped), "--column", "price_per_minute=Tarif", dsn=dsn
    )
    assert "added 1 rates" in out

    listing = ok("rate-plan", "list", dsn=dsn)
    assert "retail (CHF)" in listing and "deck retail priority 10: 5 prefixes, 6 rates" in listing


def test_bands_through_the_cli_on_the_accounts_clock(dsn: str, tmp_path: Path) -> None:
    ok("rate-plan", "create", "banded", "--currency", "EUR", dsn=dsn)
    ok(
        "rates",
        "band",
        "banded",
        "peak",
        "--days",
        "mon-fri",
        "--from",
        "08:00",
        "--to",
        "20:00",
        dsn=dsn,
    )
    for args, message in [
        (("--days", "mon;tue", "--from", "08:00", "--to", "20:00"), "is not a weekday"),
        (("--days", "mon-fri", "--from", "25:00", "--to", "20:00"), "--from '25:00' is not a"),
        (("--days", "mon-fri", "--from", "08:00", "--to", "8pm"), "--to '8pm' is not a time"),
    ]:
        refused = run_ocs("rates", "band", "banded", "evening", *args, dsn=dsn)
        assert refused.code == 2 and message in refused.err, (args, refused.err)
    refused = run_ocs("rates", "band", "nope", "peak", "--days", "1", "--from", "01:00", "--to",
                      "02:00", dsn=dsn)  # fmt: skip
    assert refused.code == 1 and "no rate plan named 'nope'" in refused.err
    refused = run_ocs("rate-plan", "assign", "banded", dsn=dsn)
    assert refused.code == 2 and "name one of --account NAME or --class NAME" in refused.err
    deck = tmp_path / "banded.csv"
    deck.write_text(
        "prefix,price_per_minute,band,effective_from\n"
        "41,0.10,peak,2027-01-01\n"
        "41,0.04,,2027-01-01\n"
    )
    ok("rates", "import", "banded", str(deck), dsn=dsn)
    ok("account", "create", "zurich", "--time-zone", "Europe/Zurich", "--currency", "EUR", dsn=dsn)
    # 07:30 UTC on a Monday in March is 08:30 in Zurich: peak there, not in UTC.
    at = "2027-03-01T07:30+00:00"
    zurich = ok(
        "rates", "show", "banded", "41441234567", "--at", at, "--account", "zurich", dsn=dsn
    )
    assert (
        "0.10 EUR per minute" in zurich
        and "band          peak (Mon-Fri 08:00-20:00 local)" in zurich
    )
    utc = ok("rates", "show", "banded", "41441234567", "--at", at, dsn=dsn)
    assert "0.04 EUR per minute" in utc and "all day" in utc
    wrong = tmp_path / "wrong-band.csv"
    wrong.write_text("prefix,price_per_minute,band\n41,0.1,evening\n")
    refused = run_ocs("rates", "import", "banded", str(wrong), dsn=dsn)
    assert (
        refused.code == 2 and "line 2: band 'evening' is not a band of deck banded" in refused.err
    )


def test_an_account_cannot_use_a_plan_in_another_currency(dsn: str) -> None:
    ok("rate-plan", "create", "usd-plan", "--currency", "USD", dsn=dsn)
    ok("rate-plan", "create", "eur-plan", "--currency", "EUR", dsn=dsn)
    ok("account", "create", "alice", "--currency", "EUR", dsn=dsn)
    refused = run_ocs("rate-plan", "assign", "usd-plan", "--account", "alice", dsn=dsn)
    assert refused.code == 1
    assert (
        "account alice is in EUR and rate plan usd-plan is in USD: an account can only use a "
        "rate plan in its own currency" in refused.err
    )
    ok("rate-plan", "assign", "eur-plan", "--account", "alice", dsn=dsn)
    refused = run_ocs("account", "update", "alice", "--currency", "USD", dsn=dsn)
    assert refused.code == 1 and "is in USD and rate plan eur-plan is in EUR" in refused.err
    refused = run_ocs("account", "create", "bob", "--rate-plan", "eur-plan", dsn=dsn)
    assert refused.code == 1 and "account bob is in USD" in refused.err  # USD: the default
    bad = run_ocs("account", "create", "carol", "--currency", "EURO", dsn=dsn)
    assert bad.code == 1 and "not an ISO 4217 currency code" in bad.err
    bad = run_ocs("rate-plan", "create", "x", "--currency", "ABC", dsn=dsn)
    assert bad.code == 2 and "not an ISO 4217" in bad.err

    # A class's plan must suit the class's accounts that have none of their own.
    ok("account-class", "set", "resellers", "--transfers", "no", dsn=dsn)
    ok("account", "create", "dave", "--class", "resellers", dsn=dsn)  # USD
    refused = run_ocs("rate-plan", "assign", "eur-plan", "--class", "resellers", dsn=dsn)
    assert refused.code == 1
    assert "1 account(s) of class resellers are not (account dave is in USD)" in refused.err
    ok("rate-plan", "assign", "usd-plan", "--class", "resellers", dsn=dsn)
    # ... and an account joining the class must suit the class's plan.
    refused = run_ocs(
        "account", "update", "alice", "--rate-plan", "", "--class", "resellers", dsn=dsn
    )
    assert (
        refused.code == 1 and "usd-plan (the plan of its class resellers) is in USD" in refused.err
    )


async def test_rates_are_never_changed_in_place_and_currencies_are_fixed(
    conn: asyncpg.Connection,
) -> None:
    await conn.execute("INSERT INTO rate_plans (name, currency) VALUES ('p', 'EUR')")
    await conn.execute("INSERT INTO rate_decks (name, currency) VALUES ('d', 'EUR')")
    await conn.execute(
        "INSERT INTO rates (deck_id, prefix, price_per_minute, effective_from) "
        "SELECT id, '41', 0.1, now() FROM rate_decks"
    )
    with pytest.raises(asyncpg.PostgresError, match="rates are never changed") as info:
        await conn.execute("UPDATE rates SET price_per_minute = 0.2")
    assert info.value.sqlstate == "OC005"
    with pytest.raises(asyncpg.PostgresError, match="never changed"):
        await conn.execute("DELETE FROM rates")
    with pytest.raises(asyncpg.PostgresError, match="its currency cannot change"):
        await conn.execute("UPDATE rate_plans SET currency = 'USD'")
    await conn.execute("INSERT INTO rate_decks (name, currency) VALUES ('usd', 'USD')")
    with pytest.raises(
        asyncpg.PostgresError, match="rate deck usd is in USD and rate plan p in EUR"
    ):
        await conn.execute(
            "INSERT INTO rate_plan_decks (plan_id, deck_id, priority) "
            "SELECT p.id, d.id, 1 FROM rate_plans p, rate_decks d WHERE d.name = 'usd'"
        )
    with pytest.raises(asyncpg.PostgresError, match="prefix"):
        await conn.execute(
            "INSERT INTO rates (deck_id, prefix, price_per_minute, effective_from) "
            "SELECT id, '+41', 0.1, now() FROM rate_decks WHERE name = 'd'"
        )
    with pytest.raises(asyncpg.PostgresError, match="names band 'peak', which the deck does not"):
        await conn.execute(
            "INSERT INTO rates (deck_id, prefix, price_per_minute, band, effective_from) "
            "SELECT id, '44', 0.1, 'peak', now() FROM rate_decks WHERE name = 'd'"
        )


async def test_the_snapshot_carries_the_accounts_or_its_classs_plan(
    conn: asyncpg.Connection, dsn: str
) -> None:
    ok("rate-plan", "create", "own", "--currency", "USD", dsn=dsn)
    ok("rate-plan", "create", "inherited", "--currency", "USD", dsn=dsn)
    ok("account-class", "set", "retail", "--transfers", "no", dsn=dsn)
    ok("rate-plan", "assign", "inherited", "--class", "retail", dsn=dsn)
    ok("account", "create", "a1", "--class", "retail", dsn=dsn)
    ok("account", "create", "a2", "--class", "retail", "--rate-plan", "own", dsn=dsn)
    ok("account", "create", "a3", dsn=dsn)
    plans = {r["name"]: r["id"] for r in await conn.fetch("SELECT id, name FROM rate_plans")}
    expected = {"a1": plans["inherited"], "a2": plans["own"], "a3": None}
    for name, plan in expected.items():
        snapshot = await store.snapshot_by_name(conn, name)
        assert snapshot is not None and snapshot.rate_plan_id == plan, name
    entries, _ = await store.load_all(conn)  # the bulk loader agrees with the view
    assert {s.name: s.rate_plan_id for s in entries.values()} == expected
    # Changing the class's plan reaches its accounts' snapshots (and notifies them).
    await conn.add_listener("ocs_account_changed", lambda *a: None)
    ok("rate-plan", "assign", "own", "--class", "retail", dsn=dsn)
    snapshot = await store.snapshot_by_name(conn, "a1")
    assert snapshot is not None and snapshot.rate_plan_id == plans["own"]


async def test_the_daemons_cache_reloads_only_the_changed_plan_on_notify(
    dsn: str, tmp_path: Path
) -> None:
    ok("rate-plan", "create", "one", "--currency", "USD", dsn=dsn)
    ok("rate-plan", "create", "two", "--currency", "USD", dsn=dsn)
    deck = tmp_path / "d.csv"
    deck.write_text("prefix,price_per_minute,effective_from\n1,0.01,2027-01-01\n")
    ok("rates", "import", "one", str(deck), dsn=dsn)
    ok("rates", "import", "two", str(deck), dsn=dsn)
    ok("account", "create", "caller", "--rate-plan", "one", dsn=dsn)

    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    cache = RatePlanCache()
    feed = RatePlanFeed(pool=pool, dsn=dsn, cache=cache, poll_interval_s=3600)
    try:
        assert await feed.load_all() == 2
        task = asyncio.create_task(feed.run())
        await asyncio.wait_for(feed.listening.wait(), 10)
        await asyncio.sleep(0.1)  # the first poll found nothing to do
        before_two = cache.plan(cache.plan_ids()[1])
        async with pool.acquire() as conn:
            snapshot = await store.snapshot_by_name(conn, "caller")
        assert snapshot is not None
        started = datetime(2027, 2, 1, 12, tzinfo=UTC)
        admitted = cache.rate_for(snapshot, "12125551234", started)
        assert admitted is not None and admitted.prefix == "1"
        assert cache.rate_for(snapshot, "4420", started) is None  # no rate: NO_RATE

        # A new, more specific price scheduled mid-call, imported while the daemon runs.
        change = tmp_path / "change.csv"
        change.write_text("prefix,price_per_minute,effective_from\n1212,0.05,2027-02-01T12:05Z\n")
        ok("rates", "import", "one", str(change), dsn=dsn)
        for _ in range(200):
            if feed.reloads:
                break
            await asyncio.sleep(0.02)
        assert feed.reloads == 1  # plan one only
        assert cache.plan(cache.plan_ids()[1]) is before_two  # plan two untouched
        later = started + timedelta(minutes=10)
        assert cache.rate_for(snapshot, "12125551234", started + timedelta(minutes=4)) == admitted
        new = cache.rate_for(snapshot, "12125551234", later)
        assert new is not None and new.prefix == "1212"
        # The call admitted at 12:00 and lasting 10 minutes is charged the old price.
        assert charge(admitted.rate, 600) == parse_amount("0.10")
        assert charge(new.rate, 600) == parse_amount("0.50")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    finally:
        await pool.close()
