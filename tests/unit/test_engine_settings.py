"""The engine's settings file, trace reader and pod discovery."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from infleet.sandbox.engine_state import discover
from infleet.sandbox.load_settings import (
    SettingsError,
    SteadyLoad,
    TraceReplay,
    read_settings,
    update_settings,
)
from infleet.sandbox.load_trace import TraceError, read_trace


def test_updates_merge_and_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "engine" / "settings.json"
    assert read_settings(path).models == {}
    update_settings(path, model=("ns", "a"), load=SteadyLoad(3.0, 100, 10))
    update_settings(path, model=("ns", "b"), load=TraceReplay("/t.csv", 10.0, 2.0, 5.0))
    update_settings(path, perf=("pool-x", 0.7))
    new = update_settings(path, startup_scale=0.01)
    assert new.models == {
        ("ns", "a"): SteadyLoad(3.0, 100, 10),
        ("ns", "b"): TraceReplay("/t.csv", 10.0, 2.0, 5.0),
    }
    assert new.perf == {"pool-x": 0.7}
    assert new.startup_scale == 0.01
    assert read_settings(path) == new
    update_settings(path, model=("ns", "a"), load=None)
    assert set(read_settings(path).models) == {("ns", "b")}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"models": {"nodash": {"requestsPerSecond": 1}}}, "NAMESPACE/NAME"),
        ({"models": {"a/b": {"requestsPerSecond": -1}}}, r"requestsPerSecond must be >= 0"),
        ({"perf": {"p": 0}}, r"perf\['p'\] must be > 0"),
        ({"startupScale": "fast"}, "startupScale must be a number"),
    ],
)
def test_bad_settings_say_where(tmp_path: Path, content: Any, message: str) -> None:
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(content))
    with pytest.raises(SettingsError, match=message):
        read_settings(path)


def test_trace_is_rebased_time_compressed_and_scaled(tmp_path: Path) -> None:
    path = tmp_path / "trace.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:50.5000000,396,109\n"
        "2023-11-16 18:15:46.5000000,374,44\n"
    )
    assert read_trace(path, speedup=2.0) == [(0.0, 374, 44), (2.0, 396, 109)]
    assert read_trace(path, scale=2.0) == [(0.0, 374, 44)] * 2 + [(4.0, 396, 109)] * 2
    assert read_trace(path, scale=0.0) == []


def test_the_shared_azure_trace_reads() -> None:
    path = Path(__file__).parents[3] / "shared" / "traces" / "azure-llm-2023-conv.csv"
    if not path.exists():
        pytest.skip("the shared trace is not present")
    rows = read_trace(path, speedup=60.0)
    assert len(rows) == 19366
    assert 55 < rows[-1][0] < 61  # an hour compressed 60x


def test_bad_trace_rows_are_located(tmp_path: Path) -> None:
    path = tmp_path / "trace.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.1,x,1\n")
    with pytest.raises(TraceError, match=r"trace.csv:2: ContextTokens"):
        read_trace(path)
    path.write_text("TIME,ContextTokens\n")
    with pytest.raises(TraceError, match="missing column"):
        read_trace(path)


def _pod(name: str, *, variant: str = "h100", ready: str = "True", **extra: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "labels": {
                "app.kubernetes.io/managed-by": "infleet",
                "infleet.io/model": "chat",
                "infleet.io/variant": variant,
                "infleet.io/pool": "pool-a",
            },
            **extra,
        },
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "Ready", "status": ready, "lastTransitionTime": "2026-01-01T00:00:10Z"}
            ],
        },
    }


MODEL = {
    "apiVersion": "infleet.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "chat", "namespace": "ns", "generation": 1},
    "spec": {
        "model": "served/model",
        "slo": {"timePerOutputTokenMs": 50},
        "variants": [{"acceleratorType": "h100", "maxRequestsPerSecond": 4, "startupSeconds": 30}],
    },
}


def test_discovery_keeps_only_ready_pods_of_known_variants() -> None:
    pods = [
        _pod("ok"),
        _pod("unready", ready="False"),
        _pod("other-variant", variant="l4"),
        _pod("going", deletionTimestamp="2026-01-01T00:01:00Z"),
    ]
    found = discover(pods, [MODEL])
    model = found[("ns", "chat")]
    assert model.served_model == "served/model"
    assert set(model.replicas) == {"ok"}
    replica = model.replicas["ok"]
    assert (replica.pool, replica.variant, replica.startup_seconds) == ("pool-a", "h100", 30.0)
    assert replica.ready_since == 1767225610.0  # 2026-01-01T00:00:10Z
    assert discover(pods, []) == {}  # no ModelDeployment: nothing to serve
