"""The master LP and closing MILP straight through the HiGHS binding SciPy ships.

`scipy.optimize.linprog` spends as long around HiGHS as HiGHS spends solving the 100-model
master LP (input checks, and a Python loop over every variable to sort bound multipliers, which
the planner never reads); `scipy.optimize.milp` does the same loop. The binding itself
(`scipy.optimize._highspy._core`) is private to SciPy, so it is looked up once and `solve_lp` /
`solve_mip` return None when it is missing or its shape has changed; the caller then goes
through the public functions (same answers, slower).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.sparse import csc_matrix, csr_matrix

from infleet.core.plan_index import FloatArray

_NAMES = ("HighsLp", "_Highs", "HighsOptions", "MatrixFormat", "HighsModelStatus", "HighsVarType")


def _binding() -> Any:
    try:
        core = importlib.import_module("scipy.optimize._highspy._core")
        for name in _NAMES:
            getattr(core, name)
    except (ImportError, AttributeError):
        return None
    return core


_CORE = _binding()


@dataclass(frozen=True)
class LpAnswer:
    """HiGHS's verdict on an LP and, when optimal, its primal values and row duals."""

    status: Literal["optimal", "infeasible", "failed"]
    x: FloatArray
    row_dual: FloatArray
    solver: Any = None
    """The HiGHS instance that solved it (opaque), for `resolve_with_rows`."""


def solve_lp(
    cost: FloatArray,
    matrix: csc_matrix,
    row_lower: FloatArray,
    row_upper: FloatArray,
    *,
    time_limit_seconds: float,
    presolve: bool,
    simple_pricing: bool = False,
) -> LpAnswer | None:
    """Minimise ``cost @ x`` with ``row_lower <= matrix @ x <= row_upper`` and ``x >= 0``.

    None when the binding is unavailable (use `linprog`); ``failed`` covers time-outs and
    every status other than optimal or infeasible, as `linprog` reports them.
    ``simple_pricing`` runs the dual simplex with Dantzig pricing and no scaling, which is
    ~20% faster on the 100-model master LP (its columns are all alike: small integer
    counts); untested on large ones, so off by default.
    """
    if _CORE is None:
        return None
    try:
        return _solve(
            _CORE,
            cost,
            matrix,
            row_lower,
            row_upper,
            time_limit_seconds,
            presolve,
            simple_pricing,
        )
    except (AttributeError, TypeError):
        # The private binding changed shape in some SciPy release: fall back to linprog.
        return None


def _model(
    core: Any,
    cost: FloatArray,
    matrix: csc_matrix,
    row_lower: FloatArray,
    row_upper: FloatArray,
    col_upper: FloatArray,
) -> Any:
    n_rows, n_cols = matrix.shape
    lp = core.HighsLp()
    lp.num_col_ = n_cols
    lp.num_row_ = n_rows
    lp.col_cost_ = np.asarray(cost, dtype=np.float64)
    lp.col_lower_ = np.zeros(n_cols)
    lp.col_upper_ = np.asarray(col_upper, dtype=np.float64)
    lp.row_lower_ = np.asarray(row_lower, dtype=np.float64)
    lp.row_upper_ = np.asarray(row_upper, dtype=np.float64)
    lp.a_matrix_.num_col_ = n_cols
    lp.a_matrix_.num_row_ = n_rows
    lp.a_matrix_.format_ = core.MatrixFormat.kColwise
    lp.a_matrix_.start_ = matrix.indptr
    lp.a_matrix_.index_ = matrix.indices
    lp.a_matrix_.value_ = matrix.data.astype(np.float64)
    return lp


def _pass(
    core: Any,
    highs: Any,
    cost: FloatArray,
    matrix: csc_matrix,
    row_lower: FloatArray,
    row_upper: FloatArray,
    col_upper: FloatArray,
    integer: bool,
) -> None:
    """Hand HiGHS the program through its array overload of ``passModel``.

    Setting the fields of a ``HighsLp`` converts the matrix's index and value arrays element by
    element (~1 ms for the 100-model master LP, 0.3 ms per closing program); the array
    overload copies them. If it is missing or refuses (another SciPy), the fields are set.
    """
    n_rows, n_cols = matrix.shape
    kind = core.HighsVarType.kInteger if integer else core.HighsVarType.kContinuous
    try:
        status = highs.passModel(
            n_cols,
            n_rows,
            int(matrix.nnz),
            int(core.MatrixFormat.kColwise),
            int(core.ObjSense.kMinimize),
            0.0,
            np.asarray(cost, dtype=np.float64),
            np.zeros(n_cols),
            np.asarray(col_upper, dtype=np.float64),
            np.asarray(row_lower, dtype=np.float64),
            np.asarray(row_upper, dtype=np.float64),
            matrix.indptr.astype(np.int32),
            matrix.indices.astype(np.int32),
            matrix.data.astype(np.float64),
            np.full(n_cols, int(kind), dtype=np.int32),
        )
        if status != core.HighsStatus.kError:
            return
    except TypeError:
        pass
    lp = _model(core, cost, matrix, row_lower, row_upper, col_upper)
    if integer:
        lp.integrality_ = [kind] * n_cols
    highs.passModel(lp)


def _run(
    core: Any,
    program: tuple[FloatArray, csc_matrix, FloatArray, FloatArray, FloatArray],
    time_limit_seconds: float,
    presolve: bool,
    gap: float,
    start: FloatArray | None = None,
    *,
    mip: bool = False,
    simple_pricing: bool = False,
) -> Any:
    options = core.HighsOptions()
    options.presolve = "on" if presolve else "off"
    options.time_limit = max(float(time_limit_seconds), 0.01)
    options.mip_rel_gap = gap
    options.output_flag = False
    options.log_to_console = False
    highs = core._Highs()
    highs.passOptions(options)
    if mip:
        # HiGHS's feasibility jump heuristic (1.8+) runs before the root LP and costs ~4 ms per
        # closing program on 100 x 10 fleets; these programs always carry a cutoff row at the
        # plan in hand (or start from it), so a quick first plan is worth nothing to them. An
        # older HiGHS without the option just reports an error status here, which is ignored.
        highs.setOptionValue("mip_heuristic_run_feasibility_jump", False)
    if simple_pricing:
        highs.setOptionValue("simplex_dual_edge_weight_strategy", 0)
        highs.setOptionValue("simplex_scale_strategy", 0)
    _pass(core, highs, *program, mip)
    if start is not None:
        solution = core.HighsSolution()
        solution.col_value = np.asarray(start, dtype=np.float64)
        solution.value_valid = True
        highs.setSolution(solution)
    highs.run()
    return highs


def _solve(
    core: Any,
    cost: FloatArray,
    matrix: csc_matrix,
    row_lower: FloatArray,
    row_upper: FloatArray,
    time_limit_seconds: float,
    presolve: bool,
    simple_pricing: bool,
) -> LpAnswer:
    program = (cost, matrix, row_lower, row_upper, np.full(matrix.shape[1], np.inf))
    highs = _run(
        core,
        program,
        time_limit_seconds,
        presolve,
        1e-4,
        simple_pricing=simple_pricing,
    )
    status = highs.getModelStatus()
    empty = np.zeros(0)
    if status == core.HighsModelStatus.kInfeasible:
        return LpAnswer("infeasible", empty, empty)
    if status != core.HighsModelStatus.kOptimal:
        return LpAnswer("failed", empty, empty)
    solution = highs.getSolution()
    return LpAnswer(
        "optimal",
        np.asarray(solution.col_value, dtype=np.float64),
        np.asarray(solution.row_dual, dtype=np.float64),
        highs,
    )


def resolve_with_rows(
    answer: LpAnswer, rows: csr_matrix, row_upper: FloatArray, time_limit_seconds: float
) -> LpAnswer | None:
    """Re-solve ``answer``'s LP with ``rows @ x <= row_upper`` added, from its optimal basis.

    The dual simplex needs a few pivots from there (the 100-model master with two pool cuts:
    ~1 ms against ~6 ms from scratch). The rows are removed again afterwards. None when the
    answer kept no solver or the binding refuses; row duals cover the old rows, then the new.
    """
    highs = answer.solver
    if _CORE is None or highs is None:
        return None
    core = _CORE
    n_new = rows.shape[0]
    try:
        n_old = int(highs.getNumRow())
        highs.addRows(
            n_new,
            np.full(n_new, -np.inf),
            np.asarray(row_upper, dtype=np.float64),
            int(rows.nnz),
            rows.indptr[:-1].astype(np.int32),
            rows.indices.astype(np.int32),
            rows.data.astype(np.float64),
        )
        highs.setOptionValue("time_limit", max(float(time_limit_seconds), 0.001))
        highs.run()
        status = highs.getModelStatus()
        solution = highs.getSolution()
        highs.deleteRows(n_new, np.arange(n_old, n_old + n_new, dtype=np.int32))
    except (AttributeError, TypeError):
        return None
    empty = np.zeros(0)
    if status == core.HighsModelStatus.kInfeasible:
        return LpAnswer("infeasible", empty, empty)
    if status != core.HighsModelStatus.kOptimal:
        return LpAnswer("failed", empty, empty)
    return LpAnswer(
        "optimal",
        np.asarray(solution.col_value, dtype=np.float64),
        np.asarray(solution.row_dual, dtype=np.float64),
    )


@dataclass(frozen=True)
class MipAnswer:
    """HiGHS's verdict on an all-integer program: status, best solution (if any), dual bound."""

    status: Literal["optimal", "infeasible", "other"]
    x: FloatArray | None
    dual_bound: float


def solve_mip(
    cost: FloatArray,
    matrix: csc_matrix,
    row_lower: FloatArray,
    row_upper: FloatArray,
    col_upper: FloatArray,
    *,
    time_limit_seconds: float,
    mip_rel_gap: float,
    start: FloatArray | None = None,
) -> MipAnswer | None:
    """Minimise ``cost @ x`` over integers ``0 <= x <= col_upper`` within the row bounds.

    ``x`` is the best solution found (also after a time-out), None if there is none; None
    overall when the binding is unavailable (use `scipy.optimize.milp`).
    """
    if _CORE is None:
        return None
    try:
        core = _CORE
        program = (cost, matrix, row_lower, row_upper, col_upper)
        highs = _run(core, program, time_limit_seconds, True, mip_rel_gap, start, mip=True)
        status = highs.getModelStatus()
        info = highs.getInfo()
    except (AttributeError, TypeError):
        return None
    if status == core.HighsModelStatus.kInfeasible:
        return MipAnswer("infeasible", None, np.inf)
    found = bool(np.isfinite(info.objective_function_value))
    x = np.asarray(highs.getSolution().col_value, dtype=np.float64) if found else None
    verdict: Literal["optimal", "other"] = (
        "optimal" if status == core.HighsModelStatus.kOptimal else "other"
    )
    return MipAnswer(verdict, x, float(info.mip_dual_bound))


class ColumnLp:
    """An LP kept open in HiGHS so columns can be added and it re-solved from its last basis.

    Minimise ``cost @ x`` over ``x >= 0`` within fixed row bounds; columns only ever grow.
    """

    def __init__(self, core: Any, highs: Any, n_rows: int) -> None:
        self._core = core
        self._highs = highs
        self.n_rows = n_rows
        self.n_columns = 0

    def add_columns(self, cost: FloatArray, matrix: csc_matrix) -> None:
        """Append ``matrix.shape[1]`` columns (``matrix`` has one row per LP row)."""
        n = matrix.shape[1]
        self._highs.addCols(
            n,
            np.asarray(cost, dtype=np.float64),
            np.zeros(n),
            np.full(n, np.inf),
            int(matrix.nnz),
            matrix.indptr[:-1].astype(np.int32),
            matrix.indices.astype(np.int32),
            matrix.data.astype(np.float64),
        )
        self.n_columns += n

    def solve(self, time_limit_seconds: float) -> tuple[FloatArray, FloatArray] | None:
        """Column values and row duals if HiGHS finds the optimum in time, else None."""
        core = self._core
        try:
            self._highs.setOptionValue("time_limit", max(float(time_limit_seconds), 0.001))
            self._highs.run()
            if self._highs.getModelStatus() != core.HighsModelStatus.kOptimal:
                return None
            solution = self._highs.getSolution()
        except (AttributeError, TypeError):
            return None
        return (
            np.asarray(solution.col_value, dtype=np.float64),
            np.asarray(solution.row_dual, dtype=np.float64),
        )


def open_lp(row_lower: FloatArray, row_upper: FloatArray) -> ColumnLp | None:
    """An empty `ColumnLp` over rows with these bounds (None: the binding is unavailable)."""
    if _CORE is None:
        return None
    core = _CORE
    try:
        n_rows = len(row_lower)
        lp = core.HighsLp()
        lp.num_col_ = 0
        lp.num_row_ = n_rows
        lp.row_lower_ = np.asarray(row_lower, dtype=np.float64)
        lp.row_upper_ = np.asarray(row_upper, dtype=np.float64)
        lp.a_matrix_.format_ = core.MatrixFormat.kColwise
        lp.a_matrix_.num_row_ = n_rows
        lp.a_matrix_.start_ = np.zeros(1, dtype=np.int32)
        options = core.HighsOptions()
        options.presolve = "off"
        options.output_flag = False
        options.log_to_console = False
        highs = core._Highs()
        highs.passOptions(options)
        highs.passModel(lp)
    except (AttributeError, TypeError):
        return None
    return ColumnLp(core, highs, n_rows)
