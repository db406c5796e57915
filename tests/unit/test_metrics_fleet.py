"""Fleet-wide metric reads (infleet.metrics.fleet, engines.fleet_queries): the grouped
queries, Prometheus' histogram_quantile rule, and the per-model aggregation over Deployments.

That these give the same figures as the per-model queries on live data is checked against the
sandbox's real Prometheus in tests/e2e/test_metrics_live.py."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infleet.api import Engine
from infleet.metrics.engines import ENGINE_METRICS, fleet_queries
from infleet.metrics.fleet import FleetMetrics, _Deployment, histogram_quantile
from infleet.metrics.prometheus import PrometheusClient

INF = math.inf


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        # 100 observations, 50 <= 0.1 and 100 <= 0.2: the median is the top of (0, 0.1], the
        # p75 halfway through (0.1, 0.2] (rank 75: 25 of the bucket's 50).
        (0.5, {0.1: 50, 0.2: 100, INF: 100}, 0.1),
        (0.75, {0.1: 50, 0.2: 100, INF: 100}, 0.15),
        # The lowest bucket starts at 0: rank 10 of its 50 is a fifth of the way to 0.1.
        (0.1, {0.1: 50, 0.2: 100, INF: 100}, 0.02),
        # A rank in the +Inf bucket answers the highest finite bound.
        (0.99, {0.1: 50, 0.2: 90, INF: 100}, 0.2),
        # Order of the mapping does not matter; le sorted numerically.
        (0.75, {INF: 100, 0.2: 100, 0.1: 50}, 0.15),
        # A count dipping below an earlier bucket's (rate() noise) is raised to it.
        (0.5, {0.1: 50, 0.2: 49, 0.4: 100, INF: 100}, 0.1),
        # A lowest bucket with a bound <= 0 answers that bound.
        (0.1, {0.0: 20, 1.0: 100, INF: 100}, 0.0),
        # q outside [0, 1] is +-Inf.
        (-0.1, {0.1: 1, INF: 1}, -INF),
        (1.1, {0.1: 1, INF: 1}, INF),
    ],
)
def test_histogram_quantile_follows_prometheus(
    q: float, buckets: dict[float, float], expected: float
) -> None:
    assert histogram_quantile(q, buckets) == pytest.approx(expected)


@pytest.mark.parametrize(
    "buckets",
    [
        {},  # nothing
        {0.1: 5.0},  # one bucket
        {0.1: 5.0, 0.2: 5.0},  # no +Inf bucket
        {0.1: 0.0, INF: 0.0},  # no observations
    ],
)
def test_histogram_quantile_is_nan_where_prometheus_answers_nan(
    buckets: dict[float, float],
) -> None:
    assert histogram_quantile(0.95, buckets) is None


def test_histogram_quantile_at_zero() -> None:
    # Rank 0 is reached by an empty lowest bucket: 0 of 0 observations into it, NaN.
    assert histogram_quantile(0.0, {0.01: 0.0, 0.02: 1.0, INF: 1.0}) is None
    # With observations in the lowest bucket, rank 0 is its start.
    assert histogram_quantile(0.0, {0.01: 2.0, INF: 2.0}) == 0.0


@given(
    # Bucket rates: 0 or at least 1e-3 per second (no denormals for q * total to underflow).
    counts=st.lists(st.just(0.0) | st.floats(1e-3, 1000), min_size=1, max_size=12),
    q=st.floats(1e-6, 1),  # an SLO percentile; q -> 0 over an empty lowest bucket is 0 / 0
)
def test_histogram_quantile_lies_within_the_finite_bounds(counts: list[float], q: float) -> None:
    bounds = [0.01 * 2**i for i in range(len(counts))]
    cumulative, running = {}, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        running += count
        cumulative[bound] = running
    cumulative[INF] = running
    got = histogram_quantile(q, cumulative)
    if running == 0:
        assert got is None
    else:
        assert got is not None
        assert 0.0 <= got <= bounds[-1]


def test_fleet_queries_group_every_signal_by_namespace_and_deployment() -> None:
    queries = fleet_queries(Engine.VLLM, ["b", "a", "a"], window="20s", fast_window="8s")
    assert queries is not None
    for signal, query in queries.items():
        assert query is not None, signal
        assert 'namespace=~"a|b"' in query  # both namespaces, once each
        assert "by (namespace, deployment" in query
        assert '"(.+)-[a-z0-9]+-[a-z0-9]+"' in query  # the pod's Deployment
    assert queries.ttft_buckets is not None
    assert "by (namespace, deployment, le)" in queries.ttft_buckets
    assert "[20s]" in (queries.request_rate or "")
    assert "[8s]" in (queries.request_rate_fast or "")
    assert (queries.inflight_growth or "").startswith("deriv((")
    assert (queries.inflight_growth or "").endswith(")[20s:2s])")
    # Older names are alternatives, not additions.
    assert " or " in (queries.tpot_buckets or "")
    assert "vllm:time_per_output_token_seconds_bucket" in (queries.tpot_buckets or "")


def test_fleet_queries_per_engine() -> None:
    tgi = fleet_queries(Engine.TGI, ["ns"])
    assert tgi is not None
    assert tgi.ttft_buckets is None  # TGI exports no TTFT histogram
    assert tgi.kv_cache_sum is None
    assert "tgi_queue_size" in (tgi.replicas or "")
    assert tgi.request_rate_fast is None  # no fast window asked for
    sglang = fleet_queries(Engine.SGLANG, ["ns"], fast_window="10s")
    assert sglang is not None
    assert "sglang:e2e_request_latency_seconds_count" in (sglang.request_rate_fast or "")
    assert fleet_queries(Engine.CUSTOM, ["ns"]) is None
    assert Engine.CUSTOM not in ENGINE_METRICS
    assert fleet_queries(Engine.VLLM, []) is None
    with pytest.raises(ValueError, match="fast_window must be a PromQL duration"):
        fleet_queries(Engine.VLLM, ["ns"], fast_window="8 s")


def _fleet(**deployments: _Deployment) -> FleetMetrics:
    return FleetMetrics(
        {("ns", name): part for name, part in deployments.items()},
        errors=(),
        window_seconds=20.0,
        fast_window_seconds=8.0,
    )


def test_a_model_sums_its_deployments_and_pools_their_buckets() -> None:
    # Pool a: 2 pods, 3 req/s, all first tokens under 0.1 s. Pool b: 1 pod, 1 req/s, all at
    # 0.2-0.4 s. Summed: 4 req/s; the p95 (rank 3.8 of 4) is in the (0.2, 0.4] bucket, which
    # holds b's 1.0 above a's 3.0: rank 0.8 of 1.0 into it, 0.2 + 0.2 * 0.8 = 0.36 s.
    a = _Deployment(
        values={
            "request_rate": 3.0, "request_rate_fast": 3.5, "queue_length": 1.0,
            "inflight_growth": 0.5, "input_token_rate": 3000.0, "output_token_rate": 300.0,
            "kv_cache_sum": 0.4, "kv_cache_count": 2.0, "replicas": 2.0, "last_scrape": 100.0,
        },
        buckets={"ttft_buckets": {0.1: 3.0, 0.2: 3.0, 0.4: 3.0, INF: 3.0}},
    )  # fmt: skip
    b = _Deployment(
        values={
            "request_rate": 1.0, "queue_length": 2.0, "inflight_growth": -0.25,
            "input_token_rate": 1000.0, "output_token_rate": 100.0,
            "kv_cache_sum": 0.5, "kv_cache_count": 1.0, "replicas": 1.0, "last_scrape": 104.0,
        },
        buckets={"ttft_buckets": {0.1: 0.0, 0.2: 0.0, 0.4: 1.0, INF: 1.0}},
    )  # fmt: skip
    other = _Deployment(values={"request_rate": 50.0, "last_scrape": 200.0})
    fleet = _fleet(a=a, b=b, other=other)
    m = fleet.metrics("ns", ["a", "b"], percentile=95, now=110.0)
    assert m.request_rate == pytest.approx(4.0)
    assert m.fast_request_rate == pytest.approx(3.5)  # only a answered
    assert m.fast_window_seconds == 8.0
    assert m.queue_length == pytest.approx(3.0)
    assert m.inflight_growth == pytest.approx(0.25)
    assert m.growth_window_seconds == 20.0
    assert m.ttft_ms == pytest.approx(360.0)
    assert m.tpot_ms is None  # no ITL buckets at all
    assert m.mean_input_tokens == pytest.approx(1000.0)  # 4000 tokens/s over 4 req/s
    assert m.mean_output_tokens == pytest.approx(100.0)
    assert m.kv_cache_usage == pytest.approx(0.3)  # (0.4 + 0.5) / 3 pods
    assert m.replicas == 3
    assert m.data_age_seconds == pytest.approx(6.0)  # the newest scrape of the two, not other's
    # A variant is the same over its own Deployments.
    only_b = fleet.metrics("ns", ["b"], percentile=50, now=110.0)
    assert only_b.request_rate == pytest.approx(1.0)
    assert only_b.ttft_ms == pytest.approx(300.0)
    assert only_b.data_age_seconds == pytest.approx(6.0)


def test_a_model_without_series_reads_as_not_observed() -> None:
    fleet = FleetMetrics({}, errors=("request_rate: boom",), window_seconds=20.0,
                         fast_window_seconds=None)  # fmt: skip
    m = fleet.metrics("ns", ["a"], percentile=95, now=10.0, wake=2.0, errors=("wake: late",))
    assert m.request_rate is None
    assert m.ttft_ms is None
    assert m.replicas is None
    assert m.data_age_seconds == math.inf
    assert m.wake_demand == 2.0
    assert m.errors == ("request_rate: boom", "wake: late")
    # A different namespace is a different Deployment.
    fleet = _fleet(a=_Deployment(values={"request_rate": 1.0, "last_scrape": 9.0}))
    assert fleet.metrics("other", ["a"], percentile=95, now=10.0).request_rate is None


def test_unreachable_prometheus_stops_the_round_with_the_reason() -> None:
    from infleet.metrics.fleet import read_fleet_metrics

    with PrometheusClient("http://127.0.0.1:9", retries=0, timeout=1.0) as client:
        fleet = read_fleet_metrics(client, {Engine.VLLM: ["ns"], Engine.TGI: ["other"]})
    assert fleet.deployments == {}
    assert len(fleet.errors) == 1
    assert "unreachable" in fleet.errors[0]
    m = fleet.metrics("ns", ["a"], percentile=95, now=0.0)
    assert m.request_rate is None
    assert m.errors == fleet.errors
