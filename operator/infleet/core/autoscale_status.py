"""Pure pieces between the autoscaling policy and the operator: replica bounds for the planner
and the status fragments of a model planned from live metrics.

The policy (:mod:`infleet.core.autoscale`) decides a demand figure, a replica floor and whether
the model goes to zero; the planner takes ``(min, max)`` total replicas per model
(:class:`infleet.core.fleet.PlanInputs.replica_bounds`). :func:`replica_bounds` turns the
decision and the per-cycle change limits into those bounds *before* planning, so that the
planner places exactly the limited number of replicas (limiting the total after planning would
leave it to guess which pool loses them).

Decisions written down here (the design brief is silent on them):

* **Limits versus bounds.** The per-cycle limits bound the move from the current total; where
  they conflict with the policy's bounds (``spec.replicas.min`` raised by more than
  ``maxScaleUpReplicas``, scale to zero with ``maxScaleDownReplicas``) the limit wins and the
  bound is reached over several cycles.
* **A hold never exceeds ``spec.replicas.max``**: a user who lowered max meant it.
* **``status.observed.requestsPerSecond``** is completions per second as read (the API's
  definition); the demand estimate with the queue terms is ``status.demand``.
* **``SLOMet`` is ``Unknown``** while latency is not observed or the metrics are stale.
* **``lastScaleTime``** moves when the plan's total desired replicas differ from the total the
  model's Deployments had at the start of the cycle.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from infleet.core.autoscale import (
    DemandDecision,
    ModelScalingState,
    Observation,
    ScalingPolicy,
    SLOVerdict,
    limit_replica_change,
)
from infleet.core.status import RATE_DIGITS, merge_conditions, timestamp

__all__ = [
    "LATENCY_DIGITS",
    "autoscale_conditions",
    "autoscale_status",
    "last_scale_time",
    "observed_status",
    "replica_bounds",
]

LATENCY_DIGITS = 1
"""Milliseconds are shown to 0.1 ms: finer digits are histogram interpolation noise."""


def replica_bounds(
    decision: DemandDecision,
    *,
    spec_max: int,
    current: int,
    policy: ScalingPolicy,
) -> tuple[int, int]:
    """``(min, max)`` total replicas the planner may give the model this cycle.

    ``decision.min_replicas`` (spec min, hold floor, wake floor) and ``spec_max`` (0 when the
    decision scales to zero), both moved into the per-cycle change limits around ``current``.
    """
    if spec_max < 0 or current < 0:
        raise ValueError(f"spec_max and current must be >= 0, got {spec_max} and {current}")
    high = 0 if decision.scale_to_zero else spec_max
    low = min(decision.min_replicas, high)
    most = limit_replica_change(current, max(high, current), policy)
    fewest = limit_replica_change(current, 0, policy)
    return min(max(low, fewest), most), min(max(high, fewest), most)


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def observed_status(obs: Observation) -> dict[str, Any]:
    """``status.observed``: the latest figures as read (``None`` = not observed)."""

    def clean(value: float | None) -> float | None:
        if value is None or not math.isfinite(value) or value < 0:
            return None
        return value

    return {
        "requestsPerSecond": _rounded(clean(obs.request_rate), RATE_DIGITS),
        "ttftMs": _rounded(clean(obs.ttft_ms), LATENCY_DIGITS),
        "tpotMs": _rounded(clean(obs.tpot_ms), LATENCY_DIGITS),
        "queueLength": _rounded(clean(obs.queue_length), RATE_DIGITS),
    }


def _condition(type_: str, status: bool | None, reason: str, message: str) -> dict[str, Any]:
    text = "Unknown" if status is None else ("True" if status else "False")
    return {"type": type_, "status": text, "reason": reason, "message": message}


def autoscale_conditions(decision: DemandDecision, verdict: SLOVerdict) -> list[dict[str, Any]]:
    """``MetricsAvailable`` from the decision and ``SLOMet`` from the SLO verdict."""
    return [
        _condition(
            "MetricsAvailable",
            decision.metrics_available,
            decision.metrics_reason,
            decision.metrics_message,
        ),
        _condition("SLOMet", verdict.met, verdict.reason, verdict.message),
    ]


def last_scale_time(before: int, after: int, previous: str | None, now: datetime) -> str | None:
    """``lastScaleTime``: ``now`` when the total replicas change, else the previous value."""
    return timestamp(now) if before != after else previous


def autoscale_status(
    status: Mapping[str, Any],
    *,
    decision: DemandDecision,
    observation: Observation,
    verdict: SLOVerdict,
    state: ModelScalingState,
    replicas_before: int,
    previous_scale_time: str | None,
    now: datetime,
    generation: int | None,
) -> dict[str, Any]:
    """``status`` (as :func:`infleet.core.status.model_status` built it) with the autoscaler's
    fields: demand and its source, observed figures, calibration, lastScaleTime, the persisted
    state and the ``MetricsAvailable``/``SLOMet`` conditions (transition times kept)."""
    out = dict(status)
    previous_conditions: Sequence[Mapping[str, Any]] = status.get("conditions") or []
    out["demand"] = {
        "requestsPerSecond": round(decision.demand.requests_per_second, RATE_DIGITS),
        "source": decision.demand.source,
        "explanation": decision.explanation,
    }
    out["observed"] = observed_status(observation)
    out["calibration"] = [
        {"variant": variant, "factor": round(factor, 4)} for variant, factor in state.calibration
    ]
    desired = int(status.get("desiredReplicas") or 0)
    out["lastScaleTime"] = last_scale_time(replicas_before, desired, previous_scale_time, now)
    out["scaling"] = state.to_dict()
    merged = {
        c["type"]: c
        for c in merge_conditions(
            previous_conditions, autoscale_conditions(decision, verdict), now, generation
        )
    }
    # Keep the order the status already has (Ready, Scheduled first), new types after it.
    ordered = [
        merged.pop(str(c.get("type"))) for c in previous_conditions if c.get("type") in merged
    ]
    out["conditions"] = ordered + list(merged.values())
    return out
