"""The Helm chart without a cluster: `helm lint`, `helm template` with default and other values,
the values schema rejecting bad values, RBAC rule by rule, the dashboard against the operator's
metrics, docs/install.md's values table, and (statically) the Dockerfile.

`helm` is the one hack/build.sh builds (`make sandbox-bins`, part of `make test`).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from infleet.api.crd import KEEP_ANNOTATION, build_crds
from infleet.cli import main, priority_for_pod
from infleet.k8s.peering import peering_crds
from infleet.reconcile.telemetry import OperatorMetrics
from infleet.sandbox.binaries import Binaries, bin_dir

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "infleet"
KUBE_VERSION = "1.37.2"
RELEASE, NAMESPACE = "fleet", "infleet-system"


@pytest.fixture(scope="module")
def helm() -> str:
    path = Binaries(bin_dir()).path("helm")
    if not path.exists():
        pytest.skip(f"no helm at {path}: run `make sandbox-bins` (make test does)")
    return str(path)


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=60, check=False)


def render(helm: str, *sets: str) -> list[dict[str, Any]]:
    """`helm template` with `--set` values; the objects it renders."""
    args = ["template", RELEASE, str(CHART), "-n", NAMESPACE, "--kube-version", KUBE_VERSION]
    for value in sets:
        args += ["--set", value]
    result = run_helm(helm, *args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (obj,) = by_kind(objs, kind)
    return obj


def test_helm_lint_strict(helm: str) -> None:
    result = run_helm(helm, "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def test_default_render_has_exactly_the_expected_objects(helm: str) -> None:
    kinds = sorted(o["kind"] for o in render(helm))
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        *["CustomResourceDefinition"] * 4,
        "Deployment",
        "Service",
        "ServiceAccount",
    ]


def test_crd_templates_are_the_generator_objects_with_the_keep_annotation(helm: str) -> None:
    rendered = {c["metadata"]["name"]: c for c in by_kind(render(helm), "CustomResourceDefinition")}
    expected = {c["metadata"]["name"]: c for c in [*build_crds(), *peering_crds()]}
    assert sorted(rendered) == sorted(expected)
    key, value = KEEP_ANNOTATION.split(": ")
    for name, crd in rendered.items():
        assert crd["metadata"].pop("annotations") == {key: value}, name
        assert crd == expected[name], f"{name}: chart template differs from the generator"


def test_crds_keep_false_and_crds_disabled(helm: str) -> None:
    for crd in by_kind(render(helm, "crds.keep=false"), "CustomResourceDefinition"):
        assert "annotations" not in crd["metadata"], crd["metadata"]["name"]
    assert by_kind(render(helm, "crds.enabled=false"), "CustomResourceDefinition") == []


def test_deployment_runs_restricted_with_peering_and_probes(helm: str) -> None:
    deploy = one(render(helm), "Deployment")
    spec = deploy["spec"]["template"]["spec"]
    assert deploy["spec"]["replicas"] == 2
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = spec["containers"]
    ctx = container["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in spec["volumes"]
    env = {e["name"]: e for e in container["env"]}
    assert env["PYTHONDONTWRITEBYTECODE"]["value"] == "1"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": "256Mi"}
    args = container["args"]
    assert args[0] == "run"
    assert "--all-namespaces" in args
    assert "--peering" in args
    assert "--priority-from-pod-name" in args
    assert spec["serviceAccountName"] == f"{RELEASE}-infleet"


def test_operator_options_reach_the_arguments(helm: str) -> None:
    deploy = one(
        render(
            helm,
            "replicaCount=1",
            "operator.watchNamespaces={llm,batch}",
            "operator.prometheusUrl=http://prometheus.monitoring:9090",
            "operator.interval=5",
            "operator.logFormat=plain",
            "operator.metricsWindow=20s",
            "operator.fastWindow=8s",
            "operator.probeInterval=2",
            "operator.statusRefresh=15",
        ),
        "Deployment",
    )
    args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--metrics-window=20s" in args
    assert "--fast-window=8s" in args
    assert "--probe-interval=2" in args
    assert "--status-refresh=15" in args
    assert "--namespace=llm" in args
    assert "--namespace=batch" in args
    assert "--all-namespaces" not in args
    assert "--prometheus-url=http://prometheus.monitoring:9090" in args
    assert "--interval=5" in args
    assert "--log-format=plain" in args
    assert "--peering" not in args  # one pod: nothing to elect
    defaults = one(render(helm), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert not any(a.startswith("--fast-window") for a in defaults["args"])  # 40% default
    assert "--probe-interval=5" in defaults["args"]
    assert "--status-refresh=60" in defaults["args"]


def test_the_generated_arguments_parse(helm: str) -> None:
    """The Deployment's args are accepted by `infleet run` (checked up to the point where it
    would connect: an unknown option would make click exit 2 first)."""
    deploy = one(render(helm, "operator.prometheusUrl=http://p:9090"), "Deployment")
    args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    result = CliRunner().invoke(main, [*args, "--help"])
    assert result.exit_code == 0, result.output


def rules_of(obj: dict[str, Any]) -> set[tuple[str, str, tuple[str, ...], tuple[str, ...]]]:
    out = set()
    for rule in obj["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                names = tuple(rule.get("resourceNames", ()))
                out.add((group, resource, tuple(rule["verbs"]), names))
    return out


NAMESPACED_RULES = {
    ("infleet.io", "modeldeployments", ("list", "watch"), ()),
    ("infleet.io", "modeldeployments/status", ("patch",), ()),
    ("apps", "deployments", ("list", "watch", "create", "patch", "delete"), ()),
    ("", "services", ("list", "create", "patch", "delete"), ()),
    ("", "events", ("create",), ()),
}
CLUSTER_RULES = {
    ("infleet.io", "acceleratorpools", ("list", "watch"), ()),
    ("infleet.io", "acceleratorpools/status", ("patch",), ()),
    ("", "nodes", ("list", "watch"), ()),
    ("apiextensions.k8s.io", "customresourcedefinitions", ("list", "watch"), ()),
}
PEERING_CRD_GET = (
    "apiextensions.k8s.io",
    "customresourcedefinitions",
    ("get",),
    ("clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"),
)
PODS = ("", "pods", ("list", "watch"), ())
PEERING_VERBS = ("get", "list", "watch", "create", "patch")


def test_rbac_all_namespaces_is_one_cluster_role_with_exactly_these_rules(helm: str) -> None:
    objs = render(helm)
    assert by_kind(objs, "Role") == []
    assert rules_of(one(objs, "ClusterRole")) == (
        CLUSTER_RULES
        | NAMESPACED_RULES
        | {PEERING_CRD_GET, PODS, ("kopf.dev", "clusterkopfpeerings", PEERING_VERBS, ())}
    )
    binding = one(objs, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": f"{RELEASE}-infleet", "namespace": NAMESPACE}
    ]


def test_rbac_without_peering_has_no_peering_rules(helm: str) -> None:
    objs = render(helm, "replicaCount=1")
    assert rules_of(one(objs, "ClusterRole")) == CLUSTER_RULES | NAMESPACED_RULES | {PODS}


def test_rbac_watched_namespaces_use_roles(helm: str) -> None:
    objs = render(helm, "operator.watchNamespaces={llm,batch}")
    cluster = rules_of(one(objs, "ClusterRole"))
    namespaces = ("", "namespaces", ("list", "watch"), ())
    assert cluster == CLUSTER_RULES | {PEERING_CRD_GET, PODS, namespaces}
    roles = {r["metadata"]["namespace"]: r for r in by_kind(objs, "Role")}
    assert sorted(roles) == ["batch", "llm"]
    for role in roles.values():
        assert rules_of(role) == NAMESPACED_RULES | {
            ("kopf.dev", "kopfpeerings", PEERING_VERBS, ())
        }
    bindings = {b["metadata"]["namespace"] for b in by_kind(objs, "RoleBinding")}
    assert bindings == {"batch", "llm"}
    # Pods only in the watched namespaces when asked to:
    objs = render(helm, "operator.watchNamespaces={llm}", "rbac.readPodsClusterWide=false")
    assert PODS not in rules_of(one(objs, "ClusterRole"))
    assert PODS in rules_of(one(objs, "Role"))


@pytest.mark.parametrize(
    "values",
    [(), ("operator.watchNamespaces={llm}", "replicaCount=1"), ("rbac.readPodsClusterWide=false",)],
)
def test_rbac_has_no_wildcards_and_no_secrets(helm: str, values: tuple[str, ...]) -> None:
    objs = render(helm, *values)
    for role in by_kind(objs, "ClusterRole") + by_kind(objs, "Role"):
        for group, resource, verbs, _ in rules_of(role):
            assert "*" not in (group, resource, *verbs), role["metadata"]["name"]
            assert resource not in ("secrets", "configmaps", "serviceaccounts/token"), resource


def test_rbac_create_false_renders_no_rbac(helm: str) -> None:
    kinds = {o["kind"] for o in render(helm, "rbac.create=false")}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


def test_monitors_and_dashboard_only_when_enabled(helm: str) -> None:
    kinds = {o["kind"] for o in render(helm)}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "ConfigMap"}
    objs = render(
        helm,
        "serviceMonitor.enabled=true",
        "podMonitor.enabled=true",
        "grafanaDashboard.enabled=true",
        "operator.watchNamespaces={llm}",
    )
    service = one(objs, "Service")
    monitor = one(objs, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    pods = one(objs, "PodMonitor")
    assert pods["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/managed-by": "infleet"}
    assert pods["spec"]["namespaceSelector"] == {"matchNames": ["llm"]}
    configmap = one(objs, "ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["infleet-fleet.json"])["uid"] == "infleet-fleet"


def test_the_chart_never_labels_its_own_objects_as_managed_by_infleet(helm: str) -> None:
    """That label marks the Deployments the operator may delete; the operator's own
    Deployment must not carry it (nor its pods, which the PodMonitor would scrape)."""
    objs = render(helm, "podMonitor.enabled=true")
    deploy = one(objs, "Deployment")
    for labels in (deploy["metadata"]["labels"], deploy["spec"]["template"]["metadata"]["labels"]):
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


# Bad values and the words helm's schema check must say about them.
BAD_VALUES = [
    ("replicaCount=0", "/replicaCount"),
    ("replicaCount=two", "/replicaCount"),
    ("operator.logFormat=xml", "/operator/logFormat"),
    ("operator.interval=0", "/operator/interval"),
    ("operator.watchNamespaces={Bad_Name}", "/operator/watchNamespaces/0"),
    ("operator.prometheusUrl=prometheus:9090", "/operator/prometheusUrl"),
    ("operator.metricsWindow=5", "/operator/metricsWindow"),
    ("operator.fastWindow=8 s", "/operator/fastWindow"),
    ("operator.probeInterval=-1", "/operator/probeInterval"),
    ("operator.statusRefresh=-5", "/operator/statusRefresh"),
    ("crds.keep=yes", "/crds/keep"),
    ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
    ("serviceMonitor.interval=30", "/serviceMonitor/interval"),
    ("operator.wathcNamespaces={llm}", "'wathcNamespaces' not allowed"),
    ("unknownTopLevel=1", "'unknownTopLevel' not allowed"),
]


@pytest.mark.parametrize(("value", "message"), BAD_VALUES)
def test_values_schema_rejects_bad_values_with_their_path(
    helm: str, value: str, message: str
) -> None:
    args = ["template", RELEASE, str(CHART), "--kube-version", KUBE_VERSION, "--set", value]
    result = run_helm(helm, *args)
    assert result.returncode != 0, f"{value} was accepted"
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr, result.stderr


def leaf_values(values: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Dotted keys of values.yaml; maps that users fill freely (labels...) count as leaves."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and key not in ("labels", "requests", "limits"):
            yield from leaf_values(value, path + ".")
        else:
            yield path, value


def schema_leaves(schema: dict[str, Any], prefix: str = "") -> set[str]:
    out = set()
    for key, sub in schema.get("properties", {}).items():
        if key == "global":
            continue
        if sub.get("type") == "object" and "properties" in sub and key != "resources":
            out |= schema_leaves(sub, f"{prefix}{key}.")
        else:
            out.add(f"{prefix}{key}")
    return out


def test_every_value_is_in_the_schema_and_every_schema_key_has_a_default() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    from_values = {k for k, _ in leaf_values(values)}
    from_values = {k.split(".requests")[0].split(".limits")[0] for k in from_values}
    assert from_values == schema_leaves(schema)


def install_table() -> dict[str, str]:
    """docs/install.md's values table: key -> default column."""
    text = (ROOT / "docs" / "install.md").read_text()
    text = text.split("\n## Values\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-zA-Z.]+)` \| (`[^`]*`) \|", text, flags=re.MULTILINE)
    return {key: default.strip("`") for key, default in rows}


def test_install_docs_list_every_value_with_its_default() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    table = install_table()
    expected = {key: json.dumps(value) for key, value in leaf_values(values)}
    assert table == expected, "docs/install.md's values table is out of date with values.yaml"


def test_dashboard_queries_only_metrics_that_exist() -> None:
    dashboard = json.loads((CHART / "files" / "dashboard.json").read_text())
    exported = {m.name for m in OperatorMetrics().registry.collect()}
    titles = [p["title"] for p in dashboard["panels"]]
    for wanted in ("Fleet cost", "Replicas per pool", "SLO attainment", "Unmet demand"):
        assert any(t.startswith(wanted) for t in titles), wanted
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for metric in re.findall(r"\b(infleet_[a-z_]+)", target["expr"]):
                base = metric.removesuffix("_total")
                assert base in exported, f"panel {panel['title']!r} queries unknown {metric}"
            assert "{{" not in target["expr"]


def test_pod_name_priorities_are_stable_and_distinct() -> None:
    assert priority_for_pod("fleet-infleet-7d9f-abcde") == priority_for_pod(
        "fleet-infleet-7d9f-abcde"
    )
    names = [f"fleet-infleet-7d9f8c6b5-{i:05d}" for i in range(2000)]
    priorities = {priority_for_pod(n) for n in names}
    assert len(priorities) == len(names)
    assert all(0 <= p < 2**31 for p in priorities)


def test_priority_from_pod_name_needs_pod_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POD_NAME", raising=False)
    result = CliRunner().invoke(main, ["run", "--peering", "--priority-from-pod-name"])
    assert result.exit_code == 2
    assert "needs $POD_NAME" in result.output


# Static checks of the Dockerfile (no image is built here: that needs a Docker engine).
def dockerfile() -> str:
    """The Dockerfile's instructions, comments left out."""
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith("#")) + "\n"


def test_dockerfile_static_base_is_pinned_by_version_and_digest() -> None:
    (base,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile(), flags=re.MULTILINE)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+@sha256:[0-9a-f]{64}", base), base
    froms = re.findall(r"^FROM (\S+)", dockerfile(), flags=re.MULTILINE)
    assert froms == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]  # multi-stage, both pinned


def test_dockerfile_static_runs_as_non_root_without_dev_extras() -> None:
    text = dockerfile()
    users = re.findall(r"^USER (\S+)$", text, flags=re.MULTILINE)
    assert users, "no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0
    assert "[dev]" not in text
    assert "pip install ." in text
    assert re.search(r'^ENTRYPOINT \["infleet"\]$', text, flags=re.MULTILINE)
    deploy_uid = re.search(
        r"runAsUser: (\d+)", (CHART / "templates" / "deployment.yaml").read_text()
    )
    assert deploy_uid is not None
    assert deploy_uid.group(1) == uid
