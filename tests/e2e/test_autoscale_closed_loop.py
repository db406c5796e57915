"""Closed-loop autoscaling: `infleet run --prometheus-url` on the sandbox, whose simulated
engines serve the load set here and whose real Prometheus scrapes them every 2 s.

Each test has its own namespace and model on the e2e-h100 pool (16 accelerators); a replica
sustains 5 req/s at the SLO (the engine builds its profile from ``maxRequestsPerSecond``), so
the replica counts below are hand-computed: ceil(rps / 0.8 / 5). The operator reads rates and
percentiles over a 20 s window so that a test sees a change within seconds.

The module runs with the sandbox's start-up scale at 1 (restored afterwards): kwok holds every
model pod Running but not Ready for its variant's ``startupSeconds`` (2 s here unless a test
says otherwise), and the engines serve Ready pods only.

Waits poll the status every second with a deadline; a failure prints the status history
(replicas, demand, observed rate and latency, calibration) of the whole test.
"""

from __future__ import annotations

import csv
import math
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes import client
from operator_process import Operator, apply_e2e_pools

pytestmark = pytest.mark.e2e

REPO = Path(__file__).parents[2]
GROUP, VERSION = "infleet.io", "v1alpha1"
CAPACITY = 5.0
"""maxRequestsPerSecond of the test model's variant."""
TTFT_SLO_MS = 500
DATA = Path(__file__).parent / "data"
STEP_TRACE = DATA / "step-trace.csv"
"""Committed trace (Azure format): ~3 req/s for 40 s, ~12 req/s for 45 s, ~3 req/s for 15 s."""
AZURE_TRACE = REPO.parent / "shared" / "traces" / "azure-llm-2023-conv.csv"
"""The Azure LLM inference trace (conversation, 2023), where the project's shared data live."""


def replicas_for(rps: float) -> int:
    return math.ceil(rps / 0.8 / CAPACITY - 1e-9)


def _sandbox(cluster: Any) -> Any:
    if cluster.sandbox_dir is None:
        pytest.skip("needs the infleet sandbox's engine and Prometheus")
    from infleet.sandbox.cluster import Sandbox

    return Sandbox(cluster.sandbox_dir)


def _infleet(box: Any, *args: str) -> str:
    command = [sys.executable, "-m", "infleet", "sandbox", *args, "--dir", str(box.dir)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, f"{' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def pools(cluster: Any) -> Iterator[None]:
    apply_e2e_pools(cluster)
    if cluster.sandbox_dir is None:
        yield
        return
    from infleet.sandbox.cluster import Sandbox
    from infleet.sandbox.load_settings import read_settings, settings_path

    box = Sandbox(cluster.sandbox_dir)
    before = read_settings(settings_path(box.dir)).startup_scale
    _infleet(box, "startup-scale", "1")
    yield
    _infleet(box, "startup-scale", f"{before:g}")


@pytest.fixture
def box(cluster: Any) -> Any:
    return _sandbox(cluster)


def live_operator(
    cluster: Any, box: Any, namespace: str, tmp_path: Path, *extra: str, window: str = "20s"
) -> Operator:
    """`infleet run` on ``namespace`` reading the sandbox's Prometheus (not started)."""
    return Operator(
        cluster.kubeconfig,
        namespace,
        tmp_path / "operator.log",
        pending_grace=30,
        extra=("--prometheus-url", box.prometheus_url, "--metrics-window", window, *extra),
    )


@pytest.fixture
def operator(
    request: pytest.FixtureRequest,
    cluster: Any,
    box: Any,
    pools: None,
    namespace: str,
    tmp_path: Path,
) -> Iterator[Operator]:
    """`infleet run` on the test's namespace; the metrics window is 20s unless the test
    parametrizes this fixture (indirectly) with another. Every status change is written at
    once (``--status-refresh 0``): these tests follow the live figures cycle by cycle."""
    window = str(getattr(request, "param", "20s"))
    op = live_operator(cluster, box, namespace, tmp_path, "--status-refresh", "0", window=window)
    op.start()
    yield op
    op.stop()
    _infleet(box, "load", "clear", f"{namespace}/chat")
    print(op.log.read_text()[-6000:])


def create_model(
    kube: Any,
    namespace: str,
    *,
    prior_rps: float,
    scale_down_window: int = 300,
    startup_seconds: int = 2,
    **spec: Any,
) -> None:
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": "chat"},
        "spec": {
            "model": "meta-llama/Llama-3.1-8B-Instruct",
            "slo": {"timeToFirstTokenMs": TTFT_SLO_MS},
            "replicas": {"min": 1, "max": 8},
            "scaling": {"scaleDownWindowSeconds": scale_down_window},
            "traffic": {
                "requestsPerSecond": prior_rps,
                "meanInputTokens": 512,
                "meanOutputTokens": 128,
            },
            "variants": [
                {
                    "acceleratorType": "nvidia-h100-80gb",
                    "pools": ["e2e-h100"],
                    "maxRequestsPerSecond": CAPACITY,
                    "startupSeconds": startup_seconds,
                }
            ],
            "template": {
                "spec": {"containers": [{"name": "server", "image": "registry.invalid/llm:1"}]}
            },
        },
    }
    body["spec"].update(spec)
    client.CustomObjectsApi(kube.api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, "modeldeployments", body
    )


def status(kube: Any, namespace: str) -> dict[str, Any]:
    obj = client.CustomObjectsApi(kube.api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, "modeldeployments", "chat"
    )
    return dict(cast(dict[str, Any], obj).get("status") or {})


def condition(st: dict[str, Any], type_: str) -> str | None:
    for cond in st.get("conditions") or []:
        if cond["type"] == type_:
            return str(cond["status"])
    return None


def deployed_replicas(kube: Any, namespace: str) -> int:
    items = kube.apps.list_namespaced_deployment(
        namespace, label_selector="app.kubernetes.io/managed-by=infleet"
    ).items
    return sum(d.spec.replicas or 0 for d in items)


def wait_status(
    kube: Any, namespace: str, what: str, ok: Callable[[dict[str, Any]], bool], timeout: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = status(kube, namespace)
        if ok(last):
            return last
        time.sleep(1.0)
    keys = ("desiredReplicas", "readyReplicas", "demand", "observed", "conditions")
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; last status: "
                f"{ {k: last.get(k) for k in keys} }")  # fmt: skip


def load_once_ready(kube: Any, box: Any, namespace: str, rps: float) -> None:
    """Set the load once the model's first replica is Ready. Requests that arrive while no
    replica is ready wait in the engine's backlog (a gateway's queue) and are all served when
    one becomes ready: that burst is real demand, and the scale-down window keeps it for its
    length (measured in CI: 4.6-5.1 req/s at a 3 req/s load, so 2 replicas for 300 s)."""
    wait_status(
        kube,
        namespace,
        "the first replica Ready",
        lambda s: (s.get("readyReplicas") or 0) >= 1,
        timeout=60,
    )
    set_load(box, namespace, rps)


def steady(kube: Any, namespace: str, rps: float) -> dict[str, Any]:
    """Wait until the plan follows measured demand ``rps`` with fresh metrics."""
    want = replicas_for(rps)
    return wait_status(
        kube,
        namespace,
        f"{want} replicas planned from metrics",
        lambda s: (
            condition(s, "MetricsAvailable") == "True"
            and (s.get("demand") or {}).get("source") in ("metrics", "forecast")
            and s.get("desiredReplicas") == want
            and s.get("readyReplicas") == want
        ),
        timeout=60,
    )


def test_load_step_scales_up_and_latency_returns_under_the_slo(
    kube: Any, box: Any, namespace: str, operator: Operator
) -> None:
    create_model(kube, namespace, prior_rps=3)
    load_once_ready(kube, box, namespace, 3)
    steady(kube, namespace, 3)  # 3 / 0.8 / 5: 1 replica

    _infleet(box, "load", "set", f"{namespace}/chat", "--rps", "12",
             "--input-tokens", "512", "--output-tokens", "128")  # fmt: skip
    stepped = time.monotonic()
    grown = wait_status(
        kube,
        namespace,
        ">= 3 replicas after the x4 step",
        lambda s: (s.get("desiredReplicas") or 0) >= replicas_for(12),
        timeout=40,
    )
    assert grown["demand"]["source"] in ("metrics", "forecast")
    assert grown["lastScaleTime"]
    assert deployed_replicas(kube, namespace) >= replicas_for(12)
    # The overload's slow first tokens leave the 20 s window once the new replicas serve.
    done = wait_status(
        kube,
        namespace,
        f"p95 TTFT back under {TTFT_SLO_MS} ms",
        lambda s: (
            condition(s, "SLOMet") == "True"
            and (s.get("observed") or {}).get("ttftMs") is not None
            and s["observed"]["ttftMs"] <= TTFT_SLO_MS
            and (s["observed"].get("requestsPerSecond") or 0) > 12 * 0.7
        ),
        timeout=max(20.0, 75 - (time.monotonic() - stepped)),
    )
    assert done["desiredReplicas"] >= replicas_for(12)


def test_probe_between_cycles_scales_up_long_before_the_interval(
    cluster: Any, kube: Any, box: Any, pools: None, namespace: str, tmp_path: Path
) -> None:
    """With a 600 s interval, only watch events and the probe start cycles. Once the plan
    covers the load from metrics (3 req/s: 1 replica, or 2 while a start-up burst is in the
    scale-down window), a step to 12 req/s is met by an early cycle: the probe reads the 8 s
    rate every second and starts a cycle as soon as it clears what the plan covers."""
    op = live_operator(
        cluster, box, namespace, tmp_path, "--interval", "600", "--probe-interval", "1"
    )
    api = client.CustomObjectsApi(kube.api)
    op.start()
    try:
        # A short scale-down window as well, should a burst still come (see load_once_ready).
        create_model(kube, namespace, prior_rps=3, scale_down_window=30)
        load_once_ready(kube, box, namespace, 3)
        # No interval cycle will come: a spec change (an event) asks for a cycle until one
        # reads the metrics and draws the plan's line from them.
        deadline, window = time.monotonic() + 150, 30
        while True:
            st = status(kube, namespace)
            desired = st.get("desiredReplicas") or 0
            if (
                condition(st, "MetricsAvailable") == "True"
                and (st.get("demand") or {}).get("source") in ("metrics", "forecast")
                and 1 <= desired < replicas_for(12)
                and st.get("readyReplicas") == desired
            ):
                break
            assert time.monotonic() < deadline, f"no metrics-based plan; status {st}"
            window = 61 - window  # 30 <-> 31: a harmless spec change, one watch event
            patch = {"spec": {"scaling": {"scaleDownWindowSeconds": window}}}
            api.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, "modeldeployments", "chat", patch
            )
            time.sleep(4.0)
        # The plan covers 1 or 2 x 5 x 0.8 = 4 or 8 req/s; 12 req/s is well past it.
        set_load(box, namespace, 12)
        stepped = time.monotonic()
        wait_status(
            kube,
            namespace,
            ">= 3 replicas after the step, without an interval cycle",
            lambda s: (s.get("desiredReplicas") or 0) >= replicas_for(12),
            timeout=30,
        )
        took = time.monotonic() - stepped
        log = op.log.read_text()
        assert f"early cycle: {namespace}/chat" in log, log[-4000:]
        print(f"scaled up {took:.1f} s after the step")
    finally:
        op.stop()
        _infleet(box, "load", "clear", f"{namespace}/chat")
        print(op.log.read_text()[-6000:])


CYCLE_STATUSES = re.compile(r"fleet cycle .* (\d+) statuses \((\d+) deferred\)")


def test_live_figures_wait_for_the_status_refresh_while_decisions_are_written_at_once(
    cluster: Any, kube: Any, box: Any, pools: None, namespace: str, tmp_path: Path
) -> None:
    """``--status-refresh 30`` with 2 s cycles: at a steady load the cycles hold back the
    status patches that would only carry new live figures; a scale-up still reaches the
    status in the cycle that applies it, not up to 30 s later."""
    op = live_operator(cluster, box, namespace, tmp_path, "--status-refresh", "30")
    op.start()
    try:
        create_model(kube, namespace, prior_rps=3, scale_down_window=30)
        load_once_ready(kube, box, namespace, 3)
        wait_status(
            kube,
            namespace,
            "a plan from metrics at 3 req/s",
            lambda s: (
                condition(s, "MetricsAvailable") == "True"
                and (s.get("demand") or {}).get("source") in ("metrics", "forecast")
                and 1 <= (s.get("desiredReplicas") or 0) < replicas_for(12)
            ),
            timeout=90,
        )
        seen = len(op.log.read_text().splitlines())
        time.sleep(12.0)  # six cycles at a steady load
        lines = op.log.read_text().splitlines()[seen:]
        counts = [(int(m[1]), int(m[2])) for m in map(CYCLE_STATUSES.search, lines) if m]
        written = sum(c[0] for c in counts)
        deferred = sum(c[1] for c in counts)
        assert len(counts) >= 4, lines
        # Each cycle reads new figures, so with --status-refresh 0 every cycle patches the
        # status (written == cycles, deferred == 0). Here most wait; a decision (a replica
        # of a start-up burst leaving, its pool's status) may still write one or two.
        assert deferred >= len(counts) // 2, (counts, lines)
        assert written <= len(counts) // 2, (counts, lines)

        # The plan covers 1-2 x 4 req/s; 12 req/s needs 3. The Deployments and the status
        # are written in the same cycle, so the status follows within a cycle or two.
        set_load(box, namespace, 12)
        deadline = time.monotonic() + 60
        while deployed_replicas(kube, namespace) < replicas_for(12):
            assert time.monotonic() < deadline, "no scale-up within 60 s of the step"
            time.sleep(0.5)
        applied = time.monotonic()
        wait_status(
            kube,
            namespace,
            "the scale-up in the status",
            lambda s: (s.get("desiredReplicas") or 0) >= replicas_for(12),
            timeout=10,
        )
        lag = time.monotonic() - applied
        print(f"status followed the Deployments {lag:.1f} s after the scale-up")
        assert lag < 10
    finally:
        op.stop()
        _infleet(box, "load", "clear", f"{namespace}/chat")
        print(op.log.read_text()[-6000:])


def test_prometheus_outage_holds_replicas_and_recovers(
    kube: Any, box: Any, namespace: str, operator: Operator
) -> None:
    # The prior (1 req/s: 1 replica) is below the measured load (6 req/s: 2 replicas), so a
    # fall back to the prior during the outage would scale down.
    # A 20 s window: the samples held during the outage keep the plan while the restarted
    # Prometheus' first rates (few scrapes in the window) read low.
    create_model(kube, namespace, prior_rps=1, scale_down_window=20)
    _infleet(box, "load", "set", f"{namespace}/chat", "--rps", "6",
             "--input-tokens", "512", "--output-tokens", "128")  # fmt: skip
    wait_status(
        kube,
        namespace,
        ">= 2 ready replicas planned from metrics",
        lambda s: (
            condition(s, "MetricsAvailable") == "True"
            and (s.get("desiredReplicas") or 0) >= 2
            and s.get("readyReplicas") == s.get("desiredReplicas")
        ),
        timeout=60,
    )
    try:
        _infleet(box, "stop", "prometheus")
        held = wait_status(
            kube,
            namespace,
            "MetricsAvailable=False",
            lambda s: condition(s, "MetricsAvailable") == "False",
            timeout=30,
        )
        # The count may follow the measured noise (2 or 3) until the outage; then it must not
        # move.
        count = held["desiredReplicas"]
        assert count >= 2
        for _ in range(10):
            st = status(kube, namespace)
            assert st["desiredReplicas"] == count
            assert condition(st, "MetricsAvailable") == "False"
            assert (st.get("observed") or {}).get("requestsPerSecond") is None
            assert deployed_replicas(kube, namespace) == count
            time.sleep(1.0)
    finally:
        _infleet(box, "start", "prometheus")
    back = wait_status(
        kube,
        namespace,
        "fresh metrics after Prometheus restarts",
        lambda s: (
            condition(s, "MetricsAvailable") == "True"
            and (s.get("observed") or {}).get("requestsPerSecond") is not None
        ),
        timeout=45,
    )
    assert back["desiredReplicas"] >= 2


# --- helpers of the tests below ------------------------------------------------------------


def calibration_factor(st: dict[str, Any]) -> float:
    """The variant's capacity factor in status (1.0 until one is written)."""
    factors = [float(c["factor"]) for c in st.get("calibration") or []]
    return min(factors) if factors else 1.0


class History:
    """The model's status polled once a second, kept so that a failure shows how it moved."""

    def __init__(self, kube: Any, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.start = time.monotonic()
        self.rows: list[tuple[float, dict[str, Any]]] = []

    def poll(self) -> dict[str, Any]:
        st = status(self.kube, self.namespace)
        self.rows.append((time.monotonic(), st))
        return st

    def since(self, start: float) -> list[tuple[float, dict[str, Any]]]:
        """Rows polled at or after ``start`` (a ``time.monotonic()`` value)."""
        return [(t, st) for t, st in self.rows if t >= start]

    def table(self) -> str:
        lines = []
        for t, st in self.rows[-90:]:
            demand = st.get("demand") or {}
            observed = st.get("observed") or {}
            lines.append(
                f"  t={t - self.start:6.1f}s desired={st.get('desiredReplicas')} "
                f"ready={st.get('readyReplicas')} demand={demand.get('requestsPerSecond')} "
                f"({demand.get('source')}) observed={observed.get('requestsPerSecond')} rps "
                f"ttft={observed.get('ttftMs')} tpot={observed.get('tpotMs')} ms "
                f"factor={calibration_factor(st):.3f} "
                f"metrics={condition(st, 'MetricsAvailable')} slo={condition(st, 'SLOMet')}"
                f" | {demand.get('explanation', '')}"
            )
        return "\n".join(lines)

    def wait(
        self, what: str, ok: Callable[[dict[str, Any]], bool], timeout: float
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            st = self.poll()
            if ok(st):
                return st
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}:\n{self.table()}")
            time.sleep(1.0)

    def fail(self, message: str) -> None:
        pytest.fail(f"{message}:\n{self.table()}")


def set_load(box: Any, namespace: str, rps: float, tokens: tuple[int, int] = (512, 128)) -> None:
    _infleet(box, "load", "set", f"{namespace}/chat", "--rps", f"{rps:g}",
             "--input-tokens", str(tokens[0]), "--output-tokens", str(tokens[1]))  # fmt: skip


def fresh(st: dict[str, Any]) -> bool:
    return condition(st, "MetricsAvailable") == "True" and (st.get("demand") or {}).get(
        "source"
    ) in ("metrics", "forecast")


def _instant(box: Any, query: str) -> float | None:
    from infleet.metrics.prometheus import PrometheusClient, finite

    prom = PrometheusClient(box.prometheus_url)
    try:
        return finite(prom.query_value(query))
    finally:
        prom.close()


def _engine_metrics(box: Any) -> str:
    port = int((box.dir / "engine" / "port").read_text())
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def _pod_times(pod: Any) -> tuple[datetime | None, datetime | None]:
    """``(startTime, Ready=True transition)`` of a pod (``None`` where not there yet)."""
    started = pod.status.start_time if pod.status else None
    ready = None
    for cond in (pod.status.conditions if pod.status else None) or []:
        if cond.type == "Ready" and cond.status == "True":
            ready = cond.last_transition_time
    return started, ready


# --- scale-down window --------------------------------------------------------------------

WINDOW = 36
"""Seconds of the scale-down stabilisation window in the test below."""


def test_load_drop_scales_down_only_after_the_window_on_its_peak(
    kube: Any, box: Any, namespace: str, operator: Operator
) -> None:
    # 10 req/s: 3 replicas (2.5 rounded up), so noise up to 12 req/s keeps 3.
    create_model(kube, namespace, prior_rps=10, scale_down_window=WINDOW)
    history = History(kube, namespace)
    history.wait("3 ready replicas from the prior", lambda s: s.get("readyReplicas") == 3, 40)
    set_load(box, namespace, 10)
    # Steady means the measured rate is the load's: the window's peak is then 10 req/s from
    # measurements (not the prior held while the first metrics came), up to the drop.
    history.wait(
        "3 ready replicas planned from metrics measuring ~10 req/s",
        lambda s: fresh(s)
        and s.get("desiredReplicas") == 3
        and s.get("readyReplicas") == 3
        and ((s.get("observed") or {}).get("requestsPerSecond") or 0) >= 8.5,
        timeout=75,
    )  # fmt: skip
    set_load(box, namespace, 2)  # 2 req/s: 1 replica
    dropped = time.monotonic()
    # Inside the window the plan stays on the window's peak although the measured rate falls.
    while time.monotonic() < dropped + WINDOW - 1:
        st = history.poll()
        if (st.get("desiredReplicas") or 0) < 3 or deployed_replicas(kube, namespace) < 3:
            history.fail(f"scaled down {time.monotonic() - dropped:.1f}s after the drop, "
                         f"inside the {WINDOW}s window")  # fmt: skip
        time.sleep(1.0)
    inside = history.since(dropped)
    assert any(
        (st.get("observed") or {}).get("requestsPerSecond") is not None
        and st["observed"]["requestsPerSecond"] < 4
        and st["demand"]["requestsPerSecond"] > 8
        for _, st in inside
    ), f"never planned the window's peak while observing the drop:\n{history.table()}"
    # After it, the samples of the old load age out and the plan falls to the new load.
    done = history.wait(
        "1 replica after the window",
        lambda s: fresh(s) and s.get("desiredReplicas") == 1,
        timeout=WINDOW + 45,
    )
    first_drop = next(t for t, st in history.since(dropped) if (st.get("desiredReplicas") or 0) < 3)
    assert first_drop - dropped >= WINDOW - 1, history.table()
    # The old load's samples (~10 req/s) aged out: the plan is the new load's window peak,
    # 2 req/s plus the window's noise. That peak reached 4.0 (exactly one replica's 5 req/s at
    # 0.8) in one CI run, so the bound sits between it and the old load, not at the threshold.
    assert done["demand"]["requestsPerSecond"] < 5, history.table()
    kube.wait_for(
        "the Deployment at 1 replica", lambda: deployed_replicas(kube, namespace) == 1, timeout=20
    )


# --- calibration against a slow pool ------------------------------------------------------


TPOT_SLO_MS = 50
SLOW_PROFILE = {
    "prefillTokensPerSecond": 10000,
    "decodeStepMs": {"base": 10, "perSequence": 1},
    "maxConcurrency": 64,
}
"""Decode step 10 + 1 ms per sequence: 40 sequences meet the 50 ms TPOT target, and a replica
sustains 6.2 req/s of 512/128 tokens (the capacity model's figure for this profile)."""


def test_slow_pool_is_derated_and_the_slo_recovers(
    kube: Any, box: Any, namespace: str, operator: Operator
) -> None:
    """The pool does 0.7x its profile, so the batch that meets the TPOT target shrinks from
    40 to 25 sequences. 7.5 req/s plans 2 replicas (60% of 2 x 6.2) whose true p95 inter-token
    latency is ~71 ms (engine simulation; 86% of their true saturation, so no queue), over the
    50 ms SLO while the plan claims headroom. Calibration must derate, and again once the first
    derate's fleet has settled (x0.85 plans 7.5 / 0.8 / 5.27 = 1.8, still 2; x0.7225 plans
    2.1), and so buy a third replica, with which the p95 is ~49 ms. The demand estimate stays
    7.5, so only the derates add the replica: the measured rate's noise (0.6 req/s over the
    20 s window) is 4 sigma from 9.9 req/s, where the profile alone would plan 3."""
    variant = {
        "acceleratorType": "nvidia-h100-80gb",
        "pools": ["e2e-h100"],
        "profile": SLOW_PROFILE,
        "startupSeconds": 2,
    }
    try:
        _infleet(box, "perf", "e2e-h100", "--factor", "0.7")
        create_model(
            kube,
            namespace,
            prior_rps=7.5,
            scale_down_window=30,
            slo={"timePerOutputTokenMs": TPOT_SLO_MS},
            variants=[variant],
        )
        history = History(kube, namespace)
        history.wait("2 ready replicas from the prior", lambda s: s.get("readyReplicas") == 2, 40)
        set_load(box, namespace, 7.5)
        history.wait(
            "the capacity factor to drop below 1 (derate)",
            lambda s: calibration_factor(s) < 1.0,
            timeout=100,
        )
        # The rows while the factor was still 1: the derate's own cycle may already plan 3
        # (x0.85 with a noisy short-window reading: CI once read 8.88 req/s, 2.1 replicas).
        before = [
            st.get("desiredReplicas") or 0
            for _, st in history.rows
            if calibration_factor(st) >= 1.0
        ]
        assert max(before) == 2, f"3 replicas before any derate:\n{history.table()}"
        grown = history.wait(
            ">= 3 replicas planned after the derate",
            lambda s: (s.get("desiredReplicas") or 0) >= 3 and calibration_factor(s) < 1.0,
            timeout=60,
        )
        assert grown["demand"]["requestsPerSecond"] < 9.9, history.table()
        recovered = history.wait(
            f"p95 TPOT back under {TPOT_SLO_MS} ms with the derated plan",
            lambda s: (
                condition(s, "SLOMet") == "True"
                and (s.get("observed") or {}).get("tpotMs") is not None
                and s["observed"]["tpotMs"] <= TPOT_SLO_MS
                and (s["observed"].get("requestsPerSecond") or 0) > 7.5 * 0.7
                and calibration_factor(s) < 1.0
                and (s.get("readyReplicas") or 0) >= 3
            ),
            timeout=90,
        )
        # The true factor is 0.7 and one replica more suffices: the learning must not spiral
        # on the breach still in the metrics window.
        assert calibration_factor(recovered) >= 0.6, history.table()
        assert recovered["desiredReplicas"] <= 4, history.table()
        print(f"factor {calibration_factor(recovered):.3f} at recovery\n{history.table()}")
    finally:
        _infleet(box, "perf", "e2e-h100", "--factor", "1")


# --- scale to zero and wake ---------------------------------------------------------------


def test_idle_model_scales_to_zero_and_its_wake_query_brings_it_back(
    kube: Any, box: Any, namespace: str, operator: Operator
) -> None:
    backlog = f'sum(infleet_sandbox_backlog_requests{{namespace="{namespace}",model="chat"}})'
    served = f'sum(vllm:request_success_total{{namespace="{namespace}"}})'
    create_model(
        kube,
        namespace,
        prior_rps=2,
        startup_seconds=6,
        replicas={"min": 0, "max": 4},
        scaleToZero={"enabled": True, "idleSeconds": 15, "wakeQuery": backlog},
    )
    set_load(box, namespace, 2)
    history = History(kube, namespace)
    history.wait(
        "1 ready replica serving 2 req/s",
        lambda s: fresh(s) and s.get("readyReplicas") == 1
        and ((s.get("observed") or {}).get("requestsPerSecond") or 0) > 1,
        timeout=60,
    )  # fmt: skip
    _infleet(box, "load", "clear", f"{namespace}/chat")
    cleared = time.monotonic()
    history.wait(
        "zero replicas after 15 s without traffic",
        lambda s: s.get("desiredReplicas") == 0,
        timeout=75,
    )
    # The rate over the 20 s window reaches 0 some seconds after the load stops; then 15 s idle.
    assert time.monotonic() - cleared >= 15, history.table()
    # The cycle that goes to zero still read fresh engine metrics; the next ones say why.
    history.wait(
        "MetricsAvailable reason ScaledToZero",
        lambda s: s.get("desiredReplicas") == 0
        and any(
            c["type"] == "MetricsAvailable" and c["reason"] == "ScaledToZero"
            for c in s.get("conditions") or []
        ),
        timeout=15,
    )  # fmt: skip
    kube.wait_for("no pods left", lambda: not kube.pods(namespace, "infleet.io/model=chat"), 30)
    assert deployed_replicas(kube, namespace) == 0
    # Stays at zero while nothing arrives.
    for _ in range(6):
        if history.poll().get("desiredReplicas") != 0:
            history.fail("woke up without traffic")
        time.sleep(1.0)

    set_load(box, namespace, 3)
    woken_at = time.monotonic()
    history.wait(
        "the wake query to bring a replica back",
        lambda s: (s.get("desiredReplicas") or 0) >= 1,
        timeout=30,
    )
    pod = kube.wait_for(
        "the new pod Running", lambda: next(iter(
            p for p in kube.pods(namespace, "infleet.io/model=chat")
            if p.status and p.status.phase == "Running"), None), timeout=30,
    )  # fmt: skip
    # Until the pod is Ready nothing is served: requests wait in the model's backlog.
    name = pod.metadata.name
    started, ready = _pod_times(pod)
    assert started is not None
    if ready is None:
        metrics = _engine_metrics(box)
        assert f'pod="{name}"' not in metrics, "the engine serves a pod that is not Ready"
    first = history.wait(
        "requests served after the wake",
        lambda s: ((s.get("observed") or {}).get("requestsPerSecond") or 0) > 0
        and s.get("readyReplicas", 0) >= 1,
        timeout=60,
    )  # fmt: skip
    assert first["desiredReplicas"] >= 1
    pod = kube.core.read_namespaced_pod(name, namespace)
    started, ready = _pod_times(pod)
    assert started is not None
    assert ready is not None
    assert (ready - started).total_seconds() >= 5, f"Ready {ready} only {started} + <6 s"
    # The requests held while the model was at zero were served, then the backlog emptied.
    kube.wait_for(
        "the backlog drained",
        lambda: _instant(box, backlog) == 0 and (_instant(box, served) or 0) > 0,
        timeout=30,
    )
    assert time.monotonic() - woken_at < 90


# --- trace replay -------------------------------------------------------------------------


def _trace_means(path: Path) -> tuple[int, int]:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    mean_in = sum(int(r["ContextTokens"]) for r in rows) / len(rows)
    mean_out = sum(int(r["GeneratedTokens"]) for r in rows) / len(rows)
    return round(mean_in), round(mean_out)


def test_step_trace_replay_moves_replicas_up_and_down(
    kube: Any, box: Any, namespace: str, operator: Operator
) -> None:
    """The committed trace: ~3 req/s (1 replica), ~12 req/s for 45 s (3 replicas), ~3 req/s."""
    mean_in, mean_out = _trace_means(STEP_TRACE)
    create_model(
        kube,
        namespace,
        prior_rps=1,
        scale_down_window=15,
        traffic={"requestsPerSecond": 1, "meanInputTokens": mean_in, "meanOutputTokens": mean_out},
    )
    history = History(kube, namespace)
    history.wait("1 ready replica from the prior", lambda s: s.get("readyReplicas") == 1, 40)
    out = _infleet(box, "load", "replay", f"{namespace}/chat", "--trace", str(STEP_TRACE),
                   "--speedup", "1", "--scale", "1")  # fmt: skip
    assert "replaying 719 requests" in out
    started = time.monotonic()
    # The quiet part plans one replica. The load's onset may briefly plan a second: for a
    # service time nothing completes while requests arrive, and the in-flight count's growth
    # is counted once it clears its noise; the 15 s scale-down window then keeps that peak.
    settled = history.wait(
        "1 replica planned from fresh metrics in the trace's first, quiet part",
        lambda s: fresh(s)
        and ((s.get("observed") or {}).get("requestsPerSecond") or 0) > 1.5
        and s.get("desiredReplicas") == 1,
        timeout=38,
    )  # fmt: skip
    quiet = [st.get("desiredReplicas") or 0 for _, st in history.since(started)]
    assert max(quiet) <= 2, history.table()
    # The status says how the figure was reached, as `infleet run -v` logs it.
    assert settled["demand"]["explanation"].startswith("observed "), history.table()
    high = history.wait(
        ">= 3 replicas in the busy part (~12 req/s)",
        lambda s: fresh(s) and (s.get("desiredReplicas") or 0) >= replicas_for(11),
        timeout=max(10.0, 85 - (time.monotonic() - started)),
    )
    assert time.monotonic() - started > 40, "scaled up before the trace's busy part"
    assert high["demand"]["source"] in ("metrics", "forecast")
    assert high["desiredReplicas"] <= replicas_for(14) + 1, history.table()
    history.wait(
        "back to 1 replica after the busy part",
        lambda s: fresh(s) and s.get("desiredReplicas") == 1,
        timeout=max(10.0, 140 - (time.monotonic() - started)),
    )


def test_azure_trace_replay_end_to_end(
    kube: Any, box: Any, namespace: str, operator: Operator
) -> None:
    """The Azure LLM conversation trace, 10x faster at 0.15 of its rate: ~7.5 req/s, moving
    between ~5 and ~9 in 10 s buckets, so 2-3 replicas of 5 req/s each."""
    if not AZURE_TRACE.exists():
        pytest.skip(f"the Azure trace is not at {AZURE_TRACE} (only in the project's shared "
                    "data, not in a clone); the committed step trace covers replay")  # fmt: skip
    from infleet.sandbox.load_trace import read_trace

    mean_in, mean_out = _trace_means(AZURE_TRACE)
    rows = read_trace(AZURE_TRACE, speedup=10, scale=0.15)
    create_model(
        kube,
        namespace,
        prior_rps=1,
        scale_down_window=20,
        traffic={"requestsPerSecond": 1, "meanInputTokens": mean_in, "meanOutputTokens": mean_out},
    )
    history = History(kube, namespace)
    history.wait("1 ready replica from the prior", lambda s: s.get("readyReplicas") == 1, 40)
    _infleet(box, "load", "replay", f"{namespace}/chat", "--trace", str(AZURE_TRACE),
             "--speedup", "10", "--scale", "0.15")  # fmt: skip
    started = time.monotonic()
    busy = history.wait(
        "replicas following the trace (>= 2) with demand from metrics",
        lambda s: fresh(s)
        and (s.get("desiredReplicas") or 0) >= 2
        and ((s.get("observed") or {}).get("requestsPerSecond") or 0) > 3,
        timeout=60,
    )  # fmt: skip
    assert busy["demand"]["source"] in ("metrics", "forecast")
    # Over the next 30 s the observed rate stays within the trace's own 20 s rates.
    while time.monotonic() < started + 70:
        history.poll()
        time.sleep(1.0)
    elapsed = time.monotonic() - started
    windows = [
        sum(1 for at, _, _ in rows if a <= at < a + 20) / 20 for a in range(0, int(elapsed), 5)
    ]
    observed = [
        st["observed"]["requestsPerSecond"]
        for t, st in history.since(started + 30)
        if fresh(st) and (st.get("observed") or {}).get("requestsPerSecond") is not None
    ]
    assert observed, history.table()
    assert min(windows) * 0.6 <= min(observed), (windows, history.table())
    assert max(observed) <= max(windows) * 1.4, (windows, history.table())
    final = history.rows[-1][1]
    assert (final.get("desiredReplicas") or 0) >= replicas_for(min(windows)), history.table()
    assert (final.get("desiredReplicas") or 0) <= 8


# --- pod readiness after startupSeconds ---------------------------------------------------


def test_model_pods_become_ready_only_after_their_startup_seconds(
    kube: Any, box: Any, namespace: str, operator: Operator
) -> None:
    create_model(kube, namespace, prior_rps=1, startup_seconds=8)
    set_load(box, namespace, 1)
    pod = kube.wait_for(
        "the model's pod Running", lambda: next(iter(
            p for p in kube.pods(namespace, "infleet.io/model=chat")
            if p.status and p.status.phase == "Running"), None), timeout=40,
    )  # fmt: skip
    name = pod.metadata.name
    assert pod.metadata.annotations["infleet.io/startup-seconds"] == "8"
    started, ready = _pod_times(pod)
    assert started is not None
    assert ready is None, "Ready at once although startupSeconds is 8"
    # Not Ready and not served while starting: the engine has no series for it.
    assert f'pod="{name}"' not in _engine_metrics(box)
    st = status(kube, namespace)
    assert (st.get("readyReplicas") or 0) == 0

    def ready_pod() -> Any:
        p = kube.core.read_namespaced_pod(name, namespace)
        return p if _pod_times(p)[1] is not None else None

    pod = kube.wait_for("the pod Ready", ready_pod, timeout=40)
    started, ready = _pod_times(pod)
    assert started is not None
    assert ready is not None
    # Timestamps have whole seconds: 8 s can read as 7.
    assert (ready - started).total_seconds() >= 7, f"Ready at {ready}, started at {started}"
    kube.wait_for(
        "the engine serving the Ready pod",
        lambda: f'pod="{name}"' in _engine_metrics(box),
        timeout=10,
    )  # fmt: skip
    history = History(kube, namespace)
    history.wait("readyReplicas 1 in status", lambda s: s.get("readyReplicas") == 1, timeout=20)
