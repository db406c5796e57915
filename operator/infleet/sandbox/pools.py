"""Reading AcceleratorPools for the sandbox from manifest files or directories."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import yaml
from pydantic import ValidationError

from infleet.api.pool import AcceleratorPool

MANIFEST_SUFFIXES = (".yaml", ".yml")


class PoolFileError(ValueError):
    """A manifest could not be read or holds an invalid AcceleratorPool."""


def manifest_files(paths: Iterable[Path]) -> list[Path]:
    """The YAML files named, and those under named directories (recursively, sorted)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix in MANIFEST_SUFFIXES))
        elif path.exists():
            files.append(path)
        else:
            raise PoolFileError(f"{path}: no such file or directory")
    return files


def load_pools(paths: Iterable[Path]) -> list[AcceleratorPool]:
    """Every AcceleratorPool in the given files/directories; other kinds are skipped."""
    pools: list[AcceleratorPool] = []
    for file in manifest_files(paths):
        try:
            documents = list(yaml.safe_load_all(file.read_text()))
        except (OSError, yaml.YAMLError) as exc:
            raise PoolFileError(f"{file}: cannot read YAML: {exc}") from exc
        for index, document in enumerate(documents):
            if not isinstance(document, dict) or document.get("kind") != "AcceleratorPool":
                continue
            try:
                pools.append(AcceleratorPool.model_validate(document))
            except ValidationError as exc:
                raise PoolFileError(f"{file} (document {index + 1}): {exc}") from exc
    return pools
