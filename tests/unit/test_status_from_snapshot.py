"""From raw cluster objects to inventory and current placements (reconcile.observe)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from infleet.api import AcceleratorPool
from infleet.core.inventory import NodeInfo
from infleet.reconcile.observe import (
    HoldBook,
    current_placements,
    inventories,
    live_deployments,
    next_deadline,
    parse_models,
    pool_usage,
)

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def pool(name: str, quota: int | None = None) -> AcceleratorPool:
    spec: dict[str, Any] = {
        "acceleratorType": "nvidia-h100-80gb",
        "acceleratorsPerNode": 8,
        "nodeSelector": {"pool": name},
        "costPerAcceleratorHour": 2.0,
    }
    if quota is not None:
        spec["maxAccelerators"] = quota
    return AcceleratorPool.model_validate({"metadata": {"name": name}, "spec": spec})


def node(name: str, pool_name: str, gpus: int = 8, ready: bool = True) -> NodeInfo:
    return NodeInfo(name, {"pool": pool_name}, {"nvidia.com/gpu": str(gpus)}, ready=ready)


def pod(
    gpus: int,
    *,
    node_name: str | None = None,
    ours: bool = True,
    pool_label: str = "a",
    unschedulable_at: str | None = None,
) -> dict[str, Any]:
    labels = (
        {"app.kubernetes.io/managed-by": "infleet", "infleet.io/pool": pool_label} if ours else {}
    )
    body: dict[str, Any] = {
        "metadata": {"labels": labels},
        "spec": {"containers": [{"resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}]},
        "status": {"phase": "Running" if node_name else "Pending"},
    }
    if node_name:
        body["spec"]["nodeName"] = node_name
    if unschedulable_at:
        body["status"]["conditions"] = [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "lastTransitionTime": unschedulable_at,
            }
        ]
    return body


def test_usage_splits_infleet_others_and_pending_after_grace() -> None:
    pools = [pool("a"), pool("b")]
    nodes = [node("n1", "a"), node("n2", "a"), node("n3", "b")]
    pods = [
        pod(2, node_name="n1"),
        pod(3, node_name="n2"),
        pod(4, node_name="n1", ours=False),
        pod(1, node_name="n3", ours=False),
        pod(2, unschedulable_at="2026-01-01T11:58:00Z"),  # 120 s ago: counts
        pod(8, unschedulable_at="2026-01-01T11:59:30Z"),  # 30 s ago: within grace
        pod(8, pool_label="b"),  # pending without Unschedulable: scheduler not done yet
    ]
    usage = pool_usage(pools, nodes, pods, now=NOW, grace_seconds=60)
    assert (usage["a"].infleet, usage["a"].others, usage["a"].unschedulable) == (5, 4, 2)
    assert (usage["b"].infleet, usage["b"].others, usage["b"].unschedulable) == (0, 1, 0)


def test_inventory_subtracts_others_and_held_capacity() -> None:
    pools = [pool("a", quota=12)]
    nodes = [node("n1", "a"), node("n2", "a"), node("n3", "a", ready=False)]
    pods = [pod(2, node_name="n1"), pod(3, node_name="n2", ours=False)]
    usage = pool_usage(pools, nodes, pods, now=NOW, grace_seconds=60)
    inv = inventories(pools, nodes, usage, HoldBook(), now=0.0, hold_seconds=600)["a"]
    # 16 on Ready nodes, capped by the quota at 12; 3 used by others.
    assert inv.allocatable_accelerators == 12
    assert inv.allocated_accelerators == 2
    assert inv.planning_capacity == 9
    assert inv.free_accelerators == 7
    assert (inv.nodes, inv.ready_nodes) == (3, 2)


def test_unschedulable_replicas_make_the_pool_count_as_full() -> None:
    """16 accelerators on two Ready nodes, 2 used by infleet, 3 by others; a pending replica
    of 2 past the grace period: the 11 left over are not trusted any more."""
    pools = [pool("a")]
    nodes = [node("n1", "a"), node("n2", "a")]
    pods = [
        pod(2, node_name="n1"),
        pod(3, node_name="n2", ours=False),
        pod(2, unschedulable_at="2026-01-01T11:58:00Z"),
    ]
    usage = pool_usage(pools, nodes, pods, now=NOW, grace_seconds=60)
    book = HoldBook()
    inv = inventories(pools, nodes, usage, book, now=0.0, hold_seconds=600)["a"]
    assert inv.allocatable_accelerators == 16
    assert inv.planning_capacity == 2  # what infleet runs there now
    assert inv.free_accelerators == 0
    # The pending replica moved away: the pool stays full while the hold lasts...
    moved = pool_usage(pools, nodes, pods[:2], now=NOW, grace_seconds=60)
    inv = inventories(pools, nodes, moved, book, now=300.0, hold_seconds=600)["a"]
    assert inv.planning_capacity == 2
    # ... and is trusted again when it expires.
    inv = inventories(pools, nodes, moved, book, now=601.0, hold_seconds=600)["a"]
    assert inv.planning_capacity == 13


def test_hold_keeps_capacity_out_until_expiry_or_new_nodes() -> None:
    book = HoldBook()
    assert book.unavailable("a", seen=4, allocatable=16, now=0, hold_seconds=100) == 4
    # Pending pods gone (moved elsewhere): still held, so the plan does not flip back.
    assert book.unavailable("a", seen=0, allocatable=16, now=50, hold_seconds=100) == 4
    assert book.unavailable("a", seen=0, allocatable=16, now=100, hold_seconds=100) == 0
    assert book.unavailable("a", seen=2, allocatable=16, now=200, hold_seconds=100) == 2
    # New nodes (allocatable changed): the hold is dropped at once.
    assert book.unavailable("a", seen=0, allocatable=24, now=210, hold_seconds=100) == 0


def test_current_placements_from_annotations() -> None:
    def deployment(name: str, model: str, variant: str, pool_name: str, n: int) -> dict[str, Any]:
        return {
            "metadata": {
                "name": name,
                "namespace": "ns",
                "labels": {"app.kubernetes.io/managed-by": "infleet"},
                "annotations": {
                    "infleet.io/model": model,
                    "infleet.io/variant": variant,
                    "infleet.io/pool": pool_name,
                    "infleet.io/spec-hash": "h",
                },
            },
            "spec": {"replicas": n},
            "status": {"readyReplicas": n - 1},
        }

    children = live_deployments(
        [
            deployment("x", "m", "h100", "a", 3),
            deployment("y", "m", "h100", "b", 1),
            {"metadata": {"name": "z", "namespace": "ns", "labels": {}}, "spec": {"replicas": 9}},
        ]
    )
    assert [c.ready_replicas for c in children] == [2, 0]
    assert current_placements(children) == {
        (("ns", "m"), "h100", "a"): 3,
        (("ns", "m"), "h100", "b"): 1,
    }


def test_bad_models_are_reported_not_raised() -> None:
    good = {
        "apiVersion": "infleet.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "ok", "namespace": "ns", "uid": "u1"},
        "spec": {
            "model": "m",
            "slo": {"timeToFirstTokenMs": 500},
            "variants": [{"acceleratorType": "nvidia-l4", "maxRequestsPerSecond": 2}],
        },
        "status": {"desiredReplicas": 3},
    }
    bad = {
        "apiVersion": "infleet.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "bad", "namespace": "ns"},
        "spec": {"model": "m", "slo": {}, "variants": []},
    }
    deleting = {**good, "metadata": {**good["metadata"], "deletionTimestamp": "t"}}
    parsed, rejected = parse_models([good, bad, deleting])
    assert [p.key for p in parsed] == [("ns", "ok")]
    assert parsed[0].uid == "u1"
    assert len(rejected) == 1
    assert "slo" in rejected[0].message
    assert "variants" in rejected[0].message


def test_next_deadline_is_the_first_grace_end_or_hold_expiry() -> None:
    pods = [
        pod(2, node_name="n1"),  # running: no deadline
        pod(1, unschedulable_at="2026-01-01T11:59:30Z"),  # grace ends 12:00:30
        pod(1, unschedulable_at="2026-01-01T11:59:50Z"),  # 12:00:50
        pod(1, ours=False, unschedulable_at="2026-01-01T11:59:00Z"),  # not infleet's
    ]
    book = HoldBook()
    assert next_deadline([], book, grace_seconds=60) == float("inf")
    first = datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC).timestamp()
    assert next_deadline(pods, book, grace_seconds=60) == first
    book.unavailable("a", seen=4, allocatable=16, now=first - 100, hold_seconds=50)
    assert next_deadline(pods, book, grace_seconds=60) == first - 50
    # A namespaced operator ignores other namespaces' replicas (pods here have none).
    assert next_deadline(pods[:3], HoldBook(), grace_seconds=60, namespaces=("x",)) == float("inf")


def test_slimmed_nodes_and_pods_read_the_same() -> None:
    """The snapshot keeps only what the inventory reads; the result must not change."""
    from infleet.k8s.snapshot import slim_node, slim_pod

    full_node: dict[str, Any] = {
        "metadata": {
            "name": "n1",
            "labels": {"infleet.io/pool": "a"},
            "uid": "x",
            "annotations": {"k": "v"},
        },
        "spec": {"unschedulable": True, "taints": [{"key": "t", "effect": "NoSchedule"}]},
        "status": {
            "allocatable": {"nvidia.com/gpu": "8", "cpu": "96"},
            "capacity": {"nvidia.com/gpu": "8"},
            "conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-01-01T00:00:00Z"},
            ],
            "images": [{"names": ["x"] * 50}],
        },
    }
    assert NodeInfo.from_object(slim_node(full_node)) == NodeInfo.from_object(full_node)
    pods = [
        pod(2, node_name="n1"),
        pod(3, node_name="n1", ours=False),
        pod(2, unschedulable_at="2026-01-01T11:58:00Z"),
    ]
    for p in pods:
        p["metadata"]["managedFields"] = [{"manager": "kubectl"}]
        p["status"]["conditions"] = [
            *p["status"].get("conditions", []),
            {"type": "Ready", "status": "False"},
        ]
    pools = [pool("a")]
    nodes = [node("n1", "a")]
    slim = [slim_pod(p) for p in pods]
    assert pool_usage(pools, nodes, slim, now=NOW, grace_seconds=60) == pool_usage(
        pools, nodes, pods, now=NOW, grace_seconds=60
    )
    assert next_deadline(slim, HoldBook(), grace_seconds=600) == next_deadline(
        pods, HoldBook(), grace_seconds=600
    )
    assert "managedFields" not in slim[0]["metadata"]
