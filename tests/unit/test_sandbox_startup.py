"""Start-up delay in the sandbox: kwok's Stages hold annotated model pods not-Ready for
``startupSeconds x scale``, and the engine takes traffic only on Ready pods."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from infleet.core.children import STARTUP_ANNOTATION
from infleet.sandbox import kwok
from infleet.sandbox.engine_sim import ReplicaSpec
from infleet.sandbox.engine_state import DiscoveredReplica, ready_at
from infleet.sandbox.load_settings import EngineSettings, settings_path, update_settings

SPEC = ReplicaSpec(
    slots=4,
    prefill_tokens_per_second=1000.0,
    decode_base_ms=10.0,
    decode_per_sequence_ms=0.0,
    kv_capacity_tokens=1000.0,
)


def _stages(scale: float) -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(kwok.config_text(scale)) if d.get("kind") == "Stage"]
    return {d["metadata"]["name"]: d["spec"] for d in docs}


def _keys(stage: dict[str, Any]) -> dict[str, str]:
    return {e["key"]: e["operator"] for e in stage["selector"]["matchExpressions"]}


ANNOTATION_KEY = f'.metadata.annotations["{STARTUP_ANNOTATION}"]'


def test_annotated_pods_start_unready_and_others_go_ready_at_once() -> None:
    stages = _stages(1.0)
    assert set(stages) == {
        "infleet-node-ready",
        "infleet-pod-ready",
        "infleet-pod-start",
        "infleet-pod-started",
        "infleet-pod-delete",
    }
    # Exactly one of the two Pending stages matches a pod, by the annotation.
    assert _keys(stages["infleet-pod-ready"])[ANNOTATION_KEY] == "DoesNotExist"
    assert _keys(stages["infleet-pod-start"])[ANNOTATION_KEY] == "Exists"
    start = stages["infleet-pod-start"]["next"]["statusTemplate"]
    assert "phase: Running" in start
    assert 'status: "False"' in start
    assert "delay" not in stages["infleet-pod-start"]
    started = stages["infleet-pod-started"]
    assert _keys(started)[ANNOTATION_KEY] == "Exists"
    assert _keys(started)[".status.phase"] == "In"
    assert 'status: "True"' in started["next"]["statusTemplate"]
    assert started["delay"]["durationMilliseconds"] == 0


@pytest.mark.parametrize(
    ("scale", "seconds", "expected"),
    [(1.0, "300", "300000ms"), (0.05, "7", "350ms"), (0.0, "300", "0ms"), (0.01, "0", "0ms")],
)
def test_delay_expression_scales_the_annotation(scale: float, seconds: str, expected: str) -> None:
    expression = _stages(scale)["infleet-pod-started"]["delay"]["durationFrom"]["expressionFrom"]
    assert expression == kwok.delay_expression(scale)
    jq = shutil.which("jq")
    if jq is None:
        pytest.skip("jq not installed: the expression's value is checked with jq")
    pod = {"metadata": {"annotations": {STARTUP_ANNOTATION: seconds}}}
    done = subprocess.run(
        [jq, "-r", expression], input=json.dumps(pod), capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == expected


@pytest.mark.parametrize("scale", [-1.0, float("nan"), float("inf")])
def test_bad_scale_is_rejected(scale: float) -> None:
    with pytest.raises(ValueError, match="startup scale"):
        kwok.delay_expression(scale)


def test_config_for_reads_the_sandbox_scale(tmp_path: Path) -> None:
    assert kwok.config_for(tmp_path) == kwok.config_text(0.0)  # no settings: at once
    update_settings(settings_path(tmp_path), startup_scale=0.25)
    assert kwok.config_for(tmp_path) == kwok.config_text(0.25)
    settings_path(tmp_path).write_text("{not json")
    assert kwok.config_for(tmp_path) == kwok.config_text(0.0)


def test_default_startup_scale_is_zero() -> None:
    assert EngineSettings().startup_scale == 0.0
    assert EngineSettings.from_json({}).startup_scale == 0.0


def _replica(ready_since: float, started_at: float | None, startup: float) -> DiscoveredReplica:
    return DiscoveredReplica(SPEC, "pool", "v", ready_since, startup, started_at)


@pytest.mark.parametrize(
    ("ready_since", "started_at", "startup", "scale", "expected"),
    [
        (130.0, 100.0, 30.0, 1.0, 130.0),  # kwok held it 30 s: Ready is the moment
        (131.5, 100.0, 30.0, 1.0, 131.5),  # Ready seen a little later: still Ready
        (100.0, 100.0, 30.0, 1.0, 130.0),  # kwok made it Ready at once: the engine waits
        (100.0, 100.0, 30.0, 0.5, 115.0),
        (100.0, 100.0, 30.0, 0.0, 100.0),
        (100.0, None, 30.0, 0.1, 103.0),  # no start time: from Ready
    ],
)
def test_replica_takes_traffic_once_ready_and_started_up(
    ready_since: float, started_at: float | None, startup: float, scale: float, expected: float
) -> None:
    assert ready_at(_replica(ready_since, started_at, startup), scale) == pytest.approx(expected)
