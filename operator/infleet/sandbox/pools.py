"""Reading AcceleratorPools for the sandbox from manifest files or directories."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from infleet.api.manifests import load_manifests
from infleet.api.pool import AcceleratorPool


class PoolFileError(ValueError):
    """A manifest could not be read or holds an invalid AcceleratorPool."""


def load_pools(paths: Iterable[Path]) -> list[AcceleratorPool]:
    """Every AcceleratorPool in the given files/directories.

    Problems with pools, and problems that may hide one (unreadable files, YAML syntax errors,
    documents without a kind), are errors; problems in other kinds of document (models, say)
    are not the sandbox's business and are ignored.
    """
    paths = list(paths)
    for path in paths:
        if not path.exists():
            raise PoolFileError(f"{path}: no such file or directory")
    loaded = load_manifests(paths)
    errors = [e for e in loaded.errors if e.kind in (None, "AcceleratorPool")]
    if errors:
        raise PoolFileError("invalid pool manifests:\n" + "\n".join(f"  {e}" for e in errors))
    return list(loaded.pools)
