"""Live-metrics autoscaling in the fleet cycle (the I/O side of :mod:`infleet.core.autoscale`).

Opt-in: ``infleet run --prometheus-url URL`` (or ``$INFLEET_PROMETHEUS_URL``). Per cycle,
:meth:`Autoscaler.prepare` reads every Apply model's signals from Prometheus (one round of
fleet-wide queries, :mod:`infleet.metrics.fleet`, for the models with default engine queries
and running Deployments; per-model queries for the rest). Per model it then runs the pure
policy (:func:`~infleet.core.autoscale.decide_demand`), calibrates each running variant
(:func:`~infleet.core.calibration.calibrate_variants`) and returns an :class:`AutoscaleCycle`
holding what the planner needs (demand, calibration factors, replica bounds) and, after the
plan, the model's status fields (:meth:`AutoscaleCycle.status`).

State (:class:`~infleet.core.autoscale.ModelScalingState`) is kept in memory per model (by
uid, so a deleted and re-created model starts afresh) and persisted in ``status.scaling``; a
restarted operator restores it from there on the first cycle.

Failure handling: Prometheus being unreachable is detected once per cycle (one probe query),
every model then holds (never scales down, ``MetricsAvailable=False``) without asking again. An
unexpected error for one model is logged and that model holds at its current replicas; the
cycle goes on.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from infleet.api import Engine
from infleet.core.autoscale import (
    DemandDecision,
    ModelScalingState,
    Observation,
    ScalingPolicy,
    SLOVerdict,
    decide_demand,
    model_context,
    policy_for_model,
    slo_met,
)
from infleet.core.autoscale_status import autoscale_status, replica_bounds
from infleet.core.calibration import calibrate_variants
from infleet.core.fleet import Demand, PlanInputs, model_slo, variant_capacity
from infleet.core.plan_types import FleetPlan
from infleet.core.planner import ModelKey, PlacementKey
from infleet.core.probe import ProbeLine, probe_line, rising
from infleet.core.settings import AutoscaleSettings
from infleet.metrics.engines import ENGINE_METRICS
from infleet.metrics.fleet import FleetMetrics, read_fast_rates, read_fleet_metrics
from infleet.metrics.observe import (
    ModelMetrics,
    read_model_metrics,
    read_value,
    read_variant_observations,
    variant_observation,
)
from infleet.metrics.prometheus import (
    PrometheusClient,
    PrometheusError,
    PrometheusHTTPError,
    PrometheusUnreachable,
)
from infleet.reconcile.observe import LiveChild, ParsedModel

log = logging.getLogger("infleet.autoscale")

__all__ = [
    "AutoscaleCycle",
    "Autoscaler",
    "ModelRecord",
    "Rise",
    "autoscaler_from_settings",
    "window_seconds",
]

PROBE_QUERY = "vector(1)"
"""Answered by any Prometheus without touching data: tells "down" from "no series"."""

PROBE_TIMEOUT_SECONDS = 2.0
"""Longest wait for the probe's one query between cycles (no retries): a probe that cannot
answer quickly is skipped, and the regular cycle comes at its time."""

SETTLE_WINDOWS = 1.5
"""Calibration derates only this many metrics windows after the fleet last changed: one window
for the percentile to cover only the new fleet, half one more for scrape and rate() edges."""

_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
    "y": 31536000.0,
}


def window_seconds(window: str) -> float:
    """Seconds of a PromQL duration such as ``20s``, ``1m`` or ``1m30s``."""
    parts = _DURATION_PART.findall(window)
    if not parts or "".join(n + u for n, u in parts) != window:
        raise ValueError(f"not a PromQL duration: {window!r} (e.g. 20s, 1m, 1m30s)")
    return sum(int(number) * _UNIT_SECONDS[unit] for number, unit in parts)


@dataclass(frozen=True)
class ModelRecord:
    """One model's autoscaling outcome of this cycle."""

    decision: DemandDecision
    observation: Observation
    verdict: SLOVerdict
    state: ModelScalingState
    """State after the decision and calibration (persisted in status)."""
    replicas_before: int
    """Total replicas the model's Deployments had when the cycle read the cluster."""
    bounds: tuple[int, int]
    """``(min, max)`` total replicas given to the planner."""


@dataclass(frozen=True)
class Rise:
    """A model the probe between cycles found above what its plan covers."""

    key: ModelKey
    fast_rate: float
    """Its short-window completion rate, requests/s."""
    covered: float
    """What its plan covers at its target utilisation, requests/s."""


@dataclass
class _Probed:
    """What the probe needs of one model between cycles."""

    engine: Engine
    deployments: tuple[str, ...]
    target_utilization: float
    line: ProbeLine | None = None
    """What the last plan covers; ``None`` once it fired, or where an early cycle cannot help."""


@dataclass
class AutoscaleCycle:
    """What the autoscaler decided in one cycle, for the planner and the status writer."""

    records: dict[ModelKey, ModelRecord] = field(default_factory=dict)
    demand: dict[ModelKey, Demand] = field(default_factory=dict)
    calibration: dict[tuple[ModelKey, str], float] = field(default_factory=dict)
    bounds: dict[ModelKey, tuple[int, int]] = field(default_factory=dict)

    def plan_inputs(self, inputs: PlanInputs) -> PlanInputs:
        """``inputs`` with this cycle's demand, calibration factors and replica bounds."""
        return replace(
            inputs,
            demand={**inputs.demand, **self.demand},
            calibration={**inputs.calibration, **self.calibration},
            replica_bounds={**inputs.replica_bounds, **self.bounds},
        )

    def status(
        self,
        key: ModelKey,
        status: Mapping[str, Any],
        live_status: Mapping[str, Any],
        now: datetime,
        generation: int | None,
    ) -> dict[str, Any]:
        """``status`` with the autoscaler's fields for ``key`` (unchanged for a model that was
        not autoscaled this cycle)."""
        record = self.records.get(key)
        if record is None:
            return dict(status)
        previous = live_status.get("lastScaleTime")
        return autoscale_status(
            status,
            decision=record.decision,
            observation=record.observation,
            verdict=record.verdict,
            state=record.state,
            replicas_before=record.replicas_before,
            previous_scale_time=previous if isinstance(previous, str) else None,
            now=now,
            generation=generation,
        )


class Autoscaler:
    """Per-model autoscaling state plus the Prometheus client that feeds it."""

    def __init__(
        self,
        client: PrometheusClient,
        *,
        window: str = "1m",
        fast_window: str | None = None,
        policy: ScalingPolicy | None = None,
        fleet_reads: bool = True,
        probe_client: PrometheusClient | None = None,
    ) -> None:
        self.client = client
        self.probe_client = probe_client or client
        """What the probe between cycles asks: a short timeout and no retries, so that a slow
        Prometheus delays the next regular cycle by little (the cycle itself reports)."""
        self.fleet_reads = fleet_reads
        """Read the models that allow it with one round of fleet-wide queries
        (:mod:`infleet.metrics.fleet`) instead of a dozen queries per model."""
        self.last_read: tuple[int, int] = (0, 0)
        """``(models read fleet-wide, models read one by one)`` in the last cycle."""
        self.window = window
        self.fast_window = fast_window
        """Range of the short-window completion rate (fast attack); ``None``: not read."""
        self.settle_seconds = SETTLE_WINDOWS * window_seconds(window)
        """Seconds after a change of a model's fleet before calibration may derate it."""
        self.policy = policy or ScalingPolicy()
        self.states: dict[tuple[ModelKey, str], ModelScalingState] = {}
        """State per (model key, uid)."""
        self._probed: dict[ModelKey, _Probed] = {}
        """The models the probe between cycles watches, with the lines the last plan drew."""

    def close(self) -> None:
        """Release the HTTP connections."""
        self.client.close()
        if self.probe_client is not self.client:
            self.probe_client.close()

    def forget_lines(self) -> None:
        """Stop probing until the next cycle draws new lines (a standby does not cycle)."""
        self._probed.clear()

    def _probe(self) -> str | None:
        """``None`` when Prometheus answers, else why not."""
        try:
            self.client.query_value(PROBE_QUERY)
        except (PrometheusUnreachable, PrometheusHTTPError) as exc:
            return str(exc)
        except PrometheusError:
            return None  # it answered, just oddly: the per-signal reads will say more
        return None

    def _state(self, parsed: ParsedModel) -> ModelScalingState | None:
        known = self.states.get((parsed.key, parsed.uid))
        if known is not None:
            return known
        stored = (parsed.raw.get("status") or {}).get("scaling")
        if not stored:
            return None
        try:
            return ModelScalingState.from_dict(stored)
        except ValueError as exc:
            log.warning("%s/%s: ignoring status.scaling: %s", *parsed.key, exc)
            return None

    def prepare(
        self,
        models: Sequence[ParsedModel],
        children: Sequence[LiveChild],
        current: Mapping[PlacementKey, int],
        now: float,
    ) -> AutoscaleCycle:
        """Decide demand, calibration and replica bounds for ``models`` (Apply mode) at Unix
        time ``now``; ``current`` is the running placement, ``children`` the live Deployments."""
        cycle = AutoscaleCycle()
        down = self._probe()
        if down is not None:
            log.warning("Prometheus unreachable, holding every model: %s", down)
        totals: dict[ModelKey, int] = {}
        placed: dict[ModelKey, set[str]] = {}
        for (key, variant, _pool), n in current.items():
            totals[key] = totals.get(key, 0) + n
            if n > 0:
                placed.setdefault(key, set()).add(variant)
        names: dict[ModelKey, dict[str, list[str]]] = {}
        starting: set[ModelKey] = set()
        for child in children:
            if child.replicas > 0:
                by_variant = names.setdefault((child.namespace, child.model), {})
                by_variant.setdefault(child.variant, []).append(child.name)
            if child.ready_replicas < child.replicas:
                starting.add((child.namespace, child.model))
        fleet: FleetMetrics | None = None
        grouped = {p.key for p in models if self._fleet_readable(p, names.get(p.key, {}))}
        if down is None and grouped:
            by_engine: dict[Engine, list[str]] = {}
            for parsed in models:
                if parsed.key in grouped:
                    by_engine.setdefault(parsed.model.spec.engine, []).append(parsed.key[0])
            fleet = read_fleet_metrics(
                self.client, by_engine, window=self.window, fast_window=self.fast_window
            )
        self.last_read = (len(grouped), len(models) - len(grouped))
        self._probed = {
            p.key: _Probed(
                p.model.spec.engine,
                tuple(n for ns in names.get(p.key, {}).values() for n in ns),
                p.model.spec.target_utilization,
            )
            for p in models
            if p.key in grouped
        }
        live = set()
        for parsed in models:
            key = parsed.key
            live.add((key, parsed.uid))
            try:
                self._decide(
                    cycle,
                    parsed,
                    totals.get(key, 0),
                    frozenset(placed.get(key, set())),
                    names.get(key, {}),
                    now,
                    down,
                    starting=key in starting,
                    fleet=fleet if key in grouped else None,
                )
            except Exception:  # one model's surprise must not stop the fleet's cycle
                log.exception("%s/%s: autoscaling failed; holding its replicas", *key)
                self._hold_on_error(cycle, parsed, totals.get(key, 0))
        for gone in set(self.states) - live:
            del self.states[gone]
        return cycle

    def draw_lines(self, plan: FleetPlan, cycle: AutoscaleCycle) -> None:
        """After the plan: what each probed model's plan covers (:func:`probe_line`)."""
        outcomes = {o.key: o for o in plan.models}
        for key, probed in list(self._probed.items()):
            outcome, record = outcomes.get(key), cycle.records.get(key)
            if outcome is None or record is None or record.decision.hold:
                del self._probed[key]  # holding: nothing an early cycle could decide
                continue
            probed.line = probe_line(
                capacity_requests_per_second=outcome.capacity_rps,
                target_utilization=probed.target_utilization,
                replicas=outcome.replicas,
                max_replicas=record.bounds[1],
                unmet_requests_per_second=outcome.unmet_rps,
            )

    def probe(self) -> list[Rise]:
        """Between cycles: the models whose short-window rate, less its noise margin, is above
        what their plan covers (one fleet-wide query per engine). Each line fires once; an
        empty list when nothing is watched, the fast window is off or Prometheus fails."""
        watched = {k: p for k, p in self._probed.items() if p.line is not None}
        if not watched or self.fast_window is None:
            return []
        by_engine: dict[Engine, list[str]] = {}
        for key, probed in watched.items():
            by_engine.setdefault(probed.engine, []).append(key[0])
        try:
            rates = read_fast_rates(
                self.probe_client, by_engine, window=self.window, fast_window=self.fast_window
            )
        except PrometheusError as exc:
            log.debug("probe skipped: %s", exc)
            return []
        fast_seconds = window_seconds(self.fast_window)
        rises = []
        for key, probed in watched.items():
            parts = [rates[(key[0], n)] for n in probed.deployments if (key[0], n) in rates]
            line = probed.line
            if not parts or line is None:
                continue
            fast = math.fsum(parts)
            if rising(line, fast, fast_seconds, self.policy.fast_attack_z):
                probed.line = None  # fires once: the cycle it starts draws a new line
                rises.append(Rise(key, fast, line.covered_requests_per_second))
        return rises

    def _fleet_readable(
        self, parsed: ParsedModel, deployments: Mapping[str, Sequence[str]]
    ) -> bool:
        """Whether the model's signals can come from the fleet-wide round: default engine
        queries (no ``spec.metrics`` override, not ``custom``) and running Deployments."""
        spec = parsed.model.spec
        overrides = spec.metrics is not None and bool(spec.metrics.model_dump(exclude_none=True))
        return (
            self.fleet_reads
            and not overrides
            and spec.engine in ENGINE_METRICS
            and any(deployments.values())
        )

    def _decide(
        self,
        cycle: AutoscaleCycle,
        parsed: ParsedModel,
        total: int,
        placed: frozenset[str],
        deployments: Mapping[str, Sequence[str]],
        now: float,
        down: str | None,
        *,
        starting: bool = False,
        fleet: FleetMetrics | None = None,
    ) -> None:
        model, key = parsed.model, parsed.key
        spec = model.spec
        policy = policy_for_model(spec, self.policy)
        namespace = key[0]
        if down is not None:
            metrics = ModelMetrics(errors=(down,))
        elif fleet is not None:
            wake, wake_errors = read_value(self.client, "wakeQuery", spec.scale_to_zero.wake_query)
            metrics = fleet.metrics(
                namespace,
                [name for names in deployments.values() for name in names],
                percentile=spec.slo.percentile,
                now=now,
                wake=wake,
                errors=wake_errors,
            )
            if not fleet.errors and metrics.replicas is None and metrics.request_rate is None:
                # No series of its Deployments' pods: the pods are not scraped yet, or the
                # series carry no `pod` label to tell Deployments apart. The per-model queries
                # match on `namespace` and `model_name` alone, so ask them (as before).
                fleet = None
                metrics = read_model_metrics(
                    self.client, model, now, window=self.window, fast_window=self.fast_window
                )
        else:
            metrics = read_model_metrics(
                self.client, model, now, window=self.window, fast_window=self.fast_window
            )
        if metrics.errors:
            log.info("%s/%s: metrics: %s", *key, "; ".join(metrics.errors))
        observation = metrics.observation
        state = self._state(parsed)
        decision = decide_demand(
            state, observation, model_context(spec, total, placed), policy, now
        )
        new_state = decision.state
        factors = new_state.calibration_factors()
        if down is None and not decision.hold and deployments:
            index = {v.resolved_name: i for i, v in enumerate(spec.variants)}
            capacity = {
                name: variant_capacity(
                    model, index[name], mix=decision.demand.mix, calibration=factors.get(name, 1.0)
                ).requests_per_second
                for name in deployments
                if name in index
            }
            if fleet is not None:
                observations = {
                    name: variant_observation(
                        fleet.metrics(
                            namespace, deployments[name], percentile=spec.slo.percentile, now=now
                        ),
                        capacity[name],
                    )
                    for name in capacity
                    if deployments[name]
                }
            else:
                observations = read_variant_observations(
                    self.client,
                    model,
                    {name: deployments[name] for name in capacity},
                    capacity,
                    now,
                    window=self.window,
                )
            changed_at = new_state.last_change_time
            if starting or new_state.last_replicas != total:
                changed_at = now
            settled = changed_at is None or now - changed_at >= self.settle_seconds
            updates = calibrate_variants(
                factors,
                observations,
                slo=model_slo(model),
                target_utilization=spec.target_utilization,
                settings=policy.calibration,
                stale_after_seconds=policy.stale_after_seconds,
                settled=settled,
            )
            for name, update in updates.items():
                if update.action != "unchanged":
                    log.info("%s/%s variant %s: %s", *key, name, update.reason)
            if any(u.action == "derated" for u in updates.values()):
                changed_at = now
            new_state = replace(
                new_state.with_calibration(updates),
                last_replicas=total,
                last_change_time=changed_at,
            )
            factors = new_state.calibration_factors()
        bounds = replica_bounds(decision, spec_max=spec.replicas.max, current=total, policy=policy)
        self.states[(key, parsed.uid)] = new_state
        verdict = slo_met(observation, model_slo(model), policy)
        cycle.records[key] = ModelRecord(
            decision=decision,
            observation=observation,
            verdict=verdict,
            state=new_state,
            replicas_before=total,
            bounds=bounds,
        )
        cycle.demand[key] = decision.demand
        cycle.bounds[key] = bounds
        for name, factor in factors.items():
            cycle.calibration[(key, name)] = factor
        log.debug("%s/%s: %s; replicas %d, bounds %s", *key, decision.explanation, total, bounds)

    def _hold_on_error(self, cycle: AutoscaleCycle, parsed: ParsedModel, total: int) -> None:
        spec = parsed.model.spec
        state = self.states.get((parsed.key, parsed.uid))
        held = state.planned_requests_per_second if state is not None else None
        if held is None or not math.isfinite(held):
            held = spec.traffic.requests_per_second
        floor = min(max(total, spec.replicas.min), spec.replicas.max)
        source = state.planned_source if state is not None else None
        cycle.demand[parsed.key] = Demand(held, source or "prior")
        cycle.bounds[parsed.key] = (floor, spec.replicas.max)


def autoscaler_from_settings(settings: AutoscaleSettings) -> Autoscaler | None:
    """The autoscaler for ``infleet run``'s settings; ``None`` when no Prometheus is set."""
    if settings.prometheus_url is None:
        return None
    # httpx logs every request at INFO: a dozen lines per model per cycle.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    client = PrometheusClient(settings.prometheus_url, timeout=settings.query_timeout_seconds)
    probe_client = PrometheusClient(
        settings.prometheus_url,
        timeout=min(settings.query_timeout_seconds, PROBE_TIMEOUT_SECONDS),
        retries=0,
    )
    return Autoscaler(
        client,
        window=settings.metrics_window,
        fast_window=settings.resolved_fast_window,
        probe_client=probe_client,
    )
