"""Read everything one fleet cycle needs, in a handful of list calls."""

from __future__ import annotations

from collections.abc import Collection, Sequence
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


def _namespaced(kube: Kube, namespaces: Sequence[str], path: str, **kw: str) -> list[Any]:
    """``path`` is like ``/apis/apps/v1/{ns}deployments``: listed per namespace or cluster-wide."""
    if not namespaces:
        return kube.list_items(path.format(ns=""), **kw)
    items: list[Any] = []
    for namespace in namespaces:
        items.extend(kube.list_items(path.format(ns=f"namespaces/{namespace}/"), **kw))
    return items


CACHEABLE = frozenset({"nodes", "pods"})
"""Kinds a cycle may take from the previous snapshot when no watch event changed them: the
big ones (thousands of nodes and pods), which infleet reads but never writes. Everything
infleet writes (statuses, Deployments, Services) is read fresh every cycle."""


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
        snap.nodes = kube.list_items("/api/v1/nodes")
    if previous is not None and "pods" not in refresh:
        snap.pods = previous.pods
    else:
        try:
            snap.pods = kube.list_items("/api/v1/pods", field_selector=ACTIVE_PODS)
        except KubeError as exc:
            # A namespaced operator may not be allowed to list pods cluster-wide.
            if exc.status != 403 or not namespaces:
                raise
            snap.pods = _namespaced(
                kube, namespaces, "/api/v1/{ns}pods", field_selector=ACTIVE_PODS
            )
    snap.deployments = _namespaced(
        kube, namespaces, "/apis/apps/v1/{ns}deployments", label_selector=MANAGED_SELECTOR
    )
    snap.services = _namespaced(
        kube, namespaces, "/api/v1/{ns}services", label_selector=MANAGED_SELECTOR
    )
    return snap
