"""Reading live metrics for a fleet: fleet-wide queries against per-model queries, one run.

On the sandbox (real Prometheus scraping the simulated engines), N ModelDeployments with
load, placed by the operator. Then, with the operator stopped so nothing else queries
Prometheus, it times one cycle's worth of reads both ways, several rounds each, interleaved:

* **per model** (the baseline): each model's signals, then its running variant's (for
  calibration), a dozen queries each (``read_model_metrics``, ``read_variant_observations``);
* **fleet-wide** (what the operator does): one query per signal over every pod, a series per
  Deployment (``read_fleet_metrics``), then the same figures per model and variant.

It prints the median seconds of each, their ratio, the number of queries, and how far the two
disagree when evaluated at the same instant (they should agree to rounding). The operator's own
cycle log over the placement phase shows the read time inside real cycles
(``fleet cycle ... (metrics X s, planner Y s)``).

Then the status writes: the operator runs ``--status-seconds`` (120) at a steady load twice,
first with ``--status-refresh 0`` (the baseline: every status that changed is patched, as
before the refresh existed), then with the default (60 s: live figures alone wait), and the
cycles after the first ``SETTLE_SECONDS`` of each run are compared: median cycle seconds and
status patches per cycle, with their ratios.

Usage: python bench/metrics_scale.py [--models 200] [--rounds 5] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from infleet.api import Engine, ModelDeployment
from infleet.metrics.fleet import read_fleet_metrics
from infleet.metrics.observe import (
    ModelMetrics,
    read_model_metrics,
    read_variant_observations,
    variant_observation,
)
from infleet.metrics.prometheus import PrometheusClient, Sample
from infleet.sandbox.cluster import Sandbox, default_state_dir
from infleet.sandbox.load_settings import SteadyLoad, settings_path, update_settings
from operator_scale import create_all, kubectl, ready_count

NAMESPACE = "metrics-scale"
POOL = "metrics-scale"
WINDOW = "20s"
FAST_WINDOW = "8s"
RPS = 2.0
CAPACITY = 5.0
SETTLE_SECONDS = 15.0
"""Cycles of a status run's first seconds are left out (the first writes every status)."""
COMPARED = (
    "request_rate", "fast_request_rate", "queue_length", "inflight_growth", "ttft_ms",
    "tpot_ms", "mean_input_tokens", "mean_output_tokens", "kv_cache_usage", "replicas",
)  # fmt: skip


class CountingClient(PrometheusClient):
    """The real client, counting the queries it sends."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.sent = 0

    def query(self, promql: str, at: float | None = None) -> list[Sample]:
        self.sent += 1
        return super().query(promql, at)


def pool(models: int) -> dict[str, Any]:
    return {
        "apiVersion": "infleet.io/v1alpha1",
        "kind": "AcceleratorPool",
        "metadata": {"name": POOL},
        "spec": {
            "acceleratorType": "nvidia-l4",
            "acceleratorsPerNode": 8,
            "nodeSelector": {"infleet.io/bench-pool": POOL},
            "costPerAcceleratorHour": 0.8,
            "maxAccelerators": 8 * (models // 2 + 1),  # room for 4 replicas a model
        },
    }


def model(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "infleet.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": f"m{i}", "namespace": NAMESPACE},
        "spec": {
            "model": f"org/m{i}",
            "slo": {"timeToFirstTokenMs": 1000},
            "replicas": {"min": 1, "max": 4},
            "traffic": {"requestsPerSecond": RPS, "meanInputTokens": 512, "meanOutputTokens": 128},
            "variants": [
                {
                    "name": "l4",
                    "acceleratorType": "nvidia-l4",
                    "pools": [POOL],
                    "maxRequestsPerSecond": CAPACITY,
                    "startupSeconds": 1,
                }
            ],
            "template": {"spec": {"containers": [{"name": "server", "image": "x:1"}]}},
        },
    }


def deployments(env: dict[str, str]) -> dict[str, list[str]]:
    """Model name -> its Deployments with replicas, from the cluster."""
    out = kubectl(
        env, "get", "deployments", "-n", NAMESPACE, "-o",
        'jsonpath={range .items[*]}{.metadata.labels.infleet\\.io/model}{" "}'
        '{.metadata.name}{" "}{.spec.replicas}{"\\n"}{end}',
    )  # fmt: skip
    found: dict[str, list[str]] = {}
    for line in out.splitlines():
        name, deployment, replicas = line.split()
        if int(replicas) > 0:
            found.setdefault(name, []).append(deployment)
    return found


def per_model_round(
    client: PrometheusClient,
    models: list[ModelDeployment],
    placed: dict[str, list[str]],
    at: float,
) -> tuple[float, dict[str, ModelMetrics]]:
    start = time.perf_counter()
    out = {}
    for m in models:
        name = m.metadata.name
        out[name] = read_model_metrics(
            client, m, at, deployments=placed[name], window=WINDOW, fast_window=FAST_WINDOW, at=at
        )
        read_variant_observations(client, m, {"l4": placed[name]}, {"l4": CAPACITY}, at,
                                  window=WINDOW)  # fmt: skip
    return time.perf_counter() - start, out


def fleet_round(
    client: PrometheusClient,
    models: list[ModelDeployment],
    placed: dict[str, list[str]],
    at: float,
) -> tuple[float, dict[str, ModelMetrics]]:
    start = time.perf_counter()
    fleet = read_fleet_metrics(
        client, {Engine.VLLM: [NAMESPACE]}, window=WINDOW, fast_window=FAST_WINDOW, at=at
    )
    out = {}
    for m in models:
        name = m.metadata.name
        out[name] = fleet.metrics(NAMESPACE, placed[name], percentile=95, now=at)
        variant_observation(fleet.metrics(NAMESPACE, placed[name], percentile=95, now=at),
                            CAPACITY)  # fmt: skip
    return time.perf_counter() - start, out


def disagreement(a: dict[str, ModelMetrics], b: dict[str, ModelMetrics]) -> tuple[float, int]:
    """Largest relative difference over the compared signals, and signals observed by one
    read only."""
    worst, one_sided = 0.0, 0
    for name, left in a.items():
        right = b[name]
        for signal_name in COMPARED:
            x, y = getattr(left, signal_name), getattr(right, signal_name)
            if (x is None) != (y is None):
                one_sided += 1
            elif x is not None and y is not None:
                worst = max(worst, abs(x - y) / max(abs(x), abs(y), 1e-9))
    return worst, one_sided


def cycle_lines(log: Path) -> list[tuple[float, float]]:
    """``(cycle s, metrics s)`` of the operator's cycle log lines."""
    found = []
    pattern = re.compile(r"fleet cycle ([0-9.]+)s \(metrics ([0-9.]+)s")
    for line in log.read_text().splitlines():
        if match := pattern.search(line):
            found.append((float(match.group(1)), float(match.group(2))))
    return found


STATUS_LINE = re.compile(r"fleet cycle ([0-9.]+)s .* (\d+) statuses \((\d+) deferred\)")


def operator_command(box: Sandbox, *extra: str) -> list[str]:
    """`infleet run` on the bench namespace with live metrics (5 s interval)."""
    return [
        sys.executable, "-m", "infleet.cli", "run", "-n", NAMESPACE, "--metrics-port", "0",
        "--interval", "5", "--metrics-window", WINDOW, "--prometheus-url", box.prometheus_url,
        *extra,
    ]  # fmt: skip


def status_run(
    env: dict[str, str], box: Sandbox, log: Path, refresh: str, seconds: float
) -> list[tuple[float, int, int]]:
    """The operator with ``--status-refresh refresh`` for ``seconds``: ``(cycle s, statuses
    written, statuses deferred)`` of each cycle that started after :data:`SETTLE_SECONDS`."""
    command = operator_command(box, "--status-refresh", refresh)
    started = time.time()
    with log.open("w") as out:
        operator = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        time.sleep(seconds)
    finally:
        operator.send_signal(signal.SIGINT)
        operator.wait(timeout=60)
    found = []
    for line in log.read_text().splitlines():
        match = STATUS_LINE.search(line)
        stamp = re.match(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", line)
        if match is None or stamp is None:
            continue
        at = time.mktime(time.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S"))
        if at - started >= SETTLE_SECONDS:
            found.append((float(match.group(1)), int(match.group(2)), int(match.group(3))))
    return found


def print_status_runs(runs: dict[str, list[tuple[float, int, int]]], seconds: float) -> None:
    print(f"\nstatus writes, {seconds:.0f} s per run at a steady load (cycles after the first "
          f"{SETTLE_SECONDS:.0f} s):")  # fmt: skip
    print(f"{'--status-refresh':<18} {'cycles':>6} {'cycle s median':>15} {'statuses/cycle':>15} "
          f"{'deferred/cycle':>15}")  # fmt: skip
    medians: dict[str, tuple[float, float]] = {}
    for refresh, cycles in runs.items():
        if not cycles:
            print(f"{refresh:<18} no cycle lines")
            continue
        cycle_s = statistics.median(c[0] for c in cycles)
        written = statistics.fmean(c[1] for c in cycles)
        deferred = statistics.fmean(c[2] for c in cycles)
        medians[refresh] = (cycle_s, written)
        print(f"{refresh:<18} {len(cycles):>6} {cycle_s:>15.2f} {written:>15.1f} "
              f"{deferred:>15.1f}")  # fmt: skip
    if len(medians) == 2:
        (base_s, base_w), (new_s, new_w) = medians.values()
        print(f"ratio baseline / default: cycle seconds {base_s / new_s:.2f}x, status patches "
              f"{base_w / max(new_w, 1e-9):.1f}x")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds of each read")
    parser.add_argument("--dir", type=Path, default=None, help="sandbox state directory")
    parser.add_argument("--keep", action="store_true", help="leave the models running")
    parser.add_argument(
        "--status-seconds", type=float, default=120.0,
        help="seconds of each status-write run (0: skip them)",
    )  # fmt: skip
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="infleet-metrics-bench-"))
    pool_file = work / "pool.yaml"
    pool_file.write_text(yaml.safe_dump(pool(args.models)))
    box = Sandbox(args.dir or default_state_dir())
    up = [sys.executable, "-m", "infleet.cli", "sandbox", "up", "--pools", str(pool_file),
          "--dir", str(box.dir)]  # fmt: skip
    subprocess.run(up, check=True, capture_output=True, text=True)
    env = {**os.environ, "KUBECONFIG": str(box.kubeconfig)}
    kubectl(env, "apply", "-f", str(pool_file))
    kubectl(env, "create", "namespace", NAMESPACE)
    manifests = [model(i) for i in range(args.models)]
    models = [ModelDeployment.model_validate(m) for m in manifests]
    for m in models:
        update_settings(settings_path(box.dir), model=(NAMESPACE, m.metadata.name),
                        load=SteadyLoad(RPS, 512, 128))  # fmt: skip
    log = work / "operator.log"
    run = operator_command(box)
    operator = subprocess.Popen(run, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        create_all(env, manifests)
        start = time.monotonic()
        while (ready := ready_count(env, NAMESPACE)) < args.models:
            if time.monotonic() - start > 600:
                raise SystemExit(f"only {ready} of {args.models} models Ready after 600 s")
            time.sleep(3)
        print(f"{args.models} models Ready in {time.monotonic() - start:.0f} s; "
              "operator runs 60 s more", flush=True)  # fmt: skip
        time.sleep(60)
    finally:
        operator.send_signal(signal.SIGINT)
        operator.wait(timeout=60)
    cycles = cycle_lines(log)[-8:]
    placed = deployments(env)
    missing = [m.metadata.name for m in models if m.metadata.name not in placed]
    if missing:
        raise SystemExit(f"models without Deployments: {', '.join(missing[:5])}")
    status_runs: dict[str, list[tuple[float, int, int]]] = {}
    if args.status_seconds > 0:
        for refresh, label in (("0", "0 (baseline)"), ("60", "60 (default)")):
            log_file = work / f"operator-status-{refresh}.log"
            print(f"operator with --status-refresh {refresh} for {args.status_seconds:.0f} s",
                  flush=True)  # fmt: skip
            status_runs[label] = status_run(env, box, log_file, refresh, args.status_seconds)
    time.sleep(5)
    per_model_s, fleet_s, worst, one_sided = [], [], 0.0, 0
    per_model_q = fleet_q = 0
    with CountingClient(box.prometheus_url, timeout=30) as client:
        for _ in range(args.rounds):
            at = time.time() - 1.0
            sent = client.sent
            t_fleet, by_fleet = fleet_round(client, models, placed, at)
            fleet_q, sent = client.sent - sent, client.sent
            t_model, by_model = per_model_round(client, models, placed, at)
            per_model_q = client.sent - sent
            fleet_s.append(t_fleet)
            per_model_s.append(t_model)
            w, o = disagreement(by_model, by_fleet)
            worst, one_sided = max(worst, w), max(one_sided, o)
    if not args.keep:
        kubectl(env, "delete", "namespace", NAMESPACE, "--wait=false")
        for m in models:
            update_settings(settings_path(box.dir), model=(NAMESPACE, m.metadata.name), load=None)
    count = sum(len(placed[m.metadata.name]) for m in models)
    print(f"\n{args.models} models, {count} Deployments, {args.rounds} rounds each "
          f"(window {WINDOW}, fast window {FAST_WINDOW}); queries a round: per-model "
          f"{per_model_q}, fleet-wide {fleet_q}")  # fmt: skip
    if cycles:
        print("operator, last cycles (fleet-wide reads): cycle s "
              + " ".join(f"{c:.2f}" for c, _ in cycles) + "; metrics s "
              + " ".join(f"{m:.2f}" for _, m in cycles))  # fmt: skip
    a, b = statistics.median(per_model_s), statistics.median(fleet_s)
    print(
        f"per-model reads:  median {a:.3f} s  (rounds: {' '.join(f'{x:.3f}' for x in per_model_s)})"
    )
    print(f"fleet-wide reads: median {b:.3f} s  (rounds: {' '.join(f'{x:.3f}' for x in fleet_s)})")
    print(f"ratio per-model / fleet-wide: {a / b:.1f}x; largest relative difference "
          f"{worst:.1e}, signals seen by one read only: {one_sided}")  # fmt: skip
    if status_runs:
        print_status_runs(status_runs, args.status_seconds)


if __name__ == "__main__":
    main()
