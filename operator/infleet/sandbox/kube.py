"""The few Kubernetes API calls the sandbox makes: apply CRDs, apply and prune fake nodes,
wait for readiness. Server-side apply throughout, so repeating `up` is harmless."""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from infleet.sandbox.nodes import POOL_LABEL

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


def _apply_node(core: client.CoreV1Api, manifest: dict[str, Any]) -> None:
    name = manifest["metadata"]["name"]
    status = manifest.get("status", {})
    body = {k: v for k, v in manifest.items() if k != "status"}
    try:
        # A plain create is much cheaper for the API server than an apply; apply only what
        # exists already. Raw responses: decoding into the client's models costs more CPU
        # than the request itself.
        core.create_node(manifest, field_manager=FIELD_MANAGER, _preload_content=False)  # type: ignore[arg-type]
        return
    except ApiException as exc:
        if exc.status != 409:
            raise KubeError(f"creating node {name} failed: {exc.status} {exc.body}") from exc
    try:
        response = core.patch_node(
            name,
            body,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=APPLY,
            _preload_content=False,
        )
        current = json.loads(response.data)  # type: ignore[attr-defined]
        have = current.get("status", {}).get("capacity", {})
        if any(have.get(k) != v for k, v in status.get("capacity", {}).items()):
            # Status is a subresource: an apply to an existing node leaves it untouched.
            core.patch_node_status(
                name,
                {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "status": status},
                field_manager=FIELD_MANAGER,
                force=True,
                _content_type=APPLY,
                _preload_content=False,
            )
    except ApiException as exc:
        raise KubeError(f"applying node {name} failed: {exc.status} {exc.body}") from exc


def apply_nodes(api: client.ApiClient, manifests: Sequence[dict[str, Any]]) -> None:
    """Create or update the nodes (labels, taints, allocatable), several requests at a time."""
    core = client.CoreV1Api(api)
    with concurrent.futures.ThreadPoolExecutor(PARALLEL_REQUESTS) as pool:
        for future in [pool.submit(_apply_node, core, m) for m in manifests]:
            future.result()


def _name(node: client.V1Node) -> str:
    return str(node.metadata.name) if node.metadata else ""


def _ready(node: client.V1Node) -> bool:
    conditions = (node.status.conditions if node.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def delete_stale_nodes(api: client.ApiClient, wanted: set[str]) -> int:
    """Delete sandbox nodes (those with the pool label) not in `wanted`; returns how many."""
    core = client.CoreV1Api(api)
    existing = [_name(n) for n in core.list_node(label_selector=POOL_LABEL).items]
    stale = [name for name in existing if name not in wanted]
    for name in stale:
        try:
            core.delete_node(name)
        except ApiException as exc:
            if exc.status != 404:
                raise KubeError(f"deleting node {name} failed: {exc.status} {exc.body}") from exc
    return len(stale)


def wait_nodes_ready(api: client.ApiClient, names: Sequence[str], timeout: float) -> None:
    """Wait until every named node reports Ready=True."""
    core = client.CoreV1Api(api)
    wanted = set(names)
    deadline = time.monotonic() + timeout
    while True:
        ready = {_name(n) for n in core.list_node(label_selector=POOL_LABEL).items if _ready(n)}
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
