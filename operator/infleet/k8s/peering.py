"""Kopf peering for `infleet run --peering`: the peering CRDs, the peering object, and who is
the active instance.

Kopf keeps, in a peering object's status, one entry per running instance:
``{identity: {priority, lifetime, lastseen}}``. An instance pauses its watches while another
live instance has a higher priority, or the same one (then all of them pause). infleet's fleet
loop is not a Kopf handler (it runs on its own timer), so it applies the same rule itself
before every cycle: it acts only when its own entry is there and no other live peer has a
priority >= its own. A stopping instance removes its entry, so a standby takes over within one
interval; a crashed one is ignored once its ``lifetime`` (60 s) has passed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from infleet.k8s.client import APPLY_PATCH, Kube, KubeError

log = logging.getLogger(__name__)

PEERING_GROUP = "kopf.dev"
PEERING_VERSION = "v1"
CLUSTER_PLURAL = "clusterkopfpeerings"
NAMESPACED_PLURAL = "kopfpeerings"


def _crd(kind: str, plural: str, scope: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{PEERING_GROUP}"},
        "spec": {
            "group": PEERING_GROUP,
            "scope": scope,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": PEERING_VERSION,
                    "served": True,
                    "storage": True,
                    # Kopf writes free-form peer entries into status (no status subresource:
                    # it patches the object itself).
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "status": {
                                    "type": "object",
                                    "x-kubernetes-preserve-unknown-fields": True,
                                }
                            },
                        }
                    },
                }
            ],
        },
    }


def peering_crds() -> list[dict[str, Any]]:
    """Kopf's two peering CRDs: cluster-wide (for `-A`) and per namespace (for `-n`)."""
    return [
        _crd("ClusterKopfPeering", CLUSTER_PLURAL, "Cluster"),
        _crd("KopfPeering", NAMESPACED_PLURAL, "Namespaced"),
    ]


def peering_objects(name: str, namespaces: Sequence[str]) -> list[dict[str, Any]]:
    """The peering object(s) an operator instance uses: one cluster-wide object, or one per
    managed namespace."""
    api_version = f"{PEERING_GROUP}/{PEERING_VERSION}"
    if not namespaces:
        return [
            {"apiVersion": api_version, "kind": "ClusterKopfPeering", "metadata": {"name": name}}
        ]
    return [
        {
            "apiVersion": api_version,
            "kind": "KopfPeering",
            "metadata": {"name": name, "namespace": namespace},
        }
        for namespace in namespaces
    ]


def _object_path(obj: Mapping[str, Any]) -> str:
    meta = obj["metadata"]
    base = f"/apis/{PEERING_GROUP}/{PEERING_VERSION}"
    if obj["kind"] == "ClusterKopfPeering":
        return f"{base}/{CLUSTER_PLURAL}/{meta['name']}"
    return f"{base}/namespaces/{meta['namespace']}/{NAMESPACED_PLURAL}/{meta['name']}"


def ensure_peering(
    kube: Kube, name: str, namespaces: Sequence[str], *, timeout: float = 30.0
) -> None:
    """Install the peering CRDs (server-side apply) and create the peering object(s) when
    missing. Without the rights to install CRDs, an administrator must have applied them
    (`kubectl apply -f crds/kopf/peering.yaml`): a clear error says so."""
    for crd in peering_crds():
        path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}"
        try:
            kube.request(
                "PATCH",
                path,
                query={"fieldManager": "infleet", "force": "true"},
                body=crd,
                content_type=APPLY_PATCH,
            )
        except KubeError as exc:
            if exc.status != 403:
                raise
            log.warning("may not install %s (%s); expecting it installed", path, exc.message)
        _wait_established(kube, path, timeout)
    for obj in peering_objects(name, namespaces):
        path = _object_path(obj)
        try:
            kube.request("GET", path)
            continue
        except KubeError as exc:
            if not exc.not_found:
                raise
        try:
            kube.request("POST", path.rsplit("/", 1)[0], body=obj)
        except KubeError as exc:
            # Another instance created it first (a 409 is retried once by the client).
            if exc.status != 409:
                raise


def _wait_established(kube: Kube, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            crd = kube.request("GET", path)
        except KubeError as exc:
            if not exc.not_found:
                raise
            crd = {}
        conditions = (crd.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
            return
        if time.monotonic() > deadline:
            raise KubeError("GET", path, 0, f"CRD not Established after {timeout:.0f}s")
        time.sleep(0.5)


def _parse_time(value: object) -> datetime | None:
    try:
        stamp = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def active_in(
    status: Mapping[str, Any] | None, identity: str, priority: int, now: datetime
) -> tuple[bool, str]:
    """Kopf's rule on one peering object's status: (active?, why).

    Active when our own entry is there (Kopf registered us, so others see us too) and no other
    live entry has a priority >= ours. An entry is live until ``lastseen + lifetime``.
    """
    peers = dict(status or {})
    if not isinstance(peers.get(identity), Mapping):
        return False, "not registered in the peering object yet"
    for other, info in peers.items():
        if other == identity or not isinstance(info, Mapping):
            continue
        seen = _parse_time(info.get("lastseen"))
        lifetime = float(info.get("lifetime", 60))
        if seen is None or seen + timedelta(seconds=lifetime) <= now:
            continue
        theirs = int(info.get("priority", 0))
        if theirs > priority:
            return False, f"{other} has a higher priority ({theirs} > {priority})"
        if theirs == priority:
            return False, f"{other} has the same priority {priority}: all pause (Kopf's rule)"
    return True, "no live peer with a priority >= ours"


def is_active(
    kube: Kube, name: str, namespaces: Sequence[str], identity: str, priority: int
) -> tuple[bool, str]:
    """Whether this instance is the active one in every peering object it takes part in."""
    now = datetime.now(UTC)
    for obj in peering_objects(name, namespaces):
        try:
            body = kube.request("GET", _object_path(obj))
        except KubeError as exc:
            if exc.not_found:
                return False, f"peering object {_object_path(obj)} does not exist"
            raise
        ok, why = active_in((body or {}).get("status"), identity, priority, now)
        if not ok:
            return False, why
    return True, "no live peer with a priority >= ours"
