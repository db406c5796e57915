"""Fake (kwok) nodes for AcceleratorPools: a pure function from pools to Node manifests.

Each pool gets ceil(maxAccelerators / acceleratorsPerNode) nodes (or `nodes_without_quota` when
the pool sets no quota), labelled with the pool's nodeSelector, tainted so that exactly the pool's
tolerations let a pod on, and offering the pool's resourceName as an extended resource.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from infleet.api.pool import AcceleratorPool, Toleration, TolerationOperator

KWOK_ANNOTATION = "kwok.x-k8s.io/node"
"""Annotation kwok is told to manage nodes by (value `fake`)."""
POOL_LABEL = "sandbox.infleet.io/pool"
"""Label naming the pool a sandbox node was made for (lets `up` find its own nodes)."""
DEFAULT_TAINT_EFFECT = "NoSchedule"


@dataclass(frozen=True)
class NodeShape:
    """Resources of a fake node besides its accelerators."""

    cpu: str = "96"
    memory: str = "1024Gi"
    pods: str = "110"
    ephemeral_storage: str = "2Ti"


def node_count(pool: AcceleratorPool, nodes_without_quota: int) -> int:
    """How many nodes the pool gets: enough for maxAccelerators, or the default without one."""
    quota = pool.spec.max_accelerators
    if quota is None:
        return nodes_without_quota
    return math.ceil(quota / pool.spec.accelerators_per_node)


def taints_for(tolerations: Iterable[Toleration]) -> list[dict[str, str]]:
    """Taints that the given tolerations tolerate, one per toleration with a key.

    A toleration without key (operator Exists) tolerates everything and implies no taint.
    A toleration without effect matches every effect; NoSchedule is used for its taint.
    """
    taints: list[dict[str, str]] = []
    for toleration in tolerations:
        if not toleration.key:
            continue
        taint = {
            "key": toleration.key,
            "effect": toleration.effect.value if toleration.effect else DEFAULT_TAINT_EFFECT,
        }
        if toleration.operator is TolerationOperator.EQUAL and toleration.value:
            taint["value"] = toleration.value
        if taint not in taints:
            taints.append(taint)
    return taints


def node_name(pool_name: str, index: int) -> str:
    """Name of the pool's index-th node."""
    return f"{pool_name}-{index:04d}"


def pool_nodes(
    pool: AcceleratorPool, nodes_without_quota: int = 2, shape: NodeShape | None = None
) -> list[dict[str, Any]]:
    """Node manifests (with status, which kwok keeps) for one pool."""
    shape = shape or NodeShape()
    spec = pool.spec
    pool_name = pool.metadata.name
    resources = {
        "cpu": shape.cpu,
        "memory": shape.memory,
        "pods": shape.pods,
        "ephemeral-storage": shape.ephemeral_storage,
        spec.resource_name: str(spec.accelerators_per_node),
    }
    taints = taints_for(spec.tolerations)
    nodes: list[dict[str, Any]] = []
    for index in range(node_count(pool, nodes_without_quota)):
        name = node_name(pool_name, index)
        labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "type": "kwok",
            POOL_LABEL: pool_name,
            **spec.node_selector,
        }
        node: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": labels,
                "annotations": {KWOK_ANNOTATION: "fake"},
            },
            "spec": {"taints": [dict(t) for t in taints]} if taints else {},
            "status": {"allocatable": dict(resources), "capacity": dict(resources)},
        }
        nodes.append(node)
    return nodes


def all_nodes(
    pools: Sequence[AcceleratorPool], nodes_without_quota: int = 2, shape: NodeShape | None = None
) -> list[dict[str, Any]]:
    """Node manifests for every pool; fails on two pools whose node names would collide."""
    nodes: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for pool in pools:
        name = pool.metadata.name
        if name in seen:
            raise ValueError(f"AcceleratorPool {name!r} is given twice")
        seen[name] = name
        nodes.extend(pool_nodes(pool, nodes_without_quota, shape))
    return nodes
