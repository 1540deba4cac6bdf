"""The session ledger: which generation of a session a report belongs to, whether it is a
repeat, and what it costs. Pure: the store feeds it the rows it read under lock and writes
what it returns; the daemon runs the same function on its own copy while the database is away.

Rules of this file:
- A session is keyed by (source, origin, session key): RADIUS (NAS, Acct-Session-Id),
  Diameter (Origin-Host, Session-Id). The key is the client's and clients reuse it (a NAS after
  a reboot or Accounting-On, a PCEF after a restart), so a key has *generations*: each one is
  one session of one account, with its own usage, charge, rate and hold.
- A start (RADIUS Start, CCR-Initial) opens a new generation unless it is a repeat of the open
  one's start. A usage report goes to the generation it belongs to: the one its start made
  (``start_ref``) when the daemon knows it; else the account's latest generation of the key
  while that one is open or was closed by something other than its own final report (expiry,
  Accounting-On/Off, a new start); else it opens a new generation, charged in full (its start
  was lost, or the key was reused). Late usage is never refused: it is charged to its
  generation even when that generation is closed.
- A repeat is decided from what was recorded, at any age: a report whose ``uid`` was recorded
  (the daemon replaying its own spool), whose ``wire_key`` (Diameter End-to-End-Id and request
  number; RADIUS figures with the client's Event-Timestamp) was recorded for any generation of
  the key, or whose ``report_key`` was recorded for its target generation.
- Usage is charged on the generation's cumulative figures at the rate fixed when the
  generation opened, so billing increments and minimums apply to the whole session; a report
  charges the difference to what the generation was charged before, never less than 0.
- Time is the server's: a report counts at the instant it was received. The client's timestamp
  may place it earlier, but only inside its own generation and never into a month (of the
  account's time zone) that had ended when the report arrived.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta, tzinfo
from enum import StrEnum

from ocs.core.credit import billing_period_start_in
from ocs.core.model import Tariff, Usage
from ocs.core.rating import usage_charge
from ocs.core.trusted import KEEP, Keep, assigning_init

NO_USAGE = Usage()  # immutable: safe to share as a default


class ReportKind(StrEnum):
    OPEN = "open"  # the session starts: RADIUS Start, CCR-Initial
    USAGE = "usage"  # usage so far: RADIUS Interim-Update, CCR-Update
    FINAL = "final"  # the session ends with its usage: RADIUS Stop, CCR-Termination
    CLOSE = "close"  # the daemon ends it without usage: grant over, Accounting-On/Off
    EVENT = "event"  # a one-shot charge (CCR-Event direct debiting): opened and closed at once


class Counting(StrEnum):
    CUMULATIVE = "cumulative"  # figures are the session's totals so far (RADIUS)
    INCREMENT = "increment"  # figures are the usage since the previous report (Diameter)


# Why a generation ended (``close_reason`` values the ledger itself writes).
SUPERSEDED = "superseded"  # the key started again (a new start, or another account's report)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class Hold:
    """Credit held for a running session (micro-units) until ``until`` (the grant's end)."""

    amount: int
    until: datetime

    def __init__(
        self,
        *,
        amount: int,
        until: datetime,
    ) -> None:
        self.amount = amount  # type: ignore[misc]
        self.until = until  # type: ignore[misc]


assigning_init(Hold)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class Generation:
    """One generation of a session key, as recorded. ``ref`` is its row id (None: new)."""

    ref: int | None
    generation: int
    account_id: int
    start_ref: str | None
    started_at: datetime
    tariff: Tariff
    usage: Usage = NO_USAGE
    charged: int = 0
    start_key: str | None = None  # the report key of the start that opened it
    start_wire_key: str | None = None
    closed_at: datetime | None = None
    close_reason: str | None = None
    closed_by_final: bool = False  # its own Stop / CCR-Termination closed it
    final_number: int | None = None  # Diameter: the CC-Request-Number of that CCR-T
    hold: Hold | None = None
    # Seconds in ``usage`` that were charged without being reported (its last quota, when it
    # ended with no news); reported increments are set against them first.
    assumed_seconds: int = 0

    def __init__(
        self,
        *,
        ref: int | None,
        generation: int,
        account_id: int,
        start_ref: str | None,
        started_at: datetime,
        tariff: Tariff,
        usage: Usage = NO_USAGE,
        charged: int = 0,
        start_key: str | None = None,
        start_wire_key: str | None = None,
        closed_at: datetime | None = None,
        close_reason: str | None = None,
        closed_by_final: bool = False,
        final_number: int | None = None,
        hold: Hold | None = None,
        assumed_seconds: int = 0,
    ) -> None:
        self.ref = ref  # type: ignore[misc]
        self.generation = generation  # type: ignore[misc]
        self.account_id = account_id  # type: ignore[misc]
        self.start_ref = start_ref  # type: ignore[misc]
        self.started_at = started_at  # type: ignore[misc]
        self.tariff = tariff  # type: ignore[misc]
        self.usage = usage  # type: ignore[misc]
        self.charged = charged  # type: ignore[misc]
        self.start_key = start_key  # type: ignore[misc]
        self.start_wire_key = start_wire_key  # type: ignore[misc]
        self.closed_at = closed_at  # type: ignore[misc]
        self.close_reason = close_reason  # type: ignore[misc]
        self.closed_by_final = closed_by_final  # type: ignore[misc]
        self.final_number = final_number  # type: ignore[misc]
        self.hold = hold  # type: ignore[misc]
        self.assumed_seconds = assumed_seconds  # type: ignore[misc]

    @property
    def is_open(self) -> bool:
        return self.closed_at is None

    def evolve(
        self,
        *,
        ref: int | Keep | None = KEEP,
        generation: int | Keep = KEEP,
        account_id: int | Keep = KEEP,
        start_ref: str | Keep | None = KEEP,
        started_at: datetime | Keep = KEEP,
        tariff: Tariff | Keep = KEEP,
        usage: Usage | Keep = KEEP,
        charged: int | Keep = KEEP,
        start_key: str | Keep | None = KEEP,
        start_wire_key: str | Keep | None = KEEP,
        closed_at: datetime | Keep | None = KEEP,
        close_reason: str | Keep | None = KEEP,
        closed_by_final: bool | Keep = KEEP,
        final_number: int | Keep | None = KEEP,
        hold: Hold | Keep | None = KEEP,
        assumed_seconds: int | Keep = KEEP,
    ) -> Generation:
        """A copy with the given fields changed (``dataclasses.replace`` without its cost:
        compiled, a native call; the ledger makes a copy or two for every report)."""
        return Generation(
            ref=self.ref if isinstance(ref, Keep) else ref,
            generation=self.generation if isinstance(generation, Keep) else generation,
            account_id=self.account_id if isinstance(account_id, Keep) else account_id,
            start_ref=self.start_ref if isinstance(start_ref, Keep) else start_ref,
            started_at=self.started_at if isinstance(started_at, Keep) else started_at,
            tariff=self.tariff if isinstance(tariff, Keep) else tariff,
            usage=self.usage if isinstance(usage, Keep) else usage,
            charged=self.charged if isinstance(charged, Keep) else charged,
            start_key=self.start_key if isinstance(start_key, Keep) else start_key,
            start_wire_key=self.start_wire_key
            if isinstance(start_wire_key, Keep)
            else start_wire_key,
            closed_at=self.closed_at if isinstance(closed_at, Keep) else closed_at,
            close_reason=self.close_reason if isinstance(close_reason, Keep) else close_reason,
            closed_by_final=self.closed_by_final
            if isinstance(closed_by_final, Keep)
            else closed_by_final,
            final_number=self.final_number if isinstance(final_number, Keep) else final_number,
            hold=self.hold if isinstance(hold, Keep) else hold,
            assumed_seconds=self.assumed_seconds
            if isinstance(assumed_seconds, Keep)
            else assumed_seconds,
        )


assigning_init(Generation)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class Report:
    """One message about a session, as the ledger needs it.

    ``usage`` is cumulative or an increment by ``counting``. ``report_key`` identifies the
    message within its generation (RADIUS: status and figures; Diameter: the request number);
    ``wire_key`` identifies it across generations where the client makes that possible.
    ``tariff`` is the account's rate now: a generation this report opens keeps it.
    """

    kind: ReportKind
    account_id: int
    uid: str
    report_key: str
    received_at: datetime
    time_zone: tzinfo
    tariff: Tariff
    usage: Usage = NO_USAGE
    counting: Counting = Counting.CUMULATIVE
    wire_key: str | None = None
    start_ref: str | None = None
    client_at: datetime | None = None
    request_number: int | None = None
    close_reason: str | None = None
    hold: Hold | None = None
    # Transaction-style accounting (a Start at answer, a Stop at hang-up, no session time):
    # the duration is the time from the generation's start to this report, as the server
    # received them (the client's timestamp may only shorten it, within those bounds).
    timed: bool = False

    def __init__(
        self,
        *,
        kind: ReportKind,
        account_id: int,
        uid: str,
        report_key: str,
        received_at: datetime,
        time_zone: tzinfo,
        tariff: Tariff,
        usage: Usage = NO_USAGE,
        counting: Counting = Counting.CUMULATIVE,
        wire_key: str | None = None,
        start_ref: str | None = None,
        client_at: datetime | None = None,
        request_number: int | None = None,
        close_reason: str | None = None,
        hold: Hold | None = None,
        timed: bool = False,
    ) -> None:
        self.kind = kind  # type: ignore[misc]
        self.account_id = account_id  # type: ignore[misc]
        self.uid = uid  # type: ignore[misc]
        self.report_key = report_key  # type: ignore[misc]
        self.received_at = received_at  # type: ignore[misc]
        self.time_zone = time_zone  # type: ignore[misc]
        self.tariff = tariff  # type: ignore[misc]
        self.usage = usage  # type: ignore[misc]
        self.counting = counting  # type: ignore[misc]
        self.wire_key = wire_key  # type: ignore[misc]
        self.start_ref = start_ref  # type: ignore[misc]
        self.client_at = client_at  # type: ignore[misc]
        self.request_number = request_number  # type: ignore[misc]
        self.close_reason = close_reason  # type: ignore[misc]
        self.hold = hold  # type: ignore[misc]
        self.timed = timed  # type: ignore[misc]


assigning_init(Report)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class Recorded:
    """What was recorded before for the report's key (the store reads it under lock)."""

    uids: frozenset[str] = frozenset()
    wire_keys: frozenset[str] = frozenset()
    # (generation ref, report key) pairs recorded for the key's generations
    report_keys: frozenset[tuple[int, str]] = frozenset()

    def __init__(
        self,
        *,
        uids: frozenset[str] = frozenset(),
        wire_keys: frozenset[str] = frozenset(),
        report_keys: frozenset[tuple[int, str]] = frozenset(),
    ) -> None:
        self.uids = uids  # type: ignore[misc]
        self.wire_keys = wire_keys  # type: ignore[misc]
        self.report_keys = report_keys  # type: ignore[misc]


assigning_init(Recorded)


NOTHING_RECORDED = Recorded()


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class UsageLine:
    """The row a report leaves in the usage records: what it added, and when it counts."""

    usage: Usage
    amount: int
    occurred_at: datetime

    def __init__(
        self,
        *,
        usage: Usage,
        amount: int,
        occurred_at: datetime,
    ) -> None:
        self.usage = usage  # type: ignore[misc]
        self.amount = amount  # type: ignore[misc]
        self.occurred_at = occurred_at  # type: ignore[misc]


assigning_init(UsageLine)


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class Step:
    """The ledger's answer for one report.

    ``generation`` is the target generation after the report (None for a repeat, or a close
    of nothing); ``superseded`` an open generation this report closed; ``line`` the record to
    write (None for a repeat or a close without usage).
    """

    duplicate: bool
    generation: Generation | None = None
    created: bool = False
    superseded: Generation | None = None
    line: UsageLine | None = None

    def __init__(
        self,
        *,
        duplicate: bool,
        generation: Generation | None = None,
        created: bool = False,
        superseded: Generation | None = None,
        line: UsageLine | None = None,
    ) -> None:
        self.duplicate = duplicate  # type: ignore[misc]
        self.generation = generation  # type: ignore[misc]
        self.created = created  # type: ignore[misc]
        self.superseded = superseded  # type: ignore[misc]
        self.line = line  # type: ignore[misc]

    @property
    def charged(self) -> int:
        return self.line.amount if self.line is not None else 0


assigning_init(Step)


def apply_report(
    generations: list[Generation], report: Report, recorded: Recorded | None = None
) -> Step:
    """Decide what ``report`` does to the key whose generations are ``generations`` (oldest
    first; the store passes the recent ones). Pure: returns the changed generations, writes
    nothing."""
    if recorded is None:
        recorded = NOTHING_RECORDED
    if report.uid in recorded.uids or (
        report.wire_key is not None and report.wire_key in recorded.wire_keys
    ):
        return Step(duplicate=True)
    latest = generations[-1] if generations else None
    kind = report.kind

    if kind is ReportKind.OPEN:
        if report.start_ref is not None:
            made = next((g for g in generations if g.start_ref == report.start_ref), None)
            if made is not None:
                # Written again (a later hold, or after usage reached the store first): the
                # same generation; once it is closed, a late write changes nothing.
                return _held(made, report) if made.is_open else Step(duplicate=True)
        if (
            latest is not None
            and latest.is_open
            and latest.account_id == report.account_id
            and latest.start_key == report.report_key
            and (report.start_ref is None or latest.start_ref is None)
        ):
            return Step(duplicate=True)  # the open generation's own start, again
        return _open(latest, report)

    if kind is ReportKind.EVENT:
        if latest is not None and _recorded_for(latest, report, recorded):
            return Step(duplicate=True)
        return _open(latest, report, close_at_once=True)

    mine = _latest_of(generations, report.account_id)
    if mine is not None and report.start_ref is None and _recorded_for(mine, report, recorded):
        return Step(duplicate=True)  # the same message again (a repeat, whatever its state)
    target = _target(generations, report)
    if target is None and kind is ReportKind.CLOSE:
        return Step(duplicate=True)  # nothing of it was written: nothing to close
    if kind is ReportKind.CLOSE:
        if target is None or not target.is_open:
            return Step(duplicate=True)
        if not report.usage.is_empty or report.timed:
            return _charge(target, report)  # closed with what it is charged (its grant)
        closed = target.evolve(
            closed_at=report.received_at,
            close_reason=report.close_reason or "closed",
            hold=None,
        )
        return Step(duplicate=False, generation=closed)

    if target is None:
        opened = _open(latest, report)
        assert opened.generation is not None
        return _charge(opened.generation, report, created=True, superseded=opened.superseded)
    if _recorded_for(target, report, recorded):
        return Step(duplicate=True)
    return _charge(target, report)


def _recorded_for(generation: Generation, report: Report, recorded: Recorded) -> bool:
    return generation.ref is not None and (generation.ref, report.report_key) in (
        recorded.report_keys
    )


def _target(generations: list[Generation], report: Report) -> Generation | None:
    """The generation a usage report (or a close) belongs to; None: it opens a new one."""
    if report.start_ref is not None:
        # The daemon knows the start this report follows: that generation, or a new one when
        # the start was not written yet (it is written behind its answer).
        for generation in reversed(generations):
            if generation.start_ref == report.start_ref:
                return generation
        return None
    mine = _latest_of(generations, report.account_id)
    if mine is None:
        return None
    if mine.is_open or not mine.closed_by_final:
        if mine.is_open and mine is not generations[-1]:
            return None  # cannot happen (one open generation, the latest); stay safe
        return mine
    # Closed by its own final report: is this a late report of that session?
    if report.kind is ReportKind.CLOSE:
        return mine
    if report.request_number is not None and mine.final_number is not None:
        return mine if report.request_number < mine.final_number else None
    late = (
        report.counting is Counting.CUMULATIVE
        and report.client_at is not None
        and mine.closed_at is not None
        and report.client_at <= mine.closed_at
        and _within(report.usage, mine.usage)
    )
    return mine if late else None


def _latest_of(generations: list[Generation], account_id: int) -> Generation | None:
    return next((g for g in reversed(generations) if g.account_id == account_id), None)


def _within(usage: Usage, total: Usage) -> bool:
    return (
        usage.seconds <= total.seconds
        and usage.octets <= total.octets
        and usage.events <= total.events
    )


def _open(latest: Generation | None, report: Report, *, close_at_once: bool = False) -> Step:
    superseded = None
    if latest is not None and latest.is_open:
        superseded = latest.evolve(closed_at=report.received_at, close_reason=SUPERSEDED, hold=None)
    generation = Generation(
        ref=None,
        generation=(latest.generation + 1) if latest is not None else 1,
        account_id=report.account_id,
        start_ref=report.start_ref,
        started_at=report.received_at,
        tariff=report.tariff,
        start_key=report.report_key if report.kind is ReportKind.OPEN else None,
        start_wire_key=report.wire_key if report.kind is ReportKind.OPEN else None,
        hold=report.hold,
    )
    if report.kind is ReportKind.OPEN:
        return Step(duplicate=False, generation=generation, created=True, superseded=superseded)
    if close_at_once:
        return _charge(generation, report, created=True, superseded=superseded)
    return Step(duplicate=False, generation=generation, created=True, superseded=superseded)


def _held(generation: Generation, report: Report) -> Step:
    if report.hold == generation.hold:
        return Step(duplicate=True)
    return Step(duplicate=False, generation=generation.evolve(hold=report.hold))


def _charge(
    generation: Generation,
    report: Report,
    *,
    created: bool = False,
    superseded: Generation | None = None,
) -> Step:
    before = generation.usage
    used = report.usage
    if report.timed and used.seconds == 0:
        used = replace(used, seconds=timed_seconds(report, generation))
    assumed = generation.assumed_seconds
    if report.kind is ReportKind.CLOSE and report.counting is Counting.INCREMENT:
        assumed += used.seconds  # charged now, not reported: a later report may cover it
    elif assumed and report.counting is Counting.INCREMENT:
        covered = min(assumed, used.seconds)  # reported at last: already charged
        assumed -= covered
        used = replace(used, seconds=used.seconds - covered)
    # Sums and maxima of valid figures, and their differences to ``before`` (never negative).
    if report.counting is Counting.INCREMENT:
        total = Usage(
            seconds=before.seconds + used.seconds,
            octets=before.octets + used.octets,
            events=before.events + used.events,
        )
    else:
        total = Usage(
            seconds=max(before.seconds, used.seconds),
            octets=max(before.octets, used.octets),
            events=max(before.events, used.events),
        )
    amount = max(usage_charge(generation.tariff, total) - generation.charged, 0)
    final = report.kind in (ReportKind.FINAL, ReportKind.EVENT)
    closing = report.kind is ReportKind.CLOSE
    # The generation's end, when this report ends it.
    closed_at = generation.closed_at
    close_reason = generation.close_reason
    closed_by_final = generation.closed_by_final
    final_number = generation.final_number
    if final and generation.is_open:
        closed_at = report.received_at
        close_reason = report.close_reason or "stop"
        closed_by_final = True
        final_number = report.request_number
    elif closing and generation.is_open:
        closed_at = report.received_at
        close_reason = report.close_reason or "closed"
    after = generation.evolve(
        usage=total,
        charged=generation.charged + amount,
        hold=None if final or closing else (report.hold or generation.hold),
        assumed_seconds=assumed,
        closed_at=closed_at,
        close_reason=close_reason,
        closed_by_final=closed_by_final,
        final_number=final_number,
    )
    line = UsageLine(
        usage=Usage(
            seconds=total.seconds - before.seconds,
            octets=total.octets - before.octets,
            events=total.events - before.events,
        ),
        amount=amount,
        occurred_at=counts_at(report, generation),
    )
    return Step(
        duplicate=False, generation=after, created=created, superseded=superseded, line=line
    )


def timed_seconds(report: Report, generation: Generation) -> int:
    """Transaction-style duration: from the generation's start (when the server received it)
    to this report (when it was received, or the client's timestamp when that lies between the
    two), in whole seconds rounded up."""
    start = generation.started_at
    end = report.received_at
    if report.client_at is not None and start <= report.client_at < end:
        end = report.client_at
    elapsed = end - start
    if elapsed <= timedelta(0):
        return 0
    whole, rest = divmod(elapsed, timedelta(seconds=1))
    return int(whole) + (1 if rest else 0)


def counts_at(report: Report, generation: Generation) -> datetime:
    """The instant a report's usage counts at: when it was received, or the client's earlier
    timestamp when that lies inside its generation and in a month that had not ended when the
    report arrived (in the account's time zone)."""
    received = report.received_at
    client = report.client_at
    if client is None or client >= received:
        return received
    if client < generation.started_at:
        return received
    if billing_period_start_in(client, report.time_zone) < billing_period_start_in(
        received, report.time_zone
    ):
        return received
    return client
