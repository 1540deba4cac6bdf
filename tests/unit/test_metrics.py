"""ocs.metrics: the per-request families kept in plain numbers and read when scraped."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from ocs.metrics import LocalCounter, LocalHistogram


def test_a_counter_adds_the_counts_kept_elsewhere_when_scraped() -> None:
    registry = CollectorRegistry()
    family = LocalCounter("ocs_things_total", "Things.", ["result"], registry=registry)
    family.labels("admitted")  # shown from the start, at 0
    family.labels("blocked").inc(2)
    kept: dict[str, int] = {}
    family.count_from(lambda: kept)

    def value(result: str) -> float | None:
        return registry.get_sample_value("ocs_things_total", {"result": result})

    assert (value("admitted"), value("blocked"), value("closed")) == (0.0, 2.0, None)
    kept["admitted"] = 5  # counted by the event loop after the family was made
    kept["closed"] = 1
    assert (value("admitted"), value("blocked"), value("closed")) == (5.0, 2.0, 1.0)


def test_counts_kept_elsewhere_need_a_family_of_one_label() -> None:
    registry = CollectorRegistry()
    family = LocalCounter("ocs_pairs_total", "Pairs.", ["a", "b"], registry=registry)
    with pytest.raises(ValueError, match="one label"):
        family.count_from(dict)


def test_local_children_count_and_refuse_a_negative_increment() -> None:
    registry = CollectorRegistry()
    counter = LocalCounter("ocs_c_total", "C.", ["k"], registry=registry)
    counter.labels("x").inc()
    counter.labels("x").inc(2.5)
    with pytest.raises(ValueError, match="non-negative"):
        counter.labels("x").inc(-1)
    assert registry.get_sample_value("ocs_c_total", {"k": "x"}) == 3.5
    histogram = LocalHistogram("ocs_h_seconds", "H.", buckets=(0.1, 1.0), registry=registry)
    for amount in (0.05, 0.1, 0.5, 2.0):
        histogram.observe(amount)
    buckets = [
        registry.get_sample_value("ocs_h_seconds_bucket", {"le": le})
        for le in ("0.1", "1.0", "+Inf")
    ]
    assert buckets == [2.0, 3.0, 4.0]
    assert registry.get_sample_value("ocs_h_seconds_count") == 4.0
    assert registry.get_sample_value("ocs_h_seconds_sum") == pytest.approx(2.65)
