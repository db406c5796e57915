"""`infleet plan`: the real CLI on the real planner, over examples/ and malformed input."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from infleet.api.manifests import load_manifests
from infleet.cli import main
from infleet.core.fleet import build_problem
from infleet.core.planner import solve_reference_milp

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def examples_plan() -> dict[str, Any]:
    code, out, err = run("plan", "-f", str(EXAMPLES), "-o", "json")
    assert code == 0, err
    doc: dict[str, Any] = json.loads(out)
    return doc


def test_json_has_exactly_the_documented_fields(examples_plan: dict[str, Any]) -> None:
    assert set(examples_plan) == {"costPerHour", "placements", "models", "solver"}
    assert examples_plan["placements"], "the examples fleet places something"
    for placement in examples_plan["placements"]:
        assert set(placement) == {
            "namespace",
            "model",
            "variant",
            "pool",
            "replicas",
            "accelerators",
            "costPerHour",
        }
    for model in examples_plan["models"]:
        assert set(model) == {
            "namespace",
            "name",
            "demandRequestsPerSecond",
            "capacityRequestsPerSecond",
            "unmetRequestsPerSecond",
            "reason",
            "explanation",
        }
        assert model["explanation"]
    assert set(examples_plan["solver"]) == {"name", "seconds", "optimalityGap"}


def test_examples_plan_respects_pools_and_models(examples_plan: dict[str, Any]) -> None:
    loaded = load_manifests([EXAMPLES])
    pools = {p.metadata.name: p for p in loaded.pools}
    models = {(m.metadata.namespace, m.metadata.name): m for m in loaded.models}
    used: dict[str, int] = defaultdict(int)
    replicas: dict[tuple[str, str], int] = defaultdict(int)
    for placement in examples_plan["placements"]:
        pool = pools[placement["pool"]]
        model = models[(placement["namespace"], placement["model"])]
        variant = next(v for v in model.spec.variants if v.name == placement["variant"])
        assert variant.accelerator_type == pool.spec.accelerator_type
        assert placement["accelerators"] == placement["replicas"] * variant.accelerators_per_replica
        expected_cost = (
            0.0
            if pool.spec.capacity_type == "reserved"
            else placement["accelerators"] * pool.spec.cost_per_accelerator_hour
        )
        assert placement["costPerHour"] == pytest.approx(expected_cost)
        used[placement["pool"]] += placement["accelerators"]
        replicas[(placement["namespace"], placement["model"])] += placement["replicas"]
    for name, accelerators in used.items():
        quota = pools[name].spec.max_accelerators
        assert quota is None or accelerators <= quota, name
    for key, model in models.items():
        assert model.spec.replicas.min <= replicas[key] <= model.spec.replicas.max
    total = sum(p["costPerHour"] for p in examples_plan["placements"])
    assert examples_plan["costPerHour"] == pytest.approx(total, abs=1e-3)


def test_examples_plan_meets_demand_at_reference_cost(examples_plan: dict[str, Any]) -> None:
    for model in examples_plan["models"]:
        assert model["unmetRequestsPerSecond"] == 0, model
        assert model["reason"] is None
        assert model["capacityRequestsPerSecond"] >= model["demandRequestsPerSecond"]
    loaded = load_manifests([EXAMPLES])
    reference = solve_reference_milp(build_problem(loaded.pools, loaded.models).problem)
    assert examples_plan["costPerHour"] == pytest.approx(reference.cost_per_hour, abs=1e-3)


def test_yaml_and_table_outputs(examples_plan: dict[str, Any]) -> None:
    code, out, _ = run("plan", "-f", str(EXAMPLES), "-o", "yaml")
    assert code == 0
    doc = yaml.safe_load(out)
    doc["solver"]["seconds"] = examples_plan["solver"]["seconds"]
    assert doc == examples_plan
    code, out, _ = run("plan", "-f", str(EXAMPLES))
    assert code == 0
    assert out.splitlines()[0].split() == [
        "MODEL",
        "VARIANT",
        "POOL",
        "REPLICAS",
        "ACCELERATORS",
        "$/H",
    ]
    assert f"Fleet cost: ${examples_plan['costPerHour']:.2f}/h" in out


BAD_MODEL = """\
apiVersion: infleet.io/v1alpha1
kind: ModelDeployment
metadata: {name: llama, namespace: chat}
spec:
  model: meta-llama/Llama-3.1-8B-Instruct
  targetUtilization: 1.5
  slo: {}
  variants: [{acceleratorType: nvidia-l4}]
"""


def test_bad_manifest_exits_2_with_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "models.yaml"
    bad.write_text(BAD_MODEL)
    code, out, err = run("plan", "-f", str(bad))
    assert code == 2
    assert out == ""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 3
    assert all("ModelDeployment chat/llama: spec." in line for line in lines)
    assert any("spec.targetUtilization: must be > 0 and <= 1" in line for line in lines)


def test_no_models_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "pools.yaml").write_text((EXAMPLES / "pools.yaml").read_text())
    code, _, err = run("plan", "-f", str(tmp_path))
    assert code == 2
    assert "no ModelDeployment found" in err


def _nodes_for(pools: dict[str, int]) -> dict[str, Any]:
    """A `kubectl get nodes -o yaml`-style List with the given accelerators per pool."""
    loaded = load_manifests([EXAMPLES / "pools.yaml"])
    items = []
    for pool in loaded.pools:
        count = pools.get(pool.metadata.name, 0)
        per_node = pool.spec.accelerators_per_node
        for i in range(-(-count // per_node)):
            items.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": f"{pool.metadata.name}-{i}",
                        "labels": dict(pool.spec.node_selector),
                    },
                    "status": {
                        "allocatable": {pool.spec.resource_name: str(per_node)},
                        "conditions": [{"type": "Ready", "status": "True"}],
                    },
                }
            )
    return {"apiVersion": "v1", "kind": "List", "items": items}


def test_nodes_file_sizes_the_pools(tmp_path: Path, examples_plan: dict[str, Any]) -> None:
    used_pools = {p["pool"] for p in examples_plan["placements"]}
    # Take away every node of the pools the free plan used most: the planner must move models.
    busiest = max(
        used_pools,
        key=lambda name: sum(
            p["accelerators"] for p in examples_plan["placements"] if p["pool"] == name
        ),
    )
    loaded = load_manifests([EXAMPLES / "pools.yaml"])
    supply = {
        p.metadata.name: (p.spec.max_accelerators or 64)
        for p in loaded.pools
        if p.metadata.name != busiest
    }
    nodes = tmp_path / "nodes.yaml"
    nodes.write_text(yaml.safe_dump(_nodes_for(supply)))
    code, out, err = run("plan", "-f", str(EXAMPLES), "--nodes", str(nodes), "-o", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert busiest not in {p["pool"] for p in doc["placements"]}
    assert doc["costPerHour"] >= examples_plan["costPerHour"]


def test_nodes_file_with_wrong_kind(tmp_path: Path) -> None:
    nodes = tmp_path / "nodes.yaml"
    nodes.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n")
    code, _, err = run("plan", "-f", str(EXAMPLES), "--nodes", str(nodes))
    assert code == 2
    assert "expected Node objects, found 'Pod'" in err


def test_nodes_file_with_bad_quantity(tmp_path: Path) -> None:
    doc = _nodes_for({"l4": 4})
    doc["items"][0]["status"]["allocatable"]["nvidia.com/gpu"] = "four"
    nodes = tmp_path / "nodes.yaml"
    nodes.write_text(yaml.safe_dump(doc))
    code, _, err = run("plan", "-f", str(EXAMPLES), "--nodes", str(nodes))
    assert code == 2
    assert "not a Kubernetes quantity: 'four'" in err
