"""Demand history for the autoscaler: a bounded buffer of ``(time, rps)`` samples, the
stabilisation window's peak, and a short-term trend forecast.

Pure functions over tuples of floats, so the history can live in a status field and tests can
compute every answer by hand. :mod:`infleet.core.autoscale` explains how the rules combine.

Forecast method: the least-squares slope of demand against time over the last
``window_seconds`` (the smallest of the slopes over the whole window and over each of its
halves, so that a step is not read as a ramp), extrapolated over the horizon (the startup
time of new replicas) and only ever used to *raise* the figure:
``forecast = now + max(0, slope) * horizon``, capped at ``max_ratio`` times the current
demand. A straight-line fit is the simplest predictor whose
answer one can check with a pencil; it needs no tuned smoothing constants (Holt would need
two) and copes with uneven sampling intervals, which a cycle that also runs "soon after any
change" produces. The cap keeps a noisy slope times a 300 s horizon from buying a large fleet.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ForecastSettings",
    "Sample",
    "add_sample",
    "forecast_demand",
    "trend_slope",
    "window_peak",
]

Sample = tuple[float, float]
"""``(time in seconds, requests per second)``."""

_MIN_SPAN_SECONDS = 1.0
"""Samples closer together than this in time carry no trend (only rounding)."""


@dataclass(frozen=True)
class ForecastSettings:
    """How the short-term forecast is made."""

    window_seconds: float = 180.0
    """Seconds of history the trend is fitted over. 180 s follows AIBrix's observe window:
    long enough that 15 s cycles give a dozen points, short enough to follow a ramp."""
    min_samples: int = 3
    """Fewest samples in the window before a slope is trusted; two points are a line
    through noise."""
    max_ratio: float = 2.0
    """The forecast is at most this multiple of the current demand: AIBrix allows at most a
    2x change per decision, and a noisy slope must not buy an outsized fleet."""

    def __post_init__(self) -> None:
        if not math.isfinite(self.window_seconds) or self.window_seconds < 0:
            raise ValueError(
                f"ForecastSettings.window_seconds must be a finite number >= 0, "
                f"got {self.window_seconds!r}"
            )
        if isinstance(self.min_samples, bool) or self.min_samples < 2:
            raise ValueError(
                f"ForecastSettings.min_samples must be an integer >= 2, got {self.min_samples!r}"
            )
        if not math.isfinite(self.max_ratio) or self.max_ratio < 1:
            raise ValueError(
                f"ForecastSettings.max_ratio must be a finite number >= 1, got {self.max_ratio!r}"
            )


def add_sample(
    samples: Sequence[Sample],
    sample: Sample,
    *,
    keep_seconds: float,
    max_samples: int,
) -> tuple[Sample, ...]:
    """Append ``sample``, drop samples older than ``keep_seconds`` before it, and bound the
    length.

    A sample at exactly ``time - keep_seconds`` is kept (windows are closed intervals). When
    more than ``max_samples`` remain, the two oldest merge into one at the newer time with
    the larger value, repeatedly: the window's peak is never lost, at worst it is remembered
    a little longer than its true age, which errs towards keeping capacity.
    """
    if max_samples < 2:
        raise ValueError(f"max_samples must be >= 2, got {max_samples!r}")
    now = sample[0]
    kept = [s for s in samples if s[0] >= now - keep_seconds]
    kept.append(sample)
    while len(kept) > max_samples:
        (_, v0), (t1, v1) = kept[0], kept[1]
        kept[0:2] = [(t1, max(v0, v1))]
    return tuple(kept)


def window_peak(samples: Sequence[Sample], now: float, window_seconds: float) -> float | None:
    """Largest value among samples with ``now - window_seconds <= time``; ``None`` if none."""
    values = [v for t, v in samples if t >= now - window_seconds]
    return max(values) if values else None


def _line_slope(points: Sequence[Sample]) -> float | None:
    """Least-squares slope through ``points``; ``None`` for fewer than two points or a time
    span under a second."""
    if len(points) < 2:
        return None
    times = [t for t, _ in points]
    if max(times) - min(times) < _MIN_SPAN_SECONDS:
        return None
    # Offsets from the newest sample: a flat signal then gives exactly zero deviations, where
    # means of large equal floats could differ from them by an ulp and fake a slope.
    t_ref, v_ref = points[-1]
    offsets = [(t - t_ref, v - v_ref) for t, v in points]
    n = len(offsets)
    mean_t = sum(t for t, _ in offsets) / n
    mean_v = sum(v for _, v in offsets) / n
    spread = sum((t - mean_t) ** 2 for t, _ in offsets)
    return sum((t - mean_t) * (v - mean_v) for t, v in offsets) / spread


def trend_slope(samples: Sequence[Sample], now: float, settings: ForecastSettings) -> float | None:
    """The trend (rps per second) of the samples in the forecast window: the smallest of the
    least-squares slopes through all of them, through their older half and through their
    newer half (the middle sample of an odd count belongs to both).

    A trend must show in both halves of the window. A level shift puts its whole rise between
    two samples, so one half is flat and there is no trend: a load that steps from 0 to
    3 req/s is 3 req/s, not a ramp heading for 6. A fitted line through the step would say
    "rising" for the whole window after it, and the forecast would buy capacity for a rise
    that has already happened. A steady ramp has the same slope in both halves and keeps it;
    noise rarely rises in both halves, and then by the smaller of the two.

    ``None`` when fewer than ``settings.min_samples`` samples fall in the window, or they (or,
    from three samples, either half) span less than a second. With ``min_samples=2`` two
    samples give their line (no halves to compare).
    """
    points = sorted((t, v) for t, v in samples if t >= now - settings.window_seconds)
    if len(points) < settings.min_samples:
        return None
    whole = _line_slope(points)
    if whole is None or len(points) < 3:
        return whole
    n = len(points)
    older = _line_slope(points[: (n + 1) // 2])
    newer = _line_slope(points[n // 2 :])
    if older is None or newer is None:
        return None
    return min(whole, older, newer)


def forecast_demand(
    samples: Sequence[Sample],
    now: float,
    current: float,
    horizon_seconds: float,
    settings: ForecastSettings,
) -> float:
    """Demand expected ``horizon_seconds`` from ``now``; never below ``current``.

    ``current + max(0, slope) * horizon``, capped at ``settings.max_ratio * current``.
    ``samples`` should already include the current sample.
    """
    if not math.isfinite(horizon_seconds) or horizon_seconds < 0:
        raise ValueError(f"horizon_seconds must be a finite number >= 0, got {horizon_seconds!r}")
    slope = trend_slope(samples, now, settings)
    if slope is None or slope <= 0:
        return current
    return min(current + slope * horizon_seconds, current * settings.max_ratio)
