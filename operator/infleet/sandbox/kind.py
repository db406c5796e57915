"""`infleet sandbox up --kind`: a kind cluster instead of the local control plane, where `kind`
and a Docker engine exist. One worker per pool, labelled with the pool's nodeSelector, tainted
for its tolerations, with the pool's accelerators patched onto the node as an extended resource.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from infleet.api.pool import AcceleratorPool
from infleet.sandbox.nodes import POOL_LABEL, taints_for

Echo = Callable[[str], None]


class KindUnavailableError(RuntimeError):
    """kind or a running Docker engine is missing."""


def kind_available() -> bool:
    """True when the `kind` command exists and a Docker engine answers."""
    if shutil.which("kind") is None or shutil.which("docker") is None:
        return False
    result = subprocess.run(["docker", "info"], capture_output=True, check=False)
    return result.returncode == 0


def _run(argv: Sequence[str], stdin: str | None = None) -> str:
    result = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result.stdout


class KindSandbox:
    """A kind cluster whose name derives from the state directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory.resolve()
        digest = hashlib.sha256(str(self.dir).encode()).hexdigest()[:8]
        self.name = f"infleet-{digest}"

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    def up(self, pools: Sequence[AcceleratorPool], echo: Echo) -> None:
        """Create the cluster (unless it exists) and shape one worker per pool."""
        if not kind_available():
            raise KindUnavailableError(
                "--kind needs the `kind` command and a running Docker engine"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        clusters = _run(["kind", "get", "clusters"]).split()
        if self.name not in clusters:
            config = {
                "kind": "Cluster",
                "apiVersion": "kind.x-k8s.io/v1alpha4",
                "nodes": [{"role": "control-plane"}] + [{"role": "worker"} for _ in pools],
            }
            echo(f"kind: creating cluster {self.name} with {len(pools)} workers")
            _run(
                [
                    "kind",
                    "create",
                    "cluster",
                    "--name",
                    self.name,
                    "--config",
                    "-",
                    "--wait",
                    "120s",
                ],
                stdin=yaml.safe_dump(config),
            )
        _run(
            [
                "kind",
                "export",
                "kubeconfig",
                "--name",
                self.name,
                "--kubeconfig",
                str(self.kubeconfig),
            ]
        )
        (self.dir / "kind.json").write_text(json.dumps({"cluster": self.name}))
        kubectl = ["kubectl", "--kubeconfig", str(self.kubeconfig)]
        workers = sorted(
            _run(
                [
                    *kubectl,
                    "get",
                    "nodes",
                    "-l",
                    "!node-role.kubernetes.io/control-plane",
                    "-o",
                    "name",
                ]
            ).split()
        )
        for pool, worker in zip(pools, workers, strict=False):
            node = worker.removeprefix("node/")
            labels = {POOL_LABEL: pool.metadata.name, **pool.spec.node_selector}
            _run(
                [
                    *kubectl,
                    "label",
                    "node",
                    node,
                    "--overwrite",
                    *[f"{k}={v}" for k, v in labels.items()],
                ]
            )
            for taint in taints_for(pool.spec.tolerations):
                value = f"={taint['value']}" if "value" in taint else ""
                _run(
                    [
                        *kubectl,
                        "taint",
                        "node",
                        node,
                        "--overwrite",
                        f"{taint['key']}{value}:{taint['effect']}",
                    ]
                )
            resource = pool.spec.resource_name.replace("/", "~1")
            patch = [
                {
                    "op": "add",
                    "path": f"/status/capacity/{resource}",
                    "value": str(pool.spec.accelerators_per_node),
                }
            ]
            _run(
                [
                    *kubectl,
                    "patch",
                    "node",
                    node,
                    "--subresource=status",
                    "--type=json",
                    "-p",
                    json.dumps(patch),
                ]
            )
            echo(f"kind: {node} is pool {pool.metadata.name}")

    def down(self, echo: Echo) -> None:
        """Delete the kind cluster if this state directory created one."""
        marker = self.dir / "kind.json"
        if not marker.exists() or shutil.which("kind") is None:
            return
        _run(["kind", "delete", "cluster", "--name", self.name])
        marker.unlink(missing_ok=True)
        echo(f"kind: deleted cluster {self.name}")
