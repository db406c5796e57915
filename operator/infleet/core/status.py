"""Pure status documents, conditions and event messages from a fleet plan.

The operator writes these with a merge patch on the status subresource. Everything here is a
function of the plan and of what was observed, so tests call it with numbers.

Conditions of a ModelDeployment (types fixed by the design brief):

* ``Scheduled``: ``True`` (reason ``Placed``) when the plan serves the whole demand, else
  ``False`` with the planner's reason (``CapacityShortage``, ``Infeasible``, ``NoMatchingPool``,
  ``MaxReplicas``), or ``InvalidSpec`` for a model the operator could not read.
* ``Ready``: ``True`` (``ReplicasReady``) when every desired replica is ready; ``False`` with
  ``ReplicasNotReady`` ("2 of 4 replicas ready"), ``NotScheduled`` when demand exists but no
  replica could be placed (rather than a vacuous "0 of 0 ready"), ``AdviseOnly`` in mode Advise
  (nothing is applied), or ``InvalidSpec``.

A shortfall's message ends with what to do about it (:func:`fix_hint`), because
``kubectl describe`` is where a user looks first.

``lastTransitionTime`` changes only when a condition's status changes, as Kubernetes expects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from infleet.core.inventory import PoolInventory
from infleet.core.planner import ModelOutcome, Placement

MONEY_DIGITS = 4
RATE_DIGITS = 3
PRIOR_EXPLANATION = "the traffic prior, spec.traffic.requestsPerSecond"
"""``status.demand.explanation`` when the plan is made for the traffic prior."""

REASON_PLACED = "Placed"
REASON_INVALID = "InvalidSpec"
REASON_READY = "ReplicasReady"
REASON_NOT_READY = "ReplicasNotReady"
REASON_ADVISE = "AdviseOnly"
REASON_NOT_SCHEDULED = "NotScheduled"

_REASON_TEXT = {
    "CapacityShortage": "the pools it can use are full",
    "Infeasible": "no variant can meet the SLO",
    "NoMatchingPool": "no AcceleratorPool matches any of its variants",
    "MaxReplicas": "replicas.max is too low for the demand",
}

_FIX = {
    "CapacityShortage": "add nodes to its pools or raise their maxAccelerators (kubectl get "
    "apool shows what is free), add a variant for another accelerator type, or raise "
    "spec.priority above the models that hold the capacity",
    "Infeasible": "relax spec.slo, or add a variant that can meet it (a faster accelerator or "
    "more acceleratorsPerReplica); check the variants' maxRequestsPerSecond and profile",
    "NoMatchingPool": "create an AcceleratorPool whose acceleratorType a variant names (kubectl "
    "get apool lists the types), or correct the variants' acceleratorType and pools; when only "
    "spot pools match, raise spec.spot.maxFraction",
    "MaxReplicas": "raise spec.replicas.max",
}


def fix_hint(reason: str | None) -> str:
    """What a user can do about a Scheduled=False reason ("" when there is nothing to say)."""
    return _FIX.get(reason or "", "")


def timestamp(now: datetime) -> str:
    """RFC 3339 time as Kubernetes writes it (seconds, ``Z``)."""
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(type_: str, status: bool, reason: str, message: str) -> dict[str, Any]:
    """A condition without its transition time (added by :func:`merge_conditions`)."""
    return {
        "type": type_,
        "status": "True" if status else "False",
        "reason": reason,
        "message": message,
    }


def merge_conditions(
    previous: Sequence[Mapping[str, Any]],
    new: Sequence[Mapping[str, Any]],
    now: datetime,
    generation: int | None = None,
) -> list[dict[str, Any]]:
    """``new`` conditions, keeping each one's previous transition time if its status held.

    Conditions of other types in ``previous`` (written by someone else, say ``SLOMet`` by the
    autoscaler) are kept as they are.
    """
    old = {str(c.get("type")): c for c in previous}
    merged: list[dict[str, Any]] = []
    for cond in new:
        item = dict(cond)
        before = old.get(item["type"])
        if before is not None and before.get("status") == item["status"]:
            item["lastTransitionTime"] = before.get("lastTransitionTime") or timestamp(now)
        else:
            item["lastTransitionTime"] = timestamp(now)
        if generation is not None:
            item["observedGeneration"] = generation
        merged.append(item)
    types = {c["type"] for c in merged}
    merged.extend(dict(c) for c in previous if c.get("type") not in types)
    return merged


@dataclass(frozen=True)
class PlacementView:
    """One placement of a model as status shows it."""

    variant: str
    pool: str
    accelerator_type: str
    desired_replicas: int
    ready_replicas: int
    capacity_rps: float
    cost_per_hour: float


def placement_views(
    placements: Sequence[Placement],
    ready: Mapping[tuple[str, str], int],
    accelerator_types: Mapping[str, str],
) -> list[PlacementView]:
    """Placements with replicas, plus any (variant, pool) that still has ready replicas."""
    views: list[PlacementView] = []
    seen: set[tuple[str, str]] = set()
    for p in sorted(placements, key=lambda p: (p.variant, p.pool)):
        if p.replicas <= 0:
            continue
        seen.add((p.variant, p.pool))
        views.append(
            PlacementView(
                variant=p.variant,
                pool=p.pool,
                accelerator_type=accelerator_types.get(p.pool, ""),
                desired_replicas=p.replicas,
                ready_replicas=ready.get((p.variant, p.pool), 0),
                capacity_rps=p.capacity_rps,
                cost_per_hour=p.cost_per_hour,
            )
        )
    for (variant, pool), count in sorted(ready.items()):
        if (variant, pool) not in seen and count > 0:
            views.append(
                PlacementView(variant, pool, accelerator_types.get(pool, ""), 0, count, 0.0, 0.0)
            )
    return views


def scheduled_condition(outcome: ModelOutcome) -> dict[str, Any]:
    """``Scheduled`` from the planner's outcome for one model."""
    if outcome.reason is None:
        message = (
            f"{outcome.replicas} replicas serve {outcome.capacity_rps:.3g} req/s "
            f"for {outcome.required_rps:.3g} req/s needed"
        )
        return condition("Scheduled", True, REASON_PLACED, message)
    why = _REASON_TEXT.get(outcome.reason, outcome.reason)
    message = (
        f"{outcome.unmet_rps:.3g} of {outcome.required_rps:.3g} req/s needed cannot be placed: "
        f"{why}"
    )
    if outcome.explanation:
        message += f" ({outcome.explanation})"
    hint = fix_hint(outcome.reason)
    if hint:
        message += f". To fix: {hint}"
    return condition("Scheduled", False, outcome.reason, message)


def ready_condition(
    desired: int, ready: int, *, advise: bool, unscheduled: str | None = None
) -> dict[str, Any]:
    """``Ready``: are the desired replicas running? ``unscheduled`` is the Scheduled=False
    reason of a model that needs capacity, if any."""
    if advise:
        return condition(
            "Ready", False, REASON_ADVISE, "mode is Advise: the plan is in status, nothing applied"
        )
    if desired == 0 and unscheduled is not None:
        return condition(
            "Ready",
            False,
            REASON_NOT_SCHEDULED,
            f"no replica could be placed ({unscheduled}): see the Scheduled condition",
        )
    if ready >= desired:
        return condition("Ready", True, REASON_READY, f"{ready} of {desired} replicas ready")
    return condition("Ready", False, REASON_NOT_READY, f"{ready} of {desired} replicas ready")


def model_status(
    *,
    outcome: ModelOutcome,
    placements: Sequence[Placement],
    ready: Mapping[tuple[str, str], int],
    accelerator_types: Mapping[str, str],
    demand_source: str,
    generation: int | None,
    previous_conditions: Sequence[Mapping[str, Any]],
    now: datetime,
    advise: bool = False,
) -> dict[str, Any]:
    """The ``status`` of a ModelDeployment after a fleet cycle (camelCase, JSON types)."""
    views = placement_views(placements, ready, accelerator_types)
    desired = sum(v.desired_replicas for v in views)
    ready_total = 0 if advise else sum(min(v.ready_replicas, v.desired_replicas) for v in views)
    conditions = [
        ready_condition(desired, ready_total, advise=advise, unscheduled=outcome.reason),
        scheduled_condition(outcome),
    ]
    return {
        "observedGeneration": generation,
        "placements": [
            {
                "pool": v.pool,
                "variant": v.variant,
                "acceleratorType": v.accelerator_type,
                "desiredReplicas": v.desired_replicas,
                "readyReplicas": 0 if advise else v.ready_replicas,
                "capacityRequestsPerSecond": round(v.capacity_rps, RATE_DIGITS),
            }
            for v in views
        ],
        "desiredReplicas": desired,
        "readyReplicas": ready_total,
        "costPerHour": round(outcome.cost_per_hour, MONEY_DIGITS),
        "demand": {
            "requestsPerSecond": round(outcome.demand_rps, RATE_DIGITS),
            "source": demand_source,
            # A merge patch keeps keys it does not name: always write one.
            "explanation": PRIOR_EXPLANATION if demand_source == "prior" else "",
        },
        "explanation": outcome.explanation,
        "unmetRequestsPerSecond": round(outcome.unmet_rps, RATE_DIGITS),
        "conditions": merge_conditions(previous_conditions, conditions, now, generation),
    }


def invalid_model_status(
    message: str,
    *,
    generation: int | None,
    previous_conditions: Sequence[Mapping[str, Any]],
    now: datetime,
) -> dict[str, Any]:
    """Status of a model the operator cannot plan for: conditions say why, nothing else."""
    conditions = [
        condition("Ready", False, REASON_INVALID, message),
        condition("Scheduled", False, REASON_INVALID, message),
    ]
    return {
        "observedGeneration": generation,
        "conditions": merge_conditions(previous_conditions, conditions, now, generation),
    }


def replica_change_message(
    before: Mapping[tuple[str, str], int],
    after: Mapping[tuple[str, str], int],
    explanation: str,
) -> str | None:
    """Event text for a decision that changes replicas ("placed 3 on h100-spot, 1 on wafer:
    ..."), or ``None`` when the replicas per (variant, pool) did not change."""
    keys = set(before) | set(after)
    if all(before.get(k, 0) == after.get(k, 0) for k in keys):
        return None
    placed = sorted((k, n) for k, n in after.items() if n > 0)
    pools = [pool for (_, pool), _ in placed]
    parts = []
    for (variant, pool), n in placed:
        where = f"{pool}/{variant}" if pools.count(pool) > 1 else pool
        parts.append(f"{n} on {where}")
    head = "placed " + ", ".join(parts) if parts else "scaled to 0 replicas"
    return f"{head}: {explanation}" if explanation else head


def decision_event(
    before: Mapping[tuple[str, str], int],
    after: Mapping[tuple[str, str], int],
    outcome: ModelOutcome,
    previous_conditions: Sequence[Mapping[str, Any]],
) -> tuple[str, str] | None:
    """(reason, message) of the Event a cycle's decision posts on a model, or ``None``.

    A change of replicas is announced (reason ``Placed``, or the shortfall's reason with what
    to do). A shortfall that changes no replica, say a model no pool can take, is announced
    once, when the Scheduled reason first becomes it; otherwise such a model would have no
    event at all in ``kubectl describe``.
    """
    hint = fix_hint(outcome.reason)
    message = replica_change_message(before, after, outcome.explanation)
    if message is not None:
        if outcome.reason is None:
            return "Placed", message
        return outcome.reason, f"{message}. To fix: {hint}" if hint else message
    if outcome.reason is None:
        return None
    previous = next((c for c in previous_conditions if c.get("type") == "Scheduled"), None)
    if previous is not None and previous.get("reason") == outcome.reason:
        return None
    return outcome.reason, str(scheduled_condition(outcome)["message"])


def pool_status(
    inventory: PoolInventory,
    *,
    generation: int | None,
    previous_conditions: Sequence[Mapping[str, Any]],
    now: datetime,
) -> dict[str, Any]:
    """The ``status`` of an AcceleratorPool from its inventory."""
    if inventory.allocatable_accelerators <= 0:
        ready = condition(
            "Ready",
            False,
            "NoReadyNodes",
            f"{inventory.ready_nodes} of {inventory.nodes} matching nodes ready; "
            "no allocatable accelerators",
        )
    elif inventory.unavailable_accelerators > 0:
        ready = condition(
            "Ready",
            True,
            "CapacityReduced",
            f"{inventory.unavailable_accelerators} of {inventory.allocatable_accelerators} "
            "accelerators unavailable (used by others or replicas left unschedulable)",
        )
    else:
        ready = condition(
            "Ready",
            True,
            "NodesReady",
            f"{inventory.allocatable_accelerators} accelerators on "
            f"{inventory.ready_nodes} ready nodes",
        )
    return {
        "observedGeneration": generation,
        "nodes": inventory.nodes,
        "readyNodes": inventory.ready_nodes,
        "allocatableAccelerators": inventory.allocatable_accelerators,
        "allocatedAccelerators": inventory.allocated_accelerators,
        "freeAccelerators": inventory.free_accelerators,
        "conditions": merge_conditions(previous_conditions, [ready], now, generation),
    }
