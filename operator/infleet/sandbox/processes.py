"""Detached child processes recorded by PID, so a later command can find and stop them.

A record keeps the PID and the process's start time (from /proc), so a PID reused by an unrelated
process after a reboot or a crash is never mistaken for ours.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ZOMBIE_STATES = {"Z", "X"}

_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
"""Processes this interpreter started, kept referenced so that they are not reported as leaked
while they run detached, and reaped through their Popen once stopped."""


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    return text[text.rindex(")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None when it does not exist."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ZOMBIE_STATES:
        return None
    return int(fields[19])


def rss_bytes(pid: int) -> int | None:
    """Resident memory of a running process, or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@dataclass(frozen=True)
class ProcessRecord:
    """A started process as written to `<pids>/<name>.json`."""

    name: str
    pid: int
    ticks: int
    argv: tuple[str, ...]

    def alive(self) -> bool:
        """True while the very process we started runs (not a later one with the same PID)."""
        return start_ticks(self.pid) == self.ticks


class ProcessTable:
    """The processes of one sandbox, recorded in a directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    def get(self, name: str) -> ProcessRecord | None:
        """The record of `name`, or None when there is none or it is unreadable."""
        try:
            data = json.loads(self._path(name).read_text())
            return ProcessRecord(name, int(data["pid"]), int(data["ticks"]), tuple(data["argv"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def running(self, name: str) -> ProcessRecord | None:
        """The record of `name` when that process still runs."""
        record = self.get(name)
        return record if record is not None and record.alive() else None

    def names(self) -> list[str]:
        """Names with a record."""
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.json"))

    def start(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        cwd: Path,
        env: Mapping[str, str] | None = None,
    ) -> ProcessRecord:
        """Start `argv` in its own session (it outlives this process), logging to `log_path`."""
        self.directory.mkdir(parents=True, exist_ok=True)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            log.write(
                f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%S')} start: {' '.join(argv)}\n".encode()
            )
            log.flush()
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                start_new_session=True,
            )
        _CHILDREN[process.pid] = process
        ticks = start_ticks(process.pid)
        if ticks is None:
            process.wait()
            _CHILDREN.pop(process.pid, None)
            raise RuntimeError(
                f"{name} exited at once with code {process.returncode}; see {log_path}"
            )
        record = ProcessRecord(name, process.pid, ticks, tuple(argv))
        self._path(name).write_text(
            json.dumps({"pid": record.pid, "ticks": record.ticks, "argv": list(record.argv)})
        )
        return record

    def stop(self, name: str, timeout: float = 15.0) -> bool:
        """Stop `name` (SIGTERM to its process group, SIGKILL after `timeout`) and drop its
        record. True when a running process was stopped."""
        record = self.get(name)
        stopped = False
        if record is not None and record.alive():
            stopped = True
            _signal_group(record.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while record.alive() and time.monotonic() < deadline:
                _reap(record.pid)
                time.sleep(0.1)
            if record.alive():
                _signal_group(record.pid, signal.SIGKILL)
                while record.alive():
                    _reap(record.pid)
                    time.sleep(0.05)
            _reap(record.pid, wait=True)
        self._path(name).unlink(missing_ok=True)
        return stopped


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # Started with start_new_session, so the process leads a group of its own.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _reap(pid: int, wait: bool = False) -> None:
    # When this very process started the child (e.g. the pytest fixture), collect its exit
    # status so it does not linger as a zombie. A multi-threaded process shows as a zombie
    # before its last thread is gone, and can be reaped only then: `wait` waits for that.
    child = _CHILDREN.get(pid)
    if child is not None:
        try:
            returncode = child.wait(timeout=10) if wait else child.poll()
        except subprocess.TimeoutExpired:
            returncode = None
        if returncode is not None:
            del _CHILDREN[pid]
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
