"""The probe between cycles: when a model's load has outgrown what its plan covers."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infleet.core.autoscale import ModelContext, Observation, ScalingPolicy, decide_demand
from infleet.core.probe import ProbeLine, fast_arrivals, probe_line, rising


@pytest.mark.parametrize(
    ("rate", "window", "z", "expected"),
    [
        (18.0, 2.0, 1.0, 15.0),  # 18 - sqrt(18 / 2)
        (18.0, 2.0, 2.0, 12.0),
        (8.0, 8.0, 1.0, 7.0),  # 8 - sqrt(1)
        (5.0, 8.0, 0.0, 5.0),  # z = 0: the rate as it is
        (0.0, 8.0, 1.0, 0.0),
        (None, 8.0, 1.0, None),  # no reading
        (math.nan, 8.0, 1.0, None),  # Prometheus' NaN
        (math.inf, 8.0, 1.0, None),
        (-1.0, 8.0, 1.0, None),  # a counter reset's negative rate
        (9.0, None, 1.0, None),  # no window: the noise cannot be judged
        (9.0, 0.0, 1.0, None),
        (9.0, math.inf, 1.0, None),
    ],
)
def test_fast_arrivals_lose_their_noise_margin(
    rate: float | None, window: float | None, z: float, expected: float | None
) -> None:
    got = fast_arrivals(rate, window, z)
    assert got == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize(
    ("capacity", "u", "replicas", "most", "unmet", "covered"),
    [
        (15.0, 0.8, 3, 10, 0.0, 12.0),  # 3 replicas of 5 req/s at 80%
        (15.0, 1.0, 3, 10, 0.0, 15.0),
        (7.5, 0.5, 1, 2, 0.0, 3.75),
        (15.0, 0.8, 3, 3, 0.0, None),  # at its maximum: an early cycle adds nothing
        (15.0, 0.8, 3, 2, 0.0, None),
        (15.0, 0.8, 3, 10, 0.5, None),  # short of capacity: the planner gave what it could
        (0.0, 0.8, 0, 10, 0.0, None),  # at zero: no engine signal, it wakes on its query
        (0.0, 0.8, 2, 10, 0.0, None),  # no capacity figure
        (math.nan, 0.8, 2, 10, 0.0, None),
    ],
)
def test_probe_line_is_the_capacity_at_the_target_or_none(
    capacity: float, u: float, replicas: int, most: int, unmet: float, covered: float | None
) -> None:
    line = probe_line(
        capacity_requests_per_second=capacity,
        target_utilization=u,
        replicas=replicas,
        max_replicas=most,
        unmet_requests_per_second=unmet,
    )
    if covered is None:
        assert line is None
    else:
        assert line is not None
        assert line.covered_requests_per_second == pytest.approx(covered)


@pytest.mark.parametrize("covered", [-1.0, math.nan, math.inf])
def test_probe_line_rejects_what_no_plan_covers(covered: float) -> None:
    with pytest.raises(ValueError, match="covered_requests_per_second"):
        ProbeLine(covered)


@pytest.mark.parametrize(
    ("rate", "window", "covered", "expected"),
    [
        (13.0, 8.0, 12.0, False),  # 13 - 1.27 = 11.73: within the noise of the line
        (14.0, 8.0, 12.0, True),  # 14 - 1.32 = 12.68
        (7.0, 8.0, 4.0, True),  # a step from 3 to 7 req/s on one replica's 4
        (4.5, 8.0, 4.0, False),
        (12.0, 8.0, 12.0, False),  # at the line is covered
        (None, 8.0, 4.0, False),
        (30.0, None, 4.0, False),
    ],
)
def test_rising_means_above_the_line_past_the_noise(
    rate: float | None, window: float | None, covered: float, expected: bool
) -> None:
    assert rising(ProbeLine(covered), rate, window, 1.0) is expected


# Horizon 0: no forecast, so the cycle's figure is its measured arrivals.
NO_FORECAST = ModelContext(prior_requests_per_second=1.0, current_replicas=3, horizon_seconds=0.0)


@given(
    excess=st.floats(0.0, 4.0),
    share=st.floats(0.0, 1.0),
    fast_window=st.floats(1.0, 120.0),
    replicas=st.integers(1, 50),
    capacity=st.floats(0.1, 50.0),
    u=st.floats(0.1, 1.0),
    z=st.floats(0.0, 3.0),
)
def test_a_probe_that_fires_is_followed_by_a_cycle_that_scales_up(
    excess: float,
    share: float,
    fast_window: float,
    replicas: int,
    capacity: float,
    u: float,
    z: float,
) -> None:
    """The probe applies the cycle's own fast-attack test: whenever it fires, the cycle it
    starts (same readings) plans more than the replicas' capacity at the target. The short
    rate is drawn near the line (up to 4 of its noise's standard deviations above), where a
    looser probe would fire and the cycle would not scale."""
    line = probe_line(
        capacity_requests_per_second=replicas * capacity,
        target_utilization=u,
        replicas=replicas,
        max_replicas=replicas + 1,
        unmet_requests_per_second=0.0,
    )
    assert line is not None
    covered = line.covered_requests_per_second
    fast = covered + excess * math.sqrt(covered / fast_window)
    if not rising(line, fast, fast_window, z):
        return
    observation = Observation(
        request_rate=share * fast, fast_request_rate=fast, fast_window_seconds=fast_window
    )
    decision = decide_demand(None, observation, NO_FORECAST, ScalingPolicy(fast_attack_z=z), 0.0)
    assert decision.demand.requests_per_second / u > replicas * capacity
