"""The pipeline's clock: the wall time kept for a millisecond, never ahead, never stuck."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from ocs.charging.pipeline import WALL_CLOCK_RESOLUTION_S, SystemClock


def test_wall_is_the_machines_time_to_the_millisecond() -> None:
    clock = SystemClock()
    before = time.time()
    wall = clock.wall()
    after = time.time()
    assert wall.tzinfo is UTC
    assert before - WALL_CLOCK_RESOLUTION_S <= wall.timestamp() <= after


def test_wall_is_kept_within_the_millisecond_and_follows_the_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1_800_000_000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    clock = SystemClock()
    first = clock.wall()
    assert first == datetime.fromtimestamp(1_800_000_000.0, UTC)
    now[0] += WALL_CLOCK_RESOLUTION_S / 2
    assert clock.wall() is first  # the same millisecond: the kept value
    now[0] += WALL_CLOCK_RESOLUTION_S
    assert clock.wall() == datetime.fromtimestamp(now[0], UTC)
    now[0] -= 5.0  # the machine's clock stepped back: followed at once, not held
    assert clock.wall() == datetime.fromtimestamp(now[0], UTC)
