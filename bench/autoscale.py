"""infleet's live-metrics autoscaler against HPA-style and KEDA-style baselines, on the sandbox.

Three controllers scale the same model, each in its own namespace on its own pool; the three
pools are identical (H100, 8 per node, $4.92 per accelerator-hour, room to spare), so nothing
but the controller differs:

* ``infleet``: ``infleet run -n NS --prometheus-url URL`` (the operator, Apply mode);
* ``hpa``: :class:`baselines.Hpa` on batch utilisation, the mean over ready pods of
  ``vllm:num_requests_running / slots`` (``slots``: the replica's batch, the engine's
  ``max_num_seqs``), target 0.8 (= infleet's default ``targetUtilization``);
* ``keda``: :class:`baselines.Hpa` fed ``ceil(sum(vllm:num_requests_waiting) / threshold)``
  (threshold 5 per replica, as llm-d's saturation default), the value polled every 30 s.

The baselines write ``spec.replicas`` of a Deployment built by infleet's own builder
(:func:`infleet.core.children.deployment_manifest`) for a ModelDeployment in ``Advise`` mode
that no operator watches: the same pods, labels, simulated engine, start-up delay and price.

Phase 1, reaction (real-time knobs: infleet ``--interval 5`` and ``--probe-interval 1``
(the probe between cycles, ``--probe-interval`` here), HPA 15 s sync, KEDA 30 s polling;
Prometheus scrapes every 2 s): a staircase of steady loads, each level held
``--hold`` seconds. Per step and controller: ``t_scrape`` (Prometheus first holds a sample of
the new offered rate), ``t_prom`` (the model's request-rate query, infleet's own, rises above
its highest value of the 15 s before the step), ``t_req`` (the Deployment's ``spec.replicas``
first rises).

Phase 2, trace: the Azure conversation trace replayed ``--speedup`` times faster (and
``--scale`` times the rate) to all three models at once. Every time-based knob of all three
controllers is divided by the speedup (HPA sync and periods, KEDA polling, stabilisation
windows, infleet's interval, probe interval (its default 5 s) and metrics window, and the
replicas' ``startupSeconds``), so each
sees the trace on its own clock. Per trace minute: p95 TTFT from the engines' histograms in
Prometheus (buckets per pod, differenced at the minute's edges) against the SLO; cost: the
integral of ``spec.replicas`` times the pool's price, in dollars per trace hour.

Usage::

    python bench/autoscale.py [--dir /tmp/benchbox] [--quick]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from kubernetes import client

from autoscale_math import bucket_quantile, minute_increments, replica_seconds, replica_stats
from baselines import Hpa, HpaBehavior, PodMetric, external_average_value_replicas
from baselines import pods_metric_replicas as pods_replicas
from infleet.api import AcceleratorPool, ModelDeployment
from infleet.core.children import MANAGED_BY, MANAGED_BY_LABEL, deployment_manifest
from infleet.metrics.prometheus import PrometheusClient
from infleet.sandbox.cluster import Sandbox
from infleet.sandbox.engine_replicas import replica_spec
from infleet.sandbox.kube import client_for
from infleet.sandbox.load_settings import SteadyLoad, TraceReplay, settings_path, update_settings

REPO = Path(__file__).resolve().parents[1]
TRACE = Path(
    os.environ.get("INFLEET_TRACE") or REPO.parent / "shared" / "traces" / "azure-llm-2023-conv.csv"
)
"""The shared Azure trace beside the repository; INFLEET_TRACE points elsewhere."""
GROUP, VERSION = "infleet.io", "v1alpha1"
CONTROLLERS = ("infleet", "hpa", "keda")
PRICE = 4.92
"""USD per H100-hour (capacity-block price in shared/REFERENCE.md); one H100 per replica."""
POOL_ACCELERATORS = 40
CAPACITY = 5.0
"""``maxRequestsPerSecond`` of the model's one variant (the engine builds its profile)."""
UTILIZATION = 0.8
HPA_TARGET = 0.8
KEDA_THRESHOLD = 5.0
REAL_STARTUP_SECONDS = 120
"""A replica's start-up (an 8B model's weights on an H100 node) before the speed-up."""
LEVELS = (3.0, 7.0, 13.0, 21.0, 30.0, 42.0)
"""Staircase of the reaction phase, requests/s: 1, 2, 4, 6, 8, 11 replicas at 4 req/s each
(5 at the SLO x 0.8), every level between two replica thresholds so that noise does not decide
whether a step needs another replica."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------- manifests


def pool_manifests() -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "AcceleratorPool",
            "metadata": {"name": f"bench-{name}"},
            "spec": {
                "acceleratorType": "nvidia-h100-80gb",
                "acceleratorsPerNode": 8,
                "nodeSelector": {"infleet.io/bench-pool": name},
                "costPerAcceleratorHour": PRICE,
                "maxAccelerators": POOL_ACCELERATORS,
            },
        }
        for name in CONTROLLERS
    ]


@dataclass(frozen=True)
class ModelShape:
    """What the three ModelDeployments of one phase share."""

    ttft_ms: float
    prior_rps: float
    input_tokens: int
    output_tokens: int
    startup_seconds: int
    scale_down_window: int
    max_replicas: int
    target_utilization: float = UTILIZATION
    """infleet's ``spec.targetUtilization`` (the baselines do not read it)."""


def model_manifest(namespace: str, controller: str, shape: ModelShape) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": "chat", "namespace": namespace},
        "spec": {
            "model": "meta-llama/Llama-3.1-8B-Instruct",
            "mode": "Apply" if controller == "infleet" else "Advise",
            "slo": {"timeToFirstTokenMs": shape.ttft_ms},
            "replicas": {"min": 1, "max": shape.max_replicas},
            "targetUtilization": shape.target_utilization,
            "scaling": {"scaleDownWindowSeconds": shape.scale_down_window},
            "traffic": {
                "requestsPerSecond": shape.prior_rps,
                "meanInputTokens": shape.input_tokens,
                "meanOutputTokens": shape.output_tokens,
            },
            "variants": [
                {
                    "name": "h100",
                    "acceleratorType": "nvidia-h100-80gb",
                    "pools": [f"bench-{controller}"],
                    "maxRequestsPerSecond": CAPACITY,
                    "startupSeconds": shape.startup_seconds,
                }
            ],
            "template": {
                "spec": {"containers": [{"name": "server", "image": "registry.invalid/llm:1"}]}
            },
        },
    }


def replicas_for(rps: float) -> int:
    return max(1, math.ceil(rps / UTILIZATION / CAPACITY - 1e-9))


# ---------------------------------------------------------------------------------- cluster


class Cluster:
    """The few API calls the benchmark makes (one ApiClient per thread that uses it)."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig
        self.api = client_for(kubeconfig)
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    def fork(self) -> Cluster:
        return Cluster(self.kubeconfig)

    def apply_pools(self) -> list[AcceleratorPool]:
        pools = []
        for body in pool_manifests():
            self.custom.patch_cluster_custom_object(
                GROUP, VERSION, "acceleratorpools", body["metadata"]["name"], body,
                field_manager="infleet-bench", force=True,
                _content_type="application/apply-patch+yaml",
            )  # fmt: skip
            pools.append(AcceleratorPool.model_validate(body))
        return pools

    def create_namespace(self, name: str) -> None:
        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))

    def delete_namespace(self, name: str) -> None:
        try:
            self.core.delete_namespace(name)
        except client.ApiException as exc:
            if exc.status != 404:
                raise

    def create_model(self, body: dict[str, Any]) -> str:
        made = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, body["metadata"]["namespace"], "modeldeployments", body
        )
        return str(cast(dict[str, Any], made)["metadata"]["uid"])

    def apply_deployment(self, manifest: dict[str, Any], manager: str) -> None:
        self.apps.patch_namespaced_deployment(
            manifest["metadata"]["name"], manifest["metadata"]["namespace"], manifest,
            field_manager=manager, force=True, _content_type="application/apply-patch+yaml",
        )  # fmt: skip

    def deployment_replicas(self, namespace: str, name: str) -> int:
        spec = self.apps.read_namespaced_deployment_scale(name, namespace).spec
        return int(spec.replicas or 0) if spec else 0

    def scale(self, namespace: str, name: str, replicas: int) -> None:
        self.apps.patch_namespaced_deployment_scale(
            name, namespace, {"spec": {"replicas": replicas}}
        )

    def replicas_by_namespace(self, namespaces: Sequence[str]) -> dict[str, int]:
        items = self.apps.list_deployment_for_all_namespaces(
            label_selector=f"{MANAGED_BY_LABEL}={MANAGED_BY}"
        ).items
        out = dict.fromkeys(namespaces, 0)
        for d in items:
            namespace = d.metadata.namespace if d.metadata else None
            if namespace in out and d.spec:
                out[namespace] += int(d.spec.replicas or 0)
        return out


# ---------------------------------------------------------------------------------- baselines


def _regex(namespaces: Sequence[str]) -> str:
    return "|".join(namespaces)


@dataclass(eq=False)
class Baseline(threading.Thread):
    """An HPA-style or KEDA-style controller loop scaling one Deployment."""

    kind: str
    namespace: str
    deployment: str
    cluster: Cluster
    prometheus_url: str
    behavior: HpaBehavior
    slots: int
    keda_poll_seconds: float = 30.0
    decisions: list[tuple[float, int, int, float]] = field(default_factory=list)
    """``(time, current, new, metric)`` per sync."""

    def __post_init__(self) -> None:
        threading.Thread.__init__(self, name=f"{self.kind}-{self.namespace}", daemon=True)
        self.stopping = threading.Event()
        self.hpa = Hpa(self.behavior)
        self._cached: float | None = None
        self._polled = -math.inf

    def _pods(self, prom: PrometheusClient) -> list[PodMetric]:
        sel = f'namespace="{self.namespace}"'
        running = {
            s.labels.get("pod", ""): s.value
            for s in prom.query(f"vllm:num_requests_running{{{sel}}}")
        }
        ready = {
            s.labels.get("pod", ""): s.value > 0
            for s in prom.query(f"infleet_sandbox_replica_ready{{{sel}}}")
        }
        return [
            PodMetric(None if math.isnan(v) else v / self.slots, ready.get(pod, False))
            for pod, v in running.items()
        ]

    def sync(self, prom: PrometheusClient, now: float) -> None:
        current = self.cluster.deployment_replicas(self.namespace, self.deployment)
        if self.kind == "hpa":
            pods = self._pods(prom)
            # Pods the Deployment has that report nothing yet are "missing" pods.
            pods += [PodMetric(None, True)] * max(0, current - len(pods))
            proposed = pods_replicas(current, pods, HPA_TARGET, self.behavior.tolerance)
            ready = [p.value for p in pods if p.ready and p.value is not None]
            metric = statistics.fmean(ready) if ready else math.nan
        else:
            if now - self._polled >= self.keda_poll_seconds - 1e-6 or self._cached is None:
                sample = prom.query_value(
                    f'sum(vllm:num_requests_waiting{{namespace="{self.namespace}"}})'
                )
                self._cached = 0.0 if sample is None else sample.value
                self._polled = now
            metric = self._cached
            proposed = external_average_value_replicas(
                current, metric, KEDA_THRESHOLD, self.behavior.tolerance
            )
        new = self.hpa.decide(now, current, proposed)
        if new != current:
            self.cluster.scale(self.namespace, self.deployment, new)
        self.hpa.record(now, current, new)
        self.decisions.append((now, current, new, metric))

    def run(self) -> None:
        prom = PrometheusClient(self.prometheus_url)
        next_sync = time.time()
        while not self.stopping.is_set():
            now = time.time()
            try:
                self.sync(prom, now)
            except Exception as exc:  # a failed sync is skipped, as the HPA does
                log(f"{self.kind} {self.namespace}: sync failed: {exc}")
            next_sync += self.behavior.sync_seconds
            self.stopping.wait(max(0.0, next_sync - time.time()))
        prom.close()


# ---------------------------------------------------------------------------------- operator


class Operator:
    """``infleet run`` for one namespace."""

    def __init__(self, kubeconfig: Path, namespace: str, log_path: Path, args: Sequence[str]):
        self.argv = [
            sys.executable, "-m", "infleet.cli", "run", "--kubeconfig", str(kubeconfig),
            "-n", namespace, "--metrics-port", "0", *args,
        ]  # fmt: skip
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as out:
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, env=env)

    def stop(self) -> None:
        if self.proc is None:
            return
        # SIGTERM, not SIGINT: a shell's background job inherits SIGINT ignored.
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


# ---------------------------------------------------------------------------------- a phase


@dataclass
class Phase:
    """Three namespaces, three models, the operator and two baseline loops."""

    label: str
    shape: ModelShape
    box: Sandbox
    cluster: Cluster
    pools: dict[str, AcceleratorPool]
    work: Path
    namespaces: dict[str, str] = field(default_factory=dict)
    operator: Operator | None = None
    baselines: list[Baseline] = field(default_factory=list)

    def setup(self, operator_args: Sequence[str], behavior: HpaBehavior, keda_poll: float) -> None:
        suffix = f"{os.getpid() % 100000}-{int(time.time()) % 10000}"
        initial = replicas_for(self.shape.prior_rps)
        for controller in CONTROLLERS:
            ns = f"{self.label}-{controller}-{suffix}"
            self.namespaces[controller] = ns
            self.cluster.create_namespace(ns)
            body = model_manifest(ns, controller, self.shape)
            uid = self.cluster.create_model(body)
            if controller == "infleet":
                continue
            model = ModelDeployment.model_validate(body)
            manifest = deployment_manifest(
                model, variant="h100", pool=self.pools[f"bench-{controller}"],
                replicas=initial, owner_uid=uid,
            )  # fmt: skip
            self.cluster.apply_deployment(manifest, f"bench-{controller}")
            self.baselines.append(
                Baseline(
                    kind=controller,
                    namespace=ns,
                    deployment=manifest["metadata"]["name"],
                    cluster=self.cluster.fork(),
                    prometheus_url=self.box.prometheus_url,
                    behavior=behavior,
                    slots=replica_spec(model, model.spec.variants[0]).slots,
                    keda_poll_seconds=keda_poll,
                )
            )
        self.operator = Operator(
            self.box.kubeconfig,
            self.namespaces["infleet"],
            self.work / f"operator-{self.label}.log",
            ["--prometheus-url", self.box.prometheus_url, *operator_args],
        )
        self.operator.start()
        for b in self.baselines:
            b.start()

    def set_load(self, load: SteadyLoad | TraceReplay) -> None:
        path = settings_path(self.box.dir)
        for ns in self.namespaces.values():
            update_settings(path, model=(ns, "chat"), load=load)

    def teardown(self) -> None:
        for b in self.baselines:
            b.stopping.set()
        for b in self.baselines:
            b.join(timeout=30)
            with (self.work / f"{self.label}-{b.kind}-decisions.tsv").open("w") as out:
                out.write("time\tcurrent\tnew\tmetric\n")
                for t, current, new, metric in b.decisions:
                    out.write(f"{t:.2f}\t{current}\t{new}\t{metric:.3f}\n")
        if self.operator:
            self.operator.stop()
        path = settings_path(self.box.dir)
        for ns in self.namespaces.values():
            update_settings(path, model=(ns, "chat"), load=None)
            self.cluster.delete_namespace(ns)


def wait_ready(phase: Phase, prom: PrometheusClient, want: int, timeout: float) -> None:
    """Until every model has ``want`` replicas taking traffic (engine-ready)."""
    regex = _regex(list(phase.namespaces.values()))
    query = f'sum by (namespace) (infleet_sandbox_replica_ready{{namespace=~"{regex}"}})'
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = {s.labels.get("namespace"): s.value for s in prom.query(query)}
        if all(got.get(ns, 0) >= want for ns in phase.namespaces.values()):
            return
        time.sleep(1.0)
    log(f"warning: not every model had {want} ready replicas after {timeout:.0f} s: {got}")


# ---------------------------------------------------------------------------------- phase 1


@dataclass(frozen=True)
class StepResult:
    controller: str
    step: int
    level: float
    t_scrape: float | None
    t_prom: float | None
    t_req: float | None
    before: int
    after: int


def reaction_phase(
    box: Sandbox,
    cluster: Cluster,
    pools: dict[str, AcceleratorPool],
    work: Path,
    levels: Sequence[float],
    hold: float,
    window: str,
    probe: float,
) -> list[StepResult]:
    shape = ModelShape(
        ttft_ms=500, prior_rps=levels[0], input_tokens=512, output_tokens=128,
        startup_seconds=2, scale_down_window=300, max_replicas=16,
    )  # fmt: skip
    phase = Phase("react", shape, box, cluster, pools, work)
    prom = PrometheusClient(box.prometheus_url)
    results: list[StepResult] = []
    try:
        phase.setup(
            ["--interval", "5", "--metrics-window", window, "--probe-interval", f"{probe:g}"],
            HpaBehavior(max_replicas=shape.max_replicas),
            keda_poll=30.0,
        )
        # Load only once a replica takes traffic: requests held through a start-up would
        # read as an SLO breach "with headroom" and derate infleet's calibration at once.
        wait_ready(phase, prom, 1, 90)
        phase.set_load(SteadyLoad(levels[0], 512, 128))
        namespaces = list(phase.namespaces.values())
        regex = _regex(namespaces)
        rate_q = (
            f'sum by (namespace) (rate(vllm:request_success_total{{namespace=~"{regex}"}}'
            f"[{window}]))"
        )
        offered_q = (
            "max by (namespace) "
            f'(infleet_sandbox_offered_requests_per_second{{namespace=~"{regex}"}})'
        )
        time.sleep(max(0.0, hold - 15))
        history: list[tuple[float, dict[str, float]]] = []
        t_end = time.time() + 15
        while time.time() < t_end:  # the last 15 s before the first step: rate noise
            history.append((time.time(), _by_ns(prom.query(rate_q))))
            time.sleep(0.25)
        for step, level in enumerate(levels[1:], start=1):
            before_replicas = cluster.replicas_by_namespace(namespaces)
            pre_max = {
                ns: max((h[1].get(ns, 0.0) for h in history if h[0] > time.time() - 15.5),
                        default=0.0)
                for ns in namespaces
            }  # fmt: skip
            phase.set_load(SteadyLoad(level, 512, 128))
            t_set = time.time()
            log(f"step {step}: {levels[step - 1]:g} -> {level:g} rps; before {before_replicas}")
            seen: dict[str, dict[str, float]] = {ns: {} for ns in namespaces}
            history = []
            # Holds of 60 s would keep every step at the same phase of the HPA's 15 s syncs and
            # KEDA's 30 s polls (60 is a multiple of both), making their five reactions one
            # draw; staggering the holds by 0-14.6 s spreads the phases.
            while time.time() < t_set + hold + (step * 7.3) % 15:
                now = time.time()
                rates = _by_ns(prom.query(rate_q))
                offered = _by_ns(prom.query(offered_q))
                replicas = cluster.replicas_by_namespace(namespaces)
                history.append((now, rates))
                for ns in namespaces:
                    got = seen[ns]
                    if "scrape" not in got and abs(offered.get(ns, -1.0) - level) < 1e-6:
                        got["scrape"] = now
                    if "req" not in got and replicas.get(ns, 0) > before_replicas.get(ns, 0):
                        got["req"] = now
                time.sleep(0.25)
            after = cluster.replicas_by_namespace(namespaces)
            for ns in namespaces:
                moved = first_moved([(t, r.get(ns, 0.0)) for t, r in history], pre_max[ns])
                if moved is not None:
                    seen[ns]["prom"] = moved
            for controller, ns in phase.namespaces.items():
                got = seen[ns]
                results.append(
                    StepResult(
                        controller, step, level,
                        _rel(got.get("scrape"), t_set), _rel(got.get("prom"), t_set),
                        _rel(got.get("req"), t_set), before_replicas[ns], after[ns],
                    )
                )  # fmt: skip
            log(f"step {step}: " + ", ".join(_step_line(r) for r in results[-3:]))
    finally:
        phase.teardown()
        prom.close()
    return results


def first_moved(series: Sequence[tuple[float, float]], ceiling: float) -> float | None:
    """When the request-rate query moved: the first reading after which every reading stays
    above ``ceiling`` (its highest value in the 15 s before the step), so a single noisy
    reading above it does not count."""
    moved = None
    for t, value in series:
        if value <= ceiling:
            moved = None
        elif moved is None:
            moved = t
    return moved


def _by_ns(samples: Sequence[Any]) -> dict[str, float]:
    return {s.labels.get("namespace", ""): s.value for s in samples if math.isfinite(s.value)}


def _rel(t: float | None, origin: float) -> float | None:
    return None if t is None else t - origin


def _step_line(r: StepResult) -> str:
    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.1f}"

    return (
        f"{r.controller} scrape {f(r.t_scrape)} prom {f(r.t_prom)} req {f(r.t_req)} "
        f"({r.before}->{r.after})"
    )


def reaction_delay(r: StepResult) -> float | None:
    """``t_req - t_prom`` of one step; ``None`` when either never happened."""
    if r.t_req is None or r.t_prom is None:
        return None
    return r.t_req - r.t_prom


# ---------------------------------------------------------------------------------- phase 2


@dataclass
class TraceResult:
    controller: str
    minutes: int
    minutes_met: int
    cost: float
    replicas: tuple[int, float, int]
    p95_by_minute: list[float]


@dataclass(frozen=True)
class Trace:
    """The replayed trace file and what the models' priors are set from."""

    path: Path
    per_minute: list[int]
    """Requests per trace minute (before ``--scale``)."""
    mean_input_tokens: int
    mean_output_tokens: int


def cut_trace(path: Path, minutes: int | None, work: Path) -> Trace:
    """The trace, cut to its first ``minutes`` when given, copied into ``work``."""
    from infleet.sandbox.load_trace import _timestamp

    with path.open(newline="") as handle:
        rows = [(_timestamp(r["TIMESTAMP"], str(path)), r) for r in csv.DictReader(handle)]
    origin = min(t for t, _ in rows)
    kept = [(t - origin, r) for t, r in rows if minutes is None or t - origin < 60 * minutes]
    out = work / "trace.csv"
    columns = ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for _, r in kept:
            writer.writerow({k: r[k] for k in columns})
    per_minute = [0] * (int(max(t for t, _ in kept) // 60) + 1)
    for t, _ in kept:
        per_minute[int(t // 60)] += 1
    return Trace(
        out,
        per_minute,
        round(statistics.fmean(int(r["ContextTokens"]) for _, r in kept)),
        round(statistics.fmean(int(r["GeneratedTokens"]) for _, r in kept)),
    )


def trace_phase(
    box: Sandbox,
    cluster: Cluster,
    pools: dict[str, AcceleratorPool],
    work: Path,
    *,
    speedup: float,
    scale: float,
    minutes: int | None,
    ttft_ms: float,
    window: str,
    target_utilization: float,
) -> tuple[list[TraceResult], dict[str, list[tuple[float, int]]]]:
    cut = cut_trace(TRACE, minutes, work)
    trace, counts = cut.path, cut.per_minute
    mean_in, mean_out = cut.mean_input_tokens, cut.mean_output_tokens
    first_rps = counts[0] / 60.0 * speedup * scale
    shape = ModelShape(
        ttft_ms=ttft_ms,
        prior_rps=round(first_rps, 2),
        input_tokens=mean_in,
        output_tokens=mean_out,
        startup_seconds=max(1, round(REAL_STARTUP_SECONDS / speedup)),
        scale_down_window=math.ceil(300 / speedup),
        max_replicas=POOL_ACCELERATORS,
        target_utilization=target_utilization,
    )
    phase = Phase("trace", shape, box, cluster, pools, work)
    prom = PrometheusClient(box.prometheus_url, timeout=30)
    samples: dict[str, list[tuple[float, int]]] = {c: [] for c in CONTROLLERS}
    stop = threading.Event()
    recorder_cluster = cluster.fork()

    def record() -> None:
        names = {ns: c for c, ns in phase.namespaces.items()}
        while not stop.is_set():
            now = time.time()
            try:
                for ns, n in recorder_cluster.replicas_by_namespace(list(names)).items():
                    samples[names[ns]].append((now, n))
            except Exception as exc:
                log(f"recorder: {exc}")
            stop.wait(0.5)

    recorder = threading.Thread(target=record, daemon=True)
    results: list[TraceResult] = []
    try:
        phase.setup(
            [
                *("--interval", f"{15 / speedup:g}", "--metrics-window", window),
                *("--probe-interval", f"{5 / speedup:g}"),
            ],
            HpaBehavior(max_replicas=shape.max_replicas).scaled(speedup),
            keda_poll=30.0 / speedup,
        )
        log(f"trace phase: {phase.namespaces}; prior {shape.prior_rps} rps, mix "
            f"{mean_in}/{mean_out}, startup {shape.startup_seconds} s, window "
            f"{shape.scale_down_window} s")  # fmt: skip
        recorder.start()
        # Warm-up at the first minute's rate, so every controller starts the trace settled.
        wait_ready(phase, prom, 1, 120)
        phase.set_load(SteadyLoad(first_rps, mean_in, mean_out))
        time.sleep(max(45.0, 3 * shape.startup_seconds))
        t0 = time.time() + 2.0
        phase.set_load(TraceReplay(str(trace), speedup, scale, started_at=t0))
        span = len(counts) * 60.0 / speedup
        log(f"replay from {time.strftime('%H:%M:%S', time.localtime(t0))} for {span:.0f} s")
        time.sleep(max(0.0, t0 + span + 6 - time.time()))
        stop.set()
        recorder.join(timeout=10)
        edges = [t0 + 60.0 * k / speedup for k in range(len(counts) + 1)]
        for controller, ns in phase.namespaces.items():
            p95 = minute_p95(prom, ns, edges, 60.0 / speedup)
            met = sum(1 for p in p95 if math.isnan(p) or p * 1000 <= ttft_ms)
            rs = replica_seconds(samples[controller], edges[0], edges[-1])
            cost = rs * speedup / 3600.0 * PRICE
            results.append(
                TraceResult(
                    controller, len(p95), met, cost,
                    replica_stats(samples[controller], edges[0], edges[-1]), p95,
                )
            )  # fmt: skip
    finally:
        stop.set()
        phase.teardown()
        prom.close()
    return results, samples


def minute_p95(
    prom: PrometheusClient, namespace: str, edges: Sequence[float], step: float
) -> list[float]:
    """p95 TTFT (seconds) of each interval between consecutive ``edges``; NaN when empty."""
    query = (
        f"last_over_time(vllm:time_to_first_token_seconds_bucket"
        f'{{namespace="{namespace}"}}[{max(1, math.ceil(step * 1000))}ms])'
    )
    readings = []
    for edge in edges:
        reading: dict[tuple[str, float], float] = {}
        for s in prom.query(query, at=edge):
            le = s.labels.get("le", "+Inf")
            reading[(s.labels.get("pod", ""), math.inf if le == "+Inf" else float(le))] = s.value
        readings.append(reading)
    out = []
    for before, after in itertools.pairwise(readings):
        buckets = minute_increments(before, after)
        out.append(bucket_quantile(0.95, buckets) if buckets else math.nan)
    return out


# ---------------------------------------------------------------------------------- output


def print_report(
    steps: list[StepResult],
    traces: list[TraceResult],
    cycle: float,
    load: tuple[str, str],
    args: argparse.Namespace,
) -> bool:
    print(f"machine load: before {load[0]}; after {load[1]}")
    if steps:
        print("\nReaction (staircase; infleet --interval 5 --metrics-window "
              f"{args.reaction_window} --probe-interval {args.probe_interval:g}; HPA 15 s "
              "sync, KEDA 30 s polling; seconds after the load was set)")  # fmt: skip
        print(f"{'controller':<10} {'step':>4} {'rps':>5} {'t_scrape':>8} {'t_prom':>7} "
              f"{'t_req':>7} {'req-prom':>8} {'req-scrape':>10} {'replicas':>9}")  # fmt: skip
        for r in steps:
            d = reaction_delay(r)
            print(
                f"{r.controller:<10} {r.step:>4} {r.level:>5g} {_fmt(r.t_scrape):>8} "
                f"{_fmt(r.t_prom):>7} {_fmt(r.t_req):>7} {_fmt(d):>8} "
                f"{_fmt(_minus(r.t_req, r.t_scrape)):>10} "
                f"{r.before:>4}->{r.after:<4}"
            )
    medians: dict[str, float | None] = {}
    for c in CONTROLLERS:
        delays = [reaction_delay(r) for r in steps if r.controller == c]
        # A step never answered within the hold counts as the hold (a lower bound).
        filled = [args.hold if d is None else d for d in delays]
        medians[c] = statistics.median(filled) if filled else None
    if steps:
        print(f"(- : no scale-up within the {args.hold:g} s hold; the medians count it as "
              f"{args.hold:g} s, a lower bound)")  # fmt: skip
    print(f"\nTrace: {TRACE.name}, speedup {args.speedup:g}, scale {args.scale:g}, "
          f"TTFT SLO {args.ttft_ms:g} ms (p95 per trace minute), "
          f"infleet targetUtilization {args.target_utilization:g}, "
          f"${PRICE}/accelerator-hour")  # fmt: skip
    print(f"{'controller':<10} {'SLO minutes':>14} {'cost $':>9} {'replicas min/mean/max':>22} "
          f"{'reaction median':>16}")  # fmt: skip
    by = {t.controller: t for t in traces}
    for c in CONTROLLERS:
        t = by.get(c)
        med = medians.get(c)
        react = "-"
        if med is not None:
            react = f"{med:.1f} s" + (f" ({med / cycle:.2f} cyc)" if c == "infleet" else "")
        if t is None:
            print(f"{c:<10} {'-':>14} {'-':>9} {'-':>22} {react:>16}")
            continue
        share = t.minutes_met / t.minutes if t.minutes else math.nan
        mn, mean, mx = t.replicas
        print(f"{c:<10} {f'{share:.1%} ({t.minutes_met}/{t.minutes})':>14} {t.cost:>9.2f} "
              f"{f'{mn}/{mean:.2f}/{mx}':>22} {react:>16}")  # fmt: skip
    ok = True
    if "infleet" in by and "hpa" in by and "keda" in by:
        base = max((by["hpa"], by["keda"]), key=lambda t: (t.minutes_met, -t.cost))
        inf = by["infleet"]
        share = inf.minutes_met / inf.minutes
        print(f"\nbetter baseline: {base.controller} (more SLO minutes, then cheaper)")
        print(f"infleet / {base.controller}: cost {inf.cost / base.cost:.3f}x, SLO minutes "
              f"{share:.1%} vs {base.minutes_met / base.minutes:.1%}")  # fmt: skip
        for other in ("hpa", "keda"):
            o = by[other]
            print(f"infleet / {other}: cost {inf.cost / o.cost:.3f}x, SLO minutes "
                  f"{inf.minutes_met - o.minutes_met:+d}")  # fmt: skip
        slo_ok = share >= 0.99
        cost_ok = inf.cost <= base.cost * 1.0000001
        ok = slo_ok and cost_ok
        print(f"targets: >=99% SLO minutes {'met' if slo_ok else 'MISSED'}, "
              f"cost <= better baseline {'met' if cost_ok else 'MISSED'}")  # fmt: skip
    med = medians.get("infleet")
    if med is not None:
        react_ok = med <= cycle
        ok = ok and react_ok
        print(
            f"reaction: median t_req - t_prom {med:.1f} s = {med / cycle:.2f} cycles of "
            f"{cycle:g} s: {'met' if react_ok else 'MISSED'} (target <= 1 cycle)"
        )
    return ok


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    parser = argparse.ArgumentParser(description="infleet vs HPA-style and KEDA-style autoscaling")
    parser.add_argument(
        "--dir", type=Path, default=Path(os.environ.get("INFLEET_SANDBOX_DIR", "/tmp/benchbox"))
    )
    parser.add_argument("--quick", action="store_true", help="2 steps of 30 s, 10 trace minutes")
    parser.add_argument("--speedup", type=float, default=8.0)
    parser.add_argument("--scale", type=float, default=0.5)
    parser.add_argument("--ttft-ms", type=float, default=1000.0)
    parser.add_argument(
        "--target-utilization",
        type=float,
        default=UTILIZATION,
        help="infleet's spec.targetUtilization in the trace phase (default 0.8, the API's)",
    )
    parser.add_argument(
        "--reaction-window",
        default="20s",
        help="infleet's --metrics-window in the reaction phase (the e2e tests' 20s)",
    )
    parser.add_argument("--hold", type=float, default=60.0, help="seconds per staircase level")
    parser.add_argument(
        "--probe-interval", type=float, default=1.0,
        help="infleet's --probe-interval in the staircase (0: off); the trace phase uses the "
        "operator's default 5 s divided by the speed-up",
    )  # fmt: skip
    parser.add_argument("--minutes", type=int, default=None, help="replay only this many minutes")
    parser.add_argument("--skip-reaction", action="store_true")
    parser.add_argument("--skip-trace", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    args = parser.parse_args()
    # Background jobs of a shell start with SIGINT ignored: make SIGINT and SIGTERM both
    # unwind through the phases' clean-up (operator stopped, loads cleared, namespaces gone).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    levels: Sequence[float] = LEVELS
    if args.quick:
        levels, args.hold = LEVELS[:3], 30.0
        args.minutes = args.minutes or 10
    window = f"{max(4, math.ceil(60 / args.speedup))}s"
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    work = Path(tempfile.mkdtemp(prefix="infleet-autoscale-"))
    pools_file = work / "pools.yaml"
    pools_file.write_text("---\n".join(json.dumps(p) + "\n" for p in pool_manifests()))
    log(f"work dir {work}; sandbox {args.dir}")
    subprocess.run(
        [sys.executable, "-m", "infleet.cli", "sandbox", "up", "--dir", str(args.dir),
         "--pools", str(pools_file)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    box = Sandbox(args.dir)
    # Through the CLI, not the settings file alone: kwok reads the scale from its
    # configuration, which the command rewrites (restarting kwok when it changed).
    subprocess.run(
        [sys.executable, "-m", "infleet.cli", "sandbox", "startup-scale", "1", "--dir",
         str(args.dir)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    cluster = Cluster(box.kubeconfig)
    pools = {p.metadata.name: p for p in cluster.apply_pools()}
    steps: list[StepResult] = []
    traces: list[TraceResult] = []
    if not args.skip_reaction:
        steps = reaction_phase(
            box, cluster, pools, work, levels, args.hold, args.reaction_window,
            args.probe_interval,
        )  # fmt: skip
    if not args.skip_trace:
        traces, _samples = trace_phase(
            box, cluster, pools, work, speedup=args.speedup, scale=args.scale,
            minutes=args.minutes, ttft_ms=args.ttft_ms, window=window,
            target_utilization=args.target_utilization,
        )  # fmt: skip
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "steps": [r.__dict__ for r in steps],
                    "traces": [t.__dict__ for t in traces],
                },
                default=str,
                indent=1,
            )
        )
    ok = print_report(steps, traces, 5.0, (" ".join(load_before), " ".join(load_after)), args)
    print(f"(logs in {work})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
