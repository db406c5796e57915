"""The autoscaler's I/O side against a small Prometheus stand-in (a real HTTP server that
answers instant queries from a table): demand, bounds, calibration, restore, outage.

Every test that reads metrics runs twice: with the fleet-wide queries (the default, one series
per Deployment) and with the per-model queries. Their agreement on live data is checked
against the sandbox's real Prometheus in tests/e2e/test_metrics_live.py."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from infleet.api import ModelDeployment
from infleet.core.autoscale import ModelScalingState, ScalingPolicy
from infleet.core.plan_types import FleetPlan, ModelOutcome, SolverInfo
from infleet.metrics.prometheus import PrometheusClient
from infleet.reconcile.autoscale import Autoscaler, Rise, window_seconds
from infleet.reconcile.observe import LiveChild, ParsedModel

KEY = ("ns", "chat")


class _Prometheus(http.server.BaseHTTPRequestHandler):
    """Answers ``/api/v1/query`` with the first table entry whose key is in the query."""

    table: ClassVar[dict[str, float]] = {}
    queries: ClassVar[list[str]] = []
    pod_label: ClassVar[bool] = True
    """False: the series carry no ``pod`` label, so the fleet-wide queries group nothing."""

    def do_GET(self) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)["query"][0]
        self.queries.append(query)
        now = time.time()
        result = []
        grouped = "by (namespace, deployment" in query
        for needle, value in self.table.items():
            if grouped and not self.pod_label:
                break
            if needle in query:
                labels = {"namespace": "ns", "deployment": "chat-h100-pool"} if grouped else {}
                if grouped and "_bucket" in query:
                    # Every observation just under `value`: the fleet path's own
                    # histogram_quantile then answers (almost exactly) `value`.
                    points = [(value * 0.999, 0.0), (value, 10.0), (float("inf"), 10.0)]
                    result = [
                        {"metric": {**labels, "le": str(le)}, "value": [now, str(count)]}
                        for le, count in points
                    ]
                else:
                    result = [{"metric": labels, "value": [now, str(value)]}]
                break
        body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: Any) -> None:
        pass


@dataclass(frozen=True)
class Prom:
    url: str
    fleet_reads: bool

    def scaler(self, **kwargs: Any) -> Autoscaler:
        return Autoscaler(
            PrometheusClient(self.url, retries=0), fleet_reads=self.fleet_reads, **kwargs
        )


@contextlib.contextmanager
def _serve() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Prometheus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Prometheus.queries.clear()
    _Prometheus.pod_label = True
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(params=[True, False], ids=["fleet-reads", "per-model-reads"])
def prometheus(request: pytest.FixtureRequest) -> Iterator[Prom]:
    with _serve() as url:
        yield Prom(url, request.param)


@pytest.fixture
def prometheus_without_pod_label() -> Iterator[str]:
    with _serve() as url:
        _Prometheus.pod_label = False
        yield url


def signals(rate: float, *, ttft_s: float = 0.2, queue: float = 0.0, pods: int = 2) -> None:
    _Prometheus.table = {
        "vector(1)": 1.0,
        "timestamp(": time.time(),
        "count(": float(pods),
        "count by": float(pods),
        "deriv(": 0.0,
        "request_success_total": rate,
        "num_requests_waiting": queue,
        "time_to_first_token": ttft_s,
        "prompt_tokens_total": rate * 512,
        "generation_tokens_total": rate * 128,
    }


def parsed(status: dict[str, Any] | None = None, *, prior: float = 1.0) -> ParsedModel:
    raw = {
        "apiVersion": "infleet.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "chat", "namespace": "ns", "uid": "u1"},
        "spec": {
            "model": "org/chat",
            "slo": {"timeToFirstTokenMs": 500},
            "replicas": {"min": 0, "max": 8},
            "traffic": {"requestsPerSecond": prior, "meanInputTokens": 512,
                        "meanOutputTokens": 128},
            "variants": [{"name": "h100", "acceleratorType": "nvidia-h100-80gb",
                          "maxRequestsPerSecond": 5, "startupSeconds": 1}],
        },
    }  # fmt: skip
    if status is not None:
        raw["status"] = status
    return ParsedModel(ModelDeployment.model_validate(raw), "u1", raw)


def child(replicas: int, ready: int | None = None) -> LiveChild:
    ready = replicas if ready is None else ready
    return LiveChild("ns", "chat-h100-pool", "chat", "h100", "pool", replicas, ready, "h", {})


def current(replicas: int) -> dict[tuple[tuple[str, str], str, str], int]:
    return {(KEY, "h100", "pool"): replicas}


def test_fresh_metrics_give_measured_demand_and_floor_one(prometheus: Prom) -> None:
    signals(6.0)
    scaler = prometheus.scaler(window="20s")
    cycle = scaler.prepare([parsed()], [child(2)], current(2), time.time())
    demand = cycle.demand[KEY]
    assert demand.source == "metrics"
    assert demand.requests_per_second == pytest.approx(6.0)
    assert demand.mix is not None
    assert demand.mix.mean_input_tokens == pytest.approx(512)
    assert cycle.bounds[KEY] == (1, 8)  # min 0 but serving: floor 1 (no scale to zero)
    record = cycle.records[KEY]
    assert record.verdict.met is True
    assert record.decision.metrics_available
    if prometheus.fleet_reads:
        # One round of grouped queries for the fleet; nothing asked per model or variant.
        assert scaler.last_read == (1, 0)
        assert all("by (namespace, deployment" in q for q in _Prometheus.queries[1:])
        # The probe, then one query per signal (11: no fast window here).
        assert len(_Prometheus.queries) == 1 + 11
    else:
        # The variant was read with its own Deployment's pods for calibration.
        assert scaler.last_read == (0, 1)
        assert any("pod=~" in q and "pool" in q for q in _Prometheus.queries)


def test_series_without_a_pod_label_fall_back_to_the_per_model_queries(
    prometheus_without_pod_label: str,
) -> None:
    # The fleet-wide round finds no Deployment's series; the model-level queries (namespace
    # and model_name) still answer, as before the fleet-wide reads.
    signals(6.0)
    scaler = Autoscaler(PrometheusClient(prometheus_without_pod_label, retries=0), window="20s")
    cycle = scaler.prepare([parsed()], [child(2)], current(2), time.time())
    assert scaler.last_read == (1, 0)
    assert cycle.demand[KEY].source == "metrics"
    assert cycle.demand[KEY].requests_per_second == pytest.approx(6.0)
    assert cycle.records[KEY].decision.metrics_available
    per_model = [q for q in _Prometheus.queries if q.startswith("sum(rate(")]
    assert per_model  # asked after the fleet-wide round came back empty
    assert 'model_name="org/chat"' in per_model[0]


def test_prometheus_down_holds_current_replicas_and_previous_demand() -> None:
    scaler = Autoscaler(PrometheusClient("http://127.0.0.1:9", retries=0, timeout=1.0))
    previous = ModelScalingState(planned_requests_per_second=9.0, planned_source="metrics")
    model = parsed({"scaling": previous.to_dict()})
    cycle = scaler.prepare([model], [child(3)], current(3), time.time())
    assert cycle.demand[KEY].requests_per_second == 9.0  # not the 1 req/s prior
    assert cycle.bounds[KEY] == (3, 8)  # never below what runs
    record = cycle.records[KEY]
    assert not record.decision.metrics_available
    assert record.verdict.met is None
    status = cycle.status(KEY, {"desiredReplicas": 3, "conditions": []}, {}, _now(), 1)
    by_type = {c["type"]: c["status"] for c in status["conditions"]}
    assert by_type == {"MetricsAvailable": "False", "SLOMet": "Unknown"}
    assert status["observed"]["requestsPerSecond"] is None


def test_state_restored_from_status_keeps_the_window_peak(prometheus: Prom) -> None:
    now = time.time()
    # 12 req/s planned 10 s ago inside the 300 s window: a quiet cycle keeps planning 12.
    stored = ModelScalingState(
        samples=((now - 10, 12.0),), planned_requests_per_second=12.0, planned_source="metrics"
    )
    signals(2.0)
    scaler = prometheus.scaler()
    cycle = scaler.prepare([parsed({"scaling": stored.to_dict()})], [child(3)], current(3), now)
    assert cycle.demand[KEY].requests_per_second == pytest.approx(12.0)
    # A bad stored state is ignored (fresh start), not fatal.
    scaler = prometheus.scaler()
    cycle = scaler.prepare(
        [parsed({"scaling": {"samples": [[1.0, 2.0, 3.0]]}})], [child(3)], current(3), now
    )
    assert cycle.demand[KEY].requests_per_second == pytest.approx(2.0)


def settled_status(now: float, replicas: int = 2) -> dict[str, Any]:
    """A model that has run ``replicas`` replicas, unchanged, for ten minutes."""
    state = ModelScalingState(last_replicas=replicas, last_change_time=now - 600)
    return {"scaling": state.to_dict()}


def test_breach_with_headroom_derates_the_variant(prometheus: Prom) -> None:
    # 2 pods at 1 req/s each of 5: 20% load, p95 TTFT 900 ms > 500 ms: the model is optimistic.
    signals(2.0, ttft_s=0.9)
    now = time.time()
    scaler = prometheus.scaler(policy=ScalingPolicy())
    cycle = scaler.prepare([parsed(settled_status(now))], [child(2)], current(2), now)
    assert cycle.calibration[(KEY, "h100")] == pytest.approx(0.85)
    assert cycle.records[KEY].state.calibration_factors() == {"h100": pytest.approx(0.85)}
    assert cycle.records[KEY].state.last_change_time == now
    assert cycle.records[KEY].verdict.met is False


def test_no_derate_again_on_the_same_window(prometheus: Prom) -> None:
    """The breach stays in the 1 m window after a derate: the next cycles (15 s, then 89 s
    later) must not derate again on it; 90 s (1.5 windows) after, the evidence is new."""
    signals(2.0, ttft_s=0.9)
    start = time.time() - 90  # the fake Prometheus' samples are from now: fresh for all cycles
    scaler = prometheus.scaler(policy=ScalingPolicy())
    assert scaler.settle_seconds == 90.0
    model = parsed(settled_status(start))
    factors = []
    for at in (start, start + 15, start + 89, start + 90):
        cycle = scaler.prepare([model], [child(2)], current(2), at)
        factors.append(cycle.calibration[(KEY, "h100")])
    assert factors == pytest.approx([0.85, 0.85, 0.85, 0.7225])


@pytest.mark.parametrize(
    ("status", "children", "replicas"),
    [
        (None, [child(2)], 2),  # a new model: its first replicas just came
        ("settled at 1", [child(2)], 2),  # the total moved from 1 to 2
        ("settled at 2", [child(2, ready=1)], 2),  # a replica is still starting
    ],
)
def test_changed_or_starting_fleet_is_not_derated(
    prometheus: Prom, status: str | None, children: list[LiveChild], replicas: int
) -> None:
    signals(2.0, ttft_s=0.9)
    now = time.time()
    stored = None
    if status is not None:
        stored = settled_status(now, replicas=int(status.rsplit(" ", 1)[1]))
    scaler = prometheus.scaler(policy=ScalingPolicy())
    cycle = scaler.prepare([parsed(stored)], children, current(replicas), now)
    assert cycle.calibration[(KEY, "h100")] == 1.0
    state = cycle.records[KEY].state
    assert (state.last_replicas, state.last_change_time) == (replicas, now)


@pytest.mark.parametrize(
    ("window", "seconds"),
    [("20s", 20.0), ("1m", 60.0), ("1m30s", 90.0), ("2h", 7200.0), ("500ms", 0.5)],
)
def test_window_seconds(window: str, seconds: float) -> None:
    assert window_seconds(window) == seconds


@pytest.mark.parametrize("window", ["", "1", "m", "1x", "1m 30s", "-1m"])
def test_window_seconds_rejects_what_is_not_a_duration(window: str) -> None:
    with pytest.raises(ValueError, match="not a PromQL duration"):
        window_seconds(window)


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime(2026, 5, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("rate", "window", "mix"),
    [
        (0.5, "20s", None),  # 10 finished requests in the window: too few for a mix
        (1.0, "20s", (512.0, 128.0)),  # 20: enough
        (0.5, "1m", (512.0, 128.0)),  # 30
        (0.1, "1m", None),  # 6
    ],
)
def test_token_mix_needs_enough_finished_requests_in_the_window(
    prometheus: Prom, rate: float, window: str, mix: tuple[float, float] | None
) -> None:
    from infleet.metrics.observe import read_model_metrics

    signals(rate)
    with PrometheusClient(prometheus.url) as client:
        got = read_model_metrics(client, parsed().model, time.time(), window=window)
    assert got.request_rate == pytest.approx(rate)
    if mix is None:
        assert (got.mean_input_tokens, got.mean_output_tokens) == (None, None)
    else:
        assert (got.mean_input_tokens, got.mean_output_tokens) == pytest.approx(mix)


# --- the probe between cycles -----------------------------------------------------------


def plan_of(replicas: int, capacity_per_replica: float = 5.0, unmet: float = 0.0) -> FleetPlan:
    """What the planner answered for the one model: ``replicas`` of the h100 variant."""
    capacity = replicas * capacity_per_replica
    outcome = ModelOutcome(KEY, 1.0, 1.25, capacity, unmet, replicas, 0.0, None, "")
    return FleetPlan((), (outcome,), 0.0, SolverInfo("test", 0.0, 0.0))


def test_probe_fires_once_when_the_short_rate_outgrows_the_plan() -> None:
    with _serve() as url:
        signals(6.0)
        scaler = Autoscaler(PrometheusClient(url, retries=0), window="20s", fast_window="8s")
        cycle = scaler.prepare([parsed()], [child(2)], current(2), time.time())
        scaler.draw_lines(plan_of(2), cycle)  # 2 x 5 req/s at 80%: covers 8 req/s
        _Prometheus.queries.clear()
        assert scaler.probe() == []  # 6 req/s: covered
        assert len(_Prometheus.queries) == 1  # one fleet-wide query for the whole fleet
        assert "[8s]" in _Prometheus.queries[0]
        assert "by (namespace, deployment)" in _Prometheus.queries[0]
        signals(8.5)  # above the line, but 8.5 - sqrt(8.5 / 8) = 7.47: within the noise
        assert scaler.probe() == []
        signals(12.0)  # 12 - sqrt(12 / 8) = 10.78 > 8
        assert scaler.probe() == [Rise(KEY, 12.0, pytest.approx(8.0))]
        _Prometheus.queries.clear()
        assert scaler.probe() == []  # fired: the line waits for the cycle it started
        assert _Prometheus.queries == []  # and nothing else is watched, so nothing is asked
        cycle = scaler.prepare([parsed()], [child(2)], current(2), time.time())
        scaler.draw_lines(plan_of(4), cycle)  # the early cycle's plan: 4 replicas cover 16
        assert scaler.probe() == []


@pytest.mark.parametrize(
    ("plan", "fast_window", "fleet_reads", "why"),
    [
        (plan_of(8), "8s", True, "at the model's maximum (8): an early cycle adds nothing"),
        (plan_of(3, unmet=4.0), "8s", True, "short of capacity: nothing more to be had"),
        (plan_of(2), None, True, "no fast window: nothing to probe with"),
        (plan_of(2), "8s", False, "read one by one: not in the fleet-wide round"),
    ],
)
def test_probe_leaves_out_what_an_early_cycle_cannot_help(
    plan: FleetPlan, fast_window: str | None, fleet_reads: bool, why: str
) -> None:
    with _serve() as url:
        signals(30.0)
        scaler = Autoscaler(
            PrometheusClient(url, retries=0),
            window="20s",
            fast_window=fast_window,
            fleet_reads=fleet_reads,
        )
        cycle = scaler.prepare([parsed()], [child(2)], current(2), time.time())
        scaler.draw_lines(plan, cycle)
        _Prometheus.queries.clear()
        assert scaler.probe() == [], why
        assert _Prometheus.queries == [], why


def test_probe_skips_a_held_model_and_survives_prometheus_going_away() -> None:
    scaler = Autoscaler(
        PrometheusClient("http://127.0.0.1:9", retries=0, timeout=1.0),
        window="20s",
        fast_window="8s",
    )
    cycle = scaler.prepare([parsed()], [child(2)], current(2), time.time())
    assert cycle.records[KEY].decision.hold
    scaler.draw_lines(plan_of(2), cycle)
    assert scaler.probe() == []  # held: not watched
    with _serve() as url:
        signals(6.0)
        scaler = Autoscaler(PrometheusClient(url, retries=0), window="20s", fast_window="8s")
        cycle = scaler.prepare([parsed()], [child(2)], current(2), time.time())
        scaler.draw_lines(plan_of(2), cycle)
    assert scaler.probe() == []  # the server is gone: no rise, no exception
