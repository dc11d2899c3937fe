"""One training run in a Textual thread worker, and the only bridge to the engine.

The worker thread does nothing but call `Trainer.run()`. Events come back through a bounded
`QueueSink` the UI drains on a timer, and the UI asks for a stop by setting a
`threading.Event`; the thread never touches a widget or the app, so there is no shutdown race
and no per-step wake-up of the UI loop slowing training down.
"""

from __future__ import annotations

import threading
from enum import StrEnum

from textual.dom import DOMNode
from textual.worker import Worker, WorkerState

from minimind.events import Event, RunFinished
from minimind.settings import RunSettings
from minimind.sinks import QueueSink

GROUP = "training-run"


class RunPhase(StrEnum):
    """Where the app's run stands; the last three are `RunFinished.status` values."""

    IDLE = "idle"
    RUNNING = "running"
    STOPPING = "stopping"
    COMPLETED = "completed"
    STOPPED = "stopped"
    FAILED = "failed"

    @property
    def active(self) -> bool:
        return self in (RunPhase.RUNNING, RunPhase.STOPPING)


class TrainingRun:
    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings
        self.sink = QueueSink()
        self.stop_event = threading.Event()
        self.worker: Worker[RunFinished] | None = None

    def start(self, node: DOMNode) -> Worker[RunFinished]:
        # exit_on_error=False: an engine crash becomes a failed run in the UI, not an exit.
        self.worker = node.run_worker(self._train, name="training run", group=GROUP,
                                      thread=True, exit_on_error=False)
        return self.worker

    def _train(self) -> RunFinished:
        # Imported here so the slow torch/transformers import happens off the UI thread.
        from minimind.engine import Trainer

        return Trainer(self.settings, [self.sink], self.stop_event).run()

    def request_stop(self) -> None:
        """Graceful: the engine finishes the optimizer step, writes a checkpoint and returns."""
        self.stop_event.set()

    def drain(self) -> list[Event]:
        return self.sink.drain()

    def outcome(self) -> RunFinished:
        """How the finished worker ended; an exception that escaped the engine counts as a
        failed run, so the UI has one path for every ending."""
        assert self.worker is not None and self.worker.is_finished
        if self.worker.state == WorkerState.SUCCESS and self.worker.result is not None:
            return self.worker.result
        error = self.worker.error
        reason = f"{type(error).__name__}: {error}" if error else "the run was cancelled"
        return RunFinished(status="failed", step=0, reason=reason, cause="runtime")
