"""Pure builders of the objects infleet manages for a model: Deployments and a Service.

Like sample-controller's ``newDeployment(foo)``: model + placement + pool in, manifest out, no
API calls. The manifests are what infleet writes with server-side apply, so they contain only
the fields infleet owns.

Decisions written down here (the design brief is silent on them):

* **Which container gets the accelerators.** The container named ``server`` when the template
  has one, otherwise the first container. Sidecars (log shippers, proxies) therefore never
  receive accelerators by accident as long as the server comes first or is named ``server``.
* **Variant overrides.** ``args`` replace the server container's args; ``env`` entries are
  merged by name into the server container's env (the variant wins).
* **Pool placement.** The pool's ``nodeSelector`` is merged over the template's (the pool wins)
  and the pool's tolerations are appended to the template's (duplicates dropped).
* **Names.** Deployment ``<model>-<variant>-<pool>``, Service ``<model>``, both DNS-1035 labels
  within 63 characters. A name that had to be shortened or cleaned (dots, leading digit) gets a
  stable 10-hex-digit hash of the full name, so two placements never share a name.
* **Identity.** Label values are length-limited, so the exact model, variant and pool names are
  also written as annotations, which is what the operator reads back.
* **Start-up time on the pods.** Every pod carries ``infleet.io/startup-seconds`` (the
  variant's ``startupSeconds``). Nothing in Kubernetes reads it; it tells people and tools how
  long the replica is expected to take to become Ready, and the sandbox's kwok holds a pod
  not-Ready for that long (times its start-up scale). Like any pod-template field, changing a
  variant's ``startupSeconds`` rolls that variant's pods once.
* **Change detection.** ``infleet.io/spec-hash`` is a hash of the rest of the manifest; the
  operator skips the write when the live object carries the same hash (no churn on restart).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from infleet.api import API_VERSION, AcceleratorPool, Engine, ModelDeployment, Variant

MAX_NAME = 63
"""Longest name or label value Kubernetes accepts for a DNS label."""
HASH_DIGITS = 10

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "infleet"
MODEL_LABEL = "infleet.io/model"
VARIANT_LABEL = "infleet.io/variant"
POOL_LABEL = "infleet.io/pool"
MODEL_ANNOTATION = "infleet.io/model"
VARIANT_ANNOTATION = "infleet.io/variant"
POOL_ANNOTATION = "infleet.io/pool"
SPEC_HASH_ANNOTATION = "infleet.io/spec-hash"
STARTUP_ANNOTATION = "infleet.io/startup-seconds"
"""Pod annotation: the variant's ``startupSeconds`` (informational; the sandbox's kwok reads it)."""
SERVER_CONTAINER = "server"

_DEFAULT_SERVERS: dict[Engine, tuple[str, list[str], int]] = {
    # image, args (model id appended), port
    Engine.VLLM: ("vllm/vllm-openai:latest", ["--port", "8000", "--model"], 8000),
    Engine.SGLANG: ("lmsysorg/sglang:latest", ["--port", "30000", "--model-path"], 30000),
    Engine.TGI: (
        "huggingface/text-generation-inference:latest",
        ["--port", "80", "--model-id"],
        80,
    ),
    Engine.CUSTOM: ("", [], 8000),
}

_NOT_LABEL_CHARS = re.compile(r"[^a-z0-9-]")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_DIGITS]


def dns_label(*parts: str) -> str:
    """Join ``parts`` with ``-`` into a DNS-1035 label of at most 63 characters.

    Unchanged when already valid; otherwise cleaned, cut and suffixed with a stable hash of
    the full joined name, so distinct inputs keep distinct results.
    """
    full = "-".join(parts)
    cleaned = _NOT_LABEL_CHARS.sub("-", full.lower())
    if not cleaned[:1].isalpha():
        cleaned = "x-" + cleaned
    if cleaned == full and len(full) <= MAX_NAME and not full.endswith("-"):
        return full
    head = cleaned[: MAX_NAME - HASH_DIGITS - 1].rstrip("-")
    return f"{head}-{_digest(full)}"


def label_value(value: str) -> str:
    """``value`` as a label value: unchanged within 63 characters, else cut with a hash."""
    if len(value) <= MAX_NAME:
        return value
    head = value[: MAX_NAME - HASH_DIGITS - 1].rstrip("-_.")
    return f"{head}-{_digest(value)}"


def deployment_name(model: str, variant: str, pool: str) -> str:
    """Name of the Deployment running ``variant`` of ``model`` on ``pool``."""
    return dns_label(model, variant, pool)


def service_name(model: str) -> str:
    """Name of the model's Service."""
    return dns_label(model)


def model_labels(model: str) -> dict[str, str]:
    """Labels every object and pod of ``model`` carries (the Service selects on these)."""
    return {MANAGED_BY_LABEL: MANAGED_BY, MODEL_LABEL: label_value(model)}


def placement_labels(model: str, variant: str, pool: str) -> dict[str, str]:
    """Labels of one placement's Deployment and pods (its selector)."""
    return {
        **model_labels(model),
        VARIANT_LABEL: label_value(variant),
        POOL_LABEL: label_value(pool),
    }


def owner_reference(model: ModelDeployment, uid: str) -> dict[str, Any]:
    """Controller owner reference to the ModelDeployment, so garbage collection removes
    children when the model is deleted."""
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelDeployment",
        "name": model.metadata.name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def spec_hash(manifest: Mapping[str, Any]) -> str:
    """Stable hash of a manifest, ignoring its own ``infleet.io/spec-hash`` annotation."""
    body = copy.deepcopy(dict(manifest))
    annotations = body.get("metadata", {}).get("annotations", {})
    annotations.pop(SPEC_HASH_ANNOTATION, None)
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def _default_container(model: ModelDeployment) -> dict[str, Any]:
    image, args, port = _DEFAULT_SERVERS[model.spec.engine]
    container: dict[str, Any] = {
        "name": SERVER_CONTAINER,
        "image": image or "busybox:latest",
        "ports": [{"name": "http", "containerPort": port}],
    }
    if args:
        container["args"] = [*args, model.spec.model]
    return container


def server_container_index(containers: list[dict[str, Any]]) -> int:
    """Index of the container that serves the model (see the module docstring)."""
    for index, container in enumerate(containers):
        if container.get("name") == SERVER_CONTAINER:
            return index
    return 0


def _merge_env(existing: list[dict[str, Any]], extra: list[dict[str, str]]) -> list[dict[str, Any]]:
    names = {e["name"] for e in extra}
    return [e for e in existing if e.get("name") not in names] + extra


def _merge_tolerations(
    existing: list[dict[str, Any]], extra: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    merged = list(existing)
    for toleration in extra:
        if toleration not in merged:
            merged.append(toleration)
    return merged


def _variant(model: ModelDeployment, name: str) -> Variant:
    for variant in model.spec.variants:
        if variant.resolved_name == name:
            return variant
    known = ", ".join(v.resolved_name for v in model.spec.variants)
    raise KeyError(f"ModelDeployment {model.metadata.name} has no variant {name!r} ({known})")


def pod_template(
    model: ModelDeployment, variant_name: str, pool: AcceleratorPool
) -> dict[str, Any]:
    """The model's pod template with the pool's placement, accelerators and variant overrides."""
    variant = _variant(model, variant_name)
    template = copy.deepcopy(model.spec.template)
    metadata = template.setdefault("metadata", {})
    spec = template.setdefault("spec", {})
    containers: list[dict[str, Any]] = spec.setdefault("containers", [])
    if not containers:
        containers.append(_default_container(model))
    server = containers[server_container_index(containers)]

    count = str(variant.accelerators_per_replica)
    resources = server.setdefault("resources", {})
    for kind in ("requests", "limits"):
        resources.setdefault(kind, {})[pool.spec.resource_name] = count
    if variant.args is not None:
        server["args"] = list(variant.args)
    if variant.env:
        extra = [{"name": e.name, "value": e.value} for e in variant.env]
        server["env"] = _merge_env(server.get("env") or [], extra)

    spec["nodeSelector"] = {**(spec.get("nodeSelector") or {}), **pool.spec.node_selector}
    pool_tolerations = [
        t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in pool.spec.tolerations
    ]
    if pool_tolerations or spec.get("tolerations"):
        spec["tolerations"] = _merge_tolerations(spec.get("tolerations") or [], pool_tolerations)
    if variant.accelerators_per_replica < pool.spec.accelerators_per_node:
        _prefer_packing(spec, pool.metadata.name)
    labels = placement_labels(model.metadata.name, variant_name, pool.metadata.name)
    metadata["labels"] = {**(metadata.get("labels") or {}), **labels}
    metadata["annotations"] = {
        **(metadata.get("annotations") or {}),
        STARTUP_ANNOTATION: str(variant.startup_seconds),
    }
    return template


PACKING_WEIGHT = 100
"""Weight of the preferred pod affinity that packs partial-node replicas (the maximum)."""


def _prefer_packing(spec: dict[str, Any], pool_name: str) -> None:
    """Ask the scheduler to put a replica that uses part of a node next to infleet's other
    replicas on the pool (preferred pod affinity per node).

    The planner counts a pool's accelerators, not each node's: left to the scheduler's default
    spreading, eight 1-accelerator replicas on two 8-accelerator nodes take four on each, and
    a replica that needs a whole node finds no room although the pool has 8 free. Packing
    keeps whole nodes free. The template's own affinity terms are kept.
    """
    affinity = spec.setdefault("affinity", {})
    pod_affinity = affinity.setdefault("podAffinity", {})
    preferred: list[dict[str, Any]] = pod_affinity.setdefault(
        "preferredDuringSchedulingIgnoredDuringExecution", []
    )
    term = {
        "weight": PACKING_WEIGHT,
        "podAffinityTerm": {
            "labelSelector": {
                "matchLabels": {MANAGED_BY_LABEL: MANAGED_BY, POOL_LABEL: label_value(pool_name)}
            },
            "namespaceSelector": {},
            "topologyKey": "kubernetes.io/hostname",
        },
    }
    if term not in preferred:
        preferred.append(term)


def deployment_manifest(
    model: ModelDeployment,
    *,
    variant: str,
    pool: AcceleratorPool,
    replicas: int,
    owner_uid: str,
) -> dict[str, Any]:
    """The Deployment for ``replicas`` of ``variant`` of ``model`` on ``pool``."""
    if replicas < 0:
        raise ValueError(f"replicas must be >= 0, got {replicas}")
    name = model.metadata.name
    labels = placement_labels(name, variant, pool.metadata.name)
    manifest: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(name, variant, pool.metadata.name),
            "namespace": model.metadata.namespace,
            "labels": labels,
            "annotations": {
                MODEL_ANNOTATION: name,
                VARIANT_ANNOTATION: variant,
                POOL_ANNOTATION: pool.metadata.name,
            },
            "ownerReferences": [owner_reference(model, owner_uid)],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": pod_template(model, variant, pool),
        },
    }
    manifest["metadata"]["annotations"][SPEC_HASH_ANNOTATION] = spec_hash(manifest)
    return manifest


def _service_ports(model: ModelDeployment) -> list[dict[str, Any]]:
    containers = list((model.spec.template.get("spec") or {}).get("containers") or [])
    if not containers:
        containers = [_default_container(model)]
    server = containers[server_container_index(containers)]
    ports: list[dict[str, Any]] = []
    for index, port in enumerate(server.get("ports") or []):
        number = port.get("containerPort")
        if not isinstance(number, int):
            continue
        ports.append(
            {
                "name": str(port.get("name") or f"port-{index}"),
                "port": number,
                "targetPort": number,
                "protocol": str(port.get("protocol") or "TCP"),
            }
        )
    if not ports:
        default_port = _DEFAULT_SERVERS[model.spec.engine][2]
        ports.append(
            {"name": "http", "port": default_port, "targetPort": default_port, "protocol": "TCP"}
        )
    return ports


def service_manifest(model: ModelDeployment, *, owner_uid: str) -> dict[str, Any]:
    """One Service over all the model's pods, whatever variant and pool they run on."""
    labels = model_labels(model.metadata.name)
    manifest: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(model.metadata.name),
            "namespace": model.metadata.namespace,
            "labels": labels,
            "annotations": {MODEL_ANNOTATION: model.metadata.name},
            "ownerReferences": [owner_reference(model, owner_uid)],
        },
        "spec": {"selector": labels, "ports": _service_ports(model)},
    }
    manifest["metadata"]["annotations"][SPEC_HASH_ANNOTATION] = spec_hash(manifest)
    return manifest
