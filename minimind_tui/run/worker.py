"""One training run in a Textual thread worker, and the only bridge to the engine.

The worker thread does nothing but call `Trainer.run()`. Events come back through a bounded
`QueueSink` the UI drains on a timer, and the UI asks for a stop by setting a
`threading.Event`; the thread never touches a widget or the app, so there is no shutdown race
and no per-step wake-up of the UI loop slowing training down.

A resumed run first hands over the history already in its folder's metrics.jsonl (read by the
same thread before the engine starts, in chunks the UI takes as it can), so the dashboard shows
the whole run, the resumed segment marked.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path

from textual.dom import DOMNode
from textual.worker import Worker

from minimind.events import Event, RunFinished, RunStarted
from minimind.follow import Follower
from minimind.settings import RunSettings
from minimind.sinks import QueueSink
from minimind_tui.run.history import StepBlock
from minimind_tui.run.metrics_reader import parse_chunk
from minimind_tui.run.source import CHUNK_BYTES, GROUP, QUEUED_CHUNKS, RunSource


class TrainingRun(RunSource):
    no_result = "the run was cancelled"

    def __init__(self, settings: RunSettings, history: Path | None = None) -> None:
        """`history`: a metrics.jsonl to show before the engine's own events (a resume)."""
        self.settings = settings
        self.path = Path(settings.train.out_dir).expanduser()
        self.history = history
        self.sink = QueueSink()
        self.stop_event = threading.Event()
        self._engine_started = False
        """The engine announced its run (RunStarted): a failure from here on is the run's."""
        self._earlier: queue.Queue[list[Event | StepBlock]] = queue.Queue(QUEUED_CHUNKS)
        self._earlier_done = threading.Event()
        """All of the earlier history is queued: the engine's events may follow it."""

    def start(self, node: DOMNode) -> Worker[RunFinished]:
        # exit_on_error=False: an engine crash becomes a failed run in the UI, not an exit.
        self.worker = node.run_worker(self._train, name="training run", group=GROUP,
                                      thread=True, exit_on_error=False)
        return self.worker

    def _train(self) -> RunFinished:
        if self.history is not None:
            self._read_history(self.history)
        self._earlier_done.set()
        # Imported here so the slow torch/transformers import happens off the UI thread.
        from minimind.engine import Trainer

        return Trainer(self.settings, [self.sink], self.stop_event).run()

    def _read_history(self, path: Path) -> None:
        follower = Follower(path, chunk=CHUNK_BYTES)
        while not self.stop_event.is_set():
            batch = follower.poll_lines()
            items = parse_chunk(batch, path)[0]
            while items and not self.stop_event.is_set():
                try:
                    self._earlier.put(items, timeout=0.2)
                    break
                except queue.Full:
                    continue
            if batch.caught_up:
                return

    def request_stop(self) -> None:
        """Graceful: the engine finishes the optimizer step, writes a checkpoint and returns."""
        self.stop_event.set()

    def close(self) -> None:
        self.request_stop()

    def drain(self) -> list[Event | StepBlock]:
        done = self._earlier_done.is_set()  # before the queue: then nothing more comes
        items: list[Event | StepBlock] = []
        while not self._earlier.empty():  # only this thread takes: get_nowait cannot fail
            items += self._earlier.get_nowait()
        if not done:
            return items
        engine = self.sink.drain()
        self._engine_started |= any(isinstance(e, RunStarted) for e in engine)
        # A refusal is not the end of the run on show (a resume's, read from its folder).
        return items + [e for e in engine if not self.refused(e)]

    def refused(self, finished: Event) -> bool:
        return (isinstance(finished, RunFinished) and finished.cause == "input"
                and not self._engine_started)
