"""Load the FreeRADIUS baseline's data set into an ocs database, for the RADIUS benchmark.

Accounts ``4178`` + 7 digits, i = 1..N (default 10,000), each with its User-Name identity, the
same rules as ``../shared/baseline/freeradius-baseline/schema.sql``:

- i % 10 == 0: exhausted, balance -5.00                          -> Access-Reject
- i % 10 == 5: balance -10.00, credit limit 20.00                -> Access-Accept
- i % 97 == 0 (and not the above): blocked                       -> Access-Reject
- otherwise: balance (100 + i * 7919 % 99900) / 100, no limit    -> Access-Accept

No tariff (free time): like the baseline, a decision is "credit available > 0", and the
admission's credit reservation is 0, so a long run does not turn accepts into rejects.

``--charged``: for the usage benchmarks instead (``bench/diameter_load.py --used-s``), give
every bench account the tariff ``bench-charged`` (0.01 a minute) and 100,000.00 more credit, so
each usage record charges its account (balance update, announcement to every daemon process),
as in production, and a long run does not exhaust them. Run it once on a database; it adds the
credit each time.
Plain SQL (three set-based statements in one transaction), using the daemon's own config to
find the database (embedded or DSN) and apply its migrations first:

    .venv/bin/python bench/seed_accounts.py --config /tmp/x/ocs.toml [--accounts 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from ocs.config import load_config
from ocs.store.database import open_database

PATTERN = "4178%07d"

CREATE_ACCOUNTS = """
INSERT INTO accounts (name, status, credit_limit)
SELECT '4178' || lpad(i::text, 7, '0'),
       CASE WHEN i % 97 = 0 AND i % 10 NOT IN (0, 5) THEN 'blocked' ELSE 'active' END,
       CASE WHEN i % 10 = 5 THEN 20 ELSE 0 END
FROM generate_series(1, $1::int) AS i
ON CONFLICT (name) DO NOTHING
RETURNING id
"""

ADD_IDENTITIES = """
INSERT INTO account_identities (account_id, kind, value)
SELECT a.id, 'user_name', a.name
FROM accounts a
WHERE a.id = ANY($1::bigint[])
"""

SET_BALANCES = """
INSERT INTO ledger_entries (account_id, kind, amount, note)
SELECT a.id, 'adjustment',
       CASE WHEN i % 10 = 0 THEN -5.00
            WHEN i % 10 = 5 THEN -10.00
            ELSE (100 + (i * 7919) % 99900) / 100.0 END,
       'bench seed'
FROM accounts a, LATERAL (SELECT substr(a.name, 5)::int AS i) n
WHERE a.id = ANY($1::bigint[])
"""


CHARGED_TARIFF = """
INSERT INTO tariffs (name, price_per_minute) VALUES ('bench-charged', 0.01)
ON CONFLICT (name) DO NOTHING
"""
CHARGED_ACCOUNTS = """
UPDATE accounts SET tariff_id = (SELECT id FROM tariffs WHERE name = 'bench-charged')
WHERE name ~ '^4178[0-9]{7}$'
"""
CHARGED_CREDIT = """
INSERT INTO ledger_entries (account_id, kind, amount, note)
SELECT id, 'adjustment', 100000, 'bench seed: credit for charged usage'
FROM accounts WHERE name ~ '^4178[0-9]{7}$'
"""


async def seed(config_path: str, accounts: int, charged: bool = False) -> None:
    config = load_config(config_path)
    started = time.monotonic()
    async with open_database(config.database, apply_migrations=True) as db:
        async with db.pool.acquire() as conn, conn.transaction():
            ids = [r["id"] for r in await conn.fetch(CREATE_ACCOUNTS, accounts)]
            if ids:
                await conn.execute(ADD_IDENTITIES, ids)
                await conn.execute(SET_BALANCES, ids)
            if charged:
                await conn.execute(CHARGED_TARIFF)
                await conn.execute(CHARGED_ACCOUNTS)
                await conn.execute(CHARGED_CREDIT)
        async with db.pool.acquire() as conn:
            summary = await conn.fetchrow(
                """SELECT count(*) AS n,
                          count(*) FILTER (WHERE status = 'active'
                                AND balance + credit_limit - min_balance > 0) AS with_credit
                   FROM accounts WHERE name ~ '^4178[0-9]{7}$'"""
            )
    print(
        f"seeded {len(ids)} new accounts{' (charged)' if charged else ''}; "
        f"{summary['n']} bench accounts, "
        f"{summary['with_credit']} with credit ({time.monotonic() - started:.1f} s)"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="the ocsd config file (database section)")
    p.add_argument("--accounts", type=int, default=10_000)
    p.add_argument(
        "--charged",
        action="store_true",
        help="a priced tariff and more credit for every bench account (usage benchmarks)",
    )
    args = p.parse_args()
    if not 1 <= args.accounts <= 9_999_999:
        p.error("--accounts must be 1..9999999")
    asyncio.run(seed(args.config, args.accounts, args.charged))
    return 0


if __name__ == "__main__":
    sys.exit(main())
