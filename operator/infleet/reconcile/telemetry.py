"""The operator's own Prometheus metrics, and the `/metrics` + `/healthz` endpoint."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

ERROR_STAGES = ("cycle", "build", "apply", "delete", "status", "pool-status", "event")
"""Stages `infleet_reconcile_errors{stage}` counts: a failed cycle (the cluster could not be
read), building a child, applying it, deleting one, writing a model's or a pool's status,
posting an Event."""

_CYCLE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)


class OperatorMetrics:
    """Gauges and histograms of the fleet loop, in a registry of their own (tests can make
    several without clashing)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.cycle_seconds = Histogram(
            "infleet_fleet_cycle_seconds",
            "Duration of one fleet cycle.",
            buckets=_CYCLE_BUCKETS,
            registry=r,
        )
        self.planner_seconds = Histogram(
            "infleet_planner_seconds",
            "Time spent in the fleet planner per cycle.",
            buckets=_CYCLE_BUCKETS,
            registry=r,
        )
        self.metrics_read_seconds = Histogram(
            "infleet_metrics_read_seconds",
            "Time spent reading the autoscaled models' signals from Prometheus per cycle.",
            buckets=_CYCLE_BUCKETS,
            registry=r,
        )
        self.early_cycles = Counter(
            "infleet_early_cycles",
            "Fleet cycles started early because the probe between cycles found a model's load "
            "above what its plan covers.",
            registry=r,
        )
        self.desired_replicas = Gauge(
            "infleet_desired_replicas",
            "Replicas the plan wants per model and pool.",
            ["namespace", "model", "pool"],
            registry=r,
        )
        self.ready_replicas = Gauge(
            "infleet_ready_replicas",
            "Ready replicas per model and pool.",
            ["namespace", "model", "pool"],
            registry=r,
        )
        self.fleet_cost = Gauge(
            "infleet_fleet_cost_per_hour",
            "Marginal cost of the applied plan, USD per hour.",
            registry=r,
        )
        self.unmet_demand = Gauge(
            "infleet_unmet_requests_per_second",
            "Capacity the plan could not place per model.",
            ["namespace", "model"],
            registry=r,
        )
        self.reconcile_errors = Counter(
            "infleet_reconcile_errors",
            "Errors while reconciling, by stage.",
            ["stage"],
            registry=r,
        )
        # Every stage's series exists from the start at 0, so `rate()` and alerts see the
        # first error as an increase rather than as a new series.
        for stage in ERROR_STAGES:
            self.reconcile_errors.labels(stage)
        self.last_cycle_end = Gauge(
            "infleet_last_cycle_timestamp_seconds",
            "When the last fleet cycle ended (Unix time).",
            registry=r,
        )

    def set_replicas(
        self,
        desired: Iterable[tuple[str, str, str, int]],
        ready: Iterable[tuple[str, str, str, int]],
    ) -> None:
        """Replace the per-(namespace, model, pool) gauges with this cycle's figures."""
        self.desired_replicas.clear()
        self.ready_replicas.clear()
        for ns, model, pool, n in desired:
            self.desired_replicas.labels(ns, model, pool).set(n)
        for ns, model, pool, n in ready:
            self.ready_replicas.labels(ns, model, pool).set(n)

    def set_unmet(self, unmet: Iterable[tuple[str, str, float]]) -> None:
        """Replace the unmet-demand gauges."""
        self.unmet_demand.clear()
        for ns, model, value in unmet:
            self.unmet_demand.labels(ns, model).set(value)


class MetricsServer:
    """`/metrics` (Prometheus text format) and `/healthz` on one port, in a daemon thread.

    `/healthz` answers 200 while ``healthy()`` is true (the fleet loop made progress
    recently), 503 otherwise, so a liveness probe restarts a stuck operator.
    """

    def __init__(self, metrics: OperatorMetrics, port: int, healthy: Callable[[], bool]) -> None:
        registry = metrics.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/metrics"):
                    body, code, kind = generate_latest(registry), 200, CONTENT_TYPE_LATEST
                elif self.path.startswith("/healthz"):
                    ok = healthy()
                    body = b"ok\n" if ok else b"fleet loop stalled\n"
                    code, kind = (200 if ok else 503), "text/plain"
                else:
                    body, code, kind = b"not found\n", 404, "text/plain"
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self.server.server_address[1])

    def start(self) -> None:
        """Serve in the background."""
        self.thread.start()

    def stop(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


def monotonic() -> float:
    """Seconds on a clock that never goes back (for health checks)."""
    return time.monotonic()
