"""The one message that says a Textual worker ended, for every screen that waits on one."""

from __future__ import annotations

from textual.worker import Worker, WorkerState

ENDED = frozenset({WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED})


def worker_ended(event: Worker.StateChanged) -> bool:
    """Whether `event` reports its worker's end. Not `event.worker.is_finished`: a worker that
    ends at once (a start refused while it prepares) has ended by the time its RUNNING message
    arrives too, and its end was handled twice (two "Cannot start" dialogs, one under the
    other; a data scan read for a moment as failed)."""
    return event.state in ENDED
