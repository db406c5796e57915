"""Deployment and Service builders: names, labels, placement, accelerators, overrides."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infleet.api import AcceleratorPool, ModelDeployment
from infleet.core.children import (
    MANAGED_BY_LABEL,
    MAX_NAME,
    POOL_ANNOTATION,
    SPEC_HASH_ANNOTATION,
    STARTUP_ANNOTATION,
    deployment_manifest,
    deployment_name,
    dns_label,
    label_value,
    service_manifest,
    spec_hash,
)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def make_model(**spec: Any) -> ModelDeployment:
    body: dict[str, Any] = {
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "slo": {"timeToFirstTokenMs": 500},
        "variants": [
            {"acceleratorType": "nvidia-h100-80gb", "maxRequestsPerSecond": 4},
            {
                "name": "wafer",
                "acceleratorType": "cerebras-cs3",
                "acceleratorsPerReplica": 2,
                "maxRequestsPerSecond": 40,
                "args": ["--fast"],
                "env": [{"name": "MODE", "value": "wafer"}, {"name": "NEW", "value": "1"}],
            },
        ],
    }
    body.update(spec)
    return ModelDeployment.model_validate(
        {"metadata": {"name": "llama", "namespace": "team-a"}, "spec": body}
    )


def make_pool(name: str = "h100-spot", **spec: Any) -> AcceleratorPool:
    body: dict[str, Any] = {
        "acceleratorType": "nvidia-h100-80gb",
        "acceleratorsPerNode": 8,
        "nodeSelector": {"infleet.io/pool": name, "zone": "a"},
        "costPerAcceleratorHour": 2.5,
        "tolerations": [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}],
    }
    body.update(spec)
    return AcceleratorPool.model_validate({"metadata": {"name": name}, "spec": body})


TEMPLATE = {
    "metadata": {"labels": {"team": "a"}, "annotations": {"note": "x"}},
    "spec": {
        "nodeSelector": {"zone": "b", "disk": "ssd"},
        "tolerations": [{"key": "gpu", "operator": "Exists"}],
        "containers": [
            {"name": "proxy", "image": "envoy"},
            {
                "name": "server",
                "image": "vllm",
                "args": ["--old"],
                "env": [{"name": "MODE", "value": "gpu"}, {"name": "KEEP", "value": "y"}],
                "resources": {"requests": {"cpu": "4"}},
                "ports": [{"name": "api", "containerPort": 9000}],
            },
        ],
    },
}


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (("llama", "nvidia-h100-80gb", "h100-spot"), "llama-nvidia-h100-80gb-h100-spot"),
        (("a",), "a"),
        (("m", "v", "pool.with.dots"), "m-v-pool-with-dots-" + sha("m-v-pool.with.dots")),
        (("Llama",), "llama-" + sha("Llama")),
        (("7b",), "x-7b-" + sha("7b")),
    ],
)
def test_dns_label_keeps_valid_names_and_hashes_cleaned_ones(
    parts: tuple[str, ...], expected: str
) -> None:
    assert dns_label(*parts) == expected


def test_long_names_are_cut_to_63_with_a_stable_hash() -> None:
    name = deployment_name("m" * 40, "nvidia-h100-80gb", "h100-spot-us-east-1")
    assert len(name) == MAX_NAME
    assert name == deployment_name("m" * 40, "nvidia-h100-80gb", "h100-spot-us-east-1")
    assert name != deployment_name("m" * 40, "nvidia-h100-80gb", "h100-spot-us-east-2")
    assert name.startswith("m" * 40 + "-nvidia-")


@given(st.lists(st.text(min_size=1, max_size=80), min_size=1, max_size=3))
def test_dns_label_is_always_valid(parts: list[str]) -> None:
    result = dns_label(*parts)
    assert len(result) <= MAX_NAME
    assert DNS_1035.match(result), result


@given(
    st.text(alphabet="abcdefghij-", min_size=1, max_size=120),
    st.text(alphabet="abcdefghij-", min_size=1, max_size=120),
)
def test_dns_label_distinct_inputs_stay_distinct(a: str, b: str) -> None:
    if a != b:
        assert dns_label(a) != dns_label(b)


def test_label_value_cut_with_hash() -> None:
    assert label_value("short") == "short"
    long = "x" * 70
    assert len(label_value(long)) == MAX_NAME
    assert label_value(long) != label_value("x" * 71)


def test_deployment_places_the_server_on_the_pool() -> None:
    model = make_model(template=TEMPLATE)
    pool = make_pool()
    manifest = deployment_manifest(
        model, variant="nvidia-h100-80gb", pool=pool, replicas=3, owner_uid="uid-1"
    )
    meta = manifest["metadata"]
    assert meta["name"] == "llama-nvidia-h100-80gb-h100-spot"
    assert meta["namespace"] == "team-a"
    labels = {
        MANAGED_BY_LABEL: "infleet",
        "infleet.io/model": "llama",
        "infleet.io/variant": "nvidia-h100-80gb",
        "infleet.io/pool": "h100-spot",
    }
    assert meta["labels"] == labels
    assert meta["annotations"][POOL_ANNOTATION] == "h100-spot"
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "infleet.io/v1alpha1",
            "kind": "ModelDeployment",
            "name": "llama",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    spec = manifest["spec"]
    assert spec["replicas"] == 3
    assert spec["selector"] == {"matchLabels": labels}
    pod = spec["template"]
    assert pod["metadata"]["labels"] == {"team": "a", **labels}
    # The template's annotations stay; the variant's start-up time (API default 300) is added.
    assert pod["metadata"]["annotations"] == {"note": "x", STARTUP_ANNOTATION: "300"}
    # The pool's selector wins over the template's on the same key; other keys stay.
    assert pod["spec"]["nodeSelector"] == {
        "zone": "a",
        "disk": "ssd",
        "infleet.io/pool": "h100-spot",
    }
    assert pod["spec"]["tolerations"] == [
        {"key": "gpu", "operator": "Exists"},
        {"key": "spot", "operator": "Exists", "effect": "NoSchedule"},
    ]
    proxy, server = pod["spec"]["containers"]
    assert "resources" not in proxy
    assert server["resources"] == {
        "requests": {"cpu": "4", "nvidia.com/gpu": "1"},
        "limits": {"nvidia.com/gpu": "1"},
    }
    # The h100 variant has no overrides.
    assert server["args"] == ["--old"]
    assert server["env"] == [{"name": "MODE", "value": "gpu"}, {"name": "KEEP", "value": "y"}]
    # The model's own template is not modified by building.
    assert "nvidia.com/gpu" not in str(model.spec.template)


def test_variant_overrides_and_resource_name() -> None:
    model = make_model(template=TEMPLATE)
    pool = make_pool("wafer", acceleratorType="cerebras-cs3", resourceName="cerebras.net/cs3")
    manifest = deployment_manifest(model, variant="wafer", pool=pool, replicas=1, owner_uid="u")
    server = manifest["spec"]["template"]["spec"]["containers"][1]
    assert server["args"] == ["--fast"]
    assert server["env"] == [
        {"name": "KEEP", "value": "y"},
        {"name": "MODE", "value": "wafer"},
        {"name": "NEW", "value": "1"},
    ]
    assert server["resources"]["limits"] == {"cerebras.net/cs3": "2"}


def test_first_container_without_a_server_name() -> None:
    template = {"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}}
    model = make_model(template=template)
    manifest = deployment_manifest(
        model, variant="nvidia-h100-80gb", pool=make_pool(), replicas=1, owner_uid="u"
    )
    first, second = manifest["spec"]["template"]["spec"]["containers"]
    assert first["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert "resources" not in second


def test_empty_template_gets_the_engine_default_server() -> None:
    model = make_model()
    manifest = deployment_manifest(
        model, variant="nvidia-h100-80gb", pool=make_pool(), replicas=2, owner_uid="u"
    )
    (server,) = manifest["spec"]["template"]["spec"]["containers"]
    assert server["name"] == "server"
    assert server["args"][-1] == "meta-llama/Llama-3.1-8B-Instruct"
    assert server["resources"]["requests"] == {"nvidia.com/gpu": "1"}


def test_unknown_variant_and_negative_replicas_are_errors() -> None:
    with pytest.raises(KeyError, match="no variant 'tpu'"):
        deployment_manifest(
            make_model(), variant="tpu", pool=make_pool(), replicas=1, owner_uid="u"
        )
    with pytest.raises(ValueError, match="replicas must be >= 0"):
        deployment_manifest(
            make_model(), variant="wafer", pool=make_pool(), replicas=-1, owner_uid="u"
        )


def test_spec_hash_tracks_content_and_is_stable() -> None:
    model = make_model(template=TEMPLATE)
    pool = make_pool()
    a = deployment_manifest(model, variant="nvidia-h100-80gb", pool=pool, replicas=3, owner_uid="u")
    b = deployment_manifest(model, variant="nvidia-h100-80gb", pool=pool, replicas=3, owner_uid="u")
    c = deployment_manifest(model, variant="nvidia-h100-80gb", pool=pool, replicas=4, owner_uid="u")
    hash_a = a["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
    assert hash_a == b["metadata"]["annotations"][SPEC_HASH_ANNOTATION] == spec_hash(a)
    assert hash_a != c["metadata"]["annotations"][SPEC_HASH_ANNOTATION]


def test_pods_carry_their_variants_startup_seconds() -> None:
    variants = [
        {"acceleratorType": "nvidia-h100-80gb", "maxRequestsPerSecond": 4, "startupSeconds": 45},
        {"name": "wafer", "acceleratorType": "cerebras-cs3", "maxRequestsPerSecond": 40,
         "startupSeconds": 0},
    ]  # fmt: skip
    model = make_model(variants=variants)
    got = {
        variant: deployment_manifest(
            model, variant=variant, pool=make_pool(), replicas=1, owner_uid="u"
        )["spec"]["template"]["metadata"]["annotations"][STARTUP_ANNOTATION]
        for variant in ("nvidia-h100-80gb", "wafer")
    }
    assert got == {"nvidia-h100-80gb": "45", "wafer": "0"}


def test_service_selects_every_pod_of_the_model() -> None:
    service = service_manifest(make_model(template=TEMPLATE), owner_uid="u")
    assert service["metadata"]["name"] == "llama"
    assert service["spec"]["selector"] == {MANAGED_BY_LABEL: "infleet", "infleet.io/model": "llama"}
    assert service["spec"]["ports"] == [
        {"name": "api", "port": 9000, "targetPort": 9000, "protocol": "TCP"}
    ]
    default = service_manifest(make_model(), owner_uid="u")
    assert default["spec"]["ports"] == [
        {"name": "http", "port": 8000, "targetPort": 8000, "protocol": "TCP"}
    ]


def _packing_terms(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    affinity = manifest["spec"]["template"]["spec"].get("affinity") or {}
    preferred = (affinity.get("podAffinity") or {}).get(
        "preferredDuringSchedulingIgnoredDuringExecution"
    )
    return list(preferred or [])


def test_partial_node_replicas_prefer_nodes_with_infleet_pods_of_the_pool() -> None:
    """1 of 8 accelerators per replica: packed next to infleet's pods on the same pool (any
    namespace), so whole nodes stay free for replicas that need them."""
    manifest = deployment_manifest(
        make_model(), variant="nvidia-h100-80gb", pool=make_pool(), replicas=2, owner_uid="u"
    )
    assert _packing_terms(manifest) == [
        {
            "weight": 100,
            "podAffinityTerm": {
                "labelSelector": {
                    "matchLabels": {MANAGED_BY_LABEL: "infleet", "infleet.io/pool": "h100-spot"}
                },
                "namespaceSelector": {},
                "topologyKey": "kubernetes.io/hostname",
            },
        }
    ]


def test_whole_node_replicas_are_not_packed_and_template_affinity_is_kept() -> None:
    wafer_pool = make_pool("cs3", acceleratorType="cerebras-cs3", acceleratorsPerNode=2)
    whole = deployment_manifest(
        make_model(), variant="wafer", pool=wafer_pool, replicas=1, owner_uid="u"
    )
    assert _packing_terms(whole) == []
    own = {"weight": 5, "podAffinityTerm": {"topologyKey": "zone", "labelSelector": {}}}
    template = {
        "spec": {
            "affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [own]}},
            "containers": [{"name": "server", "image": "vllm"}],
        }
    }
    model = make_model(template=template)
    manifest = deployment_manifest(
        model, variant="nvidia-h100-80gb", pool=make_pool(), replicas=1, owner_uid="u"
    )
    terms = _packing_terms(manifest)
    assert terms[0] == own
    assert [t["weight"] for t in terms] == [5, 100]
    # The model's own template is not modified in place.
    assert model.spec.template["spec"]["affinity"]["podAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ] == [own]
