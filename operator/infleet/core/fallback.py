"""Last-resort plan: a deterministic greedy that always returns a feasible, maybe partial, plan.

`plan_fleet` uses it when HiGHS comes back without a usable solution (time limit, solver error)
and every other path failed, so a plan is never worse than this: without it a timeout meant an
all-zero plan, which the operator would apply by scaling the whole fleet down.

Models are placed one at a time, highest priority first, then by key. A model takes its cheapest
complete column at list prices that fits what is left (`infleet.core.greedy.place_model`); when
none fits, it takes as much as fits: replicas of its triples, most capacity per accelerator first
(the pools are what runs short), cheaper pool on ties, until its target and minimum replicas are
met, within ``max_replicas`` and its spot share.
"""

from __future__ import annotations

import math

import numpy as np

from infleet.core.decompose import Decomposition, objective
from infleet.core.greedy import place_model
from infleet.core.plan_index import (
    RPS_TOLERANCE,
    TIE_BREAK_PER_ACCELERATOR_HOUR,
    FleetIndex,
    IntArray,
    ceil_div,
    covers,
)


def fallback_replicas(dec: Decomposition) -> IntArray:
    """Replicas per eligible triple from the priority-ordered greedy (always within every limit)."""
    index = dec.index
    price = index.pool_price + TIE_BREAK_PER_ACCELERATOR_HOUR
    rem = index.pool_accelerators.copy()
    replicas = np.zeros(index.n_triples, dtype=np.int64)
    keys = [model.key for model in index.problem.models]
    order = sorted(range(index.n_models), key=lambda m: (-int(index.priority[m]), keys[m]))
    for m in order:
        mc = dec.models[m]
        if mc is None or not index.needs_anything(m):
            continue
        placed = place_model(index, mc, m, rem, price) if len(mc.columns) else None
        if placed is None:
            placed = _as_much_as_fits(index, m, rem)
        for j, n in placed.items():
            replicas[j] += n
            rem[index.t_pool[j]] -= n * int(index.t_accelerators[j])
    return replicas


def _as_much_as_fits(index: FleetIndex, m: int, rem: IntArray) -> dict[int, int]:
    """Replicas of model ``m`` towards its target and minimum, as far as ``rem`` allows."""
    trip = list(index.triples_of(m))
    cap = index.t_capacity
    acc = index.t_accelerators
    pool = index.t_pool
    order = sorted(trip, key=lambda j: (-float(cap[j]) / int(acc[j]), float(index.t_price[j]), j))
    target, low, high = (
        float(index.target[m]),
        int(index.min_replicas[m]),
        int(index.max_replicas[m]),
    )
    fraction = float(index.spot_fraction[m])
    left = rem.copy()
    placed: dict[int, int] = {}
    count, total, on_spot = 0, 0.0, 0.0
    progress = True
    # A spot replica may only fit once non-spot ones are placed: repeat while anything moved.
    while progress:
        progress = False
        for j in order:
            if count >= high or (covers(total, target) and count >= low):
                return placed
            c, a = float(cap[j]), int(acc[j])
            take = min(high - count, int(left[pool[j]]) // a)
            take = min(take, max(ceil_div(target - total, c), low - count))
            if index.t_spot[j] and fraction < 1:
                # take * c <= fraction * (total + take * c) - on_spot
                room = (fraction * total - on_spot + RPS_TOLERANCE) / ((1.0 - fraction) * c)
                take = min(take, math.floor(room))
            if take <= 0:
                continue
            placed[j] = placed.get(j, 0) + take
            left[pool[j]] -= take * a
            count += take
            total += take * c
            on_spot += take * c if index.t_spot[j] else 0.0
            progress = True
    return placed


def shortfall_key(index: FleetIndex, replicas: IntArray) -> tuple[float, ...]:
    """Lexicographic rank of a plan (lower is better), as the planner's program orders them.

    Per priority level from the highest down: total unmet capacity, then total missing minimum
    replicas (models without an eligible triple count for nothing); last, the objective.
    """
    capacity = np.bincount(
        index.t_model, weights=replicas * index.t_capacity, minlength=index.n_models
    )
    count = np.bincount(index.t_model, weights=replicas, minlength=index.n_models)
    placeable = np.diff(index.model_start) > 0
    unmet = np.where(
        capacity >= index.target - RPS_TOLERANCE * (1.0 + index.target),
        0.0,
        index.target - capacity,
    )
    missing = np.maximum(index.min_replicas - count, 0.0)
    key: list[float] = []
    for level in sorted(set(index.priority.tolist()), reverse=True):
        members = (index.priority == level) & placeable
        # Rounded so float noise in the sums does not decide between equal shortfalls.
        key += [round(float(unmet[members].sum()), 9), float(missing[members].sum())]
    key.append(objective(index, replicas))
    return tuple(key)
