"""`infleet sandbox` itself: a second sandbox beside the session's, `up` twice, `status`, `env`,
`down` leaving nothing running, `--wipe`; Prometheus picking up registered targets; `--kind`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from infleet.sandbox.binaries import Binaries, bin_dir
from infleet.sandbox.cluster import COMPONENTS, Sandbox
from infleet.sandbox.kind import kind_available
from infleet.sandbox.processes import ProcessTable

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

INFLEET = str(Path(sys.executable).with_name("infleet"))
ONE_POOL = """\
apiVersion: infleet.io/v1alpha1
kind: AcceleratorPool
metadata:
  name: solo-mi300x
spec:
  acceleratorType: amd-mi300x
  resourceName: amd.com/gpu
  acceleratorsPerNode: 8
  nodeSelector:
    infleet.io/solo: mi300x
  costPerAcceleratorHour: 2.5
  maxAccelerators: 24
"""

needs_binaries = pytest.mark.skipif(
    bool(Binaries(bin_dir()).missing()), reason="sandbox binaries not built (bash hack/build.sh)"
)


def _infleet(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [INFLEET, "sandbox", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _pids(directory: Path) -> dict[str, int]:
    table = ProcessTable(directory / "pids")
    return {name: record.pid for name in COMPONENTS if (record := table.running(name))}


@needs_binaries
def test_second_sandbox_runs_beside_the_first_and_down_stops_everything(tmp_path: Path) -> None:
    state = tmp_path / "second"
    pools = tmp_path / "pool.yaml"
    pools.write_text(ONE_POOL)

    first = _infleet("up", "--dir", str(state), "--pools", str(pools))
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip().splitlines()[-1] == f"export KUBECONFIG={state / 'kubeconfig'}"
    assert "3 Ready for 1 pools" in first.stderr  # 24 accelerators / 8 per node
    pids = _pids(state)
    assert set(pids) == set(COMPONENTS)
    try:
        again = _infleet("up", "--dir", str(state), "--pools", str(pools))
        assert again.returncode == 0, again.stderr
        assert _pids(state) == pids, "a second `up` must keep the running processes"
        assert "3 Ready for 1 pools (0 created, 0 updated, 0 removed;" in again.stderr

        # A changed kwok configuration (here the start-up scale, written to the settings file
        # as a script might) restarts kwok on the next `up`: kwok reads its Stages at start.
        from infleet.sandbox.kwok import delay_expression
        from infleet.sandbox.load_settings import settings_path, update_settings

        update_settings(settings_path(state), startup_scale=0.25)
        changed = _infleet("up", "--dir", str(state), "--pools", str(pools))
        assert changed.returncode == 0, changed.stderr
        assert "kwok: configuration changed, restarting" in changed.stderr
        after = _pids(state)
        assert after["kwok"] != pids["kwok"]
        assert {k: v for k, v in after.items() if k != "kwok"} == {
            k: v for k, v in pids.items() if k != "kwok"
        }
        kwok_yaml = (state / "kwok.yaml").read_text()
        assert delay_expression(0.25).replace("'", "''") in kwok_yaml
        assert "3 Ready for 1 pools" in changed.stderr  # nodes Ready under the new kwok
        pids = after

        status = _infleet("status", "--dir", str(state))
        assert status.returncode == 0, status.stdout
        for component in COMPONENTS:
            assert f"pid {pids[component]}" in status.stdout

        env = _infleet("env", "--dir", str(state)).stdout.splitlines()
        prometheus_port = json.loads((state / "ports.json").read_text())["prometheus"]
        assert env[0] == f"export KUBECONFIG={state / 'kubeconfig'}"
        assert env[1] == f"export INFLEET_PROMETHEUS_URL=http://127.0.0.1:{prometheus_port}"
        assert env[2].startswith('export PATH="')
        assert env[2].endswith(':$PATH"')
        helm = Path(env[2].removeprefix('export PATH="').removesuffix(':$PATH"')) / "helm"
        assert subprocess.run([helm, "version"], capture_output=True, check=False).returncode == 0
    finally:
        down = _infleet("down", "--dir", str(state))
    assert down.returncode == 0, down.stderr
    for pid in pids.values():
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), f"pid {pid} still runs"
    assert _infleet("status", "--dir", str(state)).returncode == 1
    assert state.exists()
    assert _infleet("down", "--dir", str(state), "--wipe").returncode == 0
    assert not state.exists()


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"


def test_prometheus_scrapes_a_registered_target(cluster: Any) -> None:
    if cluster.sandbox_dir is None:
        pytest.skip("Prometheus is part of the infleet sandbox, not of a --kubeconfig cluster")
    box = Sandbox(cluster.sandbox_dir)
    own = f"127.0.0.1:{box.ports().prometheus}"
    path = box.register_scrape_target("infleet-operator", "e2e-self", [own], {"e2e": "yes"})
    try:
        deadline = time.monotonic() + 60
        health = None
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"{box.prometheus_url}/api/v1/targets", timeout=5) as r:
                targets = json.load(r)["data"]["activeTargets"]
            mine = [t for t in targets if t["labels"].get("job") == "infleet-operator"]
            health = mine[0]["health"] if mine else None
            if health == "up":
                break
            time.sleep(1)
        assert health == "up"
        assert mine[0]["labels"]["e2e"] == "yes"
    finally:
        path.unlink()


@pytest.mark.skipif(not kind_available(), reason="needs `kind` and a running Docker engine")
def test_kind_mode_labels_workers_as_pools(tmp_path: Path) -> None:
    pools = tmp_path / "pool.yaml"
    pools.write_text(ONE_POOL)
    state = tmp_path / "kind"
    result = _infleet("up", "--kind", "--dir", str(state), "--pools", str(pools), timeout=600)
    try:
        assert result.returncode == 0, result.stderr
        nodes = subprocess.run(
            ["kubectl", "--kubeconfig", str(state / "kubeconfig"), "get", "nodes", "-o", "json"],
            capture_output=True,
            text=True,
            check=True,
        )
        items = json.loads(nodes.stdout)["items"]
        pool_nodes = [
            n for n in items if n["metadata"]["labels"].get("infleet.io/solo") == "mi300x"
        ]
        assert len(pool_nodes) == 1
        assert pool_nodes[0]["status"]["capacity"]["amd.com/gpu"] == "8"
    finally:
        _infleet("down", "--dir", str(state), "--wipe")


@needs_binaries
def test_up_after_down_keeps_running_pods_on_the_fake_nodes(tmp_path: Path) -> None:
    """`down` then `up` without `--wipe`: the new kwok takes over the fake nodes at once (the old
    process's 600 s leases are released), so a pod created after the restart becomes Ready."""
    from kubernetes import client

    from infleet.sandbox.kube import client_for

    state = tmp_path / "again"
    pools = tmp_path / "pool.yaml"
    pools.write_text(ONE_POOL)
    try:
        for attempt in ("first", "after down"):
            up = _infleet("up", "--dir", str(state), "--pools", str(pools))
            assert up.returncode == 0, up.stderr
            core = client.CoreV1Api(client_for(state / "kubeconfig"))
            name = f"probe-{attempt.replace(' ', '-')}"
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {
                    "nodeSelector": {"infleet.io/solo": "mi300x"},
                    "containers": [{"name": "c", "image": "x:1"}],
                },
            }
            core.create_namespaced_pod("default", pod)
            deadline = time.monotonic() + 45
            ready = False
            while time.monotonic() < deadline and not ready:
                status = core.read_namespaced_pod(name, "default").status
                ready = any(
                    c.type == "Ready" and c.status == "True" for c in status.conditions or []
                )
                time.sleep(0.5)
            assert ready, f"pod {name} not Ready 45 s after `up` ({attempt}): {status}"
            assert _infleet("down", "--dir", str(state)).returncode == 0
    finally:
        _infleet("down", "--dir", str(state), "--wipe")
