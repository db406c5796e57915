"""Fleet planner: table-driven cases with answers computed by hand (see each case's comment)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pytest

from infleet.core.planner import (
    FleetPlan,
    ModelRequest,
    PlanProblem,
    PoolSupply,
    VariantOption,
    compare_single_type,
    plan_fleet,
    single_type_costs,
    solve_reference_milp,
)

H100 = "nvidia-h100-80gb"
L4 = "nvidia-l4"


def h100(rps: float = 5.0, name: str = "h100", accelerators: int = 1) -> VariantOption:
    return VariantOption(name, H100, accelerators, rps)


def model(name: str, demand: float, *variants: VariantOption, **kw: object) -> ModelRequest:
    return ModelRequest(key=("ns", name), demand_rps=demand, variants=variants, **kw)  # type: ignore[arg-type]


def pool(name: str, size: int, price: float, kind: str = "on-demand", t: str = H100) -> PoolSupply:
    return PoolSupply(name, t, size, price, kind)  # type: ignore[arg-type]


@dataclass
class Case:
    problem: PlanProblem
    cost: float
    replicas: Mapping[tuple[str, str, str], int]
    """(model name, variant, pool) -> replicas; every other triple must be empty."""
    reasons: Mapping[str, str | None] = field(default_factory=dict)
    unmet: Mapping[str, float] = field(default_factory=dict)


CASES: dict[str, Case] = {
    # required 12 / 0.8 = 15 rps, 5 rps per replica -> 3 replicas x $4.
    "single model single pool": Case(
        PlanProblem((model("a", 12.0, h100()),), (pool("p", 8, 4.0),)),
        12.0,
        {("a", "h100", "p"): 3},
        {"a": None},
    ),
    # Same 3 replicas, on the $3 pool.
    "cheapest pool chosen": Case(
        PlanProblem((model("a", 12.0, h100()),), (pool("dear", 8, 4.0), pool("cheap", 8, 3.0))),
        9.0,
        {("a", "h100", "cheap"): 3},
    ),
    # required 12: 2x h100 = $8, 8x l4 = $5.6, 1x h100 + 2x l4 = 10 + 3 rps for $5.4 (cheapest).
    "mixed variants cheaper than one": Case(
        PlanProblem(
            (model("a", 9.6, h100(10.0), VariantOption("l4", L4, 1, 1.5)),),
            (pool("h", 8, 4.0), pool("l", 16, 0.7, t=L4)),
        ),
        5.4,
        {("a", "h100", "h"): 1, ("a", "l4", "l"): 2},
    ),
    # 3 replicas: the 2 reserved accelerators are free, the third goes on-demand at $3.
    "reserved capacity used first": Case(
        PlanProblem(
            (model("a", 12.0, h100()),), (pool("res", 2, 4.0, "reserved"), pool("od", 8, 3.0))
        ),
        3.0,
        {("a", "h100", "res"): 2, ("a", "h100", "od"): 1},
    ),
    # required 20 -> 4 replicas; at most half the capacity on spot: 2 x $1 + 2 x $4.
    "spot fraction respected": Case(
        PlanProblem(
            (model("a", 16.0, h100(), spot_max_fraction=0.5),),
            (pool("spot", 8, 1.0, "spot"), pool("od", 8, 4.0)),
        ),
        10.0,
        {("a", "h100", "spot"): 2, ("a", "h100", "od"): 2},
    ),
    # Only spot pools match and spot is capped: nothing can be placed.
    "spot-only with spot cap": Case(
        PlanProblem(
            (model("a", 4.0, h100(), spot_max_fraction=0.5),), (pool("spot", 8, 1.0, "spot"),)
        ),
        0.0,
        {},
        {"a": "NoMatchingPool"},
        {"a": 5.0},
    ),
    # 1.25 rps needs one replica, but min replicas is 3.
    "min replicas": Case(
        PlanProblem((model("a", 1.0, h100(), min_replicas=3),), (pool("p", 8, 4.0),)),
        12.0,
        {("a", "h100", "p"): 3},
        {"a": None},
    ),
    # required 50 rps, 4 replicas max of 5 rps: 20 placed, 30 unmet.
    "max replicas": Case(
        PlanProblem((model("a", 40.0, h100(), max_replicas=4),), (pool("p", 16, 4.0),)),
        16.0,
        {("a", "h100", "p"): 4},
        {"a": "MaxReplicas"},
        {"a": 30.0},
    ),
    # 4 accelerators; both want 3 replicas (15 rps); priority 1 is served first.
    "priority under shortage": Case(
        PlanProblem(
            (model("lo", 12.0, h100()), model("hi", 12.0, h100(), priority=1)),
            (pool("p", 4, 4.0),),
        ),
        16.0,
        {("hi", "h100", "p"): 3, ("lo", "h100", "p"): 1},
        {"hi": None, "lo": "CapacityShortage"},
        {"hi": 0.0, "lo": 10.0},
    ),
    # Same priority: demand (3 replicas) ranks above the other model's min replicas.
    "min replicas rank below demand of same priority": Case(
        PlanProblem(
            (model("a", 12.0, h100()), model("b", 0.0, h100(), min_replicas=2)),
            (pool("p", 4, 4.0),),
        ),
        16.0,
        {("a", "h100", "p"): 3, ("b", "h100", "p"): 1},
        {"a": None, "b": "CapacityShortage"},
        {"a": 0.0, "b": 0.0},
    ),
    # Higher priority: b's min replicas come before a's demand.
    "min replicas of higher priority first": Case(
        PlanProblem(
            (model("a", 12.0, h100()), model("b", 0.0, h100(), min_replicas=2, priority=1)),
            (pool("p", 4, 4.0),),
        ),
        16.0,
        {("a", "h100", "p"): 2, ("b", "h100", "p"): 2},
        {"a": "CapacityShortage", "b": None},
        {"a": 5.0},
    ),
    "no matching pool": Case(
        PlanProblem((model("a", 4.0, VariantOption("l4", L4, 1, 1.0)),), (pool("p", 8, 4.0),)),
        0.0,
        {},
        {"a": "NoMatchingPool"},
        {"a": 5.0},
    ),
    "variant restricted to other pools": Case(
        PlanProblem(
            (model("a", 4.0, VariantOption("h100", H100, 1, 5.0, pools=("other",))),),
            (pool("p", 8, 4.0),),
        ),
        0.0,
        {},
        {"a": "NoMatchingPool"},
    ),
    "slo unattainable": Case(
        PlanProblem((model("a", 4.0, h100(0.0)),), (pool("p", 8, 4.0),)),
        0.0,
        {},
        {"a": "Infeasible"},
        {"a": 5.0},
    ),
    "no demand, nothing to run": Case(
        PlanProblem((model("a", 0.0, h100()),), (pool("p", 8, 4.0),)),
        0.0,
        {},
        {"a": None},
        {"a": 0.0},
    ),
    # 3 replicas run on "old" ($4); "new" costs $3.9: moving saves $0.3/h but churns 6 replicas.
    "churn keeps current placement": Case(
        PlanProblem(
            (model("a", 12.0, h100()),),
            (pool("old", 8, 4.0), pool("new", 8, 3.9)),
            current={(("ns", "a"), "h100", "old"): 3},
            churn_cost_per_replica=0.5,
        ),
        12.0,
        {("a", "h100", "old"): 3},
    ),
    # Same, with a churn cost of 0.01 x 6 = 0.06 < 0.3: move.
    "small churn cost lets it move": Case(
        PlanProblem(
            (model("a", 12.0, h100()),),
            (pool("old", 8, 4.0), pool("new", 8, 3.9)),
            current={(("ns", "a"), "h100", "old"): 3},
            churn_cost_per_replica=0.01,
        ),
        11.7,
        {("a", "h100", "new"): 3},
    ),
    # A 2-accelerator variant (8 rps) and a 1-accelerator one (5 rps) on a free reserved pool:
    # every mix costs $0; 3 x 1 accelerator is the only mix of 15 rps on 3 accelerators
    # (2 big = 4, 2 small + 1 big = 4, 1 small + 2 big = 5).
    "ties broken towards fewer accelerators": Case(
        PlanProblem(
            (model("a", 12.0, h100(), h100(8.0, "big", 2)),), (pool("res", 8, 4.0, "reserved"),)
        ),
        0.0,
        {("a", "h100", "res"): 3},
    ),
}

Solver = Callable[[PlanProblem], FleetPlan]
SOLVERS: dict[str, Solver] = {
    "plan_fleet": lambda p: plan_fleet(p),
    "reference": lambda p: solve_reference_milp(p, mip_rel_gap=1e-9),
}


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("name", CASES)
def test_case(name: str, solver: str) -> None:
    case = CASES[name]
    plan = SOLVERS[solver](case.problem)
    assert plan.cost_per_hour == pytest.approx(case.cost, abs=1e-9)
    got = {(p.model[1], p.variant, p.pool): p.replicas for p in plan.placements}
    assert got == dict(case.replicas)
    outcomes = {m.key[1]: m for m in plan.models}
    for key, reason in case.reasons.items():
        assert outcomes[key].reason == reason, outcomes[key].explanation
    for key, unmet in case.unmet.items():
        assert outcomes[key].unmet_rps == pytest.approx(unmet)


def test_placement_figures_add_up() -> None:
    plan = plan_fleet(CASES["mixed variants cheaper than one"].problem)
    by_variant = {p.variant: p for p in plan.placements}
    assert by_variant["h100"].accelerators == 1
    assert by_variant["h100"].cost_per_hour == pytest.approx(4.0)
    assert by_variant["l4"].capacity_rps == pytest.approx(3.0)
    (outcome,) = plan.models
    assert outcome.capacity_rps == pytest.approx(13.0)
    assert outcome.required_rps == pytest.approx(12.0)
    assert outcome.replicas == 3
    assert outcome.cost_per_hour == pytest.approx(5.4)


def test_exact_solver_reports_zero_gap() -> None:
    plan = plan_fleet(CASES["spot fraction respected"].problem)
    assert plan.solver.optimality_gap == 0.0
    assert plan.solver.name in {"decomposition", "decomposition+highs", "highs"}


EXPLANATIONS = {
    "spot fraction respected": (
        "2x h100 on spot + 2x h100 on od ($10.00/h): cheapest mix for 16.0 rps "
        "(20.0 at 80% utilisation); spot capped at 50%"
    ),
    "priority under shortage": (
        "1x h100 on p ($4.00/h): only 5.0 of 15.0 rps placed: pools for nvidia-h100-80gb are "
        "full (priority 0 yields to higher-priority models)"
    ),
    "max replicas": (
        "4x h100 on p ($16.00/h): max replicas 4 caps capacity at 20.0 of 50.0 rps needed for "
        "40.0 rps (50.0 at 80% utilisation)"
    ),
    "no matching pool": "no replicas: no pool matches any variant (nvidia-l4)",
    "slo unattainable": (
        "no replicas: no variant can meet the latency SLO (capacity 0 on every variant)"
    ),
}


@pytest.mark.parametrize("name", EXPLANATIONS)
def test_explanation(name: str) -> None:
    plan = plan_fleet(CASES[name].problem)
    lines = {m.key[1]: m.explanation for m in plan.models}
    key = "lo" if name == "priority under shortage" else "a"
    assert lines[key] == EXPLANATIONS[name]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"target_utilization": 0.0}, "target_utilization must be in (0, 1]"),
        ({"min_replicas": 5, "max_replicas": 2}, "min_replicas <= max_replicas"),
        ({"spot_max_fraction": 1.5}, "spot_max_fraction must be in [0, 1]"),
        ({"demand_rps": -1.0}, "demand_rps must be finite and >= 0"),
    ],
)
def test_bad_model_is_rejected_with_its_name(change: dict[str, object], message: str) -> None:
    kwargs: dict[str, object] = {"key": ("team", "chat"), "demand_rps": 1.0, "variants": (h100(),)}
    kwargs.update(change)
    problem = PlanProblem((ModelRequest(**kwargs),), (pool("p", 8, 4.0),))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="model team/chat") as err:
        plan_fleet(problem)
    assert message in str(err.value)


def test_duplicate_pool_is_rejected() -> None:
    problem = PlanProblem((), (pool("p", 8, 4.0), pool("p", 4, 3.0)))
    with pytest.raises(ValueError, match="pool 'p': duplicate pool name"):
        plan_fleet(problem)


def test_single_type_comparison() -> None:
    # Mixed: $5.4 (see "mixed variants cheaper than one"); H100 only: 2 x $4; L4 only: 8 x $0.7.
    problem = CASES["mixed variants cheaper than one"].problem
    costs = single_type_costs(problem)
    assert costs == {H100: pytest.approx(8.0), L4: pytest.approx(5.6)}
    comparison = compare_single_type(problem)
    assert comparison.mixed_cost == pytest.approx(5.4)
    assert comparison.best_type == L4
    assert comparison.savings == pytest.approx(1 - 5.4 / 5.6)


def test_single_type_skips_a_type_that_cannot_serve_every_model() -> None:
    problem = PlanProblem(
        (model("a", 4.0, h100()), model("b", 1.0, VariantOption("l4", L4, 1, 1.0))),
        (pool("h", 1, 4.0), pool("l", 1, 0.7, t=L4)),
    )
    # Inventory is ignored for the comparison: a needs 1 H100, b needs 2 L4s.
    assert single_type_costs(problem) == {H100: None, L4: None}
    assert compare_single_type(problem).mixed_cost == pytest.approx(4.0 + 1.4)
