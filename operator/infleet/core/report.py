"""Render a fleet plan: the `infleet plan` JSON/YAML document and the human table.

The JSON field names are fixed by the design brief (other tools parse them):
``costPerHour``; ``placements[]`` (``namespace``, ``model``, ``variant``, ``pool``, ``replicas``,
``accelerators``, ``costPerHour``); ``models[]`` (``namespace``, ``name``,
``demandRequestsPerSecond``, ``capacityRequestsPerSecond``, ``unmetRequestsPerSecond``,
``reason``, ``explanation``); ``solver`` (``name``, ``seconds``, ``optimalityGap``).
``model`` in a placement is the ModelDeployment's name; the served model id is in its spec.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from infleet.core.planner import FleetPlan

_MONEY_DIGITS = 4
_RATE_DIGITS = 3


def plan_document(plan: FleetPlan) -> dict[str, Any]:
    """The machine-readable plan, as printed by ``infleet plan -o json``."""
    placements = sorted(plan.placements, key=lambda p: (p.model[0], p.model[1], p.variant, p.pool))
    models = sorted(plan.models, key=lambda m: m.key)
    return {
        "costPerHour": round(plan.cost_per_hour, _MONEY_DIGITS),
        "placements": [
            {
                "namespace": p.model[0],
                "model": p.model[1],
                "variant": p.variant,
                "pool": p.pool,
                "replicas": p.replicas,
                "accelerators": p.accelerators,
                "costPerHour": round(p.cost_per_hour, _MONEY_DIGITS),
            }
            for p in placements
            if p.replicas > 0
        ],
        "models": [
            {
                "namespace": m.key[0],
                "name": m.key[1],
                "demandRequestsPerSecond": round(m.demand_rps, _RATE_DIGITS),
                "capacityRequestsPerSecond": round(m.capacity_rps, _RATE_DIGITS),
                "unmetRequestsPerSecond": round(m.unmet_rps, _RATE_DIGITS),
                "reason": m.reason,
                "explanation": m.explanation,
            }
            for m in models
        ],
        "solver": {
            "name": plan.solver.name,
            "seconds": round(plan.solver.seconds, 6),
            "optimalityGap": plan.solver.optimality_gap,
        },
    }


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.extend(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
    return lines


def plan_table(plan: FleetPlan) -> str:
    """A readable summary: placements, then per-model outcome, then the total and solver."""
    doc = plan_document(plan)
    placement_rows = [
        [
            f"{p['namespace']}/{p['model']}",
            p["variant"],
            p["pool"],
            str(p["replicas"]),
            str(p["accelerators"]),
            f"{p['costPerHour']:.2f}",
        ]
        for p in doc["placements"]
    ]
    model_rows = [
        [
            f"{m['namespace']}/{m['name']}",
            f"{m['demandRequestsPerSecond']:g}",
            f"{m['capacityRequestsPerSecond']:g}",
            f"{m['unmetRequestsPerSecond']:g}",
            m["reason"] or "-",
            m["explanation"],
        ]
        for m in doc["models"]
    ]
    lines = _table(["MODEL", "VARIANT", "POOL", "REPLICAS", "ACCELERATORS", "$/H"], placement_rows)
    lines.append("")
    lines.extend(_table(["MODEL", "DEMAND", "CAPACITY", "UNMET", "REASON", "WHY"], model_rows))
    lines.append("")
    solver = doc["solver"]
    lines.append(
        f"Fleet cost: ${doc['costPerHour']:.2f}/h  "
        f"(solver {solver['name']}, {solver['seconds'] * 1000:.1f} ms, "
        f"gap {solver['optimalityGap']:.2%})"
    )
    return "\n".join(lines)
