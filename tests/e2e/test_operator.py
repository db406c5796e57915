"""The operator on a real API server: `infleet run` in a subprocess, one namespace per test.

Short intervals make each test take seconds: kwok marks pods Ready about a second after they
are scheduled. Every model restricts its variants to one of the e2e pools (tests/e2e/pools).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.e2e

REPO = Path(__file__).parents[2]
GROUP, VERSION = "infleet.io", "v1alpha1"


def model(
    name: str,
    *,
    pool: str,
    accelerator: str = "nvidia-h100-80gb",
    rps: float = 16.0,
    capacity: float = 10.0,
    mode: str = "Apply",
    per_replica: int = 1,
) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": f"org/{name}",
            "slo": {"timeToFirstTokenMs": 800},
            "mode": mode,
            "traffic": {"requestsPerSecond": rps},
            "variants": [
                {
                    "acceleratorType": accelerator,
                    "pools": [pool],
                    "acceleratorsPerReplica": per_replica,
                    "maxRequestsPerSecond": capacity,
                }
            ],
            "template": {
                "spec": {"containers": [{"name": "server", "image": "registry.invalid/llm:1"}]}
            },
        },
    }


class Operator:
    """`infleet run` as a child process, scoped to one namespace."""

    def __init__(self, kubeconfig: Path, namespace: str, log: Path) -> None:
        self.args = [
            sys.executable, "-m", "infleet.cli", "run",
            "--kubeconfig", str(kubeconfig), "-n", namespace,
            "--interval", "2", "--debounce", "0.2", "--pending-grace", "3",
            "--metrics-port", "0",
        ]  # fmt: skip
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log.open("ab") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT, env=env)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@pytest.fixture(scope="module")
def pools(cluster: Any) -> None:
    """The e2e pools as AcceleratorPool objects (the sandbox made their nodes)."""
    subprocess.run(
        [cluster.kubectl, "--kubeconfig", str(cluster.kubeconfig), "apply", "--server-side",
         "-f", str(REPO / "tests/e2e/pools")],
        check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.fixture
def operator(cluster: Any, pools: None, namespace: str, tmp_path: Path) -> Iterator[Operator]:
    op = Operator(cluster.kubeconfig, namespace, tmp_path / "operator.log")
    op.start()
    yield op
    op.stop()
    print(op.log.read_text()[-4000:])


@pytest.fixture
def custom(kube: Any) -> Any:
    from kubernetes import client

    return client.CustomObjectsApi(kube.api)


def apply(custom: Any, namespace: str, body: dict[str, Any]) -> None:
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", body)


def get_model(custom: Any, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "modeldeployments", name
    )
    return obj


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return {}


def placements(obj: dict[str, Any]) -> dict[tuple[str, str], int]:
    return {
        (p["variant"], p["pool"]): p["desiredReplicas"]
        for p in (obj.get("status") or {}).get("placements") or []
        if p["desiredReplicas"] > 0
    }


def deployments(kube: Any, namespace: str) -> dict[str, Any]:
    items = kube.apps.list_namespaced_deployment(
        namespace, label_selector="app.kubernetes.io/managed-by=infleet"
    ).items
    return {d.metadata.name: d for d in items}


def wait_ready(kube: Any, custom: Any, namespace: str, name: str, timeout: float = 60) -> Any:
    def probe() -> dict[str, Any] | None:
        obj = get_model(custom, namespace, name)
        status = obj.get("status") or {}
        ok = condition(obj, "Ready").get("status") == "True" and status.get("desiredReplicas")
        return obj if ok else None

    return kube.wait_for(f"{namespace}/{name} Ready", probe, timeout=timeout)


def test_places_models_on_their_pools_like_infleet_plan(
    kube: Any, custom: Any, namespace: str, operator: Operator, tmp_path: Path
) -> None:
    models = [
        model("chat", pool="e2e-h100", rps=16, capacity=10),  # 20 req/s needed: 2 replicas
        model("small", pool="e2e-l4", accelerator="nvidia-l4", rps=3, capacity=2),  # 3.75: 2
        model("batch", pool="e2e-h100-spot", rps=4, capacity=10, per_replica=2),  # 1 replica
    ]
    for body in models:
        apply(custom, namespace, body)
    objs = {
        m["metadata"]["name"]: wait_ready(kube, custom, namespace, m["metadata"]["name"])
        for m in models
    }

    # The same manifests through `infleet plan` give the same placements.
    manifest = tmp_path / "models.yaml"
    docs = [{**m, "metadata": {**m["metadata"], "namespace": namespace}} for m in models]
    manifest.write_text(yaml.safe_dump_all(docs))
    out = subprocess.run(
        [sys.executable, "-m", "infleet.cli", "plan", "-o", "json",
         "-f", str(REPO / "tests/e2e/pools"), "-f", str(manifest)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    offline: dict[str, dict[tuple[str, str], int]] = {}
    for p in json.loads(out)["placements"]:
        offline.setdefault(p["model"], {})[(p["variant"], p["pool"])] = p["replicas"]
    assert {name: placements(obj) for name, obj in objs.items()} == offline
    assert offline["chat"] == {("nvidia-h100-80gb", "e2e-h100"): 2}

    live = deployments(kube, namespace)
    batch = live["batch-nvidia-h100-80gb-e2e-h100-spot"]
    pod_spec = batch.spec.template.spec
    assert pod_spec.node_selector == {"infleet.io/e2e-pool": "h100-spot"}
    assert any(
        t.key == "infleet.io/capacity-type" and t.value == "spot" for t in pod_spec.tolerations
    )
    assert pod_spec.containers[0].resources.limits == {"nvidia.com/gpu": "2"}
    assert batch.metadata.owner_references[0].kind == "ModelDeployment"
    # Ready pods sit on nodes of the right pool.
    pods = kube.pods(namespace, "infleet.io/model=chat")
    assert len(pods) == 2
    for p in pods:
        assert kube.node_labels(p.spec.node_name)["infleet.io/e2e-pool"] == "h100"
    assert kube.core.read_namespaced_service("chat", namespace).spec.selector == {
        "app.kubernetes.io/managed-by": "infleet",
        "infleet.io/model": "chat",
    }
    events = [e.message for e in kube.events_for(namespace, "chat")]
    assert any(m.startswith("placed 2 on e2e-h100") for m in events), events


def test_traffic_change_and_restart_without_churn(
    kube: Any, custom: Any, namespace: str, operator: Operator
) -> None:
    apply(custom, namespace, model("chat", pool="e2e-h100", rps=8, capacity=10))  # 10: 1 replica
    wait_ready(kube, custom, namespace, "chat")
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "modeldeployments", "chat",
        {"spec": {"traffic": {"requestsPerSecond": 30}}},  # 37.5 req/s: 4 replicas
    )  # fmt: skip
    kube.wait_for(
        "4 replicas",
        lambda: (
            (d := deployments(kube, namespace).get("chat-nvidia-h100-80gb-e2e-h100"))
            and d.spec.replicas == 4
        ),
        timeout=30,
    )
    obj = wait_ready(kube, custom, namespace, "chat")
    assert obj["status"]["readyReplicas"] == 4

    # Restart: same plan, no Deployment or status rewrite.
    before = {n: d.metadata.resource_version for n, d in deployments(kube, namespace).items()}
    status_version = get_model(custom, namespace, "chat")["metadata"]["resourceVersion"]
    operator.stop()
    operator.start()
    time.sleep(8)  # start-up plus several 2 s cycles
    after = {n: d.metadata.resource_version for n, d in deployments(kube, namespace).items()}
    assert after == before
    assert get_model(custom, namespace, "chat")["metadata"]["resourceVersion"] == status_version


def test_advise_mode_writes_status_only(
    kube: Any, custom: Any, namespace: str, operator: Operator
) -> None:
    apply(custom, namespace, model("advised", pool="e2e-h100", rps=16, mode="Advise"))

    def advised() -> dict[str, Any] | None:
        obj = get_model(custom, namespace, "advised")
        return obj if placements(obj) else None

    obj = kube.wait_for("advice in status", advised, timeout=30)
    assert placements(obj) == {("nvidia-h100-80gb", "e2e-h100"): 2}
    assert condition(obj, "Ready")["reason"] == "AdviseOnly"
    time.sleep(3)
    assert deployments(kube, namespace) == {}


def test_impossible_model_is_not_scheduled_while_others_run(
    kube: Any, custom: Any, namespace: str, operator: Operator
) -> None:
    apply(
        custom, namespace, model("fine", pool="e2e-l4", accelerator="nvidia-l4", rps=1, capacity=2)
    )
    apply(custom, namespace, model("nowhere", pool="no-such-pool", accelerator="tpu-v9", rps=5))
    wait_ready(kube, custom, namespace, "fine")

    def scheduled_false() -> dict[str, Any] | None:
        cond = condition(get_model(custom, namespace, "nowhere"), "Scheduled")
        return cond if cond.get("status") == "False" else None

    cond = kube.wait_for("Scheduled=False", scheduled_false, timeout=30)
    assert cond["reason"] in {"NoMatchingPool", "Infeasible"}
    assert "cannot be placed" in cond["message"]


def test_bad_model_is_rejected_by_the_api_server(
    cluster: Any, namespace: str, tmp_path: Path
) -> None:
    bad = model("bad", pool="e2e-h100")
    bad["spec"]["slo"] = {}
    bad["spec"]["replicas"] = {"min": 5, "max": 2}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    result = subprocess.run(
        [cluster.kubectl, "--kubeconfig", str(cluster.kubeconfig), "-n", namespace,
         "apply", "-f", str(path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode != 0
    assert "timeToFirstTokenMs" in result.stderr
    assert "min must be <= max" in result.stderr


def test_cordoned_pool_spills_by_priority(
    kube: Any, custom: Any, namespace: str, operator: Operator
) -> None:
    """Cordoning one of the pool's two nodes leaves 8 accelerators: high keeps its 5, low
    gets the 3 left and reports the shortage."""
    high = model("high", pool="e2e-h100", rps=8, capacity=2)
    low = model("low", pool="e2e-h100", rps=8, capacity=2)
    high["spec"]["priority"] = 10
    apply(custom, namespace, high)  # 10 req/s: 5 replicas
    apply(custom, namespace, low)  # 5 replicas too: 10 of the pool's 16 accelerators
    wait_ready(kube, custom, namespace, "high")
    wait_ready(kube, custom, namespace, "low")
    nodes = [
        n.metadata.name
        for n in kube.core.list_node(label_selector="infleet.io/e2e-pool=h100").items
    ]
    cordoned = nodes[: max(1, len(nodes) // 2)]

    def patch(flag: bool) -> None:
        for name in cordoned:
            kube.core.patch_node(name, {"spec": {"unschedulable": flag}})

    try:
        patch(True)

        def shrunk() -> dict[str, Any] | None:
            obj = get_model(custom, namespace, "low")
            return obj if condition(obj, "Scheduled").get("status") == "False" else None

        low_obj = kube.wait_for("low priority gives way", shrunk, timeout=30)
        assert condition(low_obj, "Scheduled")["reason"] == "CapacityShortage"
        high_obj = get_model(custom, namespace, "high")
        assert condition(high_obj, "Scheduled")["status"] == "True"
    finally:
        patch(False)
