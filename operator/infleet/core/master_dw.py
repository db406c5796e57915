"""The master LP by column generation over whole-model plans (Dantzig-Wolfe), stoppable any time.

`infleet.core.master.solve_master_lp` hands HiGHS the master with one row per item and one
variable per triple and per column: at 1,000 models x 50 pools that is ~4,250 rows x ~30,000
variables and 0.3-0.5 s, and an LP stopped at its time limit gives nothing. Here the rows are
only one per model (its plans' weights sum to 1) and one per pool; a variable is one *plan* of
a model: a minimal column with every item on its cheapest pool at some pool prices. Given the
duals of a solve, every model's best plan at those prices is priced at once
(`Decomposition.best_columns`); plans whose reduced cost is negative are added and HiGHS
re-solves from its last basis. Its value is the same as the full master's (a model's plans
with integer replicas per pool span the same polytope as its columns with split items).

The start makes every solve feasible from the first: each model's best plan at zero prices and
its best plan when only the *loose* pools are free (pools that even every replica that could
ever go there cannot fill; in practice the large on-demand pools), plus an overflow variable
per pool at a price above any accelerator's, which the optimum leaves at 0 whenever the fleet
fits. So it can stop at any solve: the master's solution is then a plan of the LP relaxation
(not the cheapest), and the bound is the best Lagrangian value met, which is valid for any
prices. If overflow is still used at the end (the fleet may not fit), the caller falls back to
the full LP, which tells shortage apart.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.sparse import csc_matrix

from infleet.core.decompose import Decomposition
from infleet.core.master import MasterLP, pool_reach
from infleet.core.plan_index import TIE_BREAK_PER_ACCELERATOR_HOUR, BoolArray, FloatArray, IntArray
from infleet.core.planner_highs import ColumnLp, open_lp

_MAX_ROUNDS = 60
"""Solves before giving up on convergence (the bench's 1,000-model fleets need 7-11)."""

_REDUCED_TOLERANCE = 1e-9
"""Relative: a plan is added when its reduced cost is below minus this."""

_OVERFLOW_USED = 1e-6
"""Overflow (accelerators) above this at the end means the fleet may not fit."""


@dataclass
class _Plans:
    """The model plans added so far: column index, triples and counts (padded per plan)."""

    column: list[IntArray]
    triples: list[IntArray]
    counts: list[IntArray]


def loose_pools(dec: Decomposition) -> BoolArray:
    """Pools that every replica any minimal column could ever send there cannot fill.

    An item's count in a minimal column is at most ``max(ceil(target / capacity), min)``
    (capped at ``max_replicas``): one more and the item alone would cover the model.
    """
    index = dec.index
    most = np.zeros(dec.n_items + 1, dtype=np.int64)
    uses = (dec.col_items < dec.n_items) & (dec.col_counts > 0)
    np.maximum.at(most, dec.col_items[uses], dec.col_counts[uses])
    for pos in dec.inexact:
        # Truncated columns do not show every count: use the cap instead.
        m = dec.active[pos]
        items = np.flatnonzero(dec.item_pos == pos)
        need = np.ceil(index.target[m] / dec.item_cap[items] - 1e-9).astype(np.int64)
        most[items] = np.minimum(index.max_replicas[m], np.maximum(need, index.min_replicas[m]))
    result: BoolArray = pool_reach(dec, most) <= index.pool_accelerators
    return result


@dataclass(frozen=True)
class Stopped:
    """Column generation stopped (time) before its solution was overflow-free.

    ``prices`` are the last solve's pool prices: after a few rounds they already price the
    scarce pools, so a greedy at them is much cheaper than one at list prices (1000 x 50:
    0.3-12% above the LP value after 4-6 rounds, against 19-42%). ``bound`` is the best
    Lagrangian value met (valid for any prices).
    """

    prices: FloatArray
    bound: float
    solves: int


def solve_master_dw(dec: Decomposition, deadline: float) -> MasterLP | Stopped | str:
    """The master LP by column generation, stopped at ``deadline`` if not converged.

    Returns ``"failed"`` if no solve finished or overflow is still used after convergence (the
    fleet may not fit: use `infleet.core.master.solve_master_lp`), `Stopped` if time ran out
    while overflow was still used. Otherwise a `MasterLP` whose
    replicas and column weights are a solution of the LP relaxation (optimal when converged)
    and whose bound is the best Lagrangian value met.
    """
    index = dec.index
    n_models, n_pools = len(dec.active), len(index.pool_accelerators)
    if n_models == 0 or n_pools == 0 or np.any(np.diff(dec.col_start) == 0):
        # A model without any column cannot be served: the full LP says so.
        return "failed"
    price = index.t_price + TIE_BREAK_PER_ACCELERATOR_HOUR
    overflow = 2.0 * float(price.max()) + 1.0
    lp = open_lp(
        np.concatenate([np.ones(n_models), np.full(n_pools, -np.inf)]),
        np.concatenate([np.ones(n_models), index.pool_accelerators.astype(np.float64)]),
    )
    if lp is None:
        return "failed"
    slack = csc_matrix(
        (-np.ones(n_pools), (n_models + np.arange(n_pools), np.arange(n_pools))),
        shape=(n_models + n_pools, n_pools),
    )
    lp.add_columns(np.full(n_pools, overflow), slack)
    plans = _Plans([], [], [])
    everyone = np.arange(n_models)
    zero = np.zeros(n_pools)
    for start in (zero, np.where(loose_pools(dec), 0.0, overflow)):
        item_cost, item_triple = dec.price_items(start)
        _add_plans(dec, lp, plans, dec.best_columns(item_cost)[1], item_triple, everyone, price)
    best_bound, best_prices = -np.inf, zero
    x: FloatArray | None = None
    solves = 0
    prices = zero
    converged = False
    for _ in range(_MAX_ROUNDS):
        left = deadline - time.perf_counter()
        if left <= 0:
            break
        answer = lp.solve(left)
        if answer is None:
            # Out of time (or numerics): the last optimal solution is still a feasible one.
            break
        x, row_dual = answer
        solves += 1
        prices = np.maximum(0.0, -row_dual[n_models:])
        item_cost, item_triple = dec.price_items(prices)
        cheapest, chosen = dec.best_columns(item_cost)
        bound = dec.bound_from(prices, item_cost, cheapest)
        if bound > best_bound:
            best_bound, best_prices = bound, prices
        duals = row_dual[:n_models]
        better = np.flatnonzero(cheapest - duals < -_REDUCED_TOLERANCE * (1 + np.abs(duals)))
        if len(better) == 0:
            converged = True
            break
        _add_plans(dec, lp, plans, chosen, item_triple, better, price)
    if x is None:
        return "failed"
    if float(x[:n_pools].sum()) > _OVERFLOW_USED:
        return "failed" if converged else Stopped(prices, best_bound, solves)
    counts = np.concatenate(plans.counts)
    triples = np.concatenate(plans.triples)
    # Plans added after the last optimal solve have weight 0 in it.
    weights = np.zeros(len(counts))
    weights[: len(x) - n_pools] = x[n_pools:]
    replicas = np.bincount(
        triples.ravel(),
        weights=(weights[:, None] * counts).ravel(),
        minlength=index.n_triples,
    ).astype(np.float64)
    y = np.bincount(
        np.concatenate(plans.column), weights=weights, minlength=len(dec.col_model)
    ).astype(np.float64)
    return MasterLP(replicas, y, best_prices, best_bound)


def _add_plans(
    dec: Decomposition,
    lp: ColumnLp,
    plans: _Plans,
    chosen: IntArray,
    item_triple: IntArray,
    positions: IntArray,
    price: FloatArray,
) -> None:
    """Add the plans of the models at ``positions``: their ``chosen`` column (per model) with
    every item on ``item_triple`` (per item), as `Decomposition.best_columns` and
    `Decomposition.price_items` give them at some prices."""
    index = dec.index
    n_models, n_pools = len(dec.active), len(index.pool_accelerators)
    column = chosen[positions]
    ids = dec.col_items[column]
    valid = ids < dec.n_items
    safe = np.where(valid, ids, 0)
    counts = np.where(valid, dec.col_counts[column], 0)
    triples = item_triple[safe]
    accelerators = counts * dec.item_acc[safe]
    cost = (accelerators * price[triples]).sum(axis=1)
    n = len(positions)
    usage = np.bincount(
        (np.arange(n)[:, None] * n_pools + index.t_pool[triples]).ravel(),
        weights=accelerators.ravel().astype(np.float64),
        minlength=n * n_pools,
    ).reshape(n, n_pools)
    plan, pool = np.nonzero(usage)
    rows = np.concatenate([positions, n_models + pool])
    cols = np.concatenate([np.arange(n), plan])
    vals = np.concatenate([np.ones(n), usage[plan, pool]])
    lp.add_columns(cost, csc_matrix((vals, (rows, cols)), shape=(n_models + n_pools, n)))
    plans.column.append(column)
    plans.triples.append(triples)
    plans.counts.append(counts)
