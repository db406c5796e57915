"""The autoscaling benchmark's pure parts: the HPA/KEDA baselines and the SLO/cost arithmetic.

Every expected figure is computed by hand in the comment next to it.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))

from autoscale_math import (
    bucket_quantile,
    minute_increments,
    replica_seconds,
    replica_stats,
)
from baselines import (
    Hpa,
    HpaBehavior,
    PodMetric,
    external_average_value_replicas,
    pods_metric_replicas,
)


def ready(*values: float) -> list[PodMetric]:
    return [PodMetric(v, True) for v in values]


@pytest.mark.parametrize(
    ("current", "pods", "target", "want"),
    [
        # mean 0.9 / 0.8 = 1.125 > 1.1: ceil(1.125 * 2) = 3
        (2, ready(0.9, 0.9), 0.8, 3),
        # mean 0.85 / 0.8 = 1.0625: within the 10% tolerance
        (2, ready(0.8, 0.9), 0.8, 2),
        # mean 0.2 / 0.8 = 0.25: ceil(0.25 * 4) = 1
        (4, ready(0.2, 0.2, 0.2, 0.2), 0.8, 1),
        # ready mean 1.0 / 0.8 = 1.25 > 1 with an unready pod: recompute with it at 0:
        # (1 + 1 + 0) / 3 / 0.8 = 0.833 < 1 flips the direction: keep 3
        (3, [*ready(1.0, 1.0), PodMetric(None, False)], 0.8, 3),
        # ready mean 1.0 / 0.5 = 2; with the unready pod at 0: 2/3/0.5 = 1.333: ceil(1.333*3) = 4
        (3, [*ready(1.0, 1.0), PodMetric(0.0, False)], 0.5, 4),
        # scale down with a missing pod: it counts at the target: (0.1 + 0.8) / 2 / 0.8 = 0.5625:
        # ceil(0.5625 * 2) = 2 = current... proposed 2 is not above current 2: 2
        (2, [*ready(0.1), PodMetric(None, True)], 0.8, 2),
        # scale up with a missing pod at 0: (1.6 + 0) / 2 / 0.8 = 1.0: within tolerance: keep
        (2, [*ready(1.6), PodMetric(None, True)], 0.8, 2),
        # no ready pod reports: no metrics, no change
        (3, [PodMetric(None, False)] * 3, 0.8, 3),
    ],
)
def test_pods_metric_replicas(
    current: int, pods: list[PodMetric], target: float, want: int
) -> None:
    assert pods_metric_replicas(current, pods, target, 0.1) == want


@pytest.mark.parametrize(
    ("current", "total", "threshold", "want"),
    [
        (1, 0.0, 5.0, 0),  # ceil(0 / 5) = 0; the HPA's min of 1 applies later
        (2, 23.0, 5.0, 5),  # 23 / (5 * 2) = 2.3: ceil(23 / 5) = 5
        (4, 21.0, 5.0, 4),  # 21 / 20 = 1.05: within 10%
        (4, 23.0, 5.0, 5),  # 23 / 20 = 1.15: ceil(4.6) = 5
    ],
)
def test_external_average_value_replicas(
    current: int, total: float, threshold: float, want: int
) -> None:
    assert external_average_value_replicas(current, total, threshold, 0.1) == want


def test_scale_up_is_limited_to_double_or_four_pods_per_period() -> None:
    hpa = Hpa(HpaBehavior(max_replicas=100))
    # From 3: max(ceil(3 * 2), 3 + 4) = 7 allowed in the first 15 s.
    assert hpa.decide(0.0, 3, 20) == 7
    hpa.record(0.0, 3, 7)
    # 10 s later the period still started at 3 replicas: the limit stays 7.
    assert hpa.decide(10.0, 7, 20) == 7
    hpa.record(10.0, 7, 7)
    # At 16 s the first event left the 15 s period: from 7, max(14, 11) = 14.
    assert hpa.decide(16.0, 7, 20) == 14


def test_scale_down_waits_for_the_window_and_takes_its_highest_recommendation() -> None:
    hpa = Hpa(HpaBehavior(max_replicas=20))
    assert hpa.decide(0.0, 8, 8) == 8
    assert hpa.decide(15.0, 8, 3) == 8  # 8 at t=0 is in the 300 s window
    assert hpa.decide(200.0, 8, 5) == 8
    # At 301 s the 8s of t=0 (the seeded one and the first) are out; the highest left is 5.
    assert hpa.decide(301.0, 8, 2) == 5
    # At 501 s only 2 (t=301) and this 4 are left: 4.
    assert hpa.decide(501.0, 5, 4) == 4


def test_min_and_max_bound_the_result() -> None:
    hpa = Hpa(HpaBehavior(min_replicas=2, max_replicas=5, scale_down_window_seconds=0))
    assert hpa.decide(0.0, 3, 0) == 2
    assert hpa.decide(15.0, 3, 9) == 5


def test_scaled_divides_every_time_knob() -> None:
    b = HpaBehavior().scaled(8.0)
    assert (b.sync_seconds, b.scale_down_window_seconds, b.scale_up_period_seconds) == (
        15 / 8,
        300 / 8,
        15 / 8,
    )
    assert b.tolerance == 0.1
    assert b.scale_up_pods == 4


@pytest.mark.parametrize(
    ("buckets", "want"),
    [
        # 100 requests: 95th rank is 95, in the (0.5, 1.0] bucket holding 80..100:
        # 0.5 + 0.5 * (95 - 80) / 20 = 0.875
        ({0.5: 80.0, 1.0: 100.0, math.inf: 100.0}, 0.875),
        # rank 95 of 100 in the first bucket (0, 0.5] with 100: 0.5 * 0.95 = 0.475
        ({0.5: 100.0, 1.0: 100.0, math.inf: 100.0}, 0.475),
        # rank in the +Inf bucket: its lower bound
        ({0.5: 10.0, 1.0: 20.0, math.inf: 100.0}, 1.0),
    ],
)
def test_bucket_quantile(buckets: dict[float, float], want: float) -> None:
    assert bucket_quantile(0.95, buckets) == pytest.approx(want)


def test_bucket_quantile_of_nothing_is_nan() -> None:
    assert math.isnan(bucket_quantile(0.95, {1.0: 0.0, math.inf: 0.0}))


def test_minute_increments_handles_new_gone_and_reset_pods() -> None:
    inf = math.inf
    before = {("a", 1.0): 10.0, ("a", inf): 12.0, ("gone", 1.0): 5.0, ("gone", inf): 5.0,
              ("reset", 1.0): 50.0, ("reset", inf): 50.0}  # fmt: skip
    after = {("a", 1.0): 15.0, ("a", inf): 20.0, ("new", 1.0): 3.0, ("new", inf): 4.0,
             ("reset", 1.0): 2.0, ("reset", inf): 2.0}  # fmt: skip
    # le=1: a +5, new +3, reset 2 (counter restarted) = 10; +Inf: a +8, new +4, reset 2 = 14
    assert minute_increments(before, after) == {1.0: 10.0, inf: 14.0}


def test_replica_seconds_and_stats() -> None:
    samples = [(0.0, 2), (10.0, 4), (20.0, 1)]
    # [5, 25]: 2 * 5 + 4 * 10 + 1 * 5 = 55
    assert replica_seconds(samples, 5.0, 25.0) == pytest.approx(55.0)
    # before the first sample the first count holds: [-5, 0] adds 2 * 5
    assert replica_seconds(samples, -5.0, 10.0) == pytest.approx(30.0)
    # min over samples in [5, 25] plus the one in force at 5 (2): 1; mean 55 / 20; max 4
    low, mean, high = replica_stats(samples, 5.0, 25.0)
    assert (low, high) == (1, 4)
    assert mean == pytest.approx(2.75)


@given(
    st.lists(st.tuples(st.floats(0, 1000), st.integers(0, 50)), min_size=1, max_size=20),
    st.floats(0, 500),
    st.floats(0, 500),
)
def test_replica_seconds_is_additive(raw: list[tuple[float, int]], a: float, b: float) -> None:
    samples = sorted(raw)
    lo, hi = min(a, b), max(a, b)
    mid = (lo + hi) / 2
    whole = replica_seconds(samples, lo, hi)
    parts = replica_seconds(samples, lo, mid) + replica_seconds(samples, mid, hi)
    assert whole == pytest.approx(parts, abs=1e-6)
    assert 0 <= whole <= 50 * (hi - lo) + 1e-9


@given(
    st.integers(1, 30),
    st.lists(st.floats(0, 3), min_size=1, max_size=30),
    st.floats(0.1, 2),
)
def test_hpa_proposal_never_moves_against_the_ratio(
    current: int, values: list[float], target: float
) -> None:
    pods = ready(*values)
    ratio = sum(values) / len(values) / target
    got = pods_metric_replicas(current, pods, target, 0.1)
    if abs(1 - ratio) <= 0.1:
        assert got == current
    else:
        assert got == math.ceil(ratio * len(values))
