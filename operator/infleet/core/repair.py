"""Fill room left on cheap pools by moving replicas there from dearer pools of the same item.

After rounding the master LP, the cheap (spot, reserved, discounted) pools are often left with
a few accelerators free: the LP had filled them with a fraction of a big replica. Moving a
replica of an item (same model, variant and spot-ness, so the model's capacity, replica count
and spot share do not change) from a dearer pool to a cheaper one saves ``accelerators *
price difference`` whatever else the plan holds. The moves are made greedily, best saving per
replica first, until no move saves anything.
"""

from __future__ import annotations

import time

import numpy as np

from infleet.core.decompose import Decomposition
from infleet.core.plan_index import TIE_BREAK_PER_ACCELERATOR_HOUR, IntArray

_CLOCK_EVERY = 16
"""Moves between two looks at the clock (a move costs ~0.2 ms at 1,000 models)."""

_MAX_MOVES = 100_000
"""Safety bound on the number of moves (each strictly lowers the cost, so it always ends)."""


def fill_cheaper_pools(
    dec: Decomposition, replicas: IntArray, rem: IntArray, deadline: float | None = None
) -> int:
    """Move replicas within items to cheaper pools with room; updates both arrays in place.

    Returns the number of moves made. ``rem`` is the accelerators left per pool. With a
    ``deadline`` (`time.perf_counter` seconds) it stops there: every move already made saves.
    """
    index = dec.index
    if dec.n_items == 0:
        return 0
    slots = np.maximum(dec.item_triples, 0)
    pools = index.t_pool[slots]
    acc = dec.item_acc[:, None]
    unit = np.where(
        dec.item_mask, (index.t_price[slots] + TIE_BREAK_PER_ACCELERATOR_HOUR) * acc, np.nan
    )
    rows = np.arange(dec.n_items)
    moves = 0
    while moves < _MAX_MOVES:
        if deadline is not None and moves % _CLOCK_EVERY == 0 and time.perf_counter() >= deadline:
            return moves
        room = dec.item_mask & (rem[pools] >= acc)
        held = dec.item_mask & (replicas[slots] > 0)
        to = np.argmin(np.where(room, unit, np.inf), axis=1)
        src = np.argmax(np.where(held, unit, -np.inf), axis=1)
        saving = np.where(room[rows, to] & held[rows, src], unit[rows, src] - unit[rows, to], 0.0)
        item = int(np.argmax(saving))
        if saving[item] <= 1e-12:
            return moves
        j_from, j_to = int(slots[item, src[item]]), int(slots[item, to[item]])
        a = int(dec.item_acc[item])
        take = min(int(replicas[j_from]), int(rem[index.t_pool[j_to]]) // a)
        replicas[j_from] -= take
        replicas[j_to] += take
        rem[index.t_pool[j_from]] += take * a
        rem[index.t_pool[j_to]] -= take * a
        moves += 1
    return moves
