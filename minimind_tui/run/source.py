"""Where the dashboard's run comes from: a "run source" feeds events one way, into the app's
`RunHistory`, and the app drains it on a timer.

* `run_worker.TrainingRun`: the engine in a thread worker of this process (one device).
* `FolderSource`: a run folder's `metrics.jsonl`, followed by a thread worker. It shows a run
  started anywhere else (`minimind-tui watch`, read-only), and the runs the app launches as a
  child process (torchrun, or detached so the run outlives the terminal).

The reader thread never touches the app: it parses what the file gained and puts it on a
bounded queue (blocking while the UI is behind, so a long history costs bounded memory), and the
UI takes everything queued on its next drain, with no wake-up per event.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from textual.dom import DOMNode
from textual.worker import Worker, WorkerState

from minimind.events import Event, RunFinished, RunStarted, StepMetrics
from minimind.follow import Follower
from minimind.run_files import METRICS_FILE
from minimind.run_folder import RunFolder
from minimind_tui.run.history import StepBlock
from minimind_tui.run.launch import ChildProcess
from minimind_tui.run.metrics_reader import parse_chunk

GROUP = "training-run"
POLL_SECONDS = 0.5  # a poll of a file that did not grow is one stat(): cheap on any disk
STATE_SECONDS = 2.0  # run.json and the process table, for the status line
CHUNK_BYTES = 1 << 20  # per read: ~2,500 step lines, so a long history arrives in steps
QUEUED_CHUNKS = 32  # parsed, a chunk of steps is ~100 KiB; of other events a few MiB


class RunSource:
    """What the app asks of any source; the defaults fit a source that owns nothing."""

    worker: Worker[RunFinished | None] | None = None
    read_only = False
    """Nothing to stop: a run watched from outside."""
    detached = False
    """The run outlives the app (closing the app leaves it running)."""
    state = ""
    """The run folder's state when known (running, completed, stopped, failed, crashed, or
    gone: the folder was deleted or moved)."""
    status_step = 0
    """The step the folder's run.json reports with `state` (the log read may end earlier: a
    folder moved while its run trained takes the log with it)."""
    path: Path
    """The run folder."""

    def start(self, node: DOMNode) -> Worker[RunFinished | None]:
        raise NotImplementedError

    def drain(self) -> list[Event | StepBlock]:
        raise NotImplementedError

    def take_reset(self) -> bool:
        """Whether what was drained before must be forgotten (the file started over)."""
        return False

    def request_stop(self) -> None:
        """Ask the run to finish its step, write a checkpoint and end."""

    def close(self) -> None:
        """The app is going away (or showing another run): end the worker soon."""

    def refused(self, finished: RunFinished) -> bool:
        """Whether the run ended refused before it trained (its input, checked while it was
        prepared): nothing of it belongs in the history on show."""
        return False

    no_result = "stopped following the run"
    """The reason of a failure when the worker ended without a result."""

    def outcome(self, step: int) -> RunFinished:
        """How the finished worker ended; an exception that escaped the run counts as a failed
        run at `step` (the last step the app saw trained), so the UI has one path for every
        ending."""
        assert self.worker is not None and self.worker.is_finished
        if self.worker.state == WorkerState.SUCCESS and self.worker.result is not None:
            return self.worker.result
        error = self.worker.error
        reason = f"{type(error).__name__}: {error}" if error else self.no_result
        return RunFinished(status="failed", step=step, reason=reason, cause="runtime")


@dataclass
class _Chunk:
    items: list[Event | StepBlock]
    reset: bool
    skipped: int = 0


@dataclass
class _Seen:
    """The final event of the run the reader follows, for the outcome; events from before
    `after` (the history of a run the child resumes) do not count."""

    after: float
    finished: RunFinished | None = None
    step: int = 0
    """The last step logged."""


class FolderSource(RunSource):
    """Follows `folder`'s metrics.jsonl from its first line. Watching (`child` None) goes on
    until closed, through a run's end, a crash or a resume; a launched `child` ends the worker
    when the child has exited and the file is read to its end. `follower`: one already placed
    (past a history that is not to be shown)."""

    def __init__(self, folder: str | Path, child: ChildProcess | None = None, *,
                 follower: Follower | None = None) -> None:
        self.folder = RunFolder(folder)
        self.path = self.folder.path
        self._follower = follower or Follower(self.folder.path / METRICS_FILE, chunk=CHUNK_BYTES)
        self.child = child
        self.read_only = child is None
        self.detached = child is not None and child.detached
        self.skipped = 0
        """Lines that were not a readable event (a corrupt sync, a newer version's event)."""
        self._queue: queue.Queue[_Chunk] = queue.Queue(QUEUED_CHUNKS)
        self._closing = threading.Event()
        self._reset = False
        self._seen = _Seen(after=child.started - 1.0 if child else 0.0)

    def start(self, node: DOMNode) -> Worker[RunFinished | None]:
        self.worker = node.run_worker(self._follow, name=f"following {self.folder.path}",
                                      group=GROUP, thread=True, exit_on_error=False)
        return self.worker

    # -- the reader thread -----------------------------------------------------------------
    def _follow(self) -> RunFinished | None:
        follower = self._follower
        state_checked, child_gone, made = 0.0, False, False
        while not self._closing.is_set():
            batch = follower.poll_lines()
            if batch.reset or batch.lines or batch.oversized:
                items, skipped = parse_chunk(batch, follower.path)
                self._note(items)
                if not self._put(_Chunk(items, batch.reset, skipped)):
                    return None
            if not batch.caught_up:
                continue
            if child_gone and not batch.lines:  # read to the end after the child exited
                return self._child_outcome()
            child_gone = self.child is not None and self.child.poll() is not None
            if child_gone or time.monotonic() - state_checked >= STATE_SECONDS:
                # A folder not made yet (a run just started into it) is waited for; one
                # that was there and is not any more is gone.
                present = self.folder.path.is_dir()
                made = made or present
                status = self.folder.status() if present else None
                state = self.folder.state(status) if present else "gone" if made else ""
                # A run.json that is not a status tells nothing: the events say where it is.
                self.state = "" if state == "unknown" else state
                self.status_step = status.step if status and self.state else 0
                state_checked = time.monotonic()
            if not child_gone:
                self._closing.wait(POLL_SECONDS)
        return None

    def _note(self, items: list[Event | StepBlock]) -> None:
        for item in items:
            if isinstance(item, (StepMetrics, StepBlock)):
                self._seen.step = (item.last if isinstance(item, StepBlock) else item).step
            elif isinstance(item, RunStarted) and item.time >= self._seen.after:
                self._seen.finished = None
            elif isinstance(item, RunFinished) and item.time >= self._seen.after:
                self._seen.finished = item

    def _put(self, chunk: _Chunk) -> bool:
        """Queue a chunk, waiting while the UI is behind; False if the source was closed."""
        while not self._closing.is_set():
            try:
                self._queue.put(chunk, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _child_outcome(self) -> RunFinished:
        """The run's own final event, or (a child that died first) its exit and log tail."""
        assert self.child is not None
        if self._seen.finished is not None:
            return self._seen.finished
        code = self.child.poll()
        return RunFinished(
            status="failed", step=self._seen.step, cause="runtime",
            details_path=str(self.child.log_path),
            reason=f"{self.child.what} exited with code {code} before the run reported its "
                   f"end; the end of its output:\n{self.child.log_tail()}")

    # -- the UI side -------------------------------------------------------------------------
    def drain(self) -> list[Event | StepBlock]:
        items: list[Event | StepBlock] = []
        while True:
            try:
                chunk = self._queue.get_nowait()
            except queue.Empty:
                return items
            if chunk.reset:  # what came before belongs to a run that is gone
                items, self._reset, self.skipped = [], True, 0
            items += chunk.items
            self.skipped += chunk.skipped

    def take_reset(self) -> bool:
        reset, self._reset = self._reset, False
        return reset

    def request_stop(self) -> None:
        if self.child is not None:
            self.child.request_stop()

    def close(self) -> None:
        self._closing.set()
        if self.child is not None and not self.detached:
            self.child.request_stop()  # a torchrun job must not outlive the app that ran it
