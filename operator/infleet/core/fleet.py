"""From declared objects to one planning problem for the whole fleet.

This is the seam between the API (what platform engineers wrote) and the planner (integer
replicas over plain numbers). It computes each (model, variant) capacity with the capacity
model, decides which demand figure each model is planned for, and keeps the capacity estimates
so that reports and status can say *why* a variant serves what it serves.

Decisions written down here (the design brief is silent on them):

* A pool with no ``maxAccelerators`` and no observed nodes is *unbounded* in offline planning
  (``infleet plan`` answers "what would I need?"); the operator always passes observed capacity.
* Demand defaults to ``spec.traffic.requestsPerSecond`` (source ``prior``); callers pass live or
  forecast demand instead when they have it.
* The token mix for the capacity model is the traffic prior unless a caller observed one.
* Replica bounds default to ``spec.replicas``; the live autoscaler passes per-model bounds
  instead (a hold's floor, scale to zero, per-cycle change limits), already clamped so that
  min <= max.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from infleet.api import AcceleratorPool, ModelDeployment
from infleet.core.capacity import (
    CapacityEstimate,
    EngineProfile,
    LatencySLO,
    TokenMix,
    replica_capacity,
)
from infleet.core.planner import (
    ModelKey,
    ModelRequest,
    PlanProblem,
    PoolSupply,
    VariantOption,
)

UNBOUNDED_ACCELERATORS = 1_000_000
"""Stand-in capacity for a pool without a quota or observed nodes (offline what-if only)."""


@dataclass(frozen=True)
class Demand:
    """Requests per second a model is planned for, and where the figure came from."""

    requests_per_second: float
    source: str = "prior"
    mix: TokenMix | None = None
    """Observed token mix; ``None`` means the model's traffic prior."""


@dataclass(frozen=True)
class FleetProblem:
    """A planning problem plus what it was built from, for reporting and status."""

    problem: PlanProblem
    capacities: Mapping[tuple[ModelKey, str], CapacityEstimate]
    demand: Mapping[ModelKey, Demand]
    models: Mapping[ModelKey, ModelDeployment]
    pools: Mapping[str, AcceleratorPool]


def model_key(model: ModelDeployment) -> ModelKey:
    """The (namespace, name) a model is known by in plans."""
    return (model.metadata.namespace or "default", model.metadata.name)


def model_slo(model: ModelDeployment) -> LatencySLO:
    """The model's latency SLO as the capacity model takes it."""
    slo = model.spec.slo
    return LatencySLO(
        percentile=slo.percentile,
        ttft_ms=slo.time_to_first_token_ms,
        tpot_ms=slo.time_per_output_token_ms,
    )


def variant_capacity(
    model: ModelDeployment,
    variant_index: int,
    *,
    mix: TokenMix | None = None,
    calibration: float = 1.0,
) -> CapacityEstimate:
    """Requests/s one replica of a variant sustains at the model's SLO."""
    spec = model.spec
    variant = spec.variants[variant_index]
    slo = model_slo(model)
    if mix is None:
        mix = TokenMix(
            mean_input_tokens=spec.traffic.mean_input_tokens,
            mean_output_tokens=spec.traffic.mean_output_tokens,
        )
    profile = None
    if variant.profile is not None:
        profile = EngineProfile(
            prefill_tokens_per_second=variant.profile.prefill_tokens_per_second,
            decode_base_ms=variant.profile.decode_step_ms.base,
            decode_per_sequence_ms=variant.profile.decode_step_ms.per_sequence,
            max_concurrency=variant.profile.max_concurrency,
        )
    return replica_capacity(
        slo=slo,
        mix=mix,
        max_requests_per_second=variant.max_requests_per_second,
        profile=profile,
        calibration=calibration,
    )


@dataclass(frozen=True)
class PlanInputs:
    """Everything besides the objects themselves that shapes a plan."""

    pool_capacity: Mapping[str, int] = field(default_factory=dict)
    """Accelerators each pool offers now; pools missing here use ``maxAccelerators``."""
    demand: Mapping[ModelKey, Demand] = field(default_factory=dict)
    """Demand per model; models missing here use their traffic prior."""
    calibration: Mapping[tuple[ModelKey, str], float] = field(default_factory=dict)
    """Learned capacity factor per (model, variant); default 1."""
    current: Mapping[tuple[ModelKey, str, str], int] = field(default_factory=dict)
    """Replicas running now per (model, variant, pool), for the churn cost."""
    churn_cost_per_replica: float = 0.0
    """$/h-equivalent penalty per replica added or removed relative to ``current``."""
    replica_bounds: Mapping[ModelKey, tuple[int, int]] = field(default_factory=dict)
    """``(min, max)`` total replicas per model for this plan, replacing ``spec.replicas``;
    models missing here use their spec."""


def build_problem(
    pools: Sequence[AcceleratorPool],
    models: Sequence[ModelDeployment],
    inputs: PlanInputs | None = None,
) -> FleetProblem:
    """Turn pools and models into the planner's problem."""
    inputs = inputs or PlanInputs()
    supplies: list[PoolSupply] = []
    for pool in pools:
        pool_spec = pool.spec
        capacity = inputs.pool_capacity.get(pool.metadata.name)
        if capacity is None:
            capacity = (
                pool_spec.max_accelerators
                if pool_spec.max_accelerators is not None
                else UNBOUNDED_ACCELERATORS
            )
        supplies.append(
            PoolSupply(
                name=pool.metadata.name,
                accelerator_type=pool_spec.accelerator_type,
                accelerators=capacity,
                cost_per_accelerator_hour=pool_spec.cost_per_accelerator_hour,
                capacity_type=pool_spec.capacity_type.value,
            )
        )

    requests: list[ModelRequest] = []
    capacities: dict[tuple[ModelKey, str], CapacityEstimate] = {}
    demands: dict[ModelKey, Demand] = {}
    by_key: dict[ModelKey, ModelDeployment] = {}
    for model in models:
        key = model_key(model)
        by_key[key] = model
        spec = model.spec
        demand = inputs.demand.get(key) or Demand(spec.traffic.requests_per_second, "prior")
        demands[key] = demand
        options: list[VariantOption] = []
        for index, variant in enumerate(spec.variants):
            name = variant.resolved_name
            estimate = variant_capacity(
                model,
                index,
                mix=demand.mix,
                calibration=inputs.calibration.get((key, name), 1.0),
            )
            capacities[(key, name)] = estimate
            options.append(
                VariantOption(
                    name=name,
                    accelerator_type=variant.accelerator_type,
                    accelerators_per_replica=variant.accelerators_per_replica,
                    capacity_rps=estimate.requests_per_second,
                    pools=tuple(variant.pools) if variant.pools else None,
                )
            )
        low, high = inputs.replica_bounds.get(key, (spec.replicas.min, spec.replicas.max))
        if not 0 <= low <= high:
            raise ValueError(
                f"replica bounds of {key[0]}/{key[1]} must satisfy 0 <= min <= max, "
                f"got min {low} and max {high}"
            )
        requests.append(
            ModelRequest(
                key=key,
                demand_rps=demand.requests_per_second,
                target_utilization=spec.target_utilization,
                min_replicas=low,
                max_replicas=high,
                priority=spec.priority,
                spot_max_fraction=spec.spot.max_fraction,
                variants=tuple(options),
            )
        )
    problem = PlanProblem(
        models=tuple(requests),
        pools=tuple(supplies),
        current=dict(inputs.current),
        churn_cost_per_replica=inputs.churn_cost_per_replica,
    )
    return FleetProblem(
        problem=problem,
        capacities=capacities,
        demand=demands,
        models=by_key,
        pools={p.metadata.name: p for p in pools},
    )
