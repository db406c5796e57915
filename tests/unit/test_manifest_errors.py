"""Malformed manifests: every problem is reported with file, kind/name, field path and message."""

from __future__ import annotations

from pathlib import Path

import pytest

from infleet.api.manifests import ManifestError, load_manifests

POOL = """\
apiVersion: infleet.io/v1alpha1
kind: AcceleratorPool
metadata:
  name: h100
spec:
  acceleratorType: nvidia-h100-80gb
  acceleratorsPerNode: 8
  nodeSelector: {pool: h100}
  costPerAcceleratorHour: 4.92
"""

MODEL = """\
apiVersion: infleet.io/v1alpha1
kind: ModelDeployment
metadata:
  name: llama
  namespace: chat
spec:
  model: meta-llama/Llama-3.1-8B-Instruct
  slo: {timePerOutputTokenMs: 50}
  variants:
    - acceleratorType: nvidia-h100-80gb
      maxRequestsPerSecond: 10
"""


def model_with(extra: str, *, drop: str | None = None) -> str:
    """MODEL with ``extra`` (indented spec lines) appended and the spec line ``drop`` removed."""
    lines = [line for line in MODEL.splitlines() if drop is None or line.strip() != drop]
    return "\n".join(lines) + "\n" + extra


def pool_with(extra: str, *, drop: str | None = None) -> str:
    lines = [line for line in POOL.splitlines() if drop is None or line.strip() != drop]
    return "\n".join(lines) + "\n" + extra


CASES: list[tuple[str, str, list[str]]] = [
    (
        "yaml-syntax",
        "apiVersion: infleet.io/v1alpha1\nkind: ModelDeployment\nmetadata:\n  name: [oops\n",
        [
            "models.yaml:5:1: invalid YAML: expected ',' or ']', but got '<stream end>' "
            "(while parsing a flow sequence started at line 4, column 9)"
        ],
    ),
    (
        "yaml-bad-indentation",
        "kind: ModelDeployment\n  metadata: x\n",
        ["models.yaml:2:11: invalid YAML: mapping values are not allowed here"],
    ),
    (
        "yaml-duplicate-key",
        MODEL + "  priority: 1\n  priority: 2\n",
        ["models.yaml:13:3: duplicate key 'priority' in a mapping (YAML would keep only the last)"],
    ),
    (
        "unknown-kind",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n",
        [
            "models.yaml: Deployment web: kind: unsupported kind 'Deployment': only "
            "AcceleratorPool and ModelDeployment (infleet.io/v1alpha1) are accepted"
        ],
    ),
    (
        "missing-kind",
        "apiVersion: infleet.io/v1alpha1\nmetadata: {name: x}\n",
        ["models.yaml:1: document 1: kind: required field is missing"],
    ),
    (
        "unknown-api-version",
        MODEL.replace("infleet.io/v1alpha1", "infleet.io/v1beta1"),
        [
            "models.yaml: ModelDeployment chat/llama: apiVersion: unsupported apiVersion "
            "'infleet.io/v1beta1' for ModelDeployment: expected infleet.io/v1alpha1"
        ],
    ),
    (
        "not-a-mapping",
        "- just\n- a list\n",
        [
            "models.yaml:1: document 1: expected a mapping with apiVersion, kind, metadata and "
            "spec, got a list"
        ],
    ),
    (
        "missing-model",
        model_with("", drop="model: meta-llama/Llama-3.1-8B-Instruct"),
        ["models.yaml: ModelDeployment chat/llama: spec.model: required field is missing"],
    ),
    (
        "missing-name",
        MODEL.replace("  name: llama\n", ""),
        ["models.yaml:1: ModelDeployment (document 1): metadata.name: required field is missing"],
    ),
    (
        "wrong-type-integer",
        pool_with("", drop="acceleratorsPerNode: 8") + "  acceleratorsPerNode: eight\n",
        [
            "models.yaml: AcceleratorPool h100: spec.acceleratorsPerNode: must be an integer, "
            "got the string 'eight'"
        ],
    ),
    (
        "wrong-type-label-value",
        pool_with("", drop="nodeSelector: {pool: h100}") + "  nodeSelector: {gpu: true}\n",
        [
            "models.yaml: AcceleratorPool h100: spec.nodeSelector.gpu: must be a string, got "
            "true (quote it in YAML to make it a string)"
        ],
    ),
    (
        "no-slo-target",
        model_with("", drop="slo: {timePerOutputTokenMs: 50}") + "  slo: {percentile: 99}\n",
        [
            "models.yaml: ModelDeployment chat/llama: spec.slo: set at least one of "
            "timeToFirstTokenMs and timePerOutputTokenMs"
        ],
    ),
    (
        "percentile-out-of-range",
        model_with("", drop="slo: {timePerOutputTokenMs: 50}")
        + "  slo: {timePerOutputTokenMs: 50, percentile: 99.99}\n",
        [
            "models.yaml: ModelDeployment chat/llama: spec.slo.percentile: must be >= 50 and "
            "<= 99.9, got 99.99"
        ],
    ),
    (
        "replicas-min-above-max",
        model_with("  replicas: {min: 5, max: 3}\n"),
        [
            "models.yaml: ModelDeployment chat/llama: spec.replicas: min must be <= max "
            "(min 5, max 3)"
        ],
    ),
    (
        "target-utilization",
        model_with("  targetUtilization: 1.5\n"),
        [
            "models.yaml: ModelDeployment chat/llama: spec.targetUtilization: must be > 0 and "
            "<= 1, got 1.5"
        ],
    ),
    (
        "no-variants",
        MODEL.split("  variants:")[0] + "  variants: []\n",
        ["models.yaml: ModelDeployment chat/llama: spec.variants: must have at least 1 item"],
    ),
    (
        "duplicate-variant-names",
        model_with("    - acceleratorType: nvidia-h100-80gb\n      maxRequestsPerSecond: 12\n"),
        [
            "models.yaml: ModelDeployment chat/llama: spec.variants: variant names must be "
            "unique (a variant's name defaults to its acceleratorType); repeated: "
            "nvidia-h100-80gb"
        ],
    ),
    (
        "variant-without-capacity",
        model_with("    - acceleratorType: nvidia-l4\n"),
        [
            "models.yaml: ModelDeployment chat/llama: spec.variants[1]: set "
            "maxRequestsPerSecond or profile (or both): one is needed to know a replica's "
            "capacity"
        ],
    ),
    (
        "non-positive-profile-values",
        model_with(
            "    - acceleratorType: nvidia-l4\n"
            "      acceleratorsPerReplica: 0\n"
            "      profile:\n"
            "        prefillTokensPerSecond: 0\n"
            "        decodeStepMs: {base: 30, perSequence: -1}\n"
            "        maxConcurrency: 16\n"
        ),
        [
            "models.yaml: ModelDeployment chat/llama: spec.variants[1].acceleratorsPerReplica: "
            "must be > 0, got 0",
            "models.yaml: ModelDeployment chat/llama: "
            "spec.variants[1].profile.prefillTokensPerSecond: must be > 0, got 0",
            "models.yaml: ModelDeployment chat/llama: "
            "spec.variants[1].profile.decodeStepMs.perSequence: must be >= 0, got -1",
        ],
    ),
    (
        "negative-traffic",
        model_with("  traffic: {requestsPerSecond: -2}\n"),
        [
            "models.yaml: ModelDeployment chat/llama: spec.traffic.requestsPerSecond: must be "
            ">= 0, got -2"
        ],
    ),
    (
        "negative-cost",
        pool_with("", drop="costPerAcceleratorHour: 4.92") + "  costPerAcceleratorHour: -1\n",
        ["models.yaml: AcceleratorPool h100: spec.costPerAcceleratorHour: must be >= 0, got -1"],
    ),
    (
        "empty-node-selector",
        pool_with("", drop="nodeSelector: {pool: h100}") + "  nodeSelector: {}\n",
        ["models.yaml: AcceleratorPool h100: spec.nodeSelector: must have at least 1 entry"],
    ),
    (
        "bad-capacity-type",
        pool_with("  capacityType: preemptible\n"),
        [
            "models.yaml: AcceleratorPool h100: spec.capacityType: must be one of on-demand, "
            "spot, reserved; got the string 'preemptible'"
        ],
    ),
    (
        "misspelt-field",
        model_with("  targetUtilisation: 0.5\n"),
        [
            "models.yaml: ModelDeployment chat/llama: spec.targetUtilisation: unknown field "
            "(did you mean 'targetUtilization'?)"
        ],
    ),
    (
        "duplicate-objects",
        MODEL + "---\n" + MODEL,
        [
            "models.yaml: ModelDeployment chat/llama: metadata.name: duplicate ModelDeployment "
            "chat/llama: already defined in models.yaml"
        ],
    ),
    (
        "list-item-errors",
        "apiVersion: v1\nkind: List\nitems:\n  - kind: AcceleratorPool\n"
        "    apiVersion: infleet.io/v1alpha1\n    spec: {}\n",
        [
            "models.yaml: AcceleratorPool (document 1, items[0]): metadata: required field is "
            "missing",
            "models.yaml: AcceleratorPool (document 1, items[0]): spec.acceleratorType: "
            "required field is missing",
            "models.yaml: AcceleratorPool (document 1, items[0]): spec.acceleratorsPerNode: "
            "required field is missing",
            "models.yaml: AcceleratorPool (document 1, items[0]): spec.nodeSelector: required "
            "field is missing",
            "models.yaml: AcceleratorPool (document 1, items[0]): spec.costPerAcceleratorHour: "
            "required field is missing",
        ],
    ),
    (
        "several-errors-in-one-file",
        model_with("  targetUtilization: 0\n  replicas: {min: 2, max: 1}\n")
        + "---\n"
        + pool_with("  maxAccelerators: -8\n")
        + "---\nkind: Service\napiVersion: v1\nmetadata: {name: web}\n",
        [
            "models.yaml: ModelDeployment chat/llama: spec.replicas: min must be <= max "
            "(min 2, max 1)",
            "models.yaml: ModelDeployment chat/llama: spec.targetUtilization: must be > 0 and "
            "<= 1, got 0",
            "models.yaml: AcceleratorPool h100: spec.maxAccelerators: must be >= 0, got -8",
            "models.yaml: Service web: kind: unsupported kind 'Service': only AcceleratorPool "
            "and ModelDeployment (infleet.io/v1alpha1) are accepted",
        ],
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_manifest(
    text: str, expected: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("models.yaml").write_text(text)
    loaded = load_manifests(["models.yaml"])
    assert [str(e) for e in loaded.errors] == expected


def test_there_are_at_least_twenty_distinct_cases() -> None:
    assert len(CASES) >= 20
    assert len({c[1] for c in CASES}) == len(CASES)


def test_error_fields_are_structured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("models.yaml").write_text(model_with("  targetUtilization: 1.5\n"))
    (error,) = load_manifests(["models.yaml"]).errors
    assert error == ManifestError(
        file="models.yaml",
        kind="ModelDeployment",
        name="chat/llama",
        path="spec.targetUtilization",
        message="must be > 0 and <= 1, got 1.5",
        document=1,
    )


def test_valid_objects_next_to_broken_ones_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("all.yaml").write_text(POOL + "---\n" + model_with("  targetUtilization: 3\n"))
    loaded = load_manifests(["all.yaml"])
    assert [p.metadata.name for p in loaded.pools] == ["h100"]
    assert loaded.models == []
    assert len(loaded.errors) == 1


def test_directories_are_read_recursively_in_order_and_duplicates_span_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("manifests/b").mkdir(parents=True)
    Path("manifests/a.yml").write_text(POOL)
    Path("manifests/b/pool.yaml").write_text(POOL)
    Path("manifests/notes.txt").write_text("not yaml: [")
    loaded = load_manifests(["manifests", "manifests/a.yml"])
    assert [str(e) for e in loaded.errors] == [
        "manifests/b/pool.yaml: AcceleratorPool h100: metadata.name: duplicate AcceleratorPool "
        "h100: already defined in manifests/a.yml"
    ]
    assert len(loaded.pools) == 1


def test_missing_path_and_empty_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("empty").mkdir()
    loaded = load_manifests(["nothing.yaml", "empty"])
    assert [str(e) for e in loaded.errors] == [
        "nothing.yaml: no such file or directory",
        "empty: directory holds no .yaml or .yml files",
    ]


def test_paths_outside_the_working_directory_are_shown_as_given(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("kind: [\n")
    (error,) = load_manifests([path]).errors
    assert error.file == str(path)
