"""Pools -> kwok Node manifests: counts, labels, taints, extended resources."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infleet.api.pool import AcceleratorPool, Toleration
from infleet.sandbox.kube import node_up_to_date
from infleet.sandbox.nodes import (
    KWOK_ANNOTATION,
    POOL_LABEL,
    all_nodes,
    node_count,
    pool_nodes,
    taints_for,
)


def pool(
    name: str = "h100",
    per_node: int = 8,
    quota: int | None = 16,
    resource: str = "nvidia.com/gpu",
    selector: dict[str, str] | None = None,
    tolerations: list[dict[str, Any]] | None = None,
) -> AcceleratorPool:
    spec: dict[str, Any] = {
        "acceleratorType": "nvidia-h100-80gb",
        "resourceName": resource,
        "acceleratorsPerNode": per_node,
        "nodeSelector": selector or {"pool": name},
        "costPerAcceleratorHour": 2.0,
        "tolerations": tolerations or [],
    }
    if quota is not None:
        spec["maxAccelerators"] = quota
    return AcceleratorPool.model_validate(
        {
            "apiVersion": "infleet.io/v1alpha1",
            "kind": "AcceleratorPool",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


@pytest.mark.parametrize(
    ("per_node", "quota", "default", "expected"),
    [
        (8, 16, 2, 2),  # exact multiple
        (8, 20, 2, 3),  # 20/8 = 2.5: a third node, so the quota is reachable
        (1, 4, 2, 4),  # Cerebras-style: one accelerator per node
        (8, 0, 2, 0),  # zero quota: no nodes
        (8, None, 3, 3),  # no quota: the default count
        (4, 1, 2, 1),
    ],
)
def test_node_count(per_node: int, quota: int | None, default: int, expected: int) -> None:
    assert node_count(pool(per_node=per_node, quota=quota), default) == expected


def test_node_manifest_carries_selector_resource_and_kwok_annotation() -> None:
    nodes = pool_nodes(
        pool(
            name="wse",
            per_node=1,
            quota=2,
            resource="cerebras.net/wse",
            selector={"infleet.io/accelerator": "cs3"},
        )
    )
    assert [n["metadata"]["name"] for n in nodes] == ["wse-0000", "wse-0001"]
    node = nodes[1]
    assert node["metadata"]["labels"]["infleet.io/accelerator"] == "cs3"
    assert node["metadata"]["labels"][POOL_LABEL] == "wse"
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == "wse-0001"
    assert node["metadata"]["annotations"] == {KWOK_ANNOTATION: "fake"}
    assert node["status"]["allocatable"]["cerebras.net/wse"] == "1"
    assert node["status"]["capacity"]["cerebras.net/wse"] == "1"
    assert node["status"]["allocatable"]["pods"] == "110"
    assert node["spec"] == {}


@pytest.mark.parametrize(
    ("tolerations", "expected"),
    [
        (
            [{"key": "spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"}],
            [{"key": "spot", "value": "true", "effect": "NoSchedule"}],
        ),
        (
            [{"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}],
            [{"key": "dedicated", "effect": "NoExecute"}],
        ),
        # No effect on the toleration: it matches every effect; NoSchedule is one of them.
        (
            [{"key": "gpu", "value": "h100"}],
            [{"key": "gpu", "value": "h100", "effect": "NoSchedule"}],
        ),
        # Tolerate-everything implies no particular taint.
        ([{"operator": "Exists"}], []),
        # Duplicates collapse.
        (
            [{"key": "a", "value": "1"}, {"key": "a", "value": "1"}],
            [{"key": "a", "value": "1", "effect": "NoSchedule"}],
        ),
    ],
)
def test_taints_for(tolerations: list[dict[str, Any]], expected: list[dict[str, str]]) -> None:
    parsed = [Toleration.model_validate(t) for t in tolerations]
    assert taints_for(parsed) == expected


def test_tainted_pool_nodes_get_the_taints() -> None:
    spot = pool(tolerations=[{"key": "capacity", "value": "spot", "effect": "NoSchedule"}])
    for node in pool_nodes(spot):
        assert node["spec"]["taints"] == [
            {"key": "capacity", "value": "spot", "effect": "NoSchedule"}
        ]


def test_all_nodes_rejects_duplicate_pools() -> None:
    with pytest.raises(ValueError, match="given twice"):
        all_nodes([pool(), pool()])


def _tolerates(toleration: dict[str, Any], taint: dict[str, str]) -> bool:
    """Kubernetes's toleration-matches-taint rule, written out independently for the property."""
    if toleration.get("effect") and toleration["effect"] != taint["effect"]:
        return False
    if not toleration.get("key"):
        return toleration.get("operator") == "Exists"
    if toleration["key"] != taint["key"]:
        return False
    if toleration.get("operator", "Equal") == "Exists":
        return True
    return toleration.get("value", "") == taint.get("value", "")


toleration_strategy = st.builds(
    lambda key, exists, value, effect: {
        "key": key,
        "operator": "Exists" if exists else "Equal",
        **({} if exists else {"value": value}),
        **({"effect": effect} if effect else {}),
    },
    st.sampled_from(["spot", "dedicated", "gpu"]),
    st.booleans(),
    st.sampled_from(["true", "h100", ""]),
    st.sampled_from([None, "NoSchedule", "NoExecute", "PreferNoSchedule"]),
)


@given(st.lists(toleration_strategy, max_size=4), st.integers(1, 16), st.integers(0, 200))
def test_every_taint_is_tolerated_by_the_pools_tolerations(
    tolerations: list[dict[str, Any]], per_node: int, quota: int
) -> None:
    p = pool(per_node=per_node, quota=quota, tolerations=tolerations)
    nodes = pool_nodes(p)
    assert len(nodes) == math.ceil(quota / per_node)
    assert sum(int(n["status"]["allocatable"]["nvidia.com/gpu"]) for n in nodes) >= quota
    for node in nodes:
        for taint in node["spec"].get("taints", []):
            assert any(_tolerates(t, taint) for t in tolerations)


def _as_existing(manifest: dict[str, Any]) -> dict[str, Any]:
    """The node as the API server returns it after kwok and the controllers touched it."""
    node = copy.deepcopy(manifest)
    node["metadata"]["labels"]["node.kubernetes.io/exclude-from-external-load-balancers"] = ""
    node["metadata"]["annotations"]["node.alpha.kubernetes.io/ttl"] = "0"
    node["metadata"]["resourceVersion"] = "42"
    node["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    return node


def _changed(manifest: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    node = _as_existing(manifest)
    target = node
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value
    return node


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ((), None, True),  # only additions by others: nothing to do
        (("status", "capacity", "memory"), "1Ti", True),  # the API server's canonical 1024Gi
        (("metadata", "labels", "pool"), "other", False),
        (("spec", "taints"), [{"key": "x", "effect": "NoSchedule"}], False),
        (("status", "capacity", "nvidia.com/gpu"), "4", False),
        (("metadata", "annotations"), {}, False),  # kwok's annotation lost
    ],
)
def test_node_up_to_date(path: tuple[str, ...], value: Any, expected: bool) -> None:
    wanted = pool_nodes(pool(name="h100", quota=8))[0]
    current = _changed(wanted, path, value) if path else _as_existing(wanted)
    assert node_up_to_date(current, wanted) is expected
