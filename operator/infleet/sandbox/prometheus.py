"""The sandbox's Prometheus: its scrape configuration and the file-based target registry.

Later components (the operator, the simulated engines) register by writing a JSON targets file
into `<state>/prometheus/targets/<job>/`; Prometheus picks such files up by itself (file_sd), so
no reload is needed for a new target. The configuration file itself is rewritten by `up` and
Prometheus is told to reload when its text changed.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

JOBS = ("infleet-operator", "infleet-engines")
"""Scrape jobs with a targets directory each."""
SCRAPE_INTERVAL = "5s"
ENGINES_JOB = "infleet-engines"
ENGINES_SCRAPE_INTERVAL = "2s"


def scrape_config(targets_dir: Path, self_address: str) -> dict[str, Any]:
    """Prometheus configuration: itself plus one file_sd job per entry of JOBS."""
    jobs: list[dict[str, Any]] = [
        {"job_name": "prometheus", "static_configs": [{"targets": [self_address]}]}
    ]
    for job in JOBS:
        entry: dict[str, Any] = {
            "job_name": job,
            "file_sd_configs": [
                {"files": [str(targets_dir / job / "*.json")], "refresh_interval": "5s"}
            ],
        }
        if job == ENGINES_JOB:
            # The simulated engines change within seconds; tests wait for a few scrapes.
            entry["scrape_interval"] = ENGINES_SCRAPE_INTERVAL
        jobs.append(entry)
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "scrape_configs": jobs,
    }


def write_if_changed(path: Path, text: str) -> bool:
    """Atomically write `text` to `path` unless it already holds it; True when written."""
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    Path(tmp).replace(path)
    return True


def config_text(targets_dir: Path, self_address: str) -> str:
    """The configuration as YAML text."""
    return yaml.safe_dump(scrape_config(targets_dir, self_address), sort_keys=False)


def register_targets(
    targets_dir: Path,
    job: str,
    name: str,
    targets: Sequence[str],
    labels: Mapping[str, str] | None = None,
) -> Path:
    """Write (or replace) the targets file `name` of `job`; returns its path.

    `targets` are host:port strings on loopback; `labels` are attached to every sample.
    """
    if job not in JOBS:
        raise ValueError(f"unknown scrape job {job!r}; expected one of {', '.join(JOBS)}")
    entry = [{"targets": list(targets), "labels": dict(labels or {})}]
    path = targets_dir / job / f"{name}.json"
    write_if_changed(path, json.dumps(entry, indent=2) + "\n")
    return path


def unregister_targets(targets_dir: Path, job: str, name: str) -> None:
    """Remove a targets file written by register_targets (no error when absent)."""
    (targets_dir / job / f"{name}.json").unlink(missing_ok=True)
