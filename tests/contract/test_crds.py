"""The committed CRDs are what the generator produces, and they are structural Kubernetes CRDs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from infleet.api import model_deployment, pool
from infleet.api.crd import (
    CHART_CRD_DIR,
    CHART_HEADER,
    GENERATED_HEADER,
    build_crds,
    chart_template,
    rendered_chart_crds,
    rendered_crds,
)
from infleet.cli import main
from infleet.k8s.peering import peering_crds

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "crds"
CHART_TEMPLATES = ROOT / "charts" / "infleet" / CHART_CRD_DIR
CRDS = {crd["spec"]["names"]["kind"]: crd for crd in build_crds()}


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path."""
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def schema(kind: str) -> dict[str, Any]:
    crd = CRDS[kind]
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def rules(kind: str, path: str) -> list[dict[str, str]]:
    nodes = dict(walk(schema(kind)))
    return nodes[path].get("x-kubernetes-validations", [])  # type: ignore[no-any-return]


def test_committed_files_equal_the_generator_output() -> None:
    rendered = rendered_crds()
    assert sorted(p.name for p in CRD_DIR.glob("*.yaml")) == sorted(rendered)
    for name, text in rendered.items():
        assert (CRD_DIR / name).read_text() == text, f"crds/{name} is stale: run make crds"
        assert text.startswith(GENERATED_HEADER)
        assert yaml.safe_load(text) == CRDS[yaml.safe_load(text)["spec"]["names"]["kind"]]


def test_generation_is_deterministic() -> None:
    assert rendered_crds() == rendered_crds()


def generate(tmp_path: Path, *extra: str) -> Any:
    """`infleet crds generate` into tmp_path/crds and the chart tmp_path/chart."""
    args = ["crds", "generate", "--out", str(tmp_path / "crds"), "--chart", str(tmp_path / "chart")]
    return CliRunner().invoke(main, [*args, *extra])


def test_check_flags_a_stale_file_by_name(tmp_path: Path) -> None:
    assert generate(tmp_path).exit_code == 0
    ok = generate(tmp_path, "--check")
    assert ok.exit_code == 0, ok.output
    stale = tmp_path / "crds" / "modeldeployments.infleet.io.yaml"
    stale.write_text(stale.read_text().replace("mdep", "md"))
    result = generate(tmp_path, "--check")
    assert result.exit_code == 1
    assert "modeldeployments.infleet.io.yaml" in result.output
    assert "acceleratorpools.infleet.io.yaml" not in result.output
    (tmp_path / "crds" / "acceleratorpools.infleet.io.yaml").unlink()
    result = generate(tmp_path, "--check")
    assert result.exit_code == 1
    assert "acceleratorpools.infleet.io.yaml" in result.output


def test_committed_chart_templates_equal_the_generator_output() -> None:
    rendered = rendered_chart_crds(peering_crds())
    assert sorted(p.name for p in CHART_TEMPLATES.glob("*.yaml")) == sorted(rendered)
    for name, text in rendered.items():
        assert (CHART_TEMPLATES / name).read_text() == text, f"{name} is stale: run make crds"


def test_chart_templates_wrap_the_same_objects(tmp_path: Path) -> None:
    """Without the template lines, a chart CRD is exactly the crds/ object."""
    objects = {crd["metadata"]["name"]: crd for crd in [*build_crds(), *peering_crds()]}
    for name, text in rendered_chart_crds(peering_crds()).items():
        assert text.startswith(CHART_HEADER)
        lines = text.splitlines()
        assert lines[2] == "{{- if .Values.crds.enabled }}"
        assert lines[-1] == "{{- end }}"
        plain = "\n".join(line for line in lines if "{{" not in line)
        parsed = yaml.safe_load(plain)
        assert parsed["metadata"].pop("annotations") == {"helm.sh/resource-policy": "keep"}
        assert parsed == objects[name.removesuffix(".yaml")]


def test_check_flags_stale_and_stray_chart_templates(tmp_path: Path) -> None:
    assert generate(tmp_path).exit_code == 0
    templates = tmp_path / "chart" / CHART_CRD_DIR
    peering = templates / "kopfpeerings.kopf.dev.yaml"
    peering.write_text(peering.read_text().replace("keep", "delete"))
    result = generate(tmp_path, "--check")
    assert result.exit_code == 1
    assert "kopfpeerings.kopf.dev.yaml" in result.output
    assert "modeldeployments" not in result.output
    assert generate(tmp_path).exit_code == 0
    (templates / "oldkinds.infleet.io.yaml").write_text("kind: CustomResourceDefinition\n")
    result = generate(tmp_path, "--check")
    assert result.exit_code == 1
    assert "not made by the generator" in result.output
    assert "oldkinds.infleet.io.yaml" in result.output


def test_chart_template_refuses_template_syntax_in_text() -> None:
    crd = build_crds()[0]
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"] = "use {{ x }}"
    with pytest.raises(ValueError, match=r"acceleratorpools\.infleet\.io"):
        chart_template(crd)


@pytest.mark.parametrize("kind", ["AcceleratorPool", "ModelDeployment"])
def test_schema_is_structural(kind: str) -> None:
    for path, node in walk(schema(kind)):
        assert "type" in node, f"{kind}{path}: no type"
        for key in ("$ref", "$defs", "title", "anyOf", "oneOf", "allOf", "const"):
            assert key not in node, f"{kind}{path}: {key}"
        assert not ("properties" in node and "additionalProperties" in node), path
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            if bound in node:
                assert node[bound] is True
                assert ("minimum" if bound == "exclusiveMinimum" else "maximum") in node
        if node.get("x-kubernetes-preserve-unknown-fields"):
            assert node["type"] == "object"
        if "default" in node:
            assert node["default"] is not None, f"{kind}{path}: null default"


@pytest.mark.parametrize("kind", ["AcceleratorPool", "ModelDeployment"])
def test_every_property_has_a_description(kind: str) -> None:
    for path, node in walk(schema(kind)):
        if path in (".metadata",):
            continue
        assert node.get("description") or path.endswith(("[]", "{}")), (
            f"{kind}{path}: no description"
        )


def test_optional_fields_are_nullable_not_any_of() -> None:
    nodes = dict(walk(schema("AcceleratorPool")))
    assert nodes[".spec.maxAccelerators"]["nullable"] is True
    assert nodes[".spec.maxAccelerators"]["type"] == "integer"
    assert "default" not in nodes[".spec.maxAccelerators"]
    assert "nullable" not in nodes[".spec.acceleratorsPerNode"]


def test_defaults_bounds_and_enums_are_kept() -> None:
    nodes = dict(walk(schema("ModelDeployment")))
    util = nodes[".spec.targetUtilization"]
    assert (util["default"], util["minimum"], util["exclusiveMinimum"], util["maximum"]) == (
        0.8,
        0,
        True,
        1,
    )
    assert nodes[".spec.slo.percentile"]["minimum"] == 50
    assert nodes[".spec.slo.percentile"]["maximum"] == 99.9
    assert nodes[".spec.mode"]["enum"] == ["Apply", "Advise"]
    assert nodes[".spec.variants"]["minItems"] == 1
    assert nodes[".spec.variants"]["maxItems"] == 16
    assert "name" not in nodes[".spec.variants[]"].get("required", [])
    assert "default" not in nodes[".spec.variants[].name"]
    assert nodes[".spec.variants[].name"]["maxLength"] == 63
    assert nodes[".spec.replicas"]["default"] == {}
    assert nodes[".spec.template"]["x-kubernetes-preserve-unknown-fields"] is True
    pool_nodes = dict(walk(schema("AcceleratorPool")))
    assert pool_nodes[".spec.capacityType"]["enum"] == ["on-demand", "spot", "reserved"]
    assert pool_nodes[".spec.capacityType"]["default"] == "on-demand"
    assert pool_nodes[".spec.nodeSelector"]["minProperties"] == 1
    assert pool_nodes[".spec.resourceName"]["default"] == "nvidia.com/gpu"


def test_cross_field_rules_are_cel_with_the_pydantic_messages() -> None:
    assert rules("ModelDeployment", ".spec.slo") == [
        {
            "rule": "has(self.timeToFirstTokenMs) || has(self.timePerOutputTokenMs)",
            "message": model_deployment.MSG_SLO_TARGET,
        }
    ]
    assert rules("ModelDeployment", ".spec.replicas") == [
        {
            "rule": "!has(self.min) || !has(self.max) || self.min <= self.max",
            "message": model_deployment.MSG_REPLICAS_ORDER,
        }
    ]
    (variant_rule,) = rules("ModelDeployment", ".spec.variants[]")
    assert variant_rule["message"] == model_deployment.MSG_VARIANT_CAPACITY
    assert "has(self.maxRequestsPerSecond)" in variant_rule["rule"]
    assert "has(self.profile)" in variant_rule["rule"]
    (unique_rule,) = rules("ModelDeployment", ".spec.variants")
    assert unique_rule["message"] == model_deployment.MSG_UNIQUE_VARIANTS
    assert unique_rule["rule"].startswith("self.all(v, self.exists_one(w,")
    toleration_messages = [r["message"] for r in rules("AcceleratorPool", ".spec.tolerations[]")]
    assert toleration_messages == [pool.MSG_EXISTS_NO_VALUE, pool.MSG_EMPTY_KEY_NEEDS_EXISTS]
    assert "DNS-1035" in rules("ModelDeployment", "")[0]["message"]


def test_cel_over_lists_is_bounded() -> None:
    # The API server estimates CEL cost from maxItems and maxLength; unbounded lists or strings
    # under a quadratic rule would make it reject the CRD.
    nodes = dict(walk(schema("ModelDeployment")))
    assert nodes[".spec.variants"]["maxItems"] <= 16
    for field in ("name", "acceleratorType"):
        assert nodes[f".spec.variants[].{field}"]["maxLength"] <= 63


def test_names_scope_and_subresources() -> None:
    pool_crd, model_crd = CRDS["AcceleratorPool"], CRDS["ModelDeployment"]
    assert pool_crd["metadata"]["name"] == "acceleratorpools.infleet.io"
    assert model_crd["metadata"]["name"] == "modeldeployments.infleet.io"
    assert pool_crd["spec"]["scope"] == "Cluster"
    assert model_crd["spec"]["scope"] == "Namespaced"
    assert pool_crd["spec"]["names"]["shortNames"] == ["apool"]
    assert model_crd["spec"]["names"]["shortNames"] == ["mdep"]
    for crd in (pool_crd, model_crd):
        assert crd["spec"]["group"] == "infleet.io"
        assert crd["spec"]["names"]["categories"] == ["infleet"]
        (version,) = crd["spec"]["versions"]
        assert version["name"] == "v1alpha1"
        assert version["served"]
        assert version["storage"]
        assert version["subresources"] == {"status": {}}
        assert version["schema"]["openAPIV3Schema"]["required"] == ["spec"]


def test_printer_columns() -> None:
    def columns(kind: str) -> list[tuple[str, str, str]]:
        version = CRDS[kind]["spec"]["versions"][0]
        return [(c["name"], c["type"], c["jsonPath"]) for c in version["additionalPrinterColumns"]]

    assert columns("ModelDeployment") == [
        ("Model", "string", ".spec.model"),
        ("Desired", "integer", ".status.desiredReplicas"),
        ("Ready", "integer", ".status.readyReplicas"),
        ("Cost/h", "number", ".status.costPerHour"),
        ("SLO Met", "string", '.status.conditions[?(@.type=="SLOMet")].status'),
        ("Scheduled", "string", '.status.conditions[?(@.type=="Scheduled")].reason'),
        ("Age", "date", ".metadata.creationTimestamp"),
        ("Demand", "number", ".status.demand.requestsPerSecond"),
        ("Unmet", "number", ".status.unmetRequestsPerSecond"),
        ("Mode", "string", ".spec.mode"),
    ]
    assert columns("AcceleratorPool") == [
        ("Type", "string", ".spec.acceleratorType"),
        ("Capacity Type", "string", ".spec.capacityType"),
        ("Ready Nodes", "integer", ".status.readyNodes"),
        ("Allocatable", "integer", ".status.allocatableAccelerators"),
        ("Free", "integer", ".status.freeAccelerators"),
        ("Cost/h", "number", ".spec.costPerAcceleratorHour"),
        ("Age", "date", ".metadata.creationTimestamp"),
        ("Resource", "string", ".spec.resourceName"),
        ("Nodes", "integer", ".status.nodes"),
        ("Allocated", "integer", ".status.allocatedAccelerators"),
        ("Max", "integer", ".spec.maxAccelerators"),
    ]
    # Only the columns after Age are -o wide extras.
    for kind in CRDS:
        cols = CRDS[kind]["spec"]["versions"][0]["additionalPrinterColumns"]
        age = [c["name"] for c in cols].index("Age")
        assert all("priority" not in c for c in cols[: age + 1]), kind
        assert all(c.get("priority") == 1 for c in cols[age + 1 :]), kind


def test_printer_column_paths_exist_in_the_schema() -> None:
    for kind in CRDS:
        nodes = dict(walk(schema(kind)))
        for column in CRDS[kind]["spec"]["versions"][0]["additionalPrinterColumns"]:
            path = column["jsonPath"].split("[")[0]
            if path.startswith(".metadata"):
                continue
            assert path in nodes, f"{kind}: column {column['name']} reads missing {path}"
