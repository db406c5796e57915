"""Read everything one fleet cycle needs, in a handful of list calls."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from infleet.api import GROUP, VERSION
from infleet.k8s.client import Kube, KubeError

MANAGED_SELECTOR = "app.kubernetes.io/managed-by=infleet"
ACTIVE_PODS = "status.phase!=Succeeded,status.phase!=Failed"


@dataclass
class Snapshot:
    """Raw objects as the API returned them (camelCase dicts)."""

    pools: list[dict[str, Any]] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)
    nodes: list[dict[str, Any]] = field(default_factory=list)
    pods: list[dict[str, Any]] = field(default_factory=list)
    """Every non-terminal pod the operator may see: infleet's own and others' (for the
    accelerators others use on a pool's nodes)."""
    deployments: list[dict[str, Any]] = field(default_factory=list)
    """Deployments labelled as managed by infleet."""
    services: list[dict[str, Any]] = field(default_factory=list)
    """Services labelled as managed by infleet."""


def _namespaced(
    kube: Kube,
    namespaces: Sequence[str],
    path: str,
    label_selector: str | None = None,
    field_selector: str | None = None,
) -> list[Any]:
    """``path`` is like ``/apis/apps/v1/{ns}deployments``: listed per namespace or cluster-wide."""
    paths = [path.format(ns=f"namespaces/{ns}/") for ns in namespaces] or [path.format(ns="")]
    items: list[Any] = []
    for one in paths:
        items.extend(
            kube.list_items(one, label_selector=label_selector, field_selector=field_selector)
        )
    return items


CACHEABLE = frozenset({"nodes", "pods"})
"""Kinds a cycle may take from the previous snapshot when no watch event changed them: the
big ones (thousands of nodes and pods), which infleet reads but never writes. Everything
infleet writes (statuses, Deployments, Services) is read fresh every cycle."""


def _pick(obj: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {k: obj[k] for k in keys if k in obj}


def slim_node(node: dict[str, Any]) -> dict[str, Any]:
    """The fields of a Node the inventory reads (name, labels, cordon, Ready, allocatable)."""
    meta, spec, status = (node.get(k) or {} for k in ("metadata", "spec", "status"))
    conditions = [
        _pick(c, "type", "status")
        for c in status.get("conditions") or []
        if c.get("type") == "Ready"
    ]
    return {
        "metadata": _pick(meta, "name", "labels"),
        "spec": _pick(spec, "unschedulable"),
        "status": {"allocatable": status.get("allocatable") or {}, "conditions": conditions},
    }


def slim_pod(pod: dict[str, Any]) -> dict[str, Any]:
    """The fields of a Pod the usage count reads (who, where, what it requests, scheduling)."""
    meta, spec, status = (pod.get(k) or {} for k in ("metadata", "spec", "status"))
    containers = [{"resources": c.get("resources") or {}} for c in spec.get("containers") or []]
    conditions = [
        _pick(c, "type", "status", "reason", "lastTransitionTime")
        for c in status.get("conditions") or []
        if c.get("type") == "PodScheduled"
    ]
    return {
        "metadata": _pick(meta, "name", "namespace", "labels"),
        "spec": {**_pick(spec, "nodeName"), "containers": containers},
        "status": {**_pick(status, "phase"), "conditions": conditions},
    }


def read_snapshot(
    kube: Kube,
    namespaces: Sequence[str] = (),
    *,
    previous: Snapshot | None = None,
    refresh: Collection[str] = CACHEABLE,
) -> Snapshot:
    """Pools, models, nodes, pods and infleet's Deployments/Services (all, or per namespace).

    Pods are listed cluster-wide when the operator may (accelerators used by other workloads
    count against a pool), else only in the managed namespaces. With ``previous``, the
    :data:`CACHEABLE` kinds not named in ``refresh`` are reused from it instead of listed.
    """
    group = f"/apis/{GROUP}/{VERSION}"
    snap = Snapshot()
    snap.pools = kube.list_items(f"{group}/acceleratorpools")
    snap.models = _namespaced(kube, namespaces, group + "/{ns}modeldeployments")
    if previous is not None and "nodes" not in refresh:
        snap.nodes = previous.nodes
    else:
        snap.nodes = kube.list_items("/api/v1/nodes", keep=slim_node)
    if previous is not None and "pods" not in refresh:
        snap.pods = previous.pods
    else:
        try:
            snap.pods = kube.list_items("/api/v1/pods", field_selector=ACTIVE_PODS, keep=slim_pod)
        except KubeError as exc:
            # A namespaced operator may not be allowed to list pods cluster-wide.
            if exc.status != 403 or not namespaces:
                raise
            snap.pods = [
                slim_pod(p)
                for p in _namespaced(
                    kube, namespaces, "/api/v1/{ns}pods", field_selector=ACTIVE_PODS
                )
            ]
    snap.deployments = _namespaced(
        kube, namespaces, "/apis/apps/v1/{ns}deployments", label_selector=MANAGED_SELECTOR
    )
    snap.services = _namespaced(
        kube, namespaces, "/api/v1/{ns}services", label_selector=MANAGED_SELECTOR
    )
    return snap
