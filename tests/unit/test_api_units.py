"""The account API's pure parts: its configuration, the per-token rate limit, the problem
documents, cursors, and the instants people type for CDR exports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ocs.admin.idempotency import KeyReused, request_digest
from ocs.admin.parsing import InvalidRequest, parse_instant
from ocs.api.problems import RULES, ApiProblem, problem_from
from ocs.api.ratelimit import RateLimiter
from ocs.config import ConfigError, parse_config
from ocs.store.errors import Conflict, NotFound, Refused, StoreError


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"api": {"listen": "0.0.0.0"}}, "api.listen = '0.0.0.0' is not allowed"),
        ({"api": {"max_body_bytes": 10}}, "api.max_body_bytes = 10 is not allowed"),
        ({"api": {"rate_limit_per_s": 0}}, "api.rate_limit_per_s = 0 is not allowed"),
        ({"api": {"rate_burst_requests": "9"}}, "api.rate_burst_requests = '9' is not allowed"),
        ({"api": {"page_max_items": 1}}, "api.page_max_items = 1 is not allowed"),
        ({"api": {"idempotency_keep_s": 5}}, "api.idempotency_keep_s = 5 is not allowed"),
        ({"api": {"with_daemon": "yes"}}, "api.with_daemon = 'yes' is not allowed"),
        ({"cdr": {"export": "ftp"}}, "cdr.export = 'ftp' is not allowed"),
        ({"cdr": {"export": "webhook"}}, "cdr.export = 'webhook' needs cdr.webhook_url"),
        ({"cdr": {"webhook_url": "ftp://x/y"}}, "cdr.webhook_url = 'ftp://x/y' is not allowed"),
        (
            {"cdr": {"webhook_url": "https://user:pw@billing/cdrs"}},
            # the password is not shown (issue 14: secrets never appear in errors)
            "cdr.webhook_url = 'https://user:***@billing/cdrs' is not allowed",
        ),
        ({"cdr": {"interval_s": 0}}, "cdr.interval_s = 0 is not allowed"),
        ({"cdr": {"batch_max_records": 0}}, "cdr.batch_max_records = 0 is not allowed"),
        (
            {"cdr": {"backoff_initial_s": 10.0, "backoff_max_s": 1.0}},
            "cdr.backoff_initial_s = 10.0 is not allowed",
        ),
    ],
)
def test_bad_api_and_cdr_values_are_named(data: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(data, {}, "test")
    assert fragment in str(error.value)


def test_api_defaults_are_loopback_and_bounded() -> None:
    config = parse_config({}, {}, "test")
    assert config.api.listen == "127.0.0.1:8080"
    assert config.api.with_daemon is False
    assert config.cdr.export == "none"
    env = parse_config({}, {"OCS_API__LISTEN": "[::1]:9000", "OCS_CDR__EXPORT": "files"}, "t")
    assert (env.api.listen, env.cdr.export) == ("[::1]:9000", "files")


def test_rate_limiter_burst_then_average_per_key() -> None:
    limiter = RateLimiter(rate_per_s=2.0, burst=3)
    assert [limiter.take(1, now=100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take(1, now=100.0) == pytest.approx(0.5)  # one more in half a second
    assert limiter.take(2, now=100.0) == 0.0  # another token, another bucket
    assert limiter.take(1, now=100.5) == 0.0
    assert limiter.take(1, now=100.5) > 0
    assert [limiter.take(1, now=200.0) for _ in range(3)] == [0.0, 0.0, 0.0]  # refilled, capped
    assert limiter.take(1, now=200.0) > 0
    with pytest.raises(ValueError):
        RateLimiter(rate_per_s=0, burst=1)


def test_service_errors_map_to_problems_with_the_same_text() -> None:
    text = (
        "operator helpdesk may credit or refund at most 10.00 per transaction; this credit is 15.00"
    )
    cases = [
        (Refused(text, "OC001"), 403, "operator-limit"),
        (Refused("account a has 0.00 available", "OC002"), 422, "insufficient-funds"),
        (Refused("account a may not transfer funds", "OC003"), 422, "not-allowed"),
        (NotFound("no account named 'x'"), 404, "not-found"),
        (Conflict("an account named 'a' exists already"), 409, "conflict"),
        (KeyReused("Idempotency-Key 'k' was used before"), 409, "idempotency-key-reused"),
        (StoreError("unknown time zone 'Mars/Base'"), 422, "invalid-request"),
        (InvalidRequest("a credit must be a positive amount"), 422, "invalid-request"),
    ]
    for exc, status, rule in cases:
        problem = problem_from(exc)
        assert problem is not None
        body = problem.body()
        assert (body["status"], body["rule"], body["type"]) == (status, rule, f"/problems/{rule}")
        assert body["detail"] == str(exc)
        assert body["title"] == RULES[rule][1]
    assert problem_from(Refused(text, "OC001")).body()["sqlstate"] == "OC001"  # type: ignore[union-attr]
    assert problem_from(RuntimeError("a bug")) is None
    assert ApiProblem("rate-limited", "slow down", retry_after_s=2).status == 429


def test_request_digest_tells_bodies_paths_and_methods_apart() -> None:
    base = request_digest("POST", "/accounts/a/payments", b'{"amount":"5"}')
    assert base == request_digest("POST", "/accounts/a/payments", b'{"amount":"5"}')
    assert base != request_digest("POST", "/accounts/a/payments", b'{"amount":"6"}')
    assert base != request_digest("POST", "/accounts/b/payments", b'{"amount":"5"}')
    assert base != request_digest("PUT", "/accounts/a/payments", b'{"amount":"5"}')


def test_instants_for_cdr_exports() -> None:
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    assert parse_instant("7d", now, UTC, what="--since") == now - timedelta(days=7)
    assert parse_instant("-12h", now, UTC, what="--since") == now - timedelta(hours=12)
    assert parse_instant("2026-12-01", now, UTC, what="--since") == datetime(
        2026, 12, 1, tzinfo=UTC
    )
    assert parse_instant("2026-12-01T08:00+01:00", now, UTC, what="--since") == datetime(
        2026, 12, 1, 7, 0, tzinfo=UTC
    )
    with pytest.raises(InvalidRequest, match="--since 'yesterday'"):
        parse_instant("yesterday", now, UTC, what="--since")
