"""The credit rules of DESIGN §1, table-driven from the seeds' worked examples."""

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from ocs.core import (
    AccountSnapshot,
    AccountStatus,
    GrantLimits,
    LimitBasis,
    RefusalReason,
    ServiceUnit,
    SessionRequest,
    Tariff,
    TemporaryIncrease,
    available_credit,
    continue_session,
    decide,
    effective_credit_limit,
    parse_amount,
)

pytestmark = pytest.mark.dates

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
LIMITS = GrantLimits()
DEMO_TARIFF = Tariff(price_per_minute=parse_amount("0.06"))  # 0.001 per second


def account(**kw: object) -> AccountSnapshot:
    money = {"balance", "credit_limit", "min_balance", "unbilled"}
    values = {k: parse_amount(str(v)) if k in money else v for k, v in kw.items()}
    values.setdefault("tariff", DEMO_TARIFF)
    return AccountSnapshot(account_id=1, name="t", **values)  # type: ignore[arg-type]


def temp(amount: str, until: datetime) -> TemporaryIncrease:
    return TemporaryIncrease(amount=parse_amount(amount), valid_until=until)


# (case, snapshot, now, admitted, available)
WORKED_CASES = [
    ("prepaid 10.00, limit 0", account(balance="10.00"), NOW, True, "10.00"),
    ("prepaid 0.00", account(balance="0.00"), NOW, False, "0.00"),
    ("prepaid -0.01", account(balance="-0.01"), NOW, False, "-0.01"),
    ("postpaid 100, balance -50", account(balance="-50", credit_limit="100"), NOW, True, "50"),
    ("postpaid 100, balance -100", account(balance="-100", credit_limit="100"), NOW, False, "0"),
    ("buffer -5, balance 6", account(balance="6", credit_limit="-5"), NOW, True, "1"),
    ("buffer -5, balance 5", account(balance="5", credit_limit="-5"), NOW, False, "0"),
    ("min balance 5, balance 3", account(balance="3", min_balance="5"), NOW, False, "-2"),
    ("min balance 5, balance 5.01", account(balance="5.01", min_balance="5"), NOW, True, "0.01"),
    (
        "limit 200 at -200",
        account(balance="-200", credit_limit="200"),
        NOW,
        False,
        "0",
    ),
    (
        "limit 200 at -200, +20 for 7 more days",
        account(
            balance="-200", credit_limit="200", temporary_increase=temp("20", NOW + timedelta(7))
        ),
        NOW,
        True,
        "20",
    ),
    (
        "the day after the increase expired",
        account(
            balance="-200", credit_limit="200", temporary_increase=temp("20", NOW + timedelta(7))
        ),
        NOW + timedelta(days=8),
        False,
        "0",
    ),
    (
        "unbilled basis, limit 500, 480 used this month",
        account(
            credit_limit="500",
            limit_basis=LimitBasis.UNBILLED,
            unbilled="480",
            unbilled_period=date(2026, 11, 1),
        ),
        NOW,
        True,
        "20",
    ),
    (
        "unbilled basis, first day of the next month: usage starts from 0",
        account(
            credit_limit="500",
            limit_basis=LimitBasis.UNBILLED,
            unbilled="500",
            unbilled_period=date(2026, 11, 1),
        ),
        datetime(2026, 12, 1, 0, 0, tzinfo=UTC),
        True,
        "500",
    ),
]


@pytest.mark.parametrize(
    ("snapshot", "now", "admitted", "available"),
    [c[1:] for c in WORKED_CASES],
    ids=[c[0] for c in WORKED_CASES],
)
def test_worked_cases(
    snapshot: AccountSnapshot, now: datetime, admitted: bool, available: str
) -> None:
    decision = decide(snapshot, SessionRequest(), now, LIMITS)
    assert decision.admitted is admitted
    assert decision.available == parse_amount(available)
    if not admitted:
        assert decision.reason is RefusalReason.INSUFFICIENT_CREDIT
        assert decision.granted_units == 0


# The demo accounts of the foundation issue, as pure snapshots (the integration tests check the
# same rows through the database and the CLI).
DEMO_ROWS = [
    ("prepaid-ok", account(balance="1.00"), True, 1000, None),
    ("prepaid-empty", account(balance="0.00"), False, 0, RefusalReason.INSUFFICIENT_CREDIT),
    ("postpaid", account(balance="-50", credit_limit="100"), True, 3600, None),
    (
        "buffer",
        account(balance="4", credit_limit="-5"),
        False,
        0,
        RefusalReason.INSUFFICIENT_CREDIT,
    ),
    (
        "min-balance",
        account(balance="3", min_balance="5"),
        False,
        0,
        RefusalReason.INSUFFICIENT_CREDIT,
    ),
    (
        "temp-increase",
        account(
            balance="-200", credit_limit="200", temporary_increase=temp("20", NOW + timedelta(7))
        ),
        True,
        3600,
        None,
    ),
    (
        "temp-expired",
        account(
            balance="-200", credit_limit="200", temporary_increase=temp("20", NOW - timedelta(1))
        ),
        False,
        0,
        RefusalReason.INSUFFICIENT_CREDIT,
    ),
    (
        "blocked",
        account(balance="100", status=AccountStatus.BLOCKED),
        False,
        0,
        RefusalReason.BLOCKED,
    ),
]


@pytest.mark.parametrize(
    ("snapshot", "admitted", "grant", "reason"),
    [r[1:] for r in DEMO_ROWS],
    ids=[r[0] for r in DEMO_ROWS],
)
def test_demo_rows(
    snapshot: AccountSnapshot, admitted: bool, grant: int, reason: RefusalReason | None
) -> None:
    decision = decide(snapshot, SessionRequest(), NOW, LIMITS)
    assert (decision.admitted, decision.granted_units, decision.reason) == (admitted, grant, reason)


def test_exactly_zero_available_is_refused_and_one_micro_unit_is_not_enough_for_a_second() -> None:
    # available must be strictly > 0 ...
    assert not decide(account(balance="0"), SessionRequest(), NOW, LIMITS).admitted
    # ... and buy at least one billing step: 0.000001 buys no second at 0.001/s.
    tiny = decide(account(balance="0.000001"), SessionRequest(), NOW, LIMITS)
    assert (tiny.admitted, tiny.reason) == (False, RefusalReason.INSUFFICIENT_CREDIT)
    one_second = decide(account(balance="0.001"), SessionRequest(), NOW, LIMITS)
    assert (one_second.admitted, one_second.granted_units) == (True, 1)


def test_temporary_increase_stops_counting_at_its_instant() -> None:
    until = NOW + timedelta(hours=1)
    snap = account(balance="-200", credit_limit="200", temporary_increase=temp("20", until))
    just_before = until - timedelta(microseconds=1)
    assert effective_credit_limit(snap, just_before) == parse_amount("220")
    assert effective_credit_limit(snap, until) == parse_amount("200")
    assert decide(snap, SessionRequest(), just_before, LIMITS).admitted
    assert not decide(snap, SessionRequest(), until, LIMITS).admitted


def test_grant_never_runs_past_the_end_of_a_temporary_increase() -> None:
    until = NOW + timedelta(seconds=600)
    snap = account(balance="-200", credit_limit="200", temporary_increase=temp("20", until))
    decision = decide(snap, SessionRequest(), NOW, LIMITS)
    assert decision.granted_units == 600
    assert decision.changes_at == until


def test_percentage_increase_applies_to_a_positive_permanent_limit_only() -> None:
    until = NOW + timedelta(days=7)
    ten_percent = TemporaryIncrease(percent_bp=1000, valid_until=until)
    postpaid = account(balance="-200", credit_limit="200", temporary_increase=ten_percent)
    assert effective_credit_limit(postpaid, NOW) == parse_amount("220")
    prepaid = account(balance="5", credit_limit="0", temporary_increase=ten_percent)
    assert effective_credit_limit(prepaid, NOW) == 0
    buffer = account(balance="5", credit_limit="-5", temporary_increase=ten_percent)
    assert effective_credit_limit(buffer, NOW) == parse_amount("-5")


ZURICH = ZoneInfo("Europe/Zurich")
LOS_ANGELES = ZoneInfo("America/Los_Angeles")


@pytest.mark.parametrize(
    ("zone", "now", "counts"),
    [
        # 23:30 UTC on 30 November is already 1 December in Zurich: a new period there.
        (ZURICH, datetime(2026, 11, 30, 23, 30, tzinfo=UTC), False),
        (ZURICH, datetime(2026, 11, 30, 22, 59, 59, tzinfo=UTC), True),
        # 07:00 UTC on 1 December is still 30 November in Los Angeles: the old period counts.
        (LOS_ANGELES, datetime(2026, 12, 1, 7, 0, tzinfo=UTC), True),
        (LOS_ANGELES, datetime(2026, 12, 1, 8, 0, tzinfo=UTC), False),
        (UTC, datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC), True),
        (UTC, datetime(2026, 12, 1, 0, 0, tzinfo=UTC), False),
    ],
)
def test_unbilled_month_rollover_in_the_account_time_zone(
    zone: ZoneInfo, now: datetime, counts: bool
) -> None:
    snap = account(
        credit_limit="500",
        limit_basis=LimitBasis.UNBILLED,
        unbilled="480",
        unbilled_period=date(2026, 11, 1),
        time_zone=zone,
    )
    expected = "20" if counts else "500"
    assert available_credit(snap, now) == parse_amount(expected)


def test_unbilled_basis_ignores_the_running_balance() -> None:
    snap = account(
        balance="-10000",
        credit_limit="500",
        limit_basis=LimitBasis.UNBILLED,
        unbilled="100",
        unbilled_period=date(2026, 11, 1),
    )
    assert available_credit(snap, NOW) == parse_amount("400")


def test_reservations_of_running_sessions_reduce_available_credit() -> None:
    snap = account(balance="1.00")
    # Twenty calls in the same second cannot each spend the same euro.
    held = decide(snap, SessionRequest(reserved=parse_amount("0.99")), NOW, LIMITS)
    assert (held.admitted, held.granted_units) == (True, 10)
    spent = decide(snap, SessionRequest(reserved=parse_amount("1.00")), NOW, LIMITS)
    assert (spent.admitted, spent.reason) == (False, RefusalReason.INSUFFICIENT_CREDIT)


@pytest.mark.parametrize(
    ("status", "reason"),
    [(AccountStatus.BLOCKED, RefusalReason.BLOCKED), (AccountStatus.CLOSED, RefusalReason.CLOSED)],
)
def test_status_refuses_before_credit(status: AccountStatus, reason: RefusalReason) -> None:
    decision = decide(account(balance="100", status=status), SessionRequest(), NOW, LIMITS)
    assert (decision.admitted, decision.reason) == (False, reason)


def test_concurrency_and_setup_rate_caps() -> None:
    snap = account(balance="100", max_sessions=2, max_setups_per_s=5)
    assert decide(snap, SessionRequest(active_sessions=1), NOW, LIMITS).admitted
    full = decide(snap, SessionRequest(active_sessions=2), NOW, LIMITS)
    assert full.reason is RefusalReason.TOO_MANY_SESSIONS
    assert decide(snap, SessionRequest(setups_last_s=4), NOW, LIMITS).admitted
    fast = decide(snap, SessionRequest(setups_last_s=5), NOW, LIMITS)
    assert fast.reason is RefusalReason.SETUP_RATE_EXCEEDED
    # A cap of 0 refuses every new session.
    assert not decide(snap.replace(max_sessions=0), SessionRequest(), NOW, LIMITS).admitted


def test_credit_is_reported_before_caps() -> None:
    snap = account(balance="0", max_sessions=0)
    assert decide(snap, SessionRequest(), NOW, LIMITS).reason is RefusalReason.INSUFFICIENT_CREDIT


def test_minimum_grant_is_enforced() -> None:
    limits = GrantLimits(min_time_s=60)
    # 0.05 buys 50 s at 0.001/s: below the configured minimum.
    short = decide(account(balance="0.05"), SessionRequest(), NOW, limits)
    assert (short.admitted, short.reason) == (False, RefusalReason.INSUFFICIENT_CREDIT)
    assert decide(account(balance="0.06"), SessionRequest(), NOW, limits).granted_units == 60


def test_grant_is_capped_by_configuration_and_by_the_request() -> None:
    rich = account(balance="1000")
    assert decide(rich, SessionRequest(), NOW, GrantLimits(max_time_s=900)).granted_units == 900
    asked = decide(rich, SessionRequest(requested_units=120), NOW, LIMITS)
    assert asked.granted_units == 120


def test_volume_and_event_grants() -> None:
    data = account(balance="1.00", tariff=Tariff(price_per_mb=parse_amount("0.01")))
    decision = decide(data, SessionRequest(unit=ServiceUnit.VOLUME), NOW, LIMITS)
    assert decision.granted_units == LIMITS.max_volume_bytes  # 1.00 buys 100 MB, the cap
    small = decide(
        data.replace(balance=parse_amount("0.005")),
        SessionRequest(unit=ServiceUnit.VOLUME),
        NOW,
        LIMITS,
    )
    assert small.granted_units == 500_000
    sms = account(balance="0.25", tariff=Tariff(price_per_event=parse_amount("0.10")))
    assert decide(sms, SessionRequest(unit=ServiceUnit.EVENT), NOW, LIMITS).granted_units == 2


def test_connection_fee_is_paid_before_time_is_granted() -> None:
    tariff = Tariff(price_per_minute=parse_amount("0.06"), connection_fee=parse_amount("0.50"))
    snap = account(balance="1.00", tariff=tariff)
    assert decide(snap, SessionRequest(), NOW, LIMITS).granted_units == 500
    only_fee = snap.replace(balance=parse_amount("0.50"))
    assert not decide(only_fee, SessionRequest(), NOW, LIMITS).admitted


def test_free_tariff_grants_the_maximum_but_still_needs_credit() -> None:
    free = account(balance="0.01", tariff=Tariff())
    assert decide(free, SessionRequest(), NOW, LIMITS).granted_units == LIMITS.max_time_s
    # available must be > 0 even when the service costs nothing (ConnexCS: limit 0 = prepaid).
    for balance in ("0", "-0.01"):
        broke = decide(account(balance=balance, tariff=Tariff()), SessionRequest(), NOW, LIMITS)
        assert (broke.admitted, broke.reason) == (False, RefusalReason.INSUFFICIENT_CREDIT)


def test_running_sessions_continue_within_a_bounded_overdraft() -> None:
    """Calls in progress continue once the credit is gone (ConnexCS), but only within the
    configured overdraft per session, not for another maximum grant each time."""
    broke = account(balance="-5")
    decision = continue_session(broke, SessionRequest(), NOW, LIMITS)
    assert decision.admitted
    assert decision.granted_units == LIMITS.overdraft_s == 300
    # What the session was already granted in overdraft counts against it.
    rest = continue_session(broke, SessionRequest(), NOW, LIMITS, overdraft_used=240)
    assert rest.granted_units == 60
    spent = continue_session(broke, SessionRequest(), NOW, LIMITS, overdraft_used=300)
    assert (spent.admitted, spent.reason) == (False, RefusalReason.INSUFFICIENT_CREDIT)
    # An amount bounds it too: 0.03 at 0.06 per minute buys 30 s beyond the credit.
    by_amount = GrantLimits(overdraft_amount=parse_amount("0.03"))
    assert (
        continue_session(account(balance="0"), SessionRequest(), NOW, by_amount).granted_units == 30
    )
    # No overdraft at all: the running session gets nothing more.
    none = continue_session(broke, SessionRequest(), NOW, GrantLimits(overdraft_s=0))
    assert not none.admitted
    # ... nor in strict mode.
    strict = continue_session(broke, SessionRequest(), NOW, LIMITS, strict=True)
    assert (strict.admitted, strict.reason) == (False, RefusalReason.INSUFFICIENT_CREDIT)
    # With credit, the next grant is what it buys.
    some = continue_session(account(balance="0.30"), SessionRequest(), NOW, LIMITS, strict=True)
    assert some.granted_units == 300


def test_blocked_account_running_session_continues() -> None:
    snap = account(balance="100", status=AccountStatus.BLOCKED)
    assert continue_session(snap, SessionRequest(), NOW, LIMITS).admitted


def test_snapshot_validation() -> None:
    with pytest.raises(TypeError):
        AccountSnapshot(account_id=1, name="x", balance=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timezone-aware"):
        TemporaryIncrease(amount=1, valid_until=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="either an amount or a percentage"):
        TemporaryIncrease(amount=1, percent_bp=10, valid_until=NOW)
    with pytest.raises(ValueError):
        SessionRequest(active_sessions=-1)
    with pytest.raises(ValueError):
        Tariff(billing_increment_s=0)
