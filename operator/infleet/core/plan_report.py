"""Turn replicas per eligible triple into placements, per-model outcomes and explanations."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from infleet.core.plan_index import RPS_TOLERANCE, FleetIndex, IntArray, covers
from infleet.core.plan_types import (
    FleetPlan,
    ModelOutcome,
    Placement,
    Reason,
    SolverInfo,
)


def build_plan(index: FleetIndex, replicas: IntArray, solver: SolverInfo) -> FleetPlan:
    """Assemble the `FleetPlan` for ``replicas`` (one count per eligible triple)."""
    problem = index.problem
    placements: list[Placement] = []
    for j in np.flatnonzero(replicas > 0):
        model = problem.models[index.t_model[j]]
        n = int(replicas[j])
        accelerators = n * int(index.t_accelerators[j])
        placements.append(
            Placement(
                model=model.key,
                variant=model.variants[index.t_variant[j]].name,
                pool=problem.pools[index.t_pool[j]].name,
                replicas=n,
                accelerators=accelerators,
                cost_per_hour=accelerators * float(index.t_price[j]),
                capacity_rps=n * float(index.t_capacity[j]),
            )
        )
    full = _full_pools(index, replicas)
    outcomes = tuple(_outcome(index, replicas, m, full) for m in range(index.n_models))
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
    smallest: dict[int, int] = {}
    for p, a in zip(index.t_pool.tolist(), index.t_accelerators.tolist(), strict=True):
        smallest[p] = min(smallest.get(p, a), a)
    return {p for p, a in smallest.items() if free[p] < a}


def _outcome(index: FleetIndex, replicas: IntArray, m: int, full: set[int]) -> ModelOutcome:
    model = index.problem.models[m]
    trip = np.asarray(index.triples_of(m), dtype=np.int64)
    n = replicas[trip]
    capacity = float(n @ index.t_capacity[trip]) if len(trip) else 0.0
    cost = float((n * index.t_accelerators[trip]) @ index.t_price[trip]) if len(trip) else 0.0
    required = float(index.required[m])
    unmet = 0.0 if covers(capacity, required) else required - capacity
    count = int(n.sum())
    short = unmet > 0 or count < model.min_replicas
    reason = _reason(index, m, capacity) if short else None
    return ModelOutcome(
        key=model.key,
        demand_rps=model.demand_rps,
        required_rps=required,
        capacity_rps=capacity,
        unmet_rps=unmet,
        replicas=count,
        cost_per_hour=cost,
        reason=reason,
        explanation=explain(index, replicas, m, reason, full),
    )


def _reason(index: FleetIndex, m: int, capacity: float) -> Reason:
    structural = index.structural[m]
    if structural in ("Infeasible", "NoMatchingPool"):
        return structural
    if structural == "MaxReplicas" and covers(capacity, float(index.max_capacity[m])):
        return "MaxReplicas"
    return "CapacityShortage"


def _mix(index: FleetIndex, replicas: IntArray, m: int) -> str:
    model = index.problem.models[m]
    parts = []
    for j in index.triples_of(m):
        if replicas[j] > 0:
            variant = model.variants[index.t_variant[j]].name
            pool = index.problem.pools[index.t_pool[j]].name
            parts.append(f"{replicas[j]}x {variant} on {pool}")
    return " + ".join(parts)


def _rps(value: float) -> str:
    return f"{value:.1f}" if value >= 0.95 or value == 0 else f"{value:.3g}"


def explain(
    index: FleetIndex, replicas: IntArray, m: int, reason: Reason | None, full: set[int]
) -> str:
    """One line saying why model ``m`` got its mix (or why it did not get enough)."""
    model = index.problem.models[m]
    trip = list(index.triples_of(m))
    mix = _mix(index, replicas, m)
    cost = sum(
        int(replicas[j]) * int(index.t_accelerators[j]) * float(index.t_price[j]) for j in trip
    )
    capacity = sum(int(replicas[j]) * float(index.t_capacity[j]) for j in trip)
    head = f"{mix} (${cost:.2f}/h)" if mix else "no replicas"
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
        return _shortage_line(index, replicas, m, head, capacity, full)
    if not trip or not index.needs_anything(m):
        return f"{head}: no demand and min replicas 0"
    notes = []
    count = int(sum(int(replicas[j]) for j in trip))
    if model.min_replicas and count == model.min_replicas and capacity > required * 1.0001:
        notes.append(f"min replicas {model.min_replicas}")
    if model.spot_max_fraction < 1 and any(index.t_spot[j] for j in trip):
        notes.append(f"spot capped at {model.spot_max_fraction:.0%}")
    if any(index.t_current[j] for j in trip) and index.problem.churn_cost_per_replica > 0:
        notes.append(
            f"churn cost ${index.problem.churn_cost_per_replica:g}/h per replica moved "
            "favours running replicas"
        )
    tail = "".join(f"; {n}" for n in notes)
    return f"{head}: cheapest mix for {demand}{tail}"


def _shortage_line(
    index: FleetIndex, replicas: IntArray, m: int, head: str, capacity: float, full: set[int]
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
        served = f"only {int(replicas[trip].sum())} of {model.min_replicas} min replicas placed"
    higher = _higher_priority_on(index, replicas, pools, int(index.priority[m]))
    yields = f" (priority {model.priority} yields to higher-priority models)" if higher else ""
    return f"{head}: {served}: pools for {', '.join(types)} are full{yields}"


def _higher_priority_on(
    index: FleetIndex, replicas: IntArray, pools: set[int], priority: int
) -> bool:
    users: defaultdict[int, int] = defaultdict(int)
    for j in np.flatnonzero(replicas > 0):
        if int(index.t_pool[j]) in pools and index.priority[index.t_model[j]] > priority:
            users[int(index.t_pool[j])] += 1
    return bool(users)
