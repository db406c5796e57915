"""How a simulated replica of a ModelDeployment variant performs (pure).

* **Profile given**: the engine batches ``B = batch_for_tpot(profile, slo.tpot)`` sequences
  (``max_concurrency`` without a TPOT target), the batch the capacity model assumes; decode
  step and prefill speed are the profile's.
* **Only ``maxRequestsPerSecond`` given**: a synthetic profile whose capacity under the
  capacity model is that figure at the model's traffic prior and SLO: a flat decode step
  (no per-sequence cost), prefill taking 20% of the TTFT target (50 ms without one), and
  ``B`` and the step time chosen so that :func:`infleet.core.capacity.replica_capacity`
  returns ``maxRequestsPerSecond`` (bisection on the step time). Sustained throughput at the
  SLO is therefore that figure, as the measurement claims.

The KV cache holds ``max_concurrency * (mean input + mean output)`` tokens of the prior mix.
"""

from __future__ import annotations

import math

from infleet.api import ModelDeployment, Variant
from infleet.core.capacity import (
    EngineProfile,
    LatencySLO,
    TokenMix,
    batch_for_tpot,
    replica_capacity,
)
from infleet.sandbox.engine_sim import ReplicaSpec

_DEFAULT_PREFILL_SECONDS = 0.05
_DEFAULT_STEP_MS = 20.0


def _slo(model: ModelDeployment) -> LatencySLO:
    slo = model.spec.slo
    return LatencySLO(
        percentile=slo.percentile,
        ttft_ms=slo.time_to_first_token_ms,
        tpot_ms=slo.time_per_output_token_ms,
    )


def _mix(model: ModelDeployment) -> TokenMix:
    traffic = model.spec.traffic
    return TokenMix(traffic.mean_input_tokens, traffic.mean_output_tokens)


def find_variant(model: ModelDeployment, name: str) -> Variant | None:
    """The variant called ``name`` (its resolved name), or None."""
    for variant in model.spec.variants:
        if variant.resolved_name == name:
            return variant
    return None


def synthetic_profile(rate: float, slo: LatencySLO, mix: TokenMix) -> EngineProfile:
    """A flat-step profile whose capacity at ``slo`` and ``mix`` is ``rate`` requests/s."""
    if not math.isfinite(rate) or rate <= 0:
        raise ValueError(f"maxRequestsPerSecond must be > 0, got {rate!r}")
    prefill = _DEFAULT_PREFILL_SECONDS if slo.ttft_ms is None else 0.2 * slo.ttft_ms / 1000.0
    step = _DEFAULT_STEP_MS if slo.tpot_ms is None else 0.8 * slo.tpot_ms
    prefill_tps = mix.mean_input_tokens / prefill
    service = prefill + mix.mean_output_tokens * step / 1000.0
    slots = max(1, math.floor(rate * service))

    def capacity(slots: int, base_ms: float) -> float:
        profile = EngineProfile(prefill_tps, base_ms, 0.0, slots)
        return replica_capacity(slo=slo, mix=mix, profile=profile).requests_per_second

    # Capacity falls as the step grows; with the step near zero it must exceed the target,
    # else more slots are needed (a very fast measured replica).
    tiny = step * 1e-6
    while capacity(slots, tiny) < rate:
        slots *= 2
    low, high = tiny, step
    if capacity(slots, high) >= rate:  # slow enough already: keep the SLO's step
        return EngineProfile(prefill_tps, high, 0.0, slots)
    for _ in range(60):
        middle = math.sqrt(low * high)
        if capacity(slots, middle) >= rate:
            low = middle
        else:
            high = middle
    return EngineProfile(prefill_tps, low, 0.0, slots)


def replica_spec(model: ModelDeployment, variant: Variant) -> ReplicaSpec:
    """The simulated performance of one replica of ``variant`` (see the module docs)."""
    slo = _slo(model)
    mix = _mix(model)
    if variant.profile is not None:
        p = variant.profile
        profile = EngineProfile(
            prefill_tokens_per_second=p.prefill_tokens_per_second,
            decode_base_ms=p.decode_step_ms.base,
            decode_per_sequence_ms=p.decode_step_ms.per_sequence,
            max_concurrency=p.max_concurrency,
        )
    elif variant.max_requests_per_second is not None:
        profile = synthetic_profile(variant.max_requests_per_second, slo, mix)
    else:  # the API requires one of them; a replica of nothing still needs numbers
        profile = synthetic_profile(1.0, slo, mix)
    # A profile too slow for its TPOT target still serves, at batch 1, and breaks the SLO.
    slots = batch_for_tpot(profile, slo.tpot_ms) or 1
    return ReplicaSpec(
        slots=slots,
        prefill_tokens_per_second=profile.prefill_tokens_per_second,
        decode_base_ms=profile.decode_base_ms,
        decode_per_sequence_ms=profile.decode_per_sequence_ms,
        kv_capacity_tokens=profile.max_concurrency
        * (mix.mean_input_tokens + mix.mean_output_tokens),
    )
