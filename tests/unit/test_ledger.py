"""The session ledger (ocs.core.ledger): generations, repeats and charges, pure.

Each scenario runs reports through ``apply_report`` over an in-memory list of generations, the
way the store runs them over the rows it locked, and checks the generations and what was
charged to the micro-unit.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from ocs.core import Tariff, Usage, parse_amount
from ocs.core.ledger import (
    SUPERSEDED,
    Counting,
    Generation,
    Hold,
    Recorded,
    Report,
    ReportKind,
    apply_report,
    counts_at,
)

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
PER_SECOND = Tariff(price_per_minute=parse_amount("0.06"))  # 0.001 a second
ZURICH = ZoneInfo("Europe/Zurich")
_uids = itertools.count()


class Ledger:
    """One session key's generations and what was recorded for them, as the store keeps them."""

    def __init__(self) -> None:
        self.generations: list[Generation] = []
        self.uids: set[str] = set()
        self.wire_keys: set[str] = set()
        self.report_keys: set[tuple[int, str]] = set()
        self._refs = itertools.count(1)
        self.charged = 0

    def send(self, report: Report) -> tuple[bool, int]:
        recorded = Recorded(
            uids=frozenset(self.uids),
            wire_keys=frozenset(
                self.wire_keys | {g.start_wire_key for g in self.generations if g.start_wire_key}
            ),
            report_keys=frozenset(self.report_keys),
        )
        step = apply_report(list(self.generations), report, recorded)
        if step.duplicate:
            return True, 0
        if step.superseded is not None:
            self._put(step.superseded)
        target = step.generation
        if target is not None:
            if step.created:
                target = replace(target, ref=next(self._refs))
                self.generations.append(target)
            else:
                self._put(target)
            assert target.ref is not None
            self.report_keys.add((target.ref, report.report_key))
        self.uids.add(report.uid)
        if report.wire_key:
            self.wire_keys.add(report.wire_key)
        self.charged += step.charged
        return False, step.charged

    def _put(self, changed: Generation) -> None:
        self.generations = [changed if g.ref == changed.ref else g for g in self.generations]


def report(
    kind: ReportKind,
    report_key: str,
    *,
    seconds: int = 0,
    octets: int = 0,
    account: int = 1,
    at: datetime = T0,
    counting: Counting = Counting.CUMULATIVE,
    **kw: object,
) -> Report:
    return Report(
        kind=kind,
        account_id=account,
        uid=f"u{next(_uids)}",
        report_key=report_key,
        received_at=at,
        time_zone=kw.pop("time_zone", UTC),  # type: ignore[arg-type]
        tariff=kw.pop("tariff", PER_SECOND),  # type: ignore[arg-type]
        usage=Usage(seconds=seconds, octets=octets),
        counting=counting,
        **kw,  # type: ignore[arg-type]
    )


OPEN, USAGE, FINAL, CLOSE, EVENT = (
    ReportKind.OPEN,
    ReportKind.USAGE,
    ReportKind.FINAL,
    ReportKind.CLOSE,
    ReportKind.EVENT,
)
INCREMENT = Counting.INCREMENT


# --- RADIUS: cumulative figures, keys reused ---------------------------------------------------


def test_a_reused_acct_session_id_is_a_new_session_charged_in_full() -> None:
    """Issue item 1: 300 s, then the NAS reuses the id for a 250 s session: 550 s charged."""
    ledger = Ledger()
    ledger.send(report(OPEN, "start|0|0"))
    ledger.send(report(FINAL, "stop|300|0", seconds=300))
    ledger.send(report(OPEN, "start|0|0", at=T0 + timedelta(minutes=10)))
    ledger.send(report(FINAL, "stop|250|0", seconds=250, at=T0 + timedelta(minutes=15)))
    assert ledger.charged == parse_amount("0.55")
    assert [(g.generation, g.usage.seconds, g.charged) for g in ledger.generations] == [
        (1, 300, parse_amount("0.30")),
        (2, 250, parse_amount("0.25")),
    ]


def test_a_repeated_stop_is_charged_once_at_any_age() -> None:
    ledger = Ledger()
    ledger.send(report(OPEN, "start|0|0"))
    assert ledger.send(report(FINAL, "stop|300|0", seconds=300)) == (False, parse_amount("0.3"))
    # The NAS sends the Stop again (new identifier), an hour later: a repeat.
    late = report(FINAL, "stop|300|0", seconds=300, at=T0 + timedelta(hours=1))
    assert ledger.send(late) == (True, 0)
    assert ledger.charged == parse_amount("0.30") and len(ledger.generations) == 1


def test_an_event_timestamp_makes_a_report_known_in_any_generation() -> None:
    """With Event-Timestamp (the same in each retransmission) a Stop of the first session that
    arrives after the key was reused is still known as a repeat."""
    ledger = Ledger()
    ledger.send(report(OPEN, "start|0|0", wire_key="start@100"))
    ledger.send(report(FINAL, "stop|300|0", seconds=300, wire_key="stop|300@400"))
    ledger.send(report(OPEN, "start|0|0", wire_key="start@1000"))
    assert ledger.send(report(FINAL, "stop|300|0", seconds=300, wire_key="stop|300@400")) == (
        True,
        0,
    )
    assert ledger.generations[-1].is_open  # the second session is untouched
    assert ledger.charged == parse_amount("0.30")


def test_the_same_id_for_another_account_starts_that_accounts_session() -> None:
    """Issue item 2: charged to each account, the first session's later report still its."""
    ledger = Ledger()
    ledger.send(report(OPEN, "start|0|0", account=16))
    ledger.send(report(OPEN, "start|0|0", account=17))
    first, second = ledger.generations
    assert (first.closed_at, first.close_reason) == (T0, SUPERSEDED)
    assert second.account_id == 17 and second.is_open
    ledger.send(report(FINAL, "stop|200|0", seconds=200, account=17))
    # Account 16's Stop arrives late: charged to its own (superseded) generation.
    ledger.send(report(FINAL, "stop|120|0", seconds=120, account=16))
    assert [(g.account_id, g.charged) for g in ledger.generations] == [
        (16, parse_amount("0.12")),
        (17, parse_amount("0.20")),
    ]


def test_interim_updates_charge_the_difference_and_never_go_backwards() -> None:
    ledger = Ledger()
    ledger.send(report(OPEN, "start|0|0"))
    assert ledger.send(report(USAGE, "interim|60|0", seconds=60))[1] == parse_amount("0.06")
    assert ledger.send(report(USAGE, "interim|30|0", seconds=30))[1] == 0  # out of order
    assert ledger.send(report(FINAL, "stop|90|0", seconds=90))[1] == parse_amount("0.03")
    assert ledger.charged == parse_amount("0.09")


def test_a_stop_without_start_opens_and_closes_a_generation() -> None:
    ledger = Ledger()
    assert ledger.send(report(FINAL, "stop|42|0", seconds=42))[1] == parse_amount("0.042")
    [generation] = ledger.generations
    assert generation.closed_by_final and not generation.is_open


def test_usage_after_accounting_on_belongs_to_the_closed_generation() -> None:
    """Accounting-On closed the session; its Stop, sent before the reboot and retried after,
    is charged to it, the delta only (late usage is never refused)."""
    ledger = Ledger()
    ledger.send(report(OPEN, "start|0|0"))
    ledger.send(report(USAGE, "interim|60|0", seconds=60))
    ledger.send(report(CLOSE, "close", close_reason="accounting_on"))
    assert not ledger.generations[0].is_open
    assert ledger.send(report(FINAL, "stop|100|0", seconds=100))[1] == parse_amount("0.04")
    assert len(ledger.generations) == 1 and ledger.charged == parse_amount("0.10")


# --- Diameter: increments, request numbers -----------------------------------------------------


def diameter(kind: ReportKind, n: int, seconds: int = 0, **kw: object) -> Report:
    return report(
        kind,
        f"n={n}",
        seconds=seconds,
        counting=INCREMENT,
        request_number=n,
        **kw,  # type: ignore[arg-type]
    )


def test_a_session_id_reused_after_its_termination_is_charged_again() -> None:
    """Issue item 3: CCR-I, U 200 s, T 100 s; then the same Session-Id again the same way."""
    ledger = Ledger()
    for start_ref in ("a", "b"):
        ledger.send(diameter(OPEN, 0, start_ref=start_ref, wire_key=f"{start_ref}|0"))
        ledger.send(diameter(USAGE, 1, 200, start_ref=start_ref))
        ledger.send(diameter(FINAL, 2, 100, start_ref=start_ref))
    assert ledger.charged == parse_amount("0.60")
    assert [g.usage.seconds for g in ledger.generations] == [300, 300]


def test_an_old_request_retransmitted_after_many_others_is_a_repeat() -> None:
    """Issue item 5: CCR-U #1 again (T flag) after #2..#10: its request number is recorded."""
    ledger = Ledger()
    ledger.send(diameter(OPEN, 0, start_ref="s"))
    for n in range(1, 11):
        ledger.send(diameter(USAGE, n, 10, start_ref="s", wire_key=f"e{n}|{n}"))
    assert ledger.send(diameter(USAGE, 1, 10, start_ref="s", wire_key="e1|1")) == (True, 0)
    # ... also when the daemon restarted and no longer knows the session (no start_ref).
    assert ledger.send(diameter(USAGE, 1, 10)) == (True, 0)
    assert ledger.charged == parse_amount("0.10")


def test_usage_before_the_start_is_written_finds_the_same_generation() -> None:
    """The CCR-I is written behind its answer; a CCR-U with usage may reach the store first."""
    ledger = Ledger()
    ledger.send(diameter(USAGE, 1, 60, start_ref="s"))
    hold = Hold(amount=3_600_000, until=T0 + timedelta(hours=1))
    assert ledger.send(diameter(OPEN, 0, start_ref="s", hold=hold)) == (False, 0)
    [generation] = ledger.generations
    assert generation.hold == hold and generation.usage.seconds == 60
    # A hold written again after the session ended creates nothing.
    ledger.send(diameter(FINAL, 2, 30, start_ref="s"))
    assert ledger.send(diameter(OPEN, 0, start_ref="s", hold=hold))[0]
    assert len(ledger.generations) == 1 and not ledger.generations[0].is_open


def test_late_usage_of_a_session_closed_by_its_timer_is_charged_to_it() -> None:
    """Issue item 4: closed when its grant ran out; the client's later CCR-U and CCR-T are
    charged to it, not refused."""
    ledger = Ledger()
    ledger.send(diameter(OPEN, 0, start_ref="s"))
    ledger.send(report(CLOSE, "close", start_ref="s", close_reason="grant_ended"))
    assert ledger.send(diameter(USAGE, 1, 100))[1] == parse_amount("0.10")
    assert ledger.send(diameter(FINAL, 2, 20))[1] == parse_amount("0.02")
    assert len(ledger.generations) == 1


def test_a_lower_request_number_after_a_termination_is_late_usage_of_it() -> None:
    ledger = Ledger()
    ledger.send(diameter(OPEN, 0, start_ref="s"))
    ledger.send(diameter(FINAL, 3, 30, start_ref="s"))
    assert ledger.send(diameter(USAGE, 2, 10))[1] == parse_amount("0.01")  # lost, now retried
    assert len(ledger.generations) == 1
    assert ledger.send(diameter(USAGE, 5, 10))[1] == parse_amount("0.01")  # a new session
    assert len(ledger.generations) == 2


def test_rating_is_on_the_whole_session_at_the_rate_it_opened_with() -> None:
    sixty_six = Tariff(price_per_minute=parse_amount("0.06"), minimum_s=60, billing_increment_s=6)
    ledger = Ledger()
    ledger.send(diameter(OPEN, 0, start_ref="s", tariff=sixty_six))
    charges = [
        ledger.send(diameter(USAGE, n, 7, start_ref="s", tariff=PER_SECOND))[1]
        for n in range(1, 11)
    ]
    # 7 s: the 60 s minimum (0.06); 70 s in all: 72 s billed (0.072). Never the later rate.
    assert charges[0] == parse_amount("0.06")
    assert ledger.charged == parse_amount("0.072")


def test_an_event_is_one_generation_opened_and_closed() -> None:
    ledger = Ledger()
    assert ledger.send(diameter(EVENT, 0, 120))[1] == parse_amount("0.12")
    assert ledger.send(diameter(EVENT, 0, 120)) == (True, 0)  # the same request again
    assert ledger.send(diameter(EVENT, 1, 120))[1] == parse_amount("0.12")
    assert [g.closed_by_final for g in ledger.generations] == [True, True]


# --- time is the server's ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("received", "client", "started", "expected"),
    [
        # no client time, or a later one: when it was received
        (T0, None, T0 - timedelta(hours=1), T0),
        (T0, T0 + timedelta(hours=1), T0 - timedelta(hours=1), T0),
        # earlier, inside the session and the month: the client's
        (T0, T0 - timedelta(minutes=5), T0 - timedelta(hours=1), T0 - timedelta(minutes=5)),
        # earlier than the session started: received
        (T0, T0 - timedelta(hours=2), T0 - timedelta(hours=1), T0),
        # into last month (in the account's zone): never
        (
            datetime(2026, 12, 1, 0, 10, tzinfo=ZURICH),
            datetime(2026, 11, 30, 23, 50, tzinfo=ZURICH),
            datetime(2026, 11, 30, 23, 0, tzinfo=ZURICH),
            datetime(2026, 12, 1, 0, 10, tzinfo=ZURICH),
        ),
        # across midnight UTC but inside the month in Zurich: fine
        (
            datetime(2026, 12, 1, 0, 30, tzinfo=UTC),
            datetime(2026, 11, 30, 23, 30, tzinfo=UTC),
            datetime(2026, 11, 30, 23, 0, tzinfo=UTC),
            datetime(2026, 11, 30, 23, 30, tzinfo=UTC),
        ),
    ],
)
def test_usage_counts_when_received_unless_the_client_time_fits(
    received: datetime, client: datetime | None, started: datetime, expected: datetime
) -> None:
    generation = Generation(
        ref=1, generation=1, account_id=1, start_ref=None, started_at=started, tariff=PER_SECOND
    )
    entry = report(USAGE, "k", seconds=1, at=received, client_at=client, time_zone=ZURICH)
    assert counts_at(entry, generation) == expected


def test_a_lying_client_clock_cannot_move_usage_into_a_closed_month() -> None:
    """Issue item 9: the Stop says last month; it counts in the month it arrived."""
    ledger = Ledger()
    now = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
    ledger.send(report(OPEN, "start|0|0", at=now - timedelta(minutes=30)))
    step_key = "stop|600|0"
    entry = report(
        FINAL,
        step_key,
        seconds=600,
        at=now,
        client_at=datetime(2026, 11, 28, 10, 0, tzinfo=UTC),
    )
    step = apply_report(list(ledger.generations), entry)
    assert step.line is not None and step.line.occurred_at == now


# --- transaction-style accounting and sessions that end with no news ---------------------------


def test_a_transaction_style_stop_is_charged_the_time_since_its_start() -> None:
    """acc_radius sends no Acct-Session-Time: the duration is Stop minus Start as received; the
    client's Event-Timestamp may only shorten it, within those bounds."""
    ledger = Ledger()
    ledger.send(report(OPEN, "start|0|0", at=T0))
    stop = report(FINAL, "stop|0|0", at=T0 + timedelta(seconds=62, milliseconds=300), timed=True)
    assert ledger.send(stop)[1] == parse_amount("0.063")  # 62.3 s, rounded up to 63
    other = Ledger()
    other.send(report(OPEN, "start|0|0", at=T0))
    inside = report(
        FINAL,
        "stop|0|0",
        at=T0 + timedelta(seconds=65),
        client_at=T0 + timedelta(seconds=61),
        timed=True,
    )
    assert other.send(inside)[1] == parse_amount("0.061")
    liar = Ledger()
    liar.send(report(OPEN, "start|0|0", at=T0))
    before_start = report(
        FINAL,
        "stop|0|0",
        at=T0 + timedelta(seconds=30),
        client_at=T0 - timedelta(hours=1),
        timed=True,
    )
    assert liar.send(before_start)[1] == parse_amount("0.030")  # outside the bounds: ignored


def test_a_session_closed_with_no_news_is_charged_its_grant() -> None:
    """RADIUS (cumulative): the grant is its whole time; a Stop that comes later changes
    nothing unless it says more."""
    ledger = Ledger()
    ledger.send(report(OPEN, "start|0|0"))
    ledger.send(report(USAGE, "interim|60|0", seconds=60))
    closing = report(CLOSE, "close", seconds=300, close_reason="grant_ended")
    assert ledger.send(closing)[1] == parse_amount("0.24")
    [generation] = ledger.generations
    assert (generation.close_reason, generation.closed_by_final) == ("grant_ended", False)
    assert ledger.send(report(FINAL, "stop|290|0", seconds=290))[1] == 0
    assert ledger.charged == parse_amount("0.30")


def test_a_quota_charged_at_close_is_set_against_the_usage_reported_later() -> None:
    """Diameter (increments): the last quota (100 s) charged when the session went silent; the
    client's late CCR-U and CCR-T (40 + 80 s) are charged only beyond it."""
    ledger = Ledger()
    ledger.send(diameter(OPEN, 0, start_ref="s"))
    ledger.send(diameter(USAGE, 1, 50, start_ref="s"))
    closing = report(
        CLOSE, "close", seconds=100, counting=INCREMENT, start_ref="s", close_reason="grant_ended"
    )
    assert ledger.send(closing)[1] == parse_amount("0.10")
    assert ledger.generations[0].assumed_seconds == 100
    assert ledger.send(diameter(USAGE, 2, 40))[1] == 0
    assert ledger.send(diameter(FINAL, 3, 80))[1] == parse_amount("0.02")
    assert ledger.charged == parse_amount("0.17")  # 50 + 40 + 80 s, each second once
    assert ledger.generations[0].assumed_seconds == 0
