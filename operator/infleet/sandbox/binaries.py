"""Where the sandbox's binaries live: the cache directory that hack/build.sh fills.

hack/versions.env pins the versions; the directory name is derived from it and from the Go modules
in hack/ exactly as build.sh derives it, so Python and the build script agree without talking.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
"""The checkout this package runs from (the package is installed in editable mode)."""
HACK_DIR = REPO_ROOT / "hack"

KEY_FILES = (
    "versions.env",
    "kube/go.mod",
    "kube/go.sum",
    "kube/main.go",
    "etcd/go.mod",
    "etcd/go.sum",
    "etcd/main.go",
)
"""Files whose content decides what gets built; keep in step with KEY_FILES in hack/build.sh."""

COMMANDS = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "etcd",
    "kwok",
    "helm",
    "prometheus",
)
"""Commands a complete binary directory provides."""


class BinariesError(RuntimeError):
    """The sandbox's binaries are missing or could not be built."""


def parse_env_file(text: str) -> dict[str, str]:
    """KEY=VALUE lines of a shell env file; blank lines and comments are skipped."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ValueError(f"line {number}: expected KEY=VALUE, got {raw!r}")
        values[key.strip()] = value.strip().strip("'\"")
    return values


def versions(hack_dir: Path = HACK_DIR) -> dict[str, str]:
    """The pinned versions from hack/versions.env."""
    path = hack_dir / "versions.env"
    try:
        return parse_env_file(path.read_text())
    except (OSError, ValueError) as exc:
        raise BinariesError(f"{path}: {exc}") from exc


def cache_key(hack_dir: Path = HACK_DIR) -> str:
    """First 12 hex digits of sha256 over KEY_FILES concatenated (as `cat | sha256sum`)."""
    digest = hashlib.sha256()
    for name in KEY_FILES:
        digest.update((hack_dir / name).read_bytes())
    return digest.hexdigest()[:12]


def cache_root() -> Path:
    """${XDG_CACHE_HOME:-~/.cache}/infleet/bin, as in build.sh."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "infleet" / "bin"


def bin_dir(hack_dir: Path = HACK_DIR) -> Path:
    """The directory that holds (or will hold) the binaries for the pinned versions.

    INFLEET_SANDBOX_BIN overrides it (a directory with the same commands, built elsewhere).
    """
    override = os.environ.get("INFLEET_SANDBOX_BIN")
    if override:
        return Path(override)
    return cache_root() / f"{versions(hack_dir)['KUBERNETES_VERSION']}-{cache_key(hack_dir)}"


@dataclass(frozen=True)
class Binaries:
    """Paths of the sandbox's commands."""

    directory: Path

    def path(self, command: str) -> Path:
        """Absolute path of one command."""
        return self.directory / command

    def missing(self) -> list[str]:
        """Commands the directory lacks (empty when complete)."""
        return [c for c in COMMANDS if not os.access(self.directory / c, os.X_OK)]


def ensure_binaries(build: bool = True) -> Binaries:
    """The binaries for the pinned versions, running hack/build.sh first when they are missing.

    build.sh prints its progress to this process's stdout/stderr.
    """
    binaries = Binaries(bin_dir())
    if not binaries.missing():
        return binaries
    if not build or os.environ.get("INFLEET_SANDBOX_BIN"):
        raise BinariesError(
            f"{binaries.directory} lacks {', '.join(binaries.missing())}; "
            "run `bash hack/build.sh` (or `make sandbox-bins`) first"
        )
    result = subprocess.run(["bash", str(HACK_DIR / "build.sh")], check=False)
    if result.returncode != 0:
        raise BinariesError(f"hack/build.sh failed with exit code {result.returncode}")
    if binaries.missing():
        raise BinariesError(
            f"hack/build.sh finished but {binaries.directory} lacks {', '.join(binaries.missing())}"
        )
    return binaries
