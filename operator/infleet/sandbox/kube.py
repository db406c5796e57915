"""The few Kubernetes API calls the sandbox makes: apply CRDs, apply and prune fake nodes,
wait for readiness. Creates are plain POSTs, updates server-side applies; repeating `up` costs
nothing when nodes are already as wanted."""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Iterable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity

from infleet.sandbox.nodes import KWOK_ANNOTATION, POOL_LABEL

FIELD_MANAGER = "infleet-sandbox"
APPLY = "application/apply-patch+yaml"
PARALLEL_REQUESTS = 8


class KubeError(RuntimeError):
    """An API call of the sandbox failed or a wait timed out."""


def client_for(kubeconfig: Path) -> client.ApiClient:
    """An API client for the kubeconfig, with a connection pool sized for parallel requests."""
    configuration = client.Configuration()
    config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig), client_configuration=configuration
    )
    configuration.connection_pool_maxsize = PARALLEL_REQUESTS * 2
    configuration.proxy = None
    return client.ApiClient(configuration)


def read_crds(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """CustomResourceDefinition documents in the given files or directories (*.yaml)."""
    crds: list[dict[str, Any]] = []
    for path in paths:
        if not path.exists():
            continue
        files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
        for file in files:
            for document in yaml.safe_load_all(file.read_text()):
                if (
                    isinstance(document, dict)
                    and document.get("kind") == "CustomResourceDefinition"
                ):
                    crds.append(document)
    return crds


def apply_crds(api: client.ApiClient, crds: Sequence[dict[str, Any]], timeout: float) -> None:
    """Apply the CRDs and wait until each is Established."""
    extensions = client.ApiextensionsV1Api(api)
    for crd in crds:
        name = crd["metadata"]["name"]
        try:
            extensions.patch_custom_resource_definition(
                name, crd, field_manager=FIELD_MANAGER, force=True, _content_type=APPLY
            )
        except ApiException as exc:
            raise KubeError(f"applying CRD {name} failed: {exc.status} {exc.body}") from exc
    deadline = time.monotonic() + timeout
    for crd in crds:
        name = crd["metadata"]["name"]
        while True:
            current = extensions.read_custom_resource_definition(name)
            conditions = (current.status.conditions or []) if current.status else []
            if any(c.type == "Established" and c.status == "True" for c in conditions):
                break
            if time.monotonic() > deadline:
                raise KubeError(f"CRD {name} not Established after {timeout:.0f}s")
            time.sleep(0.2)


def node_up_to_date(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """True when an existing node already has the wanted labels, annotations, taints and
    capacity (kwok's and the control plane's additions are allowed)."""
    meta, have_meta = wanted["metadata"], current.get("metadata", {})
    for key in ("labels", "annotations"):
        if not meta.get(key, {}).items() <= (have_meta.get(key) or {}).items():
            return False
    if (current.get("spec", {}).get("taints") or []) != (wanted["spec"].get("taints") or []):
        return False
    return _has_capacity(current, wanted["status"]["capacity"])


def _has_capacity(node: dict[str, Any], wanted: dict[str, str]) -> bool:
    # The API server canonicalises quantities (1024Gi comes back as 1Ti): compare values.
    have = node.get("status", {}).get("capacity") or {}
    return all(k in have and _quantity(have[k]) == _quantity(v) for k, v in wanted.items())


def _quantity(text: str) -> Decimal:
    value: Decimal = parse_quantity(text)  # type: ignore[no-untyped-call]
    return value


def _raw(response: Any) -> dict[str, Any]:
    # Raw responses: decoding into the client's models costs more CPU than the request itself.
    data: dict[str, Any] = json.loads(response.data)
    return data


def _create_node(core: client.CoreV1Api, manifest: dict[str, Any]) -> None:
    name = manifest["metadata"]["name"]
    try:
        # A plain create (status included, which kwok keeps) is much cheaper for the API
        # server than an apply.
        core.create_node(manifest, field_manager=FIELD_MANAGER, _preload_content=False)  # type: ignore[arg-type]
    except ApiException as exc:
        if exc.status == 409:  # created meanwhile: bring it up to date instead
            _update_node(core, manifest)
            return
        raise KubeError(f"creating node {name} failed: {exc.status} {exc.body}") from exc


def _update_node(core: client.CoreV1Api, manifest: dict[str, Any]) -> None:
    name = manifest["metadata"]["name"]
    status = manifest["status"]
    body = {k: v for k, v in manifest.items() if k != "status"}
    try:
        current = _raw(
            core.patch_node(
                name,
                body,
                field_manager=FIELD_MANAGER,
                force=True,
                _content_type=APPLY,
                _preload_content=False,
            )
        )
        if not _has_capacity(current, status["capacity"]):
            # Status is a subresource: an apply to the node leaves it untouched.
            core.patch_node_status(
                name,
                {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "status": status},
                field_manager=FIELD_MANAGER,
                force=True,
                _content_type=APPLY,
                _preload_content=False,
            )
    except ApiException as exc:
        raise KubeError(f"updating node {name} failed: {exc.status} {exc.body}") from exc


def apply_nodes(api: client.ApiClient, manifests: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """Create missing nodes and update those that differ, several requests at a time.

    Returns (created, updated); nodes already as wanted cost no request.
    """
    core = client.CoreV1Api(api)
    existing = {item["metadata"]["name"]: item for item in _list_nodes(core)}
    jobs: list[tuple[Any, dict[str, Any]]] = []
    for manifest in manifests:
        current = existing.get(manifest["metadata"]["name"])
        if current is None:
            jobs.append((_create_node, manifest))
        elif not node_up_to_date(current, manifest):
            jobs.append((_update_node, manifest))
    with concurrent.futures.ThreadPoolExecutor(PARALLEL_REQUESTS) as pool:
        for future in [pool.submit(job, core, manifest) for job, manifest in jobs]:
            future.result()
    created = sum(1 for job, _ in jobs if job is _create_node)
    return created, len(jobs) - created


def _list_nodes(core: client.CoreV1Api) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = _raw(
        core.list_node(label_selector=POOL_LABEL, _preload_content=False)
    ).get("items", [])
    return items


LIFECYCLE_TAINTS = frozenset({"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"})
"""Taints the controller-manager puts on a node until it has seen it Ready."""


def _ready(node: dict[str, Any]) -> bool:
    """Ready=True and no lifecycle taint left: the scheduler may place pods there.

    The controller-manager removes the not-ready taint some time after kwok marks a node Ready
    (at 2,000 nodes: over a minute of node PATCHes); pods created before that stay Pending.
    """
    conditions = node.get("status", {}).get("conditions") or []
    if not any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
        return False
    taints = (node.get("spec") or {}).get("taints") or []
    return not any(t.get("key") in LIFECYCLE_TAINTS for t in taints)


def delete_stale_nodes(api: client.ApiClient, wanted: set[str]) -> int:
    """Delete sandbox nodes (those with the pool label) not in `wanted`; returns how many."""
    core = client.CoreV1Api(api)
    existing = [n["metadata"]["name"] for n in _list_nodes(core)]
    stale = [name for name in existing if name not in wanted]
    for name in stale:
        try:
            core.delete_node(name)
        except ApiException as exc:
            if exc.status != 404:
                raise KubeError(f"deleting node {name} failed: {exc.status} {exc.body}") from exc
    return len(stale)


def wait_nodes_ready(api: client.ApiClient, names: Sequence[str], timeout: float) -> None:
    """Wait until every named node reports Ready=True and lost its lifecycle taints."""
    core = client.CoreV1Api(api)
    wanted = set(names)
    deadline = time.monotonic() + timeout
    while True:
        ready = {n["metadata"]["name"] for n in _list_nodes(core) if _ready(n)}
        missing = wanted - ready
        if not missing:
            return
        if time.monotonic() > deadline:
            sample = ", ".join(sorted(missing)[:5])
            raise KubeError(
                f"{len(missing)} of {len(wanted)} nodes not Ready after {timeout:.0f}s "
                f"(e.g. {sample}); is kwok running?"
            )
        time.sleep(0.5)


NODE_LEASE_NAMESPACE = "kube-node-lease"


def release_fake_node_leases(api: client.ApiClient) -> int:
    """Delete the leases of kwok's fake nodes; returns how many.

    kwok handles the pods of the nodes whose lease it holds, and a new kwok process cannot take
    a lease another process renewed until it expires (600 s in the sandbox), so a kwok started
    again would leave those nodes' pods Pending for minutes. The new process creates the leases
    afresh.
    """
    core = client.CoreV1Api(api)
    leases = client.CoordinationV1Api(api)
    try:
        fake = {
            str(n.metadata.name)
            for n in core.list_node().items
            if n.metadata and (n.metadata.annotations or {}).get(KWOK_ANNOTATION) == "fake"
        }
        released = 0
        for lease in leases.list_namespaced_lease(NODE_LEASE_NAMESPACE).items:
            name = str(lease.metadata.name) if lease.metadata else ""
            if name not in fake:
                continue
            try:
                leases.delete_namespaced_lease(name, NODE_LEASE_NAMESPACE)
                released += 1
            except ApiException as exc:
                if exc.status != 404:
                    raise
    except ApiException as exc:
        raise KubeError(f"releasing the fake nodes' leases failed: {exc.reason}") from exc
    return released
