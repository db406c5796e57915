"""vLLM-compatible Prometheus metrics for every simulated replica.

A custom collector on its own ``CollectorRegistry`` renders :class:`EngineState` at scrape
time, so pods that disappear simply stop being exported (Prometheus marks their series
stale). Every replica series carries ``namespace``, ``pod`` and ``model_name`` (the served
model, ``spec.model``) as vLLM deployed on Kubernetes would after the usual relabelling, plus
``variant`` and ``pool`` for convenience; infleet's queries never depend on the last two.

Besides vLLM's names (see docs/metrics.md) it exports, for tests and demos:
``infleet_sandbox_replica_ready`` (0 while a replica is still starting up),
``infleet_sandbox_offered_requests_per_second`` and ``infleet_sandbox_backlog_requests`` per
model (``namespace``, ``model``: the ModelDeployment name): the set load and the requests
held while no replica is ready, the queue a gateway would report (usable as a wake query).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from infleet.sandbox.engine_sim import Histogram
from infleet.sandbox.engine_state import EngineState

LABELS = ("namespace", "pod", "model_name", "variant", "pool")


def _buckets(histogram: Histogram) -> list[tuple[str, float]]:
    return [
        ("+Inf" if math.isinf(bound) else repr(bound), count)
        for bound, count in histogram.cumulative()
    ]


class EngineCollector(Collector):
    """Renders the simulation state in vLLM's metric names."""

    def __init__(self, state: EngineState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        """One family per metric name, one series per replica."""
        success = CounterMetricFamily(
            "vllm:request_success",
            "Finished requests.",
            labels=(*LABELS, "finished_reason"),
        )
        prompt = CounterMetricFamily(
            "vllm:prompt_tokens", "Prefilled prompt tokens.", labels=LABELS
        )
        generation = CounterMetricFamily(
            "vllm:generation_tokens", "Generated tokens.", labels=LABELS
        )
        running = GaugeMetricFamily(
            "vllm:num_requests_running", "Requests in the batch.", labels=LABELS
        )
        waiting = GaugeMetricFamily(
            "vllm:num_requests_waiting", "Requests waiting for a slot.", labels=LABELS
        )
        kv = GaugeMetricFamily(
            "vllm:kv_cache_usage_perc", "KV-cache usage, 1 = full.", labels=LABELS
        )
        ready = GaugeMetricFamily(
            "infleet_sandbox_replica_ready",
            "1 when the simulated replica has finished starting up.",
            labels=LABELS,
        )
        ttft = HistogramMetricFamily(
            "vllm:time_to_first_token_seconds", "Time to first token.", labels=LABELS
        )
        itl = HistogramMetricFamily(
            "vllm:inter_token_latency_seconds", "Time between output tokens.", labels=LABELS
        )
        e2e = HistogramMetricFamily(
            "vllm:e2e_request_latency_seconds", "Request latency.", labels=LABELS
        )
        request_prompt = HistogramMetricFamily(
            "vllm:request_prompt_tokens", "Prompt tokens per finished request.", labels=LABELS
        )
        request_generation = HistogramMetricFamily(
            "vllm:request_generation_tokens",
            "Generated tokens per finished request.",
            labels=LABELS,
        )
        offered = GaugeMetricFamily(
            "infleet_sandbox_offered_requests_per_second",
            "Load set for the model (mean of a trace is not shown: 0 while replaying).",
            labels=("namespace", "model"),
        )
        backlog = GaugeMetricFamily(
            "infleet_sandbox_backlog_requests",
            "Requests held while the model has no ready replica.",
            labels=("namespace", "model"),
        )
        with self.state.lock:
            for view in self.state.replicas():
                values = [view.labels[name] for name in LABELS]
                r = view.replica
                success.add_metric([*values, "stop"], r.counters.success)
                prompt.add_metric(values, r.counters.prompt_tokens)
                generation.add_metric(values, r.counters.generation_tokens)
                running.add_metric(values, r.running)
                waiting.add_metric(values, r.waiting)
                kv.add_metric(values, r.kv_usage())
                ready.add_metric(values, 1.0 if view.ready else 0.0)
                ttft.add_metric(values, _buckets(r.ttft), r.ttft.sum)
                itl.add_metric(values, _buckets(r.itl), r.itl.sum)
                e2e.add_metric(values, _buckets(r.e2e), r.e2e.sum)
                # One +Inf bucket: only the sum and count are read (mean tokens per request).
                done = [("+Inf", r.counters.success)]
                request_prompt.add_metric(values, done, r.counters.finished_prompt_tokens)
                request_generation.add_metric(values, done, r.counters.finished_generation_tokens)
            for (namespace, name), sim in self.state.sims.items():
                offered.add_metric([namespace, name], sim.load.rate)
                backlog.add_metric([namespace, name], len(sim.backlog))
        yield from (success, prompt, generation, running, waiting, kv, ready)
        yield from (ttft, itl, e2e, request_prompt, request_generation, offered, backlog)
