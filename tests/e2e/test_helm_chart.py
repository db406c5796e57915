"""The Helm chart on a real API server: every rendering passes a server-side dry run, the
restricted Pod Security level admits the operator's pod, and a full life cycle
(`helm install`, the operator running with only the chart's ServiceAccount token, `kubectl auth
can-i`, `helm upgrade`, `helm uninstall`) works.

The operator runs OUT of the cluster (the sandbox's kwok nodes run no containers) with a
kubeconfig built from a TokenRequest for the chart's ServiceAccount, so everything it does goes
through the chart's RBAC: reconciling `examples/` to Ready with it proves the RBAC sufficient,
and `kubectl auth can-i` with the same token proves what it cannot do.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_process import REPO, Operator

from infleet.sandbox.binaries import Binaries, bin_dir

pytestmark = pytest.mark.e2e

CHART = REPO / "charts" / "infleet"
RELEASE = "infleet"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
}
MODELS = ["chat-70b", "chat-8b", "llama-405b", "summarize-8b"]


class Tools:
    """helm and kubectl against the session's cluster, as the admin."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self.helm_bin = str(Binaries(bin_dir()).path("helm"))
        self.kubeconfig = str(cluster.kubeconfig)

    def run(
        self, argv: list[str], *, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=120, check=False
        )
        if check and result.returncode != 0:
            pytest.fail(f"{' '.join(argv[:4])} ... failed:\n{result.stdout}\n{result.stderr}")
        return result

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run([self.helm_bin, "--kubeconfig", self.kubeconfig, *args], check=check)

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True, kubeconfig: str = ""
    ) -> subprocess.CompletedProcess[str]:
        config = kubeconfig or self.kubeconfig
        return self.run(
            [self.cluster.kubectl, "--kubeconfig", config, *args], stdin=stdin, check=check
        )


@pytest.fixture(scope="module")
def tools(cluster: Any) -> Tools:
    found = Tools(cluster)
    if not Path(found.helm_bin).exists():
        pytest.fail(f"no helm at {found.helm_bin}: run `make sandbox-bins`")
    return found


@pytest.fixture(scope="module")
def monitoring_crds(tools: Tools) -> Iterator[None]:
    """prometheus-operator's ServiceMonitor and PodMonitor CRDs (hack/monitoring-crds.sh)."""
    out = subprocess.run(
        ["bash", str(REPO / "hack" / "monitoring-crds.sh"), "--print-dir"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    directory = Path(out)
    if not (directory / ".complete").exists():
        pytest.fail(f"no monitoring CRDs in {directory}: run `bash hack/monitoring-crds.sh`")
    tools.kubectl("apply", "--server-side", "-f", str(directory))

    # `kubectl wait` (and a jsonpath filter) fail on a CRD whose status is not written yet.
    def established(crd: str) -> bool:
        got = tools.kubectl("get", f"crd/{crd}.monitoring.coreos.com", "-o", "json")
        conditions = (json.loads(got.stdout).get("status") or {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    for crd in ("servicemonitors", "podmonitors"):
        wait_for(f"{crd} CRD Established", lambda c=crd: established(c), timeout=60)
    yield
    tools.kubectl("delete", "-f", str(directory), "--wait=false", check=False)


@pytest.fixture(scope="module")
def release_namespace(tools: Tools) -> Iterator[str]:
    """A namespace that enforces the restricted Pod Security Standard."""
    name = f"infleet-system-{uuid.uuid4().hex[:6]}"
    manifest = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": RESTRICTED},
    }
    tools.kubectl("create", "-f", "-", stdin=json.dumps(manifest))
    yield name
    tools.kubectl("delete", "namespace", name, "--wait=false", check=False)


def template(tools: Tools, namespace: str, *sets: str) -> str:
    args = ["template", RELEASE, str(CHART), "-n", namespace, "--kube-version", "1.37.2"]
    for value in sets:
        args += ["--set", value]
    return tools.helm(*args).stdout


DEFAULT: tuple[str, ...] = ()


def custom_values(namespace: str) -> tuple[str, ...]:
    return (
        f"operator.watchNamespaces={{{namespace},default}}",
        "replicaCount=1",
        "operator.prometheusUrl=http://prometheus.monitoring:9090",
        "operator.logFormat=plain",
        "operator.interval=30",
        "crds.keep=false",
        "serviceMonitor.enabled=true",
        "podMonitor.enabled=true",
        "grafanaDashboard.enabled=true",
        "rbac.readPodsClusterWide=false",
        "image.repository=example.invalid/infleet",
        "image.tag=dev",
    )


@pytest.mark.parametrize("variant", ["default", "custom"])
def test_rendered_chart_passes_a_server_side_dry_run(
    tools: Tools, monitoring_crds: None, release_namespace: str, variant: str
) -> None:
    """Every object of the chart, as the API server validates it (CRD schemas, RBAC objects,
    the Deployment in a namespace enforcing `restricted`, monitors against their CRDs)."""
    sets = DEFAULT if variant == "default" else custom_values(release_namespace)
    manifest = template(tools, release_namespace, *sets)
    kinds = sorted({doc["kind"] for doc in yaml.safe_load_all(manifest) if doc})
    if variant == "custom":
        assert {"ServiceMonitor", "PodMonitor", "ConfigMap", "Role"} <= set(kinds)
    result = tools.kubectl(
        "apply", "--server-side", "--force-conflicts", "--field-manager=chart-dry-run",
        "--dry-run=server", "-f", "-", stdin=manifest,
    )  # fmt: skip
    print(result.stdout)
    # `warn=restricted` on the namespace: a pod template that violates it would warn here.
    assert "PodSecurity" not in result.stderr, result.stderr
    applied = [line for line in result.stdout.splitlines() if "(server dry run)" in line]
    assert len(applied) == sum(1 for doc in yaml.safe_load_all(manifest) if doc)


def test_restricted_namespace_admits_the_operator_pod_and_rejects_a_weaker_one(
    tools: Tools, release_namespace: str
) -> None:
    """Pod Security is enforced on pods (not Deployments): the chart's pod template, made a
    Pod, is admitted; the same pod without the seccomp profile is rejected."""
    docs = yaml.safe_load_all(template(tools, release_namespace))
    deploy = next(d for d in docs if d and d["kind"] == "Deployment")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "operator-pod-check", "namespace": release_namespace},
        # The release's ServiceAccount does not exist yet; Pod Security does not look at it.
        "spec": {**deploy["spec"]["template"]["spec"], "serviceAccountName": "default"},
    }
    ok = tools.kubectl("create", "--dry-run=server", "-f", "-", stdin=json.dumps(pod))
    assert "created (server dry run)" in ok.stdout
    weaker = json.loads(json.dumps(pod))
    del weaker["spec"]["securityContext"]["seccompProfile"]
    del weaker["spec"]["containers"][0]["securityContext"]["seccompProfile"]
    bad = tools.kubectl(
        "create", "--dry-run=server", "-f", "-", stdin=json.dumps(weaker), check=False
    )
    assert bad.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in bad.stderr
    assert "seccompProfile" in bad.stderr


def test_bad_values_fail_helm_install_before_anything_is_created(
    tools: Tools, release_namespace: str
) -> None:
    result = tools.helm(
        "install", "bad", str(CHART), "-n", release_namespace,
        "--set", "operator.logFormat=xml", "--set", "replicaCount=0", check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert "/operator/logFormat" in result.stderr
    assert "/replicaCount" in result.stderr
    releases = tools.helm("list", "-n", release_namespace, "-q").stdout.split()
    assert "bad" not in releases


def adopt_existing_crds(tools: Tools, namespace: str) -> None:
    """CRDs applied before (the sandbox applies infleet's; the peering e2e test Kopf's) are
    handed to the release, as a user adopting kubectl-applied CRDs would (docs/install.md)."""
    names = [
        doc["metadata"]["name"]
        for doc in yaml.safe_load_all(template(tools, namespace))
        if doc and doc["kind"] == "CustomResourceDefinition"
    ]
    existing = set(
        tools.kubectl("get", "crd", "-o", "name")
        .stdout.replace("customresourcedefinition.apiextensions.k8s.io/", "")
        .split()
    )
    for name in names:
        if name in existing:
            tools.kubectl("label", "crd", name, "app.kubernetes.io/managed-by=Helm", "--overwrite")
            tools.kubectl(
                "annotate", "crd", name, f"meta.helm.sh/release-name={RELEASE}",
                f"meta.helm.sh/release-namespace={namespace}", "--overwrite",
            )  # fmt: skip


def token_kubeconfig(tools: Tools, namespace: str, path: Path) -> Path:
    """A kubeconfig holding only a TokenRequest token of the chart's ServiceAccount."""
    token = tools.kubectl(
        "create", "token", RELEASE, "-n", namespace, "--duration=1h"
    ).stdout.strip()
    admin = yaml.safe_load(Path(tools.kubeconfig).read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"][:1],
        "users": [{"name": "infleet-sa", "user": {"token": token}}],
        "contexts": [
            {
                "name": "infleet-sa",
                "context": {"cluster": admin["clusters"][0]["name"], "user": "infleet-sa"},
            }
        ],
        "current-context": "infleet-sa",
    }
    path.write_text(yaml.safe_dump(config))
    return path


# (verb, resource, namespace or "" for cluster scope, allowed?)
CAN_I = [
    ("list", "nodes", "", True),
    ("watch", "acceleratorpools.infleet.io", "", True),
    ("patch", "acceleratorpools.infleet.io/status", "", True),
    ("list", "modeldeployments.infleet.io", "llm", True),
    ("patch", "modeldeployments.infleet.io/status", "llm", True),
    ("patch", "deployments.apps", "llm", True),
    ("create", "deployments.apps", "llm", True),
    ("delete", "services", "llm", True),
    ("create", "events", "llm", True),
    ("patch", "kopfpeerings.kopf.dev", "llm", True),
    ("list", "pods", "", True),
    # Never: Secrets, anywhere.
    ("get", "secrets", "llm", False),
    ("list", "secrets", "llm", False),
    ("list", "secrets", "", False),
    ("watch", "secrets", "kube-system", False),
    ("list", "configmaps", "llm", False),
    # Nothing it does not manage: other namespaces, other verbs, other kinds.
    ("patch", "deployments.apps", "default", False),
    ("delete", "deployments.apps", "kube-system", False),
    ("create", "deployments.apps", "default", False),
    ("update", "deployments.apps", "llm", False),
    ("delete", "pods", "llm", False),
    ("create", "pods", "llm", False),
    ("patch", "nodes", "", False),
    ("delete", "nodes", "", False),
    ("create", "acceleratorpools.infleet.io", "", False),
    ("patch", "acceleratorpools.infleet.io", "", False),
    ("patch", "modeldeployments.infleet.io", "llm", False),
    ("delete", "modeldeployments.infleet.io", "llm", False),
    ("list", "modeldeployments.infleet.io", "default", False),
    ("create", "customresourcedefinitions.apiextensions.k8s.io", "", False),
    ("patch", "customresourcedefinitions.apiextensions.k8s.io", "", False),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", "", False),
    ("create", "serviceaccounts/token", "llm", False),
    ("create", "events", "default", False),
    ("*", "*", "", False),
]


# After `helm upgrade --reset-values` to the default (all namespaces).
CAN_I_ALL_NAMESPACES = [
    ("list", "modeldeployments.infleet.io", "default", True),
    ("patch", "deployments.apps", "default", True),
    ("create", "events", "default", True),
    ("patch", "clusterkopfpeerings.kopf.dev", "", True),
    ("patch", "kopfpeerings.kopf.dev", "llm", False),
    ("list", "namespaces", "", False),
    ("list", "secrets", "", False),
    ("get", "secrets", "default", False),
    ("delete", "pods", "default", False),
]


def check_permissions(
    tools: Tools, kubeconfig: Path, table: list[tuple[str, str, str, bool]] = CAN_I
) -> list[str]:
    """`kubectl auth can-i` as the ServiceAccount for every row of ``table``; lines to print."""
    lines = []
    for verb, resource, namespace, allowed in table:
        scope = ["-n", namespace] if namespace else []
        kind, _, sub = resource.partition("/")
        sub_args = [f"--subresource={sub}"] if sub else []
        result = tools.kubectl(
            "auth", "can-i", verb, kind, *sub_args, *scope,
            kubeconfig=str(kubeconfig), check=False,
        )  # fmt: skip
        answer = result.stdout.strip()
        where = f"-n {namespace}" if namespace else "(cluster)"
        lines.append(f"can-i {verb} {resource} {where}: {answer}")
        assert answer == ("yes" if allowed else "no"), lines[-1]
    return lines


def model_ready(tools: Tools, name: str) -> bool:
    result = tools.kubectl("get", "mdep", name, "-n", "llm", "-o", "json", check=False)
    if result.returncode != 0:
        return False
    status = json.loads(result.stdout).get("status") or {}
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def forbidden_lines(log: str) -> list[str]:
    """Log lines where the API server refused the operator something, but the one expected
    refusal: installing Kopf's peering CRDs, which the chart did already."""
    return [
        line
        for line in log.splitlines()
        if any(word in line.lower() for word in ("403", "forbidden", "not enough permissions"))
        and "may not install" not in line
    ]


def wait_for(what: str, probe: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(1)


@pytest.fixture
def example_nodes(tools: Tools, kube: Any, cluster: Any) -> Iterator[None]:
    """kwok nodes for examples/ pools, with the e2e pools stepping aside (as in
    test_operator's examples test); everything restored afterwards."""
    from kubernetes.client.exceptions import ApiException

    from infleet.api.manifests import load_manifests
    from infleet.sandbox.nodes import all_nodes

    if cluster.sandbox_dir is None:
        pytest.skip("needs kwok nodes for examples' pools: runs on the infleet sandbox only")
    loaded = load_manifests([REPO / "examples"])
    assert loaded.ok, loaded.errors
    nodes = all_nodes(loaded.pools)
    for node in nodes:
        try:
            kube.core.create_node(node)
        except ApiException as exc:
            if exc.status != 409:
                raise
    tools.kubectl("delete", "-f", str(REPO / "tests/e2e/pools"), "--ignore-not-found")
    tools.kubectl("create", "namespace", "llm", check=False)
    try:
        yield
    finally:
        # The namespace goes first, while kwok still manages its pods' nodes: a pod left on a
        # deleted node waits for the pod garbage collector's 40 s quarantine.
        tools.kubectl("delete", "namespace", "llm", "--wait=false", check=False)
        wait_for(
            "namespace llm gone",
            lambda: tools.kubectl("get", "namespace", "llm", check=False).returncode != 0,
            timeout=120,
        )
        tools.kubectl(
            "delete", "-f", str(REPO / "examples/pools.yaml"), "--ignore-not-found", check=False
        )
        tools.kubectl("apply", "--server-side", "-f", str(REPO / "tests/e2e/pools"))
        for node in nodes:
            try:
                kube.core.delete_node(node["metadata"]["name"])
            except ApiException as exc:
                if exc.status != 404:
                    raise


def test_install_run_with_the_service_account_upgrade_uninstall(
    tools: Tools,
    monitoring_crds: None,
    release_namespace: str,
    example_nodes: None,
    tmp_path: Path,
) -> None:
    ns = release_namespace
    try:
        install_run_upgrade_uninstall(tools, ns, tmp_path)
    finally:
        # Whatever failed, leave no release (its cluster-scoped objects would outlive the
        # namespace and block the next install).
        tools.helm("uninstall", RELEASE, "-n", ns, "--ignore-not-found", check=False)


def install_run_upgrade_uninstall(tools: Tools, ns: str, tmp_path: Path) -> None:
    start = time.monotonic()

    def lap(what: str) -> None:
        print(f"[chart test {time.monotonic() - start:6.1f}s] {what}")

    adopt_existing_crds(tools, ns)
    install = tools.helm(
        "install", RELEASE, str(CHART), "-n", ns,
        "--set", "operator.watchNamespaces={llm}", "--wait=false",
    )  # fmt: skip
    print(install.stdout)
    assert "STATUS: deployed" in install.stdout
    assert "Next steps:" in install.stdout  # NOTES.txt
    lap("helm install done")
    # The restricted namespace admitted the operator's pods (the ReplicaSet created them).
    selector = f"app.kubernetes.io/instance={RELEASE}"
    wait_for(
        "2 operator pods created",
        lambda: (
            len(tools.kubectl("get", "pods", "-n", ns, "-l", selector, "-o", "name").stdout.split())
            == 2
        ),
        timeout=60,
    )

    lap("operator pods admitted in the restricted namespace")
    kubeconfig = token_kubeconfig(tools, ns, tmp_path / "sa.kubeconfig")
    for line in check_permissions(tools, kubeconfig):
        print(line)
    lap(f"{len(CAN_I)} kubectl auth can-i checks passed")

    tools.kubectl(
        "apply", "-f", str(REPO / "examples/pools.yaml"), "-f", str(REPO / "examples/models.yaml")
    )
    op = Operator(
        kubeconfig, "llm", tmp_path / "operator.log", extra=("--peering", "--priority", "5")
    )
    op.start()

    def ready_or_refused(name: str) -> bool:
        refused = forbidden_lines(op.log.read_text())
        assert refused == [], "the ServiceAccount lacks a permission:\n" + "\n".join(refused)
        return model_ready(tools, name)

    try:
        for name in MODELS:
            wait_for(f"llm/{name} Ready", lambda n=name: ready_or_refused(n), timeout=120)
        lap("examples/ Ready, reconciled with the ServiceAccount token")
        print(tools.kubectl("get", "mdep", "-n", "llm").stdout)
        print(tools.kubectl("get", "apool").stdout)
    finally:
        op.stop()
        log = op.log.read_text()
        print(log[-3000:])
    assert forbidden_lines(log) == []
    assert "active:" in log  # peering through the chart's kopfpeerings Role

    upgrade = tools.helm(
        "upgrade", RELEASE, str(CHART), "-n", ns, "--reuse-values",
        "--set", "operator.interval=30", "--set", "serviceMonitor.enabled=true",
        "--set", "podMonitor.enabled=true", "--wait=false",
    )  # fmt: skip
    assert "REVISION: 2" in upgrade.stdout
    lap("helm upgrade done")
    deploy = json.loads(tools.kubectl("get", "deploy", RELEASE, "-n", ns, "-o", "json").stdout)
    args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--interval=30" in args
    assert "--namespace=llm" in args  # reused
    for kind in ("servicemonitor", "podmonitor"):
        assert tools.kubectl("get", kind, "-n", ns, "-o", "name").stdout.strip()

    # Back to the defaults: every namespace, one ClusterRole, no Roles.
    reset = tools.helm("upgrade", RELEASE, str(CHART), "-n", ns, "--reset-values", "--wait=false")
    assert "REVISION: 3" in reset.stdout
    assert tools.kubectl("get", "role", RELEASE, "-n", "llm", check=False).returncode != 0
    for line in check_permissions(tools, kubeconfig, CAN_I_ALL_NAMESPACES):
        print(line)
    lap(f"all-namespaces upgrade: {len(CAN_I_ALL_NAMESPACES)} more can-i checks passed")

    uninstall = tools.helm("uninstall", RELEASE, "-n", ns, "--wait")
    print(uninstall.stdout)
    lap("helm uninstall done")
    kept = tools.kubectl("get", "crd", "-o", "name").stdout
    for crd in ("acceleratorpools.infleet.io", "modeldeployments.infleet.io", "kopf.dev"):
        assert crd in kept, f"{crd} was deleted despite crds.keep"
    # The users' objects survive with their CRDs; the operator's own objects are gone.
    assert "chat-8b" in tools.kubectl("get", "mdep", "-n", "llm", "-o", "name").stdout
    gone = tools.kubectl("get", "clusterrole", RELEASE, check=False)
    assert gone.returncode != 0
    assert "NotFound" in gone.stderr
    left = tools.kubectl("get", "deploy,sa,svc,servicemonitor,podmonitor", "-n", ns, "-o", "name")
    assert left.stdout.split() == ["serviceaccount/default"]
