"""Autoscaling policy: one table per rule of ``decide_demand``, plus limits and SLOMet."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import pytest

from infleet.api import ModelDeployment
from infleet.core.autoscale import (
    DemandDecision,
    ModelContext,
    ModelScalingState,
    Observation,
    ScalingPolicy,
    decide_demand,
    limit_replica_change,
    model_context,
    policy_for_model,
    slo_met,
)
from infleet.core.capacity import LatencySLO, TokenMix

POLICY = ScalingPolicy()
# Horizon 0 switches the forecast off, so the window rules can be read on their own.
FLAT = ModelContext(prior_requests_per_second=20.0, current_replicas=3, horizon_seconds=0.0)
ZERO_POLICY = ScalingPolicy(scale_to_zero=True, idle_seconds=600.0)


def run(
    observe: Callable[[float], Observation],
    times: Iterable[float],
    ctx: ModelContext = FLAT,
    policy: ScalingPolicy = POLICY,
    state: ModelScalingState | None = None,
) -> dict[float, DemandDecision]:
    """Decide at every time in order, feeding each state to the next cycle."""
    out: dict[float, DemandDecision] = {}
    for t in sorted(set(times)):
        decision = decide_demand(state, observe(t), ctx, policy, t)
        state = decision.state
        out[t] = decision
    return out


def rates(fn: Callable[[float], float | None]) -> Callable[[float], Observation]:
    return lambda t: Observation(request_rate=fn(t))


def grid(end: float, *extra: float) -> list[float]:
    return [*(15.0 * i for i in range(int(end // 15) + 1)), *extra]


# --- scale up at once ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("history", "now_rate", "expected"),
    [
        ([2.0, 2.0, 2.0], 10.0, 10.0),
        ([5.0, 5.0, 5.0], 5.5, 5.5),  # a 10% rise is not held back by the tolerance
        ([0.0, 0.0, 0.0], 0.1, 0.1),
        ([10.0, 10.0, 10.0], 10.0, 10.0),
        ([1.0, 2.0, 3.0], 8.0, 8.0),
        ([8.0, 1.0, 1.0], 9.0, 9.0),
    ],
)
def test_scale_up_at_once(history: list[float], now_rate: float, expected: float) -> None:
    series = [*history, now_rate]
    decisions = run(rates(lambda t: series[int(t // 15)]), grid(45))
    last = decisions[45.0]
    assert last.demand.requests_per_second == pytest.approx(expected)
    assert last.demand.source == "metrics"
    assert (last.hold, last.metrics_available, last.metrics_reason) == (
        False,
        True,
        "MetricsFresh",
    )


# --- scale down only after the window, then on the window's peak --------------------------


def step_down(t: float) -> float:
    return 10.0 if t <= 60 else 4.0


def step_down_with_blip(t: float) -> float:
    return 6.0 if t in (195.0, 210.0) else step_down(t)


@pytest.mark.parametrize(
    ("rate", "policy", "at", "expected"),
    [
        (step_down, POLICY, 75.0, 10.0),
        (step_down, POLICY, 300.0, 10.0),
        (step_down, POLICY, 360.0, 10.0),  # the t=60 sample is exactly 300 s old: still in
        (step_down, POLICY, 361.0, 4.0),
        (step_down, POLICY, 600.0, 4.0),
        (step_down_with_blip, POLICY, 361.0, 6.0),  # the window's peak, not the latest
        (step_down_with_blip, POLICY, 510.0, 6.0),
        (step_down_with_blip, POLICY, 511.0, 4.0),
        (step_down, ScalingPolicy(scale_down_window_seconds=60.0), 120.0, 10.0),
        (step_down, ScalingPolicy(scale_down_window_seconds=60.0), 121.0, 4.0),
        (step_down, ScalingPolicy(scale_down_window_seconds=0.0), 75.0, 4.0),
        # drops inside the 10% tolerance keep the previous plan; larger ones go through
        (lambda t: 10.0 if t <= 60 else 9.5, POLICY, 361.0, 10.0),
        (lambda t: 10.0 if t <= 60 else 9.0, POLICY, 361.0, 10.0),
        (lambda t: 10.0 if t <= 60 else 8.9, POLICY, 361.0, 8.9),
        (lambda t: 10.0 if t <= 60 else 9.5, ScalingPolicy(scale_down_tolerance=0.0), 361.0, 9.5),
    ],
)
def test_scale_down_after_the_window_on_its_peak(
    rate: Callable[[float], float], policy: ScalingPolicy, at: float, expected: float
) -> None:
    decisions = run(rates(rate), grid(at, at), policy=policy)
    assert decisions[at].demand.requests_per_second == pytest.approx(expected)


def test_scale_down_explanation_names_the_peak() -> None:
    decisions = run(rates(step_down), grid(300))
    assert decisions[300.0].explanation == (
        "observed 4.00 rps (completions 4.00); peak 10.00 rps of the last 300 s"
    )


# --- forecast over the startup time ------------------------------------------------------


@pytest.mark.parametrize(
    ("series", "horizon", "expected", "source"),
    [
        ([1.0, 2.0, 3.0], 15.0, 4.0, "forecast"),  # slope 1/15 rps/s over 15 s
        ([1.0, 2.0, 3.0], 30.0, 5.0, "forecast"),
        ([1.0, 2.0, 3.0], 300.0, 6.0, "forecast"),  # capped at 2x the current demand
        ([3.0, 3.0, 3.0], 300.0, 3.0, "metrics"),  # flat: the same figure
        ([3.0, 2.0, 1.0], 300.0, 3.0, "metrics"),  # falling: the window's peak, no forecast
        ([1.0, 2.0, 3.0], 0.0, 3.0, "metrics"),
    ],
)
def test_forecast_over_startup(
    series: list[float], horizon: float, expected: float, source: str
) -> None:
    ctx = replace(FLAT, horizon_seconds=horizon)
    decisions = run(rates(lambda t: series[int(t // 15)]), grid(30), ctx=ctx)
    assert decisions[30.0].demand.requests_per_second == pytest.approx(expected)
    assert decisions[30.0].demand.source == source


def test_model_context_horizon_is_the_slowest_planned_variant() -> None:
    model = ModelDeployment.model_validate(
        model_doc(
            variants=[
                {
                    "name": "fast",
                    "acceleratorType": "h100",
                    "maxRequestsPerSecond": 5,
                    "startupSeconds": 120,
                },
                {
                    "name": "slow",
                    "acceleratorType": "l4",
                    "maxRequestsPerSecond": 1,
                    "startupSeconds": 600,
                },
            ],
            traffic={"requestsPerSecond": 7},
            replicas={"min": 2, "max": 9},
        )
    )
    assert model_context(model.spec, 4, frozenset({"fast"})) == ModelContext(
        prior_requests_per_second=7.0, current_replicas=4, min_replicas=2, horizon_seconds=120.0
    )
    assert model_context(model.spec, 4, frozenset()).horizon_seconds == 600.0
    assert model_context(model.spec, 4, frozenset({"fast", "slow"})).horizon_seconds == 600.0


# --- in-flight growth and queue drain add demand ----------------------------------------


@pytest.mark.parametrize(
    ("rate", "q0", "q1", "expected"),
    [
        (5.0, 0.0, 0.0, 5.0),
        (5.0, 0.0, 30.0, 7.5),  # growth 30/15 = 2, drain 30/60 = 0.5
        (5.0, 30.0, 0.0, 5.0),  # a draining queue is not subtracted
        (5.0, 60.0, 60.0, 6.0),  # standing queue: drain 60/60 = 1
        (0.0, 0.0, 15.0, 1.25),  # growth 1 + drain 0.25
        (5.0, 0.0, None, 5.0),  # queue not observed: completions only
        (5.0, None, 30.0, 5.5),  # no previous queue sample: drain only
    ],
)
def test_queue_growth_between_cycles_adds_demand(
    rate: float, q0: float | None, q1: float | None, expected: float
) -> None:
    queues = {0.0: q0, 15.0: q1}
    decisions = run(lambda t: Observation(request_rate=rate, queue_length=queues[t]), [0.0, 15.0])
    assert decisions[15.0].observed_requests_per_second == pytest.approx(expected)
    assert decisions[15.0].demand.requests_per_second >= expected


@pytest.mark.parametrize(
    ("q0", "q1", "windowed", "expected"),
    [
        (0.0, 3.0, 0.2, 5.0 + 0.2 + 0.05),  # the window's slope, not (3 - 0) / 2 s = 1.5
        (0.0, 3.0, -0.4, 5.0 + 0.05),  # a shrinking queue adds nothing
        (0.0, 3.0, math.nan, 5.0 + 1.5 + 0.05),  # no slope: consecutive cycles
        (0.0, 3.0, None, 5.0 + 1.5 + 0.05),
        (0.0, None, 0.7, 5.0 + 0.7),  # no queue reading: the in-flight growth still counts
        (0.0, 0.0, 1.2, 5.0 + 1.2),  # free slots, nothing queued: the running ones grew
        (None, None, None, 5.0),  # nothing but completions
    ],
)
def test_inflight_growth_uses_the_windowed_slope_when_given(
    q0: float | None, q1: float | None, windowed: float | None, expected: float
) -> None:
    """Two readings 2 s apart: their difference is noise the window peak would keep."""
    queues = {0.0: q0, 2.0: q1}
    decisions = run(
        lambda t: Observation(request_rate=5.0, queue_length=queues[t], inflight_growth=windowed),
        [0.0, 2.0],
    )
    assert decisions[2.0].observed_requests_per_second == pytest.approx(expected)


@pytest.mark.parametrize(
    ("windowed", "window", "z", "expected"),
    [
        # noise sd = sqrt(2.4 * arrivals / window); arrivals = 5 + growth
        (3.0, 20.0, 1.0, 5.0 + 3.0 - math.sqrt(2.4 * 8.0 / 20.0)),  # 3 - 0.98: a real rise
        (0.6, 20.0, 1.0, 5.0),  # 0.6 < sd 0.80: a steady load's wander adds nothing
        (0.6, 20.0, 0.0, 5.6),  # z = 0: the slope as it is
        (3.0, 60.0, 2.0, 5.0 + 3.0 - 2.0 * math.sqrt(2.4 * 8.0 / 60.0)),  # a longer window
        (3.0, None, 1.0, 8.0),  # window unknown: the growth counts whole
        (3.0, 0.0, 1.0, 8.0),
        (-2.0, 20.0, 1.0, 5.0),  # shrinking: nothing, as without the discount
    ],
)
def test_inflight_growth_counts_beyond_its_noise(
    windowed: float, window: float | None, z: float, expected: float
) -> None:
    decisions = run(
        lambda t: Observation(
            request_rate=5.0, inflight_growth=windowed, growth_window_seconds=window
        ),
        [0.0],
        policy=ScalingPolicy(growth_noise_z=z),
    )
    assert decisions[0.0].observed_requests_per_second == pytest.approx(expected)


def test_growth_noise_z_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="growth_noise_z must be"):
        ScalingPolicy(growth_noise_z=-1.0)


# --- fast attack: the short-window rate, less z standard deviations ---------------------


@pytest.mark.parametrize(
    ("fast", "window", "z", "expected"),
    [
        (None, 8.0, 1.0, 5.0),  # no short-window reading: the window rate
        (9.0, 8.0, 1.0, 9.0 - math.sqrt(9.0 / 8.0)),  # 9 - 1.06: a real rise counts at once
        (5.5, 8.0, 1.0, 5.0),  # 5.5 - 0.83 = 4.67 < 5: within noise, the window rate stands
        (3.0, 8.0, 1.0, 5.0),  # a lower short rate never lowers the estimate
        (5.5, 8.0, 0.0, 5.5),  # z = 0: the short rate as it is
        (18.0, 2.0, 2.0, 18.0 - 2.0 * 3.0),  # 18 - 2 * sqrt(18 / 2) = 12
        (9.0, None, 1.0, 5.0),  # no window length: cannot judge the noise, ignored
        (9.0, 0.0, 1.0, 5.0),
        (math.nan, 8.0, 1.0, 5.0),  # Prometheus' NaN: not observed
        (-1.0, 8.0, 1.0, 5.0),
    ],
)
def test_fast_attack_raises_the_estimate_only_past_the_noise(
    fast: float | None, window: float | None, z: float, expected: float
) -> None:
    policy = ScalingPolicy(fast_attack_z=z)
    decisions = run(
        lambda t: Observation(request_rate=5.0, fast_request_rate=fast, fast_window_seconds=window),
        [0.0],
        policy=policy,
    )
    decision = decisions[0.0]
    assert decision.observed_requests_per_second == pytest.approx(expected)
    assert decision.demand.requests_per_second == pytest.approx(expected)
    assert ("short-window rate" in decision.explanation) == (expected > 5.0)


@pytest.mark.parametrize(
    ("growth", "expected"),
    [
        (2.0, 9.0 - math.sqrt(9.0 / 8.0)),  # max(5 + 2, 7.94): not 7.94 + 2
        (4.0, 9.0),  # the window's arrivals (5 + 4) are the larger
        (None, 9.0 - math.sqrt(9.0 / 8.0)),
    ],
)
def test_fast_attack_competes_with_arrivals_not_completions(
    growth: float | None, expected: float
) -> None:
    """The short-window rate already counts the arrivals the in-flight growth adds back:
    adding both would count a step twice while it is under way."""
    decisions = run(
        lambda t: Observation(
            request_rate=5.0,
            fast_request_rate=9.0,
            fast_window_seconds=8.0,
            inflight_growth=growth,
        ),
        [0.0],
    )
    assert decisions[0.0].observed_requests_per_second == pytest.approx(expected)


def test_fast_attack_rise_is_held_by_the_scale_down_window() -> None:
    """A short-window rise is a rise like any other: kept for the window, then dropped."""
    fast = {0.0: 5.0, 15.0: 12.0, 30.0: 5.0, 330.0: 5.0}
    decisions = run(
        lambda t: Observation(
            request_rate=5.0, fast_request_rate=fast[t], fast_window_seconds=24.0
        ),
        fast,
    )
    raised = 12.0 - math.sqrt(12.0 / 24.0)
    assert decisions[15.0].demand.requests_per_second == pytest.approx(raised)
    assert decisions[30.0].demand.requests_per_second == pytest.approx(raised)
    assert decisions[330.0].demand.requests_per_second == pytest.approx(5.0)


def test_fast_attack_z_must_be_a_non_negative_number() -> None:
    with pytest.raises(ValueError, match="fast_attack_z"):
        ScalingPolicy(fast_attack_z=-0.5)


# --- missing and stale metrics hold ------------------------------------------------------


@pytest.mark.parametrize(
    ("age", "policy", "hold"),
    [
        (61.0, POLICY, True),
        (60.0, POLICY, False),  # exactly the limit is still fresh
        (0.0, POLICY, False),
        (math.inf, POLICY, True),
        (math.nan, POLICY, True),
        (10.0, ScalingPolicy(stale_after_seconds=5.0), True),
    ],
)
def test_stale_metrics_hold(age: float, policy: ScalingPolicy, hold: bool) -> None:
    def observe(t: float) -> Observation:
        if t < 30:
            return Observation(request_rate=10.0)
        return Observation(request_rate=1.0, data_age_seconds=age)

    ctx = replace(FLAT, current_replicas=7)
    last = run(observe, [0.0, 15.0, 30.0], ctx=ctx, policy=policy)[30.0]
    assert last.hold is hold
    assert last.metrics_available is not hold
    if hold:
        assert last.metrics_reason == "MetricsStale"
        assert last.demand.requests_per_second == 10.0  # the previous plan, not the stale 1.0
        assert last.min_replicas == 7  # never below the current replicas
        assert last.demand.mix is None
        assert last.observed_requests_per_second is None
    else:
        assert last.metrics_reason == "MetricsFresh"
        assert last.min_replicas == 1


@pytest.mark.parametrize(
    ("rate", "history", "ctx", "demand", "source", "floor"),
    [
        (None, True, FLAT, 10.0, "metrics", 3),
        (math.nan, True, FLAT, 10.0, "metrics", 3),
        (-1.0, True, FLAT, 10.0, "metrics", 3),
        (math.inf, True, replace(FLAT, current_replicas=0), 10.0, "metrics", 1),
        (None, True, replace(FLAT, current_replicas=2, min_replicas=5), 10.0, "metrics", 5),
        # never had metrics: the traffic prior
        (None, False, FLAT, 20.0, "prior", 3),
        (None, False, replace(FLAT, current_replicas=0), 20.0, "prior", 1),
    ],
)
def test_missing_request_rate_holds(
    rate: float | None,
    history: bool,
    ctx: ModelContext,
    demand: float,
    source: str,
    floor: int,
) -> None:
    times = [0.0, 15.0] if history else [15.0]
    decisions = run(lambda t: Observation(request_rate=10.0 if t == 0 else rate), times, ctx=ctx)
    last = decisions[15.0]
    assert (last.hold, last.metrics_available, last.metrics_reason) == (
        True,
        False,
        "RequestRateMissing",
    )
    assert (last.demand.requests_per_second, last.demand.source) == (demand, source)
    assert last.min_replicas == floor
    assert last.metrics_message.startswith("request rate not observed: holding")


def test_a_hold_counts_in_the_scale_down_window() -> None:
    # 10 rps, then an outage from 30 to 400 s (last held cycle at 390), then 4 rps: the held
    # 10 stays in the window for 300 s after the outage, as if it had been observed.
    def observe(t: float) -> Observation:
        if t < 30:
            return Observation(request_rate=10.0)
        if t <= 400:
            return Observation(request_rate=None)
        return Observation(request_rate=4.0)

    decisions = run(observe, grid(720, 691.0))
    assert decisions[390.0].hold
    assert decisions[405.0].demand.requests_per_second == 10.0
    assert decisions[690.0].demand.requests_per_second == 10.0
    assert decisions[691.0].demand.requests_per_second == 4.0


def test_latency_and_queue_missing_do_not_hold() -> None:
    last = run(rates(lambda t: 3.0), [0.0])[0.0]
    assert (last.hold, last.metrics_available) == (False, True)
    assert last.metrics_message == (
        "request rate fresh; not observed: queue length, latency, token mix"
    )


# --- token mix ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mean_in", "mean_out", "age", "expected"),
    [
        (800.0, 200.0, 0.0, TokenMix(800.0, 200.0)),
        (800.0, None, 0.0, None),
        (None, 200.0, 0.0, None),
        (0.0, 200.0, 0.0, None),
        (math.nan, 200.0, 0.0, None),
        (800.0, 200.0, 120.0, None),  # stale
    ],
)
def test_observed_token_mix(
    mean_in: float | None, mean_out: float | None, age: float, expected: TokenMix | None
) -> None:
    obs = Observation(
        request_rate=2.0,
        mean_input_tokens=mean_in,
        mean_output_tokens=mean_out,
        data_age_seconds=age,
    )
    assert decide_demand(None, obs, FLAT, POLICY, 0.0).demand.mix == expected


# --- scale to zero -----------------------------------------------------------------------


def traffic_until_90(t: float) -> Observation:
    return Observation(request_rate=5.0 if t <= 90 else 0.0, queue_length=0.0)


@pytest.mark.parametrize(
    ("observe", "policy", "ctx", "at", "to_zero"),
    [
        (traffic_until_90, ZERO_POLICY, replace(FLAT, min_replicas=0), 689.0, False),
        (traffic_until_90, ZERO_POLICY, replace(FLAT, min_replicas=0), 690.0, True),
        (traffic_until_90, ZERO_POLICY, replace(FLAT, min_replicas=0), 900.0, True),
        (traffic_until_90, POLICY, replace(FLAT, min_replicas=0), 2000.0, False),  # disabled
        (traffic_until_90, ZERO_POLICY, replace(FLAT, min_replicas=1), 2000.0, False),  # min 1
        (
            traffic_until_90,
            replace(ZERO_POLICY, idle_seconds=60.0),
            replace(FLAT, min_replicas=0),
            150.0,
            True,  # the idle timer does not wait for the 300 s window
        ),
        # a queued request at 600 s is traffic: idle restarts
        (
            lambda t: replace(traffic_until_90(t), queue_length=1.0 if t == 600 else 0.0),
            ZERO_POLICY,
            replace(FLAT, min_replicas=0),
            1199.0,
            False,
        ),
        (
            lambda t: replace(traffic_until_90(t), queue_length=1.0 if t == 600 else 0.0),
            ZERO_POLICY,
            replace(FLAT, min_replicas=0),
            1200.0,
            True,
        ),
        # wake demand while up also counts as traffic
        (
            lambda t: replace(traffic_until_90(t), wake_demand=2.0 if t == 600 else 0.0),
            ZERO_POLICY,
            replace(FLAT, min_replicas=0),
            1199.0,
            False,
        ),
        # an outage counts as traffic: idle restarts after the last held cycle (495)
        (
            lambda t: Observation(request_rate=None) if 300 <= t < 500 else traffic_until_90(t),
            ZERO_POLICY,
            replace(FLAT, min_replicas=0),
            1094.0,
            False,
        ),
        (
            lambda t: Observation(request_rate=None) if 300 <= t < 500 else traffic_until_90(t),
            ZERO_POLICY,
            replace(FLAT, min_replicas=0),
            1095.0,
            True,
        ),
    ],
)
def test_scale_to_zero_after_idle_seconds(
    observe: Callable[[float], Observation],
    policy: ScalingPolicy,
    ctx: ModelContext,
    at: float,
    to_zero: bool,
) -> None:
    decisions = run(observe, [t for t in grid(at, at) if t <= at], ctx=ctx, policy=policy)
    last = decisions[at]
    assert last.scale_to_zero is to_zero
    assert last.state.scaled_to_zero is to_zero
    if to_zero:
        assert (last.demand.requests_per_second, last.min_replicas) == (0.0, 0)
    else:
        assert last.min_replicas == max(ctx.min_replicas, 1)


def test_a_new_idle_model_comes_up_once_then_idles_out() -> None:
    ctx = ModelContext(prior_requests_per_second=0.0, current_replicas=0, horizon_seconds=0.0)
    first = decide_demand(None, Observation(request_rate=None), ctx, ZERO_POLICY, 1000.0)
    assert (first.min_replicas, first.scale_to_zero) == (1, False)
    later = run(rates(lambda t: 0.0), [1015.0, 1599.0, 1600.0], ctx, ZERO_POLICY, first.state)
    assert [d.scale_to_zero for d in later.values()] == [False, False, True]


# --- wake ---------------------------------------------------------------------------------

AT_ZERO = ModelScalingState(
    samples=((0.0, 0.0),),
    last_traffic_time=0.0,
    planned_requests_per_second=0.0,
    planned_source="metrics",
    scaled_to_zero=True,
    metrics_available=True,
)
ZERO_CTX = ModelContext(prior_requests_per_second=5.0, current_replicas=0, horizon_seconds=0.0)
WAKE_POLICY = replace(ZERO_POLICY, wake_query_configured=True)


@pytest.mark.parametrize(
    ("obs", "policy", "ctx", "expect"),
    [
        # (wake, scale_to_zero, hold, demand, floor, reason)
        (
            Observation(None, wake_demand=3.0),
            WAKE_POLICY,
            ZERO_CTX,
            (True, False, False, 0.05, 1, "MetricsFresh"),
        ),
        (
            Observation(2.0, wake_demand=0.0),
            WAKE_POLICY,
            ZERO_CTX,
            (True, False, False, 2.0, 1, "MetricsFresh"),
        ),  # a gateway request-rate query
        (
            Observation(None, queue_length=6.0),
            ZERO_POLICY,
            ZERO_CTX,
            (True, False, False, 0.1, 1, "MetricsFresh"),
        ),
        (
            Observation(None, wake_demand=0.0),
            WAKE_POLICY,
            ZERO_CTX,
            (False, True, False, 0.0, 0, "ScaledToZero"),
        ),
        (Observation(None), ZERO_POLICY, ZERO_CTX, (False, True, False, 0.0, 0, "ScaledToZero")),
        (Observation(None), WAKE_POLICY, ZERO_CTX, (False, True, True, 0.0, 0, "WakeQueryMissing")),
        # At zero no engine reports, so the engines' data are always stale: the wake query
        # (a gateway's gauge) still wakes the model.
        (
            Observation(None, wake_demand=6.0, data_age_seconds=math.inf),
            WAKE_POLICY,
            ZERO_CTX,
            (True, False, False, 0.1, 1, "MetricsFresh"),
        ),
        # ... but the engines' stale queue and rate do not.
        (
            Observation(3.0, queue_length=6.0, wake_demand=0.0, data_age_seconds=90.0),
            WAKE_POLICY,
            ZERO_CTX,
            (False, True, False, 0.0, 0, "ScaledToZero"),
        ),
        (
            Observation(None, data_age_seconds=math.inf),
            WAKE_POLICY,
            ZERO_CTX,
            (False, True, True, 0.0, 0, "WakeQueryMissing"),
        ),
        # scale to zero switched off while at zero: come back on the held figure
        (Observation(None), POLICY, ZERO_CTX, (True, False, True, 0.0, 1, "RequestRateMissing")),
        (
            Observation(None),
            WAKE_POLICY,
            replace(ZERO_CTX, min_replicas=2),
            (True, False, True, 0.0, 2, "RequestRateMissing"),
        ),
    ],
)
def test_wake_from_zero(
    obs: Observation,
    policy: ScalingPolicy,
    ctx: ModelContext,
    expect: tuple[bool, bool, bool, float, int, str],
) -> None:
    d = decide_demand(AT_ZERO, obs, ctx, policy, 900.0)
    got = (
        d.wake,
        d.scale_to_zero,
        d.hold,
        d.demand.requests_per_second,
        d.min_replicas,
        d.metrics_reason,
    )
    assert got == pytest.approx(expect)
    assert d.state.scaled_to_zero is d.scale_to_zero
    assert d.metrics_available is (expect[5] != "WakeQueryMissing" and not expect[2])


def test_woken_model_does_not_idle_out_at_once() -> None:
    woken = decide_demand(AT_ZERO, Observation(None, wake_demand=3.0), ZERO_CTX, WAKE_POLICY, 900.0)
    ctx = replace(ZERO_CTX, current_replicas=1)
    after = run(rates(lambda t: 0.0), [915.0, 1499.0, 1500.0], ctx, WAKE_POLICY, woken.state)
    assert [d.scale_to_zero for d in after.values()] == [False, False, True]
    assert after[915.0].demand.requests_per_second == pytest.approx(0.05)  # window peak


# --- per-cycle change limits -------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "desired", "kwargs", "expected"),
    [
        (4, 10, {}, 10),
        (4, 10, {"max_scale_up_replicas": 3}, 7),
        (4, 10, {"max_scale_up_factor": 2.0}, 8),
        (4, 6, {"max_scale_up_factor": 2.0}, 6),
        (0, 5, {"max_scale_up_factor": 2.0}, 1),  # always at least one step
        (1, 5, {"max_scale_up_factor": 1.5}, 2),  # ceil(1.5)
        (3, 20, {"max_scale_up_factor": 2.0, "max_scale_up_replicas": 2}, 5),
        (10, 2, {"max_scale_down_replicas": 3}, 7),
        (10, 2, {}, 2),
        (10, 9, {"max_scale_down_replicas": 3}, 9),
        (3, 0, {"max_scale_down_replicas": 1}, 2),
        (5, 5, {"max_scale_up_replicas": 1, "max_scale_down_replicas": 1}, 5),
        (5, 9, {"max_scale_down_replicas": 1}, 9),  # a down limit does not bound going up
    ],
)
def test_limit_replica_change(
    current: int, desired: int, kwargs: dict[str, Any], expected: int
) -> None:
    assert limit_replica_change(current, desired, ScalingPolicy(**kwargs)) == expected


@pytest.mark.parametrize(("current", "desired"), [(-1, 3), (3, -1), (True, 3), (2.5, 3)])
def test_limit_replica_change_rejects_bad_counts(current: Any, desired: Any) -> None:
    with pytest.raises(ValueError, match="replicas must be an integer >= 0"):
        limit_replica_change(current, desired, POLICY)


# --- SLOMet ------------------------------------------------------------------------------

SLO = LatencySLO(percentile=95, ttft_ms=500, tpot_ms=50)


@pytest.mark.parametrize(
    ("obs", "slo", "met", "reason", "message"),
    [
        (
            Observation(1.0, ttft_ms=400, tpot_ms=40),
            SLO,
            True,
            "WithinSLO",
            "p95 TTFT 400.0 ms <= 500 ms; p95 TPOT 40.0 ms <= 50 ms",
        ),
        (
            Observation(1.0, ttft_ms=500, tpot_ms=50),
            SLO,
            True,
            "WithinSLO",
            "p95 TTFT 500.0 ms <= 500 ms; p95 TPOT 50.0 ms <= 50 ms",
        ),
        (
            Observation(1.0, ttft_ms=501, tpot_ms=40),
            SLO,
            False,
            "SLOViolated",
            "p95 TTFT 501.0 ms > 500 ms; p95 TPOT 40.0 ms <= 50 ms",
        ),
        (
            Observation(1.0, ttft_ms=None, tpot_ms=60),
            SLO,
            False,
            "SLOViolated",
            "p95 TPOT 60.0 ms > 50 ms",
        ),
        (
            Observation(1.0, ttft_ms=None, tpot_ms=40),
            SLO,
            None,
            "LatencyNotObserved",
            "TTFT not observed",
        ),
        (
            Observation(1.0, ttft_ms=math.nan, tpot_ms=None),
            SLO,
            None,
            "LatencyNotObserved",
            "TTFT and TPOT not observed",
        ),
        (
            Observation(1.0, ttft_ms=900, tpot_ms=40, data_age_seconds=61),
            SLO,
            None,
            "MetricsStale",
            "metrics 61 s old",
        ),
        (
            Observation(1.0, ttft_ms=900, tpot_ms=40),
            LatencySLO(percentile=99, tpot_ms=50),
            True,
            "WithinSLO",
            "p99 TPOT 40.0 ms <= 50 ms",
        ),
    ],
)
def test_slo_met(
    obs: Observation, slo: LatencySLO, met: bool | None, reason: str, message: str
) -> None:
    assert tuple(slo_met(obs, slo, POLICY)) == (met, reason, message)


# --- settings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stale_after_seconds": -1.0}, "ScalingPolicy.stale_after_seconds"),
        ({"scale_down_window_seconds": math.nan}, "ScalingPolicy.scale_down_window_seconds"),
        ({"scale_down_tolerance": 1.0}, "ScalingPolicy.scale_down_tolerance must be < 1"),
        ({"queue_drain_seconds": 0.0}, "ScalingPolicy.queue_drain_seconds must be a finite"),
        ({"max_scale_up_replicas": 0}, "ScalingPolicy.max_scale_up_replicas"),
        ({"max_scale_down_replicas": True}, "ScalingPolicy.max_scale_down_replicas"),
        ({"max_scale_up_factor": 0.5}, "ScalingPolicy.max_scale_up_factor"),
        ({"idle_seconds": 0.0}, "ScalingPolicy.idle_seconds"),
        ({"max_samples": 1}, "ScalingPolicy.max_samples"),
    ],
)
def test_policy_rejects_bad_values(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ScalingPolicy(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prior_requests_per_second": -1.0}, "ModelContext.prior_requests_per_second"),
        ({"current_replicas": -1}, "ModelContext.current_replicas"),
        ({"min_replicas": 1.5}, "ModelContext.min_replicas"),
        ({"horizon_seconds": math.inf}, "ModelContext.horizon_seconds"),
    ],
)
def test_context_rejects_bad_values(kwargs: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {"prior_requests_per_second": 1.0, "current_replicas": 1}
    with pytest.raises(ValueError, match=message):
        ModelContext(**(base | kwargs))


def test_decide_rejects_a_non_finite_time() -> None:
    with pytest.raises(ValueError, match="now must be a finite time"):
        decide_demand(None, Observation(1.0), FLAT, POLICY, math.nan)


def model_doc(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "slo": {"timePerOutputTokenMs": 50},
        "variants": [{"acceleratorType": "nvidia-h100-80gb", "maxRequestsPerSecond": 10}],
    }
    return {
        "apiVersion": "infleet.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "llama", "namespace": "ml"},
        "spec": base | spec,
    }


def test_policy_for_model_takes_the_spec_fields() -> None:
    model = ModelDeployment.model_validate(
        model_doc(
            scaling={
                "scaleDownWindowSeconds": 120,
                "maxScaleUpReplicas": 4,
                "maxScaleDownReplicas": 1,
            },
            scaleToZero={"enabled": True, "idleSeconds": 900, "wakeQuery": "sum(gw_queue)"},
        )
    )
    base = ScalingPolicy(stale_after_seconds=30.0, max_scale_up_factor=2.0)
    assert policy_for_model(model.spec, base) == replace(
        base,
        scale_down_window_seconds=120.0,
        max_scale_up_replicas=4,
        max_scale_down_replicas=1,
        scale_to_zero=True,
        idle_seconds=900.0,
        wake_query_configured=True,
    )


def test_policy_for_model_defaults() -> None:
    model = ModelDeployment.model_validate(model_doc())
    assert policy_for_model(model.spec) == ScalingPolicy()
