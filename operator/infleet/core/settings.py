"""Operator settings: nested dataclasses, every field with its unit and why its default.

Pure data (no I/O): `infleet run` fills them from its flags, the fleet loop and the Kopf
handlers read them. Tests build them directly with short intervals.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

FIELD_MANAGER = "infleet"
"""Server-side apply field manager: infleet owns exactly the fields it writes under this name."""

ANNOTATION_PREFIX = "infleet.io"
"""Prefix of every annotation infleet (and Kopf on its behalf) writes; never Kopf's default."""


@dataclass(frozen=True)
class FleetLoopSettings:
    """When the fleet is re-planned."""

    interval_seconds: float = 15.0
    """Seconds between fleet cycles without any change (the design brief's 15 s): often enough
    to follow traffic, rare enough that an idle operator costs almost no CPU."""
    debounce_seconds: float = 1.0
    """Seconds to wait after the first change before planning, so that `kubectl apply -f dir/`
    of many objects (or a node pool going away) becomes one cycle, not one per object."""
    churn_cost_per_replica: float = 0.05
    """$/h-equivalent penalty per replica added or removed relative to what runs now: larger
    than float noise and tiny differences between equal-cost mixes, smaller than any real
    saving from moving a replica (prices are dollars per accelerator-hour)."""
    resync_seconds: float = 300.0
    """Seconds after which an interval cycle re-reads the cluster although no watch event came
    (what the watches do not see: other workloads' pods). Between resyncs, an interval with no
    change and no deadline (a pending replica reaching its grace period, a capacity hold
    expiring) skips the cycle, so an idle operator neither lists 2,000 nodes nor re-plans."""
    planner_time_limit_seconds: float = 5.0
    """Upper bound on one planner call; the best plan found by then is used."""


@dataclass(frozen=True)
class PendingSettings:
    """How unschedulable replicas feed back into planning."""

    grace_period_seconds: float = 120.0
    """Seconds a replica may stay Pending as Unschedulable before its pool's accelerators are
    treated as unavailable: longer than a scheduler retry round and a node coming Ready, shorter
    than the time a user waits before asking why a model does not serve."""
    hold_seconds: float = 600.0
    """Seconds a pool keeps the reduced capacity after its pending replicas are gone. Without
    it, moving replicas away frees the pool, the next cycle moves them back and they pend
    again. Cleared earlier when the pool's allocatable accelerators change (nodes came)."""


@dataclass(frozen=True)
class RetrySettings:
    """Backoff for API conflicts and transient errors within one cycle."""

    attempts: int = 4
    """Tries per API call before the error is recorded and the cycle moves on."""
    initial_backoff_seconds: float = 0.2
    """First wait; doubles per attempt (0.2, 0.4, 0.8 s) so a conflict is retried quickly."""
    max_backoff_seconds: float = 5.0
    """Longest single wait, so one flaky call never stalls the loop for long."""


@dataclass(frozen=True)
class AutoscaleSettings:
    """Live-metrics autoscaling (opt-in): demand from Prometheus instead of the traffic prior."""

    prometheus_url: str | None = None
    """Prometheus to read the engines' metrics from; ``None`` keeps the traffic prior (no
    autoscaling), so a cluster without Prometheus runs exactly as before."""
    metrics_window: str = "1m"
    """PromQL range of rates and percentiles: four 15 s scrapes, the usual minimum for
    ``rate()``; shorter windows follow a change sooner but are noisier."""
    fast_window: str | None = None
    """PromQL range of the short-window completion rate behind the fast attack
    (:mod:`infleet.core.autoscale`): ``None`` means 40% of ``metrics_window`` (``1m`` ->
    ``24s``), ``"0"`` turns it off. It needs at least two scrapes inside it to answer."""
    probe_interval_seconds: float = 5.0
    """Seconds between probes of the short-window rate between fleet cycles
    (:mod:`infleet.core.probe`): when a model's load outgrows what its plan covers, a cycle
    starts at once instead of at the next interval. One query per engine in use; ``0`` turns
    it off, and so does a value at or above the fleet interval or a fast window of ``"0"``."""
    status_refresh_seconds: float = 60.0
    """Seconds a model's status may keep showing older live figures (``observed``, the demand
    figure, the persisted scaling window; see :mod:`infleet.core.status_change`) before they
    are written again. A change a user acts on (replicas, placements, conditions, the demand
    source, a derate) is written in the cycle that makes it. With live metrics every status
    changes every cycle, and at a few hundred models those patches were most of the cycle;
    Prometheus has the figures live. ``0`` writes every change at once. Without
    ``prometheus_url`` nothing is held back."""
    query_timeout_seconds: float = 5.0
    """Per query; an unreachable Prometheus costs at most this (times its retries) per cycle,
    because the remaining queries of the cycle are skipped after the first failure."""

    @property
    def enabled(self) -> bool:
        """Whether demand comes from live metrics."""
        return self.prometheus_url is not None

    @property
    def resolved_fast_window(self) -> str | None:
        """The fast-attack window as a PromQL duration, or ``None`` when it is off."""
        if self.fast_window == "0":
            return None
        if self.fast_window is not None:
            return self.fast_window
        millis = round(duration_seconds(self.metrics_window) * 400)
        return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


_DURATION = re.compile(r"([1-9][0-9]*)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(text: str) -> float:
    """Seconds of a single-unit PromQL duration (``500ms``, ``20s``, ``1m``, ``2h``)."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"not a duration such as 20s or 1m: {text!r}")
    return int(match[1]) * _UNIT_SECONDS[match[2]]


@dataclass(frozen=True)
class OperatorSettings:
    """Everything `infleet run` can be told."""

    namespaces: tuple[str, ...] = ()
    """Namespaces whose ModelDeployments are managed; empty means all namespaces."""
    fleet: FleetLoopSettings = field(default_factory=FleetLoopSettings)
    pending: PendingSettings = field(default_factory=PendingSettings)
    retry: RetrySettings = field(default_factory=RetrySettings)
    autoscale: AutoscaleSettings = field(default_factory=AutoscaleSettings)
    metrics_port: int = 8080
    """Port of the operator's own `/metrics` and `/healthz`; 0 disables the server."""
    peering: bool = False
    """Kopf peering: several instances, one active (high availability)."""
    peering_name: str = "infleet"
    """Name of the Kopf peering object used when ``peering`` is on."""
    peering_priority: int = 0
    """This instance's peering priority: the live instance with the highest one is active;
    instances with equal priorities all pause (Kopf's rule), so give each replica its own."""
    peering_identity: str = ""
    """This instance's identity in the peering object (set by `infleet run`)."""
    show_fleet: bool = False
    """Print the fleet (placements, cost) to stdout whenever the plan changes (`make demo`)."""

    @property
    def all_namespaces(self) -> bool:
        """True when ModelDeployments of every namespace are managed."""
        return not self.namespaces
