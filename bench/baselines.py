"""HPA-style and KEDA-style autoscalers, the benchmark's baselines (pure: numbers in and out).

They reproduce the documented algorithms of the Kubernetes HorizontalPodAutoscaler
(`pkg/controller/podautoscaler`, v1.2x+: replica calculator, `behavior` stabilisation and
rate limits) and of a KEDA `ScaledObject` with a Prometheus trigger (KEDA turns it into an HPA
on an External metric with an `AverageValue` target), with the defaults in
shared/REFERENCE.md ("What other autoscalers do by default"):

* HPA: sync every 15 s; tolerance 10%; scale-up: no stabilisation, at most
  max(+100%, +4 pods) per 15 s; scale-down: stabilisation window 300 s over the window's
  highest recommendation, at most -100% per 15 s.
* KEDA: the trigger's value is polled every 30 s (`pollingInterval`; the metrics adapter
  serves the cached value, KEDA's `useCachedMetrics`), and the HPA KEDA creates computes
  `desired = ceil(total / threshold)` with the same tolerance and `behavior` defaults
  (scale-down stabilisation 300 s); `minReplicaCount` 1, so the 300 s `cooldownPeriod`
  (which applies to scaling to zero only) plays no part.

Nothing here reads a clock or talks to a cluster: the benchmark calls :meth:`Hpa.decide`
with the time, the current replica count and the metric, and writes the answer.
Every time-based knob can be divided by the replay's speed-up (:meth:`HpaBehavior.scaled`)
so a trace replayed 8x faster meets an HPA whose clock runs 8x faster too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

__all__ = [
    "Hpa",
    "HpaBehavior",
    "PodMetric",
    "ScaleEvent",
    "external_average_value_replicas",
    "pods_metric_replicas",
]


@dataclass(frozen=True)
class HpaBehavior:
    """The HPA's `spec.behavior` and controller flags; defaults are Kubernetes' own."""

    min_replicas: int = 1
    max_replicas: int = 10
    tolerance: float = 0.1
    """`--horizontal-pod-autoscaler-tolerance`: ratios within 10% of 1 change nothing."""
    sync_seconds: float = 15.0
    """`--horizontal-pod-autoscaler-sync-period`."""
    scale_up_window_seconds: float = 0.0
    scale_up_percent: float = 100.0
    scale_up_pods: int = 4
    scale_up_period_seconds: float = 15.0
    scale_down_window_seconds: float = 300.0
    scale_down_percent: float = 100.0
    scale_down_period_seconds: float = 15.0

    def __post_init__(self) -> None:
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError(
                f"HpaBehavior: need 1 <= min_replicas <= max_replicas, got "
                f"{self.min_replicas}, {self.max_replicas}"
            )
        if not 0 <= self.tolerance < 1:
            raise ValueError(f"HpaBehavior.tolerance must be in [0, 1), got {self.tolerance!r}")
        for name in ("sync_seconds", "scale_up_period_seconds", "scale_down_period_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"HpaBehavior.{name} must be > 0, got {getattr(self, name)!r}")

    def scaled(self, speedup: float) -> HpaBehavior:
        """Every time-based knob divided by ``speedup`` (for a trace replayed faster)."""
        if not speedup > 0:
            raise ValueError(f"speedup must be > 0, got {speedup!r}")
        return replace(
            self,
            sync_seconds=self.sync_seconds / speedup,
            scale_up_window_seconds=self.scale_up_window_seconds / speedup,
            scale_up_period_seconds=self.scale_up_period_seconds / speedup,
            scale_down_window_seconds=self.scale_down_window_seconds / speedup,
            scale_down_period_seconds=self.scale_down_period_seconds / speedup,
        )


@dataclass(frozen=True)
class PodMetric:
    """One pod's value of a per-pod metric, and whether the pod is ready (serving)."""

    value: float | None
    """``None``: the pod has no sample yet (a "missing" pod)."""
    ready: bool


def pods_metric_replicas(
    current: int, pods: Sequence[PodMetric], target: float, tolerance: float
) -> int:
    """Replicas for a `Pods` metric with an average-value target (HPA's replica calculator).

    Unready pods and pods without a sample are set aside; the ratio is the ready pods' mean
    over the target. Within the tolerance nothing changes; otherwise, if some pods were set
    aside, the ratio is recomputed assuming unready pods use 0 (only when scaling up) and
    missing pods use 0 when scaling up or the target when scaling down, and a recomputed ratio
    that falls within the tolerance or flips the direction keeps ``current``.
    """
    if not target > 0:
        raise ValueError(f"target must be > 0, got {target!r}")
    ready = [p.value for p in pods if p.ready and p.value is not None]
    unready = sum(1 for p in pods if not p.ready)
    missing = sum(1 for p in pods if p.ready and p.value is None)
    if not ready:
        return current  # the real HPA reports "no metrics" and does not scale
    ratio = sum(ready) / len(ready) / target
    scale_up_with_unready = unready > 0 and ratio > 1.0
    if not scale_up_with_unready and missing == 0:
        if abs(1.0 - ratio) <= tolerance:
            return current
        return math.ceil(ratio * len(ready))
    values = list(ready)
    if missing:
        values += [target if ratio < 1.0 else 0.0] * missing
    if scale_up_with_unready:
        values += [0.0] * unready
    new_ratio = sum(values) / len(values) / target
    if abs(1.0 - new_ratio) <= tolerance or (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
        return current
    proposed = math.ceil(new_ratio * len(values))
    if (new_ratio < 1.0 and proposed > current) or (new_ratio > 1.0 and proposed < current):
        return current
    return proposed


def external_average_value_replicas(
    current: int, total: float, target_per_pod: float, tolerance: float
) -> int:
    """Replicas for an `External` metric with an `AverageValue` target (KEDA's trigger):
    ``ceil(total / target)`` unless ``total / (target * current)`` is within the tolerance."""
    if not target_per_pod > 0:
        raise ValueError(f"target_per_pod must be > 0, got {target_per_pod!r}")
    if current > 0 and abs(1.0 - total / (target_per_pod * current)) <= tolerance:
        return current
    return math.ceil(total / target_per_pod)


@dataclass(frozen=True)
class ScaleEvent:
    """A change the HPA made: ``replicas`` added (> 0) or removed (< 0) at ``time``."""

    time: float
    replicas: int


@dataclass
class Hpa:
    """One HPA's memory between syncs: past recommendations and scale events."""

    behavior: HpaBehavior = field(default_factory=HpaBehavior)
    recommendations: list[tuple[float, int]] = field(default_factory=list)
    events: list[ScaleEvent] = field(default_factory=list)

    def decide(self, now: float, current: int, proposed: int) -> int:
        """The replica count after this sync, given the metric's ``proposed`` count.

        Stabilisation: the result is at least the lowest recommendation of the scale-up window
        and at most the highest of the scale-down window (both including this one); then the
        rate limits and ``[min, max]``. Call :meth:`record` with what was applied.
        """
        b = self.behavior
        if not self.recommendations:
            # Kubernetes seeds the scale-down window with the current count on first sight.
            self.recommendations.append((now, current))
        horizon = max(b.scale_up_window_seconds, b.scale_down_window_seconds)
        self.recommendations = [(t, r) for t, r in self.recommendations if t > now - horizon]
        up, down = proposed, proposed
        for t, r in self.recommendations:
            if t > now - b.scale_up_window_seconds:
                up = min(up, r)
            if t > now - b.scale_down_window_seconds:
                down = max(down, r)
        self.recommendations.append((now, proposed))
        stabilised = min(max(current, up), down)
        return self._limit(now, current, stabilised)

    def _limit(self, now: float, current: int, desired: int) -> int:
        b = self.behavior
        if desired > current:
            added = sum(
                e.replicas
                for e in self.events
                if e.replicas > 0 and e.time > now - b.scale_up_period_seconds
            )
            removed = -sum(
                e.replicas
                for e in self.events
                if e.replicas < 0 and e.time > now - b.scale_up_period_seconds
            )
            start = current - added + removed
            limit = max(
                math.ceil(start * (1 + b.scale_up_percent / 100.0)), start + b.scale_up_pods
            )
            return max(min(desired, limit, b.max_replicas), min(current, b.max_replicas))
        if desired < current:
            added = sum(
                e.replicas
                for e in self.events
                if e.replicas > 0 and e.time > now - b.scale_down_period_seconds
            )
            removed = -sum(
                e.replicas
                for e in self.events
                if e.replicas < 0 and e.time > now - b.scale_down_period_seconds
            )
            start = current + removed - added
            limit = math.ceil(start * (1 - b.scale_down_percent / 100.0))
            return min(max(desired, limit, b.min_replicas), max(current, b.min_replicas))
        return min(max(desired, b.min_replicas), b.max_replicas)

    def record(self, now: float, before: int, after: int) -> None:
        """Remember a change that was applied (for the per-period rate limits)."""
        if after != before:
            self.events.append(ScaleEvent(now, after - before))
        keep = max(self.behavior.scale_up_period_seconds, self.behavior.scale_down_period_seconds)
        self.events = [e for e in self.events if e.time > now - keep]
