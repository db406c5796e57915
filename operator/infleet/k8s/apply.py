"""Writes: server-side apply of children, guarded deletes, status patches and Events."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from infleet.api import API_VERSION, GROUP, VERSION
from infleet.core.settings import FIELD_MANAGER
from infleet.k8s.client import APPLY_PATCH, MERGE_PATCH, Kube, KubeError

_PATHS = {
    "Deployment": "/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
    "Service": "/api/v1/namespaces/{namespace}/services/{name}",
}


def server_side_apply(kube: Kube, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Create or update ``manifest`` with server-side apply as field manager ``infleet``.

    ``force`` takes over fields another manager set (say a `kubectl scale` of ``replicas``):
    the plan is the authority on what infleet manages.
    """
    meta = manifest["metadata"]
    path = _PATHS[str(manifest["kind"])].format(namespace=meta["namespace"], name=meta["name"])
    result: dict[str, Any] = kube.request(
        "PATCH",
        path,
        query={"fieldManager": FIELD_MANAGER, "force": "true"},
        body=dict(manifest),
        content_type=APPLY_PATCH,
    )
    return result


def is_owned_by_infleet(obj: Mapping[str, Any]) -> bool:
    """Labelled as managed by infleet AND owned by a ModelDeployment: the only objects the
    operator ever deletes."""
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    if labels.get("app.kubernetes.io/managed-by") != "infleet":
        return False
    return any(
        ref.get("kind") == "ModelDeployment"
        and str(ref.get("apiVersion", "")).startswith(f"{GROUP}/")
        for ref in meta.get("ownerReferences") or []
    )


def delete_owned(kube: Kube, obj: Mapping[str, Any]) -> bool:
    """Delete a Deployment or Service infleet owns; refuses anything else.

    The delete carries the object's uid as a precondition, so an object of the same name
    created by someone else in the meantime is never removed. Returns False when it was
    already gone.
    """
    if not is_owned_by_infleet(obj):
        raise ValueError(
            f"refusing to delete {obj.get('kind')} {obj.get('metadata', {}).get('name')}: "
            "not labelled app.kubernetes.io/managed-by=infleet with a ModelDeployment owner"
        )
    meta = obj["metadata"]
    kind = str(obj.get("kind") or "Deployment")
    path = _PATHS[kind].format(namespace=meta["namespace"], name=meta["name"])
    body = {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "propagationPolicy": "Background",
        "preconditions": {"uid": meta.get("uid")},
    }
    try:
        kube.request("DELETE", path, body=body)
    except KubeError as exc:
        if exc.not_found:
            return False
        raise
    return True


def patch_model_status(kube: Kube, namespace: str, name: str, status: Mapping[str, Any]) -> None:
    """Merge-patch a ModelDeployment's status subresource."""
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/modeldeployments/{name}/status"
    kube.request("PATCH", path, body={"status": dict(status)}, content_type=MERGE_PATCH)


def patch_pool_status(kube: Kube, name: str, status: Mapping[str, Any]) -> None:
    """Merge-patch an AcceleratorPool's status subresource."""
    path = f"/apis/{GROUP}/{VERSION}/acceleratorpools/{name}/status"
    kube.request("PATCH", path, body={"status": dict(status)}, content_type=MERGE_PATCH)


def post_event(
    kube: Kube,
    *,
    namespace: str,
    name: str,
    uid: str,
    reason: str,
    message: str,
    type_: str = "Normal",
) -> None:
    """A core/v1 Event on a ModelDeployment (what `kubectl describe mdep` shows)."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{name[:200]}.{uuid.uuid4().hex[:12]}",
            "namespace": namespace,
        },
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": "ModelDeployment",
            "name": name,
            "namespace": namespace,
            "uid": uid,
        },
        "reason": reason,
        "message": message[:1024],
        "type": type_,
        "source": {"component": "infleet"},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "reportingComponent": "infleet",
        "reportingInstance": "infleet",
    }
    kube.request("POST", f"/api/v1/namespaces/{namespace}/events", body=body)
