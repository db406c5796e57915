"""Shared by the operator e2e modules: `infleet run` as a child process, and the e2e pools.

A plain module (test modules cannot import conftest); pytest puts this directory on sys.path.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).parents[2]


class Operator:
    """`infleet run` as a child process, scoped to one namespace."""

    def __init__(
        self,
        kubeconfig: Path,
        namespace: str,
        log: Path,
        *,
        metrics_port: int = 0,
        pending_grace: float = 3,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.args = [
            sys.executable, "-m", "infleet.cli", "run",
            "--kubeconfig", str(kubeconfig), "-n", namespace,
            "--interval", "2", "--debounce", "0.2", "--pending-grace", f"{pending_grace:g}",
            "--metrics-port", str(metrics_port), *extra,
        ]  # fmt: skip
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log.open("ab") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT, env=env)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def apply_e2e_pools(cluster: Any) -> None:
    """The e2e pools as AcceleratorPool objects (the sandbox made their nodes)."""
    subprocess.run(
        [cluster.kubectl, "--kubeconfig", str(cluster.kubeconfig), "apply", "--server-side",
         "-f", str(REPO / "tests/e2e/pools")],
        check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
