"""The operator on a real API server: `infleet run` in a subprocess, one namespace per test.

Short intervals make each test take seconds: kwok marks pods Ready about a second after they
are scheduled. Every model restricts its variants to one of the e2e pools (tests/e2e/pools).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_process import Operator

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


@pytest.fixture
def operator(cluster: Any, pools: None, namespace: str, tmp_path: Path) -> Iterator[Operator]:
    op = Operator(cluster.kubeconfig, namespace, tmp_path / "operator.log")
    op.start()
    yield op
    op.stop()
    print(op.log.read_text()[-4000:])


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
    # A 10 ms TPOT SLO on an engine whose decode step alone takes 40 ms: no variant can meet it.
    slow = model("slow", pool="e2e-l4", accelerator="nvidia-l4", rps=2)
    slow["spec"]["slo"] = {"timePerOutputTokenMs": 10}
    slow["spec"]["variants"][0].pop("maxRequestsPerSecond")
    slow["spec"]["variants"][0]["profile"] = {
        "prefillTokensPerSecond": 5000,
        "decodeStepMs": {"base": 40, "perSequence": 1},
        "maxConcurrency": 16,
    }
    apply(custom, namespace, slow)
    wait_ready(kube, custom, namespace, "fine")

    def scheduled_false() -> dict[str, Any] | None:
        cond = condition(get_model(custom, namespace, "nowhere"), "Scheduled")
        return cond if cond.get("status") == "False" else None

    cond = kube.wait_for("Scheduled=False", scheduled_false, timeout=30)
    assert cond["reason"] in {"NoMatchingPool", "Infeasible"}
    assert "cannot be placed" in cond["message"]
    slow_cond = condition(get_model(custom, namespace, "slow"), "Scheduled")
    assert (slow_cond["status"], slow_cond["reason"]) == ("False", "Infeasible")
    assert "latency SLO" in slow_cond["message"]
    assert set(deployments(kube, namespace)) == {"fine-nvidia-l4-e2e-l4"}


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


# --- Reacting to the cluster: pools and nodes of a test's own --------------------------------


class PrivatePools:
    """AcceleratorPools with kwok nodes of their own (built like the sandbox builds its nodes),
    so a test may taint, delete or remove them without touching the shared e2e pools."""

    def __init__(self, kube: Any, custom: Any, tag: str) -> None:
        self.kube, self.custom, self.tag = kube, custom, tag
        self.pools: list[str] = []
        self.nodes: list[str] = []

    def add(self, suffix: str, *, nodes: int, per_node: int, cost: float) -> str:
        from infleet.api import AcceleratorPool
        from infleet.sandbox.nodes import pool_nodes

        name = f"{self.tag}-{suffix}"
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "AcceleratorPool",
            "metadata": {"name": name},
            "spec": {
                "acceleratorType": "nvidia-a100-80gb",
                "acceleratorsPerNode": per_node,
                "nodeSelector": {"infleet.io/e2e-pool": name},
                "costPerAcceleratorHour": cost,
                "maxAccelerators": nodes * per_node,
            },
        }
        self.custom.create_cluster_custom_object(GROUP, VERSION, "acceleratorpools", body)
        self.pools.append(name)
        for node in pool_nodes(AcceleratorPool.model_validate(body)):
            self.kube.core.create_node(node)
            self.nodes.append(node["metadata"]["name"])
        self.kube.wait_for(f"nodes of {name} Ready", lambda: self._ready(name), timeout=60)
        return name

    def _ready(self, pool: str) -> bool:
        items = self.kube.core.list_node(label_selector=f"infleet.io/e2e-pool={pool}").items
        return bool(items) and all(
            any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
            for n in items
        )

    def node_names(self, pool: str) -> list[str]:
        items = self.kube.core.list_node(label_selector=f"infleet.io/e2e-pool={pool}").items
        return sorted(n.metadata.name for n in items)

    def delete_pool(self, name: str) -> None:
        self.custom.delete_cluster_custom_object(GROUP, VERSION, "acceleratorpools", name)

    def cleanup(self) -> None:
        from kubernetes.client.exceptions import ApiException

        for name in self.pools:
            try:
                self.delete_pool(name)
            except ApiException as exc:
                if exc.status != 404:
                    raise
        for node in self.nodes:
            try:
                self.kube.core.delete_node(node)
            except ApiException as exc:
                if exc.status != 404:
                    raise


@pytest.fixture
def private(kube: Any, custom: Any, cluster: Any, namespace: str) -> Iterator[PrivatePools]:
    if cluster.sandbox_dir is None:
        pytest.skip("needs kwok nodes: runs on the infleet sandbox only")
    pools = PrivatePools(kube, custom, f"p{namespace[-6:]}")
    yield pools
    pools.cleanup()


def a100(name: str, pools: list[str], *, rps: float, capacity: float) -> dict[str, Any]:
    body = model(name, pool=pools[0], accelerator="nvidia-a100-80gb", rps=rps, capacity=capacity)
    body["spec"]["variants"][0]["pools"] = pools
    return body


def live_placements(kube: Any, namespace: str) -> dict[str, tuple[str, int]]:
    """Deployment name -> (pool, replicas) for infleet's Deployments of the namespace."""
    return {
        name: (d.metadata.labels["infleet.io/pool"], d.spec.replicas)
        for name, d in deployments(kube, namespace).items()
    }


def test_unschedulable_replicas_spill_to_another_pool(
    kube: Any, custom: Any, namespace: str, operator: Operator, private: PrivatePools
) -> None:
    """The cheap pool's only node is tainted (a failing GPU, say): the operator still counts its
    accelerators, so it places there; the pods stay Pending as Unschedulable and, after the
    3 s grace period, the model moves to the dearer pool and stays there."""
    cheap = private.add("cheap", nodes=1, per_node=8, cost=0.5)
    dear = private.add("dear", nodes=1, per_node=8, cost=1.0)
    for node in private.node_names(cheap):
        taint = {"key": "e2e.infleet.io/broken", "value": "gpu", "effect": "NoSchedule"}
        kube.core.patch_node(node, {"spec": {"taints": [taint]}})
    apply(custom, namespace, a100("chat", [cheap, dear], rps=4, capacity=4))  # 5 req/s: 2

    seen: set[str] = set()

    def spilled() -> dict[str, Any] | None:
        obj = get_model(custom, namespace, "chat")
        if placements(obj) == {("nvidia-a100-80gb", cheap): 2}:
            seen.add("placed on cheap")
        for pod in kube.pods(namespace, f"infleet.io/pool={cheap}"):
            if any(c.reason == "Unschedulable" for c in pod.status.conditions or []):
                seen.add("unschedulable")
        ready = condition(obj, "Ready").get("status") == "True"
        return obj if ready and placements(obj) == {("nvidia-a100-80gb", dear): 2} else None

    obj = kube.wait_for("spill to the dear pool", spilled, timeout=60, interval=0.3)
    assert seen == {"placed on cheap", "unschedulable"}
    assert obj["status"]["readyReplicas"] == 2
    kube.wait_for(
        "the cheap pool's Deployment removed",
        lambda: {p for p, _ in live_placements(kube, namespace).values()} == {dear},
        timeout=30,
    )
    for p in kube.pods(namespace, "infleet.io/model=chat"):
        if p.metadata.deletion_timestamp is None:
            assert kube.node_labels(p.spec.node_name)["infleet.io/e2e-pool"] == dear
    # The reduced capacity is held: several cycles later the model has not moved back.
    time.sleep(6)
    assert live_placements(kube, namespace) == {
        f"chat-nvidia-a100-80gb-{dear}": (dear, 2),
    }


def test_deleted_node_shrinks_the_pool_and_lower_priority_gives_way(
    kube: Any, custom: Any, namespace: str, operator: Operator, private: PrivatePools
) -> None:
    pool = private.add("shrink", nodes=2, per_node=4, cost=1.0)
    high = a100("high", [pool], rps=6, capacity=2)  # 7.5 req/s: 4 replicas
    low = a100("low", [pool], rps=6, capacity=2)
    high["spec"]["priority"] = 10
    apply(custom, namespace, high)
    apply(custom, namespace, low)
    wait_ready(kube, custom, namespace, "high")
    wait_ready(kube, custom, namespace, "low")

    kube.core.delete_node(private.node_names(pool)[0])

    def low_gave_way() -> dict[str, Any] | None:
        obj = get_model(custom, namespace, "low")
        return obj if condition(obj, "Scheduled").get("status") == "False" else None

    low_obj = kube.wait_for("low priority gives way", low_gave_way, timeout=30)
    assert condition(low_obj, "Scheduled")["reason"] == "CapacityShortage"
    assert placements(low_obj) == {}
    high_obj = get_model(custom, namespace, "high")
    assert condition(high_obj, "Scheduled")["status"] == "True"
    assert placements(high_obj) == {("nvidia-a100-80gb", pool): 4}
    kube.wait_for(
        "only high's Deployment left",
        lambda: live_placements(kube, namespace) == {f"high-nvidia-a100-80gb-{pool}": (pool, 4)},
        timeout=30,
    )
    pool_status = custom.get_cluster_custom_object(GROUP, VERSION, "acceleratorpools", pool)
    assert pool_status["status"]["nodes"] == 1
    assert pool_status["status"]["allocatableAccelerators"] == 4


def test_deleted_pool_moves_its_models_elsewhere(
    kube: Any, custom: Any, namespace: str, operator: Operator, private: PrivatePools
) -> None:
    cheap = private.add("going", nodes=1, per_node=8, cost=0.5)
    dear = private.add("staying", nodes=1, per_node=8, cost=1.0)
    apply(custom, namespace, a100("chat", [cheap, dear], rps=8, capacity=4))  # 10 req/s: 3
    obj = wait_ready(kube, custom, namespace, "chat")
    assert placements(obj) == {("nvidia-a100-80gb", cheap): 3}

    private.delete_pool(cheap)
    kube.wait_for(
        "the model on the remaining pool, Ready",
        lambda: (
            placements(o := get_model(custom, namespace, "chat")) == {("nvidia-a100-80gb", dear): 3}
            and condition(o, "Ready").get("status") == "True"
        ),
        timeout=60,
    )
    kube.wait_for(
        "the deleted pool's Deployment removed",
        lambda: live_placements(kube, namespace) == {f"chat-nvidia-a100-80gb-{dear}": (dear, 3)},
        timeout=30,
    )


def test_deleted_model_is_garbage_collected_and_foreign_lookalikes_survive(
    kube: Any, custom: Any, namespace: str, operator: Operator, make_deployment: Any
) -> None:
    from infleet.core.children import MODEL_ANNOTATION, POOL_ANNOTATION, VARIANT_ANNOTATION

    apply(
        custom, namespace, model("chat", pool="e2e-l4", accelerator="nvidia-l4", rps=1, capacity=2)
    )
    wait_ready(kube, custom, namespace, "chat")
    # Same labels and annotations as infleet's own, but no ModelDeployment owner: not ours.
    lookalike = make_deployment(
        "chat-by-hand", 0, "nvidia.com/gpu", 1, {"infleet.io/e2e-pool": "l4"}
    )
    labels = {
        "app.kubernetes.io/managed-by": "infleet",
        "infleet.io/model": "chat",
        "infleet.io/variant": "nvidia-l4",
        "infleet.io/pool": "e2e-l4",
    }
    lookalike["metadata"]["labels"].update(labels)
    lookalike["metadata"]["annotations"] = {
        MODEL_ANNOTATION: "chat",
        VARIANT_ANNOTATION: "nvidia-l4",
        POOL_ANNOTATION: "e2e-l4",
    }
    kube.apps.create_namespaced_deployment(namespace, lookalike)
    owned = set(deployments(kube, namespace)) - {"chat-by-hand"}
    assert owned == {"chat-nvidia-l4-e2e-l4"}

    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", "chat")
    kube.wait_for(
        "the model's Deployment garbage-collected",
        lambda: set(deployments(kube, namespace)) == {"chat-by-hand"},
        timeout=60,
    )

    def service_gone() -> bool:
        return not kube.core.list_namespaced_service(namespace).items

    kube.wait_for("the model's Service garbage-collected", service_gone, timeout=60)
    time.sleep(5)  # two more fleet cycles see the look-alike
    assert set(deployments(kube, namespace)) == {"chat-by-hand"}
    assert (
        kube.apps.read_namespaced_deployment("chat-by-hand", namespace).metadata.labels[
            "app.kubernetes.io/managed-by"
        ]
        == "infleet"
    )


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_operator_metrics_and_healthz(
    kube: Any, custom: Any, cluster: Any, pools: None, namespace: str, tmp_path: Path
) -> None:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    port = _free_port()
    op = Operator(cluster.kubeconfig, namespace, tmp_path / "operator.log", metrics_port=port)
    op.start()
    try:
        apply(custom, namespace, model("chat", pool="e2e-h100", rps=16, capacity=10))  # 2
        apply(custom, namespace, model("nowhere", pool="no-such-pool", accelerator="tpu-v9"))
        wait_ready(kube, custom, namespace, "chat")

        def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            except httpx.HTTPError:
                return {}
            return {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
            }

        chat = (("model", "chat"), ("namespace", namespace), ("pool", "e2e-h100"))

        def converged() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
            samples = scrape()
            return samples if samples.get(("infleet_ready_replicas", chat)) == 2 else None

        samples = kube.wait_for("ready replicas in /metrics", converged, timeout=30)
        assert samples[("infleet_desired_replicas", chat)] == 2
        assert samples[("infleet_fleet_cost_per_hour", ())] == 6.0  # 2 x 1 H100 x $3
        assert samples[("infleet_fleet_cycle_seconds_count", ())] >= 1
        assert samples[("infleet_planner_seconds_count", ())] >= 1
        assert samples[("infleet_last_cycle_timestamp_seconds", ())] > time.time() - 60
        nowhere = (("model", "nowhere"), ("namespace", namespace))
        assert samples[("infleet_unmet_requests_per_second", nowhere)] == 20.0  # 16 / 0.8
        unmet_chat = samples[("infleet_unmet_requests_per_second", chat[:2])]
        assert unmet_chat == 0
        for stage in ("cycle", "apply", "delete", "status"):
            assert samples[("infleet_reconcile_errors_total", (("stage", stage),))] == 0
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert health.status_code == 200
    finally:
        op.stop()
        print(op.log.read_text()[-4000:])


def test_examples_apply_like_infleet_plan(
    kube: Any, custom: Any, cluster: Any, tmp_path: Path
) -> None:
    """`examples/` as a user applies it: the pools (with kwok nodes built the way `infleet
    sandbox up --pools examples/` builds them) and the models in namespace `llm`. The operator
    places them exactly like `infleet plan -f examples/`, with the pools' selectors,
    tolerations and accelerator resources, and every pod Ready on its pool's nodes."""
    from kubernetes.client import V1Namespace, V1ObjectMeta
    from kubernetes.client.exceptions import ApiException

    from infleet.api.manifests import load_manifests
    from infleet.sandbox.nodes import all_nodes

    if cluster.sandbox_dir is None:
        pytest.skip("needs kwok nodes for examples' pools: runs on the infleet sandbox only")
    examples = REPO / "examples"
    loaded = load_manifests([examples])
    assert loaded.ok, loaded.errors
    pool_objs = loaded.pools
    by_name = {p.metadata.name: p for p in pool_objs}
    nodes = all_nodes(pool_objs)
    kubectl = [cluster.kubectl, "--kubeconfig", str(cluster.kubeconfig)]
    op = Operator(cluster.kubeconfig, "llm", tmp_path / "operator.log")
    try:
        for node in nodes:
            try:
                kube.core.create_node(node)
            except ApiException as exc:
                if exc.status != 409:
                    raise
        try:
            kube.core.create_namespace(V1Namespace(metadata=V1ObjectMeta(name="llm")))
        except ApiException as exc:
            if exc.status != 409:
                raise
        # The operator plans over every AcceleratorPool of the cluster; `infleet plan` sees
        # only examples/: the e2e pools step aside for this test (their nodes stay).
        subprocess.run(
            [*kubectl, "delete", "-f", str(REPO / "tests/e2e/pools"), "--ignore-not-found"],
            check=True, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        subprocess.run(
            [*kubectl, "apply", "-f", str(examples / "pools.yaml"),
             "-f", str(examples / "models.yaml")],
            check=True, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        op.start()
        out = subprocess.run(
            [sys.executable, "-m", "infleet.cli", "plan", "-o", "json", "-f", str(examples)],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        offline: dict[str, dict[tuple[str, str], int]] = {}
        for p in json.loads(out)["placements"]:
            offline.setdefault(p["model"], {})[(p["variant"], p["pool"])] = p["replicas"]
        names = sorted(offline)
        assert names == ["chat-70b", "chat-8b", "llama-405b", "summarize-8b"]

        objs = {name: wait_ready(kube, custom, "llm", name, timeout=120) for name in names}
        assert {name: placements(obj) for name, obj in objs.items()} == offline

        live = deployments(kube, "llm")
        assert len(live) == sum(len(v) for v in offline.values())
        for d in live.values():
            pool = by_name[d.metadata.labels["infleet.io/pool"]].spec
            pod_spec = d.spec.template.spec
            assert pod_spec.node_selector == pool.node_selector
            tolerated = {(t.key, t.value, t.effect) for t in pod_spec.tolerations or []}
            for t in pool.tolerations:
                assert (t.key, t.value, t.effect.value if t.effect else None) in tolerated
            server = next(c for c in pod_spec.containers if c.name == "server")
            per_replica = server.resources.limits[pool.resource_name]
            assert server.resources.requests[pool.resource_name] == per_replica
            assert d.status.ready_replicas == d.spec.replicas
            for p in kube.pods("llm", f"infleet.io/pool={d.metadata.labels['infleet.io/pool']}"):
                labels = kube.node_labels(p.spec.node_name)
                assert all(labels.get(k) == v for k, v in pool.node_selector.items())
    finally:
        op.stop()
        print(op.log.read_text()[-4000:])
        subprocess.run(
            [*kubectl, "delete", "namespace", "llm", "--wait=false"], capture_output=True
        )
        subprocess.run(
            [*kubectl, "delete", "-f", str(examples / "pools.yaml"), "--ignore-not-found"],
            capture_output=True,
        )  # fmt: skip
        subprocess.run(
            [*kubectl, "apply", "--server-side", "-f", str(REPO / "tests/e2e/pools")],
            check=True, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        # Namespace first: kwok deletes the pods while their nodes exist; pods of deleted
        # nodes wait for the controller-manager's pod garbage collection (40-50 s).
        kube.wait_for(
            "namespace llm gone",
            lambda: "llm" not in {n.metadata.name for n in kube.core.list_namespace().items},
            timeout=120,
        )
        for node in nodes:
            try:
                kube.core.delete_node(node["metadata"]["name"])
            except ApiException as exc:
                if exc.status != 404:
                    raise


def test_peering_only_the_highest_priority_instance_acts(
    kube: Any, custom: Any, cluster: Any, pools: None, namespace: str, tmp_path: Path
) -> None:
    """Two `infleet run --peering` instances: the one with priority 10 acts, the other stands
    by (no cycle at all) and takes over when the first one stops."""
    high = Operator(
        cluster.kubeconfig,
        namespace,
        tmp_path / "high.log",
        extra=("--peering", "--priority", "10"),
    )
    low = Operator(
        cluster.kubeconfig, namespace, tmp_path / "low.log", extra=("--peering", "--priority", "1")
    )
    try:
        high.start()
        kube.wait_for("high active", lambda: "active:" in high.log.read_text(), timeout=60)
        low.start()
        kube.wait_for(
            "low on standby behind high",
            lambda: (
                "standby: " in low.log.read_text()
                and "higher priority (10 > 1)" in low.log.read_text()
            ),
            timeout=60,
        )
        apply(
            custom,
            namespace,
            model("chat", pool="e2e-l4", accelerator="nvidia-l4", rps=1, capacity=2),
        )
        wait_ready(kube, custom, namespace, "chat")
        peering = custom.get_namespaced_custom_object(
            "kopf.dev", "v1", namespace, "kopfpeerings", "infleet"
        )
        assert sorted(p["priority"] for p in peering["status"].values() if p) == [1, 10]
        assert "fleet cycle" in high.log.read_text()
        assert "fleet cycle" not in low.log.read_text()

        high.stop()
        kube.wait_for("low takes over", lambda: "active:" in low.log.read_text(), timeout=60)
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "modeldeployments", "chat",
            {"spec": {"traffic": {"requestsPerSecond": 3}}},  # 3.75 req/s: 2 replicas
        )  # fmt: skip
        kube.wait_for(
            "the standby applies the change",
            lambda: (
                (d := deployments(kube, namespace).get("chat-nvidia-l4-e2e-l4"))
                and d.spec.replicas == 2
            ),
            timeout=60,
        )
        assert "fleet cycle" in low.log.read_text()
    finally:
        high.stop()
        low.stop()
        for op in (high, low):
            print(f"--- {op.log.name}\n" + op.log.read_text()[-3000:])
