"""Early cycles: between two fleet cycles, has a model's load outgrown what its plan covers?

Why: the fleet cycle runs every ``interval`` (15 s by default). A load step that shows in
Prometheus just after a cycle therefore waits up to a whole interval before anything reacts,
on top of the time the short-window rate needs to clear its noise margin. The design brief
asks for a cycle "soon after any change"; a rise in traffic is such a change, but no
Kubernetes event announces it.

So between cycles the operator reads one cheap signal for the whole fleet, the short-window
completion rate (the fast attack's, see :mod:`infleet.core.autoscale`), and compares each
model's figure with the arrivals its current plan covers. A model whose rate, less the fast
attack's noise margin, is above that line needs more replicas now: the loop starts a cycle at
once, which reads every signal and decides as any cycle does. The test is the one the cycle
itself would apply (the fast attack's lower bound against the plan's capacity at the target
utilisation), so a probe that fires is followed by a cycle that scales up, and a probe that
does not fire would not have been followed by one on that signal.

A model is left out of the probe (:func:`probe_line` answers ``None``) where an early cycle
could not add anything: its plan is already at its maximum replicas, or short of capacity
(the planner could not give it what it asked for). Each line fires at most once
(:class:`ProbeLine` remembers it): if the early cycle could not raise the model's plan, the
next regular cycle draws a new line and the probe waits for that.

Pure: no clock, no I/O; the fleet loop reads the rate and calls :func:`rising`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["ProbeLine", "fast_arrivals", "probe_line", "rising"]


@dataclass(frozen=True)
class ProbeLine:
    """What one model's plan covers, drawn after a cycle."""

    covered_requests_per_second: float
    """Arrivals the planned replicas take at the model's target utilisation: the plan's
    capacity times ``targetUtilization``; more than this and the planner adds a replica."""

    def __post_init__(self) -> None:
        covered = self.covered_requests_per_second
        if not math.isfinite(covered) or covered < 0:
            raise ValueError(
                f"ProbeLine.covered_requests_per_second must be finite and >= 0, got {covered!r}"
            )


def fast_arrivals(
    fast_rate: float | None, fast_window_seconds: float | None, z: float
) -> float | None:
    """The short-window completion rate less ``z`` standard deviations of a Poisson count over
    its window (``sqrt(rate / window)``): a rise clears it within the window, noise rarely
    does. ``None`` without a usable reading (missing, not finite, negative, no window)."""
    if fast_rate is None or not math.isfinite(fast_rate) or fast_rate < 0:
        return None
    window = fast_window_seconds
    if window is None or not math.isfinite(window) or window <= 0:
        return None
    return fast_rate - z * math.sqrt(fast_rate / window)


def probe_line(
    *,
    capacity_requests_per_second: float,
    target_utilization: float,
    replicas: int,
    max_replicas: int,
    unmet_requests_per_second: float,
) -> ProbeLine | None:
    """The line a model's new plan draws for the probe, or ``None`` when an early cycle could
    not give it more: at ``max_replicas`` already, or short (``unmet > 0``). A model with no
    replicas has no engine signal to probe (it wakes on its wake query), so ``None`` too."""
    if replicas <= 0 or replicas >= max_replicas or unmet_requests_per_second > 0:
        return None
    if not math.isfinite(capacity_requests_per_second) or capacity_requests_per_second <= 0:
        return None
    return ProbeLine(covered_requests_per_second=capacity_requests_per_second * target_utilization)


def rising(
    line: ProbeLine, fast_rate: float | None, fast_window_seconds: float | None, z: float
) -> bool:
    """Whether the model's short-window rate, less its noise margin (:func:`fast_arrivals`),
    is above what its plan covers: then a cycle now would scale it up."""
    arrivals = fast_arrivals(fast_rate, fast_window_seconds, z)
    return arrivals is not None and arrivals > line.covered_requests_per_second
