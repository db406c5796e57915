"""The real scheduler places accelerator pods on the pools' (kwok) nodes, and kwok makes them
Ready; what does not fit stays Pending with FailedScheduling."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from infleet.api.pool import AcceleratorPool
from infleet.sandbox.pools import load_pools

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

POOLS: dict[str, AcceleratorPool] = {
    p.metadata.name: p for p in load_pools([Path(__file__).parent / "pools"])
}

MakeDeployment = Callable[..., dict[str, Any]]


def _tolerations(pool: AcceleratorPool) -> list[dict[str, Any]]:
    return [t.to_dict() for t in pool.spec.tolerations]


def _ready_replicas(kube: Any, namespace: str, name: str) -> int:
    status = kube.apps.read_namespaced_deployment(name, namespace).status
    return int(status.ready_replicas or 0) if status else 0


def _pod_ready(pod: client.V1Pod) -> bool:
    conditions = (pod.status.conditions if pod.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def _split(pods: list[client.V1Pod]) -> tuple[list[client.V1Pod], list[client.V1Pod]]:
    running = [p for p in pods if p.status and p.status.phase == "Running" and _pod_ready(p)]
    pending = [p for p in pods if p.status and p.status.phase == "Pending"]
    return running, pending


def _failed_scheduling_message(kube: Any, namespace: str, pod: client.V1Pod) -> str | None:
    for event in kube.events_for(namespace, pod.metadata.name):
        if event.reason == "FailedScheduling":
            return str(event.message)
    return None


def _run_until_split(
    kube: Any,
    namespace: str,
    manifest: dict[str, Any],
    running: int,
    pending: int,
) -> tuple[list[client.V1Pod], list[client.V1Pod]]:
    name = manifest["metadata"]["name"]
    kube.apps.create_namespaced_deployment(namespace, manifest)

    def settled() -> tuple[list[client.V1Pod], list[client.V1Pod]] | None:
        pods = kube.pods(namespace, f"app={name}")
        split = _split(pods)
        return split if (len(split[0]), len(split[1])) == (running, pending) else None

    return kube.wait_for(f"{running} Running and {pending} Pending pods of {name}", settled)


def test_gpu_deployment_is_scheduled_onto_its_pool_and_becomes_ready(
    kube: Any, namespace: str, make_deployment: MakeDeployment
) -> None:
    pool = POOLS["e2e-h100"]
    manifest = make_deployment("llama-h100", 1, pool.spec.resource_name, 4, pool.spec.node_selector)
    kube.apps.create_namespaced_deployment(namespace, manifest)

    kube.wait_for(
        "the Deployment to have 1 ready replica",
        lambda: _ready_replicas(kube, namespace, "llama-h100") == 1,
    )
    (pod,) = kube.pods(namespace, "app=llama-h100")
    assert pod.status.phase == "Running"
    assert _pod_ready(pod)
    labels = kube.node_labels(pod.spec.node_name)
    assert pool.spec.node_selector.items() <= labels.items()
    scheduled = [
        e for e in kube.events_for(namespace, pod.metadata.name) if e.reason == "Scheduled"
    ]
    assert scheduled, "no Scheduled event: the scheduler did not bind the pod"
    assert pod.spec.node_name in scheduled[0].message


def test_requests_beyond_free_accelerators_stay_pending(
    kube: Any, namespace: str, make_deployment: MakeDeployment
) -> None:
    pool = POOLS["e2e-l4"]  # 2 nodes x 4 GPUs: room for two 4-GPU replicas, not three
    manifest = make_deployment("qwen-l4", 3, pool.spec.resource_name, 4, pool.spec.node_selector)

    running, pending = _run_until_split(kube, namespace, manifest, running=2, pending=1)

    assert len({p.spec.node_name for p in running}) == 2
    message = kube.wait_for(
        "a FailedScheduling event on the pending pod",
        lambda: _failed_scheduling_message(kube, namespace, pending[0]),
    )
    assert f"Insufficient {pool.spec.resource_name}" in message


def test_cerebras_pool_fits_one_replica_per_node(
    kube: Any, namespace: str, make_deployment: MakeDeployment
) -> None:
    pool = POOLS["e2e-cs3"]  # 2 nodes with one cerebras.net/wse each
    assert pool.spec.resource_name == "cerebras.net/wse"
    manifest = make_deployment("llama-wse", 3, pool.spec.resource_name, 1, pool.spec.node_selector)

    running, pending = _run_until_split(kube, namespace, manifest, running=2, pending=1)

    nodes = {p.spec.node_name for p in running}
    assert len(nodes) == 2
    for node in nodes:
        assert kube.node_labels(node)["infleet.io/e2e-pool"] == "cs3"
    message = kube.wait_for(
        "a FailedScheduling event on the pending pod",
        lambda: _failed_scheduling_message(kube, namespace, pending[0]),
    )
    assert "Insufficient cerebras.net/wse" in message


def test_spot_pool_admits_only_pods_with_its_toleration(
    kube: Any, namespace: str, make_deployment: MakeDeployment
) -> None:
    pool = POOLS["e2e-h100-spot"]  # one node, 8 GPUs, tainted capacity-type=spot:NoSchedule
    tolerated = make_deployment(
        "spot-ok", 1, pool.spec.resource_name, 4, pool.spec.node_selector, _tolerations(pool)
    )
    untolerated = make_deployment("spot-no", 1, pool.spec.resource_name, 4, pool.spec.node_selector)

    _run_until_split(kube, namespace, tolerated, running=1, pending=0)
    _, (pending,) = _run_until_split(kube, namespace, untolerated, running=0, pending=1)

    message = kube.wait_for(
        "a FailedScheduling event on the untolerated pod",
        lambda: _failed_scheduling_message(kube, namespace, pending),
    )
    # The scheduler's message counts nodes per reason: the pool's one node is excluded by its
    # taint, every other node by the nodeSelector.
    assert "1 node(s) had untolerated taint" in message
