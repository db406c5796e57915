"""The decomposition's main loop: subgradient on pool prices, greedy plans, best bound and plan."""

from __future__ import annotations

import time

import numpy as np

from infleet.core.decompose import Decomposition, DecompositionResult, objective
from infleet.core.greedy import greedy, improve
from infleet.core.plan_index import (
    TIE_BREAK_PER_ACCELERATOR_HOUR,
    FleetIndex,
    FloatArray,
    IntArray,
)

MAX_ITERATIONS = 300
_GREEDY_AT = frozenset({100, 200})
"""Subgradient iterations after which a greedy pass runs at the current prices."""
_STALL = 15
"""Iterations without a better bound before the step scale is halved."""


def _relaxed_replicas(dec: Decomposition, chosen: IntArray, item_triple: IntArray) -> IntArray:
    """Replicas per triple of the relaxed optimum (every item at its cheapest pool)."""
    index = dec.index
    replicas = np.zeros(index.n_triples, dtype=np.int64)
    ids = dec.col_items[chosen]
    counts = dec.col_counts[chosen]
    valid = ids < dec.n_items
    np.add.at(replicas, item_triple[ids[valid]], counts[valid])
    return replicas


def greedy_order(dec: Decomposition, lam: FloatArray) -> list[int]:
    """Greedy order: higher priority first, then models whose cheapest column costs most."""
    item_cost, _ = dec.price_items(lam)
    mins, _ = dec.best_columns(item_cost)
    priority = dec.index.priority[dec.active] if dec.active else np.zeros(0, dtype=np.int64)
    return [int(i) for i in np.lexsort((-mins, -priority))]


def solve_decomposition(
    index: FleetIndex,
    *,
    gap_tolerance: float,
    deadline: float,
    dec: Decomposition | None = None,
) -> DecompositionResult:
    """Lagrangian bound plus greedy/local-search plans until the gap or the deadline is reached.

    ``dec`` reuses columns already built for ``index``.
    """
    start = time.perf_counter()
    # Stop iterating early enough to leave time for the last greedy pass at the best prices.
    stop = start + 0.75 * (deadline - start)
    dec = dec if dec is not None else Decomposition(index)
    result = DecompositionResult(None, np.inf, -np.inf, 0, 0.0)
    if not dec.active:
        zero = np.zeros(index.n_triples, dtype=np.int64)
        return DecompositionResult(
            zero, objective(index, zero), 0.0, 0, time.perf_counter() - start
        )
    cap = index.pool_accelerators.astype(np.float64)
    lam = np.zeros(len(cap))
    best_lam = lam.copy()
    scale, stall = 2.0, 0
    solo = dec.best_columns(dec.price_items(lam)[0])[0]
    for it in range(MAX_ITERATIONS):
        value, usage, chosen, item_triple = dec.lagrangian(lam)
        result.iterations = it + 1
        if value > result.lower_bound + 1e-12 * (1 + abs(value)):
            result.lower_bound, best_lam, stall = value, lam.copy(), 0
        else:
            stall += 1
            if stall >= _STALL:
                scale, stall = scale / 2, 0
        if np.all(usage <= cap):
            _offer(result, index, _relaxed_replicas(dec, chosen, item_triple))
        if it in _GREEDY_AT:
            _primal_round(dec, result, lam, solo)
        if result.gap <= gap_tolerance or time.perf_counter() >= stop or scale < 1e-4:
            break
        slack = usage - cap
        slack[(lam <= 0) & (slack < 0)] = 0.0
        norm = float(slack @ slack)
        if norm == 0:
            break
        goal = result.objective if np.isfinite(result.objective) else value + 0.05 * abs(value) + 1
        lam = np.maximum(0.0, lam + scale * max(goal - value, 1e-9) / norm * slack)
    if result.gap > gap_tolerance and time.perf_counter() < deadline:
        _primal_round(dec, result, best_lam, solo)
    result.seconds = time.perf_counter() - start
    return result


def _offer(result: DecompositionResult, index: FleetIndex, replicas: IntArray) -> None:
    value = objective(index, replicas)
    if value < result.objective:
        result.replicas, result.objective = replicas, value


def _primal_round(
    dec: Decomposition, result: DecompositionResult, lam: FloatArray, solo: FloatArray
) -> None:
    """A greedy plan at prices ``lam``, improved one model at a time at real prices."""
    order = greedy_order(dec, lam)
    found = greedy(dec, lam, order)
    if found is None:
        return
    replicas, placements = found
    for _ in range(3):
        candidates = _improvable(dec, placements, solo, order)
        if not candidates or not improve(dec, replicas, placements, candidates):
            break
    _offer(result, dec.index, replicas)


def _improvable(
    dec: Decomposition, placements: list[dict[int, int]], solo: FloatArray, order: list[int]
) -> list[int]:
    """Models that could get cheaper: those above their own optimum with unlimited pools."""
    index = dec.index
    if index.problem.churn_cost_per_replica > 0:
        return order
    price = index.t_price + TIE_BREAK_PER_ACCELERATOR_HOUR
    out = []
    for pos in order:
        cost = sum(
            n * int(index.t_accelerators[j]) * float(price[j]) for j, n in placements[pos].items()
        )
        if cost > solo[pos] + 1e-9 * (1 + solo[pos]):
            out.append(pos)
    return out
