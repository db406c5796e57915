"""Turn replicas per eligible triple into placements, per-model outcomes and explanations."""

from __future__ import annotations

import numpy as np

from infleet.core.plan_index import RPS_TOLERANCE, FleetIndex, IntArray, covers
from infleet.core.plan_types import (
    FleetPlan,
    ModelOutcome,
    Placement,
    Reason,
    SolverInfo,
)


class _Flat:
    """The index's per-triple arrays as Python lists: a report reads a handful of entries per
    model, where numpy's per-call cost is most of the time."""

    def __init__(self, index: FleetIndex, replicas: IntArray) -> None:
        self.array = replicas
        self.replicas: list[int] = replicas.tolist()
        self.variant: list[int] = index.t_variant.tolist()
        self.pool: list[int] = index.t_pool.tolist()
        self.accelerators: list[int] = index.t_accelerators.tolist()
        self.capacity: list[float] = index.t_capacity.tolist()
        self.price: list[float] = index.t_price.tolist()
        self.start: list[int] = index.model_start.tolist()

    def held(self, m: int) -> list[int]:
        """Triples of model ``m`` that hold replicas, in index order."""
        r = self.replicas
        return [j for j in range(self.start[m], self.start[m + 1]) if r[j] > 0]


def build_plan(index: FleetIndex, replicas: IntArray, solver: SolverInfo) -> FleetPlan:
    """Assemble the `FleetPlan` for ``replicas`` (one count per eligible triple)."""
    problem = index.problem
    flat = _Flat(index, replicas)
    placements: list[Placement] = []
    for m, model in enumerate(problem.models):
        for j in flat.held(m):
            n = flat.replicas[j]
            accelerators = n * flat.accelerators[j]
            placements.append(
                Placement(
                    model=model.key,
                    variant=model.variants[flat.variant[j]].name,
                    pool=problem.pools[flat.pool[j]].name,
                    replicas=n,
                    accelerators=accelerators,
                    cost_per_hour=accelerators * flat.price[j],
                    capacity_rps=n * flat.capacity[j],
                )
            )
    full = _full_pools(index, replicas)
    outcomes = tuple(_outcome(index, flat, m, full) for m in range(index.n_models))
    return FleetPlan(
        placements=tuple(placements),
        models=outcomes,
        cost_per_hour=sum(p.cost_per_hour for p in placements),
        solver=solver,
    )


def _full_pools(index: FleetIndex, replicas: IntArray) -> set[int]:
    """Pools that cannot take one more replica of any variant eligible on them."""
    used = np.bincount(
        index.t_pool,
        weights=replicas * index.t_accelerators,
        minlength=len(index.pool_accelerators),
    )
    free = index.pool_accelerators - used
    smallest = np.full(len(index.pool_accelerators), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(smallest, index.t_pool, index.t_accelerators)
    eligible = np.bincount(index.t_pool, minlength=len(index.pool_accelerators)) > 0
    return {int(p) for p in np.flatnonzero(eligible & (free < smallest))}


def _outcome(index: FleetIndex, flat: _Flat, m: int, full: set[int]) -> ModelOutcome:
    model = index.problem.models[m]
    held = flat.held(m)
    capacity = 0.0
    cost = 0.0
    count = 0
    for j in held:
        n = flat.replicas[j]
        capacity += n * flat.capacity[j]
        cost += n * flat.accelerators[j] * flat.price[j]
        count += n
    required = float(index.required[m])
    unmet = 0.0 if covers(capacity, required) else required - capacity
    short = unmet > 0 or count < model.min_replicas
    reason = _reason(index, m, capacity) if short else None
    head = _head(index, flat, m, held, cost)
    return ModelOutcome(
        key=model.key,
        demand_rps=model.demand_rps,
        required_rps=required,
        capacity_rps=capacity,
        unmet_rps=unmet,
        replicas=count,
        cost_per_hour=cost,
        reason=reason,
        explanation=_explain(index, flat, m, reason, full, head, capacity, count),
    )


def _reason(index: FleetIndex, m: int, capacity: float) -> Reason:
    structural = index.structural[m]
    if structural in ("Infeasible", "NoMatchingPool"):
        return structural
    if structural == "MaxReplicas" and covers(capacity, float(index.max_capacity[m])):
        return "MaxReplicas"
    return "CapacityShortage"


def _head(index: FleetIndex, flat: _Flat, m: int, held: list[int], cost: float) -> str:
    """The mix and its cost: ``2x v on pool-a + 1x w on pool-b ($3.00/h)``."""
    model = index.problem.models[m]
    pools = index.problem.pools
    mix = " + ".join(
        f"{flat.replicas[j]}x {model.variants[flat.variant[j]].name} on {pools[flat.pool[j]].name}"
        for j in held
    )
    return f"{mix} (${cost:.2f}/h)" if mix else "no replicas"


def _rps(value: float) -> str:
    return f"{value:.1f}" if value >= 0.95 or value == 0 else f"{value:.3g}"


def _explain(
    index: FleetIndex,
    flat: _Flat,
    m: int,
    reason: Reason | None,
    full: set[int],
    head: str,
    capacity: float,
    count: int,
) -> str:
    """One line saying why model ``m`` got its mix (or why it did not get enough)."""
    model = index.problem.models[m]
    trip = range(flat.start[m], flat.start[m + 1])
    required = float(index.required[m])
    demand = (
        f"{_rps(model.demand_rps)} rps ({_rps(required)} at "
        f"{model.target_utilization:.0%} utilisation)"
    )
    if reason == "Infeasible":
        return f"{head}: no variant can meet the latency SLO (capacity 0 on every variant)"
    if reason == "NoMatchingPool":
        types = sorted({v.accelerator_type for v in model.variants if v.capacity_rps > 0})
        spot_only = any(
            p.accelerator_type in types and p.capacity_type == "spot" for p in index.problem.pools
        )
        extra = " within the spot limit" if spot_only and model.spot_max_fraction < 1 else ""
        return f"{head}: no pool{extra} matches any variant ({', '.join(types) or 'no variants'})"
    if reason == "MaxReplicas":
        return (
            f"{head}: max replicas {model.max_replicas} caps capacity at {_rps(capacity)} "
            f"of {_rps(required)} rps needed for {demand}"
        )
    if reason == "CapacityShortage":
        return _shortage_line(index, flat, m, head, capacity, full)
    if not trip or not index.needs_anything(m):
        return f"{head}: no demand and min replicas 0"
    notes = []
    if model.min_replicas and count == model.min_replicas and capacity > required * 1.0001:
        notes.append(f"min replicas {model.min_replicas}")
    if model.spot_max_fraction < 1 and bool(index.t_spot[flat.start[m] : flat.start[m + 1]].any()):
        notes.append(f"spot capped at {model.spot_max_fraction:.0%}")
    churn = index.problem.churn_cost_per_replica
    if churn > 0 and bool(index.t_current[flat.start[m] : flat.start[m + 1]].any()):
        notes.append(f"churn cost ${churn:g}/h per replica moved favours running replicas")
    tail = "".join(f"; {n}" for n in notes)
    return f"{head}: cheapest mix for {demand}{tail}"


def _shortage_line(
    index: FleetIndex, flat: _Flat, m: int, head: str, capacity: float, full: set[int]
) -> str:
    model = index.problem.models[m]
    required = float(index.required[m])
    trip = list(index.triples_of(m))
    pools = {int(index.t_pool[j]) for j in trip}
    types = sorted({index.problem.pools[p].accelerator_type for p in pools & full}) or sorted(
        {index.problem.pools[p].accelerator_type for p in pools}
    )
    served = f"only {_rps(capacity)} of {_rps(required)} rps placed"
    if capacity >= required - RPS_TOLERANCE * (1 + required):
        placed = sum(flat.replicas[j] for j in trip)
        served = f"only {placed} of {model.min_replicas} min replicas placed"
    higher = _higher_priority_on(index, flat.array, pools, int(index.priority[m]))
    yields = f" (priority {model.priority} yields to higher-priority models)" if higher else ""
    return f"{head}: {served}: pools for {', '.join(types)} are full{yields}"


def _higher_priority_on(
    index: FleetIndex, replicas: IntArray, pools: set[int], priority: int
) -> bool:
    """Whether a model of higher priority holds replicas on any of ``pools``."""
    held = np.flatnonzero(replicas > 0)
    on = np.isin(index.t_pool[held], list(pools))
    return bool(np.any(index.priority[index.t_model[held[on]]] > priority))
