"""The cache's bulk load (``load_all``) gives what the per-account reads give (the view)."""

from __future__ import annotations

import asyncpg
import pytest

from ocs.core.identity import IdentityKind
from ocs.core.model import RateLimit
from ocs.store import accounts as store


@pytest.mark.dates
async def test_bulk_load_matches_the_view(conn: asyncpg.Connection) -> None:
    await conn.execute(
        """INSERT INTO tariffs (name, price_per_minute, billing_increment_s, minimum_s,
                                price_per_mb, connection_fee, price_per_event)
           VALUES ('t1', 0.06, 6, 60, 0.01, 0.10, 0.05), ('t2', 0, 1, 0, 0, 0, 0)"""
    )
    await conn.execute(
        """INSERT INTO accounts (name, status, credit_limit, min_balance, limit_basis,
                                 time_zone, max_sessions, max_setups_per_s, tariff_id, balance)
           VALUES ('plain', 'active', 0, 0, 'balance', 'UTC', NULL, NULL, NULL, 0),
                  ('postpaid', 'blocked', 100, -5.5, 'unbilled', 'Europe/Paris', 2, 3,
                   (SELECT id FROM tariffs WHERE name = 't1'), 12.345678),
                  ('percent', 'closed', 50, 0, 'balance', 'Asia/Tokyo', 0, NULL,
                   (SELECT id FROM tariffs WHERE name = 't2'), -3),
                  ('expired', 'active', 10, 0, 'balance', 'UTC', NULL, NULL, NULL, 1)"""
    )
    for name, amount, percent, until in (
        ("postpaid", 20, None, "now() + interval '1 day'"),
        ("percent", None, 12.5, "now() + interval '1 day'"),
    ):
        await conn.execute(
            f"SELECT ocs_set_temporary_credit_limit((SELECT id FROM accounts WHERE name = $1),"
            f" $2, $3, {until}, NULL, 'test', 'test')",
            name,
            amount,
            percent,
        )
    await conn.execute(
        """INSERT INTO account_identities (account_id, kind, value)
           SELECT id, 'user_name', name FROM accounts;
           INSERT INTO account_identities (account_id, kind, value)
           SELECT id, 'e164', '4930' || id FROM accounts WHERE name = 'postpaid'"""
    )

    await conn.execute(
        "UPDATE accounts SET rate_limit_up_kbps = 512, rate_limit_down_kbps = 4096 "
        "WHERE name IN ('plain', 'postpaid')"
    )
    await conn.execute(
        "UPDATE account_identities SET credential = 'cleartext$pw' WHERE value = 'plain'"
    )

    snapshots = [s async for batch in store.iter_snapshots(conn) for s in batch]
    identities = await store.all_identities(conn)
    entries, index = await store.load_all(conn, batch_size=2)

    assert entries == {s.account_id: s for s in snapshots}
    assert {s.account_id: s.tariff for s in snapshots} == {a: s.tariff for a, s in entries.items()}
    expected: dict[str, dict[str, int]] = {}
    for kind, value, account in identities:
        expected.setdefault(kind, {})[value] = account
    assert {k: v for k, v in index.items() if v} == expected
    increases = {s.name: s.temporary_increase for s in entries.values()}
    assert increases["postpaid"] is not None and increases["postpaid"].amount == 20_000_000
    assert increases["percent"] is not None and increases["percent"].percent_bp == 1250
    assert increases["plain"] is None
    limits = {s.name: s.rate_limit for s in entries.values()}
    assert limits["plain"] == RateLimit(up_kbps=512, down_kbps=4096)
    assert limits["plain"] is limits["postpaid"]  # shared, like tariffs
    assert limits["percent"] is None
    assert await store.load_credentials(conn) == {("user_name", "plain"): "cleartext$pw"}
    assert await store.credential_of(conn, IdentityKind.USER_NAME, "plain") == "cleartext$pw"
    assert await store.credential_of(conn, IdentityKind.USER_NAME, "percent") is None
    # The identity shares the account's name string and id.
    for snapshot in entries.values():
        assert index["user_name"][snapshot.name] is snapshot.account_id
