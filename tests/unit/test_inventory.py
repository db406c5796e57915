"""Pool inventory from Node objects: membership, readiness, quota, quantities."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from infleet.core.inventory import NodeInfo, parse_quantity, pool_inventory


def node(
    name: str,
    labels: dict[str, str],
    gpus: str | None = "8",
    *,
    ready: bool = True,
    cordoned: bool = False,
    resource: str = "nvidia.com/gpu",
) -> dict[str, Any]:
    allocatable = {"cpu": "64", "memory": "512Gi"}
    if gpus is not None:
        allocatable[resource] = gpus
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"unschedulable": True} if cordoned else {},
        "status": {
            "allocatable": allocatable,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8", Decimal(8)),
        ("500m", Decimal("0.5")),
        ("64Gi", Decimal(64 * 2**30)),
        ("1k", Decimal(1000)),
        ("1e3", Decimal(1000)),
        (4, Decimal(4)),
    ],
)
def test_parse_quantity(text: str | int, expected: Decimal) -> None:
    assert parse_quantity(text) == expected


@pytest.mark.parametrize("text", ["", "eight", "8 GPUs", "1Xi"])
def test_parse_quantity_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        parse_quantity(text)


H100 = {"infleet.io/pool": "h100"}

CASES: list[tuple[str, list[dict[str, Any]], int | None, int, int, int]] = [
    # (case, nodes, quota, nodes counted, ready nodes, allocatable)
    ("two ready nodes", [node("a", H100), node("b", H100)], None, 2, 2, 16),
    ("quota caps", [node("a", H100), node("b", H100)], 10, 2, 2, 10),
    ("quota above supply", [node("a", H100)], 100, 1, 1, 8),
    ("not ready is not capacity", [node("a", H100), node("b", H100, ready=False)], None, 2, 1, 8),
    ("cordoned is not capacity", [node("a", H100), node("b", H100, cordoned=True)], None, 2, 2, 8),
    ("other pool ignored", [node("a", H100), node("b", {"pool": "a100"})], None, 1, 1, 8),
    ("no resource on node", [node("a", H100, gpus=None)], None, 1, 1, 0),
    ("extra labels fine", [node("a", {**H100, "zone": "z1"})], None, 1, 1, 8),
]


@pytest.mark.parametrize(
    ("case", "nodes", "quota", "count", "ready", "allocatable"),
    CASES,
    ids=[c[0] for c in CASES],
)
def test_pool_inventory(
    case: str,
    nodes: list[dict[str, Any]],
    quota: int | None,
    count: int,
    ready: int,
    allocatable: int,
) -> None:
    inv = pool_inventory(
        pool="h100",
        node_selector=H100,
        resource_name="nvidia.com/gpu",
        max_accelerators=quota,
        nodes=[NodeInfo.from_object(n) for n in nodes],
        allocated_accelerators=3,
    )
    assert (inv.nodes, inv.ready_nodes, inv.allocatable_accelerators) == (count, ready, allocatable)
    assert inv.free_accelerators == max(0, allocatable - 3)
    assert inv.planning_capacity == allocatable


def test_selector_needs_every_label() -> None:
    selector = {"infleet.io/pool": "h100", "capacity": "spot"}
    nodes = [NodeInfo.from_object(node("a", H100)), NodeInfo.from_object(node("b", selector))]
    inv = pool_inventory(
        pool="spot",
        node_selector=selector,
        resource_name="nvidia.com/gpu",
        max_accelerators=None,
        nodes=nodes,
    )
    assert inv.nodes == 1


def test_empty_selector_matches_nothing() -> None:
    inv = pool_inventory(
        pool="x",
        node_selector={},
        resource_name="nvidia.com/gpu",
        max_accelerators=None,
        nodes=[NodeInfo.from_object(node("a", H100))],
    )
    assert inv.nodes == 0
    assert inv.planning_capacity == 0


def test_unavailable_accelerators_reduce_planning_capacity() -> None:
    inv = pool_inventory(
        pool="wse",
        node_selector={"pool": "wse"},
        resource_name="cerebras.net/wse",
        max_accelerators=None,
        nodes=[
            NodeInfo.from_object(node(f"w{i}", {"pool": "wse"}, "1", resource="cerebras.net/wse"))
            for i in range(4)
        ],
        allocated_accelerators=1,
        unavailable_accelerators=2,
    )
    assert inv.allocatable_accelerators == 4
    assert inv.planning_capacity == 2
    assert inv.free_accelerators == 1
