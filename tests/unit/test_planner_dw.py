"""The master LP by column generation (`infleet.core.master_dw`): same bound as the full master
LP, a solution of the LP relaxation, loose pools by hand; and rounding a model with two split
items (found through it)."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from test_planner_exhaustive import PROPERTY, mid_fleet, seeds

from infleet.core import master_dw
from infleet.core.decompose import EXACT_COLUMN_LIMIT, Decomposition
from infleet.core.master import MasterLP, round_master, solve_master_lp
from infleet.core.master_dw import Stopped, loose_pools, solve_master_dw
from infleet.core.plan_index import build_index
from infleet.core.planner import (
    EXACT_TRIPLES,
    ModelRequest,
    PlanProblem,
    PoolSupply,
    VariantOption,
    _quick_plan,
    _serves_everyone,
    plan_fleet,
)


def _roomy(problem: PlanProblem, on_demand: int) -> PlanProblem:
    """On-demand pools ``on_demand`` times larger (so the fleet fits), the others 4 times."""
    pools = tuple(
        replace(
            p, accelerators=p.accelerators * (4 if p.capacity_type != "on-demand" else on_demand)
        )
        for p in problem.pools
    )
    return replace(problem, pools=pools)


def _check_solution(dec: Decomposition, lp: MasterLP) -> None:
    """Column weights sum to 1 per model, items get their columns' counts, pools hold."""
    index = dec.index
    assert np.all(lp.y >= -1e-9)
    assert np.all(lp.replicas >= -1e-9)
    assert np.allclose(np.add.reduceat(lp.y, dec.col_start[:-1]), 1.0, atol=1e-7)
    padded = np.where(dec.item_mask, lp.replicas[np.maximum(dec.item_triples, 0)], 0.0)
    per_item = padded.sum(axis=1)
    wanted = np.zeros(dec.n_items + 1)
    np.add.at(wanted, dec.col_items, lp.y[:, None] * dec.col_counts)
    assert np.allclose(per_item, wanted[:-1], atol=1e-6)
    used = np.bincount(
        index.t_pool, weights=lp.replicas * index.t_accelerators, minlength=len(index.pool_price)
    )
    assert np.all(used <= index.pool_accelerators + 1e-6)


@PROPERTY
@given(seeds)
def test_column_generation_bound_equals_the_master_lp(seed: int) -> None:
    problem = mid_fleet(seed, models=8, pools=4)
    index = build_index(problem)
    dec = Decomposition(index, EXACT_COLUMN_LIMIT)
    if not dec.active:
        return
    full = solve_master_lp(dec, 5.0)
    dw = solve_master_dw(dec, time.perf_counter() + 5.0)
    if not isinstance(full, MasterLP):
        # Shortage: the overflow variables stay in use, so column generation says "failed".
        assert dw == "failed"
        return
    if isinstance(dw, str):
        # Overflow can also be the cheapest way out for a fleet that fits; never otherwise.
        assert dw == "failed"
        return
    assert dw.bound == pytest.approx(full.bound, rel=1e-7, abs=1e-6)
    _check_solution(dec, dw)


def test_column_generation_on_the_bench_shape_matches_and_rounds() -> None:
    served = 0
    for seed in range(40):
        problem = _roomy(mid_fleet(seed, models=12, pools=5), 10)
        index = build_index(problem)
        dec = Decomposition(index, EXACT_COLUMN_LIMIT)
        dw = solve_master_dw(dec, time.perf_counter() + 5.0)
        full = solve_master_lp(dec, 5.0)
        if isinstance(dw, str) or isinstance(full, str):
            continue
        assert dw.bound == pytest.approx(full.bound, rel=1e-7, abs=1e-6)
        upper = round_master(dec, dw, time.perf_counter() + 5.0)
        if upper is not None and _serves_everyone(index, upper):
            served += 1
    assert served >= 10, "too few fleets rounded to mean anything"


def test_column_generation_out_of_time_fails() -> None:
    dec = Decomposition(build_index(mid_fleet(3, models=8, pools=4)), EXACT_COLUMN_LIMIT)
    assert solve_master_dw(dec, time.perf_counter() - 1.0) == "failed"


def _two_type_fleet(big: int) -> PlanProblem:
    # 20 rps needed, 5 rps per replica of either variant: the column (2, 2) is minimal.
    model = ModelRequest(
        ("ns", "m"),
        20.0,
        1.0,
        variants=(VariantOption("a", "x", 1, 5.0), VariantOption("b", "y", 2, 5.0)),
    )
    pools = (
        PoolSupply("x1", "x", big, 1.0),
        PoolSupply("x2", "x", 3, 2.0),
        PoolSupply("y1", "y", 8, 1.0),
        PoolSupply("y2", "y", big, 2.0),
    )
    return PlanProblem((model,), pools)


@pytest.mark.parametrize(
    ("big", "loose"),
    [
        # Pool x1 (1-accelerator replicas, at most 4 in a minimal column) holds 4: loose; x2 (3)
        # does not. y1 holds 8 = 4 replicas of 2: loose; y2 with 7 does not.
        (4, [True, False, True, False]),
        (7, [True, False, True, False]),
        (8, [True, False, True, True]),
        (3, [False, False, True, False]),
    ],
)
def test_loose_pools_by_hand(big: int, loose: list[bool]) -> None:
    dec = Decomposition(build_index(_two_type_fleet(big)), EXACT_COLUMN_LIMIT)
    assert loose_pools(dec).tolist() == loose


def test_rounding_places_both_split_items_of_one_model() -> None:
    # An LP solution with the column (2, 2) whole but both items split over two pools: rounding
    # keeps one replica of each and must place the second of *both* (it once skipped the
    # second item of a model it had already touched, leaving the model 5 rps short).
    index = build_index(_two_type_fleet(40))
    dec = Decomposition(index, EXACT_COLUMN_LIMIT)
    column = int(np.flatnonzero((dec.col_counts[:, :2] == [2, 2]).all(axis=1))[0])
    y = np.zeros(len(dec.col_model))
    y[column] = 1.0
    replicas = np.zeros(index.n_triples)
    for pool, value in (("x1", 1.5), ("x2", 0.5), ("y1", 1.5), ("y2", 0.5)):
        pool_id = [p.name for p in index.problem.pools].index(pool)
        replicas[int(np.flatnonzero(index.t_pool == pool_id)[0])] = value
    lp = MasterLP(replicas, y, np.zeros(4), 0.0)
    # A deadline already past skips the re-planning of touched models at the end (which would
    # hide the bug here; on 1,000-model fleets it ran out of rounds or time).
    plan = round_master(dec, lp, time.perf_counter() - 1.0)
    assert plan is not None
    assert _serves_everyone(index, plan)
    assert int(plan @ index.t_capacity) == 20


def test_large_fleet_plans_through_column_generation() -> None:
    # More than EXACT_TRIPLES triples: the large-fleet path (column generation first).
    problem = _roomy(mid_fleet(7, models=400, pools=12), 400)
    assert build_index(problem).n_triples > EXACT_TRIPLES
    plan = plan_fleet(problem, time_limit_seconds=5.0)
    assert plan.solver.name in ("decomposition", "decomposition+highs")
    assert plan.solver.optimality_gap <= 0.01


def _crowded_fleet() -> PlanProblem:
    # Three models of two 1-accelerator replicas each (10 rps needed, 5 per replica); at zero
    # prices all six want the cheap pool (4 accelerators), and no pool is loose (the dear one
    # holds 5 of the 6 replicas that could go there), so the first solve uses overflow.
    models = tuple(
        ModelRequest(("ns", f"m{i}"), 10.0, 1.0, variants=(VariantOption("v", "x", 1, 5.0),))
        for i in range(3)
    )
    pools = (PoolSupply("cheap", "x", 4, 1.0), PoolSupply("dear", "x", 5, 3.0))
    return PlanProblem(models, pools)


def test_stopped_column_generation_hands_back_prices_and_a_valid_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dec = Decomposition(build_index(_crowded_fleet()), EXACT_COLUMN_LIMIT)
    assert not loose_pools(dec).any()
    monkeypatch.setattr(master_dw, "_MAX_ROUNDS", 1)
    stopped = solve_master_dw(dec, time.perf_counter() + 5.0)
    assert isinstance(stopped, Stopped)
    assert stopped.solves == 1
    assert np.all(stopped.prices >= 0)
    # Optimum: 4 replicas on the cheap pool, 2 on the dear one: 4 * 1 + 2 * 3 = 10.
    assert stopped.bound <= 10.0 + 1e-6
    monkeypatch.setattr(master_dw, "_MAX_ROUNDS", 60)
    done = solve_master_dw(dec, time.perf_counter() + 5.0)
    assert isinstance(done, MasterLP)
    assert done.bound == pytest.approx(10.0 + 6e-6, abs=1e-6)


def test_quick_plan_at_stopped_prices_serves_everyone_with_a_valid_gap() -> None:
    problem = _crowded_fleet()
    index = build_index(problem)
    dec = Decomposition(index, EXACT_COLUMN_LIMIT)
    # Prices that make the cheap pool as dear as the other: a greedy at them still fits.
    hint = Stopped(np.array([2.0, 0.0]), 9.0, 1)
    start = time.perf_counter()
    plan = _quick_plan(index, dec, start, start + 5.0, hint)
    assert plan.solver.name == "greedy-fallback"
    assert all(m.unmet_rps == 0 for m in plan.models)
    assert plan.cost_per_hour == pytest.approx(10.0, abs=1e-4)
    # The gap is measured against the better bound, here the hint's (L(0) is 6).
    assert plan.solver.optimality_gap == pytest.approx((10.0 + 6e-6 - 9.0) / (10.0 + 6e-6))
