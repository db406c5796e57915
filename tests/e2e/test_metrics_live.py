"""The metrics client against the sandbox's real Prometheus scraping the real engine process.

Pods are made exactly as infleet makes them (``deployment_manifest``) for a pool object of this
test's own (``engine-e2e``, on the e2e-h100 nodes), minus the accelerator requests, so they
never take accelerators another test counts on, and a perf factor set here touches nothing
else. Load and outages go through the ``infleet sandbox`` commands.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from infleet.api import AcceleratorPool, ModelDeployment
from infleet.core.autoscale import ModelContext, ScalingPolicy, decide_demand
from infleet.core.children import deployment_manifest
from infleet.metrics.observe import ModelMetrics, read_model_metrics
from infleet.metrics.prometheus import PrometheusClient

pytestmark = pytest.mark.e2e

POOL = AcceleratorPool.model_validate(
    {
        "apiVersion": "infleet.io/v1alpha1",
        "kind": "AcceleratorPool",
        "metadata": {"name": "engine-e2e"},
        "spec": {
            "acceleratorType": "nvidia-h100-80gb",
            "acceleratorsPerNode": 8,
            "nodeSelector": {"infleet.io/e2e-pool": "h100"},
            "costPerAcceleratorHour": 3.0,
        },
    }
)
WINDOW = "20s"
"""Rate window: ten 2 s scrapes, short enough for a test to see a change."""


def _sandbox(cluster: Any) -> Any:
    if cluster.sandbox_dir is None:
        pytest.skip("needs the infleet sandbox's engine and Prometheus")
    from infleet.sandbox.cluster import Sandbox

    return Sandbox(cluster.sandbox_dir)


def _infleet(box: Any, *args: str) -> None:
    command = [sys.executable, "-m", "infleet", "sandbox", *args, "--dir", str(box.dir)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, f"{' '.join(args)}: {done.stdout}{done.stderr}"


def _deploy(kube: Any, namespace: str, replicas: int) -> tuple[ModelDeployment, str]:
    body = {
        "apiVersion": "infleet.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "chat", "namespace": namespace},
        "spec": {
            "model": "meta-llama/Llama-3.1-8B-Instruct",
            "slo": {"timeToFirstTokenMs": 500, "timePerOutputTokenMs": 50},
            "variants": [
                {
                    "acceleratorType": "nvidia-h100-80gb",
                    "maxRequestsPerSecond": 5,
                    "startupSeconds": 1,
                }
            ],
            "traffic": {"requestsPerSecond": 1, "meanInputTokens": 512, "meanOutputTokens": 128},
        },
    }
    custom = client.CustomObjectsApi(kube.api)
    created = custom.create_namespaced_custom_object(
        "infleet.io", "v1alpha1", namespace, "modeldeployments", body
    )
    model = ModelDeployment.model_validate(body)
    manifest = deployment_manifest(
        model,
        variant="nvidia-h100-80gb",
        pool=POOL,
        replicas=replicas,
        owner_uid=created["metadata"]["uid"],
    )
    for container in manifest["spec"]["template"]["spec"]["containers"]:
        container.pop("resources", None)  # fake pods: keep every accelerator for other tests
    kube.apps.create_namespaced_deployment(namespace, manifest)
    return model, str(manifest["metadata"]["name"])


def _until(
    what: str, read: Callable[[], ModelMetrics], ok: Callable[[ModelMetrics], bool], timeout: float
) -> ModelMetrics:
    deadline = time.monotonic() + timeout
    last = read()
    while not ok(last):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; last read: {last}")
        time.sleep(1.0)
        last = read()
    return last


def test_signals_follow_the_load_and_survive_a_prometheus_outage(
    cluster: Any, kube: Any, namespace: str
) -> None:
    box = _sandbox(cluster)
    model, deployment = _deploy(kube, namespace, replicas=2)
    key = f"{namespace}/chat"
    _infleet(box, "load", "set", key, "--rps", "6", "--input-tokens", "512")
    loaded = time.monotonic()
    prom = PrometheusClient(box.prometheus_url, timeout=3.0, retries=0)

    def read() -> ModelMetrics:
        return read_model_metrics(prom, model, time.time(), deployments=[deployment], window=WINDOW)

    try:
        # Under capacity (2 replicas x 5 rps measured): the client sees the set rate.
        _until("two replicas reporting", read, lambda m: m.replicas == 2, 60)
        # A full rate window after the first completions (requests take ~4 s): before that,
        # prompts (counted at prefill) lead completions and the mean prompt reads high.
        time.sleep(max(0.0, loaded + 30 - time.monotonic()))
        m = read()
        assert m.errors == ()
        assert m.request_rate == pytest.approx(6.0, rel=0.3)
        assert m.mean_input_tokens == pytest.approx(512, rel=0.1)
        assert m.mean_output_tokens == pytest.approx(128, rel=0.1)
        # Prefill is 100 ms and waits are short: p95 TTFT within vLLM's (0.1, 0.25] bucket.
        assert m.ttft_ms is not None
        assert 80 < m.ttft_ms <= 250
        # Flat 29 ms decode steps: ITL lands in the (25, 50] ms bucket, under the SLO.
        assert m.tpot_ms is not None
        assert 25 < m.tpot_ms <= 50
        assert m.queue_length is not None
        assert m.queue_length < 5
        assert m.kv_cache_usage is not None
        assert 0 < m.kv_cache_usage < 1
        assert m.data_age_seconds < 6  # 2 s scrapes

        # Overload (saturation ~13.5 rps): the queue grows and the TTFT breaks the SLO.
        _infleet(box, "load", "set", key, "--rps", "25")
        m = _until(
            "in-flight growth under overload",
            read,
            lambda m: (m.inflight_growth or 0) > 3 and (m.queue_length or 0) > 30,
            40,
        )
        assert m.arrival_rate is not None
        assert m.request_rate is not None
        assert m.arrival_rate > m.request_rate + 3
        assert m.request_rate < 16  # completions are capped by the two replicas
        assert m.ttft_ms is not None
        assert m.ttft_ms > 500

        # Prometheus down: nothing is read, the error says why, and the policy holds.
        _infleet(box, "stop", "prometheus")
        m = read()
        assert m.request_rate is None
        assert m.data_age_seconds == float("inf")
        assert any("unreachable" in e for e in m.errors), m.errors
        decision = decide_demand(
            None,
            m.observation,
            ModelContext(prior_requests_per_second=1.0, current_replicas=2, min_replicas=1),
            ScalingPolicy(),
            time.time(),
        )
        assert decision.metrics_available is False
        assert decision.hold
        assert decision.min_replicas >= 2

        # Back up (same port, same data): fresh figures again.
        _infleet(box, "start", "prometheus")
        m = _until(
            "fresh metrics after Prometheus restarted",
            read,
            lambda m: m.request_rate is not None and m.data_age_seconds < 6,
            40,
        )
        assert m.errors == ()
    finally:
        _infleet(box, "load", "clear", key)
        if box.processes.running("prometheus") is None:
            _infleet(box, "start", "prometheus")
        prom.close()


def test_fleet_wide_reads_agree_with_the_per_model_queries(
    cluster: Any, kube: Any, namespace: str
) -> None:
    """The fleet-wide round (one query per signal, a series per Deployment, summed here)
    against the per-model queries (summed in PromQL), evaluated at the same instant on the
    same data: a model on two Deployments (pools), and each Deployment alone (a variant)."""
    from infleet.api import Engine
    from infleet.metrics.fleet import read_fleet_metrics

    box = _sandbox(cluster)
    model, first = _deploy(kube, namespace, replicas=2)
    second_pool = POOL.model_copy(
        update={"metadata": POOL.metadata.model_copy(update={"name": "engine-e2e-b"})}
    )
    owner = client.CustomObjectsApi(kube.api).get_namespaced_custom_object(
        "infleet.io", "v1alpha1", namespace, "modeldeployments", "chat"
    )
    manifest = deployment_manifest(
        model,
        variant="nvidia-h100-80gb",
        pool=second_pool,
        replicas=1,
        owner_uid=owner["metadata"]["uid"],
    )
    for container in manifest["spec"]["template"]["spec"]["containers"]:
        container.pop("resources", None)
    kube.apps.create_namespaced_deployment(namespace, manifest)
    second = str(manifest["metadata"]["name"])
    both = [first, second]
    key = f"{namespace}/chat"
    _infleet(box, "load", "set", key, "--rps", "9", "--input-tokens", "512")
    loaded = time.monotonic()
    prom = PrometheusClient(box.prometheus_url, timeout=5.0, retries=1)
    try:
        _until(
            "three replicas reporting",
            lambda: read_model_metrics(prom, model, time.time(), deployments=both, window=WINDOW),
            lambda m: m.replicas == 3,
            60,
        )
        time.sleep(max(0.0, loaded + 30 - time.monotonic()))  # a full window of traffic
        at = time.time() - 1.0
        fleet = read_fleet_metrics(
            prom, {Engine.VLLM: [namespace]}, window=WINDOW, fast_window="8s", at=at
        )
        assert fleet.errors == ()
        for deployments in (both, [first], [second]):
            per_model = read_model_metrics(
                prom, model, at, deployments=deployments, window=WINDOW, fast_window="8s", at=at
            )
            grouped = fleet.metrics(namespace, deployments, percentile=95, now=at)
            assert per_model.errors == ()
            assert per_model.request_rate is not None
            assert per_model.request_rate > 0
            assert per_model.ttft_ms is not None
            for name in (
                "request_rate", "fast_request_rate", "queue_length", "inflight_growth",
                "ttft_ms", "tpot_ms", "mean_input_tokens", "mean_output_tokens",
                "kv_cache_usage", "replicas", "data_age_seconds",
            ):  # fmt: skip
                want, got = getattr(per_model, name), getattr(grouped, name)
                assert (want is None) == (got is None), (deployments, name, want, got)
                if want is not None:
                    assert got == pytest.approx(want, rel=1e-9, abs=1e-9), (deployments, name)
        # The whole model is the sum of its two Deployments.
        whole = fleet.metrics(namespace, both, percentile=95, now=at)
        parts = [fleet.metrics(namespace, [d], percentile=95, now=at) for d in both]
        assert whole.replicas == 3
        assert whole.request_rate == pytest.approx(sum(p.request_rate or 0.0 for p in parts))
    finally:
        _infleet(box, "load", "clear", key)
        prom.close()
