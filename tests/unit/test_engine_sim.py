"""The simulated inference engines: queueing, batching, perf factor, routing, start-up delay."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infleet.api import ModelDeployment
from infleet.core.capacity import LatencySLO, TokenMix, replica_capacity
from infleet.sandbox.engine_replicas import replica_spec, synthetic_profile
from infleet.sandbox.engine_sim import (
    ITL_BUCKETS,
    Histogram,
    ModelLoad,
    ModelSim,
    ReplicaSpec,
)


def _model(variant: dict[str, Any], slo: dict[str, Any] | None = None) -> ModelDeployment:
    return ModelDeployment.model_validate(
        {
            "apiVersion": "infleet.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "chat", "namespace": "ns"},
            "spec": {
                "model": "m",
                "slo": slo or {"timeToFirstTokenMs": 500, "timePerOutputTokenMs": 50},
                "variants": [{"acceleratorType": "h100", **variant}],
                "traffic": {
                    "requestsPerSecond": 1,
                    "meanInputTokens": 512,
                    "meanOutputTokens": 128,
                },
            },
        }
    )


def _run(
    spec: ReplicaSpec,
    rate: float,
    seconds: float,
    *,
    replicas: int = 1,
    perf: float = 1.0,
    seed: int = 1,
) -> ModelSim:
    sim = ModelSim(ModelLoad(rate=rate, input_tokens=512, output_tokens=128))
    sim.set_replicas({f"p{i}": (spec, perf, 0.0) for i in range(replicas)})
    rng = np.random.default_rng(seed)
    t = 0.0
    for _ in range(round(seconds / 0.1)):
        sim.tick(t, 0.1, rng)
        t += 0.1
    return sim


def _completed(sim: ModelSim) -> float:
    return sum(r.counters.success for r in sim.replicas.values())


# -- histogram ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        # all in (0.025, 0.05]: rank 0.95*4=3.8 of 4 -> 0.025 + 0.025*3.8/4
        ([0.03, 0.03, 0.04, 0.04], 0.95, 0.025 + 0.025 * 0.95),
        # two in (0, 0.01], two in (0.01, 0.025]: rank 2 lands at the first bucket's top
        ([0.005, 0.005, 0.02, 0.02], 0.5, 0.01),
        # rank 3 of 4: halfway through the second bucket
        ([0.005, 0.005, 0.02, 0.02], 0.75, 0.0175),
    ],
)
def test_histogram_quantile_interpolates_like_prometheus(
    values: list[float], q: float, expected: float
) -> None:
    histogram = Histogram(ITL_BUCKETS)
    for value in values:
        histogram.observe(value)
    assert histogram.quantile(q) == pytest.approx(expected)
    assert histogram.count == len(values)
    assert histogram.sum == pytest.approx(sum(values))


def test_histogram_weighted_observation_counts_as_many() -> None:
    one, many = Histogram(ITL_BUCKETS), Histogram(ITL_BUCKETS)
    one.observe(0.03, 5.0)
    for _ in range(5):
        many.observe(0.03)
    assert one.cumulative() == many.cumulative()


# -- replica specs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "ttft", "tpot"),
    [(5.0, 500.0, 50.0), (0.3, 2000.0, 100.0), (40.0, 300.0, 30.0), (2.0, None, 40.0)],
)
def test_synthetic_profile_has_the_measured_capacity(
    rate: float, ttft: float | None, tpot: float
) -> None:
    slo = LatencySLO(95.0, ttft, tpot)
    mix = TokenMix(512, 128)
    profile = synthetic_profile(rate, slo, mix)
    got = replica_capacity(slo=slo, mix=mix, profile=profile).requests_per_second
    assert got == pytest.approx(rate, rel=1e-6)
    assert got >= rate  # bisection keeps the feasible side
    assert profile.decode_base_ms <= tpot


def test_profile_variant_batches_what_meets_the_tpot_slo() -> None:
    model = _model(
        {
            "profile": {
                "prefillTokensPerSecond": 10000,
                "decodeStepMs": {"base": 10, "perSequence": 1},
                "maxConcurrency": 64,
            }
        }
    )
    spec = replica_spec(model, model.spec.variants[0])
    # t(b) = 10 + b <= 50 -> b = 40
    assert spec.slots == 40
    assert spec.step_ms(40) == 50
    assert spec.kv_capacity_tokens == 64 * (512 + 128)


# -- queueing behaviour ---------------------------------------------------------------------


def test_saturated_replica_completes_slots_over_service_time() -> None:
    spec = ReplicaSpec(4, 5120.0, 20.0, 0.0, 1e6)
    # S = 512/5120 + 128 * 0.020 = 2.66 s; 4 slots -> 1.5038 rps
    sim = _run(spec, rate=5.0, seconds=200)
    assert _completed(sim) / 200 == pytest.approx(4 / 2.66, rel=0.03)
    replica = sim.replicas["p0"]
    assert replica.running == 4
    assert replica.waiting > 500  # (5 - 1.5) rps for 200 s piles up
    # Every token is a batch-4 step of 20 ms (flat step): ITL p95 in (0.01, 0.025].
    assert 0.01 < replica.itl.quantile(0.95) <= 0.025
    assert replica.itl.sum / replica.itl.count == pytest.approx(0.020)


def test_throughput_at_the_measured_capacity_meets_the_slo_and_overload_breaks_it() -> None:
    model = _model({"maxRequestsPerSecond": 5})
    spec = replica_spec(model, model.spec.variants[0])
    under = _run(spec, rate=5.0 * 0.95, seconds=300).replicas["p0"]
    over = _run(spec, rate=5.0 * 1.4, seconds=300).replicas["p0"]
    assert under.counters.success / 300 == pytest.approx(4.75, rel=0.05)
    assert under.ttft.quantile(0.95) <= 0.5
    assert under.waiting < 10
    assert over.ttft.quantile(0.95) > 0.5
    assert over.waiting > 50  # the queue grows under overload


def test_perf_factor_lowers_capacity_proportionally() -> None:
    spec = ReplicaSpec(8, 5120.0, 25.0, 0.0, 1e6)
    rng = np.random.default_rng(0)

    def steady_throughput(perf: float) -> float:
        # Saturated: completions per second after the first batch has cycled, over a long
        # window (fixed-size requests finish in batches of 8, so short windows quantise).
        sim = _run(spec, rate=20.0, seconds=30, perf=perf)
        before = _completed(sim)
        for step in range(6000):
            sim.tick(30 + step * 0.1, 0.1, rng)
        return (_completed(sim) - before) / 600

    full, slow = steady_throughput(1.0), steady_throughput(0.7)
    # S = 512/5120 + 128 * 0.025 = 3.3 s; 8 slots -> 2.424 rps at full speed.
    assert full == pytest.approx(8 / 3.3, rel=0.03)
    assert slow / full == pytest.approx(0.7, rel=0.03)


def test_routing_sends_more_to_the_faster_replica_and_conserves_requests() -> None:
    spec = ReplicaSpec(8, 5120.0, 25.0, 0.0, 1e6)
    sim = ModelSim(ModelLoad(rate=6.0, input_tokens=512, output_tokens=128))
    sim.set_replicas({"fast": (spec, 1.0, 0.0), "slow": (spec, 0.5, 0.0)})
    rng = np.random.default_rng(3)
    arrived = 0
    t = 0.0
    for _ in range(1200):
        before = sum(r.running + r.waiting for r in sim.replicas.values()) + _completed(sim)
        sim.tick(t, 0.1, rng)
        after = sum(r.running + r.waiting for r in sim.replicas.values()) + _completed(sim)
        arrived += round(after - before)
        t += 0.1
    fast, slow = sim.replicas["fast"], sim.replicas["slow"]
    assert fast.counters.success > 1.5 * slow.counters.success
    assert arrived == pytest.approx(6.0 * 120, rel=0.1)


def test_new_replica_takes_no_traffic_before_it_is_ready() -> None:
    spec = ReplicaSpec(8, 5120.0, 25.0, 0.0, 1e6)
    sim = ModelSim(ModelLoad(rate=5.0))
    sim.set_replicas({"p": (spec, 1.0, 10.0)})
    rng = np.random.default_rng(0)
    for step in range(100):  # 10 s
        sim.tick(step * 0.1, 0.1, rng)
    assert sim.replicas["p"].counters.success == 0
    assert sim.replicas["p"].running == 0
    held = len(sim.backlog)
    assert held > 30  # ~50 arrivals wait at the gateway
    sim.tick(10.0, 0.1, rng)
    assert not sim.backlog
    assert sim.replicas["p"].running + sim.replicas["p"].waiting >= held


def test_removed_replica_hands_its_queue_back() -> None:
    spec = ReplicaSpec(1, 5120.0, 25.0, 0.0, 1e6)
    sim = _run(spec, rate=5.0, seconds=10, replicas=2)
    gone = sim.replicas["p1"].waiting
    kept = sim.replicas["p0"]
    assert gone > 0
    sim.set_replicas({"p0": (spec, 1.0, 0.0)})
    assert len(sim.backlog) == gone
    assert sim.replicas["p0"] is kept  # unchanged replicas keep their state


def test_token_counters_match_finished_requests() -> None:
    spec = ReplicaSpec(8, 5120.0, 25.0, 0.5, 1e6)
    sim = _run(spec, rate=2.0, seconds=60)
    replica = sim.replicas["p0"]
    # Mid-run, the counters include requests still running; the finished-request sums do not.
    assert replica.running > 0
    assert replica.counters.generation_tokens > replica.counters.success * 128
    assert replica.counters.finished_generation_tokens == replica.counters.success * 128
    sim.load.rate = 0.0
    rng = np.random.default_rng(0)
    for step in range(200):  # drain
        sim.tick(60 + step * 0.1, 0.1, rng)
    assert replica.running == 0
    assert replica.counters.prompt_tokens == replica.counters.success * 512
    assert replica.counters.generation_tokens == pytest.approx(replica.counters.success * 128)
    assert replica.counters.finished_prompt_tokens == replica.counters.success * 512
    assert replica.counters.finished_generation_tokens == replica.counters.success * 128
    assert replica.kv_usage() == pytest.approx(0.0, abs=1e-9)


def test_trace_replay_emits_each_row_once_at_its_time() -> None:
    trace = [(0.05, 100, 10), (0.15, 200, 20), (0.25, 300, 30), (5.0, 400, 40)]
    sim = ModelSim()
    sim.replay(trace, start=100.0, now=100.0)
    rng = np.random.default_rng(0)
    first = sim.arrivals(100.0, 0.2, rng)
    assert [(r.arrival, r.input_tokens) for r in first] == [(100.05, 100), (100.15, 200)]
    assert [r.input_tokens for r in sim.arrivals(100.2, 0.2, rng)] == [300]
    resumed = ModelSim()
    resumed.replay(trace, start=100.0, now=101.0)  # rows before 1 s are skipped
    assert [r.input_tokens for r in resumed.arrivals(101.0, 10.0, rng)] == [400]


@settings(max_examples=30, deadline=None)
@given(
    slots=st.integers(1, 16),
    rate=st.floats(0.1, 20.0),
    perf=st.floats(0.3, 1.5),
    per_sequence=st.floats(0.0, 2.0),
    seed=st.integers(0, 1000),
)
def test_no_request_is_lost_or_invented(
    slots: int, rate: float, perf: float, per_sequence: float, seed: int
) -> None:
    spec = ReplicaSpec(slots, 4000.0, 15.0, per_sequence, 1e6)
    sim = _run(spec, rate=rate, seconds=20, replicas=2, perf=perf, seed=seed)
    in_system = sum(r.running + r.waiting for r in sim.replicas.values()) + len(sim.backlog)
    generated = _completed(sim) + in_system
    # Arrivals are Poisson(rate * 20): far outside 6 sigma would mean a bookkeeping bug.
    mean = rate * 20
    assert abs(generated - mean) <= 6 * math.sqrt(mean) + 1
    for replica in sim.replicas.values():
        assert replica.running <= slots
        assert 0.0 <= replica.kv_usage() <= 1.0
