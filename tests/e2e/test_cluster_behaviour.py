"""Garbage collection by the real controller manager, and CRD validation (CEL) at apply time."""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from infleet.sandbox.pools import load_pools

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
MODEL_CRD = REPO / "crds" / "modeldeployments.infleet.io.yaml"
GC_POOL = next(
    p for p in load_pools([Path(__file__).parent / "pools"]) if p.metadata.name == "e2e-gc"
)


def _gone(read: Callable[[], Any]) -> bool:
    try:
        read()
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


def test_deleting_owner_garbage_collects_deployment_replicasets_and_pods(
    kube: Any, namespace: str, make_deployment: Callable[..., dict[str, Any]]
) -> None:
    owner = kube.core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    manifest = make_deployment(
        "owned", 2, GC_POOL.spec.resource_name, 2, GC_POOL.spec.node_selector
    )
    manifest["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    ]
    kube.apps.create_namespaced_deployment(namespace, manifest)
    kube.wait_for(
        "2 ready replicas",
        lambda: (
            (kube.apps.read_namespaced_deployment("owned", namespace).status.ready_replicas or 0)
            == 2
        ),
    )
    replica_sets = kube.apps.list_namespaced_replica_set(
        namespace, label_selector="app=owned"
    ).items
    assert len(replica_sets) == 1
    assert len(kube.pods(namespace, "app=owned")) == 2

    kube.core.delete_namespaced_config_map("owner", namespace)

    kube.wait_for(
        "the Deployment to be garbage-collected",
        lambda: _gone(lambda: kube.apps.read_namespaced_deployment("owned", namespace)),
    )
    kube.wait_for(
        "the ReplicaSet to be garbage-collected",
        lambda: (
            not kube.apps.list_namespaced_replica_set(namespace, label_selector="app=owned").items
        ),
    )
    kube.wait_for("the Pods to be deleted", lambda: not kube.pods(namespace, "app=owned"))


def _crd_rule_message(path: list[str]) -> list[dict[str, str]]:
    """The x-kubernetes-validations of the ModelDeployment schema node at `path`."""
    crd = yaml.safe_load(MODEL_CRD.read_text())
    node = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for key in path:
        node = node["properties"][key]
    return list(node["x-kubernetes-validations"])


def _valid_model_deployment(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "infleet.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": "meta-llama/Llama-3.1-8B-Instruct",
            "template": {"spec": {"containers": [{"name": "server", "image": "vllm/vllm-openai"}]}},
            "slo": {"timeToFirstTokenMs": 500},
            "variants": [{"acceleratorType": "nvidia-l4", "maxRequestsPerSecond": 4}],
            "replicas": {"min": 1, "max": 3},
        },
    }


def _kubectl_apply(
    cluster: Any, namespace: str, manifest: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            cluster.kubectl,
            "--kubeconfig",
            str(cluster.kubeconfig),
            "-n",
            namespace,
            "apply",
            "-f",
            "-",
        ],
        input=json.dumps(manifest),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("schema_path", "rule_fragment", "break_it"),
    [
        (["spec", "replicas"], "self.min <= self.max", {"replicas": {"min": 5, "max": 2}}),
        (["spec", "slo"], "timeToFirstTokenMs", {"slo": {"percentile": 95}}),
    ],
    ids=["replicas-min-above-max", "slo-without-latency-target"],
)
def test_cel_rule_rejects_bad_model_deployment_at_kubectl_apply(
    cluster: Any,
    namespace: str,
    schema_path: list[str],
    rule_fragment: str,
    break_it: dict[str, Any],
) -> None:
    (rule,) = [r for r in _crd_rule_message(schema_path) if rule_fragment in r["rule"]]
    good = _valid_model_deployment("good-model")
    accepted = _kubectl_apply(cluster, namespace, good)
    assert accepted.returncode == 0, accepted.stderr

    bad = copy.deepcopy(_valid_model_deployment("bad-model"))
    bad["spec"].update(break_it)
    rejected = _kubectl_apply(cluster, namespace, bad)

    assert rejected.returncode != 0
    assert rule["message"] in rejected.stderr
    assert "bad-model" in rejected.stderr
