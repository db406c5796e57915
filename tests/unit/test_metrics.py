"""Metrics client and engine adapters: PromQL per engine, response parsing, error cases."""

from __future__ import annotations

import http.server
import json
import math
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from infleet.api import Engine, MetricsOverrides
from infleet.metrics.engines import Selector, model_queries
from infleet.metrics.prometheus import (
    PrometheusClient,
    PrometheusError,
    PrometheusHTTPError,
    PrometheusUnreachable,
    PromQLError,
    parse_response,
    prometheus_url,
)

SEL = Selector("prod", "meta-llama/Llama-3.1-8B")
M = 'namespace="prod",model_name="meta-llama/Llama-3.1-8B"'


@pytest.mark.parametrize(
    ("engine", "signal", "expected"),
    [
        (Engine.VLLM, "request_rate", f"sum(rate(vllm:request_success_total{{{M}}}[1m]))"),
        (Engine.VLLM, "queue_length", f"sum(vllm:num_requests_waiting{{{M}}})"),
        (
            Engine.VLLM,
            "inflight_growth",
            f"deriv((sum(vllm:num_requests_waiting{{{M}}}) + "
            f"sum(vllm:num_requests_running{{{M}}}))[1m:6s])",
        ),
        (
            Engine.VLLM,
            "ttft",
            "histogram_quantile(0.95, sum by (le) "
            f"(rate(vllm:time_to_first_token_seconds_bucket{{{M}}}[1m])))",
        ),
        (
            Engine.VLLM,
            "tpot",
            "histogram_quantile(0.95, sum by (le) "
            f"(rate(vllm:inter_token_latency_seconds_bucket{{{M}}}[1m]))) or "
            "histogram_quantile(0.95, sum by (le) "
            f"(rate(vllm:time_per_output_token_seconds_bucket{{{M}}}[1m])))",
        ),
        (
            Engine.VLLM,
            "input_token_rate",
            f"sum(rate(vllm:request_prompt_tokens_sum{{{M}}}[1m])) or "
            f"sum(rate(vllm:prompt_tokens_total{{{M}}}[1m]))",
        ),
        (
            Engine.VLLM,
            "output_token_rate",
            f"sum(rate(vllm:request_generation_tokens_sum{{{M}}}[1m])) or "
            f"sum(rate(vllm:generation_tokens_total{{{M}}}[1m]))",
        ),
        (
            Engine.VLLM,
            "kv_cache_usage",
            f"avg(vllm:kv_cache_usage_perc{{{M}}}) or avg(vllm:gpu_cache_usage_perc{{{M}}})",
        ),
        (Engine.VLLM, "last_scrape", f"max(timestamp(vllm:num_requests_running{{{M}}}))"),
        (
            Engine.SGLANG,
            "request_rate",
            f"sum(rate(sglang:e2e_request_latency_seconds_count{{{M}}}[1m]))",
        ),
        (Engine.SGLANG, "queue_length", f"sum(sglang:num_queue_reqs{{{M}}})"),
        (Engine.SGLANG, "kv_cache_usage", f"avg(sglang:token_usage{{{M}}})"),
        (Engine.TGI, "queue_length", 'sum(tgi_queue_size{namespace="prod"})'),
        (
            Engine.SGLANG,
            "inflight_growth",
            f"deriv((sum(sglang:num_queue_reqs{{{M}}}) + sum(sglang:num_running_reqs{{{M}}}))"
            "[1m:6s])",
        ),
        (
            Engine.TGI,
            "inflight_growth",
            'deriv((sum(tgi_queue_size{namespace="prod"}) + '
            'sum(tgi_batch_current_size{namespace="prod"}))[1m:6s])',
        ),
        (
            Engine.TGI,
            "request_rate",
            'sum(rate(tgi_request_success{namespace="prod"}[1m])) or '
            'sum(rate(tgi_request_count{namespace="prod"}[1m]))',
        ),
        (Engine.TGI, "ttft", None),
        (Engine.TGI, "kv_cache_usage", None),
        (Engine.CUSTOM, "request_rate", None),
        (Engine.CUSTOM, "last_scrape", None),
    ],
)
def test_default_queries_per_engine(engine: Engine, signal: str, expected: str | None) -> None:
    assert getattr(model_queries(engine, SEL, 95.0), signal) == expected


def test_percentile_window_and_pod_selection() -> None:
    selector = Selector("ns", "m", pod_prefixes=("chat-h100-pool-a", "chat-h100-pool-b"))
    query = model_queries(Engine.VLLM, selector, 99.0, window="30s").ttft
    assert query == (
        "histogram_quantile(0.99, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket"
        '{namespace="ns",model_name="m",pod=~"(chat\\\\-h100\\\\-pool\\\\-a|'
        'chat\\\\-h100\\\\-pool\\\\-b)-[a-z0-9]+-[a-z0-9]+"}[30s])))'
    )
    tgi = Selector("ns", None, pod_name_prefix="chat")
    assert tgi.matchers() == 'namespace="ns",pod=~"chat-.*"'


def test_fast_window_adds_the_short_window_request_rate() -> None:
    fast = model_queries(Engine.VLLM, SEL, 95.0, window="20s", fast_window="8s")
    assert fast.request_rate_fast == f"sum(rate(vllm:request_success_total{{{M}}}[8s]))"
    assert fast.request_rate == f"sum(rate(vllm:request_success_total{{{M}}}[20s]))"
    tgi = model_queries(Engine.TGI, Selector("ns", None), 95.0, fast_window="24s")
    assert tgi.request_rate_fast == (
        'sum(rate(tgi_request_success{namespace="ns"}[24s])) or '
        'sum(rate(tgi_request_count{namespace="ns"}[24s]))'
    )
    assert model_queries(Engine.VLLM, SEL, 95.0).request_rate_fast is None
    assert model_queries(Engine.CUSTOM, SEL, 95.0, fast_window="8s").request_rate_fast is None
    # A requestRate override has its own window: no short-window twin can be derived.
    overrides = MetricsOverrides.model_validate({"requestRate": "sum(rate(gw_total[1m]))"})
    own = model_queries(Engine.VLLM, SEL, 95.0, fast_window="8s", overrides=overrides)
    assert own.request_rate_fast is None
    with pytest.raises(ValueError, match="fast_window"):
        model_queries(Engine.VLLM, SEL, 95.0, fast_window="8 s")


@pytest.mark.parametrize(
    ("window", "step"),
    [("1m", "6s"), ("20s", "2s"), ("8s", "800ms"), ("90s", "9s"), ("2h", "720s"), ("5ms", "1ms")],
)
def test_growth_subquery_steps_a_tenth_of_the_window(window: str, step: str) -> None:
    """Without an explicit step the subquery would use the server's evaluation interval (1m by
    default): one point in a 1m window, no slope."""
    queries = model_queries(Engine.VLLM, SEL, 95.0, window=window)
    assert queries.inflight_growth is not None
    assert queries.inflight_growth.endswith(f"[{window}:{step}])")


def test_label_values_are_escaped() -> None:
    assert Selector('a"b', "x\\y").matchers() == 'namespace="a\\"b",model_name="x\\\\y"'


def test_overrides_replace_defaults_and_drive_inflight_growth() -> None:
    overrides = MetricsOverrides.model_validate(
        {"requestRate": "sum(rate(gw_requests_total[1m]))", "queueLength": "sum(gw_queue)"}
    )
    queries = model_queries(Engine.VLLM, SEL, 95.0, overrides=overrides)
    assert queries.request_rate == "sum(rate(gw_requests_total[1m]))"
    assert queries.inflight_growth == "deriv((sum(gw_queue))[1m:6s])"
    assert queries.ttft == model_queries(Engine.VLLM, SEL, 95.0).ttft
    custom = model_queries(Engine.CUSTOM, SEL, 95.0, overrides=overrides)
    assert custom.request_rate == "sum(rate(gw_requests_total[1m]))"
    assert custom.tpot is None


@pytest.mark.parametrize(
    ("percentile", "window"), [(0.0, "1m"), (100.0, "1m"), (95.0, "1 minute"), (95.0, "")]
)
def test_bad_percentile_or_window_is_rejected(percentile: float, window: str) -> None:
    with pytest.raises(ValueError, match=r"percentile|window"):
        model_queries(Engine.VLLM, SEL, percentile, window=window)


# -- response parsing -----------------------------------------------------------------------


def _vector(*values: tuple[dict[str, str], str]) -> dict[str, Any]:
    result = [{"metric": m, "value": [1700000000.5, v]} for m, v in values]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def test_parse_vector_scalar_and_special_values() -> None:
    samples = parse_response(_vector(({"pod": "a"}, "1.5"), ({"pod": "b"}, "NaN")), "q")
    assert [(dict(s.labels), s.timestamp) for s in samples] == [
        ({"pod": "a"}, 1700000000.5),
        ({"pod": "b"}, 1700000000.5),
    ]
    assert samples[0].value == 1.5
    assert math.isnan(samples[1].value)
    scalar = {"status": "success", "data": {"resultType": "scalar", "result": [12.0, "+Inf"]}}
    assert parse_response(scalar, "q")[0].value == math.inf


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"status": "error", "errorType": "bad_data", "error": "parse error"}, "bad_data"),
        ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "matrix"),
        ({"status": "success", "data": {"resultType": "vector", "result": [{}]}}, "unreadable"),
        ([], "not a JSON object"),
    ],
)
def test_parse_errors_name_the_query(body: Any, message: str) -> None:
    with pytest.raises(PromQLError, match=message) as info:
        parse_response(body, "up{job='x'}")
    assert "up{job='x'}" in str(info.value)


def test_url_from_environment_and_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INFLEET_PROMETHEUS_URL", raising=False)
    with pytest.raises(PrometheusError, match="INFLEET_PROMETHEUS_URL"):
        prometheus_url()
    monkeypatch.setenv("INFLEET_PROMETHEUS_URL", "http://prom:9090/")
    assert prometheus_url() == "http://prom:9090"
    assert prometheus_url("https://x/prom") == "https://x/prom"
    with pytest.raises(PrometheusError, match="http"):
        prometheus_url("prom:9090")


# -- the client against a real HTTP server ---------------------------------------------------


class _Prometheus(http.server.BaseHTTPRequestHandler):
    """Answers /api/v1/query from the class-level script: query text -> (status, body)."""

    script: ClassVar[dict[str, tuple[int, Any]]] = {}
    calls: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        from urllib.parse import parse_qs, urlsplit

        query = parse_qs(urlsplit(self.path).query)["query"][0]
        type(self).calls.append(query)
        status, body = type(self).script.get(query, (200, _vector()))
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def server() -> Iterator[str]:
    _Prometheus.script = {}
    _Prometheus.calls = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Prometheus)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


def test_query_value_reads_one_number(server: str) -> None:
    _Prometheus.script["up"] = (200, _vector(({}, "3")))
    with PrometheusClient(server) as client:
        sample = client.query_value("up")
        assert sample is not None
        assert (sample.value, sample.timestamp) == (3.0, 1700000000.5)
        assert client.query_value("absent") is None


def test_several_series_for_one_number_is_an_error(server: str) -> None:
    _Prometheus.script["x"] = (200, _vector(({"pod": "a"}, "1"), ({"pod": "b"}, "2")))
    with PrometheusClient(server) as client, pytest.raises(PromQLError, match="2 series"):
        client.query_value("x")


def test_promql_error_comes_back_as_promql_error(server: str) -> None:
    body = {"status": "error", "errorType": "bad_data", "error": 'parse error: unexpected "}"'}
    _Prometheus.script["sum("] = (400, body)
    with PrometheusClient(server) as client, pytest.raises(PromQLError, match="parse error"):
        client.query("sum(")
    assert _Prometheus.calls == ["sum("]  # a PromQL error is not retried


def test_server_errors_are_retried_then_reported(server: str) -> None:
    _Prometheus.script["q"] = (503, "overloaded")
    with (
        PrometheusClient(server, retries=2, backoff=0.01) as client,
        pytest.raises(PrometheusHTTPError, match=r"HTTP 503.*overloaded"),
    ):
        client.query("q")
    assert _Prometheus.calls == ["q", "q", "q"]


def test_unreachable_server_is_reported_with_its_address() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        with (
            PrometheusClient(f"http://127.0.0.1:{port}", retries=1, backoff=0.01) as client,
            pytest.raises(PrometheusUnreachable, match=rf"127\.0\.0\.1:{port}.*unreachable"),
        ):
            client.query("up")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://prom:9090", "http://prom:9090"),
        ("https://alice:s3cret@prom.example/prometheus", "https://prom.example/prometheus"),
        ("http://alice:s3cret@127.0.0.1:9090/", "http://127.0.0.1:9090/"),
        ("http://bob@[::1]:9090", "http://[::1]:9090"),
    ],
)
def test_messages_show_the_url_without_credentials(url: str, shown: str) -> None:
    from infleet.metrics.prometheus import redacted_url

    assert redacted_url(url) == shown


def test_errors_never_carry_the_password(server: str) -> None:
    port = server.rsplit(":", 1)[1]
    _Prometheus.script["q"] = (503, "overloaded")
    with (
        PrometheusClient(f"http://alice:s3cret@127.0.0.1:{port}", retries=0) as client,
        pytest.raises(PrometheusHTTPError) as http_error,
    ):
        client.query("q")
    assert "s3cret" not in str(http_error.value)
    assert f"127.0.0.1:{port}" in str(http_error.value)
    with (
        PrometheusClient("http://alice:s3cret@127.0.0.1:1", retries=0, timeout=2) as client,
        pytest.raises(PrometheusUnreachable) as unreachable,
    ):
        client.query("q")
    assert "s3cret" not in str(unreachable.value)
