"""Which manifest problems stop `infleet sandbox up` (pool problems) and which do not."""

from __future__ import annotations

from pathlib import Path

import pytest

from infleet.sandbox.pools import PoolFileError, load_pools

POOL = """\
apiVersion: infleet.io/v1alpha1
kind: AcceleratorPool
metadata: {name: NAME}
spec:
  acceleratorType: nvidia-l4
  acceleratorsPerNode: PER_NODE
  nodeSelector: {pool: NAME}
  costPerAcceleratorHour: 0.8
"""


def pool_yaml(name: str, per_node: int) -> str:
    return POOL.replace("NAME", name).replace("PER_NODE", str(per_node))


def test_reads_pools_from_files_and_directories(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(pool_yaml("a", 4) + "---\n" + pool_yaml("b", 8))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.yaml").write_text(pool_yaml("c", 1))
    pools = load_pools([tmp_path])
    assert sorted((p.metadata.name, p.spec.accelerators_per_node) for p in pools) == [
        ("a", 4),
        ("b", 8),
        ("c", 1),
    ]


def test_an_invalid_pool_is_an_error_naming_file_and_field(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(pool_yaml("bad", 0))
    with pytest.raises(PoolFileError, match=r"bad\.yaml.*acceleratorsPerNode"):
        load_pools([tmp_path])


def test_a_broken_model_does_not_stop_the_pools(tmp_path: Path) -> None:
    (tmp_path / "pool.yaml").write_text(pool_yaml("ok", 8))
    (tmp_path / "model.yaml").write_text(
        "apiVersion: infleet.io/v1alpha1\nkind: ModelDeployment\n"
        "metadata: {name: m, namespace: default}\nspec: {model: x}\n"
    )
    assert [p.metadata.name for p in load_pools([tmp_path])] == ["ok"]


def test_a_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PoolFileError, match="no such file"):
        load_pools([tmp_path / "nope.yaml"])
