"""The speed-ups of the planner checked on their own: knapsack repacking and re-planning of a
rounded plan (by hand), the plain-Python column walk against the vectorised one, and the direct
HiGHS calls against SciPy's public functions."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog
from scipy.sparse import csc_matrix
from test_planner_exhaustive import random_small_fleet

from infleet.core import decompose
from infleet.core.decompose import EXACT_COLUMN_LIMIT, Decomposition, objective
from infleet.core.master import MasterLP, _program, solve_master_lp
from infleet.core.plan_index import build_index
from infleet.core.planner import ModelRequest, PlanProblem, PoolSupply, VariantOption
from infleet.core.planner_highs import solve_lp, solve_mip
from infleet.core.planner_polish import _knapsack, polish, refill

TYPE = "gpu"


@pytest.mark.parametrize(
    ("capacity", "weights", "values", "counts", "best", "chosen"),
    [
        # 1 four-unit item (value 8) beats three one-unit items (value 2 each) in 4 units.
        (4, [4, 1], [8.0, 2.0], [1, 3], 8.0, [1, 0]),
        # ... but in 7 units both fit: 8 + 3 * 2.
        (7, [4, 1], [8.0, 2.0], [1, 3], 14.0, [1, 3]),
        # Bounded: only 2 copies of the best item exist (2 * 9 + 2 * 5 in 6 + 4 units).
        (10, [3, 2], [9.0, 5.0], [2, 5], 28.0, [2, 2]),
        # Nothing fits.
        (1, [2], [5.0], [3], 0.0, [0]),
    ],
)
def test_knapsack_by_hand(
    capacity: int,
    weights: list[int],
    values: list[float],
    counts: list[int],
    best: float,
    chosen: list[int],
) -> None:
    value, taken = _knapsack(capacity, weights, values, counts)
    assert value == pytest.approx(best)
    assert taken == chosen
    assert sum(w * k for w, k in zip(weights, taken, strict=True)) <= capacity


def _two_models() -> PlanProblem:
    # Model "small": 3 one-accelerator replicas (10 rps each, 30 rps needed). Model "big": one
    # four-accelerator replica (40 rps). Pool "cheap" ($1) has 4 accelerators, "dear" ($3) 100.
    small = ModelRequest(("ns", "small"), 30.0, 1.0, variants=(VariantOption("v", TYPE, 1, 10.0),))
    big = ModelRequest(("ns", "big"), 40.0, 1.0, variants=(VariantOption("v", TYPE, 4, 40.0),))
    pools = (PoolSupply("dear", TYPE, 100, 3.0), PoolSupply("cheap", TYPE, 4, 1.0))
    return PlanProblem((small, big), pools)


def _triple(index_pool: np.ndarray, index_model: np.ndarray, model: int, pool: int) -> int:
    return int(np.flatnonzero((index_model == model) & (index_pool == pool))[0])


def test_refill_swaps_a_big_replica_in_and_small_ones_out() -> None:
    index = build_index(_two_models())
    dec = Decomposition(index)
    replicas = np.zeros(index.n_triples, dtype=np.int64)
    # Rounded plan: the small model fills 3 of the 4 cheap accelerators, the big one pays $3.
    replicas[_triple(index.t_pool, index.t_model, 0, 1)] = 3
    replicas[_triple(index.t_pool, index.t_model, 1, 0)] = 1
    assert objective(index, replicas) == pytest.approx(3 * 1 + 4 * 3, abs=1e-4)
    assert refill(dec, replicas)
    # The big replica saves 4 * $2 on the cheap pool; the three small ones lose 3 * $2 there.
    assert replicas[_triple(index.t_pool, index.t_model, 1, 1)] == 1
    assert replicas[_triple(index.t_pool, index.t_model, 0, 0)] == 3
    assert objective(index, replicas) == pytest.approx(4 * 1 + 3 * 3, abs=1e-4)
    # Nothing more to gain.
    assert not refill(dec, replicas)


def test_polish_switches_a_model_to_the_variant_that_fits_free_room() -> None:
    # One model, 20 rps: either 2 replicas of "a" (1 accelerator, 10 rps) on a-pools, or one of
    # "b" (2 accelerators, 20 rps) on the b-pool. "b" on its reserved pool costs nothing.
    model = ModelRequest(
        ("ns", "m"),
        20.0,
        1.0,
        variants=(VariantOption("a", "type-a", 1, 10.0), VariantOption("b", "type-b", 2, 20.0)),
    )
    pools = (
        PoolSupply("a-pool", "type-a", 10, 2.0),
        PoolSupply("b-reserved", "type-b", 2, 5.0, "reserved"),
    )
    index = build_index(PlanProblem((model,), pools))
    dec = Decomposition(index)
    replicas = np.zeros(index.n_triples, dtype=np.int64)
    replicas[_triple(index.t_pool, index.t_model, 0, 0)] = 2
    assert polish(dec, replicas, time.perf_counter() + 5.0)
    assert replicas[_triple(index.t_pool, index.t_model, 0, 0)] == 0
    assert replicas[_triple(index.t_pool, index.t_model, 0, 1)] == 1
    # Reserved capacity is free: only the tie-break (1e-6 per accelerator) is left.
    assert objective(index, replicas) == pytest.approx(2e-6)


@settings(max_examples=300, deadline=None)
@given(
    capacity=st.lists(
        st.one_of(st.integers(1, 12).map(float), st.floats(0.5, 20.0)), min_size=2, max_size=5
    ),
    spot_bits=st.integers(0, 31),
    target=st.one_of(st.integers(0, 50).map(float), st.floats(0.0, 60.0)),
    low=st.integers(0, 3),
    high=st.sampled_from([3, 5, 10, 100]),
    fraction=st.sampled_from([1.0, 0.3, 0.5, 1 / 3]),
)
def test_small_grid_walk_matches_the_vectorised_one(
    capacity: list[float],
    spot_bits: int,
    target: float,
    low: int,
    high: int,
    fraction: float,
) -> None:
    spot = [bool(spot_bits >> i & 1) for i in range(len(capacity))]
    spot[0] = False
    low = min(low, high)
    caps = np.asarray(capacity, dtype=np.float64)
    preference = np.arange(len(capacity), dtype=np.float64)
    saved = decompose._SMALL_GRID
    try:
        decompose._SMALL_GRID = 10**9
        walked, walked_exact = decompose.enumerate_columns(
            caps, spot, target, low, high, fraction, preference, 4_000
        )
        decompose._SMALL_GRID = 0
        vectorised, vectorised_exact = decompose.enumerate_columns(
            caps, spot, target, low, high, fraction, preference, 4_000
        )
    finally:
        decompose._SMALL_GRID = saved
    assert walked_exact == vectorised_exact
    assert walked.tolist() == vectorised.tolist()


@pytest.mark.parametrize("seed", range(0, 60, 3))
def test_direct_lp_matches_linprog(seed: int) -> None:
    dec = Decomposition(build_index(random_small_fleet(seed)), EXACT_COLUMN_LIMIT)
    if not dec.active:
        return
    lp = solve_master_lp(dec, 5.0, presolve=False)
    program = _program(dec)
    public = linprog(
        program.cost,
        A_ub=program.a_pool,
        b_ub=program.cap,
        A_eq=program.a_eq,
        b_eq=program.b_eq,
        bounds=(0, None),
        method="highs",
    )
    if public.status == 2:
        assert lp == "infeasible"
        return
    assert isinstance(lp, MasterLP)
    assert float(program.cost @ np.concatenate([lp.replicas, lp.y])) == pytest.approx(
        public.fun, abs=1e-7
    )


def test_direct_mip_by_hand() -> None:
    # min x0 + 2 x1 with x0 + x1 >= 3, x0 <= 2 (integers): x0 = 2, x1 = 1, cost 4.
    matrix = csc_matrix(np.array([[1.0, 1.0]]))
    found = solve_mip(
        np.array([1.0, 2.0]),
        matrix,
        np.array([3.0]),
        np.array([np.inf]),
        np.array([2.0, np.inf]),
        time_limit_seconds=5.0,
        mip_rel_gap=1e-9,
    )
    assert found is not None
    assert found.status == "optimal"
    assert found.x is not None
    assert found.x.tolist() == pytest.approx([2.0, 1.0])
    # Capped at cost 3.5 it has no solution.
    capped = solve_mip(
        np.array([1.0, 2.0]),
        csc_matrix(np.array([[1.0, 1.0], [1.0, 2.0]])),
        np.array([3.0, -np.inf]),
        np.array([np.inf, 3.5]),
        np.array([2.0, np.inf]),
        time_limit_seconds=5.0,
        mip_rel_gap=1e-9,
    )
    assert capped is not None
    assert capped.status == "infeasible"
    assert capped.x is None


def test_direct_lp_by_hand() -> None:
    # min x0 + 3 x1 with x0 + x1 = 2, x0 <= 1: x0 = 1, x1 = 1; the dual of the x0 row is 2.
    matrix = csc_matrix(np.array([[1.0, 1.0], [1.0, 0.0]]))
    found = solve_lp(
        np.array([1.0, 3.0]),
        matrix,
        np.array([2.0, -np.inf]),
        np.array([2.0, 1.0]),
        time_limit_seconds=5.0,
        presolve=False,
    )
    assert found is not None
    assert found.status == "optimal"
    assert found.x.tolist() == pytest.approx([1.0, 1.0])
    assert found.row_dual.tolist() == pytest.approx([3.0, -2.0])


@settings(max_examples=300, deadline=None)
@given(
    capacity=st.lists(
        st.one_of(st.integers(1, 12).map(float), st.floats(0.5, 20.0)), min_size=2, max_size=6
    ),
    spot_bits=st.integers(0, 63),
    target=st.one_of(st.integers(0, 60).map(float), st.floats(0.0, 80.0)),
    low=st.integers(0, 4),
    high=st.sampled_from([3, 5, 10, 100]),
    fraction=st.sampled_from([1.0, 0.3, 0.5, 1 / 3, 0.9]),
)
def test_pruned_walk_matches_the_vectorised_one(
    capacity: list[float],
    spot_bits: int,
    target: float,
    low: int,
    high: int,
    fraction: float,
) -> None:
    # Depth-first with pruning (every grid) against the full vectorised grid: same columns in
    # the same order whenever the pruned walk finishes within its node budget.
    spot = [bool(spot_bits >> i & 1) for i in range(len(capacity))]
    spot[0] = False
    low = min(low, high)
    caps = np.asarray(capacity, dtype=np.float64)
    preference = np.arange(len(capacity), dtype=np.float64)
    saved = decompose._SMALL_GRID, decompose._PRUNED_GRID
    try:
        decompose._SMALL_GRID, decompose._PRUNED_GRID = 0, 0
        pruned, pruned_exact = decompose.enumerate_columns(
            caps, spot, target, low, high, fraction, preference, 100_000
        )
        decompose._PRUNED_GRID = 10**12
        vectorised, vectorised_exact = decompose.enumerate_columns(
            caps, spot, target, low, high, fraction, preference, 100_000
        )
    finally:
        decompose._SMALL_GRID, decompose._PRUNED_GRID = saved
    # A grid over the limit is truncated by the vectorised walk: nothing to compare against.
    assume(vectorised_exact)
    assert pruned_exact
    assert pruned.tolist() == vectorised.tolist()
