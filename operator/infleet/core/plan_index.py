"""The planning problem as flat arrays: eligible (model, variant, pool) triples, model targets.

Every solver (decomposition, HiGHS, brute force in tests) reads the same `FleetIndex`, so the
eligibility rules and the structural limits of a model are decided once, here:

* a (variant, pool) pair is eligible when the accelerator types match, the variant does not
  exclude the pool, and the variant's capacity at the SLO is positive;
* spot pools are dropped for a model whose ``spot_max_fraction`` is 0, or below 1 while it has
  no eligible non-spot pool (its spot share would be 100%): they can never hold a replica, and
  leaving them out keeps the solvers' problems small;
* a model's *target* is the capacity it is planned for: ``required_rps``, or less when even
  ``max_replicas`` replicas of its best variants cannot reach it (reason ``MaxReplicas``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from infleet.core.plan_types import ModelRequest, PlanProblem, PoolSupply, Reason

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

TIE_BREAK_PER_ACCELERATOR_HOUR = 1e-6
"""Added to every accelerator's price in the objective: among plans of equal cost the planner
picks the one with fewer accelerators (so prepaid reserved capacity is not used for nothing)."""

RPS_TOLERANCE = 1e-9
"""Relative slack on capacity comparisons, so ``3 * 4.0 >= 12.0`` holds in floating point."""


def covers(capacity: float, target: float) -> bool:
    """Whether ``capacity`` reaches ``target`` up to floating-point noise."""
    return capacity >= target - RPS_TOLERANCE * (1.0 + abs(target))


def ceil_div(amount: float, per_unit: float) -> int:
    """Smallest integer k with k * per_unit >= amount (with the same slack as `covers`)."""
    if amount <= 0:
        return 0
    return max(0, math.ceil(amount / per_unit - RPS_TOLERANCE * (1.0 + amount / per_unit)))


@dataclass(frozen=True)
class FleetIndex:
    """Flat arrays over eligible triples (sorted by model, variant, pool) and per-model data."""

    problem: PlanProblem
    # Per eligible triple.
    t_model: IntArray
    t_variant: IntArray
    """Index into the model's ``variants``."""
    t_pool: IntArray
    t_accelerators: IntArray
    """Accelerators per replica."""
    t_capacity: FloatArray
    """Requests/s per replica."""
    t_price: FloatArray
    """Marginal $ per accelerator-hour (0 on reserved pools)."""
    t_spot: BoolArray
    t_current: IntArray
    """Replicas of this triple running now."""
    # Per pool.
    pool_accelerators: IntArray
    pool_price: FloatArray
    # Per model.
    required: FloatArray
    """demand / target_utilization."""
    target: FloatArray
    """Capacity planned for: required, capped by what max_replicas can reach."""
    max_capacity: FloatArray
    """Most capacity the model could reach with max_replicas replicas and unlimited pools."""
    min_replicas: IntArray
    max_replicas: IntArray
    spot_fraction: FloatArray
    priority: IntArray
    structural: tuple[Reason | None, ...]
    """Why a model cannot be fully served whatever the pools hold (None: it can)."""
    model_start: IntArray
    """Triples of model m are ``model_start[m]:model_start[m + 1]``."""

    @property
    def n_models(self) -> int:
        """Number of models."""
        return len(self.problem.models)

    @property
    def n_triples(self) -> int:
        """Number of eligible (model, variant, pool) triples."""
        return len(self.t_model)

    def triples_of(self, m: int) -> range:
        """Indices of the eligible triples of model ``m``."""
        return range(int(self.model_start[m]), int(self.model_start[m + 1]))

    def needs_anything(self, m: int) -> bool:
        """Whether model ``m`` asks for any capacity or replicas at all."""
        return bool(self.target[m] > 0 or self.min_replicas[m] > 0)


def marginal_price(pool: PoolSupply) -> float:
    """Price the objective charges per accelerator-hour: reserved capacity is prepaid."""
    return 0.0 if pool.capacity_type == "reserved" else pool.cost_per_accelerator_hour


def validate(problem: PlanProblem) -> None:
    """Reject inputs the planner cannot interpret, saying which object is wrong and why."""
    names: set[str] = set()
    for pool in problem.pools:
        where = f"pool {pool.name!r}"
        if pool.name in names:
            raise ValueError(f"{where}: duplicate pool name")
        names.add(pool.name)
        if pool.accelerators < 0:
            raise ValueError(f"{where}: accelerators must be >= 0, got {pool.accelerators}")
        if not pool.cost_per_accelerator_hour >= 0:
            raise ValueError(
                f"{where}: cost_per_accelerator_hour must be >= 0, "
                f"got {pool.cost_per_accelerator_hour}"
            )
        if pool.capacity_type not in ("on-demand", "spot", "reserved"):
            raise ValueError(f"{where}: unknown capacity_type {pool.capacity_type!r}")
    keys: set[tuple[str, str]] = set()
    for model in problem.models:
        _validate_model(model)
        if model.key in keys:
            raise ValueError(f"model {model.key[0]}/{model.key[1]}: duplicate model key")
        keys.add(model.key)
    if not problem.churn_cost_per_replica >= 0:
        raise ValueError(
            f"churn_cost_per_replica must be >= 0, got {problem.churn_cost_per_replica}"
        )
    for key, replicas in problem.current.items():
        if replicas < 0:
            raise ValueError(f"current placement {key}: replicas must be >= 0, got {replicas}")


def _validate_model(model: ModelRequest) -> None:
    where = f"model {model.key[0]}/{model.key[1]}"
    if not (model.demand_rps >= 0 and math.isfinite(model.demand_rps)):
        raise ValueError(f"{where}: demand_rps must be finite and >= 0, got {model.demand_rps}")
    if not 0 < model.target_utilization <= 1:
        raise ValueError(
            f"{where}: target_utilization must be in (0, 1], got {model.target_utilization}"
        )
    if not 0 <= model.min_replicas <= model.max_replicas:
        raise ValueError(
            f"{where}: need 0 <= min_replicas <= max_replicas, "
            f"got {model.min_replicas} and {model.max_replicas}"
        )
    if not 0 <= model.spot_max_fraction <= 1:
        raise ValueError(
            f"{where}: spot_max_fraction must be in [0, 1], got {model.spot_max_fraction}"
        )
    seen: set[str] = set()
    for variant in model.variants:
        if variant.name in seen:
            raise ValueError(f"{where}: duplicate variant name {variant.name!r}")
        seen.add(variant.name)
        if variant.accelerators_per_replica < 1:
            raise ValueError(
                f"{where} variant {variant.name!r}: accelerators_per_replica must be >= 1, "
                f"got {variant.accelerators_per_replica}"
            )
        if not (variant.capacity_rps >= 0 and math.isfinite(variant.capacity_rps)):
            raise ValueError(
                f"{where} variant {variant.name!r}: capacity_rps must be finite and >= 0, "
                f"got {variant.capacity_rps}"
            )


def max_reachable_capacity(
    best_on_demand: float, spot_capacities: Sequence[float], max_replicas: int, spot_fraction: float
) -> float:
    """Most capacity ``max_replicas`` replicas reach: the exact integer optimum.

    ``spot_capacities`` are the per-replica capacities of the variants usable on spot pools.
    Non-spot replicas all use the best non-spot variant (a better one raises the total and
    lowers the spot share), and every replica is used. A spot variant no better than that is
    dominated by a non-spot replica. With ``a_i`` spot replicas of capacity ``v_i`` (the rest,
    ``b``, non-spot), the spot share ``sum a_i v_i <= f * total`` becomes the knapsack
    ``sum a_i ((1 - f) v_i + f b) <= f * max_replicas * b`` with profit ``sum a_i (v_i - b)``;
    its weights exceed ``b``, so it never uses more than ``max_replicas`` replicas. A weaker
    spot variant can beat the best one here (it fits the share where the best one does not),
    so the knapsack is solved exactly by branch and bound over the few spot variants.
    """
    best_spot = max(spot_capacities, default=0.0)
    if best_spot <= best_on_demand or spot_fraction <= 0:
        return max_replicas * best_on_demand
    if spot_fraction >= 1:
        return max_replicas * best_spot
    b, f = best_on_demand, spot_fraction
    values = sorted({v for v in spot_capacities if v > b})
    profit = [v - b for v in values]
    weight = [(1.0 - f) * v + f * b for v in values]
    # Best profit per unit of weight first, so the LP bound of the rest is its first item's.
    order = sorted(range(len(values)), key=lambda i: profit[i] / weight[i], reverse=True)
    profit = [profit[i] for i in order]
    weight = [weight[i] for i in order]
    # Same slack as the spot-share check of the column enumeration.
    room = f * max_replicas * b + RPS_TOLERANCE
    best = 0.0

    def search(i: int, left: float, gained: float) -> None:
        nonlocal best
        best = max(best, gained)
        if i == len(profit) or gained + left * profit[i] / weight[i] <= best + 1e-12:
            return
        for count in range(int(left // weight[i]), -1, -1):
            search(i + 1, left - count * weight[i], gained + count * profit[i])

    search(0, room, 0.0)
    return max_replicas * b + best


def build_index(problem: PlanProblem) -> FleetIndex:
    """Validate the problem and flatten it into a `FleetIndex`."""
    validate(problem)
    pools = problem.pools
    pool_pos = {p.name: i for i, p in enumerate(pools)}
    cols: dict[str, list[float]] = {k: [] for k in ("m", "v", "p", "a", "c", "price", "s", "cur")}
    n = len(problem.models)
    required = np.zeros(n)
    target = np.zeros(n)
    max_capacity = np.zeros(n)
    structural: list[Reason | None] = []
    starts = [0]
    for m, model in enumerate(problem.models):
        pairs = _eligible_pairs(model, pools, pool_pos)
        best_on_demand = 0.0
        spot_capacities: list[float] = []
        for v, p in pairs:
            variant = model.variants[v]
            spot = pools[p].capacity_type == "spot"
            if spot:
                spot_capacities.append(variant.capacity_rps)
            else:
                best_on_demand = max(best_on_demand, variant.capacity_rps)
            cols["m"].append(m)
            cols["v"].append(v)
            cols["p"].append(p)
            cols["a"].append(variant.accelerators_per_replica)
            cols["c"].append(variant.capacity_rps)
            cols["price"].append(marginal_price(pools[p]))
            cols["s"].append(spot)
            cols["cur"].append(problem.current.get((model.key, variant.name, pools[p].name), 0))
        starts.append(len(cols["m"]))
        required[m] = model.required_rps
        reach = max_reachable_capacity(
            best_on_demand, spot_capacities, model.max_replicas, model.spot_max_fraction
        )
        max_capacity[m] = reach
        target[m] = min(required[m], reach)
        structural.append(_structural_reason(model, pairs, required[m], reach))
    return FleetIndex(
        problem=problem,
        t_model=np.asarray(cols["m"], dtype=np.int64),
        t_variant=np.asarray(cols["v"], dtype=np.int64),
        t_pool=np.asarray(cols["p"], dtype=np.int64),
        t_accelerators=np.asarray(cols["a"], dtype=np.int64),
        t_capacity=np.asarray(cols["c"], dtype=np.float64),
        t_price=np.asarray(cols["price"], dtype=np.float64),
        t_spot=np.asarray(cols["s"], dtype=np.bool_),
        t_current=np.asarray(cols["cur"], dtype=np.int64),
        pool_accelerators=np.asarray([p.accelerators for p in pools], dtype=np.int64),
        pool_price=np.asarray([marginal_price(p) for p in pools], dtype=np.float64),
        required=required,
        target=target,
        max_capacity=max_capacity,
        min_replicas=np.asarray([m.min_replicas for m in problem.models], dtype=np.int64),
        max_replicas=np.asarray([m.max_replicas for m in problem.models], dtype=np.int64),
        spot_fraction=np.asarray([m.spot_max_fraction for m in problem.models]),
        priority=np.asarray([m.priority for m in problem.models], dtype=np.int64),
        structural=tuple(structural),
        model_start=np.asarray(starts, dtype=np.int64),
    )


def _eligible_pairs(
    model: ModelRequest, pools: tuple[PoolSupply, ...], pool_pos: dict[str, int]
) -> list[tuple[int, int]]:
    pairs: list[tuple[int, int]] = []
    for v, variant in enumerate(model.variants):
        if variant.capacity_rps <= 0:
            continue
        allowed = (
            range(len(pools))
            if variant.pools is None
            else sorted(pool_pos[name] for name in set(variant.pools) if name in pool_pos)
        )
        pairs.extend(
            (v, p) for p in allowed if pools[p].accelerator_type == variant.accelerator_type
        )
    spot_usable = model.spot_max_fraction >= 1 or (
        model.spot_max_fraction > 0 and any(pools[p].capacity_type != "spot" for _, p in pairs)
    )
    if not spot_usable:
        pairs = [(v, p) for v, p in pairs if pools[p].capacity_type != "spot"]
    return pairs


def _structural_reason(
    model: ModelRequest, pairs: list[tuple[int, int]], required: float, reach: float
) -> Reason | None:
    if required <= 0 and model.min_replicas == 0:
        return None
    if not pairs:
        if all(v.capacity_rps <= 0 for v in model.variants) and model.variants:
            return "Infeasible"
        return "NoMatchingPool"
    if not covers(reach, required):
        return "MaxReplicas"
    return None
