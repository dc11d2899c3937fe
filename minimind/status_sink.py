"""`run.json` kept current while a run trains: a viewer (the app, `watch`, `runs`, another
machine) tells a live run from one whose process is gone by it."""

from __future__ import annotations

import time
from collections.abc import Callable

from minimind.events import Event
from minimind.run_files import STATUS_FILE
from minimind.run_folder import RunFolder
from minimind.run_status import RunStatus, this_process
from minimind.sinks import BackgroundSink

# A run's status is rewritten at least this often, so a status that stops changing for far
# longer (run_folder.STALE_SECONDS) tells of a process gone on another machine.
HEARTBEAT_SECONDS = 30.0
# How much of metrics.jsonl a resume folds when run.json is gone: a long run's whole history,
# with a bound on memory (~1 KB a logged step).
HISTORY_FOLD_BYTES = 64 << 20


class StatusSink(BackgroundSink):
    """Keeps `run.json` current from the events, on its own thread: the training thread only
    folds the event in (`RunStatus.apply`). The file is rewritten when something changed (at
    most every `min_interval` seconds, at once for a start, a checkpoint or the end) and as a
    heartbeat. Only the first change after a write wakes the thread: no wake-up per step."""

    def __init__(self, folder: RunFolder, min_interval: float = 2.0, *, resumed: bool = False,
                 warn: Callable[[str], None] | None = None):
        """`resumed`: the run goes on from the one whose status is in the folder (or, without
        one, whose metrics.jsonl is), which keeps what only its events knew (the best
        validation loss, the last loss at the resume).
        `warn` hears once that run.json cannot be written."""
        self.folder = folder
        self.min_interval = min_interval
        earlier = folder.status(HISTORY_FOLD_BYTES) if resumed else None
        self.status = (earlier or RunStatus()).model_copy(update={
            **this_process(), "started": time.time(), "updated": time.time()})
        self._dirty = False
        super().__init__("run.json writer", maxlen=1_000, close_timeout=5.0, warn=warn)
        self.start_thread()

    def item(self, event: Event) -> str | None:
        if self.status.apply(event):
            return "now"
        if not self._dirty:
            self._dirty = True
            return "soon"
        return None

    def work(self) -> None:
        last, due = 0.0, True  # the first write (the run has begun) at once
        warned = moved = False
        while True:
            if not due:
                interval = self.min_interval if self._dirty else HEARTBEAT_SECONDS
                wait = interval - (time.monotonic() - last)
                if wait > 0 and not self.closed:
                    when, _ = self.next_item(wait)
                    if when is not None:
                        self.done()
                        due = when == "now"
                    continue
            closing = self.closed
            self.drop_queued()  # this write covers every change so far
            self._dirty = due = False
            self.status.updated = time.time()
            if not moved and self.folder.moved_away():
                moved = True
                self._warn(f"{self.folder.path} was moved or deleted while the run trained: "
                           "run.json and the checkpoints from here on go to a new folder at "
                           "that path; metrics.jsonl goes on in the folder moved (or is lost "
                           "with it, deleted)")
            try:
                self.folder.write_status(self.status)
            except OSError as e:  # the run goes on; its checkpoints report a full disk
                if not warned:
                    warned = True
                    self._warn(f"{self.folder.path / STATUS_FILE} could not be written "
                               f"({e.strerror or e}): runs and watch show this run as it "
                               "stood before")
            last = time.monotonic()
            if closing:
                return
