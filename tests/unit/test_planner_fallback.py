"""The planner's last resort: a plan when time runs out before HiGHS finds one (`fallback`)."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest

import infleet.core.planner as planner
from infleet.core.decompose import COLUMN_LIMIT, Decomposition
from infleet.core.fallback import fallback_replicas, shortfall_key
from infleet.core.milp import MilpResult
from infleet.core.plan_index import FleetIndex, build_index, covers
from infleet.core.plan_report import build_plan
from infleet.core.planner import (
    FleetPlan,
    ModelRequest,
    PlanProblem,
    PoolSupply,
    SolverInfo,
    VariantOption,
    plan_fleet,
)

TYPES = ("gpu-a", "gpu-b", "gpu-c")


def random_fleet(models: int, seed: int, roomy: bool) -> PlanProblem:
    """``models`` random models on 9 pools; ``roomy``: every pool holds every model's maximum."""
    rng = random.Random(seed)
    pools = [
        PoolSupply(
            f"{t}-{kind}",
            t,
            10_000 if roomy else rng.randint(4, 12),
            round(rng.uniform(0.5, 4.0), 2),
            kind,  # type: ignore[arg-type]
        )
        for t in TYPES
        for kind in ("on-demand", "spot", "reserved")
    ]
    fleet = []
    for i in range(models):
        variants = tuple(
            VariantOption(f"v{k}", t, rng.choice((1, 2, 4)), round(rng.uniform(0.5, 8.0), 2))
            for k, t in enumerate(rng.sample(TYPES, rng.randint(1, 3)))
        )
        fleet.append(
            ModelRequest(
                key=("ns", f"m{i:03d}"),
                demand_rps=round(rng.uniform(0.0, 12.0), 2),
                min_replicas=rng.randint(0, 2),
                max_replicas=rng.randint(2, 8),
                priority=rng.randint(0, 2),
                spot_max_fraction=rng.choice((0.0, 0.3, 0.5, 1.0)),
                variants=variants,
            )
        )
    return PlanProblem(models=tuple(fleet), pools=tuple(pools))


def assert_within_limits(index: FleetIndex, plan: FleetPlan) -> None:
    """Pool sizes, max replicas and spot shares hold."""
    problem = index.problem
    used = {p.name: 0 for p in problem.pools}
    kind = {p.name: p.capacity_type for p in problem.pools}
    for model, outcome in zip(problem.models, plan.models, strict=True):
        assert outcome.replicas <= model.max_replicas
        spot = 0.0
        for placement in plan.placements:
            if placement.model != model.key:
                continue
            variant = next(v for v in model.variants if v.name == placement.variant)
            used[placement.pool] += placement.replicas * variant.accelerators_per_replica
            if kind[placement.pool] == "spot":
                spot += placement.replicas * variant.capacity_rps
        assert spot <= model.spot_max_fraction * outcome.capacity_rps + 1e-9
    for p in problem.pools:
        assert used[p.name] <= p.accelerators


def test_tiny_time_limit_still_serves_every_model_when_pools_are_roomy() -> None:
    problem = random_fleet(300, seed=7, roomy=True)
    index = build_index(problem)
    plan = plan_fleet(problem, time_limit_seconds=1e-6)
    assert plan.placements
    assert_within_limits(index, plan)
    for m, outcome in enumerate(plan.models):
        # The target is what max_replicas allows; a model with no eligible pool gets nothing.
        if index.model_start[m] < index.model_start[m + 1]:
            assert covers(outcome.capacity_rps, float(index.target[m])), outcome
            assert outcome.replicas >= index.min_replicas[m]


def test_fallback_alone_serves_every_model_when_pools_are_roomy() -> None:
    """The greedy itself, not only whichever path plan_fleet took in the time it had."""
    problem = random_fleet(300, seed=8, roomy=True)
    index = build_index(problem)
    replicas = fallback_replicas(Decomposition(index, COLUMN_LIMIT))
    plan = build_plan(index, replicas, SolverInfo("greedy-fallback", 0.0, 1.0))
    assert_within_limits(index, plan)
    served = 0
    for m, outcome in enumerate(plan.models):
        if index.model_start[m] < index.model_start[m + 1]:
            assert covers(outcome.capacity_rps, float(index.target[m])), outcome
            assert outcome.replicas >= index.min_replicas[m]
            served += index.needs_anything(m)
    assert served > 200


def _served_share(index: FleetIndex, plan: FleetPlan, level: int) -> float:
    members = [m for m in range(index.n_models) if index.priority[m] == level]
    wanted = sum(float(index.target[m]) for m in members)
    return sum(min(plan.models[m].capacity_rps, float(index.target[m])) for m in members) / wanted


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fallback_serves_higher_priority_first_under_shortage(seed: int) -> None:
    problem = random_fleet(300, seed=seed, roomy=False)
    index = build_index(problem)
    replicas = fallback_replicas(Decomposition(index, COLUMN_LIMIT))
    plan = build_plan(index, replicas, SolverInfo("greedy-fallback", 0.0, 1.0))
    assert_within_limits(index, plan)
    # Pools hold far less than 300 models need, yet the top level is served before the others.
    assert _served_share(index, plan, 2) > _served_share(index, plan, 0)
    top = [m for m in range(index.n_models) if index.priority[m] == 2]
    assert any(covers(plan.models[m].capacity_rps, float(index.target[m])) for m in top)
    # A top-level model left short below max_replicas found every pool it could use full: no
    # lower level holds anything there (spot pools aside: its spot share may keep it out).
    starved = {
        m
        for m in top
        if not covers(plan.models[m].capacity_rps, float(index.target[m]))
        and plan.models[m].replicas < index.max_replicas[m]
    }
    assert starved
    spot = {i for i, p in enumerate(problem.pools) if p.capacity_type == "spot"}
    wanted = {int(p) for m in starved for p in index.t_pool[list(index.triples_of(m))]} - spot
    low = np.flatnonzero((index.priority[index.t_model] < 2) & (replicas > 0))
    assert not wanted & {int(p) for p in index.t_pool[low]}


def test_tiny_time_limit_under_shortage_serves_priorities_in_order() -> None:
    problem = random_fleet(300, seed=4, roomy=False)
    index = build_index(problem)
    plan = plan_fleet(problem, time_limit_seconds=1e-6)
    assert plan.placements
    assert_within_limits(index, plan)
    greedy = fallback_replicas(Decomposition(index, COLUMN_LIMIT))
    # Whatever path produced it, the plan is never lexicographically worse than the greedy.
    mine = np.zeros(index.n_triples, dtype=np.int64)
    at = {
        (
            index.problem.models[int(index.t_model[j])].key,
            index.problem.models[int(index.t_model[j])].variants[int(index.t_variant[j])].name,
            index.problem.pools[int(index.t_pool[j])].name,
        ): j
        for j in range(index.n_triples)
    }
    for placement in plan.placements:
        mine[at[(placement.model, placement.variant, placement.pool)]] = placement.replicas
    assert shortfall_key(index, mine)[:-1] <= shortfall_key(index, greedy)[:-1]


def test_tiny_time_limit_serves_the_higher_priority_when_only_one_fits() -> None:
    def one(name: str, priority: int) -> ModelRequest:
        return ModelRequest(
            key=("ns", name),
            demand_rps=3.0,
            target_utilization=1.0,
            priority=priority,
            variants=(VariantOption("v", "gpu-a", 1, 1.0),),
        )

    problem = PlanProblem(
        models=(one("a-low", 0), one("b-high", 5)), pools=(PoolSupply("p", "gpu-a", 4, 1.0),)
    )
    plan = plan_fleet(problem, time_limit_seconds=1e-6)
    assert [(m.capacity_rps, m.reason) for m in plan.models] == [
        (1.0, "CapacityShortage"),
        (3.0, None),
    ]


def test_fallback_takes_part_of_a_model_when_the_whole_does_not_fit() -> None:
    # 4 accelerators for a model needing 6 replicas of 1 accelerator: it gets 4, not nothing.
    model = ModelRequest(
        key=("ns", "big"),
        demand_rps=6.0,
        target_utilization=1.0,
        max_replicas=10,
        variants=(VariantOption("v", "gpu-a", 1, 1.0),),
    )
    small = ModelRequest(
        key=("ns", "small"),
        demand_rps=1.0,
        target_utilization=1.0,
        priority=-1,
        variants=(VariantOption("v", "gpu-a", 1, 1.0),),
    )
    pools = (PoolSupply("a", "gpu-a", 4, 1.0),)
    index = build_index(PlanProblem(models=(small, model), pools=pools))
    replicas = fallback_replicas(Decomposition(index, COLUMN_LIMIT))
    assert replicas.tolist() == [0, 4]


def test_fallback_respects_the_spot_share_when_placing_part() -> None:
    # Spot is cheaper but may carry at most half the capacity: 2 spot + 2 on-demand of 4 wanted
    # would be the full plan, but on-demand has room for 1 only, so spot gets 1 as well.
    model = ModelRequest(
        key=("ns", "m"),
        demand_rps=4.0,
        target_utilization=1.0,
        spot_max_fraction=0.5,
        variants=(VariantOption("v", "gpu-a", 1, 1.0),),
    )
    pools = (PoolSupply("od", "gpu-a", 1, 2.0), PoolSupply("sp", "gpu-a", 10, 1.0, "spot"))
    index = build_index(PlanProblem(models=(replace(model),), pools=pools))
    replicas = fallback_replicas(Decomposition(index, COLUMN_LIMIT))
    assert dict(zip(index.t_pool.tolist(), replicas.tolist(), strict=True)) == {0: 1, 1: 1}


def test_planner_returns_the_fallback_when_highs_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """HiGHS stands in as timed out (its real timeout depends on the machine's load)."""
    problem = random_fleet(60, seed=5, roomy=False)
    index = build_index(problem)

    def timed_out(index: FleetIndex, **_: float) -> MilpResult:
        return MilpResult(np.zeros(index.n_triples, dtype=np.int64), 1.0, 0.0, 1, 0.0, False)

    monkeypatch.setattr(planner, "solve_milp", timed_out)
    plan = plan_fleet(problem, time_limit_seconds=30.0)
    assert plan.solver.name == "greedy-fallback"
    assert plan.solver.optimality_gap == 1.0
    greedy = fallback_replicas(Decomposition(index, COLUMN_LIMIT))
    assert plan == build_plan(index, greedy, replace(plan.solver))
    assert plan.placements
