"""The master program's pieces: cheaper-pool fill (by hand), LP bound, rounding and exact closing
(against brute force on the small random fleets of `test_planner_exhaustive`)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given
from test_planner_exhaustive import (
    PROPERTY,
    SEEDS,
    brute_force,
    mid_fleet,
    random_small_fleet,
    score_of,
    seeds,
)

from infleet.core.decompose import EXACT_COLUMN_LIMIT, Decomposition, objective
from infleet.core.master import (
    MasterLP,
    _direct_models,
    _drop_interchangeable,
    _reduced_costs,
    _start,
    close_gap,
    round_master,
    solve_master_lp,
)
from infleet.core.plan_index import build_index
from infleet.core.plan_report import build_plan
from infleet.core.plan_types import SolverInfo
from infleet.core.planner import (
    ModelRequest,
    PlanProblem,
    PoolSupply,
    VariantOption,
    _serves_everyone,
    solve_reference_milp,
)
from infleet.core.repair import fill_cheaper_pools

TYPE = "gpu"


def _fleet(accelerators: int, cheap_size: int) -> PlanProblem:
    # One model, 10 rps per replica, 50 rps needed: 5 replicas.
    model = ModelRequest(
        ("ns", "a"), 50.0, 1.0, variants=(VariantOption("v", TYPE, accelerators, 10.0),)
    )
    pools = (
        PoolSupply("dear", TYPE, 100, 4.0),
        PoolSupply("cheap", TYPE, cheap_size, 2.0),
    )
    return PlanProblem((model,), pools)


@pytest.mark.parametrize(
    ("accelerators", "cheap_size", "moved"),
    [
        (1, 3, 3),  # 3 free accelerators take 3 one-accelerator replicas
        (2, 3, 1),  # ... but only one two-accelerator replica
        (2, 1, 0),  # ... and no replica when one accelerator is free
        (1, 9, 5),  # every replica moves; the rest of the cheap pool stays free
    ],
)
def test_fill_moves_replicas_to_cheaper_pool_with_room(
    accelerators: int, cheap_size: int, moved: int
) -> None:
    index = build_index(_fleet(accelerators, cheap_size))
    dec = Decomposition(index)
    dear, cheap = (int(np.flatnonzero(index.t_pool == p)[0]) for p in (0, 1))
    replicas = np.zeros(index.n_triples, dtype=np.int64)
    replicas[dear] = 5
    rem = index.pool_accelerators - np.array([5 * accelerators, 0])
    moves = fill_cheaper_pools(dec, replicas, rem)
    assert replicas[cheap] == moved
    assert replicas[dear] == 5 - moved
    assert moves == (1 if moved else 0)
    assert rem.tolist() == [100 - (5 - moved) * accelerators, cheap_size - moved * accelerators]


def test_fill_never_moves_to_a_dearer_pool() -> None:
    index = build_index(_fleet(1, 10))
    dec = Decomposition(index)
    cheap = int(np.flatnonzero(index.t_pool == 1)[0])
    replicas = np.zeros(index.n_triples, dtype=np.int64)
    replicas[cheap] = 5
    rem = index.pool_accelerators - np.array([0, 5])
    assert fill_cheaper_pools(dec, replicas, rem) == 0
    assert replicas[cheap] == 5


def _master(problem: PlanProblem) -> tuple[Decomposition, MasterLP] | None:
    index = build_index(problem)
    dec = Decomposition(index, EXACT_COLUMN_LIMIT)
    if not dec.active:
        return None
    lp = solve_master_lp(dec, 5.0)
    return (dec, lp) if isinstance(lp, MasterLP) else None


@pytest.mark.parametrize(
    ("accelerators", "cheap_size", "cheap_in_items", "bound"),
    [
        # 5 replicas of 4 accelerators; the cheap pool cannot hold one, so the LP may not put
        # 3/4 of a replica there (it would bound 3 * 2 + 17 * 4 = 74): 20 * 4 = 80.
        (4, 3, False, 80.0),
        # It holds exactly one: 4 * 2 + 16 * 4 = 72, which is also the optimum.
        (4, 4, True, 72.0),
        # It holds one 2-accelerator replica and half of another: the LP still splits that one
        # (3 * 2 + 7 * 4 = 34 while the optimum is 2 * 2 + 8 * 4 = 36); only pools that cannot
        # hold a single replica are left out.
        (2, 3, True, 34.0),
    ],
)
def test_pools_too_small_for_one_replica_are_left_out_of_the_items(
    accelerators: int, cheap_size: int, cheap_in_items: bool, bound: float
) -> None:
    index = build_index(_fleet(accelerators, cheap_size))
    dec = Decomposition(index, EXACT_COLUMN_LIMIT)
    cheap = int(np.flatnonzero(index.t_pool == 1)[0])
    model = dec.models[0]
    assert model is not None
    assert (cheap in np.concatenate(model.items).tolist()) == cheap_in_items
    lp = solve_master_lp(dec, 5.0)
    assert isinstance(lp, MasterLP)
    tie_break = 5 * accelerators * 1e-6
    assert lp.bound == pytest.approx(bound + tie_break, abs=1e-6)
    plan = solve_reference_milp(_fleet(accelerators, cheap_size), mip_rel_gap=1e-9)
    assert lp.bound <= plan.cost_per_hour + tie_break + 1e-6


@pytest.mark.parametrize("chunk", range(4))
def test_master_bound_rounding_and_closing_against_brute_force(chunk: int) -> None:
    checked = 0
    for seed in range(chunk, SEEDS, 4):
        problem = random_small_fleet(seed)
        found = _master(problem)
        best = brute_force(problem)
        full = all(u == 0 for u in best.unmet)
        if found is None:
            # An infeasible LP means some model cannot be fully served.
            index = build_index(problem)
            assert not full or not Decomposition(index).active
            continue
        dec, lp = found
        # The brute force does not return its tie-break term (1e-6 per accelerator); every pool
        # full bounds it from above, which keeps the comparison one-sided and valid.
        most = 1e-6 * sum(p.accelerators for p in problem.pools)
        optimum = best.cost + best.churn + most
        if not full:
            continue
        # The bound never exceeds the optimum (cost with tie-break, churn ignored is <= it).
        assert lp.bound <= optimum + 1e-7
        upper = round_master(dec, lp, time.perf_counter() + 5.0)
        if upper is None:
            continue
        info = SolverInfo("test", 0.0, 0.0)
        rounded = score_of(problem, build_plan(dec.index, upper, info))
        assert rounded.unmet == pytest.approx(best.unmet, abs=1e-6)
        assert objective(dec.index, upper) >= lp.bound - 1e-7
        if problem.churn_cost_per_replica == 0:
            closed = close_gap(dec, lp, upper, 5.0)
            assert closed is not None
            plan = build_plan(dec.index, closed.replicas, info)
            got = score_of(problem, plan)
            assert got.cost == pytest.approx(best.cost, abs=1e-4)
            assert closed.bound <= objective(dec.index, closed.replicas) + 1e-9
            assert closed.bound >= objective(dec.index, closed.replicas) - 1e-6
            checked += 1
    assert checked >= 8, "too few fully served churn-free fleets to mean anything"


@PROPERTY
@given(seeds)
def test_master_bound_never_above_highs_optimum(seed: int) -> None:
    problem = mid_fleet(seed, models=10, pools=5)
    found = _master(problem)
    reference = solve_reference_milp(problem, mip_rel_gap=1e-9)
    if found is None or any(m.unmet_rps > 0 for m in reference.models):
        return
    _, lp = found
    accelerators = sum(p.accelerators for p in reference.placements)
    assert lp.bound <= reference.cost_per_hour + 1e-6 * accelerators + 1e-7


@PROPERTY
@given(seeds)
def test_simple_pricing_reaches_the_same_lp_bound(seed: int) -> None:
    # Dantzig pricing without scaling (small fleets) may stop at another optimal vertex, but
    # the LP value, and so the bound recomputed at its prices, is the same.
    index = build_index(mid_fleet(seed, models=10, pools=5))
    dec = Decomposition(index, EXACT_COLUMN_LIMIT)
    if not dec.active:
        return
    plain = solve_master_lp(dec, 5.0, presolve=False)
    simple = solve_master_lp(dec, 5.0, presolve=False, simple_pricing=True)
    assert isinstance(plain, MasterLP) == isinstance(simple, MasterLP)
    if not isinstance(plain, MasterLP) or not isinstance(simple, MasterLP):
        assert plain == simple
        return
    assert simple.bound == pytest.approx(plain.bound, rel=1e-7, abs=1e-7)
    assert np.allclose(np.add.reduceat(simple.y, dec.col_start[:-1]), 1.0, atol=1e-7)
    assert simple.replicas.min() >= -1e-9


def _with_unplaceable(min_replicas: int) -> PlanProblem:
    # m0 has no pool of its type (NoMatchingPool) but asks for replicas; m1 needs 2 x 10 rps.
    lost = ModelRequest(
        key=("ns", "m0"),
        demand_rps=5.0,
        target_utilization=1.0,
        min_replicas=min_replicas,
        variants=(VariantOption("v", "other", 1, 10.0),),
    )
    served = ModelRequest(
        key=("ns", "m1"),
        demand_rps=20.0,
        target_utilization=1.0,
        variants=(VariantOption("v", TYPE, 1, 10.0),),
    )
    return PlanProblem(models=(lost, served), pools=(PoolSupply("p", TYPE, 4, 1.0),))


@pytest.mark.parametrize(
    ("min_replicas", "replicas", "expected"),
    [(1, 2, True), (0, 2, True), (1, 1, False), (1, 5, False)],
)
def test_serves_everyone_ignores_models_no_pool_can_hold(
    min_replicas: int, replicas: int, expected: bool
) -> None:
    # 2 replicas meet m1's 20 rps; 1 does not; 5 overfill the 4-accelerator pool. m0's unmet
    # demand and minimum never count: no plan could serve it.
    index = build_index(_with_unplaceable(min_replicas))
    assert index.n_triples == 1
    plan = np.array([replicas], dtype=np.int64)
    assert _serves_everyone(index, plan) is expected


def test_close_gap_guesses_below_and_above_the_optimum() -> None:
    # Small fleets whose optimum lies above the LP bound: a guessed gap below the optimum
    # (restricted program infeasible, the bound rises, the next gap is tried) and one above it
    # (its optimum is the optimum) must give the optimum of the whole closing program, which
    # must match HiGHS on the full program; the bound stays valid throughout.
    info = SolverInfo("test", 0.0, 0.0)
    both = below = 0
    for seed in range(400):
        problem = mid_fleet(seed, models=8, pools=3)
        found = _master(problem)
        if found is None or found[0].inexact:
            continue
        dec, lp = found
        upper = round_master(dec, lp, time.perf_counter() + 5.0)
        if upper is None or not _serves_everyone(dec.index, upper):
            continue
        # Guesses are relative to the bound the program is fixed at: the LP's (no pool cuts).
        whole = close_gap(dec, lp, upper, 5.0, guesses=(), small_gap_guess=0.0, cuts=False)
        assert whole is not None
        optimum = objective(dec.index, whole.replicas)
        share = (optimum - lp.bound) / abs(lp.bound)
        if share < 1e-6:
            continue
        reference = solve_reference_milp(problem, mip_rel_gap=1e-9)
        plan = build_plan(dec.index, whole.replicas, info)
        assert plan.cost_per_hour == pytest.approx(reference.cost_per_hour, abs=1e-4)
        tried = 1.2 * share * abs(lp.bound) < 0.8 * (objective(dec.index, upper) - lp.bound)
        both += tried
        for guesses in [(0.5 * share,), (0.5 * share, 1.2 * share), (1.2 * share,)]:
            closed = close_gap(dec, lp, upper, 5.0, guesses=guesses, cuts=False)
            assert closed is not None
            value = objective(dec.index, closed.replicas)
            assert value == pytest.approx(optimum, abs=1e-6)
            assert value - 1e-6 <= closed.bound <= value + 1e-9
        # No fixed guess fits: a share of the whole gap is guessed instead, below the optimum
        # (0.05 of the gap when the optimum is higher), or above it.
        in_hand = objective(dec.index, upper) - lp.bound
        below += 0.05 * in_hand < optimum - lp.bound
        for small_gap_guess in (0.05, 0.25, 0.9):
            closed = close_gap(
                dec, lp, upper, 5.0, guesses=(), small_gap_guess=small_gap_guess, cuts=False
            )
            assert closed is not None
            value = objective(dec.index, closed.replicas)
            assert value == pytest.approx(optimum, abs=1e-6)
            assert value - 1e-6 <= closed.bound <= value + 1e-9
    assert both >= 2, "too few fleets where both guesses are tried to mean anything"
    assert below >= 2, "too few fleets where the small-gap guess fails to mean anything"


@pytest.mark.parametrize(("column_limit", "direct_columns"), [(EXACT_COLUMN_LIMIT, 0), (3, 256)])
def test_close_gap_over_triples_matches_highs(column_limit: int, direct_columns: int) -> None:
    # The closing program with models written over their triples instead of their columns:
    # every model (direct_columns=0), or those whose columns were truncated by a tiny column
    # limit (their share of the bound relaxed, their triples fixed on price differences only).
    # Either way the plan must be HiGHS's optimum on the full program and the bound valid.
    info = SolverInfo("test", 0.0, 0.0)
    closed_some = truncated = 0
    for seed in range(220):
        problem = mid_fleet(seed, models=8, pools=3)
        index = build_index(problem)
        dec = Decomposition(index, column_limit)
        if not dec.active:
            continue
        lp = solve_master_lp(dec, 5.0)
        if not isinstance(lp, MasterLP):
            continue
        upper = round_master(dec, lp, time.perf_counter() + 5.0)
        if upper is None or not _serves_everyone(index, upper):
            continue
        value = objective(index, upper)
        if value - lp.bound <= 1e-9 * (1 + abs(value)):
            continue
        closed = close_gap(dec, lp, upper, 5.0, direct_columns=direct_columns)
        assert closed is not None
        assert _serves_everyone(index, closed.replicas)
        reference = solve_reference_milp(problem, mip_rel_gap=1e-9)
        plan = build_plan(index, closed.replicas, info)
        assert plan.cost_per_hour == pytest.approx(reference.cost_per_hour, abs=1e-4)
        found = objective(index, closed.replicas)
        assert found - 1e-6 <= closed.bound <= found + 1e-9
        closed_some += 1
        truncated += bool(dec.inexact)
    assert closed_some >= 10, "too few fleets needed closing to mean anything"
    if column_limit < EXACT_COLUMN_LIMIT:
        assert truncated >= 5, "too few fleets had truncated columns to mean anything"


def test_plan_in_hand_as_the_closing_programs_first_solution() -> None:
    # The last closing program starts from the plan in hand: `_start` must write it over the
    # program's variables (its replicas, and every model written over columns on the one
    # column of its item counts), or give None when the plan uses a dropped triple.
    checked = 0
    for seed in range(120):
        problem = mid_fleet(seed, models=8, pools=3)
        found = _master(problem)
        if found is None or found[0].inexact:
            continue
        dec, lp = found
        index = dec.index
        upper = round_master(dec, lp, time.perf_counter() + 5.0)
        if upper is None or not _serves_everyone(index, upper):
            continue
        whole = objective(index, upper) - lp.bound
        if whole <= 1e-9:
            continue
        col_reduced, triple_reduced = _reduced_costs(dec, lp.prices)
        gap = whole + 1e-9 * (1 + objective(index, upper))
        col_keep = col_reduced < gap
        written = _direct_models(dec, col_keep, 256)
        triple_keep = _drop_interchangeable(
            dec, triple_reduced < gap, col_keep, np.zeros(len(dec.active), dtype=bool)
        )
        col_keep &= ~written[dec.col_model]
        keep = np.concatenate([triple_keep, col_keep])
        start = _start(dec, upper, triple_keep, col_keep, written, keep)
        assert start is not None
        x = np.zeros(len(keep))
        x[keep] = start
        assert np.array_equal(x[: index.n_triples], upper)
        chosen = x[index.n_triples :]
        assert np.array_equal(
            np.add.reduceat(chosen, dec.col_start[:-1]), (~written).astype(np.float64)
        )
        for pos in np.flatnonzero(~written).tolist():
            first, last = int(dec.col_start[pos]), int(dec.col_start[pos + 1])
            column = first + int(np.flatnonzero(chosen[first:last])[0])
            items = dec.col_items[column]
            for item, count in zip(items.tolist(), dec.col_counts[column].tolist(), strict=True):
                if item < dec.n_items:
                    assert upper[dec.item_triples[item][dec.item_mask[item]]].sum() == count
        # A plan on a triple the program dropped cannot start it.
        used = int(np.flatnonzero(upper)[0])
        fewer = triple_keep.copy()
        fewer[used] = False
        keep_fewer = np.concatenate([fewer, col_keep])
        assert _start(dec, upper, fewer, col_keep, written, keep_fewer) is None
        checked += 1
    assert checked >= 5, "too few fleets needed closing to mean anything"
