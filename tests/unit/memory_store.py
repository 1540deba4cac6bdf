"""The database's contract, none of its durability: an in-memory AccountSource and UsageSink
for tests of the protocol fronts without PostgreSQL (the integration tests use the real one).

Reports go through the same pure ledger (``ocs.core.ledger.apply_report``) the store uses, on
generations kept in dictionaries, so generations, repeats and charges behave as they do there.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field, replace

from ocs.charging.pipeline import OpenGeneration, UsageOutcome, UsageReport
from ocs.core import AccountSnapshot
from ocs.core.identity import IdentityKind
from ocs.core.ledger import Generation, Recorded, apply_report

Key = tuple[str, str, str]


@dataclass
class MemoryStore:
    """Accounts and identities in dictionaries; sessions as the ledger keeps them.
    ``gate``, when set, holds every database call until it opens."""

    accounts: dict[int, AccountSnapshot]
    identities: dict[tuple[str, str], int]
    recorded: dict[str, int] = field(default_factory=dict)  # report uid -> charged
    generations: dict[Key, list[Generation]] = field(default_factory=dict)
    seen: dict[Key, Recorded] = field(default_factory=dict)
    unmatched: list[tuple[UsageReport, str]] = field(default_factory=list)
    unmatched_reasons: list[tuple[str, str, str]] = field(default_factory=list)  # kind, id, why
    lookups: int = 0
    reports: int = 0
    gate: asyncio.Event | None = None
    owner: str = "ocsd"
    _refs: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

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

    async def record(self, report: UsageReport) -> UsageOutcome:
        await self._wait()
        self.reports += 1
        key = (report.source, report.origin, report.session_key)
        gens = self.generations.setdefault(key, [])
        seen = self.seen.get(key, Recorded())
        seen = replace(
            seen, wire_keys=seen.wire_keys | {g.start_wire_key for g in gens if g.start_wire_key}
        )
        step = apply_report(gens, report.entry, seen)
        entry = report.entry
        if step.duplicate:
            return UsageOutcome(
                charged=0, duplicate=True, snapshot=self.accounts.get(entry.account_id)
            )
        if step.superseded is not None:
            gens[:] = [step.superseded if g.ref == step.superseded.ref else g for g in gens]
        target = step.generation
        if target is not None:
            if step.created:
                target = replace(target, ref=next(self._refs))
                gens.append(target)
            else:
                gens[:] = [target if g.ref == target.ref else g for g in gens]
            assert target.ref is not None
            self.seen[key] = Recorded(
                uids=seen.uids | {entry.uid},
                wire_keys=seen.wire_keys | ({entry.wire_key} if entry.wire_key else set()),
                report_keys=seen.report_keys | {(target.ref, entry.report_key)},
            )
        self.recorded[entry.uid] = step.charged
        snapshot = self.accounts.get(entry.account_id)
        if snapshot is not None and step.charged:
            snapshot = snapshot.replace(balance=snapshot.balance - step.charged)
            self.accounts[entry.account_id] = snapshot
        return UsageOutcome(
            charged=step.charged, duplicate=False, snapshot=snapshot, generation=target
        )

    async def close_sessions(self, source: str, origin: str, reason: str) -> list[tuple[int, str]]:
        closed = []
        for (src, org, key), gens in self.generations.items():
            if (src, org) != (source, origin):
                continue
            for i, g in enumerate(gens):
                if g.is_open:
                    gens[i] = replace(g, closed_at=g.started_at, close_reason=reason, hold=None)
                    closed.append((g.account_id, key))
        return closed

    async def record_unmatched(
        self, report: UsageReport, identity_kind: str, identity: str, reason: str
    ) -> bool:
        self.unmatched.append((report, reason))
        self.unmatched_reasons.append((identity_kind, identity, reason))
        return True

    async def session_generations(
        self, source: str, origin: str, session_key: str
    ) -> list[Generation]:
        return list(self.generations.get((source, origin, session_key), []))

    async def open_generations(self, owner: str) -> list[OpenGeneration]:
        return [
            OpenGeneration(source=k[0], origin=k[1], session_key=k[2], generation=g)
            for k, gens in self.generations.items()
            for g in gens
            if g.is_open
        ]

    async def credit(
        self, account_id: int, amount: int, idempotency_key: str, note: str
    ) -> AccountSnapshot:
        if idempotency_key in self.recorded:
            return self.accounts[account_id]
        self.recorded[idempotency_key] = -amount
        new = self.accounts[account_id].replace(balance=self.accounts[account_id].balance + amount)
        self.accounts[account_id] = new
        return new

    def balance(self, account_id: int) -> int:
        return self.accounts[account_id].balance

    def charged(self, key: Key) -> int:
        """What every generation of a session key was charged, in all."""
        return sum(g.charged for g in self.generations.get(key, []))
