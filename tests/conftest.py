"""Shared test wiring: the `--kubeconfig` option and the session's Kubernetes cluster.

e2e tests get a cluster from the `cluster` fixture:
- `pytest --kubeconfig PATH` uses an existing cluster (a kind cluster in CI, say). Its nodes must
  match tests/e2e/pools (`infleet sandbox up --kind --pools tests/e2e/pools` makes them).
- `INFLEET_E2E_SANDBOX_DIR=DIR` uses (and if needed starts) the sandbox in DIR and leaves it
  running afterwards, so repeated runs skip start-up.
- Otherwise a fresh sandbox is started in a temporary directory once per session and stopped
  (and wiped) at the end.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

E2E_POOLS = Path(__file__).parent / "e2e" / "pools"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--kubeconfig",
        action="store",
        default=None,
        help="Run e2e tests against the cluster of this kubeconfig instead of a sandbox.",
    )


@dataclass(frozen=True)
class Cluster:
    """The cluster e2e tests talk to."""

    kubeconfig: Path
    kubectl: str
    """Path of a kubectl binary (the sandbox's own, or the one on PATH)."""
    sandbox_dir: Path | None
    """State directory when the cluster is an infleet sandbox."""


@pytest.fixture(scope="session")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """The session's cluster: given by --kubeconfig, or an infleet sandbox started once."""
    given = request.config.getoption("--kubeconfig")
    if given:
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            from infleet.sandbox.binaries import Binaries, bin_dir

            candidate = Binaries(bin_dir()).path("kubectl")
            if not candidate.exists():
                pytest.fail("--kubeconfig needs kubectl on PATH (or run `bash hack/build.sh`)")
            kubectl = str(candidate)
        from infleet.sandbox import kube
        from infleet.sandbox.cluster import default_crd_dir

        # The CEL test needs infleet's CRDs; applying them (server-side) is idempotent.
        api = kube.client_for(Path(given))
        kube.apply_crds(api, kube.read_crds([default_crd_dir()]), timeout=60)
        yield Cluster(Path(given), kubectl, None)
        return

    from infleet.sandbox.binaries import BinariesError, ensure_binaries
    from infleet.sandbox.cluster import Sandbox
    from infleet.sandbox.pools import load_pools

    try:
        # Building takes many minutes: longer than a test's timeout, so it is not done here.
        binaries = ensure_binaries(build=False)
    except BinariesError as exc:
        pytest.fail(f"e2e tests need the sandbox binaries: {exc}")
    reuse = os.environ.get("INFLEET_E2E_SANDBOX_DIR")
    directory = Path(reuse) if reuse else tmp_path_factory.mktemp("sandbox")
    box = Sandbox(directory, binaries)
    try:
        box.up(load_pools([E2E_POOLS]), echo=lambda line: print(f"[sandbox] {line}"))
    except Exception:
        if not reuse:
            box.down(wipe=False)
        raise
    try:
        yield Cluster(box.kubeconfig, str(box.binaries.path("kubectl")), box.dir)
    finally:
        if not reuse:
            box.down(wipe=True)
