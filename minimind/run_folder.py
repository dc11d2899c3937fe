"""A run is an object on disk: its folder (`out_dir`) holds config.toml, metrics.jsonl, the
checkpoints, and `run.json`, the run's status (process, host, start, state, progress).

* One trainer per folder: the trainer holds an exclusive `flock` on `.run.lock` for its whole
  life, so a second one (from any launcher: app, CLI, torchrun) is refused while the first is
  alive, and the lock vanishes with the process however it ends.
* A folder that holds a finished, stopped or crashed run is never silently reused: training
  into it needs `from_resume` (continue) or `overwrite` (replace: its files are deleted).
* `run.json` is rewritten (atomically) by `StatusSink` as events happen, from its own thread, and
  at least every `HEARTBEAT_SECONDS`; a viewer on another machine can tell a live run from one
  whose process is gone. A "running" status whose process is gone is a crashed run.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from minimind.atomic import atomic_write_bytes
from minimind.events import (CheckpointSaved, EvalResult, Event, RunFinished, RunStarted,
                             StepMetrics)

STATUS_FILE = "run.json"
LOCK_FILE = ".run.lock"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.toml"
ERROR_FILE = "error.log"
# Where checkpoints' resume files lie: beside their weights, which a lora run keeps in lora/.
RESUME_PATTERNS = ("*_resume.pth", "lora/*_resume.pth")
HEARTBEAT_SECONDS = 30.0
# A run on another machine that has not written its status for this long is presumed dead.
STALE_SECONDS = 10 * 60.0


class RunBusy(Exception):
    """The folder's run is alive in another process."""


@dataclass
class RunStatus:
    """What `run.json` holds. `state` is what the trainer last wrote; `RunFolder.state` also
    knows whether a "running" run's process still exists."""

    state: str = "running"  # running, completed, stopped, failed
    pid: int = 0
    host: str = ""
    process_started: float = 0.0  # the process's creation time, so a reused pid is no match
    started: float = 0.0
    updated: float = 0.0
    resumed_from: int = 0
    step: int = 0
    total_steps: int = 0
    tokens_seen: int = 0
    tokens_per_sec: float = 0.0
    elapsed: float = 0.0
    loss: float | None = None
    val_loss: float | None = None
    best_val_loss: float | None = None
    checkpoint_step: int | None = None
    parameters: int = 0
    device: str = ""
    world_size: int = 1
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunStatus:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def this_process() -> dict[str, Any]:
    me = psutil.Process()
    return {"pid": me.pid, "host": socket.gethostname(), "process_started": me.create_time()}


def resume_files(folder: Path) -> list[Path]:
    """The resume checkpoints of the run in `folder`."""
    return sorted(p for pattern in RESUME_PATTERNS for p in Path(folder).glob(pattern))


class RunFolder:
    """The run living in `path` (which may not exist yet)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock_fd: int | None = None
        self.replace_on_start = False
        """Set by `claim` when overwrite was needed: `start_fresh` then deletes the old run, once
        the new one is known to be able to start (a typo in data_path must not cost it)."""

    # -- reading ---------------------------------------------------------------------------
    def status(self) -> RunStatus | None:
        try:
            return RunStatus.from_dict(json.loads((self.path / STATUS_FILE).read_text("utf-8")))
        except (OSError, ValueError, TypeError):
            return None

    def holds_a_run(self) -> bool:
        """Whether training here would replace something: a status, checkpoints, or metrics (a
        pipe or an empty file a user prepared for the metrics is no run)."""
        if not self.path.is_dir():
            return False
        metrics = self.path / METRICS_FILE
        return ((self.path / STATUS_FILE).exists() or any(resume_files(self.path))
                or (metrics.is_file() and metrics.stat().st_size > 0))

    def state(self, status: RunStatus | None = None) -> str:
        """running, completed, stopped, failed, crashed, or "" for no run.

        A run that says "running" but whose process is gone is "crashed": on this host the
        process is checked; elsewhere a status not written for STALE_SECONDS counts as gone."""
        status = status or self.status()
        if status is None:
            return "crashed" if self.holds_a_run() else ""
        if status.state != "running":
            return status.state
        return "running" if process_alive(status) else "crashed"

    def describe(self, status: RunStatus | None = None) -> str:
        """One line a refusal or a list shows: "completed at step 150 on 2026-11-28 10:04"."""
        status = status or self.status()
        state = self.state(status)
        if status is None:
            return f"{state or 'starting'} (no {STATUS_FILE} yet)"
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(status.updated or status.started))
        where = f"pid {status.pid} on {status.host}, " if state == "running" else ""
        return f"{state} at step {status.step:,} ({where}last update {when})"

    # -- the trainer's side ------------------------------------------------------------------
    def claim(self, *, resume: bool, overwrite: bool) -> str:
        """Take the folder for a new trainer: lock it, then check consent. Returns a note about
        what was found (a crashed predecessor, a run to replace) or "". Raises RunBusy if a live
        process holds it, PermissionError (with a message) if it holds a run and neither
        `resume` nor `overwrite` allows reusing it. The lock is held until `release`."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RunBusy(f"{self.path} is in use by a running training "
                          f"({self.describe()}); watch it with: minimind-tui watch "
                          f"{self.path}") from None
        self._lock_fd = fd
        try:
            return self._consent(resume, overwrite)
        except BaseException:
            self.release()
            raise

    def _consent(self, resume: bool, overwrite: bool) -> str:
        status = self.status()
        state = self.state(status)
        if state == "running":  # status says running, another host, heartbeat fresh
            raise RunBusy(f"{self.path} is in use by a running training on {status.host} "
                          f"({self.describe(status)})")
        if not self.holds_a_run() or resume:
            return f"the previous process crashed: {self.describe(status)}" \
                if state == "crashed" else ""
        if not overwrite:
            raise PermissionError(
                f"{self.path} already holds a run ({self.describe(status)}); continue it with "
                "from_resume, train into another out_dir, or replace it with overwrite")
        self.replace_on_start = True
        return f"replacing the earlier run ({self.describe(status)})"

    def start_fresh(self) -> None:
        """Delete the run this one replaces (see `replace_on_start`)."""
        if self.replace_on_start:
            self.remove_run_files()
            self.replace_on_start = False

    def run_files(self) -> list[Path]:
        """The files a run writes here (and nothing else a user may keep in the folder)."""
        names = (STATUS_FILE, METRICS_FILE, CONFIG_FILE, ERROR_FILE)
        files = [self.path / n for n in names if (self.path / n).is_file()]
        for resume in resume_files(self.path):
            files.append(resume)
            weights = resume.with_name(resume.name.removesuffix("_resume.pth") + ".pth")
            if weights.exists():
                files.append(weights)
        return files

    def remove_run_files(self) -> list[Path]:
        files = self.run_files()
        for path in files:
            path.unlink(missing_ok=True)
        return files

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None

    def write_status(self, status: RunStatus) -> None:
        atomic_write_bytes(self.path / STATUS_FILE,
                           (json.dumps(asdict(status), indent=1) + "\n").encode())


def process_alive(status: RunStatus) -> bool:
    if status.host and status.host != socket.gethostname():
        return time.time() - status.updated < STALE_SECONDS
    try:
        return abs(psutil.Process(status.pid).create_time() - status.process_started) < 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


class StatusSink:
    """Keeps `run.json` current from the events, on its own thread: the training thread only
    updates a dict. The file is rewritten when something changed (at most every
    `min_interval` seconds, at once for a start, a checkpoint or the end) and as a heartbeat."""

    def __init__(self, folder: RunFolder, min_interval: float = 2.0):
        self.folder = folder
        self.min_interval = min_interval
        self.status = RunStatus(**this_process(), started=time.time(), updated=time.time())
        self._dirty = True
        self._urgent = True
        self._closed = False
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="run.json writer")
        self._thread.start()

    def emit(self, event: Event) -> None:
        s = self.status
        urgent = False
        if isinstance(event, RunStarted):
            s.resumed_from, s.step, s.total_steps = event.start_step, event.start_step, \
                event.total_steps
            s.parameters, s.device, s.world_size = event.parameters, event.device_name, \
                event.world_size
            urgent = True
        elif isinstance(event, StepMetrics):
            s.step, s.total_steps, s.tokens_seen = event.step, event.total_steps, \
                event.tokens_seen
            s.tokens_per_sec, s.elapsed, s.loss = event.tokens_per_sec, event.elapsed, event.loss
        elif isinstance(event, EvalResult):
            s.val_loss = event.val_loss
            s.best_val_loss = min(event.val_loss, s.best_val_loss or event.val_loss)
        elif isinstance(event, CheckpointSaved):
            s.checkpoint_step, urgent = event.step, True
        elif isinstance(event, RunFinished):
            s.state, s.step, s.reason, urgent = event.status, event.step, event.reason, True
        else:
            return
        with self._wake:
            self._dirty, self._urgent = True, self._urgent or urgent
            if urgent:
                self._wake.notify()

    def close(self, timeout: float = 5.0) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout)

    def _loop(self) -> None:
        last = 0.0
        while True:
            with self._wake:
                wait = (0 if self._urgent else
                        self.min_interval - (time.monotonic() - last) if self._dirty else
                        HEARTBEAT_SECONDS - (time.monotonic() - last))
                if wait > 0 and not self._closed:
                    self._wake.wait(wait)
                closing = self._closed
                self._dirty = self._urgent = False
            self.status.updated = time.time()
            try:
                self.folder.write_status(self.status)
            except OSError:
                pass  # a full or vanished disk: the run's own error handling reports it
            last = time.monotonic()
            if closing:
                return
