"""Fast planning by decomposition: per-model columns, Lagrangian prices on pools, greedy repair.

Without pool capacity every model is an independent small covering problem. Its replicas are
grouped into *items*: one per variant, or, for a model with ``spot_max_fraction < 1``, one per
(variant, spot or not). Replicas of one item are interchangeable except for the price of the pool
they land on, so for given pool prices an item's replicas all go to its cheapest pool. A
*column* is a count per item; we enumerate every *minimal* column (no replica can be removed
without breaking cover, minimum replicas or the spot share), which contains an optimum for any
non-negative prices (dropping a replica never costs more). Items are capped at
``max(ceil(target / capacity), min_replicas)`` replicas: a column with more is dominated by the
column of that one item alone.

Pool capacity couples the models. Relaxing it with prices ``lambda_p >= 0`` per accelerator gives
the Lagrangian bound ``L(lambda) = sum_m min_col cost_lambda(col) - sum_p lambda_p capacity_p``,
a proven lower bound on the optimum for every lambda, maximised by projected subgradient steps
(Polyak step towards the best plan found). A plan that respects capacity comes from a greedy
pass guided by the prices (models in order of priority and size take their cheapest column
given what is left, filling cheaper pools first), then a local search that re-plans one model
at a time at real prices. The proven gap is (plan - bound) / plan.

If a model has too many minimal columns to enumerate (huge targets with many variants), its
columns are enumerated over its best few items only and its share of the bound uses a
relaxation (cost per capacity of the cheapest item), so the bound stays valid.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from infleet.core.plan_index import (
    RPS_TOLERANCE,
    TIE_BREAK_PER_ACCELERATOR_HOUR,
    BoolArray,
    FleetIndex,
    FloatArray,
    IntArray,
)

COLUMN_LIMIT = 4_000
"""Most candidate count vectors examined per model before falling back to a relaxed bound."""

EXACT_COLUMN_LIMIT = 100_000
"""The same limit on small fleets, which must be solved exactly (the master program is exact
only when every model's columns are all there)."""

_INF = np.inf

_SMALL_GRID = 32
"""Grids up to this many points are walked in plain Python (`_enumerate_small`)."""

_PRUNED_GRID = _SMALL_GRID
"""Grids over this many points are walked depth-first with pruning (`_enumerate_pruned`), with
the exact limit only. From 33 points on the walk beats the vectorised grid (same columns, same
order): columns of 100x10 seeds 0-31 7% faster (240 -> 224 ms CPU in all), seed 28 17.6 ->
15.7 ms, 31 12 -> 9.8 (it used to start at 4,096 points). Not with the large limit: on
1,000-model fleets it finds up to 3x more of the big models' columns, which halves the proven
gap but costs 50-100 ms more in columns and makes the LP no faster, so the 1 s target is better
served without it."""

_PRUNED_GRID_MAX = 500_000
"""...and only up to this many: the examples fleet's chat model (six items, ~965,000 points)
has 9,049 minimal columns, which took the walk 50-75 ms against ~10 ms for the truncated grid;
truncated, the model is written over its triples in the closing program instead
(`infleet.core.master.close_gap`), which stays exact. Seed 28's big model (~413,000 points)
walks in ~12 ms to 989 columns."""

_PRUNE_MARGIN = 1e-9
"""Slack (relative) a spot-share test must clear before a subtree is skipped on it, so float
rounding never skips a column the full test would keep."""


@dataclass
class ModelColumns:
    """Items and minimal columns of one model."""

    items: list[IntArray]
    """Eligible triples of each item."""
    accelerators: IntArray
    capacity: FloatArray
    spot: list[bool]
    columns: IntArray
    """(columns, items) replica counts."""
    exact: bool
    """Whether ``columns`` holds every minimal column (else the bound uses a relaxation)."""


@dataclass
class DecompositionResult:
    """Best plan found (replicas per triple, or None if the greedy could not place everyone)."""

    replicas: IntArray | None
    objective: float
    lower_bound: float
    iterations: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def gap(self) -> float:
        """Proven relative gap of ``replicas``."""
        if self.replicas is None:
            return 1.0
        if self.objective <= 1e-12:
            return 0.0
        return max(0.0, self.objective - self.lower_bound) / self.objective


def objective(index: FleetIndex, replicas: IntArray) -> float:
    """Cost with the tie-break, plus the churn penalty on eligible triples."""
    cost = float(
        (replicas * index.t_accelerators) @ (index.t_price + TIE_BREAK_PER_ACCELERATOR_HOUR)
    )
    churn = index.problem.churn_cost_per_replica
    if churn > 0:
        cost += churn * float(np.abs(replicas - index.t_current).sum())
    return cost


def _ceil(x: FloatArray) -> FloatArray:
    result: FloatArray = np.ceil(x - RPS_TOLERANCE * (1.0 + np.abs(x)))
    return result


def _ceil_scalar(x: float) -> int:
    """`_ceil` on one float, without numpy's per-call cost."""
    return math.ceil(x - RPS_TOLERANCE * (1.0 + abs(x)))


def _feasible(
    counts: IntArray,
    capacity: FloatArray,
    spot: FloatArray,
    target: float,
    low: int,
    high: int,
    fraction: float,
) -> BoolArray:
    cap = counts @ capacity
    n = counts.sum(axis=1)
    ok = (cap >= target - RPS_TOLERANCE * (1.0 + target)) & (n >= low) & (n <= high)
    if fraction < 1:
        ok &= (counts @ (capacity * spot)) - fraction * cap <= RPS_TOLERANCE
    result: BoolArray = ok
    return result


def enumerate_columns(
    capacity: FloatArray,
    spot: list[bool],
    target: float,
    low: int,
    high: int,
    fraction: float,
    preference: FloatArray,
    limit: int = COLUMN_LIMIT,
) -> tuple[IntArray, bool]:
    """Every minimal count vector over the items (or those over the best items if too many).

    ``preference`` ranks items (lower is better) for the restricted enumeration.
    """
    k = len(capacity)
    if target <= 0 and low == 0:
        return np.zeros((1, k), dtype=np.int64), True
    if k == 1:
        # One item: its only minimal column is just enough replicas (if within max).
        need = max(_ceil_scalar(target / float(capacity[0])), low)
        shape = (1, 1) if need <= high else (0, 1)
        return np.full(shape, need, dtype=np.int64), True
    spot_w = np.asarray(spot, dtype=np.float64)
    bound = np.array(
        [min(high, max(_ceil_scalar(target / c), low)) for c in capacity.tolist()], dtype=np.int64
    )
    pivots = [i for i in range(k) if not spot[i]] if fraction < 1 else list(range(k))
    pivot = max(pivots, key=lambda i: (bound[i], -i))
    others = [i for i in range(k) if i != pivot]
    exact = True
    order = sorted(others, key=lambda i: preference[i])
    grid_size = math.prod(int(bound[i]) + 1 for i in order)
    if limit >= EXACT_COLUMN_LIMIT and _PRUNED_GRID < grid_size <= _PRUNED_GRID_MAX:
        # A big grid holds few minimal columns: walk it depth-first, skipping every subtree whose
        # columns all have a removable replica, as long as that visits at most ``limit`` nodes.
        pruned = _enumerate_pruned(
            capacity.tolist(),
            spot,
            target,
            low,
            high,
            fraction,
            order,
            pivot,
            bound.tolist(),
            limit,
        )
        if pruned is not None:
            return np.asarray(pruned, dtype=np.int64).reshape(len(pruned), k), True
    while order and math.prod(int(bound[i]) + 1 for i in order) > limit:
        order.pop()
        exact = False
    if math.prod(int(bound[i]) + 1 for i in order) <= _SMALL_GRID:
        small = _enumerate_small(
            capacity.tolist(), spot, target, low, high, fraction, order, pivot, bound.tolist()
        )
        return np.asarray(small, dtype=np.int64).reshape(len(small), k), exact
    grid = np.zeros((1, k), dtype=np.int64)
    if order:
        axes = np.indices([int(bound[i]) + 1 for i in order]).reshape(len(order), -1).T
        grid = np.zeros((len(axes), k), dtype=np.int64)
        grid[:, order] = axes
    cap_r = grid @ capacity
    n_r = grid.sum(axis=1)
    c_p = float(capacity[pivot])
    need = np.maximum(_ceil((target - cap_r) / c_p), low - n_r)
    if fraction < 1:
        spot_r = grid @ (capacity * spot_w)
        need = np.maximum(need, _ceil((spot_r / fraction - cap_r) / c_p))
    need = np.maximum(need, 0).astype(np.int64)
    keep = (need <= bound[pivot]) & (n_r + need <= high)
    grid = grid[keep]
    grid[:, pivot] = need[keep]
    grid = grid[_feasible(grid, capacity, spot_w, target, low, high, fraction)]
    minimal = np.ones(len(grid), dtype=bool)
    # The pivot's count is the least that meets every lower limit given the others, so one less
    # of it always breaks one: only the other items need the check (a column that slips
    # through within float tolerance is merely redundant, never wrong).
    for i in others:
        has = grid[:, i] > 0
        less = grid[has].copy()
        less[:, i] -= 1
        minimal[
            np.flatnonzero(has)[_feasible(less, capacity, spot_w, target, low, high, fraction)]
        ] = False
    return grid[minimal], exact


def _enumerate_small(
    capacity: list[float],
    spot: list[bool],
    target: float,
    low: int,
    high: int,
    fraction: float,
    order: list[int],
    pivot: int,
    bound: list[int],
) -> list[list[int]]:
    """`enumerate_columns`'s grid walk in plain Python, for grids of at most `_SMALL_GRID` points.

    Same candidates, same tests and the same order as the vectorised walk (numpy's fixed cost
    per call is most of the time on these small grids).
    """
    k = len(capacity)
    c_p = capacity[pivot]
    spot_c = [c if s else 0.0 for c, s in zip(capacity, spot, strict=True)]
    others = [i for i in range(k) if i != pivot]
    floor = target - RPS_TOLERANCE * (1.0 + target)
    tol = RPS_TOLERANCE
    found: list[list[int]] = []
    for combo in itertools.product(*(range(bound[i] + 1) for i in order)):
        counts = [0] * k
        cap_r = 0.0
        spot_r = 0.0
        n_r = 0
        for i, count in zip(order, combo, strict=True):
            counts[i] = count
            cap_r += count * capacity[i]
            spot_r += count * spot_c[i]
            n_r += count
        need = max(_ceil_scalar((target - cap_r) / c_p), low - n_r)
        if fraction < 1:
            if fraction <= 0 < spot_r:
                continue
            if fraction > 0:
                need = max(need, _ceil_scalar((spot_r / fraction - cap_r) / c_p))
        need = max(need, 0)
        if need > bound[pivot] or n_r + need > high:
            continue
        counts[pivot] = need
        cap = cap_r + need * c_p
        on_spot = spot_r + need * spot_c[pivot]
        n = n_r + need
        if not (
            cap >= floor and low <= n <= high and (fraction >= 1 or on_spot - fraction * cap <= tol)
        ):
            continue
        # Minimal: one replica less of any non-pivot item breaks a lower limit (the upper
        # ones only get easier).
        minimal = True
        for i in others:
            if counts[i] > 0:
                less = cap - capacity[i]
                if (
                    less >= floor
                    and n - 1 >= low
                    and (fraction >= 1 or on_spot - spot_c[i] - fraction * less <= tol)
                ):
                    minimal = False
                    break
        if minimal:
            found.append(counts)
    return found


def _enumerate_pruned(
    capacity: list[float],
    spot: list[bool],
    target: float,
    low: int,
    high: int,
    fraction: float,
    order: list[int],
    pivot: int,
    bound: list[int],
    limit: int,
) -> list[list[int]] | None:
    """`_enumerate_small`'s columns, found depth-first over ``order`` (None: over ``limit`` nodes).

    A partial count vector where some replica can already be removed whatever the remaining
    items add is not extended: every column below it is not minimal. Removing one replica of
    item ``i`` keeps cover and minimum replicas once ``cap - c_i >= target`` and ``n - 1 >= low``
    hold for the part counted so far (more replicas only add to both). It keeps the spot
    share too if ``i`` is a spot item (or there is no share), or if even all the spot capacity
    the remaining items could add leaves the share met without ``i``. Same columns in the same
    order as the full walk: the leaves use its arithmetic, in its order.
    """
    k = len(capacity)
    depth = len(order)
    c_p = capacity[pivot]
    spot_c = [c if s else 0.0 for c, s in zip(capacity, spot, strict=True)]
    others = [i for i in range(k) if i != pivot]
    floor = target - RPS_TOLERANCE * (1.0 + target)
    tol = RPS_TOLERANCE
    share = 0.0 < fraction < 1
    # Spot capacity the items from position d on could still add (the pivot is never spot
    # when there is a share).
    spot_left = [0.0] * (depth + 1)
    for d in range(depth - 1, -1, -1):
        spot_left[d] = spot_left[d + 1] + bound[order[d]] * spot_c[order[d]]
    found: list[list[int]] = []
    counts = [0] * k
    visited = 0

    # Per item, which of the tests below it can pass when it holds a replica: any item without
    # a share; with one, a spot item (removing it only lowers the spot share) or a non-spot one
    # (if the share still holds without it).
    as_spot = [share and spot[i] and (1 - fraction) * capacity[i] > _PRUNE_MARGIN for i in range(k)]
    as_plain = [share and not spot[i] for i in range(k)]

    # The leaf's arithmetic is `_enumerate_small`'s, written out (`_ceil_scalar` and `max`
    # inline: the walk is pure Python and these calls were a third of its time).
    ceil = math.ceil
    bound_p = bound[pivot]
    spot_p = spot_c[pivot]
    limited = fraction < 1

    def leaf(cap_r: float, spot_r: float, n_r: int) -> None:
        x = (target - cap_r) / c_p
        need = ceil(x - tol * (1.0 + abs(x)))
        if low - n_r > need:
            need = low - n_r
        if limited:
            if fraction <= 0 < spot_r:
                return
            if fraction > 0:
                x = (spot_r / fraction - cap_r) / c_p
                more = ceil(x - tol * (1.0 + abs(x)))
                if more > need:
                    need = more
        if need < 0:
            need = 0
        if need > bound_p or n_r + need > high:
            return
        cap = cap_r + need * c_p
        on_spot = spot_r + need * spot_p
        n = n_r + need
        if not (
            cap >= floor and low <= n <= high and (not limited or on_spot - fraction * cap <= tol)
        ):
            return
        for i in others:
            if counts[i] > 0:
                less = cap - capacity[i]
                if (
                    less >= floor
                    and n - 1 >= low
                    and (not limited or on_spot - spot_c[i] - fraction * less <= tol)
                ):
                    return
        column = counts.copy()
        column[pivot] = need
        found.append(column)

    def walk(d: int, cap_r: float, spot_r: float, n_r: int, least: list[float]) -> bool:
        nonlocal visited
        if d == depth:
            leaf(cap_r, spot_r, n_r)
            return True
        i = order[d]
        c = capacity[i]
        s_c = spot_c[i]
        holding = [
            min(least[0], c),
            min(least[1], c) if as_spot[i] else least[1],
            min(least[2], c) if as_plain[i] else least[2],
        ]
        deepest = d + 1 == depth
        spot_next = spot_left[d + 1]
        for count in range(bound[i] + 1):
            visited += 1
            if visited > limit:
                return False
            counts[i] = count
            cap = cap_r + count * c
            on_spot = spot_r + count * s_c
            n = n_r + count
            if n > high or (fraction <= 0 < on_spot):
                break
            now = holding if count else least
            # Some replica among the items so far can go whatever the rest adds: skip the
            # subtree. ``now`` holds the smallest capacity of an item holding replicas so far,
            # per test (any item without a share, spot, non-spot): the smaller the capacity, the
            # easier both tests pass, so only that item needs checking. (Written out: this runs
            # at every node.)
            if n - 1 >= low:
                if not share:
                    if cap - now[0] >= floor:
                        continue
                elif cap - now[1] >= floor:
                    continue
                else:
                    rest = cap - now[2]
                    if rest >= floor and on_spot + spot_next <= fraction * rest - _PRUNE_MARGIN * (
                        1.0 + cap
                    ):
                        continue
            if deepest:
                # walk(depth) only calls the leaf.
                leaf(cap, on_spot, n)
            elif not walk(d + 1, cap, on_spot, n, now):
                return False
        counts[i] = 0
        return True

    return found if walk(0, 0.0, 0.0, 0, [_INF, _INF, _INF]) else None


def model_columns(index: FleetIndex, m: int, limit: int = COLUMN_LIMIT) -> ModelColumns | None:
    """Items and minimal columns of model ``m`` (None if it has no eligible triple).

    ``limit`` caps the candidate count vectors examined (see `enumerate_columns`).
    """
    first, last = int(index.model_start[m]), int(index.model_start[m + 1])
    if first == last:
        return None
    # Plain lists: these models hold a handful of triples, where numpy's per-call cost dominates.
    variants = index.t_variant[first:last].tolist()
    spots = index.t_spot[first:last].tolist()
    prices = index.t_price[first:last].tolist()
    fraction = float(index.spot_fraction[m])
    sizes = index.t_accelerators[first:last].tolist()
    room = index.pool_accelerators[index.t_pool[first:last]].tolist()
    # A triple whose pool cannot hold even one replica never carries any: leaving it out of
    # the items keeps the master LP from splitting replicas onto it (a tighter bound).
    usable = [j for j in range(last - first) if sizes[j] <= room[j]]
    if not usable or (fraction < 1 and all(spots[j] for j in usable)):
        # Nothing fits anywhere (or only spot pools, which a spot share below 1 cannot use
        # alone): keep every triple, as before; the plan reports the shortage.
        usable = list(range(last - first))
    split = fraction < 1 and any(spots[j] for j in usable)
    groups: dict[tuple[int, bool], list[int]] = {}
    for j in usable:
        key = (variants[j], spots[j] if split else False)
        groups.setdefault(key, []).append(j)
    keys = sorted(groups)
    heads = [first + groups[key][0] for key in keys]
    items = [np.asarray(groups[key], dtype=np.int64) + first for key in keys]
    accelerators = index.t_accelerators[heads]
    capacity = index.t_capacity[heads]
    preference = np.array(
        [
            float(accelerators[i]) * min(prices[j] for j in groups[key]) / float(capacity[i])
            for i, key in enumerate(keys)
        ]
    )
    columns, exact = enumerate_columns(
        capacity,
        [key[1] for key in keys],
        float(index.target[m]),
        int(index.min_replicas[m]),
        int(index.max_replicas[m]),
        fraction if split else 1.0,
        preference,
        limit,
    )
    return ModelColumns(items, accelerators, capacity, [k[1] for k in keys], columns, exact)


class Decomposition:
    """Columns of every model flattened into arrays for vectorised pricing."""

    def __init__(self, index: FleetIndex, column_limit: int = COLUMN_LIMIT) -> None:
        self.index = index
        self.models: list[ModelColumns | None] = [
            model_columns(index, m, column_limit) for m in range(index.n_models)
        ]
        self.active = [m for m, mc in enumerate(self.models) if mc is not None]
        item_triples: list[IntArray] = []
        item_acc: list[int] = []
        col_counts: list[IntArray] = []
        col_items: list[IntArray] = []
        starts = [0]
        width = max((len(self.models[m].items) for m in self.active), default=1)  # type: ignore[union-attr]
        self.inexact: list[int] = []
        item_pos: list[int] = []
        for pos, m in enumerate(self.active):
            mc = self.models[m]
            assert mc is not None
            first = len(item_triples)
            item_triples.extend(mc.items)
            item_pos.extend([pos] * len(mc.items))
            item_acc.extend(mc.accelerators.tolist())
            g, k = mc.columns.shape
            counts = np.zeros((g, width), dtype=np.int64)
            counts[:, :k] = mc.columns
            ids = np.full((g, width), -1, dtype=np.int64)
            ids[:, :k] = np.arange(first, first + k)
            col_counts.append(counts)
            col_items.append(ids)
            starts.append(starts[-1] + g)
            if not mc.exact:
                self.inexact.append(pos)
        self.n_items = len(item_triples)
        depth = max((len(t) for t in item_triples), default=1)
        self.item_triples = np.full((self.n_items, depth), -1, dtype=np.int64)
        for i, t in enumerate(item_triples):
            self.item_triples[i, : len(t)] = t
        self.item_mask = self.item_triples >= 0
        self.item_acc = np.asarray(item_acc, dtype=np.int64)
        self.item_pos = np.asarray(item_pos, dtype=np.int64)
        """Position in ``active`` of each item's model."""
        self.item_cap = (
            index.t_capacity[np.maximum(self.item_triples[:, 0], 0)]
            if self.n_items
            else np.zeros(0)
        )
        self.col_counts = (
            np.concatenate(col_counts) if col_counts else np.zeros((0, width), np.int64)
        )
        # Padding points at a dummy item (index n_items) whose cost is always 0.
        ids = np.concatenate(col_items) if col_items else np.zeros((0, width), np.int64)
        self.col_items = np.where(ids < 0, self.n_items, ids)
        self.col_start = np.asarray(starts, dtype=np.int64)
        self.col_model = np.repeat(np.arange(len(self.active)), np.diff(self.col_start))

    def price_items(
        self, lam: FloatArray, extra: FloatArray | None = None
    ) -> tuple[FloatArray, IntArray]:
        """Per item: cost of one replica at its cheapest pool under ``lam``, and that triple.

        ``extra`` adds a price per accelerator and triple (the closing step's pool cuts).
        """
        index = self.index
        safe = np.maximum(self.item_triples, 0)
        per_acc = index.t_price[safe] + TIE_BREAK_PER_ACCELERATOR_HOUR + lam[index.t_pool[safe]]
        if extra is not None:
            per_acc = per_acc + extra[safe]
        per_acc = np.where(self.item_mask, per_acc, _INF)
        best = np.argmin(per_acc, axis=1)
        rows = np.arange(self.n_items)
        return per_acc[rows, best] * self.item_acc, self.item_triples[rows, best]

    def best_columns(self, item_cost: FloatArray) -> tuple[FloatArray, IntArray]:
        """Per active model: cheapest column's cost and its global column index."""
        padded = np.append(item_cost, 0.0)
        cost = (self.col_counts * padded[self.col_items]).sum(axis=1)
        mins = np.minimum.reduceat(cost, self.col_start[:-1])
        hit = np.flatnonzero(cost <= mins[self.col_model])
        first = np.unique(self.col_model[hit], return_index=True)[1]
        return mins, hit[first]

    def lagrangian(self, lam: FloatArray) -> tuple[float, FloatArray, IntArray, IntArray]:
        """Bound L(lam), pool usage of the relaxed optimum, chosen columns, chosen triples."""
        index = self.index
        item_cost, item_triple = self.price_items(lam)
        mins, chosen = self.best_columns(item_cost)
        value = self.bound_from(lam, item_cost, mins)
        counts = self.col_counts[chosen]
        ids = self.col_items[chosen]
        valid = ids < self.n_items
        triples = item_triple[np.where(valid, ids, 0)]
        weights = np.where(valid, counts * self.item_acc[np.where(valid, ids, 0)], 0)
        usage: FloatArray = np.bincount(
            index.t_pool[triples.ravel()],
            weights=weights.ravel().astype(np.float64),
            minlength=len(index.pool_accelerators),
        ).astype(np.float64)
        return value, usage, chosen, item_triple

    def bound_from(self, lam: FloatArray, item_cost: FloatArray, mins: FloatArray) -> float:
        """L(lam) from `price_items`' item costs and `best_columns`' cheapest costs at ``lam``."""
        shares = mins.copy()
        for pos in self.inexact:
            shares[pos] = self._relaxed_bound(pos, item_cost)
        return float(shares.sum() - lam @ self.index.pool_accelerators)

    def _relaxed_bound(self, pos: int, item_cost: FloatArray) -> float:
        """Linear-relaxation bound of one model's covering problem (for inexact models).

        Capacity costs at least the best non-spot cost per rps, or a blend with the best spot
        one in the proportion the spot share allows, whichever is cheaper.
        """
        m = self.active[pos]
        mc = self.models[m]
        assert mc is not None
        first = int(self.col_items[self.col_start[pos], 0])
        cost = item_cost[first : first + len(mc.items)]
        ratio = cost / mc.capacity
        spot = np.asarray(mc.spot, dtype=bool)
        fraction = float(self.index.spot_fraction[m])
        plain = float(ratio[~spot].min()) if (~spot).any() else np.inf
        best = plain
        if spot.any():
            best = min(plain, fraction * float(ratio[spot].min()) + (1 - fraction) * plain)
        target = float(self.index.target[m])
        low = int(self.index.min_replicas[m])
        return max(target * best, low * float(cost.min()))
