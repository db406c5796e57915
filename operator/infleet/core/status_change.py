"""Which status changes are worth a write now, and which can wait (pure).

With live metrics every ModelDeployment's status changes every cycle: the observed rate and
latency, the demand figure, the persisted scaling window. At a few hundred models those
patches are most of a cycle and a steady load on the API server, while what a platform
engineer acts on (replicas, placements, conditions) changes rarely. So a change is sorted
into one of two kinds:

* **decision** (written at once): anything outside the fields listed below, and within them
  a change of ``demand.source`` to or from ``prior``, of whether demand is unmet
  (``unmetRequestsPerSecond`` crossing zero), of a condition's ``type``/``status``/``reason``,
  of a placement's pool, variant, accelerator type, desired or ready replicas, or a
  calibration factor going down (a derate);
* **telemetry** (written at most every ``--status-refresh`` seconds): ``observed``,
  ``scaling`` (the persisted autoscaling state), ``demand.requestsPerSecond`` and
  ``demand.explanation``, ``demand.source`` moving between ``metrics`` and ``forecast`` (the
  trend rising above the current figure or not, which noise flips), ``explanation``,
  ``unmetRequestsPerSecond`` while it stays on the same side of zero, conditions' messages,
  placements' ``capacityRequestsPerSecond``, and calibration factors going up (the slow
  recovery).

A field this module does not know is a decision field, so a new status field is never held
back by mistake.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any


class StatusChange(Enum):
    """How a new status differs from the live one."""

    NONE = "none"
    """Equal in every field the new status sets."""
    TELEMETRY = "telemetry"
    """Only live figures differ: the write may wait for the refresh interval."""
    DECISION = "decision"
    """Something a user or tool acts on differs: write now."""


_TELEMETRY_ONLY = frozenset({"observed", "scaling", "explanation"})
"""Top-level fields that are figures as read, never a decision."""
_PLACEMENT_KEYS = ("pool", "variant", "acceleratorType", "desiredReplicas", "readyReplicas")
_CONDITION_KEYS = ("type", "status", "reason")


def _rows(value: Any, keys: tuple[str, ...]) -> Any:
    """A list of mappings reduced to ``keys``; anything else as it is (compared whole)."""
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        return value
    return [tuple(v.get(k) for k in keys) for v in value]


_LIVE_SOURCES = frozenset({"metrics", "forecast"})


def _demand_decision(value: Any) -> Any:
    if not isinstance(value, Mapping):
        return value
    out = {k: v for k, v in value.items() if k not in ("requestsPerSecond", "explanation")}
    if out.get("source") in _LIVE_SOURCES:
        out["source"] = "live metrics"
    return out


def _unmet(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value > 0
    return value


def _factors(value: Any) -> dict[Any, Any] | None:
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        return None
    return {v.get("variant"): v.get("factor") for v in value}


def _calibration_decides(live: Any, new: Any) -> bool:
    """A derate, a variant added or removed, or a shape not understood: decision."""
    before, after = _factors(live), _factors(new)
    if before is None or after is None:
        return True
    if before.keys() != after.keys():
        return True
    for variant, factor in after.items():
        old = before[variant]
        if not isinstance(factor, int | float) or not isinstance(old, int | float):
            return True
        if factor < old:
            return True
    return False


def _decides(key: str, live: Any, new: Any) -> bool:
    """Whether the change of field ``key`` from ``live`` to ``new`` is a decision."""
    if key in _TELEMETRY_ONLY:
        return False
    if key == "placements":
        return bool(_rows(live, _PLACEMENT_KEYS) != _rows(new, _PLACEMENT_KEYS))
    if key == "conditions":
        return bool(_rows(live, _CONDITION_KEYS) != _rows(new, _CONDITION_KEYS))
    if key == "demand":
        return bool(_demand_decision(live) != _demand_decision(new))
    if key == "unmetRequestsPerSecond":
        return bool(_unmet(live) != _unmet(new))
    if key == "calibration":
        return _calibration_decides(live, new)
    return True


def decision_fields(live: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[str]:
    """The top-level fields of ``new`` whose change from ``live`` is a decision."""
    live = live or {}
    return [k for k, v in new.items() if live.get(k) != v and _decides(k, live.get(k), v)]


def status_change(live: Mapping[str, Any] | None, new: Mapping[str, Any]) -> StatusChange:
    """How ``new`` (the fields a status patch would set) differs from the ``live`` status."""
    live = live or {}
    if all(live.get(k) == v for k, v in new.items()):
        return StatusChange.NONE
    if decision_fields(live, new):
        return StatusChange.DECISION
    return StatusChange.TELEMETRY
