"""The offline closed loop's stand-ins for Prometheus and Kubernetes (bench/autoscale_offline.py).

Expected figures are worked out by hand in the comments.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))

from autoscale import ModelShape, model_manifest
from autoscale_offline import (
    Result,
    World,
    calibration_settings,
    oracle_minutes,
    prom_rate,
    slope,
    with_headroom,
)
from infleet.api import ModelDeployment
from infleet.sandbox.engine_sim import ModelSim


@pytest.mark.parametrize(
    ("points", "now", "window", "expected"),
    [
        # A counter from 0: 30 over the 6 s sampled. Extrapolating to the window's start
        # would cross zero, so it stops at the first sample: 30 * (6 / 6) / 8 = 3.75.
        ([(0, 0), (2, 10), (4, 20), (6, 30)], 6.0, 8.0, 3.75),
        # From 100: the start is 2 s before the first sample (< 1.1 x the 2 s spacing), so
        # the rise is extrapolated over 8 s: 30 * (8 / 6) / 8 = 5.0.
        ([(0, 100), (2, 110), (4, 120), (6, 130)], 6.0, 8.0, 5.0),
        # The last sample 3 s before `now` (> 1.1 x 2 s): only half a spacing is added at
        # the end, and 1 s at the start: 20 * ((4 + 1 + 1) / 4) / 8 = 3.75.
        ([(1, 50), (3, 60), (5, 70)], 8.0, 8.0, 3.75),
        # A flat counter has rate 0.
        ([(0, 5), (2, 5), (4, 5)], 4.0, 8.0, 0.0),
    ],
)
def test_prom_rate_extrapolates_as_prometheus_does(
    points: list[tuple[float, float]], now: float, window: float, expected: float
) -> None:
    assert prom_rate(points, now, window) == pytest.approx(expected)


def test_prom_rate_needs_two_samples() -> None:
    assert prom_rate([(1.0, 3.0)], 2.0, 8.0) is None
    assert prom_rate([], 2.0, 8.0) is None


def test_slope_is_the_least_squares_line() -> None:
    # 1, 3, 5 at 0, 1, 2: exactly 2 per second; noise symmetric around it keeps 2.
    assert slope([(0, 1), (1, 3), (2, 5)]) == pytest.approx(2.0)
    assert slope([(0, 1), (1, 4), (2, 5), (3, 6)]) == pytest.approx(1.6)
    assert slope([(0, 1)]) is None
    assert slope([(1, 1), (1, 2)]) is None


def _world(startup: int = 10) -> World:
    shape = ModelShape(
        ttft_ms=1000, prior_rps=5, input_tokens=512, output_tokens=128,
        startup_seconds=startup, scale_down_window=30, max_replicas=10,
    )  # fmt: skip
    model = ModelDeployment.model_validate(model_manifest("ns", "infleet", shape))
    return World(model, ModelSim())


def test_scale_down_removes_unready_pods_first_then_the_newest() -> None:
    world = _world(startup=10)
    world.scale(0.0, 3)  # pod-1..3, ready at 0 + 1 (launch) + 10
    world.scale(20.0, 5)  # pod-4, pod-5, ready at 31
    assert sorted(world.pods) == ["pod-1", "pod-2", "pod-3", "pod-4", "pod-5"]
    world.scale(25.0, 4)  # pod-5 and pod-4 are not ready: the newest of them goes
    assert sorted(world.pods) == ["pod-1", "pod-2", "pod-3", "pod-4"]
    world.scale(40.0, 2)  # all ready now: the newest two go
    assert sorted(world.pods) == ["pod-1", "pod-2"]
    assert [p.name for p in world.gone] == ["pod-5", "pod-4", "pod-3"]
    # The engine simulation has exactly the pods' replicas, the same objects.
    assert set(world.sim.replicas) == {"pod-1", "pod-2"}
    assert all(world.sim.replicas[n] is p.sim for n, p in world.pods.items())
    assert world.replica_log == [(0.0, 3), (20.0, 5), (25.0, 4), (40.0, 2)]


def test_scrape_sees_only_running_pods_and_sums_the_queue() -> None:
    world = _world(startup=10)
    world.scale(0.0, 2)
    world.scrape(0.5)  # launched at 0, running from 1 s: nothing to scrape yet
    assert world.queue_points == [(0.5, 0.0)]
    assert all(not p.series.samples for p in world.pods.values())
    world.scrape(2.0)
    assert all(p.series.last("ready", 2.0) == 0.0 for p in world.pods.values())
    world.scrape(12.0)
    assert all(p.series.last("ready", 12.0) == 1.0 for p in world.pods.values())


def _fixed(replicas: int, p95_seconds: list[float]) -> tuple[int, Result]:
    return replicas, Result(f"fixed {replicas}", 0, len(p95_seconds), 0, 0.0, replicas, p95_seconds)


def test_oracle_takes_each_minutes_fewest_replicas_that_met_it() -> None:
    # SLO 1000 ms. Minute 0: 3 replicas suffice; minute 1: only 5 (4 gave 1.2 s); minute 2:
    # no requests at all (NaN) is met by the fewest; minute 3: none met, counted at 5.
    runs = [
        _fixed(5, [0.3, 0.9, math.nan, 1.1]),
        _fixed(3, [0.8, 3.0, math.nan, 4.0]),
        _fixed(4, [0.5, 1.2, math.nan, 2.0]),
    ]
    need, unmet = oracle_minutes(runs, 1000.0)
    assert need == [3, 5, 3, 5]
    assert unmet == [3]


def test_oracle_counts_a_minute_at_the_slo_as_met() -> None:
    need, unmet = oracle_minutes([_fixed(2, [1.0]), _fixed(1, [1.0001])], 1000.0)
    assert (need, unmet) == ([2], [])


@pytest.mark.parametrize(
    ("need", "headroom", "planned"),
    [
        ([4, 5, 3], 1.0, [4, 5, 3]),  # no headroom: the need itself
        ([4, 5, 3], 0.8, [5, 7, 4]),  # 4 / 0.8 = 5 exactly stays 5
        ([4, 5, 3], 0.7, [6, 8, 5]),
        ([9], 0.9, [10]),  # 9 / 0.9 = 10 exactly, not 11 from float error
    ],
)
def test_oracle_with_headroom_rounds_need_over_target_utilization_up(
    need: list[int], headroom: float, planned: list[int]
) -> None:
    assert with_headroom(need, headroom) == planned


@pytest.mark.parametrize("headroom", [0.0, -0.5, 1.2])
def test_oracle_headroom_outside_zero_one_is_refused(headroom: float) -> None:
    with pytest.raises(ValueError, match="headroom"):
        with_headroom([3], headroom)


def test_ttft_quantile_takes_the_increase_over_the_window_summed_over_pods() -> None:
    world = _world(startup=0)
    world.scale(0.0, 2)
    first, second = (world.pods[n].sim for n in ("pod-1", "pod-2"))
    first.ttft.observe(0.05, 100)  # before the window: must not count
    world.scrape(2.0)
    # Inside the window: 50 fast answers on pod-1 and 50 slow ones on pod-2.
    first.ttft.observe(0.05, 50)
    second.ttft.observe(3.0, 50)
    world.scrape(4.0)
    # Over (0, 4]: 100 answers, half of them slow. The 40th percentile is a fast one (inside
    # the 0.04-0.06 s bucket), the 60th a slow one (2.5-5 s). Had the 100 answers from
    # before the window counted, the 60th would be fast too (rank 120 of 200).
    low, high = world.ttft_quantile(0.4, 4.0, 4.0), world.ttft_quantile(0.6, 4.0, 4.0)
    assert low is not None
    assert 0.04 <= low <= 0.06
    assert high is not None
    assert 2.5 <= high <= 5.0
    # A window holding one scrape per pod has no increase: nothing observed.
    assert world.ttft_quantile(0.95, 4.0, 1.0) is None


def test_calibration_settings_parse_fields_and_reject_unknown_ones() -> None:
    assert calibration_settings("") is None
    got = calibration_settings("max_factor=2, recover_min_load=0.9")
    assert got is not None
    assert (got.max_factor, got.recover_min_load) == (2.0, 0.9)
    with pytest.raises(ValueError, match="not FIELD=VALUE"):
        calibration_settings("max=2")
    with pytest.raises(ValueError, match="needs a number"):
        calibration_settings("max_factor=two")
    with pytest.raises(ValueError, match=r"max_factor must be a number in \[1, 2\]"):
        calibration_settings("max_factor=3")
