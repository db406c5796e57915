"""Kopf's peering rule as infleet's fleet loop applies it, and the shipped peering CRDs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from infleet.k8s.peering import active_in, peering_crds, peering_objects

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def peer(priority: int, seen_ago: float, lifetime: int = 60) -> dict[str, Any]:
    return {
        "priority": priority,
        "lifetime": lifetime,
        "lastseen": (NOW - timedelta(seconds=seen_ago)).isoformat(),
    }


@pytest.mark.parametrize(
    ("status", "active", "why"),
    [
        ({"me": peer(5, 1)}, True, "no live peer"),
        ({"me": peer(5, 1), "b": peer(1, 1)}, True, "no live peer"),
        ({"me": peer(5, 1), "b": peer(9, 1)}, False, "b has a higher priority (9 > 5)"),
        ({"me": peer(5, 1), "b": peer(5, 1)}, False, "b has the same priority 5"),
        ({"me": peer(5, 1), "b": peer(9, 61)}, True, "no live peer"),  # b's lifetime passed
        ({"me": peer(5, 1), "b": peer(9, 20, lifetime=10)}, True, "no live peer"),
        ({"me": peer(5, 1), "b": None}, True, "no live peer"),  # removed by Kopf on exit
        ({"b": peer(1, 1)}, False, "not registered"),
        (None, False, "not registered"),
    ],
)
def test_active_only_without_a_live_peer_of_higher_or_equal_priority(
    status: dict[str, Any] | None, active: bool, why: str
) -> None:
    ok, reason = active_in(status, "me", 5, NOW)
    assert ok is active
    assert why in reason


def test_peering_objects_cluster_wide_or_per_namespace() -> None:
    assert peering_objects("infleet", []) == [
        {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "infleet"}}
    ]
    assert [o["metadata"] for o in peering_objects("infleet", ["a", "b"])] == [
        {"name": "infleet", "namespace": "a"},
        {"name": "infleet", "namespace": "b"},
    ]


def test_shipped_peering_crds_match_the_code() -> None:
    path = Path(__file__).parents[2] / "crds" / "kopf" / "peering.yaml"
    shipped = list(yaml.safe_load_all(path.read_text()))
    assert shipped == peering_crds()
    names = {(c["metadata"]["name"], c["spec"]["scope"]) for c in shipped}
    assert names == {
        ("clusterkopfpeerings.kopf.dev", "Cluster"),
        ("kopfpeerings.kopf.dev", "Namespaced"),
    }
