"""Operators and their limits (DESIGN §2, seed 004) against a real PostgreSQL.

The rules live in the database, so most tests call the store (as any writer would) and a few
write raw SQL to show that a writer who bypasses ocs is bound too. The seed scenarios are here
step by step: John Doe and EasyCall with the helpdesk and the CRM, and Pete's day.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from support import midday_zone, run_ocs

from ocs import admin
from ocs.admin import operators as operator_store
from ocs.admin.operators import OperatorSettings
from ocs.core import parse_amount
from ocs.store import accounts as store

pytestmark = pytest.mark.integration

LOS_ANGELES = ZoneInfo("America/Los_Angeles")


def money(text: str) -> int:
    return parse_amount(text)


async def _operators(conn: asyncpg.Connection) -> None:
    """The seed's helpdesk (Roger: 10 %, 30 days) and CRM (Andrew: 20 %, 60 days)."""
    await operator_store.create_operator(
        conn,
        "helpdesk",
        OperatorSettings(
            max_temp_increase_percent=Decimal("10"), max_temp_duration=timedelta(days=30)
        ),
    )
    await operator_store.create_operator(
        conn,
        "crm",
        OperatorSettings(
            max_temp_increase_percent=Decimal("20"), max_temp_duration=timedelta(days=60)
        ),
    )


async def _account(conn: asyncpg.Connection, name: str, limit: str = "0", **kw: object) -> int:
    settings = admin.AccountSettings(credit_limit=money(limit), **kw)  # type: ignore[arg-type]
    return await admin.create_account(conn, name, settings)


# --- temporary credit limits: John Doe and EasyCall -------------------------------------------


@pytest.mark.dates
async def test_helpdesk_may_give_john_doe_20_for_7_days(conn: asyncpg.Connection) -> None:
    await _operators(conn)
    john = await _account(conn, "john-doe", "200")
    await conn.execute(
        "INSERT INTO ledger_entries (account_id, kind, amount) VALUES ($1, 'adjustment', -200)",
        john,
    )
    now = await admin.database_now(conn)
    await admin.set_temporary_credit_limit(
        conn,
        john,
        valid_until=now + timedelta(days=7),
        amount=money("20"),
        operator="helpdesk",
        changed_by="roger",
        reason="payment on its way",
    )
    assert await admin.available_credit_in_database(conn, john) == money("20")
    assert await admin.available_credit_in_database(
        conn, john, now + timedelta(days=7, seconds=1)
    ) == money("0")
    history = await admin.credit_limit_history(conn, john)
    assert [(r["operator"], r["changed_by"], r["temporary"]) for r in history][-1] == (
        "helpdesk",
        "roger",
        True,
    )


@pytest.mark.dates
async def test_helpdesk_may_not_give_easycall_200_for_40_days_the_crm_may(
    conn: asyncpg.Connection,
) -> None:
    await _operators(conn)
    easycall = await _account(conn, "easycall", "1000")
    now = await admin.database_now(conn)
    forty_days = now + timedelta(days=40)

    with pytest.raises(admin.Refused) as refused:
        await admin.set_temporary_credit_limit(
            conn, easycall, valid_until=forty_days, amount=money("200"), operator="helpdesk"
        )
    message = str(refused.value)
    assert "operator helpdesk may not give account easycall this temporary increase" in message
    # Both reasons, each with what was asked and what is allowed.
    assert (
        "the amount 200.00 is more than the 100.00 allowed "
        "(10% of the permanent limit 1000.00)" in message
    )
    assert "the duration 40 days is longer than the 30 days allowed" in message
    assert "an operator with a larger allowance can give it" in message

    # Each rule alone is a refusal naming only that rule.
    with pytest.raises(admin.Refused, match=r"amount 200\.00") as amount_only:
        await admin.set_temporary_credit_limit(
            conn,
            easycall,
            valid_until=now + timedelta(days=7),
            amount=money("200"),
            operator="helpdesk",
        )
    assert "duration" not in str(amount_only.value)
    with pytest.raises(admin.Refused, match="duration 40 days") as duration_only:
        await admin.set_temporary_credit_limit(
            conn, easycall, valid_until=forty_days, amount=money("50"), operator="helpdesk"
        )
    assert "amount" not in str(duration_only.value)
    # Nothing was written by the refusals.
    assert await admin.credit_limit_history(conn, easycall) == [
        r for r in await admin.credit_limit_history(conn, easycall) if not r["temporary"]
    ]

    # The CRM (20 %, 60 days) may; exactly at the helpdesk's limits the helpdesk may too.
    await admin.set_temporary_credit_limit(
        conn, easycall, valid_until=forty_days, amount=money("200"), operator="crm"
    )
    snapshot = await store.snapshot_by_id(conn, easycall)
    assert snapshot is not None and snapshot.temporary_increase is not None
    assert snapshot.temporary_increase.amount == money("200")
    await admin.set_temporary_credit_limit(
        conn,
        easycall,
        valid_until=now + timedelta(days=30),
        percent=Decimal("10"),
        operator="helpdesk",
    )
    history = await admin.credit_limit_history(conn, easycall)
    assert [r["operator"] for r in history if r["temporary"]] == ["crm", "helpdesk"]


@pytest.mark.dates
async def test_operator_with_both_caps_and_no_caps(conn: asyncpg.Connection) -> None:
    await operator_store.create_operator(
        conn,
        "both",
        OperatorSettings(
            max_temp_increase_amount=money("50"), max_temp_increase_percent=Decimal("10")
        ),
    )
    await operator_store.create_operator(conn, "owner", OperatorSettings())
    await operator_store.create_operator(
        conn, "nobody", OperatorSettings(max_temp_increase_amount=0)
    )
    big = await _account(conn, "big", "10000")
    until = await admin.database_now(conn) + timedelta(days=365)
    # 10 % of 10000 is 1000 but the amount cap of 50 is smaller: both apply.
    with pytest.raises(admin.Refused, match=r"more than the 50.00 allowed \(50.00 and 10%"):
        await admin.set_temporary_credit_limit(
            conn, big, valid_until=until, amount=money("60"), operator="both"
        )
    await admin.set_temporary_credit_limit(
        conn, big, valid_until=until, amount=money("50"), operator="both"
    )
    await admin.set_temporary_credit_limit(
        conn, big, valid_until=until, amount=money("5000"), operator="owner"
    )
    with pytest.raises(admin.Refused, match=r"more than the 0\.00 allowed"):
        await admin.set_temporary_credit_limit(
            conn, big, valid_until=until, amount=money("1"), operator="nobody"
        )


@pytest.mark.dates
async def test_percentage_increase_needs_a_positive_permanent_limit(
    conn: asyncpg.Connection,
) -> None:
    prepaid = await _account(conn, "prepaid")
    until = await admin.database_now(conn) + timedelta(days=1)
    with pytest.raises(admin.StoreError, match="needs a positive permanent credit limit"):
        await admin.set_temporary_credit_limit(
            conn, prepaid, valid_until=until, percent=Decimal("10")
        )
    with pytest.raises(admin.NotFound, match="no operator named 'ghost'"):
        await admin.set_temporary_credit_limit(
            conn, prepaid, valid_until=until, amount=1, operator="ghost"
        )


async def test_old_call_signature_of_the_sql_function_still_works(
    conn: asyncpg.Connection,
) -> None:
    """Other writers call ocs_set_temporary_credit_limit with the seven arguments of 0001."""
    acct = await _account(conn, "legacy", "100")
    new_id = await conn.fetchval(
        "SELECT ocs_set_temporary_credit_limit($1, 10, NULL, now() + interval '1 day', "
        "NULL, 'billing-system', 'legacy call')",
        acct,
    )
    assert new_id is not None


# --- daily and per-transaction credit/refund limits: Pete -----------------------------------


async def _pete(conn: asyncpg.Connection) -> None:
    await operator_store.create_operator(
        conn,
        "pete",
        OperatorSettings(
            time_zone="America/Los_Angeles",
            daily_credit_limit=money("200"),
            transaction_credit_limit=money("10"),
        ),
    )


@pytest.mark.dates
async def test_pete_step_by_step_including_after_midnight(conn: asyncpg.Connection) -> None:
    await _pete(conn)
    for n in range(21):
        await _account(conn, f"customer-{n:02d}")
    # 20:00 in Los Angeles is already the next day in UTC: the day must be Pete's.
    evening = datetime(2026, 3, 10, 20, 0, tzinfo=LOS_ANGELES)
    assert evening.astimezone(UTC).date().day == 11

    async def used(at: datetime = evening) -> int:
        return (await operator_store.get_operator(conn, "pete", at)).used_today

    async def give(kind: str, account: str, amount: str, at: datetime = evening) -> None:
        await admin.add_ledger_entry(conn, account, kind, money(amount), operator="pete", now=at)

    # 1. A 15 credit fails: more than 10 per transaction.
    with pytest.raises(admin.Refused, match=r"at most 10.00 per transaction; this credit is 15.00"):
        await give("credit", "customer-00", "15")
    assert await used() == 0
    # 2. A 3 credit succeeds: usage 3.
    await give("credit", "customer-00", "3")
    assert await used() == money("3")
    # 3. A 2 refund succeeds: usage 5.
    await give("refund", "customer-00", "-2")
    assert await used() == money("5")
    # 4. A 20 manual payment succeeds and does not count (nor is it capped per transaction).
    await give("payment", "customer-01", "20")
    assert await used() == money("5")
    # 5. A 20 credit card charge succeeds and does not count.
    await give("card_charge", "customer-01", "20")
    assert await used() == money("5")
    # 6. Nineteen 10 credits to nineteen customers succeed: usage 195.
    for n in range(2, 21):
        await give("credit", f"customer-{n:02d}", "10")
    assert await used() == money("195")
    # 7. The next 10 credit fails: 205 would exceed 200. Nothing is written.
    with pytest.raises(admin.Refused) as refused:
        await give("credit", "customer-00", "10")
    assert (
        "operator pete has used 195.00 of the daily credit/refund limit 200.00 on 2026-03-10 "
        "(America/Los_Angeles); this credit of 10.00 would take it to 205.00" in str(refused.value)
    )
    assert "starts again at midnight in the operator's time zone" in str(refused.value)
    assert await used() == money("195")
    balance = await conn.fetchval("SELECT balance FROM accounts WHERE name = 'customer-00'")
    assert balance == Decimal("1")
    # 8. After midnight in Los Angeles (still the same UTC day) the usage starts again.
    after_midnight = datetime(2026, 3, 11, 0, 30, tzinfo=LOS_ANGELES)
    assert after_midnight.astimezone(UTC).date() == evening.astimezone(UTC).date()
    await give("credit", "customer-00", "10", after_midnight)
    assert await used(after_midnight) == money("10")
    assert await used() == money("195")  # the previous day keeps its sum


async def test_promotional_credit_counts_and_raw_sql_writers_are_bound(
    conn: asyncpg.Connection,
) -> None:
    await _pete(conn)
    acct = await _account(conn, "c")
    pete = await admin.operator_id(conn, "pete")
    now = await admin.database_now(conn)  # one instant: the day cannot change in between
    await admin.add_ledger_entry(
        conn, "c", "promotional_credit", money("10"), operator="pete", now=now
    )
    assert (await operator_store.get_operator(conn, "pete", now)).used_today == money("10")
    # A writer that bypasses ocs (the customer's billing system, psql) is bound as well.
    with pytest.raises(asyncpg.PostgresError, match=r"at most 10\.00 per transaction") as raw:
        await conn.execute(
            "INSERT INTO ledger_entries (account_id, kind, amount, operator_id) "
            "VALUES ($1, 'credit', 15, $2)",
            acct,
            pete,
        )
    assert raw.value.sqlstate == "OC001"  # type: ignore[attr-defined]


async def test_a_repeated_external_id_is_not_counted_twice(conn: asyncpg.Connection) -> None:
    await _pete(conn)
    await _account(conn, "c")
    now = await admin.database_now(conn)
    for _ in range(3):
        await admin.add_ledger_entry(
            conn, "c", "credit", money("10"), operator="pete", external_id="ticket-7", now=now
        )
    assert (await operator_store.get_operator(conn, "pete", now)).used_today == money("10")


@pytest.mark.dates
async def test_concurrent_credits_cannot_exceed_a_daily_limit(dsn: str) -> None:
    """Several sessions credit at once, as one operator and as two: each operator's day stays
    within its limit, however the statements interleave."""
    setup = await asyncpg.connect(dsn)
    try:
        for name in ("alice", "bob"):
            await operator_store.create_operator(
                setup,
                name,
                OperatorSettings(
                    daily_credit_limit=money("50"), transaction_credit_limit=money("10")
                ),
            )
        for n in range(24):
            await _account(setup, f"c{n}")
        # Every credit at one instant: a run that crosses midnight must not start a new day.
        now = await admin.database_now(setup)
    finally:
        await setup.close()

    conns = [await asyncpg.connect(dsn) for _ in range(24)]
    try:

        async def credit(n: int) -> bool:
            operator = "alice" if n % 2 else "bob"
            try:
                await admin.add_ledger_entry(
                    conns[n], f"c{n}", "credit", money("10"), operator=operator, now=now
                )
            except admin.Refused:
                return False
            return True

        results = await asyncio.gather(*(credit(n) for n in range(24)))
        assert sum(results) == 10  # 5 each: 12 tried per operator, 50 / 10 allowed
        check = conns[0]
        for name in ("alice", "bob"):
            assert (await operator_store.get_operator(check, name, now)).used_today == money("50")
        total = await check.fetchval("SELECT sum(balance) FROM accounts")
        assert total == Decimal("100")
    finally:
        for c in conns:
            await c.close()


# --- the CLI ----------------------------------------------------------------------------------


def test_operator_cli_and_the_seed_scenarios(dsn: str) -> None:
    created = run_ocs(
        "operator",
        "create",
        "helpdesk",
        "--max-temp-increase",
        "10%",
        "--max-temp-duration",
        "30d",
        "--time-zone",
        "Europe/Zurich",
        dsn=dsn,
    )
    assert created.code == 0, created.err
    assert "max temporary increase     10% of the permanent limit" in created.out
    assert "max temporary duration     30 days" in created.out
    assert (
        run_ocs(
            "operator",
            "create",
            "crm",
            "--max-temp-increase",
            "20%",
            "--max-temp-duration",
            "60d",
            dsn=dsn,
        ).code
        == 0
    )
    assert run_ocs("account", "create", "easycall", "--credit-limit", "1000", dsn=dsn).code == 0

    refused = run_ocs(
        "credit-limit",
        "set",
        "easycall",
        "200",
        "--temporary",
        "--until",
        "+40d",
        "--operator",
        "helpdesk",
        dsn=dsn,
    )
    assert refused.code == 1
    assert "the amount 200.00 is more than the 100.00 allowed" in refused.err
    assert "the duration 40 days is longer than the 30 days allowed" in refused.err
    assert "Traceback" not in refused.err

    # OCS_OPERATOR names the operator for scripts.
    granted = run_ocs(
        "credit-limit",
        "set",
        "easycall",
        "200",
        "--temporary",
        "--until",
        "+40d",
        "--reason",
        "reliable customer",
        dsn=dsn,
        OCS_OPERATOR="crm",
    )
    assert granted.code == 0, granted.err
    assert "note:" not in granted.err
    history = run_ocs("credit-limit", "history", "easycall", dsn=dsn).out
    header, _, *lines = history.splitlines()
    assert header.split()[:3] == ["when", "(UTC)", "operator"]
    assert "crm" in lines[-1] and "reliable customer" in lines[-1]
    # The permanent limit set at creation named no operator: "-" and a note said so.
    assert lines[0].split()[2] == "-"

    listing = run_ocs("operator", "list", dsn=dsn).out
    assert "helpdesk" in listing and "crm" in listing and "(2 operators)" in listing


async def test_pete_through_the_cli(dsn: str, conn: asyncpg.Connection) -> None:
    # Pete's day in a zone where it is midday now: the CLI reads the clock itself, and the
    # scenario must not cross a midnight whenever the suite runs.
    zone = midday_zone(await admin.database_now(conn))
    assert (
        run_ocs(
            "operator",
            "create",
            "pete",
            "--daily-limit",
            "200",
            "--transaction-limit",
            "10",
            "--time-zone",
            zone,
            dsn=dsn,
        ).code
        == 0
    )
    run_ocs("account", "create", "c1", dsn=dsn)

    unnamed = run_ocs("credit", "add", "c1", "3", dsn=dsn)
    assert unnamed.code == 2
    assert "--operator NAME, or set OCS_OPERATOR" in unnamed.err

    too_big = run_ocs("credit", "add", "c1", "15", "--operator", "pete", dsn=dsn)
    assert too_big.code == 1
    assert "operator pete may credit or refund at most 10.00 per transaction" in too_big.err

    ok = run_ocs("credit", "add", "c1", "3", dsn=dsn, OCS_OPERATOR="pete")
    assert ok.code == 0, ok.err
    assert "recorded credit 3.00 to c1 by pete" in ok.out and "balance now 3.00" in ok.out
    refund = run_ocs("refund", "add", "c1", "2", "--operator", "pete", dsn=dsn)
    assert "recorded refund 2.00 from c1 by pete" in refund.out and "balance now 1.00" in refund.out
    paid = run_ocs("payment", "add", "c1", "20", "--operator", "pete", dsn=dsn)
    assert paid.code == 0 and "note:" not in paid.err
    promo = run_ocs("credit", "add", "c1", "1", "--promotional", "--operator", "pete", dsn=dsn)
    assert "recorded promotional credit 1.00" in promo.out

    shown = run_ocs("operator", "show", "pete", dsn=dsn).out
    assert "per transaction limit      10.00" in shown
    assert f"used 6.00, 194.00 left; resets at midnight {zone}" in shown

    ghost = run_ocs("credit", "add", "c1", "1", "--operator", "ghost", dsn=dsn)
    assert ghost.code == 1 and "no operator named 'ghost'" in ghost.err


def test_changes_without_an_operator_are_noted_as_the_owners(dsn: str) -> None:
    run_ocs("account", "create", "a", dsn=dsn)
    paid = run_ocs("payment", "add", "a", "5", dsn=dsn)
    assert paid.code == 0
    assert "names no operator (--operator NAME or OCS_OPERATOR)" in paid.err


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["operator", "create", "x", "--time-zone", "Mars/Base"], 1, "unknown time zone"),
        (["operator", "create", "x", "--max-temp-duration", "soon"], 2, "is not a duration"),
        (["operator", "create", "x", "--max-temp-increase", "ten"], 2, "is not an amount"),
        (["operator", "create", "x", "--daily-limit", "-5"], 1, "cannot be negative"),
        (["operator", "show", "nobody"], 1, "no operator named 'nobody'"),
        (["refund", "add", "a", "-2", "--operator", "p"], 2, "positive amount"),
    ],
)
def test_operator_cli_errors(dsn: str, args: list[str], code: int, message: str) -> None:
    run_ocs("account", "create", "a", dsn=dsn)
    run_ocs("operator", "create", "p", dsn=dsn)
    result = run_ocs(*args, dsn=dsn)
    assert (result.code, message in result.err) == (code, True), (result.out, result.err)
    assert "Traceback" not in result.err


def test_operator_update_sets_and_clears_limits(dsn: str) -> None:
    run_ocs("operator", "create", "p", "--daily-limit", "100", dsn=dsn)
    updated = run_ocs(
        "operator",
        "update",
        "p",
        "--daily-limit",
        "none",
        "--transaction-limit",
        "5",
        "--max-temp-increase",
        "50",
        "--max-temp-increase",
        "5%",
        dsn=dsn,
    )
    assert updated.code == 0, updated.err
    assert "daily credit/refund limit  no cap" in updated.out
    assert "per transaction limit      5.00" in updated.out
    assert "max temporary increase     50.00 and 5% of the permanent limit" in updated.out
    duplicate = run_ocs("operator", "create", "p", dsn=dsn)
    assert duplicate.code == 1 and "exists already" in duplicate.err
