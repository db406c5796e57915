"""The decomposition's master program: one LP for the best pool prices, rounding, exact closing.

Over the minimal columns of `infleet.core.decompose`, the master program chooses one column per
model (``y[col]`` in {0, 1}, one per model) and splits each item's replicas over its pools
(``n[triple]`` integer, summing to the column's count of that item), within pool capacity. Its
LP relaxation is the Dantzig-Wolfe master: its value equals the best Lagrangian bound, and its
pool-row duals are the optimal pool prices, in one HiGHS solve instead of hundreds of subgradient
steps. The LP is very tight on these fleets (most models come out integral), so:

* the bound used is the Lagrangian value ``L(lambda)`` recomputed exactly at the LP's prices
  (valid for any non-negative prices, so HiGHS's dual tolerances cannot make it wrong);
* a plan comes from rounding: models the LP placed integrally keep their placement, the others
  are re-placed one at a time against the capacity left, at real prices, then improved;
* when a gap remains, *reduced-cost fixing* shrinks the integer master: a plan cheaper than the
  one in hand needs the sum over models of ``cost_lambda(choice) - best_lambda(model)`` to stay
  below the gap, so any column or pool whose reduced cost alone reaches the gap is dropped, and
  HiGHS solves what is left exactly, built from the surviving variables only and with a cutoff
  row at the plan in hand, from which it starts (its optimum is the optimum); smaller guessed
  gaps are tried first (see `close_gap`);
* before that, the LP is re-solved (from its basis) with the pool cuts its plan breaks
  (`infleet.core.pool_cuts`: a tight pool holds fewer whole 8-accelerator replicas than the LP
  splits onto it), and the bound and the fixing use its prices when they are tighter.

The integer master is exact when no churn cost applies (an optimum never holds a removable
replica, so it is a minimal column) and every model's columns were fully enumerated.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, linprog, milp
from scipy.sparse import csc_matrix, csr_matrix, vstack

from infleet.core.decompose import Decomposition, objective
from infleet.core.greedy import improve, place_model
from infleet.core.plan_index import (
    RPS_TOLERANCE,
    TIE_BREAK_PER_ACCELERATOR_HOUR,
    BoolArray,
    FloatArray,
    IntArray,
)
from infleet.core.planner_highs import LpAnswer, resolve_with_rows, solve_lp, solve_mip
from infleet.core.pool_cuts import violated_pool_cuts
from infleet.core.repair import fill_cheaper_pools

_INTEGRAL = 1e-6
"""LP values this close to an integer count as integral when rounding."""

_LP_INFEASIBLE = 2
_MILP_INFEASIBLE = 2

_DIRECT_COLUMNS = 256
"""Models with more columns than this left in a closing program are written over their
triples instead (see `_restricted`)."""

_DIRECT_PER_TRIPLE = 8
"""...or more than this many per eligible triple of the model (4 lost 100x10 seed 15's
columns' bound, 1,000 kept seed 28 at 139 ms instead of 99)."""

_FIX_MARGIN = 1e-9
"""Relative margin on reduced-cost fixing, so float noise never drops a useful column."""


@dataclass(frozen=True)
class MasterLP:
    """LP relaxation of the master: its solution, pool prices, and the bound they prove."""

    replicas: FloatArray
    """LP replicas per eligible triple."""
    y: FloatArray
    """LP weight per column (global column index of the `Decomposition`)."""
    prices: FloatArray
    """Pool prices (LP duals of the pool rows, clipped at 0)."""
    bound: float
    """Lagrangian value at ``prices``: a proven lower bound on the cost."""
    answer: LpAnswer | None = None
    """HiGHS's answer with its solver (None through `linprog`), which `close_gap` re-solves
    with pool cuts from its optimal basis."""


@dataclass(frozen=True)
class _Program:
    cost: FloatArray
    a_eq: csr_matrix
    b_eq: FloatArray
    a_pool: csr_matrix
    cap: FloatArray


def _program(dec: Decomposition) -> _Program:
    """Rows: item balance (sum of its triples - column counts = 0), one column per model, pools."""
    index = dec.index
    nt, ncol = index.n_triples, len(dec.col_model)
    item_rows, pos = np.nonzero(dec.item_mask)
    item_cols = dec.item_triples[item_rows, pos]
    col_rows, slot = np.nonzero((dec.col_items < dec.n_items) & (dec.col_counts > 0))
    rows = np.concatenate([item_rows, dec.col_items[col_rows, slot], dec.n_items + dec.col_model])
    cols = np.concatenate([item_cols, nt + col_rows, nt + np.arange(ncol)])
    vals = np.concatenate(
        [
            np.ones(len(item_rows)),
            -dec.col_counts[col_rows, slot].astype(np.float64),
            np.ones(ncol),
        ]
    )
    n_eq = dec.n_items + len(dec.active)
    a_eq = csr_matrix((vals, (rows, cols)), shape=(n_eq, nt + ncol))
    b_eq = np.concatenate([np.zeros(dec.n_items), np.ones(len(dec.active))])
    n_pools = len(index.pool_accelerators)
    a_pool = csr_matrix(
        (index.t_accelerators.astype(np.float64), (index.t_pool, np.arange(nt))),
        shape=(n_pools, nt + ncol),
    )
    cost = np.concatenate(
        [index.t_accelerators * (index.t_price + TIE_BREAK_PER_ACCELERATOR_HOUR), np.zeros(ncol)]
    )
    return _Program(cost, a_eq, b_eq, a_pool, index.pool_accelerators.astype(np.float64))


def solve_master_lp(
    dec: Decomposition,
    time_limit_seconds: float,
    *,
    presolve: bool = True,
    simple_pricing: bool = False,
) -> MasterLP | str:
    """Solve the LP relaxation; ``"infeasible"`` (shortage) or ``"failed"`` (time, numerics).

    ``presolve=False`` saves ~30% at 100 models and 0-25% at 1,000 (measured through the direct
    binding; through `linprog` the large LP once needed presolve to finish in time).
    ``simple_pricing`` (see `infleet.core.planner_highs.solve_lp`) is for small fleets.
    """
    program = _program(dec)
    nt = dec.index.n_triples
    direct = _solve_program(
        program, time_limit_seconds, presolve=presolve, simple_pricing=simple_pricing
    )
    if direct is not None:
        if direct.status != "optimal":
            return direct.status
        x = direct.x
        marginals = direct.row_dual[len(program.b_eq) :]
    else:
        result = linprog(
            program.cost,
            A_ub=program.a_pool,
            b_ub=program.cap,
            A_eq=program.a_eq,
            b_eq=program.b_eq,
            bounds=(0, None),
            method="highs",
            # Any optimal dual will do: the bound is recomputed at the prices.
            options={"time_limit": max(time_limit_seconds, 0.01), "presolve": presolve},
        )
        if result.status == _LP_INFEASIBLE:
            return "infeasible"
        if result.status != 0 or result.x is None:
            return "failed"
        x = np.asarray(result.x, dtype=np.float64)
        marginals = np.asarray(result.ineqlin.marginals, dtype=np.float64)
    prices = np.maximum(0.0, -marginals)
    bound = dec.lagrangian(prices)[0]
    return MasterLP(x[:nt], x[nt:], prices, bound, direct)


def round_master(dec: Decomposition, lp: MasterLP, deadline: float) -> IntArray | None:
    """A plan from the LP (None if some model cannot be placed).

    Models the LP placed integrally keep their placement. A model whose column is integral but
    whose replicas are split fractionally over pools (ties at the LP prices) keeps the whole
    replicas and places the rest of each item on the cheapest pools left, biggest replicas
    first. Models with a fractional column are re-placed from scratch against the capacity
    left; every touched model is then improved at real prices.
    """
    index = dec.index
    floors = np.floor(lp.replicas + _INTEGRAL)
    integral_col = (lp.y <= _INTEGRAL) | (lp.y >= 1 - _INTEGRAL)
    col_ok = np.logical_and.reduceat(integral_col, dec.col_start[:-1])
    replicas = np.zeros(index.n_triples, dtype=np.int64)
    redo: list[int] = []
    pending: list[tuple[int, int, int]] = []
    """(model position, item, replicas still to place)."""
    for pos, m in enumerate(dec.active):
        mc = dec.models[m]
        assert mc is not None
        if not col_ok[pos]:
            redo.append(pos)
            continue
        first, last = int(dec.col_start[pos]), int(dec.col_start[pos + 1])
        column = dec.col_counts[first + int(np.argmax(lp.y[first:last])), : len(mc.items)]
        for i, triples in enumerate(mc.items):
            whole = floors[triples].astype(np.int64)
            replicas[triples] = whole
            missing = int(column[i]) - int(whole.sum())
            if missing > 0:
                pending.append((pos, i, missing))
    rem = index.pool_accelerators - np.bincount(
        index.t_pool, weights=replicas * index.t_accelerators, minlength=len(index.pool_price)
    ).astype(np.int64)
    price = index.pool_price + TIE_BREAK_PER_ACCELERATOR_HOUR
    pending.sort(
        key=lambda e: (
            -int(index.priority[dec.active[e[0]]]),
            -int(dec.models[dec.active[e[0]]].accelerators[e[1]]),  # type: ignore[union-attr]
        )
    )
    touched = set(redo)
    whole_again = set(redo)
    for pos, i, missing in pending:
        if pos in whole_again:
            # Re-placed whole below. (Skipping every touched model here dropped a second
            # split item of one model: its replicas were never placed.)
            continue
        mc = dec.models[dec.active[pos]]
        assert mc is not None
        triples, a = mc.items[i], int(mc.accelerators[i])
        for j in triples[np.argsort(price[index.t_pool[triples]], kind="stable")].tolist():
            take = min(missing, max(0, int(rem[index.t_pool[j]]) // a))
            replicas[j] += take
            rem[index.t_pool[j]] -= take * a
            missing -= take
            if missing == 0:
                break
        touched.add(pos)
        if missing:
            redo.append(pos)
            whole_again.add(pos)
    placements: list[dict[int, int]] = []
    for m in dec.active:
        trip = index.triples_of(m)
        placements.append({j: int(replicas[j]) for j in trip if replicas[j]})
    for pos in redo:
        # Start over for this model: free what it holds, then place it whole.
        m = dec.active[pos]
        mc = dec.models[m]
        assert mc is not None
        for j, n in placements[pos].items():
            rem[index.t_pool[j]] += n * int(index.t_accelerators[j])
            replicas[j] = 0
        placed = place_model(index, mc, m, rem, price)
        if placed is None:
            return None
        for j, n in placed.items():
            replicas[j] = n
            rem[index.t_pool[j]] -= n * int(index.t_accelerators[j])
        placements[pos] = placed
    churn = index.problem.churn_cost_per_replica > 0
    if not churn:
        fill_cheaper_pools(dec, replicas, rem)
        placements = [
            {j: int(replicas[j]) for j in index.triples_of(m) if replicas[j]} for m in dec.active
        ]
    order = sorted(touched)
    for _ in range(3):
        if not order or time.perf_counter() >= deadline:
            break
        if not improve(dec, replicas, placements, order):
            break
    if not churn:
        rem = index.pool_accelerators - np.bincount(
            index.t_pool, weights=replicas * index.t_accelerators, minlength=len(index.pool_price)
        ).astype(np.int64)
        fill_cheaper_pools(dec, replicas, rem)
    return replicas


@dataclass(frozen=True)
class Closed:
    """Outcome of the exact closing step."""

    replicas: IntArray
    bound: float
    """Proven lower bound on the whole problem's cost."""


_GUESSES = (0.0015, 0.006, 0.015)
"""Gaps above the LP bound, relative to it, tried in turn by `close_gap` before the gap of the
plan in hand. On the bench's 100-model fleets (seeds 0-31) the optimum lies 0-0.15% above the
bound on 14 of the 17 that need closing (0.36%, 0.46% and 1.08% on the other three), while the
plan in hand is often 0.3-2.9% above it; the restricted programs are smaller and need no search
for a better plan, so HiGHS is 2-8x faster on them. The third guess halves seed 15's closing
CPU (108 -> 50 ms) and costs nothing measurable elsewhere; a floor row at a failed guess (the
bound it proves) made HiGHS slower (222 -> 278 ms on six fleets)."""

_SMALL_GAP_GUESS = 0.25
"""When no guess of `_GUESSES` is small enough for the gap in hand (it is below ~0.19%), this
share of it is guessed instead. Since the closing programs run without the feasibility jump
(a failed guess now costs ~3 ms of HiGHS, not ~7), it pays: 100x10 seed 20's closing 18.6 -> 4.1 ms
CPU (its optimum is 0.001% above the bound, the plan in hand 0.043%), 25 15.0 -> 13.4, while
seeds 3, 12 and 17 (plan in hand already optimal or nearly) take ~3 ms more each; half of the
gap saved less on 20 (10.1 ms), a tenth lost 3 ms on 26."""


def close_gap(
    dec: Decomposition,
    lp: MasterLP,
    upper: IntArray,
    time_limit_seconds: float,
    *,
    guesses: tuple[float, ...] = _GUESSES,
    direct_columns: int = _DIRECT_COLUMNS,
    small_gap_guess: float = _SMALL_GAP_GUESS,
    cuts: bool = True,
) -> Closed | None:
    """Solve the integer master restricted by reduced-cost fixing (None: HiGHS gave nothing).

    Only valid when the integer master is exact (no churn, every model's columns enumerated).

    A plan costing less than ``lp.bound + g`` uses only columns and triples whose reduced cost
    is below ``g``. So the MILP over those variables with a cutoff row at ``lp.bound + g`` is
    exact for every plan cheaper than that: its optimum, if it has one, is the optimum; if it is
    infeasible, ``lp.bound + g`` is a proven lower bound. The plan in hand gives
    ``g = plan - lp.bound``, which leaves the most variables; smaller guesses first give much
    smaller programs and are usually enough (the HiGHS time is mostly spent searching for a
    better plan, which a cutoff close to the optimum makes short). ``guesses`` are those gaps
    relative to the bound; one not below 80% of the whole gap is skipped, and if that leaves
    none, ``small_gap_guess`` times the whole gap is guessed (0: none). The last program
    (the whole gap) is handed the plan in hand as its first solution, its cutoff just above it.

    With ``cuts`` (and exact columns), the bound and reduced costs come from the master LP
    re-solved with the pool cuts its plan breaks when that bound is higher: 100x10 seed 28's
    bound rises from 0.46% to 0.12% below its optimum, so its 0.15% guess holds and the
    closing is one small program (CPU ~48 -> ~40 ms for the whole plan).
    """
    start = time.perf_counter()
    index = dec.index
    upper_value = objective(index, upper)
    margin = _FIX_MARGIN * (1 + abs(upper_value))
    program = _program(dec)
    base, prices, extra = lp.bound, lp.prices, None
    if cuts and not dec.inexact:
        tightened = _cut_prices(dec, program, lp, time_limit_seconds)
        if tightened is not None and tightened[0] > base:
            base, prices, extra = tightened
    whole = upper_value - base
    if whole <= margin:
        return Closed(upper, min(base, upper_value))
    col_reduced, triple_reduced = _reduced_costs(dec, prices, extra)
    stacked = _stack(program).tocsc()
    bound = base
    # With truncated columns the bound is relaxed (the examples fleet's optimum is 7% above
    # it), so small guesses only cost time.
    tried = [] if dec.inexact else [g * abs(base) for g in guesses]
    tried = [g for g in tried if g < 0.8 * whole]
    if not tried and not dec.inexact and small_gap_guess > 0:
        tried = [small_gap_guess * whole]
    for gap in (*tried, whole):
        final = gap == whole
        left = time_limit_seconds - (time.perf_counter() - start)
        if left <= 0:
            return Closed(upper, bound)
        # The last program starts from the plan in hand, so its cutoff lets that plan in
        # (HiGHS then searches from it: 100x10 seed 28's closing 61 -> 32 ms CPU).
        cutoff = upper_value + margin if final else base + gap
        outcome = _restricted(
            dec,
            program,
            stacked,
            triple_reduced,
            col_reduced,
            gap + margin,
            cutoff,
            left,
            direct_columns,
            upper if final else None,
        )
        if outcome is None:
            return None if bound == lp.bound else Closed(upper, bound)
        status, solution, dual_bound = outcome
        if solution is None:
            if status == "infeasible":
                if final:
                    # Nothing cheaper than the plan in hand exists: it is optimal.
                    return Closed(upper, upper_value)
                # Nothing costs less than the cutoff: a proven bound; try a wider gap.
                bound = max(bound, cutoff)
                continue
            return None if bound == lp.bound else Closed(upper, bound)
        replicas = np.rint(solution[: index.n_triples]).astype(np.int64)
        found = objective(index, replicas)
        dual = dual_bound if np.isfinite(dual_bound) and dual_bound != 0 else found
        if status != "optimal":
            dual = bound
        # Every plan cheaper than the cutoff lies in the restricted program.
        proven = max(bound, min(cutoff + margin, dual))
        if found < upper_value:
            return Closed(replicas, min(proven, found))
        return Closed(upper, min(proven, upper_value))
    return Closed(upper, bound)


def _cut_prices(
    dec: Decomposition, program: _Program, lp: MasterLP, time_limit_seconds: float
) -> tuple[float, FloatArray, FloatArray] | None:
    """The master LP again with the pool cuts its plan breaks (`infleet.core.pool_cuts`).

    Returns the Lagrangian bound at its duals (pool prices, and the cuts' duals as an extra
    price per accelerator and triple) and those prices; None if no cut is broken or HiGHS
    gives no optimum. The LP is re-solved from the master's optimal basis when HiGHS kept it.
    """
    index = dec.index
    found = violated_pool_cuts(
        index.t_pool, index.t_accelerators, index.pool_accelerators, lp.replicas
    )
    n_cuts = len(found.rhs)
    if n_cuts == 0:
        return None
    width = program.a_pool.shape[1]
    rows = csr_matrix(np.hstack([found.coef, np.zeros((n_cuts, width - index.n_triples))]))
    answer = None
    if lp.answer is not None:
        answer = resolve_with_rows(lp.answer, rows, found.rhs, time_limit_seconds)
    if answer is None:
        cut = _Program(
            program.cost,
            program.a_eq,
            program.b_eq,
            vstack([program.a_pool, rows]).tocsr(),
            np.concatenate([program.cap, found.rhs]),
        )
        answer = _solve_program(cut, time_limit_seconds, presolve=False, simple_pricing=True)
    if answer is None or answer.status != "optimal":
        return None
    duals = np.maximum(0.0, -answer.row_dual[len(program.b_eq) :])
    n_pools = len(program.cap)
    prices, weights = duals[:n_pools], duals[n_pools:]
    # Any multipliers >= 0 give a valid bound: every integer plan obeys the cut rows.
    extra = (weights @ found.coef) / index.t_accelerators
    item_cost, _ = dec.price_items(prices, extra)
    mins, _ = dec.best_columns(item_cost)
    bound = dec.bound_from(prices, item_cost, mins) - float(weights @ found.rhs)
    return bound, prices, extra


def _reduced_costs(
    dec: Decomposition, prices: FloatArray, extra: FloatArray | None = None
) -> tuple[FloatArray, FloatArray]:
    """Reduced cost at the pool prices (and ``extra`` per accelerator and triple, from pool
    cuts) of every column and every triple (inf: not eligible)."""
    index = dec.index
    item_cost, _ = dec.price_items(prices, extra)
    best, _ = dec.best_columns(item_cost)
    padded = np.append(item_cost, 0.0)
    col_cost = (dec.col_counts * padded[dec.col_items]).sum(axis=1)
    col_reduced: FloatArray = col_cost - best[dec.col_model]
    # Cheapest reduced cost of a column that uses each item.
    uses = (dec.col_items < dec.n_items) & (dec.col_counts > 0)
    item_reduced = np.full(dec.n_items + 1, np.inf)
    np.minimum.at(
        item_reduced, dec.col_items[uses], np.broadcast_to(col_reduced[:, None], uses.shape)[uses]
    )
    # A model whose columns were truncated has its share of the bound relaxed (below its
    # cheapest column at the prices), so only the pool price difference is a reduced cost.
    item_reduced[:-1][_inexact_mask(dec)[dec.item_pos]] = 0.0
    # A replica on a triple dearer (at the prices) than its item's cheapest pool costs the
    # difference on top of the cheapest column using the item.
    safe = np.maximum(dec.item_triples, 0)
    per_acc = index.t_price[safe] + TIE_BREAK_PER_ACCELERATOR_HOUR + prices[index.t_pool[safe]]
    if extra is not None:
        per_acc = per_acc + extra[safe]
    cheapest = np.where(dec.item_mask, per_acc, np.inf).min(axis=1)
    extra = (per_acc - cheapest[:, None]) * dec.item_acc[:, None]
    triple_reduced = np.full(index.n_triples, np.inf)
    triple_reduced[dec.item_triples[dec.item_mask]] = (extra + item_reduced[:-1, None])[
        dec.item_mask
    ]
    return col_reduced, triple_reduced


def _restricted(
    dec: Decomposition,
    program: _Program,
    stacked: csc_matrix,
    triple_reduced: FloatArray,
    col_reduced: FloatArray,
    gap: float,
    cutoff: float,
    time_limit_seconds: float,
    direct_columns: int,
    plan: IntArray | None = None,
) -> tuple[str, FloatArray | None, float] | None:
    """HiGHS on the variables whose reduced cost is below ``gap``, cost at most ``cutoff``.

    A model with more than ``direct_columns`` columns left is written over its triples (cover,
    replica bounds and spot share rows, as in `infleet.core.milp`) instead of its columns: a
    model with thousands of near-tied columns made HiGHS search them for a second (the
    examples fleet). This stays exact: the optimum holds minimal columns only, so its triples
    survive the fixing, and every solution of the rows is a plan.

    Returns the status (``optimal``, ``infeasible``, ``other``), the solution over all
    variables of the master (zeros where dropped) and HiGHS's dual bound; None if HiGHS gave
    nothing at all.
    """
    nt = dec.index.n_triples
    col_keep = col_reduced < gap
    written = _direct_models(dec, col_keep, direct_columns)
    triple_keep = _drop_interchangeable(dec, triple_reduced < gap, col_keep, _inexact_mask(dec))
    col_keep &= ~written[dec.col_model]
    keep = np.concatenate([triple_keep, col_keep])
    # Only the variables that survive the fixing, and the rows they appear in; the cutoff row
    # lets HiGHS prune early and prove "nothing cheaper" fast. Models with many columns left
    # are stated directly over their triples instead (their item and choice rows go).
    rows_kept = np.concatenate(
        [~written[dec.item_pos], ~written, np.ones(len(program.cap), dtype=bool)]
    )
    lo = np.concatenate([program.b_eq, np.full(len(program.cap), -np.inf)])[rows_kept]
    hi = np.concatenate([program.b_eq, program.cap])[rows_kept]
    # Assembled from the entries straight (scipy's sparse slicing and stacking cost ~1 ms per
    # program at 100 models, as much as a small HiGHS run).
    entry_col = np.repeat(np.arange(stacked.shape[1]), np.diff(stacked.indptr))
    take = keep[entry_col] & rows_kept[stacked.indices]
    row_at = np.cumsum(rows_kept) - 1
    e_row, e_col, e_val = row_at[stacked.indices[take]], entry_col[take], stacked.data[take]
    if written.any():
        d_rows, d_lo, d_hi = _direct_rows(dec, np.flatnonzero(written), triple_keep)
        d = d_rows.tocoo()
        d_take = keep[d.col]
        e_row = np.concatenate([e_row, len(lo) + d.row[d_take]])
        e_col = np.concatenate([e_col, d.col[d_take]])
        e_val = np.concatenate([e_val, d.data[d_take]])
        lo, hi = np.concatenate([lo, d_lo]), np.concatenate([hi, d_hi])
    live = np.bincount(e_row, minlength=len(lo)) > 0
    if np.any((~live) & ((lo > 0) | (hi < 0))):
        # A row no surviving variable can satisfy (a model with no column left).
        return "infeasible", None, np.inf
    kept = np.flatnonzero(keep)
    cost = program.cost[keep]
    # Rows renumbered over the live ones, the cutoff row last; columns over the kept ones.
    live_at = np.cumsum(live) - 1
    col_at = np.cumsum(keep) - 1
    priced = np.flatnonzero(cost)
    e_row = np.concatenate([live_at[e_row], np.full(len(priced), int(live.sum()))])
    e_col = np.concatenate([col_at[e_col], priced])
    e_val = np.concatenate([e_val, cost[priced]])
    order = np.lexsort((e_row, e_col))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(e_col, minlength=len(kept)))])
    rows = csc_matrix((e_val[order], e_row[order], indptr), shape=(int(live.sum()) + 1, len(kept)))
    row_lo, row_hi = np.append(lo[live], -np.inf), np.append(hi[live], cutoff)
    col_hi = np.where(kept < nt, np.inf, 1.0)
    limit = max(time_limit_seconds, 0.01)
    start = None if plan is None else _start(dec, plan, triple_keep, col_keep, written, keep)
    direct = solve_mip(
        cost,
        rows,
        row_lo,
        row_hi,
        col_hi,
        time_limit_seconds=limit,
        mip_rel_gap=1e-9,
        start=start,
    )
    if direct is None:
        result = milp(
            cost,
            integrality=np.ones(len(cost)),
            bounds=Bounds(np.zeros(len(cost)), col_hi),
            constraints=[LinearConstraint(rows, row_lo, row_hi)],
            options={"time_limit": limit, "mip_rel_gap": 1e-9},
        )
        status = {0: "optimal", _MILP_INFEASIBLE: "infeasible"}.get(result.status, "other")
        solution = None if result.x is None else np.asarray(result.x, dtype=np.float64)
        dual_bound = float(getattr(result, "mip_dual_bound", np.nan) or np.nan)
    else:
        status, solution, dual_bound = direct.status, direct.x, direct.dual_bound
    if solution is None:
        return status, None, dual_bound
    x = np.zeros(len(keep))
    x[keep] = solution
    return status, x, dual_bound


def _start(
    dec: Decomposition,
    plan: IntArray,
    triple_keep: BoolArray,
    col_keep: BoolArray,
    written: BoolArray,
    keep: BoolArray,
) -> FloatArray | None:
    """``plan`` as values of the restricted program's variables.

    None when it uses a dropped triple or a column not left (then HiGHS starts cold; the
    bench's plans in hand never did: repair had moved them to the cheapest pools with room).
    """
    index = dec.index
    nt = index.n_triples
    if np.any((plan > 0) & ~triple_keep):
        return None
    x = np.zeros(len(keep))
    counts = plan.astype(np.float64)
    x[:nt] = counts
    padded = np.zeros(dec.n_items + 1)
    padded[:-1] = np.where(dec.item_mask, counts[np.maximum(dec.item_triples, 0)], 0.0).sum(axis=1)
    # Per column: whether it gives every item exactly the plan's replicas (and survived).
    fits = (np.abs(dec.col_counts - padded[dec.col_items]) < 0.5).all(axis=1) & col_keep
    wanted = ~written
    hit = np.flatnonzero(fits & wanted[dec.col_model])
    first = np.unique(dec.col_model[hit], return_index=True)[1]
    if len(first) != int(wanted.sum()):
        return None
    x[nt + hit[first]] = 1.0
    result: FloatArray = x[keep]
    return result


def _inexact_mask(dec: Decomposition) -> BoolArray:
    """Per active model: whether its columns were truncated."""
    mask = np.zeros(len(dec.active), dtype=bool)
    mask[dec.inexact] = True
    return mask


def _direct_models(dec: Decomposition, col_keep: BoolArray, limit: int) -> BoolArray:
    """Per active model: written over its triples (columns truncated, or over ``limit`` left)."""
    left = np.bincount(dec.col_model[col_keep], minlength=len(dec.active))
    index = dec.index
    triples = np.diff(index.model_start)[np.asarray(dec.active, dtype=np.int64)]
    result: BoolArray = (left > limit) | (left > _DIRECT_PER_TRIPLE * triples) | _inexact_mask(dec)
    return result


def _direct_rows(
    dec: Decomposition, positions: IntArray, triple_keep: BoolArray
) -> tuple[csr_matrix, FloatArray, FloatArray]:
    """Cover, replica-count and spot-share rows of the models at ``positions`` (all variables)."""
    index = dec.index
    nt, ncol = index.n_triples, len(dec.col_model)
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    lo: list[float] = []
    hi: list[float] = []

    def row(trip: IntArray, coef: FloatArray, low: float, high: float) -> None:
        rows.extend([len(lo)] * len(trip))
        cols.extend(trip.tolist())
        vals.extend(coef.tolist())
        lo.append(low)
        hi.append(high)

    for pos in positions.tolist():
        m = dec.active[pos]
        trip = np.arange(int(index.model_start[m]), int(index.model_start[m + 1]))
        trip = trip[triple_keep[trip]]
        target = float(index.target[m])
        capacity = index.t_capacity[trip]
        if target > 0:
            row(trip, capacity, target - RPS_TOLERANCE * (1 + target), np.inf)
        row(trip, np.ones(len(trip)), float(index.min_replicas[m]), float(index.max_replicas[m]))
        fraction = float(index.spot_fraction[m])
        if fraction < 1 and index.t_spot[trip].any():
            row(trip, (index.t_spot[trip] - fraction) * capacity, -np.inf, RPS_TOLERANCE)
    matrix = csr_matrix((vals, (rows, cols)), shape=(len(lo), nt + ncol))
    return matrix, np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)


def pool_reach(dec: Decomposition, most: IntArray, triples: BoolArray | None = None) -> FloatArray:
    """Accelerators each pool would hold with every triple (of ``triples``, default all) at
    ``most[item]`` replicas of its item (``most`` per item, one padding entry at the end)."""
    index = dec.index
    per_triple = np.zeros(index.n_triples, dtype=np.int64)
    per_triple[dec.item_triples[dec.item_mask]] = np.broadcast_to(
        most[:-1, None], dec.item_triples.shape
    )[dec.item_mask]
    if triples is not None:
        per_triple = per_triple * triples
    reach: FloatArray = np.asarray(
        np.bincount(
            index.t_pool,
            weights=(per_triple * index.t_accelerators).astype(np.float64),
            minlength=len(index.pool_accelerators),
        ),
        dtype=np.float64,
    )
    return reach


def _drop_interchangeable(
    dec: Decomposition, triples: BoolArray, columns: BoolArray, spared: BoolArray
) -> BoolArray:
    """Of an item's surviving triples on pools no cheaper plan can fill, keep the cheapest.

    Items of the models ``spared`` (per active model; their columns are truncated, so the most
    replicas a column gives an item is unknown) keep every triple, and count as filling every
    pool they can use.

    A pool is *loose* when even every surviving triple on it at the most replicas any surviving
    column gives its item stays within its size. Replicas of one item on loose pools can then
    move to the item's cheapest loose pool without breaking any limit, so the other loose
    triples of the item can be dropped (without this, HiGHS branches over ties between them).
    """
    index = dec.index
    uses = (dec.col_items < dec.n_items) & (dec.col_counts > 0) & columns[:, None]
    most = np.zeros(dec.n_items + 1, dtype=np.int64)
    np.maximum.at(most, dec.col_items[uses], dec.col_counts[uses])
    spared_items = spared[dec.item_pos]
    most[:-1][spared_items] = dec.index.max_replicas[np.asarray(dec.active)[dec.item_pos]][
        spared_items
    ]
    loose = pool_reach(dec, most, triples) <= index.pool_accelerators
    slots = np.maximum(dec.item_triples, 0)
    candidate = dec.item_mask & triples[slots] & loose[index.t_pool[slots]]
    candidate &= ~spared_items[:, None]
    price = np.where(candidate, index.t_price[slots], np.inf)
    cheapest = np.argmin(price, axis=1)
    drop = candidate.copy()
    drop[np.arange(dec.n_items), cheapest] = False
    result = triples.copy()
    result[slots[drop]] = False
    return result


def _solve_program(
    program: _Program, time_limit_seconds: float, *, presolve: bool, simple_pricing: bool
) -> LpAnswer | None:
    """The LP of ``program`` (equality rows, then pool rows ``<= cap``) through the direct
    HiGHS binding; ``None`` when the binding is unavailable."""
    return solve_lp(
        program.cost,
        _stack(program).tocsc(),
        np.concatenate([program.b_eq, np.full(len(program.cap), -np.inf)]),
        np.concatenate([program.b_eq, program.cap]),
        time_limit_seconds=time_limit_seconds,
        presolve=presolve,
        simple_pricing=simple_pricing,
    )


def _stack(program: _Program) -> csr_matrix:
    stacked: csr_matrix = vstack([program.a_eq, program.a_pool]).tocsr()
    return stacked
