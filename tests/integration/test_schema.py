"""The schema against a real PostgreSQL: migrations, triggers, constraints, the snapshot view."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from ocs import admin
from ocs.admin.demo import DEMO_ACCOUNTS, load_demo
from ocs.charging.pipeline import UsageReport
from ocs.core import LimitBasis, SessionRequest, decide, parse_amount
from ocs.core.identity import IdentityKind, normalize_identity
from ocs.core.ledger import Counting, Report, ReportKind
from ocs.core.model import GrantLimits, Tariff, Usage
from ocs.store import accounts as store
from ocs.store.migrate import MigrationError, available_migrations, migrate
from ocs.store.source import PostgresAccounts

pytestmark = pytest.mark.integration


async def test_migrations_are_idempotent(conn: asyncpg.Connection) -> None:
    assert await migrate(conn) == []  # the template database is migrated already
    versions = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
    assert [r["version"] for r in versions] == [m.version for m in available_migrations()]


async def test_a_changed_migration_is_refused(conn: asyncpg.Connection) -> None:
    await conn.execute("UPDATE schema_migrations SET checksum = 'x' WHERE version = 1")
    with pytest.raises(MigrationError, match="was changed after it was applied"):
        await migrate(conn)


async def test_two_migrators_at_once_apply_each_file_once(dsn: str) -> None:
    conns = [await asyncpg.connect(dsn) for _ in range(3)]
    try:
        for c in conns:
            await c.execute("DROP TABLE IF EXISTS schema_migrations")
        # Re-applying 0001 on an existing schema would fail loudly; only the first may run it.
        await conns[0].execute(
            "DROP SCHEMA public CASCADE; CREATE SCHEMA public; GRANT ALL ON SCHEMA public TO public"
        )
        results = await asyncio.gather(*(migrate(c) for c in conns))
        assert sorted(len(r) for r in results) == [0, 0, len(available_migrations())]
    finally:
        for c in conns:
            await c.close()


async def _account(conn: asyncpg.Connection, name: str = "a", **settings: object) -> int:
    return await admin.create_account(conn, name, admin.AccountSettings(**settings))  # type: ignore[arg-type]


async def test_balance_is_kept_on_the_account_row_by_the_ledger(conn: asyncpg.Connection) -> None:
    acct = await _account(conn)
    for kind, amount in [("payment", "10"), ("refund", "-2.5"), ("credit", "0.000001")]:
        await conn.execute(
            "INSERT INTO ledger_entries (account_id, kind, amount) VALUES ($1, $2, $3)",
            acct,
            kind,
            Decimal(amount),
        )
    snap = await store.snapshot_by_id(conn, acct)
    assert snap is not None
    assert snap.balance == parse_amount("7.500001")


@pytest.mark.parametrize(
    ("kind", "amount"),
    [("payment", "-1"), ("refund", "1"), ("transfer_out", "5"), ("credit", "0"), ("bogus", "1")],
)
async def test_ledger_sign_must_match_its_kind(
    conn: asyncpg.Connection, kind: str, amount: str
) -> None:
    acct = await _account(conn)
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute(
            "INSERT INTO ledger_entries (account_id, kind, amount) VALUES ($1, $2, $3)",
            acct,
            kind,
            Decimal(amount),
        )


async def test_ledger_and_usage_are_append_only(conn: asyncpg.Connection) -> None:
    acct = await _account(conn)
    await conn.execute(
        "INSERT INTO ledger_entries (account_id, kind, amount) VALUES ($1, 'payment', 5)", acct
    )
    await conn.execute(
        """INSERT INTO usage_records (account_id, idempotency_key, source, amount)
           VALUES ($1, 'k1', 'test', 1)""",
        acct,
    )
    for table in ("ledger_entries", "usage_records"):
        with pytest.raises(asyncpg.RestrictViolationError, match="never changed or deleted"):
            await conn.execute(f"UPDATE {table} SET amount = 0")
        with pytest.raises(asyncpg.RestrictViolationError):
            await conn.execute(f"DELETE FROM {table}")


async def test_usage_is_idempotent_by_key(conn: asyncpg.Connection) -> None:
    acct = await _account(conn)
    insert = """INSERT INTO usage_records (account_id, idempotency_key, source, seconds, amount)
                VALUES ($1, 'nas1/sess1/stop', 'radius', 60, 0.06)
                ON CONFLICT (idempotency_key) DO NOTHING"""
    await conn.execute(insert, acct)
    await conn.execute(insert, acct)
    snap = await store.snapshot_by_id(conn, acct)
    assert snap is not None
    assert snap.balance == parse_amount("-0.06")


@pytest.mark.dates
async def test_unbilled_follows_the_month_in_the_account_time_zone(
    conn: asyncpg.Connection,
) -> None:
    acct = await _account(
        conn,
        credit_limit=parse_amount("500"),
        limit_basis=LimitBasis.UNBILLED,
        time_zone="Europe/Zurich",
    )

    async def use(amount: str, at: datetime) -> None:
        await conn.execute(
            """INSERT INTO usage_records (account_id, idempotency_key, source, amount, occurred_at)
               VALUES ($1, $2, 'test', $3, $4)""",
            acct,
            f"k{at.isoformat()}",
            Decimal(amount),
            at,
        )

    await use("400", datetime(2026, 11, 10, tzinfo=UTC))
    await use("80", datetime(2026, 11, 30, 22, 0, tzinfo=UTC))  # 23:00 in Zurich: November
    snap = await store.snapshot_by_id(conn, acct)
    assert snap is not None
    assert (snap.unbilled, snap.unbilled_period) == (parse_amount("480"), date(2026, 11, 1))
    nov = datetime(2026, 11, 30, 22, 30, tzinfo=UTC)
    assert decide(snap, SessionRequest(), nov, GrantLimits()).available == parse_amount("20")
    # 23:30 UTC on the 30th is December in Zurich: the period restarts from 0 without a reload.
    dec = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)
    assert decide(snap, SessionRequest(), dec, GrantLimits()).available == parse_amount("500")
    # The first December usage starts the new period's sum; late November usage lowers only the
    # balance.
    await use("5", datetime(2026, 11, 30, 23, 30, tzinfo=UTC))
    await use("7", datetime(2026, 11, 29, tzinfo=UTC))
    snap = await store.snapshot_by_id(conn, acct)
    assert snap is not None
    assert (snap.unbilled, snap.unbilled_period) == (parse_amount("5"), date(2026, 12, 1))
    assert snap.balance == parse_amount("-492")


async def test_one_statement_of_usage_gives_the_figures_of_one_record_at_a_time(
    conn: asyncpg.Connection,
) -> None:
    """0060's statement-level trigger: the records of one INSERT (the usage writer's batch),
    in any order and across months in the account's zone, change the balance, the unbilled
    amount and its period exactly as inserting them one by one does; records that charge
    nothing change nothing; one announcement per account."""
    rows = [  # (amount, instant): November, December, late November, zero, December again
        ("400.000001", datetime(2026, 11, 10, tzinfo=UTC)),
        ("5", datetime(2026, 11, 30, 23, 30, tzinfo=UTC)),  # December in Zurich
        ("7.5", datetime(2026, 11, 29, tzinfo=UTC)),
        ("0", datetime(2026, 12, 2, tzinfo=UTC)),
        ("0.000002", datetime(2026, 12, 3, tzinfo=UTC)),
    ]
    settings = {
        "credit_limit": parse_amount("500"),
        "limit_basis": LimitBasis.UNBILLED,
        "time_zone": "Europe/Zurich",
    }
    one_by_one = await _account(conn, "one-by-one", **settings)
    together = await _account(conn, "together", **settings)
    earlier = await _account(conn, "earlier", **settings)
    insert = """INSERT INTO usage_records (account_id, idempotency_key, source, amount, occurred_at)
                SELECT $1, $2 || n, 'test', a, t
                FROM unnest($3::numeric[], $4::timestamptz[]) WITH ORDINALITY AS u(a, t, n)"""
    for n, (amount, at) in enumerate(rows):
        await conn.execute(insert, one_by_one, f"one{n}-", [Decimal(amount)], [at])
    # The same records in one statement, and in another order for a third account that had
    # usage of a later month already (its period must not go back).
    announced: list[str] = []
    heard = asyncio.Event()

    def hear(*args: object) -> None:
        announced.append(str(args[3]))
        heard.set()

    await conn.add_listener("ocs_account_changed", hear)
    await conn.execute(
        insert, together, "tog-", [Decimal(a) for a, _ in rows], [t for _, t in rows]
    )
    await asyncio.wait_for(heard.wait(), 5)
    await asyncio.sleep(0.3)  # any further announcement of the statement arrives with it
    await conn.remove_listener("ocs_account_changed", hear)
    assert [p.split()[0] for p in announced] == [str(together)]
    await conn.execute(
        insert, earlier, "early-", [Decimal("3")], [datetime(2027, 1, 5, tzinfo=UTC)]
    )
    await conn.execute(
        insert,
        earlier,
        "late-",
        [Decimal(a) for a, _ in reversed(rows)],
        [t for _, t in reversed(rows)],
    )
    first = await store.snapshot_by_id(conn, one_by_one)
    second = await store.snapshot_by_id(conn, together)
    third = await store.snapshot_by_id(conn, earlier)
    assert first is not None and second is not None and third is not None
    expected_balance = -sum(parse_amount(a) for a, _ in rows)
    assert first.balance == second.balance == expected_balance
    assert (first.unbilled, first.unbilled_period) == (parse_amount("5.000002"), date(2026, 12, 1))
    assert (second.unbilled, second.unbilled_period) == (first.unbilled, first.unbilled_period)
    assert third.balance == expected_balance - parse_amount("3")
    assert (third.unbilled, third.unbilled_period) == (parse_amount("3"), date(2027, 1, 1))


@pytest.mark.dates
async def test_one_active_temporary_increase_and_the_history(conn: asyncpg.Connection) -> None:
    acct = await _account(conn, credit_limit=parse_amount("200"))
    now = await admin.database_now(conn)
    await admin.set_temporary_credit_limit(
        conn, acct, valid_until=now + timedelta(days=7), amount=parse_amount("20"), reason="a"
    )
    await admin.set_temporary_credit_limit(
        conn, acct, valid_until=now + timedelta(days=3), percent=Decimal("10"), reason="b"
    )
    active = await conn.fetchval(
        "SELECT count(*) FROM temporary_credit_limits WHERE account_id = $1 AND revoked_at IS NULL",
        acct,
    )
    assert active == 1
    snap = await store.snapshot_by_id(conn, acct)
    assert snap is not None and snap.temporary_increase is not None
    assert snap.temporary_increase.percent_bp == 1000
    await admin.set_credit_limit(conn, acct, parse_amount("300"), changed_by="alice", reason="c")
    history = await admin.credit_limit_history(conn, acct)
    assert [(r["temporary"], r["reason"]) for r in history] == [
        (False, None),  # the limit given at creation
        (True, "a"),
        (True, "b"),
        (False, "c"),
    ]
    assert (history[-1]["old_limit"], history[-1]["new_limit"]) == (
        parse_amount("200"),
        parse_amount("300"),
    )
    assert history[-1]["changed_by"] == "alice"
    with pytest.raises(admin.StoreError, match="must end in the future"):
        await admin.set_temporary_credit_limit(
            conn, acct, valid_until=now - timedelta(days=1), amount=1
        )


async def test_unknown_time_zone_is_refused(conn: asyncpg.Connection) -> None:
    with pytest.raises(admin.StoreError, match="unknown time zone"):
        await _account(conn, time_zone="Mars/Olympus")
    with pytest.raises(asyncpg.CheckViolationError, match="unknown time zone"):
        await conn.execute("INSERT INTO accounts (name, time_zone) VALUES ('x', 'Mars/Olympus')")


async def test_identities_are_unique_and_normalised(conn: asyncpg.Connection) -> None:
    await _account(conn, "alice")
    await _account(conn, "bob")
    assert await admin.add_identity(conn, "alice", IdentityKind.E164, "+1 555 000 0009") == (
        "15550000009"
    )
    # Adding it again to the same account is a no-op; to another account, a conflict.
    await admin.add_identity(conn, "alice", IdentityKind.E164, "15550000009")
    with pytest.raises(admin.Conflict, match="belongs to account 'alice'"):
        await admin.add_identity(conn, "bob", IdentityKind.E164, "15550000009")
    assert await store.account_id_by_identity(conn, IdentityKind.E164, "+15550000009") is not None


async def test_payment_external_id_is_idempotent(conn: asyncpg.Connection) -> None:
    await _account(conn, "alice")
    await _account(conn, "bob")
    first = await admin.add_ledger_entry(conn, "alice", "payment", 5_000_000, external_id="p1")
    again = await admin.add_ledger_entry(conn, "alice", "payment", 5_000_000, external_id="p1")
    assert (first.created, again.created, again.entry_id) == (True, False, first.entry_id)
    assert again.balance == 5_000_000
    with pytest.raises(admin.Conflict, match="already used for a different entry"):
        await admin.add_ledger_entry(conn, "bob", "payment", 5_000_000, external_id="p1")
    with pytest.raises(admin.Conflict):
        await admin.add_ledger_entry(conn, "alice", "payment", 6_000_000, external_id="p1")


async def test_changes_are_announced(conn: asyncpg.Connection, dsn: str) -> None:
    acct = await _account(conn)
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(dsn)
    try:
        await listener.add_listener("ocs_account_changed", lambda *a: heard.put_nowait(a[3]))
        await admin.add_ledger_entry(conn, "a", "payment", 1_000_000)
        # "<account id> <epoch seconds of the change>" (0011), for the lag metric
        account, stamp = (await asyncio.wait_for(heard.get(), 5)).split()
        assert account == str(acct)
        assert abs(float(stamp) - time.time()) < 60
        await admin.set_credit_limit(conn, acct, 5_000_000)
        assert (await asyncio.wait_for(heard.get(), 5)).split()[0] == str(acct)
    finally:
        await listener.close()


@pytest.mark.dates
async def test_demo_accounts_decide_as_the_table_says(conn: asyncpg.Connection) -> None:
    await load_demo(conn)
    await load_demo(conn)  # idempotent: the same state again
    now = datetime.now(UTC)
    expected = {
        "prepaid-ok": (True, 1000, None),
        "prepaid-empty": (False, 0, "insufficient_credit"),
        "postpaid": (True, 3600, None),
        "buffer": (False, 0, "insufficient_credit"),
        "min-balance": (False, 0, "insufficient_credit"),
        "temp-increase": (True, 3600, None),
        "temp-expired": (False, 0, "insufficient_credit"),
        "blocked": (False, 0, "blocked"),
    }
    assert {d.name for d in DEMO_ACCOUNTS} == set(expected)
    for demo in DEMO_ACCOUNTS:
        snap = await store.snapshot_by_name(conn, demo.name)
        assert snap is not None
        assert snap.balance == parse_amount(demo.balance)
        decision = decide(snap, SessionRequest(), now, GrantLimits())
        reason = decision.reason.value if decision.reason else None
        assert (decision.admitted, decision.granted_units, reason) == expected[demo.name], demo.name
        by_e164 = await store.account_id_by_identity(conn, IdentityKind.E164, demo.e164)
        by_user = await store.account_id_by_identity(conn, IdentityKind.USER_NAME, demo.name)
        assert by_e164 == by_user == snap.account_id


async def test_concurrent_usage_on_one_account_neither_deadlocks_nor_double_charges(
    dsn: str,
) -> None:
    """Eight writers (each its own pool, as eight daemons would be) report ten cumulative
    figures each for their own session of one account, at once."""
    setup = await asyncpg.connect(dsn)
    try:
        account = await admin.create_account(
            setup, "busy", admin.AccountSettings(credit_limit=parse_amount("1000"))
        )
    finally:
        await setup.close()
    pools = [await asyncpg.create_pool(dsn, min_size=1, max_size=2) for _ in range(8)]
    writers = [PostgresAccounts(pool, writers=1, owner=f"w{n}") for n, pool in enumerate(pools)]
    tariff = Tariff(price_per_minute=parse_amount("0.06"))  # 10 s cost 0.01

    async def report(db: PostgresAccounts, n: int) -> None:
        for round_ in range(10):
            seconds = (round_ + 1) * 10
            await db.record(
                UsageReport(
                    source="diameter",
                    origin="pcef",
                    session_key=f"s{n}",
                    entry=Report(
                        kind=ReportKind.FINAL if round_ == 9 else ReportKind.USAGE,
                        account_id=account,
                        uid=f"s{n}/{round_}",
                        report_key=f"n={round_}",
                        received_at=datetime.now(UTC),
                        time_zone=UTC,
                        tariff=tariff,
                        usage=Usage(seconds=seconds),
                        counting=Counting.CUMULATIVE,
                    ),
                )
            )

    try:
        await asyncio.gather(*(report(db, n) for n, db in enumerate(writers)))
        balance = await pools[0].fetchval("SELECT balance FROM accounts WHERE id = $1", account)
    finally:
        for pool in pools:
            await pool.close()
    # Eight sessions, each charged its cumulative 0.10 exactly once.
    assert balance == Decimal("-0.80")


async def test_sip_uri_identities_are_renormalised_by_0051(conn: asyncpg.Connection) -> None:
    """0051 rewrites stored SIP URIs to the normal form ocs.core.identity gives now; a value
    whose new form is taken stays as it was. Run again on old-style rows (the migration has
    already run on this database), it is the same step."""
    await conn.execute("INSERT INTO accounts (name) VALUES ('a'), ('b')")
    old = [
        ("a", "sip:Alice@Example.COM"),
        ("a", "sip:15550000001@127.0.0.1:5060;transport=udp"),
        ("a", "<sips:bob@Example.com:5061>"),
        ("a", "sip:carol@[2001:DB8::1]:5060"),
        ("a", "tel:+15550000001;phone-context=x"),
        ("b", "dave@example.com"),  # the new form of the next one: taken
        ("a", "sip:dave@Example.com"),
    ]
    for account, value in old:
        await conn.execute(
            "INSERT INTO account_identities (account_id, kind, value) "
            "SELECT id, 'sip_uri', $2 FROM accounts WHERE name = $1",
            account,
            value,
        )
    (migration,) = [m for m in available_migrations() if m.version == 51]
    await conn.execute(migration.sql)
    rows = await conn.fetch(
        "SELECT a.name, i.value FROM account_identities i JOIN accounts a ON a.id = i.account_id "
        "ORDER BY i.id"
    )
    got = [(r["name"], r["value"]) for r in rows]
    expected = [
        (account, normalize_identity(IdentityKind.SIP_URI, value)) for account, value in old[:-1]
    ]
    assert got == [*expected, ("a", "sip:dave@Example.com")]


async def test_a_session_is_queued_for_its_cdr_once_the_first_time_it_closes(
    conn: asyncpg.Connection,
) -> None:
    """0064's statement triggers queue what 0030's row triggers did: every session closed by an
    INSERT or an UPDATE, once, with the instant it first closed; several in one statement."""
    acct = await _account(conn)
    first = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    later = first + timedelta(hours=1)
    rows = await conn.fetch(
        "INSERT INTO sessions (source, origin, session_key, account_id, closed_at) "
        "VALUES ('radius', 'nas', 'a', $1, NULL), ('radius', 'nas', 'b', $1, NULL), "
        "('radius', 'nas', 'c', $1, $2), ('radius', 'nas', 'd', $1, $2) RETURNING session_key, id",
        acct,
        first,
    )
    ids = {r["session_key"]: r["id"] for r in rows}

    async def queued() -> dict[str, datetime]:
        found = await conn.fetch("SELECT session_id, closed_at FROM cdr_outbox")
        names = {v: k for k, v in ids.items()}
        return {names[r["session_id"]]: r["closed_at"] for r in found}

    assert await queued() == {"c": first, "d": first}
    # An update that closes nothing queues nothing.
    await conn.execute("UPDATE sessions SET seconds = 5 WHERE account_id = $1", acct)
    assert await queued() == {"c": first, "d": first}
    # One statement closes a and b and moves c's close: a and b are queued, c stays as queued.
    await conn.execute(
        "UPDATE sessions SET closed_at = $2 "
        "WHERE account_id = $1 AND session_key IN ('a', 'b', 'c')",
        acct,
        later,
    )
    assert await queued() == {"a": later, "b": later, "c": first, "d": first}
    # Reopened and closed again: still one entry, the first close.
    await conn.execute("UPDATE sessions SET closed_at = NULL WHERE session_key = 'a'")
    await conn.execute("UPDATE sessions SET closed_at = $1 WHERE session_key = 'a'", first)
    assert await queued() == {"a": later, "b": later, "c": first, "d": first}
    assert await conn.fetchval("SELECT count(*) FROM cdr_outbox") == 4
