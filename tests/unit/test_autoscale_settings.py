"""`infleet run`'s autoscaling settings: the fast-attack window and its flag."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from infleet.core.settings import AutoscaleSettings, duration_seconds

INFLEET = str(Path(sys.executable).with_name("infleet"))


@pytest.mark.parametrize(
    ("metrics_window", "fast_window", "expected"),
    [
        ("1m", None, "24s"),  # 40% of 60 s
        ("20s", None, "8s"),
        ("8s", None, "3200ms"),  # not whole seconds: milliseconds
        ("1h", None, "1440s"),
        ("1m", "0", None),  # off
        ("1m", "10s", "10s"),  # given: used as it is
    ],
)
def test_fast_window_defaults_to_two_fifths_of_the_metrics_window(
    metrics_window: str, fast_window: str | None, expected: str | None
) -> None:
    settings = AutoscaleSettings(metrics_window=metrics_window, fast_window=fast_window)
    assert settings.resolved_fast_window == expected


@pytest.mark.parametrize(
    ("text", "seconds"), [("500ms", 0.5), ("20s", 20.0), ("1m", 60.0), ("2h", 7200.0)]
)
def test_duration_seconds(text: str, seconds: float) -> None:
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "1m30s", "20", "20 s", "-5s", "1d"])
def test_duration_seconds_rejects_what_the_flags_do_not_take(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        duration_seconds(text)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fast-window", "8x"], "--fast-window must be a duration such as 8s, or 0, got '8x'"),
        (
            ["--metrics-window", "20s", "--fast-window", "30s"],
            "--fast-window 30s must be shorter than --metrics-window 20s",
        ),
    ],
)
def test_run_rejects_a_bad_fast_window_before_connecting(args: list[str], message: str) -> None:
    done = subprocess.run(
        [INFLEET, "run", *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
