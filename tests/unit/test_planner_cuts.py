"""Pool cuts (`infleet.core.pool_cuts`) and the closing step's bound they tighten: cut
coefficients by hand, validity on every integer point, and closing against HiGHS on small
fleets whose cheap pools are too tight for whole multi-accelerator replicas."""

from __future__ import annotations

import dataclasses
import itertools
import random
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_planner_exhaustive import PROPERTY
from test_planner_master import _master

from infleet.core.decompose import objective
from infleet.core.master import _cut_prices, _program, close_gap, round_master
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
from infleet.core.pool_cuts import mir_coefficients, violated_pool_cuts


@pytest.mark.parametrize(
    ("accelerators", "capacity", "divisor", "coef", "rhs"),
    [
        # 47 accelerators hold five 8-accelerator replicas: 47/8 = 5.875 rounds to 5; a
        # 4-accelerator replica (0.5 < 0.875) counts 0.
        ([8, 4, 2, 1], 47, 8, [1.0, 0.0, 0.0, 0.0], 5),
        # 51 / 4 = 12.75: an 8 counts 2, a 4 counts 1, a 2 (0.5 < 0.75) 0.
        ([8, 4, 2], 51, 4, [2.0, 1.0, 0.0], 12),
        # 7 / 3: rhs 2, f = 1/3; a 2 is 2/3: (2/3 - 1/3) / (2/3) = 0.5; a 4 is 1 + 1/3, and
        # 1/3 is not above f: 1.
        ([2, 4], 7, 3, [0.5, 1.0], 2),
        # Divisible capacity: the row divided by d, nothing rounded.
        ([8, 4, 2], 48, 8, [1.0, 0.5, 0.25], 6),
    ],
)
def test_mir_coefficients_by_hand(
    accelerators: list[int], capacity: int, divisor: int, coef: list[float], rhs: int
) -> None:
    got, right = mir_coefficients(np.asarray(accelerators, dtype=np.int64), capacity, divisor)
    assert right == rhs
    assert got == pytest.approx(coef)


@PROPERTY
@given(
    st.lists(st.integers(1, 8), min_size=1, max_size=3),
    st.integers(0, 25),
    st.integers(2, 8),
)
def test_mir_cut_holds_on_every_integer_point(
    accelerators: list[int], capacity: int, divisor: int
) -> None:
    acc = np.asarray(accelerators, dtype=np.int64)
    coef, rhs = mir_coefficients(acc, capacity, divisor)
    ranges = [range(capacity // a + 1) for a in accelerators]
    for point in itertools.product(*ranges):
        n = np.asarray(point, dtype=np.float64)
        if n @ acc <= capacity:
            assert coef @ n <= rhs + 1e-9, (point, coef, rhs)


def test_violated_pool_cuts_finds_the_packing_cut_and_nothing_on_whole_replicas() -> None:
    # Pool 0 (47 accelerators) holds 5.5 eight-accelerator replicas in the LP; pool 1 (16)
    # holds two whole ones; pool 2 (24) 2.5 of them, which three whole ones would cover.
    t_pool = np.array([0, 0, 1, 2], dtype=np.int64)
    t_acc = np.array([8, 8, 8, 8], dtype=np.int64)
    caps = np.array([47, 16, 24], dtype=np.int64)
    cuts = violated_pool_cuts(t_pool, t_acc, caps, np.array([3.0, 2.5, 2.0, 2.5]))
    assert cuts.pool.tolist() == [0]
    assert cuts.rhs.tolist() == [5.0]
    assert cuts.coef.tolist() == [[1.0, 1.0, 0.0, 0.0]]
    whole = violated_pool_cuts(t_pool, t_acc, caps, np.array([3.0, 2.0, 2.0, 2.0]))
    assert len(whole.rhs) == 0
    assert whole.coef.shape == (0, 4)


def tight_fleet(seed: int, models: int = 6, pools: int = 3) -> PlanProblem:
    """Cheap pools of 3-30 accelerators, a dear overflow pool; replicas of 2, 4 or 8."""
    rng = random.Random(seed)
    supplies = [
        PoolSupply(f"p{i}", "gpu", rng.randint(3, 30), round(rng.uniform(1.0, 3.0), 2))
        for i in range(pools)
    ]
    supplies.append(PoolSupply("overflow", "gpu", 400, 5.0))
    requests = tuple(
        ModelRequest(
            ("ns", f"m{i}"),
            round(rng.uniform(1, 30), 2),
            1.0,
            variants=tuple(
                VariantOption(f"v{v}", "gpu", rng.choice([2, 4, 8]), round(rng.uniform(2, 12), 2))
                for v in range(rng.randint(1, 2))
            ),
        )
        for i in range(models)
    )
    return PlanProblem(requests, tuple(supplies))


def test_cut_bound_is_valid_and_closing_with_it_matches_highs() -> None:
    info = SolverInfo("test", 0.0, 0.0)
    tightened = closed_some = 0
    for seed in range(60):
        problem = tight_fleet(seed)
        found = _master(problem)
        if found is None or found[0].inexact:
            continue
        dec, lp = found
        reference = solve_reference_milp(problem, mip_rel_gap=1e-9)
        if any(m.unmet_rps > 0 for m in reference.models):
            continue
        accelerators = sum(p.accelerators for p in reference.placements)
        optimum = reference.cost_per_hour + 1e-6 * accelerators
        cut = _cut_prices(dec, _program(dec), lp, 5.0)
        if cut is not None:
            # Never below the LP bound by more than noise, never above the optimum.
            assert cut[0] >= lp.bound - 1e-7
            assert cut[0] <= optimum + 1e-7
            tightened += cut[0] > lp.bound + 1e-6
            # From the master's basis or from scratch: the same LP, the same bound.
            cold = _cut_prices(dec, _program(dec), dataclasses.replace(lp, answer=None), 5.0)
            assert cold is not None
            assert cold[0] == pytest.approx(cut[0], rel=1e-7, abs=1e-7)
        upper = round_master(dec, lp, time.perf_counter() + 5.0)
        if upper is None or not _serves_everyone(dec.index, upper):
            continue
        value = objective(dec.index, upper)
        if value - lp.bound <= 1e-9 * (1 + abs(value)):
            continue
        results = [close_gap(dec, lp, upper, 5.0, cuts=c) for c in (True, False)]
        for closed in results:
            assert closed is not None
            plan = build_plan(dec.index, closed.replicas, info)
            assert plan.cost_per_hour == pytest.approx(reference.cost_per_hour, abs=1e-4)
            got = objective(dec.index, closed.replicas)
            assert got - 1e-6 <= closed.bound <= got + 1e-9
        closed_some += 1
    assert tightened >= 10, "too few fleets where the cuts raise the bound to mean anything"
    assert closed_some >= 10, "too few fleets needed closing to mean anything"
