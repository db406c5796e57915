"""Replica bounds from an autoscaling decision, and the status fields of a live-scaled model."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infleet.core.autoscale import (
    DemandDecision,
    ModelScalingState,
    Observation,
    ScalingPolicy,
    SLOVerdict,
    limit_replica_change,
)
from infleet.core.autoscale_status import (
    autoscale_conditions,
    autoscale_status,
    last_scale_time,
    observed_status,
    replica_bounds,
)
from infleet.core.fleet import Demand

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
EARLIER = "2026-05-01T11:00:00Z"


def decision(
    min_replicas: int = 1,
    *,
    to_zero: bool = False,
    hold: bool = False,
    rps: float = 4.0,
    source: str = "metrics",
) -> DemandDecision:
    available = not hold
    return DemandDecision(
        demand=Demand(rps, source),
        state=ModelScalingState(),
        observed_requests_per_second=None if hold else rps,
        metrics_available=available,
        metrics_reason="MetricsFresh" if available else "RequestRateMissing",
        metrics_message="request rate fresh" if available else "request rate not observed",
        hold=hold,
        scale_to_zero=to_zero,
        wake=False,
        min_replicas=min_replicas,
        explanation="",
    )


NO_LIMITS = ScalingPolicy()


@pytest.mark.parametrize(
    ("case", "dec", "spec_max", "current", "policy", "expected"),
    [
        ("fresh, no limits", decision(1), 10, 3, NO_LIMITS, (1, 10)),
        ("hold keeps current", decision(3, hold=True), 10, 3, NO_LIMITS, (3, 10)),
        ("hold never above spec max", decision(5, hold=True), 3, 5, NO_LIMITS, (3, 3)),
        ("to zero", decision(0, to_zero=True), 10, 4, NO_LIMITS, (0, 0)),
        (
            "to zero one step at a time",
            decision(0, to_zero=True),
            10,
            4,
            ScalingPolicy(max_scale_down_replicas=1),
            (3, 3),
        ),
        ("up limit caps max", decision(1), 10, 3, ScalingPolicy(max_scale_up_replicas=2), (1, 5)),
        (
            "up limit beats a raised min",
            decision(10),
            20,
            3,
            ScalingPolicy(max_scale_up_replicas=2),
            (5, 5),
        ),
        (
            "down limit raises min",
            decision(1),
            10,
            4,
            ScalingPolicy(max_scale_down_replicas=1),
            (3, 10),
        ),
        ("wake from zero", decision(1), 10, 0, ScalingPolicy(max_scale_up_replicas=1), (1, 1)),
        ("factor 2 from 3", decision(1), 10, 3, ScalingPolicy(max_scale_up_factor=2.0), (1, 6)),
        (
            "factor from zero: one",
            decision(1),
            10,
            0,
            ScalingPolicy(max_scale_up_factor=2.0),
            (1, 1),
        ),
        (
            "spec max below current, down limit",
            decision(1),
            2,
            6,
            ScalingPolicy(max_scale_down_replicas=2),
            (4, 4),
        ),
    ],
)
def test_replica_bounds(
    case: str,
    dec: DemandDecision,
    spec_max: int,
    current: int,
    policy: ScalingPolicy,
    expected: tuple[int, int],
) -> None:
    assert replica_bounds(dec, spec_max=spec_max, current=current, policy=policy) == expected, case


@given(
    floor=st.integers(0, 30),
    to_zero=st.booleans(),
    spec_max=st.integers(1, 30),
    current=st.integers(0, 40),
    up=st.one_of(st.none(), st.integers(1, 5)),
    down=st.one_of(st.none(), st.integers(1, 5)),
    factor=st.one_of(st.none(), st.floats(1.0, 4.0)),
)
def test_replica_bounds_are_ordered_and_every_total_inside_respects_the_limits(
    floor: int,
    to_zero: bool,
    spec_max: int,
    current: int,
    up: int | None,
    down: int | None,
    factor: float | None,
) -> None:
    policy = ScalingPolicy(
        max_scale_up_replicas=up, max_scale_down_replicas=down, max_scale_up_factor=factor
    )
    low, high = replica_bounds(
        decision(floor, to_zero=to_zero), spec_max=spec_max, current=current, policy=policy
    )
    assert 0 <= low <= high
    for total in (low, high):
        assert limit_replica_change(current, total, policy) == total
    if not to_zero and high >= floor and floor <= spec_max:
        # Nothing conflicts: the floor holds (raised only by the down limit).
        assert low >= min(floor, spec_max)


def test_replica_bounds_rejects_negative_counts() -> None:
    with pytest.raises(ValueError, match="spec_max and current"):
        replica_bounds(decision(), spec_max=3, current=-1, policy=NO_LIMITS)


@pytest.mark.parametrize(
    ("obs", "expected"),
    [
        (
            Observation(request_rate=6.12345, queue_length=2.0, ttft_ms=212.345, tpot_ms=41.26),
            {"requestsPerSecond": 6.123, "ttftMs": 212.3, "tpotMs": 41.3, "queueLength": 2.0},
        ),
        (
            Observation(request_rate=None, data_age_seconds=float("inf")),
            {"requestsPerSecond": None, "ttftMs": None, "tpotMs": None, "queueLength": None},
        ),
        (
            Observation(request_rate=0.0, queue_length=0.0, ttft_ms=float("nan"), tpot_ms=-1.0),
            {"requestsPerSecond": 0.0, "ttftMs": None, "tpotMs": None, "queueLength": 0.0},
        ),
    ],
)
def test_observed_status(obs: Observation, expected: dict[str, float | None]) -> None:
    assert observed_status(obs) == expected


def test_conditions_from_decision_and_verdict() -> None:
    fresh = autoscale_conditions(decision(), SLOVerdict(True, "WithinSLO", "p95 TTFT ok"))
    assert fresh == [
        {
            "type": "MetricsAvailable",
            "status": "True",
            "reason": "MetricsFresh",
            "message": "request rate fresh",
        },
        {"type": "SLOMet", "status": "True", "reason": "WithinSLO", "message": "p95 TTFT ok"},
    ]
    held = autoscale_conditions(
        decision(hold=True), SLOVerdict(None, "MetricsStale", "metrics inf s old")
    )
    assert [(c["type"], c["status"], c["reason"]) for c in held] == [
        ("MetricsAvailable", "False", "RequestRateMissing"),
        ("SLOMet", "Unknown", "MetricsStale"),
    ]


@pytest.mark.parametrize(
    ("before", "after", "previous", "expected"),
    [
        (2, 3, EARLIER, "2026-05-01T12:00:00Z"),
        (3, 2, None, "2026-05-01T12:00:00Z"),
        (3, 3, EARLIER, EARLIER),
        (0, 0, None, None),
    ],
)
def test_last_scale_time(
    before: int, after: int, previous: str | None, expected: str | None
) -> None:
    assert last_scale_time(before, after, previous, NOW) == expected


def _planned_status(desired: int) -> dict[str, object]:
    return {
        "desiredReplicas": desired,
        "demand": {"requestsPerSecond": 8.0, "source": "prior"},
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "ReplicasReady", "message": "",
             "lastTransitionTime": EARLIER},
            {"type": "Scheduled", "status": "True", "reason": "Placed", "message": "",
             "lastTransitionTime": EARLIER},
            {"type": "SLOMet", "status": "True", "reason": "WithinSLO", "message": "old",
             "lastTransitionTime": EARLIER},
        ],
    }  # fmt: skip


def test_status_overlays_live_fields_and_keeps_condition_order_and_times() -> None:
    state = replace(
        ModelScalingState(samples=((100.0, 8.0),), planned_requests_per_second=8.0),
        calibration=(("h100", 0.85),),
    )
    obs = Observation(request_rate=7.5, queue_length=1.0, ttft_ms=300.0, tpot_ms=None)
    why = "observed 8.00 rps (completions 7.50, in-flight growth 0.50); planning for it"
    out = autoscale_status(
        _planned_status(desired=3),
        decision=replace(decision(rps=8.0), explanation=why),
        observation=obs,
        verdict=SLOVerdict(True, "WithinSLO", "p95 TTFT 300.0 ms <= 500 ms"),
        state=state,
        replicas_before=2,
        previous_scale_time=EARLIER,
        now=NOW,
        generation=4,
    )
    assert out["demand"] == {"requestsPerSecond": 8.0, "source": "metrics", "explanation": why}
    assert out["observed"] == {
        "requestsPerSecond": 7.5,
        "ttftMs": 300.0,
        "tpotMs": None,
        "queueLength": 1.0,
    }
    assert out["calibration"] == [{"variant": "h100", "factor": 0.85}]
    assert out["lastScaleTime"] == "2026-05-01T12:00:00Z"  # 2 -> 3 replicas
    assert ModelScalingState.from_dict(out["scaling"]) == state
    types = [c["type"] for c in out["conditions"]]
    assert types == ["Ready", "Scheduled", "SLOMet", "MetricsAvailable"]
    slo = out["conditions"][2]
    assert slo["lastTransitionTime"] == EARLIER  # still True: time kept
    assert slo["message"] == "p95 TTFT 300.0 ms <= 500 ms"
    assert slo["observedGeneration"] == 4
    assert out["conditions"][3]["lastTransitionTime"] == "2026-05-01T12:00:00Z"


def test_status_keeps_scale_time_when_replicas_hold() -> None:
    out = autoscale_status(
        _planned_status(desired=2),
        decision=decision(2, hold=True),
        observation=Observation(request_rate=None, data_age_seconds=float("inf")),
        verdict=SLOVerdict(None, "MetricsStale", "metrics inf s old"),
        state=ModelScalingState(),
        replicas_before=2,
        previous_scale_time=EARLIER,
        now=NOW,
        generation=1,
    )
    assert out["lastScaleTime"] == EARLIER
    by_type = {c["type"]: c for c in out["conditions"]}
    assert by_type["MetricsAvailable"]["status"] == "False"
    assert by_type["SLOMet"]["status"] == "Unknown"
    assert by_type["SLOMet"]["lastTransitionTime"] == "2026-05-01T12:00:00Z"
