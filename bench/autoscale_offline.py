"""Offline closed loop: the trace phase of ``bench/autoscale.py`` in simulated time.

Why: a sandbox run of the trace phase takes ~10 minutes of wall time and one sample of a noisy
process; tuning the autoscaling policy needs many. This replays the same trace through the
same simulated engines (:mod:`infleet.sandbox.engine_sim`), the same infleet decision code
(:func:`infleet.core.autoscale.decide_demand`, :func:`~infleet.core.fleet.variant_capacity`,
:func:`~infleet.core.autoscale_status.replica_bounds`) and the same HPA-style baseline
(:mod:`baselines`), on a virtual clock, in about a minute per controller and seed.

What stands in for the real parts, and how faithfully:

* **Prometheus**: every 2 s each replica's counters, queue, running count and TTFT buckets
  are recorded as series (one per replica); ``rate`` over the metrics window is computed per
  series with Prometheus' extrapolation rule and summed, ``deriv`` is a least-squares slope
  of the summed queue, quantiles go through ``histogram_quantile``'s interpolation. Series of
  removed replicas stop (staleness), as in Prometheus.
* **Kubernetes**: a replica asked for at ``t`` runs at ``t + 1 s`` (apply, ReplicaSet,
  scheduler, kwok) and takes traffic ``startupSeconds`` later; a removed replica goes at once,
  not-ready ones first, then the newest (the ReplicaSet controller's order).
* **infleet**: one model, one pool, so the planner's answer is the fewest replicas whose
  capacity covers ``demand / targetUtilization`` within the cycle's bounds (what
  ``plan_fleet`` returns for one model on one pool). Calibration runs as in the operator
  (:func:`~infleet.core.calibration.calibrate_variants` on the windowed p95 TTFT and the
  utilisation against the calibrated capacity, learning only once the fleet has settled for
  1.5 metrics windows); ``--calibration`` changes its settings.

It is a development tool: the figures quoted as results come from ``bench/autoscale.py`` on the
sandbox. ``--seeds`` varies the thinning of the trace (which rows are replayed) and the
warm-up arrivals, so policies are compared over several replays instead of one.
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from autoscale import (
    HPA_TARGET,
    LEVELS,
    PRICE,
    REAL_STARTUP_SECONDS,
    TRACE,
    ModelShape,
    cut_trace,
    first_moved,
    model_manifest,
    replicas_for,
)
from autoscale_math import bucket_quantile, replica_seconds
from baselines import Hpa, HpaBehavior, PodMetric, pods_metric_replicas
from infleet.api import ModelDeployment
from infleet.core.autoscale import (
    DemandDecision,
    ModelScalingState,
    Observation,
    ScalingPolicy,
    decide_demand,
    limit_replica_change,
    model_context,
    policy_for_model,
)
from infleet.core.autoscale_status import replica_bounds
from infleet.core.calibration import CalibrationSettings, VariantObservation, calibrate_variants
from infleet.core.fleet import model_slo, variant_capacity
from infleet.core.probe import ProbeLine, probe_line, rising
from infleet.reconcile.autoscale import SETTLE_WINDOWS
from infleet.sandbox.engine_replicas import replica_spec
from infleet.sandbox.engine_sim import ModelLoad, ModelSim, ReplicaSim
from infleet.sandbox.load_trace import read_trace

TICK = 0.1
SCRAPE = 2.0
LAUNCH_DELAY = 1.0
"""Seconds from a replica count written to a pod running (apply, ReplicaSet, kwok)."""


# ---------------------------------------------------------------------------- Prometheus


@dataclass
class Series:
    """One replica's scraped samples: ``(time, value)`` per metric name."""

    samples: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def add(self, name: str, t: float, value: float) -> None:
        self.samples.setdefault(name, []).append((t, value))

    def window(self, name: str, now: float, seconds: float) -> list[tuple[float, float]]:
        points = self.samples.get(name, [])
        # Samples are appended in time order: walk back from the end.
        out = []
        for t, v in reversed(points):
            if t <= now - seconds:
                break
            if t <= now:
                out.append((t, v))
        out.reverse()
        return out

    def last(self, name: str, now: float, lookback: float = 5 * 60) -> float | None:
        for t, v in reversed(self.samples.get(name, [])):
            if t <= now:
                return v if t > now - lookback else None
        return None


def prom_rate(points: Sequence[tuple[float, float]], now: float, seconds: float) -> float | None:
    """Prometheus' ``rate`` of one counter series over ``(now - seconds, now]``."""
    if len(points) < 2:
        return None
    (t0, v0), (t1, v1) = points[0], points[-1]
    delta = v1 - v0
    sampled = t1 - t0
    if sampled <= 0:
        return None
    average = sampled / (len(points) - 1)
    to_start = t0 - (now - seconds)
    to_end = now - t1
    if v0 >= 0 and delta > 0:
        to_zero = sampled * (v0 / delta)
        to_start = min(to_start, to_zero)
    threshold = average * 1.1
    extended = sampled
    extended += to_start if to_start < threshold else average / 2
    extended += to_end if to_end < threshold else average / 2
    return delta * (extended / sampled) / seconds


def slope(points: Sequence[tuple[float, float]]) -> float | None:
    if len(points) < 2:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    spread = sum((t - mt) ** 2 for t, _ in points)
    if spread <= 0:
        return None
    return sum((t - mt) * (v - mv) for t, v in points) / spread


# ---------------------------------------------------------------------------- the world


@dataclass
class Pod:
    name: str
    created: float
    order: int
    """Creation order (pods made in one scale-up share ``created``)."""
    sim: ReplicaSim
    series: Series = field(default_factory=Series)
    ttft: list[tuple[float, list[tuple[float, float]]]] = field(default_factory=list)
    """Scraped cumulative TTFT buckets, ``(time, [(upper bound, count), ...])``."""


@dataclass
class World:
    """One controller's model: engine simulation, pods, scraped series."""

    model: ModelDeployment
    sim: ModelSim
    pods: dict[str, Pod] = field(default_factory=dict)
    gone: list[Pod] = field(default_factory=list)
    desired: int = 0
    replica_log: list[tuple[float, int]] = field(default_factory=list)
    queue_points: list[tuple[float, float]] = field(default_factory=list)
    inflight_points: list[tuple[float, float]] = field(default_factory=list)
    """Summed ``waiting + running`` per scrape (infleet's in-flight growth query)."""
    serial: int = 0

    def scale(self, now: float, replicas: int) -> None:
        self.replica_log.append((now, replicas))
        self.desired = replicas
        spec = replica_spec(self.model, self.model.spec.variants[0])
        startup = float(self.model.spec.variants[0].startup_seconds)
        while len(self.pods) < replicas:
            self.serial += 1
            name = f"pod-{self.serial}"
            ready_at = now + LAUNCH_DELAY + startup
            self.pods[name] = Pod(name, now, self.serial, ReplicaSim(spec, 1.0, ready_at))
        while len(self.pods) > replicas:
            # Not-ready pods first, then the newest (the ReplicaSet controller's order).
            victim = max(self.pods.values(), key=lambda p: (not p.sim.ready(now), p.order))
            del self.pods[victim.name]
            self.gone.append(victim)
        self.sim.set_replicas({n: (p.sim.spec, 1.0, p.sim.ready_at) for n, p in self.pods.items()})
        # set_replicas keeps existing ReplicaSim objects and makes new ones for new names.
        for name, pod in self.pods.items():
            pod.sim = self.sim.replicas[name]

    def running(self, now: float) -> list[Pod]:
        return [p for p in self.pods.values() if now >= p.created + LAUNCH_DELAY]

    def scrape(self, now: float) -> None:
        waiting, inflight = 0.0, 0.0
        for pod in self.running(now):
            r, s = pod.sim, pod.series
            s.add("success", now, r.counters.success)
            s.add("prompt", now, r.counters.finished_prompt_tokens)
            s.add("generation", now, r.counters.finished_generation_tokens)
            s.add("waiting", now, float(r.waiting))
            s.add("running", now, float(r.running))
            s.add("ready", now, 1.0 if r.ready(now) else 0.0)
            pod.ttft.append((now, r.ttft.cumulative()))
            waiting += r.waiting
            inflight += r.waiting + r.running
        self.queue_points.append((now, waiting))
        self.inflight_points.append((now, inflight))

    def all_series(self) -> list[Series]:
        return [p.series for p in [*self.pods.values(), *self.gone]]

    def sum_rate(self, name: str, now: float, seconds: float) -> float | None:
        rates = [prom_rate(s.window(name, now, seconds), now, seconds) for s in self.all_series()]
        got = [r for r in rates if r is not None]
        return sum(got) if got else None

    def ttft_quantile(self, q: float, now: float, seconds: float) -> float | None:
        """``histogram_quantile(q, sum by (le) (increase(ttft_bucket[seconds])))``, s."""
        total: dict[float, float] = {}
        for pod in [*self.pods.values(), *self.gone]:
            inside = [(t, b) for t, b in pod.ttft if now - seconds < t <= now]
            if len(inside) < 2:
                continue
            first = dict(inside[0][1])
            for bound, count in inside[-1][1]:
                total[bound] = total.get(bound, 0.0) + count - first.get(bound, 0.0)
        if total.get(math.inf, 0.0) <= 0:
            return None
        return bucket_quantile(q, total)

    def ready_count(self, now: float) -> int:
        return sum(1 for p in self.running(now) if p.sim.ready(now))

    def ttft_buckets_total(self) -> dict[float, float]:
        """Cumulative TTFT buckets over every replica that ever ran (for scoring)."""
        out: dict[float, float] = {}
        for pod in [*self.pods.values(), *self.gone]:
            for bound, count in pod.sim.ttft.cumulative():
                out[bound] = out.get(bound, 0.0) + count
        return out


# ---------------------------------------------------------------------------- controllers

Controller = Callable[[World, float], int]


def _calibrate(
    world: World,
    now: float,
    window: float,
    policy: ScalingPolicy,
    decision: DemandDecision,
    state: ModelScalingState,
    total: int,
) -> ModelScalingState:
    """The operator's calibration step (``reconcile/autoscale.py``) on the simulated metrics."""
    model = world.model
    spec = model.spec
    factor = state.calibration_factors().get("h100", 1.0)
    capacity = variant_capacity(
        model, 0, mix=decision.demand.mix, calibration=factor
    ).requests_per_second
    rate = world.sum_rate("success", now, window)
    reporting = len(world.running(now))
    p = world.ttft_quantile(spec.slo.percentile / 100.0, now, window)
    observation = VariantObservation(
        ttft_ms=None if p is None else p * 1000.0,
        tpot_ms=None,
        utilization=None if rate is None or not reporting else rate / (reporting * capacity),
    )
    changed_at = state.last_change_time
    if world.ready_count(now) < world.desired or state.last_replicas != total:
        changed_at = now
    settled = changed_at is None or now - changed_at >= SETTLE_WINDOWS * window
    updates = calibrate_variants(
        {"h100": factor},
        {"h100": observation},
        slo=model_slo(model),
        target_utilization=spec.target_utilization,
        settings=policy.calibration,
        stale_after_seconds=policy.stale_after_seconds,
        settled=settled,
    )
    if any(u.action == "derated" for u in updates.values()):
        changed_at = now
    return replace(
        state.with_calibration(updates), last_replicas=total, last_change_time=changed_at
    )


def infleet_controller(
    window: float,
    policy: ScalingPolicy | None = None,
    fast: bool = True,
    calibrate: bool = True,
) -> Controller:
    """infleet's decision for the one model: metrics -> demand -> calibration -> fewest
    replicas.

    ``fast``: read the short-window rate as the operator does by default (40% of the
    window, :attr:`~infleet.core.settings.AutoscaleSettings.resolved_fast_window`).
    ``calibrate``: learn the variant's capacity factor from the windowed p95 TTFT, as the
    operator does."""
    state: dict[str, ModelScalingState | None] = {"s": None}
    fast_window = 0.4 * window if fast else None

    def decide(world: World, now: float) -> int:
        model = world.model
        spec = model.spec
        pol = policy_for_model(spec, policy)
        rate = world.sum_rate("success", now, window)
        prompt = world.sum_rate("prompt", now, window)
        gen = world.sum_rate("generation", now, window)
        queue_now = [p for p in world.queue_points if p[0] <= now]
        queue = queue_now[-1][1] if queue_now else None
        growth = slope([p for p in world.inflight_points if now - window < p[0] <= now])
        last_scrape = queue_now[-1][0] if queue_now else -math.inf
        obs = Observation(
            request_rate=rate,
            fast_request_rate=None
            if fast_window is None
            else world.sum_rate("success", now, fast_window),
            fast_window_seconds=fast_window,
            queue_length=queue,
            mean_input_tokens=prompt / rate if rate and prompt is not None else None,
            mean_output_tokens=gen / rate if rate and gen is not None else None,
            data_age_seconds=now - last_scrape,
            inflight_growth=growth,
            growth_window_seconds=window,
        )
        total = world.desired
        decision = decide_demand(
            state["s"], obs, model_context(spec, total, frozenset({"h100"})), pol, now
        )
        new_state = decision.state
        if calibrate and not decision.hold:
            new_state = _calibrate(world, now, window, pol, decision, new_state, total)
        state["s"] = new_state
        factor = new_state.calibration_factors().get("h100", 1.0)
        low, high = replica_bounds(decision, spec_max=spec.replicas.max, current=total, policy=pol)
        cap = variant_capacity(
            model, 0, mix=decision.demand.mix, calibration=factor
        ).requests_per_second
        want = math.ceil(decision.demand.requests_per_second / spec.target_utilization / cap - 1e-9)
        return limit_replica_change(total, min(max(want, low), high), pol)

    return decide


def hpa_controller(behavior: HpaBehavior, slots: int, target: float = HPA_TARGET) -> Controller:
    hpa = Hpa(behavior)

    def decide(world: World, now: float) -> int:
        pods = []
        for pod in world.pods.values():
            running = pod.series.last("running", now)
            ready = pod.series.last("ready", now)
            value = None if running is None else running / slots
            pods.append(PodMetric(value, bool(ready)))
        current = world.desired
        proposed = pods_metric_replicas(current, pods, target, behavior.tolerance)
        new = hpa.decide(now, current, proposed)
        hpa.record(now, current, new)
        return new

    return decide


# ---------------------------------------------------------------------------- one run


@dataclass(frozen=True)
class Result:
    name: str
    seed: int
    minutes: int
    met: int
    cost: float
    mean_replicas: float
    p95: list[float]


def run(
    name: str,
    make: Callable[[ModelDeployment], tuple[Controller, float]],
    *,
    seed: int,
    speedup: float = 8.0,
    scale: float = 0.5,
    ttft_ms: float = 1000.0,
    minutes: int | None = None,
    target_utilization: float = 0.8,
    probe: tuple[float, float] | None = None,
) -> Result:
    """``probe``: ``(seconds between the operator's probes, metrics window)``, both on the
    replay's clock, for an infleet controller; ``None``: no probe."""
    with tempfile.TemporaryDirectory() as work:
        cut = cut_trace(TRACE, minutes, Path(work))
        rows = read_trace(cut.path, speedup=speedup, scale=scale, seed=seed)
    first_rps = cut.per_minute[0] / 60.0 * speedup * scale
    shape = ModelShape(
        ttft_ms=ttft_ms,
        prior_rps=round(first_rps, 2),
        input_tokens=cut.mean_input_tokens,
        output_tokens=cut.mean_output_tokens,
        startup_seconds=max(1, round(REAL_STARTUP_SECONDS / speedup)),
        scale_down_window=math.ceil(300 / speedup),
        max_replicas=40,
        target_utilization=target_utilization,
    )
    model = ModelDeployment.model_validate(model_manifest("bench", "infleet", shape))
    rng = np.random.default_rng(seed)
    world = World(model, ModelSim())
    controller, interval = make(model)
    # Start settled: the replicas the prior needs, ready, then 45 s of steady load.
    world.scale(-1000.0, replicas_for(shape.prior_rps))
    world.sim.load = ModelLoad(first_rps, shape.input_tokens, shape.output_tokens)
    warm = max(45.0, 3 * shape.startup_seconds)
    span = len(cut.per_minute) * 60.0 / speedup
    t, next_scrape, next_cycle = -warm, -warm, -warm + 0.5
    prober = None if probe is None else Prober(model, probe[1], probe[0], t)
    edges = [60.0 * k / speedup for k in range(len(cut.per_minute) + 1)]
    readings: list[dict[float, float]] = []
    replayed = False
    while t < span + 1e-9:
        if not replayed and t >= 0:
            world.sim.load = ModelLoad()
            world.sim.replay(rows, 0.0, t)
            replayed = True
        if readings.__len__() < len(edges) and t >= edges[len(readings)] - 1e-9:
            readings.append(world.ttft_buckets_total())
        if t >= next_scrape - 1e-9:
            world.scrape(t)
            next_scrape += SCRAPE
        early = prober is not None and prober.fires(world, t)
        if early or t >= next_cycle - 1e-9:
            new = controller(world, t)
            if new != world.desired:
                world.scale(t, new)
            next_cycle = t + interval if early else next_cycle + interval
        world.sim.tick(t, TICK, rng)
        t += TICK
    while len(readings) < len(edges):
        readings.append(world.ttft_buckets_total())
    p95 = []
    for before, after in itertools.pairwise(readings):
        delta = {b: after.get(b, 0.0) - before.get(b, 0.0) for b in after}
        p95.append(bucket_quantile(0.95, delta) if delta.get(math.inf, 0.0) > 0 else math.nan)
    met = sum(1 for p in p95 if math.isnan(p) or p * 1000 <= ttft_ms)
    # Replica-seconds of the desired count (spec.replicas) over the replay.
    area = replica_seconds(world.replica_log, 0.0, span)
    cost = area * speedup / 3600.0 * PRICE
    return Result(name, seed, len(p95), met, cost, area / span, p95)


class Prober:
    """The operator's probe between cycles (:mod:`infleet.core.probe`) in the replay: every
    ``every`` seconds, the short-window rate (40% of the window, as the operator's default)
    against what the running replicas cover at the target utilisation; each line fires
    once."""

    def __init__(self, model: ModelDeployment, window: float, every: float, start: float) -> None:
        self.model = model
        self.fast_window = 0.4 * window
        self.every = every
        self.next = start
        self.fired: ProbeLine | None = None
        self.capacity = variant_capacity(model, 0).requests_per_second

    def fires(self, world: World, t: float) -> bool:
        if t < self.next - 1e-9:
            return False
        self.next += self.every
        spec = self.model.spec
        line = probe_line(
            capacity_requests_per_second=world.desired * self.capacity,
            target_utilization=spec.target_utilization,
            replicas=world.desired,
            max_replicas=spec.replicas.max,
            unmet_requests_per_second=0.0,
        )
        if line is None or line == self.fired:
            return False
        fast = world.sum_rate("success", t, self.fast_window)
        if not rising(line, fast, self.fast_window, ScalingPolicy().fast_attack_z):
            return False
        self.fired = line
        return True


def reaction(
    seed: int,
    *,
    fast: bool = True,
    window: float = 20.0,
    interval: float = 5.0,
    hold: float = 60.0,
    levels: Sequence[float] = LEVELS,
    probe: float | None = None,
) -> list[tuple[float | None, int]]:
    """The benchmark's staircase (phase 1) for infleet: per step, ``t_req - t_prom`` in
    seconds (``None``: no scale-up within the hold) and the replicas before the step, with
    ``t_prom`` when the window's
    request-rate query moved (:func:`autoscale.first_moved`) and ``t_req`` the first cycle
    asking for more replicas. ``seed`` draws the arrivals and the phases of the scrapes and
    cycles against the steps. ``probe``: every so many seconds between cycles, the operator's
    probe (:func:`infleet.core.probe.rising` on the short-window rate against the plan's
    covered arrivals) starts a cycle early; the next regular cycle is then an interval later."""
    shape = ModelShape(
        ttft_ms=500, prior_rps=levels[0], input_tokens=512, output_tokens=128,
        startup_seconds=2, scale_down_window=300, max_replicas=16,
    )  # fmt: skip
    model = ModelDeployment.model_validate(model_manifest("bench", "infleet", shape))
    rng = np.random.default_rng(seed)
    world = World(model, ModelSim())
    controller = infleet_controller(window, fast=fast)
    world.scale(-1000.0, replicas_for(levels[0]))
    world.sim.load = ModelLoad(levels[0], 512, 128)
    starts, at = [], 0.0
    for step in range(1, len(levels)):
        starts.append(at)
        at += hold + (step * 7.3) % 15  # the benchmark's staggered holds
    t = -hold
    next_scrape = t + (seed * 0.37) % SCRAPE
    next_cycle = t + (seed * 1.3) % interval
    prober = None if probe is None else Prober(model, window, probe, t)
    history: list[tuple[float, float]] = []
    delays: list[tuple[float | None, int]] = []
    step, before, ceiling = 0, 0, 0.0
    t_req: float | None = None
    moved_series: list[tuple[float, float]] = []

    def close() -> None:
        moved = first_moved(moved_series, ceiling)
        delays.append((None if moved is None or t_req is None else t_req - moved, before))

    while t < at:
        if step < len(starts) and t >= starts[step] - 1e-9:
            if step:
                close()
            ceiling = max((r for when, r in history if when > t - 15.5), default=0.0)
            before, t_req, moved_series = world.desired, None, []
            step += 1
            world.sim.load = ModelLoad(levels[step], 512, 128)
        if t >= next_scrape - 1e-9:
            world.scrape(t)
            next_scrape += SCRAPE
        rate = world.sum_rate("success", t, window) or 0.0
        history.append((t, rate))
        if step:
            moved_series.append((t, rate))
        early = prober is not None and prober.fires(world, t)
        if early or t >= next_cycle - 1e-9:
            new = controller(world, t)
            if new != world.desired:
                world.scale(t, new)
            if step and t_req is None and new > before:
                t_req = t
            next_cycle = t + interval if early else next_cycle + interval
        world.sim.tick(t, TICK, rng)
        t += TICK
    close()
    return delays


@dataclass(frozen=True)
class Config:
    """One controller at one setting of its knob."""

    kind: str
    """``infleet`` (knob: ``spec.targetUtilization``), ``hpa`` (knob: batch-slot target) or
    ``fixed`` (knob: the replica count, held from the warm-up on)."""
    knob: float

    @property
    def label(self) -> str:
        name = {"infleet": "targetUtilization", "hpa": "slot target", "fixed": "replicas"}
        return f"{self.kind} {name[self.kind]} {self.knob:g}"


def simulate(
    config: Config,
    seed: int,
    minutes: int | None,
    window: float,
    calibration: CalibrationSettings | None = None,
    probe: float | None = None,
) -> Result:
    """One replay of the trace under ``config`` (8x time compression, half the rate);
    ``calibration``: infleet's calibration settings (None: the operator's defaults);
    ``probe``: infleet's ``--probe-interval`` in real seconds (None: no probe)."""
    speedup = 8.0
    interval = 15.0 / speedup

    def make(model: ModelDeployment) -> tuple[Controller, float]:
        if config.kind == "infleet":
            policy = None if calibration is None else ScalingPolicy(calibration=calibration)
            return infleet_controller(window, policy), interval
        if config.kind == "fixed":
            return (lambda world, now: round(config.knob)), interval
        slots = replica_spec(model, model.spec.variants[0]).slots
        behavior = HpaBehavior(max_replicas=40).scaled(speedup)
        return hpa_controller(behavior, slots, config.knob), interval

    utilization = config.knob if config.kind == "infleet" else 0.8
    probed = (probe / speedup, window) if probe and config.kind == "infleet" else None
    return run(
        config.label, make, seed=seed, speedup=speedup, minutes=minutes,
        target_utilization=utilization, probe=probed,
    )  # fmt: skip


def calibration_settings(text: str) -> CalibrationSettings | None:
    """``FIELD=VALUE,...`` as :class:`CalibrationSettings` (None when empty)."""
    if not text.strip():
        return None
    names = {f.name for f in fields(CalibrationSettings)}
    values: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in names:
            raise ValueError(
                f"--calibration: {part.strip()!r} is not FIELD=VALUE with FIELD one of "
                f"{', '.join(sorted(names))}"
            )
        try:
            values[name] = float(value)
        except ValueError:
            raise ValueError(f"--calibration: {name} needs a number, got {value!r}") from None
    return CalibrationSettings(**values)


def _seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        out.extend(range(int(low), int(high or low) + 1))
    return out


def print_reaction(seeds: Sequence[int], jobs: int) -> int:
    print("Offline staircase 3, 7, 13, 21, 30, 42 req/s (60 s holds, staggered); infleet "
          "--interval 5 --metrics-window 20s;\nt_req - t_prom per step, s "
          "(- : none in the hold), (replicas before the step)")  # fmt: skip
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        variants = {
            "window rate only": {"fast": False},
            "fast attack (8s)": {"fast": True},
            "+ probe every 1s": {"fast": True, "probe": 1.0},
        }
        runs = {
            label: [pool.submit(reaction, seed, **kwargs) for seed in seeds]
            for label, kwargs in variants.items()
        }
        for label, futures in runs.items():
            medians = []
            for seed, future in zip(seeds, futures, strict=True):
                steps = future.result()
                counted = [60.0 if d is None else d for d, _ in steps]
                medians.append(statistics.median(counted))
                shown = " ".join(f"{'-' if d is None else f'{d:.1f}':>5} ({n})" for d, n in steps)
                print(f"{label:<18} seed {seed:>2}: {shown}   median {medians[-1]:5.1f}")
            within = sum(1 for m in medians if m <= 5.0)
            print(f"{label:<18} median of medians {statistics.median(medians):.1f} s; "
                  f"{within}/{len(medians)} replays with a median within a 5 s cycle")  # fmt: skip
    return 0


def oracle_minutes(
    runs: Sequence[tuple[int, Result]], ttft_ms: float
) -> tuple[list[int], list[int]]:
    """The static per-minute oracle of one replay, from fixed-count runs ``(replicas,
    result)``: each minute's fewest replicas whose run met the SLO in it (a minute without
    requests is met), and the minutes no run met (counted at the largest count).

    A lower bound in spirit, not a controller: it knows every minute's load in advance, its
    replicas are ready the moment the minute starts and cost nothing to start or stop, and
    each minute is judged as it went with that many replicas held all along (so with the
    backlog that count leaves, not the one of the previous minute's oracle count)."""
    ordered = sorted(runs, key=lambda run: run[0])
    need: list[int] = []
    unmet: list[int] = []
    for minute in range(ordered[0][1].minutes):
        met = [
            n for n, r in ordered if math.isnan(r.p95[minute]) or r.p95[minute] * 1000 <= ttft_ms
        ]
        need.append(met[0] if met else ordered[-1][0])
        if not met:
            unmet.append(minute)
    return need, unmet


ORACLE_HEADROOMS = (1.0, 0.9, 0.8, 0.75, 0.7)
"""``targetUtilization`` values the oracle is also priced at (:func:`with_headroom`)."""


def with_headroom(need: Sequence[int], headroom: float) -> list[int]:
    """The oracle's per-minute replicas planned with infleet's headroom: each minute's need
    divided by ``headroom`` (``targetUtilization``) and rounded up, as the planner rounds
    ``demand / targetUtilization / capacity``; a clairvoyant controller that keeps the
    headroom."""
    if not 0 < headroom <= 1:
        raise ValueError(f"headroom must be in (0, 1], got {headroom!r}")
    return [math.ceil(n / headroom - 1e-9) for n in need]


def print_oracle(by: dict[Config, list[Result]], seeds: Sequence[int], ttft_ms: float) -> None:
    """The oracle's cost and mean replicas over the seeds (see :func:`oracle_minutes`), after
    the controllers' lines: bare, then with each of :data:`ORACLE_HEADROOMS`."""
    fixed = sorted((c for c in by if c.kind == "fixed"), key=lambda c: c.knob)
    if not fixed:
        return
    print(f"\nstatic per-minute oracle over fixed {fixed[0].knob:g}-{fixed[-1].knob:g} replicas "
          "(each minute: the fewest replicas that met the SLO in it; replicas free to start "
          "and stop)")  # fmt: skip
    needs: list[list[int]] = []
    unmet: list[str] = []
    for index, seed in enumerate(seeds):
        need, missed = oracle_minutes([(round(c.knob), by[c][index]) for c in fixed], ttft_ms)
        needs.append(need)
        unmet += [f"{seed}: {minute}" for minute in missed]
    for headroom in ORACLE_HEADROOMS:
        planned = [with_headroom(need, headroom) for need in needs]
        # A trace minute is 60 s of replica time.
        cost = statistics.fmean(sum(p) / 60.0 * PRICE for p in planned)
        mean = statistics.fmean(statistics.fmean(p) for p in planned)
        label = "oracle" if headroom == 1.0 else f"oracle / targetUtilization {headroom:g}"
        tail = f"  no fixed count met: {', '.join(unmet) or 'none'}" if headroom == 1.0 else ""
        print(f"{label:<34} {'':>12} {'':>6} {cost:>8.2f} {mean:>9.2f}{tail}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", default="0-7", help="trace thinning seeds, e.g. 0-7 or 1,3")
    parser.add_argument("--minutes", type=int, default=None, help="replay the first N minutes")
    parser.add_argument("--window", type=float, default=8.0, help="infleet's metrics window, s")
    parser.add_argument(
        "--infleet", default="0.8", help="infleet targetUtilization values, comma-separated"
    )
    parser.add_argument("--hpa", default="0.8", help="HPA-style slot targets, comma-separated")
    parser.add_argument("--sweep", action="store_true", help="--infleet 0.7-1.0, --hpa 0.6-0.9")
    parser.add_argument(
        "--oracle", default="", help="also replay fixed replica counts, e.g. 3-12, and print "
        "the static per-minute oracle: each minute's fewest replicas that met the SLO",
    )  # fmt: skip
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    parser.add_argument(
        "--reaction", action="store_true", help="the staircase instead: infleet with and "
        "without the fast attack, t_req - t_prom per step",
    )  # fmt: skip
    parser.add_argument(
        "--calibration", default="", metavar="FIELD=VALUE,...",
        help="infleet's CalibrationSettings for the trace replay, e.g. max_factor=2 to let "
        "the capacity factor learn upwards (default: the operator's settings)",
    )  # fmt: skip
    parser.add_argument(
        "--probe", type=float, default=None, metavar="SECONDS",
        help="infleet's --probe-interval in the trace replay, real seconds (5: the operator's "
        "default; divided by the speed-up like every other knob); default: no probe",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        calibration = calibration_settings(args.calibration)
    except ValueError as exc:
        parser.error(str(exc))
    if args.reaction:
        return print_reaction(_seeds(args.seeds), args.jobs)
    if not TRACE.is_file():
        print(f"trace not found: {TRACE} (set INFLEET_TRACE)", file=sys.stderr)
        return 2
    if args.sweep:
        args.infleet, args.hpa = "0.7,0.8,0.9,1.0", "0.6,0.7,0.8,0.9"
    configs = [Config("infleet", float(k)) for k in args.infleet.split(",") if k] + [
        Config("hpa", float(k)) for k in args.hpa.split(",") if k
    ]
    configs += [Config("fixed", float(n)) for n in _seeds(args.oracle)] if args.oracle else []
    seeds = _seeds(args.seeds)
    jobs = [(c, s) for c in configs for s in seeds]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [
            pool.submit(simulate, c, s, args.minutes, args.window, calibration, args.probe)
            for c, s in jobs
        ]
        results = [f.result() for f in futures]
    by: dict[Config, list[Result]] = {}
    for (config, _), result in zip(jobs, results, strict=True):
        by.setdefault(config, []).append(result)
    minutes = results[0].minutes
    print(f"Offline replay: {TRACE.name}, speedup 8, scale 0.5, TTFT SLO 1000 ms (p95 per trace "
          f"minute), seeds {args.seeds}; mean over seeds")  # fmt: skip
    print(f"{'controller':<34} {'SLO minutes':>12} {'worst':>6} {'cost $':>8} {'replicas':>9}"
          "  minutes missed (seed: minutes)")  # fmt: skip
    for config, rs in by.items():
        if config.kind == "fixed":
            continue
        missed = "; ".join(
            f"{r.seed}: {','.join(str(i) for i, p in enumerate(r.p95) if p > 1.0)}"
            for r in rs
            if any(p > 1.0 for p in r.p95)
        )
        print(f"{config.label:<34} {statistics.fmean(r.met for r in rs):>8.2f}/{minutes:<3} "
              f"{min(r.met for r in rs):>6} {statistics.fmean(r.cost for r in rs):>8.2f} "
              f"{statistics.fmean(r.mean_replicas for r in rs):>9.2f}  {missed}")  # fmt: skip
    print_oracle(by, seeds, 1000.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
