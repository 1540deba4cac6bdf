"""Log rate limiting: a flood of similar lines stays bounded and is summarised; secrets never
reach the output."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from ocs import logs
from ocs.logs import RateLimitFilter, TextFormatter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO, RateLimitFilter, FakeClock]]:
    stream = io.StringIO()
    clock = FakeClock()
    limit = RateLimitFilter(per_second=5.0, burst=20, clock=clock)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter())
    handler.addFilter(limit)
    logger = logging.getLogger("ocs.test.flood")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield logger, stream, limit, clock
    logger.handlers.clear()


def test_a_flood_is_cut_to_the_burst_and_counted(captured) -> None:
    logger, stream, limit, _clock = captured
    for i in range(100_000):
        logger.debug("radius: request dropped", extra={"reason": "unknown_client", "source": i})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 20
    assert limit.suppressed_total == 100_000 - 20
    assert all("reason=unknown_client" in line for line in lines)


def test_each_reason_has_its_own_bucket(captured) -> None:
    logger, stream, _limit, _clock = captured
    for _ in range(1000):
        logger.debug("radius: request dropped", extra={"reason": "queue_full"})
    logger.debug("radius: request dropped", extra={"reason": "bad_authenticator"})
    assert "reason=bad_authenticator" in stream.getvalue()


def test_tokens_refill_over_time(captured) -> None:
    logger, stream, _limit, clock = captured
    for _ in range(50):
        logger.info("same line")
    clock.now += 2.0  # 2 s at 5 lines/s: 10 more
    for _ in range(50):
        logger.info("same line")
    assert len(stream.getvalue().splitlines()) == 30


def test_summary_reports_what_was_suppressed(captured, monkeypatch) -> None:
    logger, stream, limit, clock = captured
    monkeypatch.setattr(logs, "_rate_limit", limit)
    for _ in range(120):
        logger.warning("accounting not recorded: %s", "database unavailable")
    assert logs.log_suppressed_summaries() == 0  # not yet due (once per SUMMARY_INTERVAL_S)
    clock.now += logs.SUMMARY_INTERVAL_S
    assert logs.log_suppressed_summaries() == 100
    summary = stream.getvalue().splitlines()[-1]
    assert "suppressed 100 similar lines" in summary
    assert "summary_of=accounting not recorded: %s" in summary
    clock.now += logs.SUMMARY_INTERVAL_S
    assert logs.log_suppressed_summaries() == 0  # counted once


def test_bucket_table_is_bounded(captured) -> None:
    logger, _stream, limit, _clock = captured
    for i in range(logs.MAX_BUCKETS * 3):
        logger.debug("line %d", i, extra={"reason": f"r{i}"})
    assert len(limit._buckets) <= logs.MAX_BUCKETS


def test_secret_and_password_fields_are_masked() -> None:
    record = logging.makeLogRecord(
        {"msg": "client added", "secret": "testing123", "db_password": "pw", "client": "nas1"}
    )
    text = TextFormatter().format(record)
    json_text = logs.JsonFormatter().format(record)
    for out in (text, json_text):
        assert "testing123" not in out and 'pw"' not in out and "=pw" not in out
        assert "nas1" in out


def test_set_level_changes_the_root_level() -> None:
    root = logging.getLogger()
    before = root.level
    try:
        logs.set_level("debug")
        assert root.level == logging.DEBUG
        logs.set_level("warning")
        assert root.level == logging.WARNING
    finally:
        root.setLevel(before)
