"""How the usage writer sends instants to PostgreSQL: integer microseconds since the epoch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from ocs.store.source import _micros


@pytest.mark.parametrize(
    ("at", "micros"),
    [
        (datetime(1970, 1, 1, tzinfo=UTC), 0),
        (datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC), 1),
        (datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC), -1),
        (datetime(2026, 3, 29, 1, 0, 0, 123_457, tzinfo=UTC), 1_774_746_000_123_457),
        # The same instant in another offset, and naive (taken as UTC, as asyncpg does).
        (
            datetime(2026, 3, 28, 20, 0, 0, 123_457, tzinfo=timezone(timedelta(hours=-5))),
            1_774_746_000_123_457,
        ),
        (datetime(2026, 3, 29, 1, 0, 0, 123_457), 1_774_746_000_123_457),
        (datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC), 253_402_300_799_999_999),
    ],
)
def test_instants_become_exact_microseconds(at: datetime, micros: int) -> None:
    assert _micros(at) == micros


def test_no_instant_stays_none() -> None:
    assert _micros(None) is None
