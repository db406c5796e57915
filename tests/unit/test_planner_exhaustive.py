"""Planner against brute force on small random fleets, and hypothesis properties.

The brute force knows nothing of the planner's internals: it lists every (variant, pool) pair by
the rules in the module docstring of `infleet.core.planner`, enumerates every replica count per
pair for every model, and picks the lexicographic optimum (per priority level from the highest:
unmet capacity, then missing min replicas; then cost plus churn).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, replace

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from infleet.core.planner import (
    CapacityType,
    FleetPlan,
    ModelRequest,
    PlanProblem,
    PoolSupply,
    VariantOption,
    plan_fleet,
    solve_reference_milp,
)

TYPES = ("gpu-a", "gpu-b")
KINDS: tuple[CapacityType, ...] = ("on-demand", "on-demand", "spot", "reserved")
SEEDS = 320
TOL = 1e-4
"""Costs may differ by the tie-break (1e-6 $/h per accelerator) and float noise."""


def random_small_fleet(seed: int) -> PlanProblem:
    """1-3 models, 1-3 pools, 1-2 variants, capacities small enough to enumerate."""
    rng = random.Random(seed)
    pools = []
    for i in range(rng.randint(1, 3)):
        kind = rng.choice(KINDS)
        pools.append(
            PoolSupply(
                f"p{i}",
                rng.choice(TYPES),
                rng.randint(0, 6),
                rng.choice([1.0, 2.5, 3.0, 4.2]),
                kind,
            )
        )
    models = []
    for i in range(rng.randint(1, 3)):
        variants = []
        for v in range(rng.randint(1, 2)):
            restrict = rng.random() < 0.15
            variants.append(
                VariantOption(
                    f"v{v}",
                    rng.choice(TYPES),
                    rng.randint(1, 2),
                    rng.choice([0.0, 1.0, 2.0, 3.0, 5.0])
                    if rng.random() < 0.1
                    else rng.choice([1.0, 2.0, 3.0, 5.0]),
                    pools=(pools[0].name,) if restrict else None,
                )
            )
        high = rng.randint(1, 3)
        models.append(
            ModelRequest(
                key=("ns", f"m{i}"),
                demand_rps=rng.choice([0.0, 1.0, 2.4, 4.0, 6.0, 8.0]),
                target_utilization=rng.choice([0.8, 1.0]),
                min_replicas=rng.randint(0, min(1, high)),
                max_replicas=high,
                priority=rng.randint(0, 1),
                spot_max_fraction=rng.choice([1.0, 1.0, 0.5, 0.0]),
                variants=tuple(variants),
            )
        )
    current: dict[tuple[tuple[str, str], str, str], int] = {}
    churn = 0.0
    if rng.random() < 0.3:
        churn = rng.choice([0.1, 1.0, 5.0])
        for m in models:
            picked = rng.choice(m.variants)
            current[(m.key, picked.name, rng.choice(pools).name)] = rng.randint(1, 2)
    return PlanProblem(tuple(models), tuple(pools), current, churn)


@dataclass(frozen=True)
class Score:
    """What the lexicographic objective sees of a plan."""

    unmet: tuple[float, ...]
    """Per priority level, highest first: unmet capacity, then missing min replicas."""
    cost: float
    churn: float


def _pairs(model: ModelRequest, pools: tuple[PoolSupply, ...]) -> list[tuple[int, int]]:
    return [
        (v, p)
        for v, variant in enumerate(model.variants)
        for p, pool in enumerate(pools)
        if variant.accelerator_type == pool.accelerator_type
        and (variant.pools is None or pool.name in variant.pools)
        and variant.capacity_rps > 0
    ]


def _price(pool: PoolSupply) -> float:
    return 0.0 if pool.capacity_type == "reserved" else pool.cost_per_accelerator_hour


def brute_force(problem: PlanProblem) -> Score:
    """The lexicographic optimum over every feasible integer plan."""
    pools = problem.pools
    levels = sorted({m.priority for m in problem.models}, reverse=True)
    per_model = []
    for model in problem.models:
        pairs = _pairs(model, pools)
        rows = []
        for counts in itertools.product(range(model.max_replicas + 1), repeat=len(pairs)):
            if sum(counts) > model.max_replicas:
                continue
            usage = np.zeros(len(pools))
            capacity = spot = cost = acc = 0.0
            placed: dict[tuple[str, str], int] = {}
            for n, (v, p) in zip(counts, pairs, strict=True):
                variant = model.variants[v]
                usage[p] += n * variant.accelerators_per_replica
                capacity += n * variant.capacity_rps
                if pools[p].capacity_type == "spot":
                    spot += n * variant.capacity_rps
                cost += n * variant.accelerators_per_replica * _price(pools[p])
                acc += n * variant.accelerators_per_replica
                placed[(variant.name, pools[p].name)] = n
            if spot > model.spot_max_fraction * capacity + 1e-9:
                continue
            unmet = max(0.0, model.required_rps - capacity)
            unmet = 0.0 if unmet < 1e-9 * (1 + model.required_rps) else unmet
            short = max(0, model.min_replicas - sum(counts))
            mine = {(k[1], k[2]): r for k, r in problem.current.items() if k[0] == model.key}
            churn = sum(abs(placed.get(k, 0) - mine.get(k, 0)) for k in placed.keys() | mine)
            rows.append((usage, unmet, short, cost, acc, churn))
        per_model.append(rows)
    best: tuple[tuple[float, ...], float, Score] | None = None
    for combo in itertools.product(*per_model):
        usage = np.sum([r[0] for r in combo], axis=0)
        if any(usage[p] > pools[p].accelerators for p in range(len(pools))):
            continue
        shortfall: list[float] = []
        for level in levels:
            members = [r for r, m in zip(combo, problem.models, strict=True) if m.priority == level]
            shortfall += [round(sum(r[1] for r in members), 6), float(sum(r[2] for r in members))]
        total_cost = sum(r[3] for r in combo)
        total_churn = problem.churn_cost_per_replica * sum(r[5] for r in combo)
        objective = total_cost + total_churn + 1e-6 * sum(r[4] for r in combo)
        score = Score(tuple(shortfall), total_cost, total_churn)
        if best is None or (tuple(shortfall), objective) < (best[0], best[1]):
            best = (tuple(shortfall), objective, score)
    assert best is not None  # the empty plan is always feasible
    return best[2]


def score_of(problem: PlanProblem, plan: FleetPlan) -> Score:
    """Score a plan the way `brute_force` does, checking every constraint on the way."""
    pools = {p.name: p for p in problem.pools}
    models = {m.key: m for m in problem.models}
    usage = dict.fromkeys(pools, 0)
    served: dict[tuple[str, str], float] = dict.fromkeys(models, 0.0)
    spot: dict[tuple[str, str], float] = dict.fromkeys(models, 0.0)
    count: dict[tuple[str, str], int] = dict.fromkeys(models, 0)
    placed: dict[tuple[tuple[str, str], str, str], int] = {}
    cost = 0.0
    for pl in plan.placements:
        model, pool = models[pl.model], pools[pl.pool]
        variant = next(v for v in model.variants if v.name == pl.variant)
        assert (
            model.variants.index(variant),
            problem.pools.index(pool),
        ) in _pairs(model, problem.pools), f"ineligible placement {pl}"
        assert pl.replicas > 0
        assert pl.accelerators == pl.replicas * variant.accelerators_per_replica
        assert pl.capacity_rps == pytest.approx(pl.replicas * variant.capacity_rps)
        assert pl.cost_per_hour == pytest.approx(pl.accelerators * _price(pool))
        usage[pool.name] += pl.accelerators
        served[model.key] += pl.capacity_rps
        if pool.capacity_type == "spot":
            spot[model.key] += pl.capacity_rps
        count[model.key] += pl.replicas
        placed[(model.key, variant.name, pool.name)] = pl.replicas
        cost += pl.cost_per_hour
    for name, used in usage.items():
        assert used <= pools[name].accelerators, f"pool {name} overused"
    unmet_by_level: dict[int, list[float]] = {}
    for key, model in models.items():
        assert count[key] <= model.max_replicas
        assert spot[key] <= model.spot_max_fraction * served[key] + 1e-9
        unmet = max(0.0, model.required_rps - served[key])
        unmet = 0.0 if unmet < 1e-9 * (1 + model.required_rps) else unmet
        bucket = unmet_by_level.setdefault(model.priority, [0.0, 0.0])
        bucket[0] += unmet
        bucket[1] += max(0, model.min_replicas - count[key])
    unmet_list: list[float] = []
    for priority in sorted(unmet_by_level, reverse=True):
        unmet_list += [round(unmet_by_level[priority][0], 6), unmet_by_level[priority][1]]
    churn = problem.churn_cost_per_replica * sum(
        abs(placed.get(k, 0) - r) for k, r in problem.current.items()
    ) + problem.churn_cost_per_replica * sum(
        n for k, n in placed.items() if k not in problem.current
    )
    assert plan.cost_per_hour == pytest.approx(cost)
    return Score(tuple(unmet_list), cost, churn)


def assert_same(problem: PlanProblem, plan: FleetPlan, best: Score) -> None:
    got = score_of(problem, plan)
    assert got.unmet == pytest.approx(best.unmet, abs=1e-6), plan
    assert got.cost + got.churn == pytest.approx(best.cost + best.churn, abs=TOL), plan


@pytest.mark.parametrize("chunk", range(8))
def test_plan_fleet_matches_brute_force(chunk: int) -> None:
    for seed in range(chunk, SEEDS, 8):
        problem = random_small_fleet(seed)
        best = brute_force(problem)
        assert_same(problem, plan_fleet(problem), best)


@pytest.mark.parametrize("chunk", range(4))
def test_reference_milp_matches_brute_force(chunk: int) -> None:
    for seed in range(chunk, SEEDS, 4):
        problem = random_small_fleet(seed)
        best = brute_force(problem)
        assert_same(problem, solve_reference_milp(problem, mip_rel_gap=1e-9), best)


def test_generator_covers_every_reason() -> None:
    reasons = set()
    for seed in range(SEEDS):
        problem = random_small_fleet(seed)
        reasons |= {m.reason for m in plan_fleet(problem).models}
    assert reasons == {None, "NoMatchingPool", "Infeasible", "CapacityShortage", "MaxReplicas"}


# Hypothesis properties on mid-sized fleets (too big for brute force, exact via HiGHS).

seeds = st.integers(min_value=0, max_value=2**32 - 1)
PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def mid_fleet(seed: int, models: int = 6, pools: int = 4) -> PlanProblem:
    """A fleet of a few models with realistic shape and integer capacities."""
    rng = random.Random(seed)
    supplies = tuple(
        PoolSupply(
            f"p{i}",
            rng.choice(TYPES),
            rng.randint(0, 24),
            rng.choice([0.7, 1.2, 3.67, 4.92]),
            rng.choice(KINDS),
        )
        for i in range(pools)
    )
    requests = tuple(
        ModelRequest(
            key=("ns", f"m{i}"),
            demand_rps=round(rng.uniform(0, 20), 2),
            target_utilization=rng.choice([0.7, 0.8, 1.0]),
            min_replicas=rng.randint(0, 2),
            max_replicas=rng.randint(2, 12),
            priority=rng.randint(0, 2),
            spot_max_fraction=rng.choice([1.0, 0.5, 0.3]),
            variants=tuple(
                VariantOption(
                    f"v{v}", rng.choice(TYPES), rng.choice([1, 2, 4]), round(rng.uniform(0.5, 8), 2)
                )
                for v in range(rng.randint(1, 3))
            ),
        )
        for i in range(models)
    )
    return PlanProblem(requests, supplies)


def _unmet(plan: FleetPlan) -> float:
    return sum(m.unmet_rps for m in plan.models)


@PROPERTY
@given(seeds)
# Rounding the master LP once left a top-priority model 0.88 rps short with gap 0 reported.
@example(seed=106160)
def test_constraints_hold_and_cost_never_below_reference(seed: int) -> None:
    problem = mid_fleet(seed)
    mine = plan_fleet(problem)
    reference = solve_reference_milp(problem, mip_rel_gap=1e-9)
    got, ref = score_of(problem, mine), score_of(problem, reference)
    assert got.unmet == pytest.approx(ref.unmet, abs=1e-6)
    assert got.cost >= ref.cost - TOL
    assert got.cost <= ref.cost * (1 + mine.solver.optimality_gap) + TOL


@PROPERTY
@given(seeds, st.integers(0, 3), st.integers(1, 16))
def test_more_pool_capacity_never_costs_more(seed: int, which: int, extra: int) -> None:
    problem = mid_fleet(seed)
    pools = list(problem.pools)
    pools[which] = replace(pools[which], accelerators=pools[which].accelerators + extra)
    bigger = replace(problem, pools=tuple(pools))
    before, after = plan_fleet(problem), plan_fleet(bigger)
    # The old plan still fits, so the new one is lexicographically no worse: per priority level
    # (highest first) unmet capacity, then missing min replicas; when those tie, no dearer.
    old, new = score_of(problem, before).unmet, score_of(bigger, after).unmet
    differ = [i for i in range(len(old)) if abs(old[i] - new[i]) > 1e-6]
    if differ:
        assert new[differ[0]] < old[differ[0]]
    else:
        assert after.cost_per_hour <= before.cost_per_hour + TOL


@PROPERTY
@given(seeds, st.integers(0, 5), st.floats(0.1, 10))
def test_more_demand_never_costs_less_when_capacity_is_ample(
    seed: int, which: int, more: float
) -> None:
    problem = mid_fleet(seed)
    ample = replace(problem, pools=tuple(replace(p, accelerators=10_000) for p in problem.pools))
    models = list(ample.models)
    models[which] = replace(models[which], demand_rps=models[which].demand_rps + more)
    busier = replace(ample, models=tuple(models))
    assert plan_fleet(busier).cost_per_hour >= plan_fleet(ample).cost_per_hour - TOL


@PROPERTY
@given(seeds)
def test_lower_priority_never_served_at_the_expense_of_higher(seed: int) -> None:
    # Dropping every model below the top priority must not change what the top level gets.
    problem = mid_fleet(seed)
    top = max(m.priority for m in problem.models)
    alone = replace(problem, models=tuple(m for m in problem.models if m.priority == top))
    full, only = plan_fleet(problem), plan_fleet(alone)
    top_unmet = sum(
        m.unmet_rps for m in full.models if problem.models[full.models.index(m)].priority == top
    )
    assert top_unmet == pytest.approx(_unmet(only), abs=1e-6)
