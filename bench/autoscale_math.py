"""Pure arithmetic of the autoscaling benchmark: percentiles from histogram buckets, SLO
minutes, replica-seconds and cost. No I/O, so tests check each figure by hand."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

__all__ = [
    "bucket_quantile",
    "minute_increments",
    "replica_seconds",
    "replica_stats",
]

BucketKey = tuple[str, float]
"""``(pod, upper bound)`` of one cumulative histogram bucket (``inf`` for ``+Inf``)."""


def bucket_quantile(q: float, buckets: Mapping[float, float]) -> float:
    """The ``q`` quantile of cumulative ``{upper bound: count}`` buckets, as Prometheus'
    ``histogram_quantile`` computes it: linear inside the bucket holding the rank, the lowest
    bucket starting at 0, the ``+Inf`` bucket answering its lower bound. NaN when empty."""
    if not 0 <= q <= 1:
        raise ValueError(f"q must be in [0, 1], got {q!r}")
    bounds = sorted(buckets)
    if not bounds or not math.isinf(bounds[-1]):
        raise ValueError("buckets need a +Inf bucket")
    total = buckets[bounds[-1]]
    if total <= 0:
        return math.nan
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside > 0 else 1.0)
        lower, below = bound, count
    return lower


def minute_increments(
    before: Mapping[BucketKey, float], after: Mapping[BucketKey, float]
) -> dict[float, float]:
    """Cumulative buckets summed over pods for what happened between two readings.

    A pod present only in ``after`` started in between (its counters start at 0); a pod
    present only in ``before`` was gone (nothing of it is counted); a counter that went down
    was reset, so its whole ``after`` value is the increment, as Prometheus' ``increase``
    assumes."""
    out: dict[float, float] = {}
    for key, value in after.items():
        old = before.get(key, 0.0)
        delta = value - old if value >= old else value
        out[key[1]] = out.get(key[1], 0.0) + delta
    return out


def replica_seconds(samples: Sequence[tuple[float, int]], start: float, end: float) -> float:
    """Integral of a piecewise-constant replica count over ``[start, end]``.

    ``samples`` are ``(time, replicas)`` sorted by time; each count holds until the next
    sample. Before the first sample the count is taken as the first one's."""
    if end < start:
        raise ValueError(f"end {end!r} is before start {start!r}")
    if not samples:
        return 0.0
    total = 0.0
    for i, (t, count) in enumerate(samples):
        t_next = samples[i + 1][0] if i + 1 < len(samples) else math.inf
        lo = max(start, t if i else -math.inf)
        hi = min(end, t_next)
        if hi > lo:
            total += (hi - lo) * count
    return total


def replica_stats(
    samples: Sequence[tuple[float, int]], start: float, end: float
) -> tuple[int, float, int]:
    """``(min, time-weighted mean, max)`` of the replica count over ``[start, end]``."""
    if end <= start:
        raise ValueError(f"need end > start, got [{start!r}, {end!r}]")
    inside = [c for t, c in samples if start <= t <= end]
    before = [c for t, c in samples if t < start]
    if before:
        inside.append(before[-1])
    if not inside:
        return 0, 0.0, 0
    return min(inside), replica_seconds(samples, start, end) / (end - start), max(inside)
