"""The simulated engines' settings file: load per model, perf factor per pool, start-up scale.

`infleet sandbox load|perf|startup-scale` write `<state>/engine/settings.json`; the engine
process re-reads it every second, so no other channel between the two is needed. Writers
take an exclusive lock on `<state>/engine/settings.lock` around read-modify-write, so two
commands run at once do not lose each other's change.

Format (camelCase, like the API)::

    {"models": {"NS/NAME": {"requestsPerSecond": 3.0, "inputTokens": 512, "outputTokens": 128}
                "NS/OTHER": {"trace": "/abs/trace.csv", "speedup": 10.0, "scale": 1.0,
                             "startedAt": 1700000000.0}},
     "perf": {"POOL": 0.7},
     "startupScale": 1.0}

``startedAt`` is a Unix time: a replay keeps its place across engine restarts.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infleet.sandbox.prometheus import write_if_changed


class SettingsError(ValueError):
    """The settings file or a value for it is invalid."""


def _positive(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SettingsError(f"{where} must be a number, got {value!r}")
    if value <= 0:
        raise SettingsError(f"{where} must be > 0, got {value!r}")
    return float(value)


def _non_negative(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SettingsError(f"{where} must be a number, got {value!r}")
    if value < 0:
        raise SettingsError(f"{where} must be >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class SteadyLoad:
    """Poisson arrivals at a fixed rate with a fixed request shape."""

    requests_per_second: float
    input_tokens: int = 512
    output_tokens: int = 128

    def to_json(self) -> dict[str, Any]:
        return {
            "requestsPerSecond": self.requests_per_second,
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
        }


@dataclass(frozen=True)
class TraceReplay:
    """A trace file replayed from ``started_at`` (Unix time)."""

    trace: str
    """Absolute path of the trace (CSV: TIMESTAMP, ContextTokens, GeneratedTokens)."""
    speedup: float = 1.0
    """Time compression: 10 replays an hour in 6 minutes."""
    scale: float = 1.0
    """Rate multiplier: each request is replayed ``scale`` times on average."""
    started_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "trace": self.trace,
            "speedup": self.speedup,
            "scale": self.scale,
            "startedAt": self.started_at,
        }


ModelLoadSetting = SteadyLoad | TraceReplay


def parse_model_key(text: str) -> tuple[str, str]:
    """``NS/NAME`` -> ``(NS, NAME)``, with a clear error otherwise."""
    namespace, _, name = text.partition("/")
    if not namespace or not name or "/" in name:
        raise SettingsError(f"expected NAMESPACE/NAME, got {text!r}")
    return namespace, name


@dataclass(frozen=True)
class EngineSettings:
    """Everything the engine reads from the settings file."""

    models: dict[tuple[str, str], ModelLoadSetting] = field(default_factory=dict)
    perf: dict[str, float] = field(default_factory=dict)
    """Hidden performance factor per pool name (default 1)."""
    startup_scale: float = 0.0
    """Multiplier on ``startupSeconds`` before a new replica is Ready and takes traffic (0, the
    default: at once, as kwok makes pods Ready; 1: the variant's real start-up time)."""

    @classmethod
    def from_json(cls, data: Any, where: str = "settings") -> EngineSettings:
        """Parse and validate the file's content."""
        if not isinstance(data, dict):
            raise SettingsError(f"{where}: expected an object, got {type(data).__name__}")
        models: dict[tuple[str, str], ModelLoadSetting] = {}
        for key, entry in (data.get("models") or {}).items():
            at = f"{where}: models[{key!r}]"
            if not isinstance(entry, dict):
                raise SettingsError(f"{at}: expected an object")
            if "trace" in entry:
                models[parse_model_key(key)] = TraceReplay(
                    trace=str(entry["trace"]),
                    speedup=_positive(f"{at}.speedup", entry.get("speedup", 1.0)),
                    scale=_non_negative(f"{at}.scale", entry.get("scale", 1.0)),
                    started_at=_non_negative(f"{at}.startedAt", entry.get("startedAt", 0.0)),
                )
            else:
                models[parse_model_key(key)] = SteadyLoad(
                    requests_per_second=_non_negative(
                        f"{at}.requestsPerSecond", entry.get("requestsPerSecond", 0.0)
                    ),
                    input_tokens=int(_positive(f"{at}.inputTokens", entry.get("inputTokens", 512))),
                    output_tokens=int(
                        _positive(f"{at}.outputTokens", entry.get("outputTokens", 128))
                    ),
                )
        perf = {
            str(pool): _positive(f"{where}: perf[{pool!r}]", factor)
            for pool, factor in (data.get("perf") or {}).items()
        }
        scale = _non_negative(f"{where}: startupScale", data.get("startupScale", 0.0))
        return cls(models=models, perf=perf, startup_scale=scale)

    def to_json(self) -> dict[str, Any]:
        """The file's content."""
        return {
            "models": {f"{ns}/{name}": load.to_json() for (ns, name), load in self.models.items()},
            "perf": dict(self.perf),
            "startupScale": self.startup_scale,
        }


def settings_path(state_dir: Path) -> Path:
    """Where the settings live in a sandbox's state directory."""
    return state_dir / "engine" / "settings.json"


def read_settings(path: Path) -> EngineSettings:
    """The settings in ``path`` (defaults when the file does not exist)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return EngineSettings()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{path}: not valid JSON: {exc}") from exc
    return EngineSettings.from_json(data, str(path))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / "settings.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def update_settings(
    path: Path,
    *,
    model: tuple[str, str] | None = None,
    load: ModelLoadSetting | None = None,
    perf: tuple[str, float] | None = None,
    startup_scale: float | None = None,
) -> EngineSettings:
    """Change one model's load (``load=None`` with a model removes it), a pool's perf factor
    or the start-up scale; returns the new settings."""
    with _locked(path):
        current = read_settings(path)
        models = dict(current.models)
        if model is not None:
            if load is None:
                models.pop(model, None)
            else:
                models[model] = load
        factors = dict(current.perf)
        if perf is not None:
            factors[perf[0]] = _positive(f"perf factor of pool {perf[0]!r}", perf[1])
        scale = current.startup_scale
        if startup_scale is not None:
            scale = _non_negative("startup scale", startup_scale)
        new = EngineSettings(models=models, perf=factors, startup_scale=scale)
        write_if_changed(path, json.dumps(new.to_json(), indent=2, sort_keys=True) + "\n")
        return new
