"""Autoscaling state persisted between cycles (in the ModelDeployment's status).

A frozen dataclass that round-trips through a plain JSON-compatible dict with camelCase keys,
so the reconciler can store it as-is; :meth:`ModelScalingState.from_dict` rejects anything
else with a message naming the field, so a hand-edited status cannot crash the policy (the
caller can fall back to a fresh state).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from infleet.core.calibration import CalibrationUpdate
from infleet.core.forecast import Sample

__all__ = ["ModelScalingState"]

_SOURCES = ("metrics", "prior", "forecast")


@dataclass(frozen=True)
class ModelScalingState:
    """Everything the policy remembers between cycles (persisted in status)."""

    samples: tuple[Sample, ...] = ()
    """``(time, demand rps)`` over the last :attr:`ScalingPolicy.history_seconds`."""
    last_queue: Sample | None = None
    """``(time, queue length)`` of the last fresh queue observation, for queue growth."""
    last_traffic_time: float | None = None
    """Last time the model had (or might have had) traffic: the idle timer's start."""
    planned_requests_per_second: float | None = None
    """Demand the last decision planned for; what a hold keeps."""
    planned_source: str | None = None
    """Source of that figure: ``metrics``, ``prior`` or ``forecast``."""
    scaled_to_zero: bool = False
    """Whether the policy took the model to zero (it then waits for a wake signal)."""
    metrics_available: bool | None = None
    """The last ``MetricsAvailable`` verdict (for change events)."""
    calibration: tuple[tuple[str, float], ...] = ()
    """Capacity factor per variant name, sorted by name."""
    last_replicas: int | None = None
    """Total replicas the model ran at the last calibrated cycle."""
    last_change_time: float | None = None
    """Last time the fleet behind the model's latency changed: its replica total moved, a
    replica was not ready yet, or a variant was derated. Calibration derates only once the
    metrics window no longer covers that change (see :mod:`infleet.core.calibration`)."""

    def calibration_factors(self) -> dict[str, float]:
        """Factor per variant (variants not listed are at 1.0)."""
        return dict(self.calibration)

    def with_calibration(self, updates: Mapping[str, CalibrationUpdate]) -> ModelScalingState:
        """This state with the factors from ``updates`` stored."""
        factors = self.calibration_factors()
        factors.update({variant: u.factor for variant, u in updates.items()})
        return replace(self, calibration=tuple(sorted(factors.items())))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict (camelCase keys; unset fields left out)."""
        out: dict[str, Any] = {"samples": [[t, v] for t, v in self.samples]}
        if self.last_queue is not None:
            out["lastQueue"] = list(self.last_queue)
        if self.last_traffic_time is not None:
            out["lastTrafficTime"] = self.last_traffic_time
        if self.planned_requests_per_second is not None:
            out["plannedRequestsPerSecond"] = self.planned_requests_per_second
        if self.planned_source is not None:
            out["plannedSource"] = self.planned_source
        out["scaledToZero"] = self.scaled_to_zero
        if self.metrics_available is not None:
            out["metricsAvailable"] = self.metrics_available
        out["calibration"] = dict(self.calibration)
        if self.last_replicas is not None:
            out["lastReplicas"] = self.last_replicas
        if self.last_change_time is not None:
            out["lastChangeTime"] = self.last_change_time
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelScalingState:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` naming the first bad field."""
        if not isinstance(data, Mapping):
            raise ValueError(f"scaling state must be a mapping, got {type(data).__name__}")
        known = {
            "samples",
            "lastQueue",
            "lastTrafficTime",
            "plannedRequestsPerSecond",
            "plannedSource",
            "scaledToZero",
            "metricsAvailable",
            "calibration",
            "lastReplicas",
            "lastChangeTime",
        }
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"scaling state: unknown field(s) {', '.join(map(str, unknown))}")
        samples = tuple(
            _pair(f"scaling state: samples[{i}]", item)
            for i, item in enumerate(_list("samples", data.get("samples", [])))
        )
        last_queue = data.get("lastQueue")
        source = data.get("plannedSource")
        if source is not None and source not in _SOURCES:
            raise ValueError(
                f"scaling state: plannedSource must be one of {', '.join(_SOURCES)}, got {source!r}"
            )
        calibration = data.get("calibration", {})
        if not isinstance(calibration, Mapping):
            raise ValueError("scaling state: calibration must be a mapping of variant to factor")
        factors = tuple(
            sorted(
                (str(k), _number(f"scaling state: calibration.{k}", v, positive=True))
                for k, v in calibration.items()
            )
        )
        return cls(
            samples=samples,
            last_queue=None
            if last_queue is None
            else _pair("scaling state: lastQueue", last_queue),
            last_traffic_time=_optional_number("lastTrafficTime", data.get("lastTrafficTime")),
            planned_requests_per_second=_optional_number(
                "plannedRequestsPerSecond", data.get("plannedRequestsPerSecond")
            ),
            planned_source=source,
            scaled_to_zero=_bool("scaledToZero", data.get("scaledToZero", False)),
            metrics_available=(
                None
                if data.get("metricsAvailable") is None
                else _bool("metricsAvailable", data["metricsAvailable"])
            ),
            calibration=factors,
            last_replicas=_optional_count("lastReplicas", data.get("lastReplicas")),
            last_change_time=_optional_number("lastChangeTime", data.get("lastChangeTime")),
        )


def _number(where: str, value: Any, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{where} must be > 0, got {value!r}")
    return float(value)


def _optional_number(key: str, value: Any) -> float | None:
    return None if value is None else _number(f"scaling state: {key}", value)


def _optional_count(key: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"scaling state: {key} must be an integer >= 0, got {value!r}")
    return value


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"scaling state: {key} must be true or false, got {value!r}")
    return value


def _list(key: str, value: Any) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"scaling state: {key} must be a list, got {value!r}")
    return list(value)


def _pair(where: str, value: Any) -> Sample:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError(f"{where} must be a [time, value] pair, got {value!r}")
    return _number(f"{where}[0]", value[0]), _number(f"{where}[1]", value[1])
