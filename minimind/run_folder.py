"""A run is an object on disk: its folder (`out_dir`) holds config.toml, metrics.jsonl, the
checkpoints, and `run.json`, the run's status (process, host, start, state, progress).

* One trainer per folder: the trainer holds an exclusive `flock` on `.run.lock` for its whole
  life, so a second one (from any launcher: app, CLI, torchrun) is refused while the first is
  alive, and the lock vanishes with the process however it ends.
* A folder that holds a finished, stopped or crashed run is never silently reused: training
  into it needs `from_resume` (continue) or `overwrite` (replace: its files are deleted). The
  same holds for a weights file the run would save over (one copied in, upstream's own `out/`).
  `run_files` names every file a run folder holds.
* `run.json` is rewritten (atomically) by `status_sink.StatusSink` as events happen, with a
  heartbeat; a viewer on another machine can tell a live run from one whose process is gone. A
  "running" status whose process is gone is a crashed run.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from minimind.atomic import atomic_write_bytes
from minimind.folder_lock import LockHeld, inherited_lock, lock_folder, reserve
from minimind.run_files import (LAUNCH_LOG_FILE, LAUNCH_SETTINGS_FILE, LOCK_FILE, METRICS_FILE,
                                STATUS_FILE, holds_adapters, remove_run_files, resume_files,
                                resume_name, run_files, status_temp_files, weights_of_resume)
from minimind.run_status import RunStatus, caught_up, read_status, status_from_metrics

# A launcher that took a folder's lock for its child names the folder whose launch.toml and
# launch.log it wrote for the child: they belong to the new run, not to the one an overwrite
# replaces.
LAUNCHED_INTO_ENV = "MINIMIND_LAUNCHED_INTO"
# A run on another machine that has not written its status for this long is presumed dead (and
# so is one whose last write is that far in the future: a wrong clock must not lock a folder).
STALE_SECONDS = 10 * 60.0
# How much of metrics.jsonl tells a crashed run's last steps (its status is a few seconds
# behind its log), or a run without run.json (~1 KB a logged step).
METRICS_TAIL_BYTES = 256 << 10


class RunBusy(Exception):
    """The folder's run is alive in another process."""


class DeletesItsStart(PermissionError):
    """An overwrite would delete the weights file the run starts from."""


class NeedsConsent(PermissionError):
    """Training here would replace a run or weights, and nothing said it may."""

    def __init__(self, message: str, run: str, files: list[Path]):
        super().__init__(message)
        self.run = run
        """The earlier run, described (`RunFolder.describe`), or "" if there is none."""
        self.files = files
        """Files that are no run's but would be replaced (`RunFolder.in_the_way`)."""


@dataclass(frozen=True)
class _Found:
    """A folder as a new trainer finds it (`RunFolder._look`)."""

    status: RunStatus | None
    state: str
    run: str
    """The earlier run, described, or "" if there is none."""
    in_the_way: list[Path]


class RunFolder:
    """The run living in `path` (which may not exist yet)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock_fd: int | None = None
        self._claimed: tuple[int, int] | None = None  # the folder's identity (`moved_away`)
        self.replace_on_start: list[Path] = []
        """Set by `claim` when overwrite was needed: `start_fresh` then deletes these files,
        once the new run is known to be able to start (a typo in data_path must not cost it)."""

    # -- reading ---------------------------------------------------------------------------
    def status(self, metrics_bytes: int = METRICS_TAIL_BYTES) -> RunStatus | None:
        """The status, or None if there is none or it cannot be read (see `state`). A crashed
        run's is caught up with the steps its metrics logged after the status's last write.
        Without a run.json that is one (lost, garbled, a run from before it), the last
        `metrics_bytes` of its metrics.jsonl tell it: as it ended, or "running" with no process
        (`state`: crashed); its `pid` is 0."""
        status = read_status(self.path / STATUS_FILE)
        metrics = self.path / METRICS_FILE
        if not isinstance(status, RunStatus):
            return status_from_metrics(metrics, metrics_bytes)
        if status.state == "running" and not process_alive(status):
            return caught_up(status, metrics, metrics_bytes)
        return status

    def holds_a_run(self) -> bool:
        """Whether training here would replace something: a status, checkpoints, or metrics (a
        pipe or an empty file a user prepared for the metrics is no run)."""
        if not self.path.is_dir():
            return False
        metrics = self.path / METRICS_FILE
        return (os.path.lexists(self.path / STATUS_FILE) or self.resumable()
                or (metrics.is_file() and metrics.stat().st_size > 0))

    def resumable(self) -> bool:
        """Whether the run here saved a checkpoint to continue from (one killed before its
        first save did not: `--from_resume 1` would only be refused)."""
        return self.path.is_dir() and bool(resume_files(self.path))

    def in_the_way(self, weights_name: str) -> list[Path]:
        """The files a run saving `weights_name` here would replace although they are no run's
        (a weights file copied in, upstream's own `out/pretrain_512.pth`, a from_weight
        source): they need the same consent as a run."""
        candidates = (self.path / weights_name, self.path / resume_name(weights_name))
        ours = run_files(self.path)
        return [p for p in candidates if os.path.lexists(p) and p not in ours]

    def state(self, status: RunStatus | None = None) -> str:
        """running, completed, stopped, failed, crashed, unknown (a run.json that is not one),
        or "" for no run.

        A run that says "running" but whose process is gone is "crashed": on this host the
        process is checked; elsewhere a status not written for STALE_SECONDS counts as gone."""
        if status is None or not status.pid:  # none given, or one its metrics told
            if read_status(self.path / STATUS_FILE) == "unknown":
                return "unknown"
            status = status or self.status()
        if status is None:
            return "crashed" if self.holds_a_run() else ""
        if status.state != "running":
            return status.state
        return "running" if process_alive(status) else "crashed"

    def describe(self, status: RunStatus | None = None) -> str:
        """One line a refusal or a list shows: "completed at step 150, last update 2026-11-28
        10:04"."""
        status = status or self.status()
        state = self.state(status)
        if state == "unknown":
            return f"unknown: its {STATUS_FILE} is not a run status"
        if status is None:
            if not state:
                return f"starting (no {STATUS_FILE} yet)"
            # Checkpoints, or metrics none of whose lines is an event: "yet" would be wrong.
            return f"{state}: no {STATUS_FILE}, nor a readable event in its {METRICS_FILE}"
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(status.updated or status.started))
        if not status.pid:
            return f"{state} at step {status.step:,}, last update {when}, as its " \
                   f"{METRICS_FILE} tells: there is no {STATUS_FILE}"
        where = f"pid {status.pid} on {status.host}, " if state == "running" else ""
        return f"{state} at step {status.step:,}, {where}last update {when}"

    # -- the trainer's side ------------------------------------------------------------------
    def claim(self, *, resume: bool, overwrite: bool, weights_name: str = "",
              from_weight: str = "") -> str:
        """Take the folder for a new trainer: lock it, then check consent (`consent`). Returns
        a note about what was found (a crashed predecessor, a run to replace) or "". Raises
        RunBusy if a live process holds it, NeedsConsent (a PermissionError) if it holds a run
        or weights the run would replace and neither `resume` nor `overwrite` allows it. The
        lock is held until `release`; a launcher hands it to its child (`minimind.folder_lock`:
        by descriptor, or to torchrun by `hand_to`), and the child's claim takes it over."""
        fd = inherited_lock(self.path)
        self._lock_fd = self._lock() if fd is None else fd
        self._claimed = _identity(self.path)
        try:
            note = self.consent(resume=resume, overwrite=overwrite, weights_name=weights_name,
                                from_weight=from_weight)
            for leftover in status_temp_files(self.path):  # a status write a kill cut short
                leftover.unlink(missing_ok=True)
            return note
        except BaseException:
            self.release()
            raise

    def _lock(self) -> int:
        try:
            return lock_folder(self.path)
        except LockHeld as e:
            if e.reserved_for is not None:
                raise RunBusy(f"{self.path} is being started by another launch (process "
                              f"{e.reserved_for}, torchrun); watch it with: minimind-tui "
                              f"watch {self.path}") from None
            raise RunBusy(f"{self.path} is in use by a running training ({self.describe()}); "
                          f"watch it with: minimind-tui watch {self.path}") from None

    @property
    def lock_fd(self) -> int | None:
        """The descriptor holding the lock while claimed (for a launcher to hand over)."""
        return self._lock_fd

    def hand_to(self, pid: int) -> None:
        """Release the claim to process `pid`, whose children claim the folder themselves
        (torchrun): until it exits, no other launch may take the folder."""
        reserve(self._lock_fd, pid)
        self.release()

    def refusal(self, *, resume: bool, overwrite: bool, weights_name: str = "",
                from_weight: str = "") -> RunBusy | PermissionError | None:
        """Why a new trainer may not use this folder, or None: a live run is in it, or an
        earlier run, or a weights file of the name this run saves (a copied-in from_weight,
        upstream's own `out/pretrain_512.pth`), that neither `resume` nor `overwrite` allows
        replacing (NeedsConsent), or an overwrite would delete the base a lora run starts from
        (DeletesItsStart). The one rule for the engine, the CLI and the app."""
        return self._refusal(self._look(resume, weights_name), resume, overwrite, from_weight,
                             weights_name)

    def consent(self, *, resume: bool, overwrite: bool, weights_name: str = "",
                from_weight: str = "") -> str:
        """Raise `refusal` if there is one; otherwise a note on what was found, and what a
        fresh start here will delete is set aside in `replace_on_start`. See `claim`."""
        found = self._look(resume, weights_name)
        refusal = self._refusal(found, resume, overwrite, from_weight, weights_name)
        if refusal is not None:
            raise refusal
        ours = ((self.path / LAUNCH_SETTINGS_FILE, self.path / LAUNCH_LOG_FILE)
                if os.environ.get(LAUNCHED_INTO_ENV) == str(self.path.resolve()) else ())
        left = [p for p in run_files(self.path) if p not in ours]
        if not found.in_the_way and (not found.run or resume):
            if left and not resume and not found.run:
                # A launch that failed before its run began (a detached run's bad data) left
                # its launch.toml and launch.log: beside this run they would read as its own.
                self.replace_on_start = left
                return ("removing what a launch that never began left: "
                        + ", ".join(named_in(self.path, p) for p in left))
            return f"the previous process crashed: {found.run}" \
                if found.state == "crashed" else ""
        self.replace_on_start = left + found.in_the_way
        replaced = _replaced_text(self.path, found.run, found.in_the_way, from_weight)
        # Said as the folder is claimed; the files go only once the run begins (its data
        # read), so a start that fails before leaves them.
        return f"this run replaces {replaced} once it begins"

    def _look(self, resume: bool, weights_name: str) -> _Found:
        """What a new trainer would find here, read once for the rule and its note."""
        status = self.status()
        in_the_way = self.in_the_way(weights_name) if weights_name and not resume else []
        run = self.describe(status) if self.holds_a_run() else ""
        return _Found(status, self.state(status), run, in_the_way)

    def _refusal(self, found: _Found, resume: bool, overwrite: bool, from_weight: str,
                 weights_name: str) -> RunBusy | PermissionError | None:
        status = found.status
        if found.state == "running":
            where = f" on {status.host}" if status and status.host != socket.gethostname() else ""
            return RunBusy(f"{self.path} is in use by a running training{where} "
                           f"({self.describe(status)}); watch it with: minimind-tui watch "
                           f"{self.path}")
        run, in_the_way = found.run, found.in_the_way
        # (A pretraining or sft run may replace the file it starts from in place, with
        # consent: it reads it once. A lora run's base is read whenever the run is opened.)
        if overwrite and holds_adapters(weights_name) and _start_files(from_weight) & {
                p.resolve() for p in (*run_files(self.path), *in_the_way)}:
            return DeletesItsStart(
                f"{from_weight}, the base this lora run starts from (from_weight), is one of "
                "the files --overwrite would delete here, and the run's adapters need it "
                "whenever they are opened: copy it elsewhere and point from_weight there, or "
                "train into another --out_dir")
        if overwrite or not (in_the_way or run and not resume):
            return None
        what = _replaced_text(self.path, run, in_the_way, from_weight)
        # A completed run continues only with a plan that goes further than it did.
        further = " and more epochs or max_steps" if self.state() == "completed" else ""
        return NeedsConsent(
            f"{self.path} already holds {what}, which this run would replace; "
            + (f"continue the run with --from_resume 1{further}, " if run and self.resumable()
               else "")
            + "train into another --out_dir, or replace it with --overwrite 1", run, in_the_way)

    def start_fresh(self) -> None:
        """Delete what this run replaces (see `replace_on_start`)."""
        for path in self.replace_on_start:
            path.unlink(missing_ok=True)
        self.replace_on_start = []

    def run_files(self) -> list[Path]:
        """The files a run writes here (and nothing else a user may keep in the folder)."""
        return run_files(self.path)

    def remove_run_files(self) -> list[Path]:
        return remove_run_files(self.path)

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None

    def abandon(self, created: list[Path]) -> None:
        """Release a claim that came to nothing (a start refused after the folder was taken:
        a typo in data_path), leaving no trace: the lock file goes if the folder holds no run
        (removed while still held), and so do the folders `created` for the claim (deepest
        first) that are left empty."""
        if self._lock_fd is not None and not self.holds_a_run():
            (self.path / LOCK_FILE).unlink(missing_ok=True)
        self.release()
        for folder in created:  # a lora run's lora/ before out_dir
            _remove_if_empty(folder)

    def moved_away(self) -> bool:
        """Whether the folder claimed is no longer at its path (moved or deleted while its run
        trains): what the run writes by path from then on makes a new folder there."""
        return self._claimed is not None and _identity(self.path) != self._claimed

    def write_status(self, status: RunStatus) -> None:
        atomic_write_bytes(self.path / STATUS_FILE, status.model_dump_json(indent=1).encode()
                           + b"\n")


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        found = path.stat()
    except OSError:
        return None
    return found.st_dev, found.st_ino


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # not empty (or not ours to remove): kept


def _replaced_text(folder: Path, run: str, in_the_way: list[Path], from_weight: str) -> str:
    return " and ".join(([f"a run ({run})"] if run else [])
                        + [replaced_files_text(folder, in_the_way, from_weight)]
                        * bool(in_the_way))


def _resolved(path: str) -> Path | None:
    try:
        return Path(path).expanduser().resolve()
    except (RuntimeError, OSError):  # an unknown ~user, a name too long: not a file here
        return None


def _start_files(from_weight: str) -> set[Path]:
    """The files a from_weight starts from, resolved: itself, or the checkpoints of the run
    folder it names (its weights, or the resume file beside them where that is all there
    is)."""
    source = _resolved(from_weight) if from_weight else None
    if source is None or not source.is_dir():
        return {source} if source else set()
    return {p.resolve() for resume in resume_files(source)
            for p in (resume, resume.with_name(weights_of_resume(resume.name)))}


def replaced_files_text(folder: Path, paths: list[Path], from_weight: str = "") -> str:
    """"pretrain_128.pth (the from_weight this run starts from)": the files in `folder` named
    for a consent question, as `named_in` names them."""
    start = _start_files(from_weight)
    return " and ".join(named_in(folder, p) + (" (the from_weight this run starts from)"
                                               if p.resolve() in start else "")
                        for p in paths)


def named_in(folder: Path, path: Path) -> str:
    """`path` as seen from `folder`: lora/lora_x_128.pth for a lora run's adapters (their name
    alone sent the user looking in the folder itself)."""
    try:
        return str(path.relative_to(folder))
    except ValueError:
        return str(path)


def save_of(weights: Path) -> str:
    """The `save_id` of the run checkpoint `weights` is (the last save of the run in its folder,
    which wrote it; `weights` may be that folder, which stands for its own weights, or a lora
    run's file in its `lora/`), or "" for a file that is no run's, or a run's from before ids
    were kept."""
    if weights.is_dir():
        status = RunFolder(weights).status()
        return status.save_id if status else ""
    try:
        resolved = weights.resolve()
        for folder in (weights.parent, weights.parent.parent):  # (lora/ holds no run.json)
            if resolved in {p.resolve() for p in run_files(folder)} and (
                    status := RunFolder(folder).status()):
                return status.save_id
    except (OSError, RuntimeError):  # a link loop: no run's file
        pass
    return ""


def process_alive(status: RunStatus) -> bool:
    if not status.pid:  # a status its metrics.jsonl told: no process recorded
        return False
    if status.host and status.host != socket.gethostname():
        return abs(time.time() - status.updated) < STALE_SECONDS
    try:
        return abs(psutil.Process(status.pid).create_time() - status.process_started) < 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False
