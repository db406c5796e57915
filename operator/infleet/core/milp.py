"""The fleet planning problem as a mixed-integer program, solved by HiGHS (`scipy.optimize.milp`).

Used as the exact fallback of `plan_fleet` and as the reference solver in tests and benchmarks.

Variables: replicas ``n`` per eligible triple (integer), unmet capacity ``u`` per model, missing
minimum replicas ``s`` per model, and ``d >= |n - current|`` for triples that run replicas now.
Priorities are lexicographic, so the program is solved in stages: first with ``u = s = 0`` (the
usual case: everything fits, one solve); if that is infeasible, for each priority level from the
highest down, minimise the level's total unmet capacity, then its missing minimum replicas, each
time fixing the optimum as a constraint for the stages after it; last, minimise cost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix, vstack

from infleet.core.plan_index import (
    RPS_TOLERANCE,
    TIE_BREAK_PER_ACCELERATOR_HOUR,
    FleetIndex,
    FloatArray,
    IntArray,
)

_FIX_SLACK = 1e-5
"""Slack (relative, and absolute near 0) when a stage's optimum constrains later stages: larger
than HiGHS's feasibility tolerance (1e-6), so the fixed optimum stays feasible."""

_HIGHS_INFEASIBLE = 2
_HIGHS_ERROR = 4


@dataclass(frozen=True)
class MilpResult:
    """Replicas per eligible triple and what HiGHS proved about them."""

    replicas: IntArray
    gap: float
    """Largest relative gap left by any stage (0 when every stage was proven optimal)."""
    lower_bound: float
    """HiGHS's bound on the final (cost + churn) objective, in the objective's units."""
    stages: int
    seconds: float
    found: bool = True
    """Whether the last stage returned a solution (False: timeout or error; ``replicas`` is then
    an earlier stage's solution or all zeros)."""


class _Program:
    """Rows and columns of the program; stages only change bounds and the objective."""

    def __init__(self, index: FleetIndex) -> None:
        self.index = index
        t, m = index.n_triples, index.n_models
        self.churned = np.flatnonzero(index.t_current > 0)
        self.n_vars = t + 2 * m + len(self.churned)
        self.u0, self.s0, self.d0 = t, t + m, t + 2 * m
        rows: list[int] = []
        cols: list[int] = []
        vals: list[float] = []
        lo: list[float] = []
        hi: list[float] = []

        def row(entries: list[tuple[int, float]], low: float, high: float) -> None:
            r = len(lo)
            for c, v in entries:
                rows.append(r)
                cols.append(c)
                vals.append(v)
            lo.append(low)
            hi.append(high)

        for k in range(m):
            trip = list(index.triples_of(k))
            if not trip:
                continue  # nothing can be placed: its shortfall is a constant
            target = float(index.target[k])
            if target > 0:
                cover = [(j, float(index.t_capacity[j])) for j in trip]
                row([*cover, (self.u0 + k, 1.0)], target - RPS_TOLERANCE * (1 + target), np.inf)
            if index.min_replicas[k] > 0:
                row([(j, 1.0) for j in trip] + [(self.s0 + k, 1.0)], index.min_replicas[k], np.inf)
            row([(j, 1.0) for j in trip], -np.inf, float(index.max_replicas[k]))
            f = float(index.spot_fraction[k])
            if f < 1 and any(index.t_spot[j] for j in trip):
                share = [(j, (float(index.t_spot[j]) - f) * index.t_capacity[j]) for j in trip]
                row(share, -np.inf, RPS_TOLERANCE)
        for p in range(len(index.pool_accelerators)):
            on_pool = np.flatnonzero(index.t_pool == p)
            if len(on_pool):
                usage = [(int(j), float(index.t_accelerators[j])) for j in on_pool]
                row(usage, -np.inf, float(index.pool_accelerators[p]))
        for i, j in enumerate(self.churned):
            cur = float(index.t_current[j])
            row([(self.d0 + i, 1.0), (int(j), -1.0)], -cur, np.inf)
            row([(self.d0 + i, 1.0), (int(j), 1.0)], cur, np.inf)
        self.matrix = coo_matrix((vals, (rows, cols)), shape=(len(lo), self.n_vars)).tocsr()
        self.row_lo = np.asarray(lo, dtype=np.float64)
        self.row_hi = np.asarray(hi, dtype=np.float64)
        self.extra: list[tuple[FloatArray, float]] = []

        per_pool = index.pool_accelerators[index.t_pool] // index.t_accelerators
        self.ub = np.zeros(self.n_vars)
        self.ub[:t] = np.minimum(index.max_replicas[index.t_model], per_pool)
        self.ub[self.u0 : self.s0] = index.target
        self.ub[self.s0 : self.d0] = index.min_replicas
        self.ub[self.d0 :] = np.inf
        self.integrality = np.zeros(self.n_vars)
        self.integrality[:t] = 1

    def cost_objective(self) -> FloatArray:
        """Cost with the tie-break towards fewer accelerators, plus the churn penalty."""
        index = self.index
        c = np.zeros(self.n_vars)
        c[: index.n_triples] = index.t_accelerators * (
            index.t_price + TIE_BREAK_PER_ACCELERATOR_HOUR
        )
        churn = index.problem.churn_cost_per_replica
        if churn > 0:
            fresh = np.ones(index.n_triples, dtype=bool)
            fresh[self.churned] = False
            c[: index.n_triples] += churn * fresh
            c[self.d0 :] = churn
        return c

    def solve(
        self, objective: FloatArray, ub: FloatArray, gap: float, seconds: float
    ) -> tuple[int, FloatArray | None, float, float, float]:
        """One HiGHS run: (status, x, objective value, dual bound, relative gap)."""
        matrix, lo, hi = self.matrix, self.row_lo, self.row_hi
        if self.extra:
            extra = np.vstack([e for e, _ in self.extra])
            matrix = vstack([matrix, coo_matrix(extra)]).tocsr()
            lo = np.concatenate([lo, np.full(len(self.extra), -np.inf)])
            hi = np.concatenate([hi, [b for _, b in self.extra]])
        constraints = [LinearConstraint(matrix, lo, hi)] if matrix.shape[0] else []
        for presolve in (True, False):
            result = milp(
                objective,
                integrality=self.integrality,
                bounds=Bounds(np.zeros(self.n_vars), ub),
                constraints=constraints,
                options={
                    "time_limit": max(seconds, 0.01),
                    "mip_rel_gap": gap,
                    "presolve": presolve,
                },
            )
            if result.status != _HIGHS_ERROR:
                break
            # HiGHS occasionally reports a solve error after presolve; once more without it.
        x = None if result.x is None else np.asarray(result.x, dtype=np.float64)
        value = float(result.fun) if result.fun is not None else np.inf
        bound = float(getattr(result, "mip_dual_bound", value) or 0.0)
        rel = float(getattr(result, "mip_gap", 0.0) or 0.0)
        if result.status == 0:
            rel = min(rel, gap)
        return int(result.status), x, value, bound, rel


def solve_milp(index: FleetIndex, *, mip_rel_gap: float, time_limit_seconds: float) -> MilpResult:
    """Solve the lexicographic program with HiGHS within the time limit (best found on timeout)."""
    start = time.perf_counter()
    deadline = start + time_limit_seconds
    program = _Program(index)
    t = index.n_triples
    cost = program.cost_objective()

    def left() -> float:
        return deadline - time.perf_counter()

    def finish(
        x: FloatArray | None, gap: float, bound: float, stages: int, found: bool = True
    ) -> MilpResult:
        replicas = np.zeros(t, dtype=np.int64) if x is None else np.rint(x[:t]).astype(np.int64)
        return MilpResult(replicas, gap, bound, stages, time.perf_counter() - start, found)

    # Stage 0: everything fits (no unmet capacity, no missing minimum replicas).
    strict = program.ub.copy()
    strict[program.u0 : program.d0] = 0
    status, x, _, bound, gap = program.solve(cost, strict, mip_rel_gap, left())
    if x is not None:
        return finish(x, gap, bound, 1)
    if status != _HIGHS_INFEASIBLE and left() <= 0:
        return finish(None, 1.0, 0.0, 1, found=False)

    worst_gap, stages = 0.0, 1
    last: FloatArray | None = None
    """Latest stage's solution: feasible for every later stage's constraints but not optimal."""
    for level in sorted(set(index.priority.tolist()), reverse=True):
        members = np.flatnonzero(index.priority == level)
        for offset, total in ((program.u0, index.target), (program.s0, index.min_replicas)):
            if float(total[members].sum()) <= 0:
                continue
            objective = np.zeros(program.n_vars)
            objective[offset + members] = 1.0
            status, x, value, _, gap = program.solve(objective, program.ub, mip_rel_gap, left())
            stages += 1
            if x is None:
                return finish(last, 1.0, 0.0, stages, found=False)
            last = x
            worst_gap = max(worst_gap, gap)
            if value <= _FIX_SLACK:
                # Nothing missing at this level: fix by bounds (a near-zero row upsets HiGHS).
                program.ub[offset + members] = 0.0
            else:
                program.extra.append((objective, value + _FIX_SLACK * (1 + abs(value))))
    status, x, _, bound, gap = program.solve(cost, program.ub, mip_rel_gap, max(left(), 0.05))
    stages += 1
    if x is None:
        return finish(last, 1.0, 0.0, stages, found=False)
    return finish(x, max(worst_gap, gap), bound, stages)
