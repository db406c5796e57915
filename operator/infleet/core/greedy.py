"""Feasible plans for the decomposition: a price-guided greedy pass and one-model-at-a-time search.

Both place one model at a time against the accelerators left on each pool. For a model, each
item's replicas fill its pools cheapest first (at the given per-accelerator prices), which makes
the cost of ``k`` replicas of an item a convex table; a column's cost is the sum of its items'
table entries, so all columns are priced at once. Items of one model can share pools (two
variants of one accelerator type), which the tables ignore, so the chosen column is filled for
real and the next one is tried if a shared pool runs out.
"""

from __future__ import annotations

import time

import numpy as np

from infleet.core.decompose import Decomposition, ModelColumns
from infleet.core.plan_index import TIE_BREAK_PER_ACCELERATOR_HOUR, FleetIndex, FloatArray, IntArray

_TRIES = 4
"""Columns tried per model before giving up on it (only shared pools make a try fail)."""

_CANDIDATES = 3
"""Cheapest columns whose churn-aware fills are compared when a churn cost is set."""


def _item_table(
    index: FleetIndex,
    triples: IntArray,
    accelerators: int,
    largest: int,
    rem: IntArray,
    price: FloatArray,
) -> FloatArray:
    """Cost of 0..largest replicas of one item, filling its cheapest pools first (inf = no room).

    Plain Python over the item's few pools (numpy's per-call cost dominated here).
    """
    pools = index.t_pool[triples].tolist()
    unit = [float(price[p]) * accelerators for p in pools]
    table = [0.0]
    total = 0.0
    for i in sorted(range(len(pools)), key=unit.__getitem__):
        room = min(max(int(rem[pools[i]]) // accelerators, 0), largest + 1 - len(table))
        for _ in range(room):
            total += unit[i]
            table.append(total)
        if len(table) > largest:
            break
    table.extend([np.inf] * (largest + 1 - len(table)))
    return np.asarray(table)


def _fill(
    index: FleetIndex,
    mc: ModelColumns,
    column: IntArray,
    rem: IntArray,
    price: FloatArray,
    keep_current: bool,
) -> dict[int, int] | None:
    """Replicas per triple for ``column``: cheapest pools first (or running replicas first)."""
    left = rem.copy()
    placed: dict[int, int] = {}
    for i, count in enumerate(column.tolist()):
        if count == 0:
            continue
        triples = mc.items[i]
        a = int(mc.accelerators[i])
        key = price[index.t_pool[triples]].astype(np.float64)
        if keep_current:
            key = np.where(index.t_current[triples] > 0, -1.0, key)
        need = count
        for j in triples[np.argsort(key, kind="stable")].tolist():
            room = max(0, int(left[index.t_pool[j]]) // a)
            if keep_current and index.t_current[j] > 0:
                room = min(room, int(index.t_current[j]))
            take = min(room, need)
            if take:
                placed[j] = placed.get(j, 0) + take
                left[index.t_pool[j]] -= take * a
                need -= take
            if need == 0:
                break
        if need and keep_current:
            # Running replicas did not cover the item: top up cheapest first.
            for j in triples[np.argsort(price[index.t_pool[triples]], kind="stable")].tolist():
                take = min(max(0, int(left[index.t_pool[j]]) // a), need)
                if take:
                    placed[j] = placed.get(j, 0) + take
                    left[index.t_pool[j]] -= take * a
                    need -= take
                if need == 0:
                    break
        if need:
            return None
    return placed


def _model_objective(index: FleetIndex, m: int, placed: dict[int, int]) -> float:
    trip = index.triples_of(m)
    churn = index.problem.churn_cost_per_replica
    cost = 0.0
    for j in trip:
        n = placed.get(j, 0)
        cost += (
            n
            * int(index.t_accelerators[j])
            * (float(index.t_price[j]) + TIE_BREAK_PER_ACCELERATOR_HOUR)
        )
        if churn > 0:
            cost += churn * abs(n - int(index.t_current[j]))
    return cost


def place_model(
    index: FleetIndex,
    mc: ModelColumns,
    m: int,
    rem: IntArray,
    price: FloatArray,
) -> dict[int, int] | None:
    """Best placement of one model into ``rem`` at per-accelerator ``price`` (None: no room)."""
    columns = mc.columns
    largest = columns.max(axis=0)
    cost = np.zeros(len(columns))
    for i in range(len(mc.items)):
        table = _item_table(
            index, mc.items[i], int(mc.accelerators[i]), int(largest[i]), rem, price
        )
        cost += table[columns[:, i]]
    churn = index.problem.churn_cost_per_replica > 0 and bool(
        index.t_current[list(index.triples_of(m))].any()
    )
    order = np.argsort(cost, kind="stable")
    best: dict[int, int] | None = None
    best_value = np.inf
    tried = 0
    for c in order.tolist():
        if not np.isfinite(cost[c]) or tried >= (_CANDIDATES if churn else _TRIES):
            break
        tried += 1
        for keep in (False, True) if churn else (False,):
            placed = _fill(index, mc, columns[c], rem, price, keep)
            if placed is None:
                continue
            value = (
                _placement_value(index, m, placed, price)
                if not churn
                else _model_objective(index, m, placed)
            )
            if value < best_value:
                best, best_value = placed, value
        if best is not None and not churn:
            break
    return best


def _placement_value(index: FleetIndex, m: int, placed: dict[int, int], price: FloatArray) -> float:
    return sum(
        n * int(index.t_accelerators[j]) * float(price[index.t_pool[j]]) for j, n in placed.items()
    )


def _apply(index: FleetIndex, placed: dict[int, int], rem: IntArray, sign: int) -> None:
    for j, n in placed.items():
        rem[index.t_pool[j]] -= sign * n * int(index.t_accelerators[j])


def greedy(
    dec: Decomposition, lam: FloatArray, order: list[int]
) -> tuple[IntArray, list[dict[int, int]]] | None:
    """Place the active models in ``order`` at prices ``price + lam`` (None: one did not fit)."""
    index = dec.index
    price = index.pool_price + TIE_BREAK_PER_ACCELERATOR_HOUR + lam
    rem = index.pool_accelerators.copy()
    replicas = np.zeros(index.n_triples, dtype=np.int64)
    placements: list[dict[int, int]] = [{} for _ in dec.active]
    for pos in order:
        m = dec.active[pos]
        mc = dec.models[m]
        assert mc is not None
        placed = place_model(index, mc, m, rem, price)
        if placed is None:
            return None
        _apply(index, placed, rem, 1)
        placements[pos] = placed
        for j, n in placed.items():
            replicas[j] = n
    return replicas, placements


def improve(
    dec: Decomposition,
    replicas: IntArray,
    placements: list[dict[int, int]],
    order: list[int],
    deadline: float | None = None,
) -> bool:
    """Re-plan each model in ``order`` at real prices given the others; True if any got cheaper.

    Stops early (keeping what it did) once ``deadline`` (a `time.perf_counter` value) passes.
    """
    index = dec.index
    price = index.pool_price + TIE_BREAK_PER_ACCELERATOR_HOUR
    used = np.bincount(
        index.t_pool, weights=replicas * index.t_accelerators, minlength=len(index.pool_price)
    )
    rem = index.pool_accelerators - used.astype(np.int64)
    better = False
    for pos in order:
        if deadline is not None and time.perf_counter() >= deadline:
            break
        m = dec.active[pos]
        mc = dec.models[m]
        assert mc is not None
        old = placements[pos]
        _apply(index, old, rem, -1)
        new = place_model(index, mc, m, rem, price)
        if (
            new is not None
            and _model_objective(index, m, new) < _model_objective(index, m, old) - 1e-12
        ):
            for j in old:
                replicas[j] = 0
            for j, n in new.items():
                replicas[j] = n
            placements[pos] = new
            old = new
            better = True
        _apply(index, old, rem, 1)
    return better
