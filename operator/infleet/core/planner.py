"""Fleet planner: how many replicas of each model variant run on which pool, at the lowest cost.

One decision for the whole fleet (design brief, section 4). Integer replicas ``n[m, v, p]`` for
every eligible triple: the variant's accelerator type is the pool's, the variant does not
exclude the pool, and the variant's capacity at the SLO is positive.

Constraints, per model ``m``:

* served capacity ``sum n * capacity_rps >= required_rps = demand_rps / target_utilization``;
* ``min_replicas <= sum n <= max_replicas`` (total over all variants and pools);
* capacity on spot pools ``<= spot_max_fraction *`` the model's total served capacity;

and per pool: accelerators used by all models ``<= accelerators``.

Objective: minimise ``sum n * accelerators_per_replica * price(pool)`` where ``price`` is the
pool's ``cost_per_accelerator_hour``, or 0 on reserved pools (prepaid: marginal cost 0 up to
their size). Ties are broken towards fewer accelerators (1e-6 $/h per accelerator is added to
every price) so reserved capacity is not handed out for nothing. With ``current`` and a positive
``churn_cost_per_replica``, ``churn * sum |n - current|`` is added (the operator uses it so that
small gains do not reshuffle running replicas). Reported ``cost_per_hour`` is the *marginal*
cost (reserved pools count 0) and never includes the churn penalty.

Shortage (not everything fits) is resolved lexicographically by priority: for each priority
level from the highest down, first minimise the level's total unmet capacity, then the level's
total missing minimum replicas; only then do lower levels get anything, and cost is minimised
last. So ``min_replicas`` is honoured whenever capacity allows, and under shortage it ranks just
below the demand of models of the same priority (and above everything of lower priority).

Per-model outcome: ``capacity_rps`` is the capacity placed; ``unmet_rps = max(0, required_rps -
capacity_rps)``, in capacity units (the capacity still missing, including the utilisation
headroom), so adding ``unmet_rps`` of capacity removes the shortfall. A shortfall (unmet > 0 or
fewer than min replicas) carries a reason:

* ``Infeasible``: no variant can meet the SLO (capacity 0 on every variant);
* ``NoMatchingPool``: no pool matches any variant with positive capacity (a model whose only
  matching pools are spot and whose spot share is below 1 counts as having none);
* ``MaxReplicas``: even ``max_replicas`` replicas of the best variants cannot reach the required
  capacity, and the model got all that ``max_replicas`` allows (it is planned for that much);
* ``CapacityShortage``: the pools it could use are full.

Algorithm (``plan_fleet``):

1. Columns (`infleet.core.decompose`): per model, every *minimal* count vector over its items
   (variant, or variant x spot-ness), enumerated exactly (on small fleets up to
   ``EXACT_COLUMN_LIMIT`` candidates per model; on large ones the biggest models may be
   truncated, and their share of the bound is then relaxed).
2. Master LP (`infleet.core.master`): one HiGHS LP over the columns and the per-pool split of
   every item (the Dantzig-Wolfe master), without HiGHS's presolve (it costs more than it
   saves: ~30% at 100 models, 0-25% at 1,000 through the direct binding of
   `infleet.core.planner_highs`; on small fleets by the dual simplex with Dantzig pricing and
   no scaling, ~20% faster there). Its pool duals are the optimal pool prices;
   the Lagrangian value recomputed exactly at those prices is the proven lower bound. On
   large fleets the same LP is first solved by column generation over whole-model plans
   (`infleet.core.master_dw`: 1.5-3x faster at 1,000 models, and usable if stopped early);
   the full LP runs only if that fails (the fleet may not fit).
3. Rounding: models the LP placed integrally keep their placement; split ones keep their whole
   replicas and place the rest cheapest-first; fractional ones are re-placed against what is
   left; then replicas move to cheaper pools with room (`infleet.core.repair`) and touched
   models are re-planned at real prices (`infleet.core.greedy`). If that plan does not meet
   the bound, it is polished (`infleet.core.planner_polish`): models that could use room left
   on cheaper pools are re-planned, and pools with room are repacked by bounded knapsack (a big
   replica in, small ones out), until nothing improves; half the fleets that met the bound only
   after HiGHS now meet it here, and the others reach HiGHS with a closer plan (a smaller
   closing program).
4. If the proven gap exceeds the target (``1e-9`` on small fleets of at most ``EXACT_TRIPLES``
   eligible triples, ``gap_tolerance`` otherwise): reduced-cost fixing at the LP prices drops
   every column and pool that cannot be part of a cheaper plan, and HiGHS solves the integer
   master on what is left: only the surviving variables and their rows, plus a cutoff row
   (cost below the plan in hand), so "infeasible" proves the plan optimal. Smaller gaps above
   the bound are guessed first (0.15%, 0.6%, 1.5%, or a quarter of the gap in hand when none
   of those is small enough): fewer variables survive, and each such program is exact below
   its cutoff ("infeasible" there raises the bound and the next guess is tried). HiGHS runs
   them without its feasibility jump heuristic (a first plan is worth nothing to a program
   with a cutoff). Exact without churn; with churn, small fleets go to HiGHS on the full
   program.
5. Fallbacks: if the LP is infeasible (not everything fits), the lexicographic program goes to
   HiGHS (`infleet.core.milp`); if the LP fails (time, numerics) or no model needs anything, the
   older subgradient decomposition (`infleet.core.lagrange`) runs, with HiGHS after it. On a
   large fleet the LP gets the time left minus half of what the index and columns took (that
   measures how fast the machine is right now), so rounding and the report still fit; if it
   runs out anyway and less than a second is left, a greedy plan at list prices is returned
   with its gap against the Lagrangian bound at zero prices (`greedy-fallback`).

6. Last resort: when HiGHS comes back without a solution (time limit, error) and no other path
   produced a plan, a deterministic greedy (`infleet.core.fallback`) places the models by
   priority, each as much as fits; the better of it and whatever HiGHS left is returned, so a
   timeout never yields an empty plan.

``SolverInfo.name`` says which path produced the plan: ``decomposition`` (steps 1-3 proved the
gap), ``decomposition+highs`` (HiGHS closed or tried to close the gap after them), ``highs``
(shortage: HiGHS alone) or ``greedy-fallback`` (step 6; its gap is 1 unless a proven bound
exists and the plan serves every model).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from infleet.core.decompose import COLUMN_LIMIT, EXACT_COLUMN_LIMIT, Decomposition, objective
from infleet.core.fallback import fallback_replicas, shortfall_key
from infleet.core.greedy import greedy
from infleet.core.lagrange import greedy_order, solve_decomposition
from infleet.core.master import MasterLP, close_gap, round_master, solve_master_lp
from infleet.core.master_dw import Stopped, solve_master_dw
from infleet.core.milp import solve_milp
from infleet.core.plan_index import RPS_TOLERANCE, FleetIndex, IntArray, build_index, covers
from infleet.core.plan_report import build_plan
from infleet.core.plan_types import (
    CapacityType,
    FleetPlan,
    ModelKey,
    ModelOutcome,
    ModelRequest,
    Placement,
    PlacementKey,
    PlanProblem,
    PoolSupply,
    Reason,
    SolverInfo,
    VariantOption,
)
from infleet.core.planner_polish import polish
from infleet.core.repair import fill_cheaper_pools

__all__ = [
    "EXACT_TRIPLES",
    "CapacityType",
    "FleetPlan",
    "ModelKey",
    "ModelOutcome",
    "ModelRequest",
    "Placement",
    "PlacementKey",
    "PlanProblem",
    "PoolSupply",
    "Reason",
    "SingleTypeComparison",
    "SolverInfo",
    "VariantOption",
    "compare_single_type",
    "plan_fleet",
    "single_type_costs",
    "solve_reference_milp",
]

EXACT_TRIPLES = 2_000
"""Fleets with at most this many eligible (model, variant, pool) triples are solved to proven
optimality (gap 0 up to HiGHS's 1e-9 tolerance) whenever the decomposition leaves a gap."""

_EXACT_GAP = 1e-9
_MIN_HIGHS_SHARE = 0.25
"""Share of the time limit that must be left for the HiGHS fallback to be worth starting."""
_RESERVE_SHARE = 0.5
"""On large fleets the master LP may use the time left minus this share of the time already
spent (index and columns): enough for rounding and the report, or for `_quick_plan`."""
_SECOND_GREEDY = 2.0
"""A second greedy (at list prices) runs after the one at the stopped column generation's
prices only if at least this many times the first one's duration is left (room for it and
the report)."""
_TINY_TRIPLES = 64
"""Fleets with at most this many eligible triples and truncated columns skip the closing
program for HiGHS on the whole program."""
_REPORT_SHARE = 0.2
"""On large fleets rounding and polish stop this share of the index and columns' time before
the deadline, so the report fits (it overran by ~0.15 s at load 3.5 without it)."""
_MIN_HIGHS_SECONDS = 1.0
"""...and, after the master LP on a large fleet, at least this long (HiGHS needs seconds there;
a shorter run only overruns the limit)."""


def plan_fleet(
    problem: PlanProblem, *, gap_tolerance: float = 0.01, time_limit_seconds: float = 5.0
) -> FleetPlan:
    """Plan the whole fleet (see the module docstring for the exact semantics).

    ``gap_tolerance`` is the proven relative gap accepted on large fleets before HiGHS is asked
    to close it; ``time_limit_seconds`` bounds the whole call (the best plan found is returned).
    """
    start = time.perf_counter()
    deadline = start + time_limit_seconds
    index = build_index(problem)
    small = index.n_triples <= EXACT_TRIPLES
    wanted = _EXACT_GAP if small else gap_tolerance
    dec = Decomposition(index, EXACT_COLUMN_LIMIT if small else COLUMN_LIMIT)
    lp: MasterLP | str = "failed"
    hint: Stopped | None = None
    # Rounding and polish stop early enough for the report on large fleets (~0.1 of what the
    # index and columns took; 0.2 to be safe under load).
    stop = deadline - (0.0 if small else _REPORT_SHARE * (time.perf_counter() - start))
    if dec.active:
        left = deadline - time.perf_counter()
        if not small:
            # Keep back time for what follows the LP (rounding, report; or the quick plan if
            # the LP runs out of time): about half of what the index and columns took, which
            # measures how fast this machine is right now.
            reserve = _RESERVE_SHARE * (time.perf_counter() - start)
            left -= reserve
            if left > 0:
                # Column generation: 1.5-3x faster here, and a feasible LP solution and a
                # valid bound if stopped early; "failed" if it may not fit (or no time).
                generated = solve_master_dw(dec, deadline - reserve)
                if isinstance(generated, Stopped):
                    hint = generated
                else:
                    lp = generated
                left = deadline - reserve - time.perf_counter()
        if left > 0 and not isinstance(lp, MasterLP) and hint is None:
            # Not after a stop for time: the full LP is slower still.
            lp = solve_master_lp(dec, left, presolve=False, simple_pricing=small)
    if isinstance(lp, MasterLP):
        planned = _plan_from_master(index, dec, lp, wanted, start, time_limit_seconds, stop)
        if planned is not None:
            return planned
    if lp == "infeasible":
        # Not everything fits: the lexicographic program goes straight to HiGHS.
        left = max(deadline - time.perf_counter(), 0.05)
        exact = solve_milp(index, mip_rel_gap=wanted, time_limit_seconds=left)
        if not exact.found:
            # Under shortage no cost bound is known: the fallback's gap is reported as 1.
            return _best_or_fallback(index, dec, exact.replicas, "highs", exact.gap, None, start)
        return _finish(index, exact.replicas, "highs", start, exact.gap)
    if not small and dec.active and deadline - time.perf_counter() < _MIN_HIGHS_SECONDS:
        # A large fleet whose LP did not finish in time: neither the subgradient nor HiGHS
        # would do better before the deadline.
        return _quick_plan(index, dec, start, stop, hint)
    return _subgradient_path(index, dec, wanted, small, start, deadline, time_limit_seconds)


def _quick_plan(
    index: FleetIndex,
    dec: Decomposition,
    start: float,
    stop: float,
    hint: Stopped | None = None,
) -> FleetPlan:
    """A greedy plan for a large fleet out of time, with a proven gap.

    Models take their cheapest column that fits at the given pool prices, highest priority and
    dearest first (`infleet.core.greedy.greedy`), or, if one does not fit, the priority-ordered
    fallback places every model as much as fits; replicas then move to cheaper pools with
    room. The prices are those a stopped column generation reached (``hint``), then list
    prices if that greedy fails or, when there is time for a second greedy, if it is cheaper.
    The bound is the better of the Lagrangian value at zero pool prices (every model at its own
    optimum) and the column generation's. The moves to cheaper pools stop at ``stop``, which
    leaves time for the report.
    """
    zero = np.zeros(len(index.pool_price))
    bound = dec.lagrangian(zero)[0]
    tries = [zero] if hint is None else [hint.prices, zero]
    if hint is not None:
        bound = max(bound, hint.bound)
    best: IntArray | None = None
    for n, prices in enumerate(tries):
        began = time.perf_counter()
        placed = greedy(dec, prices, greedy_order(dec, prices))
        if placed is None:
            continue
        replicas = placed[0]
        if index.problem.churn_cost_per_replica == 0:
            rem = index.pool_accelerators - np.bincount(
                index.t_pool, weights=replicas * index.t_accelerators, minlength=len(zero)
            ).astype(np.int64)
            fill_cheaper_pools(dec, replicas, rem, stop)
        if best is None or objective(index, replicas) < objective(index, best):
            best = replicas
        spent = time.perf_counter() - began
        if n + 1 < len(tries) and stop - time.perf_counter() < _SECOND_GREEDY * spent:
            break
    if best is None:
        best = fallback_replicas(dec)
    gap = 1.0
    if _serves_everyone(index, best):
        gap = _gap(objective(index, best), bound)
    return _finish(index, best, "greedy-fallback", start, gap)


def _plan_from_master(
    index: FleetIndex,
    dec: Decomposition,
    lp: MasterLP,
    wanted: float,
    start: float,
    time_limit_seconds: float,
    stop: float,
) -> FleetPlan | None:
    """Round the master LP, then close the gap exactly if needed (None: fall back).

    Rounding and polish stop at ``stop`` (before the deadline, to leave time for the report).
    """
    deadline = start + time_limit_seconds
    upper = round_master(dec, lp, stop)
    if upper is None or not _serves_everyone(index, upper):
        # Rounding can leave a model short although the LP served it (found by hypothesis:
        # a top-priority model left 0.88 rps short): fall back rather than report a shortage
        # the fleet does not have.
        return None
    value = objective(index, upper)
    gap = _gap(value, lp.bound)
    if gap > wanted and polish(dec, upper, stop):
        value = objective(index, upper)
        gap = _gap(value, lp.bound)
    if gap <= wanted:
        return _finish(index, upper, "decomposition", start, gap)
    left = deadline - time.perf_counter()
    # Models with truncated columns are written over their triples in the closing program, so
    # it is exact on small fleets too (on large ones it would not finish in time).
    small = index.n_triples <= EXACT_TRIPLES
    exact_master = index.problem.churn_cost_per_replica == 0 and (small or not dec.inexact)
    if dec.inexact and index.n_triples <= _TINY_TRIPLES:
        # A tiny fleet with truncated columns: HiGHS on the whole program is quicker than the
        # restricted one, whose bound the truncation relaxed (the examples fleet: 28 ms against
        # 34 ms CPU).
        exact_master = False
    if exact_master and left > 0:
        closed = close_gap(dec, lp, upper, left)
        if closed is not None and _serves_everyone(index, closed.replicas):
            value = objective(index, closed.replicas)
            return _finish(
                index, closed.replicas, "decomposition+highs", start, _gap(value, closed.bound)
            )
    left = deadline - time.perf_counter()
    if (small and left > 0) or left >= max(
        _MIN_HIGHS_SHARE * time_limit_seconds, _MIN_HIGHS_SECONDS
    ):
        # Churn or truncated columns make the master inexact: HiGHS on the full program, and
        # the better plan is kept.
        exact = solve_milp(index, mip_rel_gap=wanted, time_limit_seconds=max(left, 0.05))
        theirs = objective(index, exact.replicas)
        if exact.stages == 1 and theirs < value and _serves_everyone(index, exact.replicas):
            bound = max(lp.bound, exact.lower_bound)
            return _finish(index, exact.replicas, "decomposition+highs", start, _gap(theirs, bound))
        bound = max(lp.bound, exact.lower_bound if exact.stages == 1 else lp.bound)
        return _finish(index, upper, "decomposition+highs", start, _gap(value, bound))
    return _finish(index, upper, "decomposition", start, gap)


def _serves_everyone(index: FleetIndex, replicas: IntArray) -> bool:
    """Whether a plan meets every model's target and replica bounds within pool capacity.

    HiGHS returns no plan (all zeros here) when it runs out of time before finding one.
    """
    per_model = np.bincount(index.t_model, weights=replicas, minlength=index.n_models)
    capacity = np.bincount(
        index.t_model, weights=replicas * index.t_capacity, minlength=index.n_models
    )
    used = np.bincount(
        index.t_pool,
        weights=replicas * index.t_accelerators,
        minlength=len(index.pool_accelerators),
    )
    # A model with no eligible triple cannot be served by any plan: it does not count.
    placeable = np.diff(index.model_start) > 0
    return bool(
        np.all((capacity >= index.target - RPS_TOLERANCE * (1 + index.target)) | ~placeable)
        and np.all((per_model >= index.min_replicas) | ~placeable)
        and np.all(per_model <= index.max_replicas)
        and np.all(used <= index.pool_accelerators)
    )


def _gap(value: float, bound: float) -> float:
    return 0.0 if value <= 1e-12 else max(0.0, value - bound) / value


def _subgradient_path(
    index: FleetIndex,
    dec: Decomposition,
    wanted: float,
    small: bool,
    start: float,
    deadline: float,
    time_limit_seconds: float,
) -> FleetPlan:
    """Subgradient prices and greedy plans, with HiGHS as the fallback (master LP unusable)."""
    dec_result = solve_decomposition(index, gap_tolerance=wanted, deadline=deadline, dec=dec)
    if dec_result.replicas is not None and dec_result.gap <= wanted:
        return _finish(index, dec_result.replicas, "decomposition", start, dec_result.gap)
    left = deadline - time.perf_counter()
    if (
        dec_result.replicas is not None
        and not small
        and left < _MIN_HIGHS_SHARE * time_limit_seconds
    ):
        # Too little time left for HiGHS to improve a large fleet: keep the plan and its gap.
        return _finish(index, dec_result.replicas, "decomposition", start, dec_result.gap)
    exact = solve_milp(index, mip_rel_gap=wanted, time_limit_seconds=max(left, 0.05))
    if dec_result.replicas is None:
        if not exact.found:
            bound = dec_result.lower_bound if np.isfinite(dec_result.lower_bound) else None
            return _best_or_fallback(index, dec, exact.replicas, "highs", exact.gap, bound, start)
        return _finish(index, exact.replicas, "highs", start, exact.gap)
    mine, theirs = dec_result.objective, objective(index, exact.replicas)
    bound = max(dec_result.lower_bound, exact.lower_bound)
    better = theirs < mine and _serves_everyone(index, exact.replicas)
    best, value = (exact.replicas, theirs) if better else (dec_result.replicas, mine)
    gap = _gap(value, bound)
    if exact.stages > 1:
        # HiGHS found the full-service problem infeasible although the decomposition placed
        # everyone; trust the feasible plan in hand and its bound.
        best, gap = dec_result.replicas, dec_result.gap
    return _finish(index, best, "decomposition+highs", start, gap)


def _best_or_fallback(
    index: FleetIndex,
    dec: Decomposition,
    replicas: IntArray,
    name: str,
    gap: float,
    bound: float | None,
    start: float,
) -> FleetPlan:
    """The better of ``replicas`` (HiGHS without a final solution) and the greedy fallback.

    Better means lexicographically: unmet capacity and missing minimum replicas per priority
    level, highest first, then cost. ``bound`` is a proven lower bound on the full-service
    objective, if one is known; the fallback's gap is 1 without it or when it leaves a model
    short (the bound then says nothing about that plan).
    """
    greedy = fallback_replicas(dec)
    if shortfall_key(index, greedy) >= shortfall_key(index, replicas):
        return _finish(index, replicas, name, start, gap)
    honest = 1.0
    if bound is not None and _serves_everyone(index, greedy):
        honest = _gap(objective(index, greedy), bound)
    return _finish(index, greedy, "greedy-fallback", start, honest)


def _finish(
    index: FleetIndex, replicas: IntArray, name: str, start: float, gap: float
) -> FleetPlan:
    # Gaps below float noise are reported as proven optimal.
    gap = 0.0 if gap < 1e-12 else gap
    info = SolverInfo(name=name, seconds=time.perf_counter() - start, optimality_gap=gap)
    return build_plan(index, replicas, info)


def solve_reference_milp(
    problem: PlanProblem, *, mip_rel_gap: float = 1e-4, time_limit_seconds: float = 60.0
) -> FleetPlan:
    """Solve the same program directly with HiGHS (`scipy.optimize.milp`); for tests and bench."""
    start = time.perf_counter()
    index = build_index(problem)
    result = solve_milp(index, mip_rel_gap=mip_rel_gap, time_limit_seconds=time_limit_seconds)
    return _finish(index, result.replicas, "highs", start, result.gap)


@dataclass(frozen=True)
class SingleTypeComparison:
    """Mixed fleet against the best fleet of a single accelerator type (Mélange's comparison)."""

    mixed_cost: float
    single_type: dict[str, float | None]
    """Cost per accelerator type; None when that type cannot serve every model as well."""
    best_type: str | None
    best_single_cost: float | None

    @property
    def savings(self) -> float | None:
        """Fraction of the best single-type cost the mixed fleet saves (None: no single type)."""
        if self.best_single_cost is None or self.best_single_cost <= 0:
            return None
        return 1.0 - self.mixed_cost / self.best_single_cost


def _unconstrained(problem: PlanProblem, accelerator_type: str | None) -> PlanProblem:
    """Pools of one type (or all), with room for every model and reserved priced at list."""
    room = sum(
        m.max_replicas * max((v.accelerators_per_replica for v in m.variants), default=0)
        for m in problem.models
    )
    pools = tuple(
        replace(
            p,
            accelerators=max(room, 1),
            capacity_type="on-demand" if p.capacity_type == "reserved" else p.capacity_type,
        )
        for p in problem.pools
        if accelerator_type is None or p.accelerator_type == accelerator_type
    )
    models = tuple(
        replace(
            m,
            variants=tuple(
                v
                for v in m.variants
                if accelerator_type is None or v.accelerator_type == accelerator_type
            ),
        )
        for m in problem.models
    )
    return PlanProblem(models=models, pools=pools)


def compare_single_type(problem: PlanProblem) -> SingleTypeComparison:
    """Cost of the mixed fleet and of each single accelerator type, with unlimited inventory.

    For this comparison pool sizes are ignored (every pool can hold every model) and reserved
    pools are priced at their ``cost_per_accelerator_hour`` (prepaid capacity is free only up to
    its size, which the comparison ignores); churn is ignored. A type is skipped (None) when,
    restricted to it, some model gets less capacity or fewer replicas than in the mixed plan.
    """
    mixed = plan_fleet(_unconstrained(problem, None))
    costs: dict[str, float | None] = {}
    for accelerator_type in sorted({p.accelerator_type for p in problem.pools}):
        single = plan_fleet(_unconstrained(problem, accelerator_type))
        serves = all(
            covers(s.capacity_rps, min(x.capacity_rps, x.required_rps))
            and s.replicas >= min(x.replicas, m.min_replicas)
            for s, x, m in zip(single.models, mixed.models, problem.models, strict=True)
        )
        costs[accelerator_type] = single.cost_per_hour if serves else None
    valid = {t: c for t, c in costs.items() if c is not None}
    best = min(valid, key=lambda t: valid[t]) if valid else None
    return SingleTypeComparison(
        mixed_cost=mixed.cost_per_hour,
        single_type=costs,
        best_type=best,
        best_single_cost=valid[best] if best is not None else None,
    )


def single_type_costs(problem: PlanProblem) -> dict[str, float | None]:
    """Cost per accelerator type of serving the whole fleet on that type alone (see
    `compare_single_type`); None for a type that cannot serve every model."""
    return compare_single_type(problem).single_type
