"""The database's contract, none of its durability: an in-memory AccountSource and UsageSink
for tests of the protocol fronts without PostgreSQL (the integration tests use the real one)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from ocs.charging.pipeline import UsageOutcome, UsageReport
from ocs.core import AccountSnapshot
from ocs.core.identity import IdentityKind


@dataclass
class MemoryStore:
    """Accounts and identities in dictionaries; usage charged by cumulative totals per session,
    once per idempotency key. ``gate``, when set, holds every database call until it opens."""

    accounts: dict[int, AccountSnapshot]
    identities: dict[tuple[str, str], int]
    recorded: dict[str, int] = field(default_factory=dict)  # idempotency key -> charged
    charged: dict[tuple[str, str, str], int] = field(default_factory=dict)
    unmatched: list[UsageReport] = field(default_factory=list)
    unmatched_reasons: list[tuple[str, str, str]] = field(default_factory=list)  # kind, id, why
    lookups: int = 0
    gate: asyncio.Event | None = None

    async def _wait(self) -> None:
        if self.gate is not None:
            await self.gate.wait()

    async def find_account(self, kind: IdentityKind, value: str) -> AccountSnapshot | None:
        await self._wait()
        self.lookups += 1
        account = self.identities.get((kind.value, value))
        return self.accounts.get(account) if account is not None else None

    async def load_account(self, account_id: int) -> AccountSnapshot | None:
        return self.accounts.get(account_id)

    async def record(self, report: UsageReport, total_amount: int) -> UsageOutcome:
        await self._wait()
        if report.idempotency_key in self.recorded:
            return UsageOutcome(charged=0, duplicate=True, snapshot=None)
        session = (report.source, report.origin, report.session_key)
        delta = max(total_amount - self.charged.get(session, 0), 0)
        self.charged[session] = self.charged.get(session, 0) + delta
        self.recorded[report.idempotency_key] = delta
        new = self.accounts[report.account_id].replace(
            balance=self.accounts[report.account_id].balance - delta
        )
        self.accounts[report.account_id] = new
        return UsageOutcome(charged=delta, duplicate=False, snapshot=new)

    async def close_sessions(self, source: str, origin: str, reason: str) -> list[tuple[int, str]]:
        return []

    async def record_unmatched(
        self,
        report: UsageReport,
        identity_kind: str,
        identity: str,
        *,
        reason: str = "unknown_identity",
    ) -> bool:
        self.unmatched.append(report)
        self.unmatched_reasons.append((identity_kind, identity, reason))
        return True

    async def open_session(self, source: str, origin: str, session_key: str) -> None:
        return None  # the memory store keeps no sessions across a restart

    async def credit(
        self, account_id: int, amount: int, idempotency_key: str, note: str
    ) -> AccountSnapshot:
        new = self.accounts[account_id].replace(balance=self.accounts[account_id].balance + amount)
        self.accounts[account_id] = new
        return new

    def balance(self, account_id: int) -> int:
        return self.accounts[account_id].balance
