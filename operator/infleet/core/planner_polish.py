"""Local search on a rounded plan: re-plan the models that could use room left on cheaper pools.

Rounding the master LP leaves a few accelerators free on cheap pools (reserved, spot,
discounted): the LP had filled them with fractions of replicas. The same-item moves of
`infleet.core.repair` only fill them with replicas of items already placed elsewhere; a model
that would switch *variant* (another accelerator type, another replica size) to use that room
is found only by re-planning the model at real prices given everyone else (`improve`). Doing
that for every model costs ~0.1 ms each, so only *candidates* are re-planned: models that pay
more than their own optimum with unlimited pools, and have an eligible pool with room for a
replica at a lower price than the dearest pool they use now. Every accepted move strictly
lowers the cost, so the result is never worse than the input.
"""

from __future__ import annotations

import time

import numpy as np

from infleet.core.decompose import Decomposition
from infleet.core.greedy import improve
from infleet.core.plan_index import TIE_BREAK_PER_ACCELERATOR_HOUR, FloatArray, IntArray
from infleet.core.repair import fill_cheaper_pools

_ROUNDS = 4
"""Passes over the candidates (a pass that improves nothing ends the search)."""

_KNAPSACK_LIMIT = 4_096
"""Largest pool room (accelerators) repacked by knapsack; bigger rooms are left as they are."""
"""Passes over the candidates (a pass that improves nothing ends the search)."""


def _placements(dec: Decomposition, replicas: IntArray) -> list[dict[int, int]]:
    """Replicas per triple of every active model, as `improve` reads them."""
    index = dec.index
    placements: list[dict[int, int]] = [{} for _ in dec.active]
    position = np.full(index.n_models, -1, dtype=np.int64)
    position[dec.active] = np.arange(len(dec.active))
    held = np.flatnonzero(replicas)
    for j, m, n in zip(
        held.tolist(), index.t_model[held].tolist(), replicas[held].tolist(), strict=True
    ):
        placements[int(position[m])][j] = n
    return placements


def polish(dec: Decomposition, replicas: IntArray, deadline: float) -> bool:
    """Improve ``replicas`` in place by re-planning candidate models; True if anything changed.

    Without churn only (with churn `improve` already weighs moves against running replicas).
    """
    index = dec.index
    if index.problem.churn_cost_per_replica > 0 or not dec.active:
        return False
    unit = index.t_price + TIE_BREAK_PER_ACCELERATOR_HOUR
    solo = dec.best_columns(dec.price_items(np.zeros(len(index.pool_price)))[0])[0]
    changed = False
    for _ in range(_ROUNDS):
        if time.perf_counter() >= deadline:
            break
        used = np.bincount(
            index.t_pool, weights=replicas * index.t_accelerators, minlength=len(index.pool_price)
        )
        rem = index.pool_accelerators - used.astype(np.int64)
        cost = np.bincount(
            index.t_model, weights=replicas * index.t_accelerators * unit, minlength=index.n_models
        )[dec.active]
        # Dearest per-accelerator price each model pays now, and whether a triple of it has
        # room on a pool cheaper than that.
        dearest = np.full(index.n_models, -np.inf)
        np.maximum.at(dearest, index.t_model, np.where(replicas > 0, unit, -np.inf))
        has_room = rem[index.t_pool] >= index.t_accelerators
        dearest_t = dearest[index.t_model]
        cheaper = np.bincount(
            index.t_model, weights=(has_room & (unit < dearest_t)), minlength=index.n_models
        )[dec.active]
        excess = cost - solo
        wanted = np.flatnonzero((excess > 1e-9 * (1 + solo)) & (cheaper > 0))
        order = [int(p) for p in wanted[np.argsort(-excess[wanted], kind="stable")]]
        moved = bool(order) and improve(dec, replicas, _placements(dec, replicas), order, deadline)
        if moved:
            rem = index.pool_accelerators - np.bincount(
                index.t_pool,
                weights=replicas * index.t_accelerators,
                minlength=len(index.pool_price),
            ).astype(np.int64)
            fill_cheaper_pools(dec, replicas, rem, deadline)
        if time.perf_counter() < deadline:
            moved |= refill(dec, replicas, deadline)
        if not moved:
            break
        changed = True
    return changed


def _knapsack(
    capacity: int, weights: list[int], values: list[float], counts: list[int]
) -> tuple[float, list[int]]:
    """Bounded knapsack: most value within ``capacity``; (value, how many of each group)."""
    best = np.zeros(capacity + 1)
    taken: list[tuple[int, np.ndarray]] = []
    for g, (w, v, n) in enumerate(zip(weights, values, counts, strict=True)):
        for _ in range(min(n, capacity // w)):
            shifted = best[:-w] + v
            better = shifted > best[w:] + 1e-12
            if not better.any():
                break
            taken.append((g, np.concatenate([np.zeros(w, dtype=bool), better])))
            best[w:] = np.where(better, shifted, best[w:])
    chosen = [0] * len(weights)
    c = int(np.argmax(best))
    value = float(best[c])
    for g, took in reversed(taken):
        if took[c]:
            chosen[g] += 1
            c -= weights[g]
    return value, chosen


def refill(dec: Decomposition, replicas: IntArray, deadline: float | None = None) -> bool:
    """Repack the pools that have room, one at a time, by bounded knapsack; True if cheaper.

    With a ``deadline`` (`time.perf_counter` seconds) no pool is started after it.

    For a pool ``p`` with free accelerators, every replica that could sit on ``p`` without
    changing its model's column (same item) is a candidate: replicas on dearer pools of the
    item (moving in saves the price difference) and replicas already on ``p`` that have
    somewhere else to go (moving out costs the difference to their cheapest alternative with
    room). The set kept on ``p`` is the most valuable one within its size: this fills room that
    single moves cannot (a 4-accelerator replica in, three 1-accelerator ones out).
    """
    index = dec.index
    if index.problem.churn_cost_per_replica > 0 or dec.n_items == 0:
        return False
    unit = index.t_price + TIE_BREAK_PER_ACCELERATOR_HOUR
    slots = np.maximum(dec.item_triples, 0)
    item_pools = np.where(dec.item_mask, index.t_pool[slots], -1)
    rem = index.pool_accelerators - np.bincount(
        index.t_pool, weights=replicas * index.t_accelerators, minlength=len(index.pool_price)
    ).astype(np.int64)
    changed = False
    for p in np.argsort(-rem, kind="stable").tolist():
        if rem[p] <= 0:
            continue
        if deadline is not None and time.perf_counter() >= deadline:
            break
        changed |= _refill_pool(dec, replicas, rem, unit, item_pools, p)
    return changed


def _refill_pool(
    dec: Decomposition,
    replicas: IntArray,
    rem: IntArray,
    unit: FloatArray,
    item_pools: IntArray,
    p: int,
) -> bool:
    index = dec.index
    rows, cols = np.nonzero(item_pools == p)
    weights: list[int] = []
    values: list[float] = []
    counts: list[int] = []
    moves: list[tuple[int, int, bool]] = []
    """Per group: (triple on p, other triple, whether the group is on p now)."""
    held = 0
    # Plain lists: the loop reads a handful of entries per item, where numpy's per-element
    # access was most of the time.
    now = replicas.tolist()
    room_left = rem.tolist()
    price = unit.tolist()
    pool_of = index.t_pool.tolist()
    size = dec.item_acc.tolist()
    for row, col in zip(rows.tolist(), cols.tolist(), strict=True):
        a = size[row]
        here = int(dec.item_triples[row, col])
        triples = dec.item_triples[row][dec.item_mask[row]]
        price_here = price[here] * a
        on_p = now[here]
        alt = -1
        for j in triples.tolist():
            if j == here:
                continue
            n = now[j]
            cost = price[j] * a
            if n > 0 and cost > price_here + 1e-12:
                weights.append(a)
                values.append(cost - price_here)
                counts.append(n)
                moves.append((here, j, False))
            if room_left[pool_of[j]] >= a and (alt < 0 or cost < price[alt] * a):
                alt = j
        if on_p:
            held += on_p * a
            if alt >= 0:
                weights.append(a)
                values.append(price[alt] * a - price_here)
                counts.append(on_p)
                moves.append((here, alt, True))
    incoming = sum(w * n for w, n, (_, _, on) in zip(weights, counts, moves, strict=True) if not on)
    if incoming == 0 or incoming <= rem[p]:
        # Nothing to move in, or everything fits as it is (`fill_cheaper_pools` moves it).
        return False
    fixed = held - sum(w * n for w, n, (_, _, on) in zip(weights, counts, moves, strict=True) if on)
    room = int(index.pool_accelerators[p]) - fixed
    if room <= 0 or room > _KNAPSACK_LIMIT:
        return False
    current = sum(v * n for v, n, (_, _, on) in zip(values, counts, moves, strict=True) if on)
    value, chosen = _knapsack(room, weights, values, counts)
    if value <= current + 1e-9 * (1 + abs(current)):
        return False
    saved = replicas.copy(), rem.copy()
    # Out first (frees room on p), then in.
    for (here, other, on), k, n, w in zip(moves, chosen, counts, weights, strict=True):
        if on and k < n:
            out = n - k
            replicas[here] -= out
            replicas[other] += out
            rem[index.t_pool[here]] += out * w
            rem[index.t_pool[other]] -= out * w
    for (here, other, on), k, w in zip(moves, chosen, weights, strict=True):
        if not on and k:
            replicas[other] -= k
            replicas[here] += k
            rem[index.t_pool[other]] += k * w
            rem[index.t_pool[here]] -= k * w
    if np.any(rem < 0):
        # Two items sent replicas to the same alternative pool and it ran out: undo.
        replicas[:] = saved[0]
        rem[:] = saved[1]
        return False
    return True
