"""Autoscaling policy: from one cycle's metrics to the demand the fleet planner plans for.

Pure decision code: every function takes the time (``now``, float seconds on any clock that
is consistent between cycles) and the state persisted from the previous cycle as arguments and
returns a new state; nothing here reads a clock, Prometheus or the Kubernetes API. The live
loop calls, per model and per cycle (default every 15 s, as Kubernetes HPA):

1. :func:`decide_demand` -> :class:`DemandDecision`: the demand to plan for, the token mix,
   the replica floor for this cycle, the ``MetricsAvailable`` verdict and the new state.
2. :func:`infleet.core.calibration.calibrate_variants` -> new capacity factors per variant
   (store them with :meth:`ModelScalingState.with_calibration`).
3. The fleet planner, with ``Demand`` from step 1, the replica floor
   ``DemandDecision.min_replicas`` in place of ``spec.replicas.min`` and the factors from
   step 2.
4. :func:`limit_replica_change` on each model's total (current -> planned) before applying.
5. :func:`slo_met` for the ``SLOMet`` condition.

Rules, their defaults (:class:`ScalingPolicy`) and why
-------------------------------------------------------

**Demand estimate.** ``demand = completions/s + max(0, d in-flight / dt) + queue / 60 s``.
Completions alone under-count a rising load: a request that has arrived but not finished is
missing from them, whether it waits for a batch slot or already runs in one. By conservation,
arrivals = completions + the growth of the requests in the engines (waiting + running), so
that growth is added back. Counting the queue alone would see only the waiting ones, and a
fleet with free slots queues nothing while its load rises: the completions then lag arrivals
by about a service time (seconds for long answers). A shrinking count is not subtracted, so
the plan never drops below what the fleet is completing now. The last term serves a standing
queue within ``queue_drain_seconds`` (60 s) on top of arrivals. The growth is the slope
PromQL's ``deriv`` fits over the metrics window (when the metrics do not give it: the
queue's growth between consecutive fresh cycles), less ``growth_noise_z`` (1) standard
deviations of its own noise, ``sqrt(2.4 * arrivals / window)``: under a steady load the count
in flight wanders by one per arrival and per completion, its fitted slope wanders around zero,
and the scale-down window's peak would keep every positive swing for minutes as demand that
never came. Replayed offline (``bench/autoscale_offline.py``, 8 replays of the benchmark's
trace) the discount saved 1.4% of the replica-hours, for 58.38 instead of 58.50 minutes of 59
within the SLO (the first ramp's minute 2 in one replay; over 24 replays 58.50 against 58.54).

**Fast attack.** A rate over the metrics window moves across it: after a step up, the figure
climbs for a whole window, and a replica threshold partway up is crossed only partway through.
When the metrics also give the completion rate over a short window (``fast_request_rate``
over ``fast_window_seconds``; the operator asks for 40% of the metrics window), the
arrivals are ``max(window rate + in-flight growth, fast rate - z * sqrt(fast rate / fast
window))``: the short rate less ``z`` (``fast_attack_z``, 1) standard deviations of a Poisson
count over its window. It competes with the window's arrivals, not its completions: the short
rate already holds the arrivals the growth term adds back, and adding both would count a step
twice while it is under way. A real rise clears the margin within the short window; noise
rarely does, and by little when it does. It only ever raises the estimate, so it only speeds
scaling up (the window peak then holds it, as any rise). Replayed offline against the
benchmark's staircase (``bench/autoscale_offline.py --reaction``, 20 replays), the median
reaction went from 5.2 s to 4.4 s of a 5 s cycle (17 replays within a cycle instead of 9), for
1.4% more replica-hours on the trace.

**Forecast over the startup time.** New replicas need ``startupSeconds`` (default 300) to
become ready, so the plan must be for the demand at ``now + horizon``, with the horizon the
largest ``startupSeconds`` among the variants the plan uses. The forecast is a least-squares
trend over the last 180 s (AIBrix's observe window; it must rise in both halves of the window,
so a step is not read as a ramp) extrapolated over the horizon, only ever
raising the figure and at most 2x the current demand (AIBrix's per-decision limit); see
:mod:`infleet.core.forecast`. A flat or falling signal forecasts exactly the current demand.

**Scale up at once; scale down on the window's peak.** The planned figure is
``max(forecast, peak demand over the last scale_down_window_seconds)``. A rise therefore
reaches the plan in the same cycle, while a fall only reaches it once the higher samples have
aged out of the window (300 s, as HPA's scale-down stabilisation and the KEDA/AIBrix
cooldowns; ``spec.scaling.scaleDownWindowSeconds`` per model). It then drops to the peak of
what is left, not to the latest sample. A drop smaller than ``scale_down_tolerance`` (10%,
HPA's tolerance) of the previous plan keeps the previous plan, so slow decay does not
reshuffle the fleet every cycle; rises are never subject to the tolerance (the plan never
goes below the observed demand).

**Per-cycle change limits.** :func:`limit_replica_change` caps how far a model's total
replicas move in one cycle: ``spec.scaling.maxScaleUpReplicas`` / ``maxScaleDownReplicas``
(unset: no limit, as the API documents) and an optional operator-wide
``max_scale_up_factor`` (HPA scales up at most max(2x, +4 pods) per 15 s; set 2.0 for the
same bound). A move is always allowed at least one replica, so a model at zero can wake.

**Token mix.** Mean input/output tokens observed this cycle go into ``Demand.mix`` so the
planner recomputes capacity for the traffic actually served; ``None`` (use the prior) when
either is missing or the metrics are stale.

**Missing or stale metrics hold.** When the request rate is missing or the data are older
than ``stale_after_seconds`` (60 s: four missed 15 s scrapes), the decision *holds*:
``hold=True``, ``MetricsAvailable=False``, the demand is the previous cycle's planned figure
(the traffic prior if there has never been one), and ``min_replicas`` is at least the current
replica count. The caller must pass that floor to the planner, so the model keeps at least
its current replicas and capacity ``max(current capacity, held demand)``; it never scales
down on missing data (KEDA's ``fallback`` holds a fixed count; holding what runs is the
cheaper safe choice). The held figure is also recorded as a window sample, and an
unobserved cycle counts as traffic for the idle timer, so neither the stabilisation window
nor scale-to-zero treats a metrics outage as a quiet period. The prior is deliberately not
raised to during a hold: a Prometheus blip should not buy the prior's whole fleet.

**Replica floor and scale to zero.** In the live loop, demand is measured at the engines,
so a model with no replicas has no request signal. Going to zero is therefore opt-in and
explicit: unless the decision says ``scale_to_zero``, ``min_replicas`` is
``max(spec.replicas.min, 1)``, even when ``spec.replicas.min`` is 0 (that 0 still lets
``infleet plan`` give an idle model nothing offline). With ``spec.scaleToZero.enabled`` and
``spec.replicas.min`` 0, after ``idle_seconds`` (600 s, the API default) without traffic
(no completions, no queue, no wake demand) the decision sets ``scale_to_zero=True``,
demand 0 and ``min_replicas=0``; the caller plans 0 replicas.
``spec.replicas.min`` is a hard floor: scale-to-zero never overrides a min above 0. The idle
timer is independent of the scale-down window (KEDA's cooldown plays the same role).

**Wake.** While scaled to zero, a ``wake_demand`` > 0 (the value of
``spec.scaleToZero.wakeQuery``, e.g. a gateway's queued-request gauge), or any completions or
queue the request-rate query still reports (when it reads a gateway), wakes the model at
once: ``wake=True``, ``min_replicas = max(spec.replicas.min, 1)`` and demand
``rate + (queue + wake_demand) / queue_drain_seconds``. If a wake query is configured but its
value is missing, ``MetricsAvailable=False`` and the model stays at zero (there is nothing
to hold but zero). The wake query's answer counts however old the engines' data is: a model at
zero has no engine series, so its data age is infinite by construction. Without a wake
query, a model at zero wakes only on a request-rate query that reports traffic (a gateway
metric); configure one. A model whose state is new (no
status yet) is never "scaled to zero": it starts from its prior, so a new model comes up once.

**Calibration** is in :mod:`infleet.core.calibration`: derate x0.85 on an SLO breach while
utilisation is at or below the target, recover x1.02 per cycle under 70% of the SLO at a
meaningful load, bounded to [0.3, 1.0], persisted in the state.

All state lives in :class:`ModelScalingState` (:mod:`infleet.core.autoscale_state`, re-exported
here), which round-trips through a plain dict
(:meth:`~ModelScalingState.to_dict` / :meth:`~ModelScalingState.from_dict`) for the status.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from infleet.api import ModelDeploymentSpec
from infleet.core.autoscale_state import ModelScalingState
from infleet.core.calibration import CalibrationSettings
from infleet.core.capacity import LatencySLO, TokenMix
from infleet.core.fleet import Demand
from infleet.core.forecast import (
    ForecastSettings,
    add_sample,
    forecast_demand,
    trend_slope,
    window_peak,
)
from infleet.core.probe import fast_arrivals

__all__ = [
    "CalibrationSettings",
    "DemandDecision",
    "ForecastSettings",
    "ModelContext",
    "ModelScalingState",
    "Observation",
    "SLOVerdict",
    "ScalingPolicy",
    "decide_demand",
    "limit_replica_change",
    "model_context",
    "policy_for_model",
    "slo_met",
]

METRICS_FRESH = "MetricsFresh"
REQUEST_RATE_MISSING = "RequestRateMissing"
METRICS_STALE = "MetricsStale"
SCALED_TO_ZERO = "ScaledToZero"
WAKE_QUERY_MISSING = "WakeQueryMissing"


def _check(where: str, value: float, *, low: float = 0.0, strict: bool = False) -> None:
    if not math.isfinite(value) or value < low or (strict and value == low):
        bound = ">" if strict else ">="
        raise ValueError(f"{where} must be a finite number {bound} {low:g}, got {value!r}")


def _check_count(where: str, value: int | None, *, low: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{where} must be an integer >= {low}, got {value!r}")


@dataclass(frozen=True)
class ScalingPolicy:
    """Autoscaling settings for one model: operator-wide defaults, per-model fields from the
    spec (see :func:`policy_for_model`). Times in seconds."""

    stale_after_seconds: float = 60.0
    """Metrics older than this are stale and the model holds; 60 s is four missed 15 s
    scrapes, long enough to ride out one slow Prometheus query."""
    scale_down_window_seconds: float = 300.0
    """Scale down only to the peak demand of this many past seconds (HPA's stabilisation
    window and the KEDA/AIBrix cooldown are all 300 s); ``spec.scaling``."""
    fast_attack_z: float = 1.0
    """Standard deviations the short-window rate must clear before it raises the estimate
    (see "Fast attack"); >= 0."""
    growth_noise_z: float = 1.0
    """Standard deviations of its own noise the windowed in-flight growth loses before it
    is added to completions (see "Demand estimate"); >= 0, 0 counts it whole."""
    scale_down_tolerance: float = 0.1
    """A planned drop smaller than this fraction of the previous plan is ignored (HPA's 10%
    tolerance), in [0, 1)."""
    queue_drain_seconds: float = 60.0
    """A standing queue is planned to drain within this time (adds ``queue / 60`` rps)."""
    max_scale_up_replicas: int | None = None
    """Most replicas added to the model per cycle; ``None``: no limit; ``spec.scaling``."""
    max_scale_up_factor: float | None = None
    """Total replicas at most ``max(ceil(current * factor), current + 1)`` after one cycle;
    ``None``: no limit (HPA uses 2.0 with a 4-pod minimum step)."""
    max_scale_down_replicas: int | None = None
    """Most replicas removed from the model per cycle; ``None``: no limit; ``spec.scaling``."""
    scale_to_zero: bool = False
    """Whether the model may go to zero replicas when idle; ``spec.scaleToZero.enabled``."""
    idle_seconds: float = 600.0
    """Seconds without traffic before scaling to zero; ``spec.scaleToZero.idleSeconds``."""
    wake_query_configured: bool = False
    """Whether ``spec.scaleToZero.wakeQuery`` is set (its value arrives as
    ``Observation.wake_demand``)."""
    max_samples: int = 64
    """Most demand samples kept in the state (status size bound; 300 s of 15 s cycles is 21);
    beyond it the oldest samples merge, keeping their peak."""
    forecast: ForecastSettings = field(default_factory=ForecastSettings)
    """Trend forecast settings."""
    calibration: CalibrationSettings = field(default_factory=CalibrationSettings)
    """Capacity calibration settings."""

    def __post_init__(self) -> None:
        _check("ScalingPolicy.stale_after_seconds", self.stale_after_seconds)
        _check("ScalingPolicy.scale_down_window_seconds", self.scale_down_window_seconds)
        _check("ScalingPolicy.fast_attack_z", self.fast_attack_z)
        _check("ScalingPolicy.growth_noise_z", self.growth_noise_z)
        _check("ScalingPolicy.scale_down_tolerance", self.scale_down_tolerance)
        if self.scale_down_tolerance >= 1:
            raise ValueError(
                f"ScalingPolicy.scale_down_tolerance must be < 1, got {self.scale_down_tolerance!r}"
            )
        _check("ScalingPolicy.queue_drain_seconds", self.queue_drain_seconds, strict=True)
        _check_count("ScalingPolicy.max_scale_up_replicas", self.max_scale_up_replicas, low=1)
        _check_count("ScalingPolicy.max_scale_down_replicas", self.max_scale_down_replicas, low=1)
        if self.max_scale_up_factor is not None:
            _check("ScalingPolicy.max_scale_up_factor", self.max_scale_up_factor, low=1.0)
        _check("ScalingPolicy.idle_seconds", self.idle_seconds, strict=True)
        _check_count("ScalingPolicy.max_samples", self.max_samples, low=2)

    @property
    def history_seconds(self) -> float:
        """How far back samples are kept: the longer of the two windows that read them."""
        return max(self.scale_down_window_seconds, self.forecast.window_seconds)


def policy_for_model(spec: ModelDeploymentSpec, base: ScalingPolicy | None = None) -> ScalingPolicy:
    """``base`` (operator-wide defaults) with the model's ``scaling`` and ``scaleToZero``."""
    return replace(
        base or ScalingPolicy(),
        scale_down_window_seconds=float(spec.scaling.scale_down_window_seconds),
        max_scale_up_replicas=spec.scaling.max_scale_up_replicas,
        max_scale_down_replicas=spec.scaling.max_scale_down_replicas,
        scale_to_zero=spec.scale_to_zero.enabled,
        idle_seconds=float(spec.scale_to_zero.idle_seconds),
        wake_query_configured=spec.scale_to_zero.wake_query is not None,
    )


@dataclass(frozen=True)
class ModelContext:
    """What the decision needs to know about the model besides its metrics."""

    prior_requests_per_second: float
    """``spec.traffic.requestsPerSecond``: planned for before any metrics exist."""
    current_replicas: int
    """Total replicas the last applied plan asked for (``status.desiredReplicas``), not the
    ready count: a crash loop must not read as a scale-down."""
    min_replicas: int = 0
    """``spec.replicas.min``."""
    horizon_seconds: float = 300.0
    """Forecast horizon: the largest ``startupSeconds`` among the variants the current plan
    uses (all variants when it uses none)."""

    def __post_init__(self) -> None:
        _check("ModelContext.prior_requests_per_second", self.prior_requests_per_second)
        _check_count("ModelContext.current_replicas", self.current_replicas, low=0)
        _check_count("ModelContext.min_replicas", self.min_replicas, low=0)
        _check("ModelContext.horizon_seconds", self.horizon_seconds)


def model_context(
    spec: ModelDeploymentSpec, current_replicas: int, variants_in_plan: frozenset[str]
) -> ModelContext:
    """The :class:`ModelContext` of a model whose plan uses ``variants_in_plan`` (names)."""
    used = [v for v in spec.variants if v.resolved_name in variants_in_plan] or spec.variants
    return ModelContext(
        prior_requests_per_second=spec.traffic.requests_per_second,
        current_replicas=current_replicas,
        min_replicas=spec.replicas.min,
        horizon_seconds=float(max(v.startup_seconds for v in used)),
    )


@dataclass(frozen=True)
class Observation:
    """One cycle's metrics for one model, aggregated over its pods. ``None`` = not observed;
    negative or non-finite figures (Prometheus' NaN) are treated as not observed."""

    request_rate: float | None
    """Completed requests per second."""
    queue_length: float | None = None
    """Requests waiting in the engines' queues."""
    ttft_ms: float | None = None
    """Time to first token at the SLO percentile, ms."""
    tpot_ms: float | None = None
    """Time per output token at the SLO percentile, ms."""
    mean_input_tokens: float | None = None
    """Mean prompt tokens per request (prompt-token rate / request rate)."""
    mean_output_tokens: float | None = None
    """Mean generated tokens per request."""
    data_age_seconds: float = 0.0
    """Age of the newest sample behind these figures at decision time."""
    wake_demand: float | None = None
    """Value of the wake query; ``None`` when not configured or not answered."""
    fast_request_rate: float | None = None
    """Completed requests per second over the short window (fast attack); ``None``: not
    read."""
    fast_window_seconds: float | None = None
    """Length of that short window, seconds."""
    inflight_growth: float | None = None
    """Growth of the requests in the engines (waiting + running), requests/s, fitted over
    the metrics window (PromQL ``deriv``); ``None``: use the queue's growth between
    consecutive cycles instead."""
    growth_window_seconds: float | None = None
    """Length of the window ``inflight_growth`` was fitted over, seconds; ``None``: unknown,
    and the growth counts whole."""


def _finite(value: float | None) -> float | None:
    """``value`` when it is a finite number (a slope may be negative), else ``None``."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _clean(value: float | None) -> float | None:
    if value is None or not math.isfinite(value) or value < 0:
        return None
    return float(value)


@dataclass(frozen=True)
class DemandDecision:
    """One cycle's autoscaling verdict for one model; see the module docs for each rule."""

    demand: Demand
    """Demand to plan for (requests/s, source, observed token mix or ``None`` for the prior)."""
    state: ModelScalingState
    """State to persist for the next cycle."""
    observed_requests_per_second: float | None
    """This cycle's demand estimate (completions + queue terms); ``None`` when not fresh."""
    metrics_available: bool
    """Status of the ``MetricsAvailable`` condition."""
    metrics_reason: str
    """Its reason: MetricsFresh, RequestRateMissing, MetricsStale, ScaledToZero or
    WakeQueryMissing."""
    metrics_message: str
    """Its message."""
    hold: bool
    """Metrics missing or stale: keep at least the current replicas (see ``min_replicas``)."""
    scale_to_zero: bool
    """The model should have no replicas this cycle."""
    wake: bool
    """The model was at zero and comes back this cycle."""
    min_replicas: int
    """Replica floor the caller must give the planner this cycle instead of
    ``spec.replicas.min`` (already includes it)."""
    explanation: str
    """One line: why this demand figure."""


def _base_floor(ctx: ModelContext) -> int:
    # Not scaled to zero means serving: one replica at least, or no metric could ever show
    # demand again (the engines are the request signal).
    return max(ctx.min_replicas, 1)


def _zero_allowed(policy: ScalingPolicy, ctx: ModelContext) -> bool:
    return policy.scale_to_zero and ctx.min_replicas == 0


def decide_demand(
    state: ModelScalingState | None,
    obs: Observation,
    ctx: ModelContext,
    policy: ScalingPolicy,
    now: float,
) -> DemandDecision:
    """Decide the demand a model is planned for this cycle (rules in the module docs).

    ``state`` is ``None`` for a model seen for the first time.
    """
    if not math.isfinite(now):
        raise ValueError(f"now must be a finite time in seconds, got {now!r}")
    if state is None:
        state = ModelScalingState(last_traffic_time=now)
    age = obs.data_age_seconds
    stale = not (math.isfinite(age) and age <= policy.stale_after_seconds)
    rate = None if stale else _clean(obs.request_rate)

    if state.scaled_to_zero:
        if _zero_allowed(policy, ctx):
            return _at_zero(state, obs, ctx, policy, now, stale=stale, rate=rate)
        # Scale-to-zero was switched off (or min raised) while at zero: come back.
        state = replace(state, scaled_to_zero=False, last_traffic_time=now)
        decision = (
            _hold(state, ctx, policy, now, stale=stale)
            if rate is None
            else _fresh(state, obs, ctx, policy, now, rate)
        )
        return replace(
            decision, wake=True, explanation=f"scale to zero disabled; {decision.explanation}"
        )
    if rate is None:
        return _hold(state, ctx, policy, now, stale=stale)
    return _fresh(state, obs, ctx, policy, now, rate)


def _hold(
    state: ModelScalingState, ctx: ModelContext, policy: ScalingPolicy, now: float, *, stale: bool
) -> DemandDecision:
    if state.planned_requests_per_second is None:
        held, source = ctx.prior_requests_per_second, "prior"
    else:
        held, source = state.planned_requests_per_second, state.planned_source or "metrics"
    floor = max(_base_floor(ctx), ctx.current_replicas)
    reason = METRICS_STALE if stale else REQUEST_RATE_MISSING
    what = (
        f"metrics older than {policy.stale_after_seconds:g} s"
        if stale
        else "request rate not observed"
    )
    new_state = replace(
        state,
        samples=add_sample(
            state.samples,
            (now, held),
            keep_seconds=policy.history_seconds,
            max_samples=policy.max_samples,
        ),
        last_traffic_time=now,
        planned_requests_per_second=held,
        planned_source=source,
        metrics_available=False,
    )
    return DemandDecision(
        demand=Demand(requests_per_second=held, source=source),
        state=new_state,
        observed_requests_per_second=None,
        metrics_available=False,
        metrics_reason=reason,
        metrics_message=f"{what}: holding {ctx.current_replicas} replicas, never scaling down",
        hold=True,
        scale_to_zero=False,
        wake=False,
        min_replicas=floor,
        explanation=f"{what}; holding {held:.2f} rps ({source}) and at least {floor} replicas",
    )


def _growth_noise(arrivals: float, window: float | None) -> float:
    """Standard deviation of the in-flight growth fitted over ``window`` seconds when
    ``arrivals`` requests/s arrive and about as many complete: 0 without a window.

    The count in flight moves by +1 per arrival and -1 per completion, two Poisson streams,
    so over a few seconds it wanders like a random walk of variance ``2 * arrivals`` per
    second; a least-squares slope through a random walk of variance ``v`` per second over a
    window ``W`` has variance ``6 v / (5 W)``.
    """
    if window is None or not math.isfinite(window) or window <= 0:
        return 0.0
    return math.sqrt(2.4 * max(0.0, arrivals) / window)


def _queue_terms(
    state: ModelScalingState,
    queue: float | None,
    policy: ScalingPolicy,
    now: float,
    obs: Observation,
    rate: float,
) -> tuple[float, float]:
    """``(growth rps, drain rps)``: arrivals not yet completed, and the standing queue's
    drain.

    The growth is the window's fitted slope of the requests in flight when the metrics give
    one, less ``growth_noise_z`` standard deviations of its own noise: the slope of a steady
    load wanders around zero, and the scale-down window's peak would keep every positive
    swing as demand that never arrived. Without the windowed slope, the queue's growth
    between consecutive cycles.
    """
    growth = 0.0
    windowed = _finite(obs.inflight_growth)
    if windowed is not None:
        noise = _growth_noise(rate + max(0.0, windowed), obs.growth_window_seconds)
        growth = max(0.0, windowed - policy.growth_noise_z * noise)
    elif queue is not None and state.last_queue is not None and now > state.last_queue[0]:
        growth = max(0.0, (queue - state.last_queue[1]) / (now - state.last_queue[0]))
    drain = 0.0 if queue is None else queue / policy.queue_drain_seconds
    return growth, drain


def _fast_rate(obs: Observation, policy: ScalingPolicy) -> float | None:
    """The short-window completion rate less ``fast_attack_z`` Poisson standard deviations;
    ``None`` without a usable short-window reading (the probe between cycles applies the same
    margin, :func:`infleet.core.probe.rising`)."""
    return fast_arrivals(obs.fast_request_rate, obs.fast_window_seconds, policy.fast_attack_z)


def _observed_mix(obs: Observation) -> TokenMix | None:
    mean_in, mean_out = _clean(obs.mean_input_tokens), _clean(obs.mean_output_tokens)
    if not mean_in or not mean_out:
        return None
    return TokenMix(mean_input_tokens=mean_in, mean_output_tokens=mean_out)


def _fresh(
    state: ModelScalingState,
    obs: Observation,
    ctx: ModelContext,
    policy: ScalingPolicy,
    now: float,
    rate: float,
) -> DemandDecision:
    queue = _clean(obs.queue_length)
    wake_demand = _clean(obs.wake_demand)
    growth, drain = _queue_terms(state, queue, policy, now, obs, rate)
    fast = _fast_rate(obs, policy)
    # The short-window rate already counts what the window's in-flight growth adds back
    # (the arrivals of the last seconds): it competes with their sum, not with completions.
    arrivals = rate + growth if fast is None else max(rate + growth, fast)
    estimate = arrivals + drain
    traffic = rate > 0 or bool(queue) or bool(wake_demand)
    samples = add_sample(
        state.samples,
        (now, estimate),
        keep_seconds=policy.history_seconds,
        max_samples=policy.max_samples,
    )
    forecast = forecast_demand(samples, now, estimate, ctx.horizon_seconds, policy.forecast)
    peak = window_peak(samples, now, policy.scale_down_window_seconds)
    peak = estimate if peak is None else peak
    planned = max(forecast, peak)
    source = "forecast" if forecast > peak else "metrics"

    head = f"observed {estimate:.2f} rps (completions {rate:.2f}"
    if fast is not None and fast > rate:
        head += f", short-window rate less {policy.fast_attack_z:g} sd {fast:.2f}"
    if queue is not None or growth:
        head += f", in-flight growth {growth:.2f}, queue drain {drain:.2f}"
    head += ")"
    if source == "forecast":
        slope = trend_slope(samples, now, policy.forecast) or 0.0
        why = (
            f"forecast {forecast:.2f} rps in {ctx.horizon_seconds:g} s "
            f"(trend {slope * 60:+.3f} rps/min)"
        )
    elif peak > estimate:
        why = f"peak {peak:.2f} rps of the last {policy.scale_down_window_seconds:g} s"
    else:
        why = "planning for it"

    last = state.planned_requests_per_second
    if (
        last is not None
        and planned < last
        and planned >= (1.0 - policy.scale_down_tolerance) * last
    ):
        why = (
            f"kept {last:.2f} rps: {planned:.2f} is within the "
            f"{policy.scale_down_tolerance:.0%} scale-down tolerance"
        )
        planned = last
        source = state.planned_source or source

    last_traffic = now if traffic else (state.last_traffic_time or now)
    idle_for = now - last_traffic
    to_zero = _zero_allowed(policy, ctx) and idle_for >= policy.idle_seconds
    floor = _base_floor(ctx)
    if to_zero:
        planned, source, floor = 0.0, "metrics", 0
        why = f"no traffic for {idle_for:.0f} s (idle after {policy.idle_seconds:g} s): to zero"

    missing = [
        name
        for name, value in (
            ("queue length", queue),
            ("latency", obs.ttft_ms if obs.ttft_ms is not None else obs.tpot_ms),
            ("token mix", _observed_mix(obs)),
        )
        if value is None
    ]
    message = "request rate fresh"
    if missing:
        message += f"; not observed: {', '.join(missing)}"
    new_state = replace(
        state,
        samples=samples,
        last_queue=(now, queue) if queue is not None else state.last_queue,
        last_traffic_time=last_traffic,
        planned_requests_per_second=planned,
        planned_source=source,
        scaled_to_zero=to_zero,
        metrics_available=True,
    )
    return DemandDecision(
        demand=Demand(requests_per_second=planned, source=source, mix=_observed_mix(obs)),
        state=new_state,
        observed_requests_per_second=estimate,
        metrics_available=True,
        metrics_reason=METRICS_FRESH,
        metrics_message=message,
        hold=False,
        scale_to_zero=to_zero,
        wake=False,
        min_replicas=floor,
        explanation=f"{head}; {why}",
    )


def _at_zero(
    state: ModelScalingState,
    obs: Observation,
    ctx: ModelContext,
    policy: ScalingPolicy,
    now: float,
    *,
    stale: bool,
    rate: float | None,
) -> DemandDecision:
    queue = None if stale else _clean(obs.queue_length)
    # The data age is that of the engines' series, and a model at zero has no engines: it is
    # always "stale" here. The wake query reads another source (a gateway) and its answer is
    # current when it comes, so it is used whenever answered.
    wake_demand = _clean(obs.wake_demand)
    signals = [v for v in (rate, queue, wake_demand) if v is not None]
    if any(v > 0 for v in signals):
        demand = (rate or 0.0) + (
            (queue or 0.0) + (wake_demand or 0.0)
        ) / policy.queue_drain_seconds
        floor = _base_floor(ctx)
        new_state = replace(
            state,
            samples=add_sample(
                state.samples,
                (now, demand),
                keep_seconds=policy.history_seconds,
                max_samples=policy.max_samples,
            ),
            last_queue=(now, queue) if queue is not None else state.last_queue,
            last_traffic_time=now,
            planned_requests_per_second=demand,
            planned_source="metrics",
            scaled_to_zero=False,
            metrics_available=True,
        )
        parts = ", ".join(
            f"{name} {value:g}"
            for name, value in (
                ("completions/s", rate),
                ("queue", queue),
                ("wake demand", wake_demand),
            )
            if value
        )
        return DemandDecision(
            demand=Demand(requests_per_second=demand, source="metrics", mix=_observed_mix(obs)),
            state=new_state,
            observed_requests_per_second=demand,
            metrics_available=True,
            metrics_reason=METRICS_FRESH,
            metrics_message=f"woken by {parts}",
            hold=False,
            scale_to_zero=False,
            wake=True,
            min_replicas=floor,
            explanation=f"waking from zero ({parts}): planning {demand:.2f} rps and at least "
            f"{floor} replica(s)",
        )
    if policy.wake_query_configured and wake_demand is None:
        message = "wake query not answered: staying at zero replicas"
        return DemandDecision(
            demand=Demand(requests_per_second=0.0, source="metrics"),
            state=replace(state, metrics_available=False),
            observed_requests_per_second=None,
            metrics_available=False,
            metrics_reason=WAKE_QUERY_MISSING,
            metrics_message=message,
            hold=True,
            scale_to_zero=True,
            wake=False,
            min_replicas=0,
            explanation=message,
        )
    message = (
        "scaled to zero; waiting for the wake query"
        if policy.wake_query_configured
        else "scaled to zero; no wake query configured: only traffic reported by the "
        "request-rate query wakes the model"
    )
    return DemandDecision(
        demand=Demand(requests_per_second=0.0, source="metrics"),
        state=replace(state, metrics_available=True),
        observed_requests_per_second=rate,
        metrics_available=True,
        metrics_reason=SCALED_TO_ZERO,
        metrics_message=message,
        hold=False,
        scale_to_zero=True,
        wake=False,
        min_replicas=0,
        explanation=message,
    )


def limit_replica_change(current: int, desired: int, policy: ScalingPolicy) -> int:
    """The model's total replicas after this cycle: ``desired`` within the per-cycle limits.

    Up: at most ``max_scale_up_replicas`` more, and at most
    ``max(ceil(current * max_scale_up_factor), current + 1)``. Down: at most
    ``max_scale_down_replicas`` fewer. Unset limits do not bound.
    """
    _check_count("current replicas", current, low=0)
    _check_count("desired replicas", desired, low=0)
    if desired > current:
        allowed = desired
        if policy.max_scale_up_replicas is not None:
            allowed = min(allowed, current + policy.max_scale_up_replicas)
        if policy.max_scale_up_factor is not None:
            allowed = min(
                allowed, max(math.ceil(current * policy.max_scale_up_factor), current + 1)
            )
        return allowed
    if desired < current and policy.max_scale_down_replicas is not None:
        return max(desired, current - policy.max_scale_down_replicas)
    return desired


class SLOVerdict(NamedTuple):
    """The ``SLOMet`` condition: status (``None`` = Unknown), reason and message."""

    met: bool | None
    reason: str
    message: str


def slo_met(obs: Observation, slo: LatencySLO, policy: ScalingPolicy) -> SLOVerdict:
    """Whether the observed percentiles meet the SLO.

    False as soon as one observed target is exceeded (strictly; no tolerance, this is a
    report). True only when every target of the SLO is observed and met. Unknown when the
    metrics are stale or a target is not observed and none is broken.
    """
    age = obs.data_age_seconds
    if not (math.isfinite(age) and age <= policy.stale_after_seconds):
        return SLOVerdict(None, METRICS_STALE, f"metrics {age:g} s old")
    pct = f"p{slo.percentile:g}"
    broken: list[str] = []
    met: list[str] = []
    unobserved: list[str] = []
    for name, observed, target in (
        ("TTFT", _clean(obs.ttft_ms), slo.ttft_ms),
        ("TPOT", _clean(obs.tpot_ms), slo.tpot_ms),
    ):
        if target is None:
            continue
        if observed is None:
            unobserved.append(name)
        elif observed > target:
            broken.append(f"{pct} {name} {observed:.1f} ms > {target:g} ms")
        else:
            met.append(f"{pct} {name} {observed:.1f} ms <= {target:g} ms")
    if broken:
        return SLOVerdict(False, "SLOViolated", "; ".join(broken + met))
    if unobserved:
        return SLOVerdict(None, "LatencyNotObserved", f"{' and '.join(unobserved)} not observed")
    return SLOVerdict(True, "WithinSLO", "; ".join(met))
