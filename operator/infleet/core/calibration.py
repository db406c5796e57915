"""Online calibration: learn, per (model, variant), how far the capacity model is optimistic.

The capacity model (:mod:`infleet.core.capacity`) predicts what a replica sustains at the SLO;
the engines report what actually happens. When the observed percentile breaks the SLO while
the plan claimed headroom, the model over-estimated the variant and its capacity is derated;
when latency is well under the SLO at a meaningful load, the factor recovers slowly. The factor
multiplies the variant's capacity (``replica_capacity(..., calibration=factor)``) and is
persisted in status, so it survives operator restarts.

Rules (defaults in :class:`CalibrationSettings`):

* **Derate** by ``derate_step`` (x0.85) when the worst latency ratio (observed / target over
  the SLO's targets) exceeds ``1 + breach_tolerance`` *and* the variant's utilisation is at
  or below the model's ``targetUtilization``. Above the target the breach is explained by too
  few replicas (a ramp in progress), not by a wrong model, so nothing is learned. Derating
  is self-limiting: utilisation is measured against the *calibrated* capacity, so one derate
  of 0.85 lifts it by 1/0.85 = 1.18x, which usually takes it above the target until the extra
  replicas the plan now buys are ready.
* **Recover** by ``recover_step`` (x1.02) when every target is observed, the worst ratio is
  below ``recover_below`` (0.7), and utilisation is at least ``recover_min_load`` (0.5) of
  the target: low latency on an idle replica says nothing about its capacity. From the floor
  0.3 back to 1.0 takes ln(3.33)/ln(1.02) = 61 cycles, about 15 minutes at 15 s cycles:
  slow on purpose, because a premature recovery breaks the SLO again.
* **Learn from a settled fleet only.** A derate needs the fleet behind the latency to be the
  one the plan describes: no replica added, removed or still starting, and no derate, within
  the time the metrics window needs to forget the change (the caller says so with
  ``settled``). Otherwise the percentile still holds the latency of a ramp (requests queued
  while new replicas started) or of the capacity before the last derate, and each cycle would
  derate again on the same evidence until the floor: measured in the sandbox, a 2 s cycle over
  a 20 s window took a correct profile from 1.0 to 0.31 in ten seconds. Recovery is not held
  back: it is slow and needs low latency.
* **Otherwise no change**: inside the band, or latency/load not observed, or stale.
* **Bounds** ``[min_factor, max_factor]`` = [0.3, 1.0]. The floor stops a broken metric from
  shrinking a variant to nothing (a derate below 0.3 means the profile is wrong and should be
  re-measured). The ceiling is 1.0 because latency evidence can show the model is optimistic
  but not that it is pessimistic: an SLO met at 80% load does not prove the replica would
  meet it at more. Raise ``max_factor`` (up to 2, the capacity model's limit) to let it learn
  upwards. A stored factor outside the bounds is clamped first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from infleet.core.capacity import MAX_CALIBRATION, LatencySLO

__all__ = [
    "CalibrationSettings",
    "CalibrationUpdate",
    "VariantObservation",
    "calibrate_variants",
    "update_calibration",
    "worst_latency_ratio",
]

DERATED = "derated"
RECOVERED = "recovered"
UNCHANGED = "unchanged"


def _finite(where: str, value: float, low: float, high: float) -> None:
    if not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{where} must be a number in [{low:g}, {high:g}], got {value!r}")


@dataclass(frozen=True)
class CalibrationSettings:
    """How the per-variant capacity factor learns (all ratios are plain fractions)."""

    min_factor: float = 0.3
    """Lowest factor, > 0 and <= 1: a variant is never believed to do less than 30% of its
    model; lower than that means the profile itself is wrong."""
    max_factor: float = 1.0
    """Highest factor, 1 to 2: by default calibration only derates (see module docs)."""
    derate_step: float = 0.85
    """Multiplier applied on a breach with claimed headroom, in (0, 1)."""
    breach_tolerance: float = 0.05
    """A percentile up to 5% over the target is not taken as evidence: Prometheus
    interpolates percentiles inside histogram buckets."""
    recover_step: float = 1.02
    """Multiplier applied when latency is well under the target, >= 1 (+2% a cycle)."""
    recover_below: float = 0.7
    """Latency ratio under which the factor recovers, in (0, 1]."""
    recover_min_load: float = 0.5
    """Recovery needs utilisation >= this fraction of the model's target utilisation."""

    def __post_init__(self) -> None:
        _finite("CalibrationSettings.min_factor", self.min_factor, 1e-6, 1.0)
        _finite("CalibrationSettings.max_factor", self.max_factor, 1.0, MAX_CALIBRATION)
        _finite("CalibrationSettings.derate_step", self.derate_step, 1e-6, 1.0 - 1e-6)
        _finite("CalibrationSettings.breach_tolerance", self.breach_tolerance, 0.0, 10.0)
        _finite("CalibrationSettings.recover_step", self.recover_step, 1.0, 10.0)
        _finite("CalibrationSettings.recover_below", self.recover_below, 1e-6, 1.0)
        _finite("CalibrationSettings.recover_min_load", self.recover_min_load, 0.0, 10.0)


@dataclass(frozen=True)
class CalibrationUpdate:
    """One cycle's change to a variant's factor."""

    factor: float
    """The factor to use and persist from now on."""
    action: str
    """``"derated"``, ``"recovered"`` or ``"unchanged"``."""
    reason: str
    """A sentence for events and status."""


@dataclass(frozen=True)
class VariantObservation:
    """What the engines of one variant reported this cycle (pods aggregated per variant)."""

    ttft_ms: float | None
    """Time to first token at the SLO percentile, ms; ``None`` when not observed."""
    tpot_ms: float | None
    """Time per output token at the SLO percentile, ms; ``None`` when not observed."""
    utilization: float | None
    """Observed requests/s per ready replica divided by the variant's *calibrated* capacity
    per replica (``CapacityEstimate.requests_per_second``); ``None`` when unknown."""
    data_age_seconds: float = 0.0
    """Age of the newest sample behind these figures."""


def worst_latency_ratio(
    ttft_ms: float | None, tpot_ms: float | None, slo: LatencySLO
) -> tuple[float | None, bool]:
    """``(worst observed/target ratio, every target observed)`` over the SLO's targets.

    The ratio is ``None`` when no target is observed. A target without an observation is
    ignored for the ratio but makes the second item ``False``.
    """
    ratios: list[float] = []
    complete = True
    for observed, target in ((ttft_ms, slo.ttft_ms), (tpot_ms, slo.tpot_ms)):
        if target is None:
            continue
        if observed is None or not math.isfinite(observed) or observed < 0:
            complete = False
            continue
        ratios.append(observed / target)
    return (max(ratios) if ratios else None), complete


def update_calibration(
    factor: float,
    *,
    latency_ratio: float | None,
    utilization: float | None,
    target_utilization: float,
    settings: CalibrationSettings,
    all_targets_observed: bool = True,
    settled: bool = True,
) -> CalibrationUpdate:
    """One calibration step for one variant (rules in the module docs).

    ``latency_ratio`` is the worst observed/target ratio (see :func:`worst_latency_ratio`);
    ``utilization`` is load over calibrated capacity; ``target_utilization`` is the model's;
    ``settled`` is False while the metrics window still covers a change of the fleet.
    """
    if not math.isfinite(factor) or factor <= 0:
        raise ValueError(f"calibration factor must be a finite number > 0, got {factor!r}")
    _finite("target_utilization", target_utilization, 1e-9, 1.0)
    low, high = settings.min_factor, settings.max_factor
    current = min(max(factor, low), high)
    if latency_ratio is None or utilization is None:
        return CalibrationUpdate(current, UNCHANGED, "latency or load not observed")
    if latency_ratio > 1.0 + settings.breach_tolerance:
        if utilization > target_utilization:
            return CalibrationUpdate(
                current,
                UNCHANGED,
                f"latency {latency_ratio:.2f}x the SLO at {utilization:.0%} load, above the "
                f"{target_utilization:.0%} target: too few replicas, not a model error",
            )
        if not settled:
            return CalibrationUpdate(
                current,
                UNCHANGED,
                f"latency {latency_ratio:.2f}x the SLO while the fleet settles (replicas changed "
                "or starting, or derated, within the metrics window): not learned",
            )
        if current <= low:
            return CalibrationUpdate(
                current, UNCHANGED, f"latency {latency_ratio:.2f}x the SLO; already at {low:g}"
            )
        new = max(low, current * settings.derate_step)
        return CalibrationUpdate(
            new,
            DERATED,
            f"latency {latency_ratio:.2f}x the SLO at {utilization:.0%} load while the plan "
            f"claimed headroom: capacity factor {current:.3f} -> {new:.3f}",
        )
    if latency_ratio < settings.recover_below and all_targets_observed:
        floor = settings.recover_min_load * target_utilization
        if utilization < floor:
            return CalibrationUpdate(
                current,
                UNCHANGED,
                f"load {utilization:.0%} below {floor:.0%}: too light to show capacity",
            )
        new = min(high, current * settings.recover_step)
        if new <= current:  # at the ceiling, or recovery switched off with a step of 1
            return CalibrationUpdate(
                current, UNCHANGED, f"latency well under the SLO; factor stays {current:g}"
            )
        return CalibrationUpdate(
            new,
            RECOVERED,
            f"latency {latency_ratio:.2f}x the SLO at {utilization:.0%} load: "
            f"capacity factor {current:.3f} -> {new:.3f}",
        )
    return CalibrationUpdate(current, UNCHANGED, f"latency {latency_ratio:.2f}x the SLO: in band")


def calibrate_variants(
    factors: Mapping[str, float],
    observations: Mapping[str, VariantObservation],
    *,
    slo: LatencySLO,
    target_utilization: float,
    settings: CalibrationSettings,
    stale_after_seconds: float,
    settled: bool = True,
) -> dict[str, CalibrationUpdate]:
    """One step for every variant named in ``factors`` or ``observations``.

    A variant without a stored factor starts at 1.0 (clamped into the bounds); one without an
    observation, or with data older than ``stale_after_seconds``, keeps its factor; while not
    ``settled`` no variant is derated.
    """
    updates: dict[str, CalibrationUpdate] = {}
    for variant in sorted(set(factors) | set(observations)):
        factor = min(max(factors.get(variant, 1.0), settings.min_factor), settings.max_factor)
        obs = observations.get(variant)
        if obs is None:
            updates[variant] = CalibrationUpdate(factor, UNCHANGED, "no metrics for the variant")
            continue
        if obs.data_age_seconds > stale_after_seconds:
            updates[variant] = CalibrationUpdate(
                factor,
                UNCHANGED,
                f"metrics {obs.data_age_seconds:.0f} s old (stale after {stale_after_seconds:g} s)",
            )
            continue
        ratio, complete = worst_latency_ratio(obs.ttft_ms, obs.tpot_ms, slo)
        updates[variant] = update_calibration(
            factor,
            latency_ratio=ratio,
            utilization=obs.utilization,
            target_utilization=target_utilization,
            settings=settings,
            all_targets_observed=complete,
            settled=settled,
        )
    return updates
