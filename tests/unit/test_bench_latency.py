"""The benchmark's reading of the workers' latency histogram: quantiles of what it counted during a run."""

from __future__ import annotations

import math

from bench.driver import bucket_percentile

INF = math.inf


def test_a_quantile_is_interpolated_inside_its_bucket_from_the_runs_counts_only() -> None:
    before = {0.1: 50.0, 0.2: 50.0, 0.5: 50.0, INF: 50.0}  # counted before the run: not part of it
    after = {0.1: 50.0, 0.2: 110.0, 0.5: 150.0, INF: 150.0}  # the run: 60 in (0.1, 0.2], 40 in (0.2, 0.5]
    assert math.isclose(bucket_percentile(before, after, 0.5), 100.0 + 100.0 * 50 / 60)
    assert math.isclose(bucket_percentile(before, after, 0.99), 200.0 + 300.0 * (99 - 60) / 40)
    assert bucket_percentile({}, after, 0.0) == 0.0


def test_past_the_last_bound_the_quantile_is_that_bound_and_nothing_counted_is_nan() -> None:
    assert bucket_percentile({}, {0.1: 1.0, 1.0: 1.0, INF: 10.0}, 0.99) == 1000.0
    assert math.isnan(bucket_percentile({0.1: 3.0, INF: 3.0}, {0.1: 3.0, INF: 3.0}, 0.5))
    assert math.isnan(bucket_percentile({}, {}, 0.5))
