"""Capacity model: requests per second one replica sustains while meeting its latency SLO.

Pure functions over plain frozen dataclasses; the API layer maps ``ModelDeployment`` variants
onto these. The planner calls :func:`replica_capacity` for every (model, variant) each cycle,
so it is plain Python + ``math`` and typically takes tens of microseconds.

Semantics
---------
**Measured capacity wins.** When ``max_requests_per_second`` is given it is a capacity
measured at the SLO (Mélange/AIBrix style); the answer is that figure times ``calibration``
with ``limited_by="measured"``, even if a profile is given as well.

**Analytic profile.** With an :class:`EngineProfile`:

1. Decode step ``t(b) = decode_base_ms + decode_per_sequence_ms * b`` (ms) at batch ``b``.
2. Batch ``B`` = largest ``b`` in ``[1, max_concurrency]`` with ``t(b) <= tpot_ms``
   (compared with a 1e-9 relative tolerance so that decimal inputs such as
   ``0.1 + 0.1 * 2 <= 0.3`` behave as written); ``B = max_concurrency`` without a TPOT
   target. If ``t(1) > tpot_ms`` the SLO cannot be met: capacity 0, ``"infeasible"``.
   Because the real batch never exceeds ``B``, every token's step time is at most
   ``t(B)``, so the TPOT SLO holds at any percentile.
3. Service time per request ``S = mean_input / prefill_tps + mean_output * t(B) / 1000``
   (seconds). Every output token is charged a full-batch step, including the first,
   which is slightly conservative.
4. The ``B`` batch slots are ``c = B`` servers of rate ``mu = 1 / S`` (M/M/c). TTFT at the
   SLO percentile ``p`` = prefill time + the p-quantile of the queue wait, where
   ``P(W > t) = C(c, a) e^{-(c mu - lambda) t}``.
5. With a TTFT target, capacity is the largest ``lambda < c mu`` whose TTFT quantile is at
   most the target (found to 1e-9 relative precision on the feasible side, so the TTFT
   at the returned rate never exceeds the SLO). If the prefill alone exceeds the target:
   capacity 0, ``"infeasible"``. Without a TTFT target, capacity is the throughput bound
   ``c mu``; headroom comes from the planner's ``targetUtilization``.

**limited_by**, decided by one rule each:

* ``"measured"``: a measured capacity was used.
* ``"infeasible"``: the SLO cannot be met at any load; ``requests_per_second`` is 0 and
  ``reason`` says why.
* ``"ttft"``: a TTFT target is set and feasible. The wait quantile diverges as
  ``lambda -> c mu``, so a TTFT target always holds the rate strictly below ``c mu``.
* ``"tpot"``: no TTFT target, and the TPOT target capped the batch below
  ``max_concurrency`` (so it is what bounds throughput).
* ``"throughput"``: no TTFT target, and the batch is ``max_concurrency``.

**Calibration** (learned online, ``0 < calibration <= 2``) multiplies the final
requests/s. ``reason`` is a sentence whenever the estimate is 0 or derated
(calibration < 1), otherwise ``None``.

Invalid inputs (non-positive or non-finite numbers, a percentile outside (0, 100), an SLO
with neither target, neither a measurement nor a profile) raise ``ValueError`` naming the
field at fault.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from infleet.core.queueing import (
    busy_servers_quantile,
    erlang_c,
    max_arrival_rate_for_wait,
    wait_quantile_seconds,
)

__all__ = [
    "CapacityEstimate",
    "EngineProfile",
    "LatencySLO",
    "TokenMix",
    "batch_for_tpot",
    "decode_step_ms",
    "erlang_c",
    "predict_latency",
    "replica_capacity",
    "service_seconds",
    "wait_quantile_seconds",
]

MAX_CALIBRATION = 2.0
"""Upper bound on the calibration factor: online learning may raise an estimate at most 2x."""

_TPOT_TOLERANCE = 1e-9
"""Relative slack when comparing decode step times with the TPOT target (float rounding)."""


def _require_positive(where: str, value: float) -> None:
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{where} must be a finite number > 0, got {value!r}")


def _require_non_negative(where: str, value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{where} must be a finite number >= 0, got {value!r}")


def _require_percentile(where: str, value: float) -> None:
    if not math.isfinite(value) or not 0 < value < 100:
        raise ValueError(f"{where} must be strictly between 0 and 100, got {value!r}")


@dataclass(frozen=True)
class LatencySLO:
    """Latency targets a replica must meet at ``percentile``."""

    percentile: float = 95.0
    """Percentile on the 0-100 scale (95.0 = p95), strictly between 0 and 100."""
    ttft_ms: float | None = None
    """Time to first token target in milliseconds, or ``None`` for no TTFT target."""
    tpot_ms: float | None = None
    """Time per output token (inter-token latency) target in milliseconds, or ``None``."""

    def __post_init__(self) -> None:
        _require_percentile("LatencySLO.percentile", self.percentile)
        if self.ttft_ms is not None:
            _require_positive("LatencySLO.ttft_ms", self.ttft_ms)
        if self.tpot_ms is not None:
            _require_positive("LatencySLO.tpot_ms", self.tpot_ms)


@dataclass(frozen=True)
class TokenMix:
    """Mean request shape."""

    mean_input_tokens: float
    """Mean prompt length in tokens, > 0."""
    mean_output_tokens: float
    """Mean generated length in tokens, > 0."""

    def __post_init__(self) -> None:
        _require_positive("TokenMix.mean_input_tokens", self.mean_input_tokens)
        _require_positive("TokenMix.mean_output_tokens", self.mean_output_tokens)


@dataclass(frozen=True)
class EngineProfile:
    """Analytic performance of one replica of a variant."""

    prefill_tokens_per_second: float
    """Prompt tokens processed per second during prefill, > 0."""
    decode_base_ms: float
    """Fixed part of one decode step in ms (weights read once per step), >= 0."""
    decode_per_sequence_ms: float
    """Extra decode step time per sequence in the batch, in ms, >= 0."""
    max_concurrency: int
    """Most sequences the engine batches at once (KV-cache bound), >= 1."""

    def __post_init__(self) -> None:
        _require_positive("EngineProfile.prefill_tokens_per_second", self.prefill_tokens_per_second)
        _require_non_negative("EngineProfile.decode_base_ms", self.decode_base_ms)
        _require_non_negative("EngineProfile.decode_per_sequence_ms", self.decode_per_sequence_ms)
        if (
            isinstance(self.max_concurrency, bool)
            or not isinstance(self.max_concurrency, int)
            or self.max_concurrency < 1
        ):
            raise ValueError(
                f"EngineProfile.max_concurrency must be an integer >= 1, "
                f"got {self.max_concurrency!r}"
            )


@dataclass(frozen=True)
class CapacityEstimate:
    """What one replica sustains at the SLO, and why."""

    requests_per_second: float
    """Per replica, at the SLO, after calibration; 0 when the SLO cannot be met."""
    batch_size: int | None
    """Batch slots ``B`` the model assumed (``None`` for measured or TPOT-infeasible)."""
    service_seconds: float | None
    """Per-request service time ``S`` at batch ``B`` (``None`` when not modelled)."""
    limited_by: str
    """``"measured"``, ``"ttft"``, ``"tpot"``, ``"throughput"`` or ``"infeasible"``."""
    reason: str | None
    """A sentence explaining a zero or derated estimate, otherwise ``None``."""


def decode_step_ms(profile: EngineProfile, batch: int) -> float:
    """Decode step time ``t(b) = base + per_sequence * b`` in ms."""
    return profile.decode_base_ms + profile.decode_per_sequence_ms * batch


def batch_for_tpot(profile: EngineProfile, tpot_ms: float | None) -> int | None:
    """Largest batch in ``[1, max_concurrency]`` whose decode step meets ``tpot_ms``.

    ``max_concurrency`` when there is no TPOT target; ``None`` when even batch 1 is too slow.
    """
    limit = profile.max_concurrency
    if tpot_ms is None:
        return limit
    allowed = tpot_ms * (1.0 + _TPOT_TOLERANCE)
    if decode_step_ms(profile, 1) > allowed:
        return None
    if profile.decode_per_sequence_ms == 0:
        return limit
    # Compare as floats first: a tiny per-sequence cost makes the quotient overflow int().
    quotient = (tpot_ms - profile.decode_base_ms) / profile.decode_per_sequence_ms
    batch = limit if quotient >= limit else max(1, int(quotient))
    # The division can land one off either way through rounding; settle it on t(b) itself.
    while batch < limit and decode_step_ms(profile, batch + 1) <= allowed:
        batch += 1
    while batch > 1 and decode_step_ms(profile, batch) > allowed:
        batch -= 1
    return batch


def service_seconds(profile: EngineProfile, mix: TokenMix, batch: int) -> float:
    """Per-request service time: prefill plus every output token at a batch-``batch`` step."""
    prefill = mix.mean_input_tokens / profile.prefill_tokens_per_second
    return prefill + mix.mean_output_tokens * decode_step_ms(profile, batch) / 1000.0


def _calibrated(
    rate: float,
    calibration: float,
    *,
    batch: int | None,
    service: float | None,
    limited_by: str,
) -> CapacityEstimate:
    reason = None
    if calibration < 1.0:
        reason = f"derated to {calibration:.0%} of the modelled capacity by online calibration"
    return CapacityEstimate(
        requests_per_second=rate * calibration,
        batch_size=batch,
        service_seconds=service,
        limited_by=limited_by,
        reason=reason,
    )


def replica_capacity(
    *,
    slo: LatencySLO,
    mix: TokenMix,
    max_requests_per_second: float | None = None,
    profile: EngineProfile | None = None,
    calibration: float = 1.0,
) -> CapacityEstimate:
    """Requests per second one replica sustains while meeting ``slo`` (see module docs)."""
    if not math.isfinite(calibration) or not 0 < calibration <= MAX_CALIBRATION:
        raise ValueError(f"calibration must be in (0, {MAX_CALIBRATION:g}], got {calibration!r}")
    if slo.ttft_ms is None and slo.tpot_ms is None:
        raise ValueError("LatencySLO needs at least one of ttft_ms or tpot_ms")

    if max_requests_per_second is not None:
        _require_positive("max_requests_per_second", max_requests_per_second)
        return _calibrated(
            max_requests_per_second, calibration, batch=None, service=None, limited_by="measured"
        )
    if profile is None:
        raise ValueError(
            "capacity needs max_requests_per_second (measured) or an EngineProfile; got neither"
        )

    batch = batch_for_tpot(profile, slo.tpot_ms)
    if batch is None:
        step = decode_step_ms(profile, 1)
        return CapacityEstimate(
            requests_per_second=0.0,
            batch_size=None,
            service_seconds=None,
            limited_by="infeasible",
            reason=(
                f"decode step {step:.1f} ms at batch 1 exceeds the {slo.tpot_ms:g} ms TPOT SLO"
            ),
        )

    service = service_seconds(profile, mix, batch)
    throughput = batch / service

    if slo.ttft_ms is None:
        bound = "tpot" if batch < profile.max_concurrency else "throughput"
        return _calibrated(throughput, calibration, batch=batch, service=service, limited_by=bound)

    prefill = mix.mean_input_tokens / profile.prefill_tokens_per_second
    wait_budget = slo.ttft_ms / 1000.0 - prefill
    if wait_budget < 0:
        return CapacityEstimate(
            requests_per_second=0.0,
            batch_size=batch,
            service_seconds=service,
            limited_by="infeasible",
            reason=(
                f"prefill of {mix.mean_input_tokens:g} input tokens takes "
                f"{prefill * 1000:.1f} ms at {profile.prefill_tokens_per_second:g} tokens/s, "
                f"above the {slo.ttft_ms:g} ms TTFT SLO"
            ),
        )
    rate = max_arrival_rate_for_wait(batch, 1.0 / service, slo.percentile, wait_budget)
    return _calibrated(rate, calibration, batch=batch, service=service, limited_by="ttft")


def predict_latency(
    profile: EngineProfile,
    mix: TokenMix,
    percentile: float,
    arrival_rate_per_replica: float,
    *,
    batch_size: int | None = None,
) -> tuple[float, float]:
    """Predicted ``(ttft_ms, tpot_ms)`` at ``percentile`` for one replica under a load.

    Uses the same M/M/c model as :func:`replica_capacity`: ``c = batch_size`` slots
    (default ``max_concurrency``; pass ``CapacityEstimate.batch_size`` to match a capacity
    estimate exactly) of service time ``S(c)``.

    * TTFT = prefill + the percentile of the queue wait; ``math.inf`` when the load
      reaches ``c / S`` (the queue grows without bound).
    * TPOT = ``t(k)`` where ``k`` is the batch a request joins at that percentile:
      one more than the percentile of busy slots seen on arrival (Poisson arrivals see
      time averages), capped at ``c``. At zero load this is ``t(1)``.

    For a variant with calibration factor ``k``, predict at ``arrival_rate / k``: that is
    the load the uncalibrated model sees when the calibrated capacity is ``k`` times larger.
    """
    _require_percentile("percentile", percentile)
    _require_non_negative("arrival_rate_per_replica", arrival_rate_per_replica)
    slots = profile.max_concurrency if batch_size is None else batch_size
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    service = service_seconds(profile, mix, slots)
    prefill_ms = mix.mean_input_tokens / profile.prefill_tokens_per_second * 1000.0
    offered = arrival_rate_per_replica * service
    if offered >= slots:
        return math.inf, decode_step_ms(profile, slots)
    wait = wait_quantile_seconds(slots, arrival_rate_per_replica, 1.0 / service, percentile)
    busy = busy_servers_quantile(slots, offered, percentile)
    return prefill_ms + wait * 1000.0, decode_step_ms(profile, min(slots, busy + 1))
