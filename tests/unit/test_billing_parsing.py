"""Pure parts of issue 6: the CSV checker, the CLI's duration/percentage/threshold parsers, the
webhook URL, body and backoff. No database, no sockets."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from ocs.admin.account_import import ImportFailed, parse_accounts_csv
from ocs.billing.webhooks import (
    DeliveryFailed,
    WebhookTarget,
    _status_code,
    backoff_s,
    webhook_body,
)
from ocs.cli import (
    ProgressBar,
    UsageError,
    format_duration,
    parse_duration,
    parse_percent,
    parse_thresholds,
)
from ocs.core.identity import IdentityKind
from ocs.core.model import AccountStatus, LimitBasis

pytestmark = pytest.mark.dates


def _csv(text: str) -> list[str]:
    return io.StringIO(text).readlines()


def test_csv_rows_are_parsed_with_defaults_for_empty_cells() -> None:
    rows = parse_accounts_csv(
        _csv(
            "Name,credit_limit,limit_basis,status,e164,sip_uri,opening_balance,max_sessions\n"
            "a,100.5,unbilled,blocked,+1 555 000 0001 | 15550000002,,12,3\n"
            "\n"
            "b,,,,,sip:b@example.com,,\n"
        )
    )
    a, b = rows
    assert (a.line, b.line) == (2, 4)
    assert a.settings.credit_limit == 100_500_000
    assert a.settings.limit_basis is LimitBasis.UNBILLED
    assert a.settings.status is AccountStatus.BLOCKED
    assert a.settings.max_sessions == 3
    assert a.opening_balance == 12_000_000
    assert a.identities == ((IdentityKind.E164, "15550000001"), (IdentityKind.E164, "15550000002"))
    assert b.settings.credit_limit is None and b.opening_balance == 0
    assert b.identities[0][0] is IdentityKind.SIP_URI


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "line 1: the file is empty"),
        ("name,colour\n", "line 1: unknown column 'colour'"),
        ("credit_limit\n1\n", "line 1: the header has no 'name' column"),
        ("name,name\n", "line 1: column name appears twice"),
        ("name,credit_limit\n,1\n", "line 2: name is empty"),
        ("name,credit_limit\na,1.0000001\n", "line 2: credit_limit: '1.0000001' has more than 6"),
        ("name,max_sessions\na,-1\n", "line 2: max_sessions: '-1' must be 0 or more"),
        ("name,limit_basis\na,monthly\n", "line 2: limit_basis: 'monthly' is not one of"),
        ("name\na\nb\na\n", "line 4: account 'a' is also on line 2"),
        ("name,e164\na,15550000001\nb,+1 555 000 0001\n", "line 3: e164 '15550000001' is also on"),
        ('name\n"a\n', "line 2:"),
    ],
)
def test_csv_problems_name_their_line(text: str, problem: str) -> None:
    with pytest.raises(ImportFailed) as failed:
        parse_accounts_csv(_csv(text))
    assert problem in str(failed.value)
    assert str(failed.value).startswith("nothing was imported")


def test_every_csv_problem_is_reported_not_just_the_first() -> None:
    text = "name,credit_limit\n" + "".join(f"a{n},x\n" for n in range(60))
    with pytest.raises(ImportFailed) as failed:
        parse_accounts_csv(_csv(text))
    assert len(failed.value.problems) == 60
    assert "... and 10 more" in str(failed.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("2w", timedelta(weeks=2)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("90m", timedelta(minutes=90)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "soon", "30", "30x", "d", "3d soon"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(UsageError, match="is not a duration"):
        parse_duration(text)


def test_format_duration() -> None:
    assert format_duration(timedelta(days=30)) == "30 days"
    assert format_duration(timedelta(days=1, hours=2, minutes=1)) == "1 day 2 hours 1 minute"
    assert format_duration(timedelta(0)) == "0 minutes"


def test_percentages_and_thresholds() -> None:
    assert parse_percent("12.5%") == Decimal("12.5")
    for bad in ("12", "x%", "-1%", "10001%", "1.234%", "nan%"):
        with pytest.raises(UsageError):
            parse_percent(bad)
    assert parse_thresholds("50, 10,20%") == ([50_000_000, 10_000_000], [Decimal("20")])
    assert parse_thresholds("none") == ([], []) == parse_thresholds("")
    with pytest.raises(UsageError, match="an empty item"):
        parse_thresholds("5,,1")


def test_webhook_target() -> None:
    target = WebhookTarget.parse("https://hooks.example.com/ocs?x=1")
    assert (target.scheme, target.port, target.path, target.host_header) == (
        "https",
        443,
        "/ocs?x=1",
        "hooks.example.com",
    )
    local = WebhookTarget.parse("http://[::1]:8080")
    assert (local.host, local.path, local.host_header) == ("::1", "/", "[::1]:8080")
    for bad in ("ftp://x/", "http:///nohost", "https://user:pw@x/"):
        with pytest.raises(ValueError, match="webhook URL"):
            WebhookTarget.parse(bad)


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_s(n, 1.0, 10.0) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert backoff_s(10_000, 1.0, 300.0) == 300.0


def test_webhook_body_and_status_line() -> None:
    body = webhook_body(7, "low_funds", 3, datetime(2026, 1, 1, tzinfo=UTC), {"available": "1.50"})
    assert json.loads(body) == {
        "id": 7,
        "topic": "low_funds",
        "account_id": 3,
        "created_at": "2026-01-01T00:00:00+00:00",
        "data": {"available": "1.50"},
    }
    assert _status_code(b"HTTP/1.1 204 No Content\r\n") == 204
    for bad in (b"", b"SSH-2.0-OpenSSH\r\n", b"HTTP/1.1 OK\r\n"):
        with pytest.raises(DeliveryFailed, match="not an HTTP answer"):
            _status_code(bad)


def test_progress_bar_off_a_terminal_prints_every_tenth() -> None:
    out = io.StringIO()
    bar = ProgressBar("importing", out)
    for done in range(1, 101):
        bar(done, 100)
    lines = out.getvalue().splitlines()
    assert len(lines) == 11  # the first row, then every tenth
    assert lines[-1] == "importing [####################] 100% 100/100"
