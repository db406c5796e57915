"""Every manifest under examples/ is valid against the API, as the docs promise."""

from __future__ import annotations

from pathlib import Path

import pytest

from infleet.api import CapacityType
from infleet.api.manifests import YAML_SUFFIXES, load_manifests

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FILES = sorted(p for p in EXAMPLES.rglob("*") if p.suffix in YAML_SUFFIXES)


def test_there_are_examples() -> None:
    assert FILES


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_example_file_loads_without_errors(path: Path) -> None:
    loaded = load_manifests([path])
    assert [str(e) for e in loaded.errors] == []
    assert loaded.pools or loaded.models


def test_examples_directory_loads_as_one_fleet() -> None:
    loaded = load_manifests([EXAMPLES])
    assert [str(e) for e in loaded.errors] == []
    types = {p.spec.accelerator_type for p in loaded.pools}
    assert {
        "nvidia-h100-80gb",
        "nvidia-a100-80gb",
        "nvidia-l4",
        "amd-mi300x",
        "google-tpu-v5e",
        "cerebras-cs3",
    } <= types
    assert {p.spec.capacity_type for p in loaded.pools} == set(CapacityType)
    assert all(p.spec.max_accelerators is not None for p in loaded.pools)
    # every variant can land on some pool, and priorities differ
    for model in loaded.models:
        for variant in model.spec.variants:
            assert variant.accelerator_type in types, (model.metadata.name, variant.name)
    assert len({m.spec.priority for m in loaded.models}) == len(loaded.models)
