"""The demo data set: one account per credit rule (foundation issue, DESIGN §1).

Loading is idempotent: each account is put back into its described state (settings, balance,
temporary increase) however often it runs, so a demo can be reset after it was used.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import asyncpg

from ocs.admin import accounts as store
from ocs.admin import limits, operators, tariffs
from ocs.core.identity import IdentityKind
from ocs.core.model import AccountStatus
from ocs.core.money import parse_amount, to_decimal

DEMO_TARIFF = "demo"
DEMO_NOTE = "demo load"
# The seed 004 helpdesk (10 % of the permanent limit for at most 30 days) with Pete's money
# limits (10.00 a transaction, 200.00 a day): `make run` gives the account API a token for it.
DEMO_OPERATOR = "helpdesk"
DEMO_OPERATOR_SETTINGS = operators.OperatorSettings(
    max_temp_increase_percent=Decimal("10"),
    max_temp_duration=timedelta(days=30),
    transaction_credit_limit=parse_amount("10.00"),
    daily_credit_limit=parse_amount("200.00"),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoAccount:
    name: str
    e164: str
    balance: str
    credit_limit: str = "0"
    min_balance: str = "0"
    status: AccountStatus = AccountStatus.ACTIVE
    temporary: str | None = None  # amount of a temporary increase
    temporary_days: int = 0  # > 0: ends in N days; < 0: ended N days ago
    expected: str = ""


DEMO_ACCOUNTS: tuple[DemoAccount, ...] = (
    DemoAccount(
        name="prepaid-ok", e164="15550000001", balance="1.00", expected="admitted, 1000 s grant"
    ),
    DemoAccount(
        name="prepaid-empty",
        e164="15550000002",
        balance="0.00",
        expected="refused, insufficient credit",
    ),
    DemoAccount(
        name="postpaid",
        e164="15550000003",
        balance="-50.00",
        credit_limit="100.00",
        expected="admitted",
    ),
    DemoAccount(
        name="buffer", e164="15550000004", balance="4.00", credit_limit="-5.00", expected="refused"
    ),
    DemoAccount(
        name="min-balance",
        e164="15550000005",
        balance="3.00",
        min_balance="5.00",
        expected="refused",
    ),
    DemoAccount(
        name="temp-increase",
        e164="15550000006",
        balance="-200.00",
        credit_limit="200.00",
        temporary="20.00",
        temporary_days=7,
        expected="admitted",
    ),
    DemoAccount(
        name="temp-expired",
        e164="15550000007",
        balance="-200.00",
        credit_limit="200.00",
        temporary="20.00",
        temporary_days=-1,
        expected="refused",
    ),
    DemoAccount(
        name="blocked",
        e164="15550000008",
        balance="100.00",
        status=AccountStatus.BLOCKED,
        expected="refused, blocked",
    ),
)


async def load_demo(conn: asyncpg.Connection) -> list[str]:
    """Create or reset the demo tariff and accounts; returns the account names."""
    async with conn.transaction():
        await tariffs.set_tariff(
            conn,
            DEMO_TARIFF,
            tariffs.TariffSettings(
                price_per_minute=parse_amount("0.06"),
                billing_increment_s=1,
                minimum_s=0,
                price_per_mb=0,
                connection_fee=0,
                price_per_event=0,
            ),
        )
        now: datetime = await conn.fetchval("SELECT now()")
        for demo in DEMO_ACCOUNTS:
            await _load_one(conn, demo, now)
        if await conn.fetchval("SELECT id FROM operators WHERE name = $1", DEMO_OPERATOR):
            await operators.update_operator(conn, DEMO_OPERATOR, DEMO_OPERATOR_SETTINGS)
        else:
            await operators.create_operator(conn, DEMO_OPERATOR, DEMO_OPERATOR_SETTINGS)
    return [d.name for d in DEMO_ACCOUNTS]


async def _load_one(conn: asyncpg.Connection, demo: DemoAccount, now: datetime) -> None:
    settings = store.AccountSettings(
        status=demo.status,
        min_balance=parse_amount(demo.min_balance),
        tariff=DEMO_TARIFF,
    )
    existing = await conn.fetchrow(
        "SELECT id, (credit_limit * 1000000)::bigint AS credit_limit FROM accounts WHERE name = $1",
        demo.name,
    )
    limit = parse_amount(demo.credit_limit)
    if existing is None:
        acct = await store.create_account(conn, demo.name, settings, changed_by=DEMO_NOTE)
    else:
        acct = existing["id"]
        await store.update_account(conn, demo.name, settings, changed_by=DEMO_NOTE)
    current_limit = await conn.fetchval(
        "SELECT (credit_limit * 1000000)::bigint FROM accounts WHERE id = $1", acct
    )
    if current_limit != limit:
        await limits.set_credit_limit(conn, acct, limit, changed_by=DEMO_NOTE, reason=DEMO_NOTE)

    balance = await conn.fetchval(
        "SELECT (balance * 1000000)::bigint FROM accounts WHERE id = $1", acct
    )
    difference = parse_amount(demo.balance) - balance
    if difference:
        await conn.execute(
            """INSERT INTO ledger_entries (account_id, kind, amount, note)
               VALUES ($1, 'adjustment', $2, $3)""",
            acct,
            to_decimal(difference),
            DEMO_NOTE,
        )

    await conn.execute(
        "UPDATE temporary_credit_limits SET revoked_at = now() "
        "WHERE account_id = $1 AND revoked_at IS NULL",
        acct,
    )
    if demo.temporary is not None:
        amount = parse_amount(demo.temporary)
        if demo.temporary_days > 0:
            await limits.set_temporary_credit_limit(
                conn,
                acct,
                valid_until=now + timedelta(days=demo.temporary_days),
                amount=amount,
                changed_by=DEMO_NOTE,
                reason=DEMO_NOTE,
            )
        else:
            # An increase that already ended: written directly, as history would have it.
            until = now + timedelta(days=demo.temporary_days)
            await conn.execute(
                """INSERT INTO temporary_credit_limits
                       (account_id, amount, valid_from, valid_until, changed_by, reason)
                   VALUES ($1, $2, $3, $4, $5, $5)""",
                acct,
                to_decimal(amount),
                until - timedelta(days=7),
                until,
                DEMO_NOTE,
            )

    await store.add_identity(conn, demo.name, IdentityKind.USER_NAME, demo.name)
    await store.add_identity(conn, demo.name, IdentityKind.E164, demo.e164)
