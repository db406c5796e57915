"""Request traces in the Azure LLM inference format (TIMESTAMP, ContextTokens, GeneratedTokens).

Rows become ``(seconds since the first request / speedup, input tokens, output tokens)``.
``scale`` changes the rate, not the time axis: every row is replayed ``floor(scale)`` times
plus once more with probability ``scale - floor(scale)`` (a seeded generator, so a replay is
reproducible); ``scale < 1`` thins the trace the same way.
"""

from __future__ import annotations

import csv
import math
import random
from datetime import datetime
from pathlib import Path

TraceRow = tuple[float, int, int]


class TraceError(ValueError):
    """The trace file cannot be read."""


def _timestamp(text: str, where: str) -> float:
    # The Azure files carry 7 fractional digits, more than datetime parses: split them off.
    whole, _, fraction = text.strip().partition(".")
    try:
        seconds = datetime.strptime(whole, "%Y-%m-%d %H:%M:%S").timestamp()
        return seconds + (float(f"0.{fraction}") if fraction else 0.0)
    except ValueError as exc:
        raise TraceError(f"{where}: bad TIMESTAMP {text!r} (want YYYY-MM-DD HH:MM:SS.f)") from exc


def _tokens(text: str, where: str, column: str) -> int:
    try:
        value = int(float(text))
    except ValueError as exc:
        raise TraceError(f"{where}: {column} is not a number: {text!r}") from exc
    if value < 0:
        raise TraceError(f"{where}: {column} must be >= 0, got {value}")
    return value


def read_trace(
    path: Path, *, speedup: float = 1.0, scale: float = 1.0, seed: int = 0
) -> list[TraceRow]:
    """The trace's rows, time-compressed by ``speedup`` and rate-scaled by ``scale``, sorted."""
    if not math.isfinite(speedup) or speedup <= 0:
        raise TraceError(f"speedup must be > 0, got {speedup!r}")
    if not math.isfinite(scale) or scale < 0:
        raise TraceError(f"scale must be >= 0, got {scale!r}")
    try:
        handle = path.open(newline="")
    except OSError as exc:
        raise TraceError(f"cannot read trace {path}: {exc.strerror or exc}") from exc
    raw: list[TraceRow] = []
    with handle:
        reader = csv.DictReader(handle)
        missing = {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} - set(reader.fieldnames or [])
        if missing:
            raise TraceError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        for number, row in enumerate(reader, start=2):
            where = f"{path}:{number}"
            raw.append(
                (
                    _timestamp(row["TIMESTAMP"], where),
                    _tokens(row["ContextTokens"], where, "ContextTokens"),
                    _tokens(row["GeneratedTokens"], where, "GeneratedTokens"),
                )
            )
    if not raw:
        return []
    raw.sort()
    origin = raw[0][0]
    rng = random.Random(seed)
    whole = math.floor(scale)
    extra = scale - whole
    rows: list[TraceRow] = []
    for at, tokens_in, tokens_out in raw:
        copies = whole + (1 if extra and rng.random() < extra else 0)
        rows.extend([((at - origin) / speedup, tokens_in, tokens_out)] * copies)
    return rows
