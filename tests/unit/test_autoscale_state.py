"""Scaling state persistence, and properties of the policy over arbitrary cycle sequences."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infleet.core.autoscale import (
    ModelContext,
    ModelScalingState,
    Observation,
    ScalingPolicy,
    decide_demand,
    limit_replica_change,
)
from infleet.core.calibration import CalibrationUpdate


def through_json(state: ModelScalingState) -> ModelScalingState:
    return ModelScalingState.from_dict(json.loads(json.dumps(state.to_dict())))


@pytest.mark.parametrize(
    "state",
    [
        ModelScalingState(),
        ModelScalingState(last_traffic_time=12.5),
        ModelScalingState(
            samples=((0.0, 1.5), (15.0, 2.0)),
            last_queue=(15.0, 3.0),
            last_traffic_time=15.0,
            planned_requests_per_second=2.5,
            planned_source="forecast",
            metrics_available=True,
            calibration=(("h100", 0.85), ("l4", 1.0)),
        ),
        ModelScalingState(
            scaled_to_zero=True,
            planned_requests_per_second=0.0,
            planned_source="metrics",
            metrics_available=False,
        ),
        ModelScalingState(planned_requests_per_second=7.0, planned_source="prior"),
        ModelScalingState(last_replicas=3, last_change_time=1700000000.5),
    ],
)
def test_state_round_trips_through_a_plain_dict(state: ModelScalingState) -> None:
    assert through_json(state) == state


def test_state_dict_shape() -> None:
    state = ModelScalingState(
        samples=((0.0, 1.5),),
        planned_requests_per_second=1.5,
        planned_source="metrics",
        calibration=(("h100", 0.85),),
    )
    assert state.to_dict() == {
        "samples": [[0.0, 1.5]],
        "plannedRequestsPerSecond": 1.5,
        "plannedSource": "metrics",
        "scaledToZero": False,
        "calibration": {"h100": 0.85},
    }


def test_from_dict_accepts_integers_for_numbers() -> None:
    state = ModelScalingState.from_dict({"samples": [[0, 2]], "lastTrafficTime": 30})
    assert state.samples == ((0.0, 2.0),)
    assert state.last_traffic_time == 30.0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "scaling state must be a mapping"),
        ({"sample": []}, "unknown field\\(s\\) sample"),
        ({"samples": "x"}, "samples must be a list"),
        ({"samples": [[0, 1, 2]]}, "samples\\[0\\] must be a \\[time, value\\] pair"),
        ({"samples": [[0, 1], [1, "a"]]}, "samples\\[1\\]\\[1\\] must be a finite number"),
        ({"samples": [[0, float("nan")]]}, "samples\\[0\\]\\[1\\] must be a finite number"),
        ({"lastQueue": [1]}, "lastQueue must be a \\[time, value\\] pair"),
        ({"lastTrafficTime": True}, "lastTrafficTime must be a finite number"),
        ({"plannedSource": "guess"}, "plannedSource must be one of metrics, prior, forecast"),
        ({"scaledToZero": "yes"}, "scaledToZero must be true or false"),
        ({"metricsAvailable": 1}, "metricsAvailable must be true or false"),
        ({"calibration": [1]}, "calibration must be a mapping"),
        ({"calibration": {"h100": 0}}, "calibration.h100 must be > 0"),
        ({"lastReplicas": -1}, "lastReplicas must be an integer >= 0"),
        ({"lastReplicas": 2.5}, "lastReplicas must be an integer >= 0"),
        ({"lastChangeTime": "now"}, "lastChangeTime must be a finite number"),
    ],
)
def test_from_dict_names_the_bad_field(data: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelScalingState.from_dict(data)


def test_with_calibration_stores_factors_sorted() -> None:
    state = ModelScalingState(calibration=(("l4", 0.9),)).with_calibration(
        {
            "h100": CalibrationUpdate(0.85, "derated", "x"),
            "l4": CalibrationUpdate(0.918, "recovered", "y"),
        }
    )
    assert state.calibration == (("h100", 0.85), ("l4", 0.918))
    assert state.calibration_factors() == {"h100": 0.85, "l4": 0.918}


# --- properties over arbitrary cycle sequences -------------------------------------------


@dataclass(frozen=True)
class Cycle:
    dt: float
    obs: Observation
    current_replicas: int


maybe_rate = st.one_of(st.none(), st.floats(0, 500, allow_nan=False))
cycles = st.builds(
    Cycle,
    dt=st.floats(1, 120, allow_nan=False),
    obs=st.builds(
        Observation,
        request_rate=st.one_of(maybe_rate, st.just(0.0)),
        queue_length=st.one_of(st.none(), st.floats(0, 1000, allow_nan=False)),
        data_age_seconds=st.one_of(st.just(0.0), st.floats(0, 120, allow_nan=False)),
        wake_demand=st.one_of(st.none(), st.just(0.0), st.floats(0, 50, allow_nan=False)),
    ),
    current_replicas=st.integers(0, 20),
)
policies = st.builds(
    ScalingPolicy,
    scale_down_window_seconds=st.sampled_from([0.0, 60.0, 300.0]),
    scale_down_tolerance=st.sampled_from([0.0, 0.1, 0.5]),
    scale_to_zero=st.booleans(),
    idle_seconds=st.sampled_from([30.0, 600.0]),
    wake_query_configured=st.booleans(),
    max_samples=st.integers(2, 40),
)


@settings(max_examples=150)
@given(
    policies,
    st.lists(cycles, min_size=1, max_size=40),
    st.floats(0, 100, allow_nan=False),
    st.integers(0, 3),
    st.floats(0, 900, allow_nan=False),
)
def test_policy_invariants(
    policy: ScalingPolicy,
    sequence: list[Cycle],
    prior: float,
    min_replicas: int,
    horizon: float,
) -> None:
    now = 1000.0
    state: ModelScalingState | None = None
    for cycle in sequence:
        now += cycle.dt
        ctx = ModelContext(
            prior_requests_per_second=prior,
            current_replicas=cycle.current_replicas,
            min_replicas=min_replicas,
            horizon_seconds=horizon,
        )
        previous = None if state is None else state.planned_requests_per_second
        d = decide_demand(state, cycle.obs, ctx, policy, now)
        planned = d.demand.requests_per_second
        fresh = cycle.obs.data_age_seconds <= policy.stale_after_seconds

        # Fresh metrics: never plan below what is observed (completions + queue terms).
        if fresh and cycle.obs.request_rate is not None and not d.scale_to_zero:
            assert d.observed_requests_per_second is not None
            assert planned >= d.observed_requests_per_second >= cycle.obs.request_rate
        # A hold never lowers the plan nor the replicas.
        if d.hold and not d.scale_to_zero:
            assert not d.metrics_available
            assert d.min_replicas >= cycle.current_replicas
            if previous is not None:
                assert planned >= previous
        # Zero only when the policy allows it; otherwise one replica and the spec's min.
        if d.scale_to_zero:
            assert policy.scale_to_zero
            assert min_replicas == 0
            assert (planned, d.min_replicas) == (0.0, 0)
        else:
            assert d.min_replicas >= max(min_replicas, 1)
        assert len(d.state.samples) <= policy.max_samples
        assert through_json(d.state) == d.state
        state = d.state


@given(
    st.integers(0, 200),
    st.integers(0, 200),
    st.one_of(st.none(), st.integers(1, 20)),
    st.one_of(st.none(), st.integers(1, 20)),
    st.one_of(st.none(), st.floats(1, 4)),
)
def test_limited_change_moves_towards_desired_within_limits(
    current: int, desired: int, up: int | None, down: int | None, factor: float | None
) -> None:
    policy = ScalingPolicy(
        max_scale_up_replicas=up, max_scale_down_replicas=down, max_scale_up_factor=factor
    )
    got = limit_replica_change(current, desired, policy)
    assert min(current, desired) <= got <= max(current, desired)
    if desired != current:
        assert got != current  # always at least one step
    if up is not None and got > current:
        assert got - current <= up
    if down is not None and got < current:
        assert current - got <= down


def test_change_tracking_is_written_only_when_set() -> None:
    assert "lastReplicas" not in ModelScalingState().to_dict()
    data = ModelScalingState(last_replicas=0, last_change_time=5.0).to_dict()
    assert (data["lastReplicas"], data["lastChangeTime"]) == (0, 5.0)
