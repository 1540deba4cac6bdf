"""Money in and out that is not usage: payments, card charges, credits, promotional credits,
refunds, and transfers between subscribers.

Rules of this file:
- Amounts are micro-units, signed as their effect on the balance.
- An ``external_id`` makes a call idempotent: the same id again returns the first entry
  unchanged; the same id for another account, kind or amount is ``Conflict``.
- The operators' daily and per-transaction limits and the transfer rules are enforced by
  PostgreSQL; their refusals are ``Refused`` with the database's text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ocs.admin.lookup import account_id, operator_id
from ocs.admin.parsing import InvalidRequest
from ocs.core.money import to_decimal
from ocs.store.errors import Conflict, Executor, database_rules

# Kinds a person or a billing system records (the others are written by the database itself).
LEDGER_KINDS = ("payment", "card_charge", "credit", "promotional_credit", "refund")


@dataclass(frozen=True, slots=True)
class LedgerResult:
    entry_id: int
    created: bool  # False: the external id was recorded before; nothing changed
    balance: int


async def add_ledger_entry(
    conn: asyncpg.Connection,
    account_name: str,
    kind: str,
    amount: int,
    *,
    external_id: str | None = None,
    note: str | None = None,
    operator: str | None = None,
    changed_by: str | None = None,
    now: datetime | None = None,
) -> LedgerResult:
    """Record money in or out (``amount`` in micro-units, signed as its effect on the balance).

    With ``external_id`` the call is idempotent: the same id again returns the first entry
    unchanged; the same id for a different account or amount is refused. Credits,
    promotional credits and refunds by an ``operator`` count towards the operator's daily and
    per-transaction limits, which the database enforces (``Refused``). ``now`` (default: the
    database's) dates the entry, and so decides the operator's day."""
    async with conn.transaction():
        acct = await account_id(conn, account_name)
        op = await operator_id(conn, operator)
        with database_rules():
            row = await conn.fetchrow(
                """INSERT INTO ledger_entries
                       (account_id, kind, amount, external_id, note, operator_id, changed_by,
                        created_at)
                   VALUES ($1, $2, $3, $4, $5, $6, COALESCE($7, current_user),
                           COALESCE($8, now()))
                   ON CONFLICT (external_id) DO NOTHING RETURNING id""",
                acct,
                kind,
                to_decimal(amount),
                external_id,
                note,
                op,
                changed_by,
                now,
            )
        created = row is not None
        if row is None:
            row = await conn.fetchrow(
                """SELECT id, account_id, kind, (amount * 1000000)::bigint AS amount
                   FROM ledger_entries WHERE external_id = $1""",
                external_id,
            )
            assert row is not None
            if (row["account_id"], row["kind"], row["amount"]) != (acct, kind, amount):
                raise Conflict(
                    f"external id {external_id!r} was already used for a different entry "
                    f"(entry {row['id']})"
                )
        balance: int = await conn.fetchval(
            "SELECT (balance * 1000000)::bigint FROM accounts WHERE id = $1", acct
        )
    return LedgerResult(entry_id=row["id"], created=created, balance=balance)


@dataclass(frozen=True, slots=True)
class TransferResult:
    transfer_id: int
    from_balance: int
    to_balance: int


async def transfer(
    conn: asyncpg.Connection,
    from_account: str,
    to_account: str,
    amount: int,
    *,
    operator: str | None = None,
    changed_by: str | None = None,
    note: str | None = None,
    external_id: str | None = None,
    now: datetime | None = None,
) -> TransferResult:
    """Move ``amount`` micro-units between two subscribers in one transaction (``ocs_transfer``):
    both must allow transfers and the sender must have the available credit, else ``Refused``.
    The same ``external_id`` again returns the first transfer unchanged."""
    async with conn.transaction():
        source = await account_id(conn, from_account)
        target = await account_id(conn, to_account)
        op = await operator_id(conn, operator)
        with database_rules():
            transfer_id: int = await conn.fetchval(
                "SELECT ocs_transfer($1, $2, $3, $4, $5, $6, $7, $8)",
                source,
                target,
                to_decimal(amount),
                op,
                changed_by,
                note,
                external_id,
                now,
            )
        balances = {
            r["id"]: r["balance"]
            for r in await conn.fetch(
                "SELECT id, (balance * 1000000)::bigint AS balance FROM accounts "
                "WHERE id = ANY($1::bigint[])",
                [source, target],
            )
        }
    return TransferResult(transfer_id, balances[source], balances[target])


async def record_payment(
    conn: asyncpg.Connection,
    account_name: str,
    amount: int,
    *,
    kind: str = "payment",
    external_id: str | None = None,
    note: str | None = None,
    operator: str | None = None,
    changed_by: str | None = None,
) -> LedgerResult:
    """A payment or card charge of ``amount`` (> 0) micro-units; it does not count towards an
    operator's daily credit/refund limit."""
    if kind not in ("payment", "card_charge"):
        raise InvalidRequest(f"a payment is of kind payment or card_charge, not {kind!r}")
    if amount <= 0:
        raise InvalidRequest("a payment must be a positive amount (a refund is its own request)")
    return await add_ledger_entry(
        conn,
        account_name,
        kind,
        amount,
        external_id=external_id,
        note=note,
        operator=operator,
        changed_by=changed_by,
    )


async def record_credit(
    conn: asyncpg.Connection,
    account_name: str,
    amount: int,
    *,
    operator: str,
    promotional: bool = False,
    external_id: str | None = None,
    note: str | None = None,
    changed_by: str | None = None,
) -> LedgerResult:
    """A manual (or promotional) credit of ``amount`` (> 0) micro-units by ``operator``; it
    counts towards the operator's per-transaction and daily limits."""
    if amount <= 0:
        raise InvalidRequest("a credit must be a positive amount")
    return await add_ledger_entry(
        conn,
        account_name,
        "promotional_credit" if promotional else "credit",
        amount,
        external_id=external_id,
        note=note,
        operator=operator,
        changed_by=changed_by,
    )


async def record_refund(
    conn: asyncpg.Connection,
    account_name: str,
    amount: int,
    *,
    operator: str,
    external_id: str | None = None,
    note: str | None = None,
    changed_by: str | None = None,
) -> LedgerResult:
    """A refund: ``amount`` (> 0) micro-units taken off the balance by ``operator``; it counts
    towards the operator's limits like a credit."""
    if amount <= 0:
        raise InvalidRequest("give the refund as a positive amount; it is taken off the balance")
    return await add_ledger_entry(
        conn,
        account_name,
        "refund",
        -amount,
        external_id=external_id,
        note=note,
        operator=operator,
        changed_by=changed_by,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerEntry:
    id: int
    kind: str
    amount: int  # micro-units, signed as the effect on the balance
    external_id: str | None
    operator: str | None
    changed_by: str | None
    note: str | None
    transfer_id: int | None
    created_at: datetime


async def ledger_entries(
    db: Executor, account_name: str, *, after: int | None = None, limit: int = 100
) -> list[LedgerEntry]:
    """The account's ledger, oldest first, ``limit`` entries after entry id ``after``."""
    acct = await account_id(db, account_name)
    rows = await db.fetch(
        """SELECT e.id, e.kind, (e.amount * 1000000)::bigint AS amount, e.external_id,
                  o.name AS operator, e.changed_by, e.note, e.transfer_id, e.created_at
           FROM ledger_entries e LEFT JOIN operators o ON o.id = e.operator_id
           WHERE e.account_id = $1 AND ($2::bigint IS NULL OR e.id > $2)
           ORDER BY e.id LIMIT $3""",
        acct,
        after,
        limit,
    )
    return [LedgerEntry(**dict(r)) for r in rows]
