"""Rounding cuts on pool capacity rows: what the LP bound misses about whole replicas.

A pool row reads ``sum_t a_t n_t <= C`` over integer replicas ``n_t >= 0`` (``a_t``
accelerators each). Divided by ``d`` and rounded (mixed-integer rounding, MIR), it gives

    sum_t (floor(a_t / d) + max(0, f_t - f) / (1 - f)) n_t <= floor(C / d)

with ``f_t`` and ``f`` the fractional parts of ``a_t / d`` and ``C / d``. Every integer plan
within the pool satisfies it; an LP plan need not: a spot pool of 47 accelerators holds at most
five 8-accelerator replicas, where the LP packs 5.5 of them (100x10 seed 28's pool 8). The
closing step (:func:`infleet.core.master.close_gap`) re-solves the master LP with the rows its
plan breaks, from the LP's basis, and takes the bound and reduced costs from that solve when the
bound is higher (adding them to the restricted programs as well gained nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from infleet.core.plan_index import FloatArray, IntArray

_DIVISORS = (2, 3, 4, 5, 6, 7, 8, 16)
"""Divisors tried per pool; replicas hold 1-8 accelerators on the bench's fleets."""

_VIOLATION = 1e-6
"""A cut is kept only if the LP plan breaks it by more than this (in replicas)."""


@dataclass(frozen=True)
class PoolCuts:
    """Cut rows over triples: row ``k`` reads ``sum coef[k, t] n_t <= rhs[k]`` on ``pool[k]``."""

    pool: IntArray
    coef: FloatArray
    """Dense, one row per cut, one column per triple (zero off the cut's pool)."""
    rhs: FloatArray


def mir_coefficients(accelerators: IntArray, capacity: int, divisor: int) -> tuple[FloatArray, int]:
    """MIR coefficients of ``sum a_t n_t <= capacity`` divided by ``divisor``, and the rhs."""
    scaled = accelerators / divisor
    down = np.floor(scaled)
    frac_rhs = capacity / divisor - capacity // divisor
    rhs = capacity // divisor
    if frac_rhs <= 0:
        # No rounding on the right: the row divided by d is the original row, weaker if any
        # coefficient rounded down.
        return scaled, rhs
    extra = np.maximum(0.0, (scaled - down) - frac_rhs) / (1.0 - frac_rhs)
    return down + extra, rhs


def violated_pool_cuts(
    t_pool: IntArray,
    t_accelerators: IntArray,
    pool_accelerators: IntArray,
    replicas: FloatArray,
) -> PoolCuts:
    """The MIR cuts (see the module docstring) the LP ``replicas`` break, most broken per pool.

    One cut per pool at most, the divisor whose cut the LP plan breaks by the most replicas.
    """
    n_triples = len(t_pool)
    pools: list[int] = []
    rows: list[FloatArray] = []
    rhs: list[float] = []
    for pool in range(len(pool_accelerators)):
        on = np.flatnonzero(t_pool == pool)
        if len(on) == 0:
            continue
        acc = t_accelerators[on]
        x = replicas[on]
        if np.all(np.abs(x - np.rint(x)) <= _VIOLATION):
            # Whole replicas on this pool obey every valid inequality of it.
            continue
        cap = int(pool_accelerators[pool])
        best: tuple[float, FloatArray, int] | None = None
        for divisor in _DIVISORS:
            if divisor > acc.max():
                break
            coef, right = mir_coefficients(acc, cap, divisor)
            excess = float(coef @ x) - right
            if excess > _VIOLATION and (best is None or excess > best[0]):
                best = (excess, coef, right)
        if best is not None:
            row = np.zeros(n_triples)
            row[on] = best[1]
            pools.append(pool)
            rows.append(row)
            rhs.append(float(best[2]))
    return PoolCuts(
        np.asarray(pools, dtype=np.int64),
        np.asarray(rows, dtype=np.float64).reshape(len(rows), n_triples),
        np.asarray(rhs, dtype=np.float64),
    )
