"""What a user sees with the real kubectl: `get` columns, `explain`, `describe`, and the docs'
manifests accepted by a real API server.

The operator runs as `infleet run -n <namespace>` (tests/e2e/operator_process.py); every
assertion reads kubectl's own output, parsed by column position as a person reads it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_process import Operator

from doc_snippets import Snippet, manifests, yaml_snippets
from infleet.api import SLO, Variant

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

GROUP, VERSION = "infleet.io", "v1alpha1"


def kubectl(cluster: Any, *args: str, check: bool = True) -> str:
    done = subprocess.run(
        [cluster.kubectl, "--kubeconfig", str(cluster.kubeconfig), *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if check and done.returncode != 0:
        pytest.fail(f"kubectl {' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return done.stdout + (done.stderr if not check else "")


def tables(text: str) -> list[list[dict[str, str]]]:
    """kubectl's tables (one per kind, separated by blank lines) as rows of column -> cell.

    Cells are cut at the header's column starts, so an empty cell (SLO MET without metrics)
    stays empty instead of shifting the others.
    """
    found = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = block.splitlines()
        header = lines[0]
        starts = [m.start() for m in re.finditer(r"\S+(?: \S+)*", header)]
        names = [header[s:e].strip() for s, e in zip(starts, [*starts[1:], None], strict=True)]
        rows = []
        for line in lines[1:]:
            cells = [line[s:e].strip() for s, e in zip(starts, [*starts[1:], None], strict=True)]
            rows.append(dict(zip(names, cells, strict=True)))
        found.append(rows)
    return found


def by_name(rows: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {row["NAME"].rsplit("/", 1)[-1]: row for row in rows}


def conditions(describe: str) -> dict[str, dict[str, str]]:
    """The Conditions of `kubectl describe` output, by type."""
    lines = describe.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "Conditions:")
    indent = len(lines[start]) - len(lines[start].lstrip())
    found: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in lines[start + 1 :]:
        if len(line) - len(line.lstrip()) <= indent:
            break
        key, _, value = line.strip().partition(":")
        if key == "Last Transition Time" and current:
            found[current.get("Type", "?")] = current
            current = {}
        current[key] = value.strip()
    if current:
        found[current.get("Type", "?")] = current
    return found


def events(describe: str) -> list[tuple[str, str, str, str]]:
    """(type, reason, from, message) of the Events table of `kubectl describe` output."""
    _, _, tail = describe.partition("\nEvents:")
    rows = []
    for line in tail.splitlines():
        parts = line.split(None, 4)
        if len(parts) == 5 and parts[0] in ("Normal", "Warning"):
            rows.append((parts[0], parts[1], parts[3], parts[4]))
    return rows


def model(
    name: str,
    *,
    accelerator: str,
    pool: str | None,
    rps: float,
    capacity: float,
    per_replica: int = 1,
    max_replicas: int = 10,
) -> dict[str, Any]:
    variant: dict[str, Any] = {
        "acceleratorType": accelerator,
        "acceleratorsPerReplica": per_replica,
        "maxRequestsPerSecond": capacity,
        "startupSeconds": 2,
    }
    if pool is not None:
        variant["pools"] = [pool]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": f"org/{name}",
            "slo": {"timeToFirstTokenMs": 800},
            "traffic": {"requestsPerSecond": rps, "meanInputTokens": 512, "meanOutputTokens": 64},
            "replicas": {"min": 0, "max": max_replicas},
            "variants": [variant],
            "template": {
                "spec": {"containers": [{"name": "server", "image": "registry.invalid/llm:1"}]}
            },
        },
    }


def create(custom: Any, namespace: str, body: dict[str, Any]) -> None:
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", body)


def status_of(custom: Any, namespace: str, name: str) -> dict[str, Any]:
    obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", name)
    return dict(obj.get("status") or {})


def pool_status(custom: Any, name: str) -> dict[str, Any]:
    obj = custom.get_cluster_custom_object(GROUP, VERSION, "acceleratorpools", name)
    return dict(obj.get("status") or {})


@pytest.fixture
def operator(cluster: Any, pools: None, namespace: str, tmp_path: Path) -> Iterator[Operator]:
    op = Operator(cluster.kubeconfig, namespace, tmp_path / "operator.log")
    op.start()
    yield op
    op.stop()
    print(op.log.read_text()[-4000:])


def test_get_and_describe_say_what_happened_and_what_to_do(
    cluster: Any, kube: Any, custom: Any, namespace: str, operator: Operator
) -> None:
    # Placed: 16 req/s / 0.8 = 20 needed, 10 per 2-GPU replica: 2 replicas, 4 A100s at $1.80.
    create(custom, namespace, model("chat", accelerator="nvidia-a100-80gb", pool="e2e-gc",
                                    rps=16, capacity=10, per_replica=2))  # fmt: skip
    # No pool carries this accelerator type.
    create(custom, namespace, model("nowhere", accelerator="google-tpu-v5e", pool=None,
                                    rps=5, capacity=10))  # fmt: skip
    # 40 / 0.8 = 50 needed at 5 per system: 10 systems wanted, the pool has 2.
    create(custom, namespace, model("wafer", accelerator="cerebras-cs3", pool="e2e-cs3",
                                    rps=40, capacity=5, max_replicas=16))  # fmt: skip

    def settled() -> dict[str, dict[str, str]] | None:
        out = kubectl(cluster, "get", "mdep", "-n", namespace, "-o", "wide")
        rows = by_name(tables(out)[0])
        ok = (
            rows.get("chat", {}).get("READY") == "2"
            and rows.get("nowhere", {}).get("SCHEDULED") == "NoMatchingPool"
            and rows.get("wafer", {}).get("SCHEDULED") == "CapacityShortage"
        )
        return rows if ok else None

    wide = kube.wait_for("the three models to settle in kubectl get", settled, timeout=60)
    chat, nowhere, wafer = wide["chat"], wide["nowhere"], wide["wafer"]
    assert chat["MODEL"] == "org/chat"
    assert (chat["DESIRED"], chat["READY"], chat["COST/H"]) == ("2", "2", "7.2")
    assert (chat["SCHEDULED"], chat["DEMAND"], chat["UNMET"], chat["MODE"]) == (
        "Placed", "16", "0", "Apply",
    )  # fmt: skip
    assert chat["SLO MET"] == ""  # no live metrics in this test: no SLOMet condition
    assert (nowhere["DESIRED"], nowhere["READY"], nowhere["UNMET"]) == ("0", "0", "6.25")
    wafer_status = status_of(custom, namespace, "wafer")
    assert wafer["DESIRED"] == str(wafer_status["desiredReplicas"])
    assert 0 <= int(wafer["DESIRED"]) <= 2  # one replica per CS-3 system, two systems
    assert float(wafer["UNMET"]) == pytest.approx(wafer_status["unmetRequestsPerSecond"])
    assert float(wafer["UNMET"]) >= 50 - 2 * 5

    # Pools and models together, with the columns a user reads first.
    def pools_settled() -> list[list[dict[str, str]]] | None:
        out = tables(kubectl(cluster, "get", "apool,mdep", "-n", namespace))
        cs3 = by_name(out[0]).get("e2e-cs3", {})
        return out if cs3.get("FREE") == "0" and by_name(out[0])["e2e-gc"]["FREE"] else None

    apools, mdeps = kube.wait_for("pool status in kubectl get", pools_settled, timeout=30)
    assert list(apools[0]) == [
        "NAME", "TYPE", "CAPACITY TYPE", "READY NODES", "ALLOCATABLE", "FREE", "COST/H", "AGE",
    ]  # fmt: skip
    assert list(mdeps[0]) == [
        "NAME", "MODEL", "DESIRED", "READY", "COST/H", "SLO MET", "SCHEDULED", "AGE",
    ]  # fmt: skip
    cs3, gc = by_name(apools)["e2e-cs3"], by_name(apools)["e2e-gc"]
    assert (cs3["TYPE"], cs3["CAPACITY TYPE"], cs3["READY NODES"], cs3["ALLOCATABLE"]) == (
        "cerebras-cs3", "reserved", "2", "2",
    )  # fmt: skip
    assert (gc["TYPE"], gc["CAPACITY TYPE"], gc["READY NODES"], gc["ALLOCATABLE"]) == (
        "nvidia-a100-80gb", "on-demand", "1", "8",
    )  # fmt: skip
    assert gc["FREE"] == str(pool_status(custom, "e2e-gc")["freeAccelerators"])
    assert int(gc["FREE"]) <= 8 - 4  # our 4 A100s are taken
    assert by_name(mdeps)["chat"]["SCHEDULED"] == "Placed"
    gc_wide = by_name(tables(kubectl(cluster, "get", "apool", "e2e-gc", "-o", "wide"))[0])
    assert gc_wide["e2e-gc"]["RESOURCE"] == "nvidia.com/gpu"
    assert gc_wide["e2e-gc"]["MAX"] == "8"
    assert int(gc_wide["e2e-gc"]["ALLOCATED"]) >= 4

    # A pool's describe says how many accelerators on how many nodes.
    pool_conds = conditions(kubectl(cluster, "describe", "apool", "e2e-gc"))
    assert pool_conds["Ready"]["Status"] == "True"
    assert pool_conds["Ready"]["Reason"] in ("NodesReady", "CapacityReduced")
    assert "accelerators" in pool_conds["Ready"]["Message"]

    # The category lists both kinds.
    listed = kubectl(cluster, "get", "infleet", "-n", namespace)
    assert "acceleratorpool.infleet.io/e2e-cs3" in listed
    assert "modeldeployment.infleet.io/chat" in listed

    # describe: conditions with reasons and messages, and the decision's Event.
    placed = kubectl(cluster, "describe", "mdep", "chat", "-n", namespace)
    conds = conditions(placed)
    assert (conds["Ready"]["Status"], conds["Ready"]["Reason"]) == ("True", "ReplicasReady")
    assert conds["Ready"]["Message"] == "2 of 2 replicas ready"
    assert (conds["Scheduled"]["Status"], conds["Scheduled"]["Reason"]) == ("True", "Placed")
    assert conds["Scheduled"]["Message"] == "2 replicas serve 20 req/s for 20 req/s needed"
    assert any(
        (kind, reason, source) == ("Normal", "Placed", "infleet")
        and message.startswith("placed 2 on e2e-gc: ")
        for kind, reason, source, message in events(placed)
    ), placed

    nothing = kubectl(cluster, "describe", "mdep", "nowhere", "-n", namespace)
    conds = conditions(nothing)
    assert (conds["Ready"]["Status"], conds["Ready"]["Reason"]) == ("False", "NotScheduled")
    scheduled = conds["Scheduled"]
    assert (scheduled["Status"], scheduled["Reason"]) == ("False", "NoMatchingPool")
    assert "google-tpu-v5e" in scheduled["Message"]
    assert "To fix: create an AcceleratorPool" in scheduled["Message"]
    warnings = [e for e in events(nothing) if e[:2] == ("Warning", "NoMatchingPool")]
    assert len(warnings) == 1, nothing
    assert "To fix: create an AcceleratorPool" in warnings[0][3]

    short = kubectl(cluster, "describe", "mdep", "wafer", "-n", namespace)
    scheduled = conditions(short)["Scheduled"]
    assert (scheduled["Status"], scheduled["Reason"]) == ("False", "CapacityShortage")
    assert "pools for cerebras-cs3 are full" in scheduled["Message"]
    assert "To fix: add nodes to its pools or raise their maxAccelerators" in scheduled["Message"]
    assert any(e[:2] == ("Warning", "CapacityShortage") for e in events(short)), short


def test_explain_shows_the_field_descriptions(cluster: Any) -> None:
    out = kubectl(cluster, "explain", "modeldeployment.spec.slo")
    flat = " ".join(out.split())
    for name, field in SLO.model_fields.items():
        assert " ".join((field.description or "").split()) in flat, (name, out)
    for wire in ("percentile", "timeToFirstTokenMs", "timePerOutputTokenMs"):
        assert re.search(rf"^\s+{wire}\s+<number>", out, re.MULTILINE), out
    capacity = kubectl(cluster, "explain", "modeldeployment.spec.variants.maxRequestsPerSecond")
    expected = Variant.model_fields["max_requests_per_second"].description or ""
    assert " ".join(expected.split()) in " ".join(capacity.split())


def _sandbox(cluster: Any) -> Any:
    if cluster.sandbox_dir is None:
        pytest.skip("needs the infleet sandbox's simulated engines and Prometheus")
    from infleet.sandbox.cluster import Sandbox

    return Sandbox(cluster.sandbox_dir)


def test_live_metrics_fill_slo_met_and_metrics_conditions(
    cluster: Any, kube: Any, custom: Any, namespace: str, pools: None, tmp_path: Path
) -> None:
    box = _sandbox(cluster)
    op = Operator(
        cluster.kubeconfig, namespace, tmp_path / "operator.log",
        extra=("--prometheus-url", box.prometheus_url, "--metrics-window", "20s"),
    )  # fmt: skip
    body = model("live", accelerator="nvidia-h100-80gb", pool="e2e-h100", rps=2, capacity=5)
    create(custom, namespace, body)
    load = [sys.executable, "-m", "infleet", "sandbox", "load", "set", f"{namespace}/live",
            "--rps", "2", "--input-tokens", "512", "--output-tokens", "64",
            "--dir", str(box.dir)]  # fmt: skip
    subprocess.run(load, check=True, capture_output=True, timeout=90)
    op.start()
    try:

        def slo_met() -> dict[str, str] | None:
            rows = by_name(tables(kubectl(cluster, "get", "mdep", "-n", namespace))[0])
            return rows["live"] if rows.get("live", {}).get("SLO MET") == "True" else None

        row = kube.wait_for("SLO MET True in kubectl get", slo_met, timeout=120, interval=2)
        # The autoscaler may add replicas while the first one's start-up backlog drains; the
        # columns show whatever status says.
        live = status_of(custom, namespace, "live")
        assert row["DESIRED"] == str(live["desiredReplicas"])
        assert int(row["READY"]) >= 1
        assert row["SCHEDULED"] == "Placed"
        conds = conditions(kubectl(cluster, "describe", "mdep", "live", "-n", namespace))
        assert (conds["MetricsAvailable"]["Status"], conds["MetricsAvailable"]["Reason"]) == (
            "True", "MetricsFresh",
        )  # fmt: skip
        assert conds["SLOMet"]["Reason"] == "WithinSLO"
        assert re.fullmatch(r"p95 TTFT \d+\.\d ms <= 800 ms", conds["SLOMet"]["Message"])
    finally:
        op.stop()
        clear = [sys.executable, "-m", "infleet", "sandbox", "load", "clear",
                 f"{namespace}/live", "--dir", str(box.dir)]  # fmt: skip
        subprocess.run(clear, check=False, capture_output=True, timeout=90)
        print(op.log.read_text()[-4000:])


DOC_MANIFESTS = [s for s in yaml_snippets() if manifests(s)]


def test_the_docs_have_manifests_to_dry_run() -> None:
    kinds = {d["kind"] for s in DOC_MANIFESTS for d in manifests(s)}
    assert {"AcceleratorPool", "ModelDeployment"} <= kinds, kinds


def dry_run(cluster: Any, namespace: str, docs: list[dict[str, Any]], tmp_path: Path) -> str:
    """Server-side dry run of ``docs``; "" when the API server accepts them, else its error.

    Namespaced objects go to ``namespace`` (the docs' `llm` may not exist). A dry run checks
    schema, CEL rules and defaults, and persists nothing.
    """
    moved = []
    for doc in docs:
        meta = doc.get("metadata")
        if isinstance(meta, dict) and "namespace" in meta:
            doc = {**doc, "metadata": {**meta, "namespace": namespace}}
        moved.append(doc)
    path = tmp_path / "snippet.yaml"
    path.write_text(yaml.safe_dump_all(moved, sort_keys=False))
    done = subprocess.run(
        [cluster.kubectl, "--kubeconfig", str(cluster.kubeconfig), "apply", "--server-side",
         "--force-conflicts", "--field-manager", "infleet-docs-test", "--dry-run=server",
         "-n", namespace, "-f", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        return done.stderr or f"exit status {done.returncode}"
    assert "(server dry run)" in done.stdout, done.stdout
    return ""


@pytest.mark.parametrize("snippet", DOC_MANIFESTS, ids=[s.where for s in DOC_MANIFESTS])
def test_doc_manifests_pass_a_server_side_dry_run(
    cluster: Any, namespace: str, snippet: Snippet, tmp_path: Path
) -> None:
    error = dry_run(cluster, namespace, manifests(snippet), tmp_path)
    assert not error, f"{snippet.where}: {error}"


def test_dry_run_rejects_a_broken_manifest(cluster: Any, namespace: str, tmp_path: Path) -> None:
    good = model("chat", accelerator="nvidia-l4", pool=None, rps=1, capacity=2)
    good["metadata"]["namespace"] = "llm"  # moved to the test's namespace, as for the docs
    assert dry_run(cluster, namespace, [good], tmp_path) == ""
    bad = {**good, "spec": {**good["spec"], "slo": {"percentile": 95}}}
    assert "set at least one of timeToFirstTokenMs" in dry_run(cluster, namespace, [bad], tmp_path)
    pool = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "AcceleratorPool",
            "metadata": {"name": "docs-dry-run"},
            "spec": {"acceleratorType": "nvidia-l4", "acceleratorsPerNode": 0,
                     "nodeSelector": {"a": "b"}, "costPerAcceleratorHour": 1}}  # fmt: skip
    assert "acceleratorsPerNode" in dry_run(cluster, namespace, [pool], tmp_path)
