"""Where the app's run stands, as the dashboard and the bindings see it."""

from __future__ import annotations

from enum import StrEnum


class RunPhase(StrEnum):
    """Where the app's run stands; the last three are `RunFinished.status` values."""

    IDLE = "idle"
    RUNNING = "running"
    STOPPING = "stopping"
    COMPLETED = "completed"
    STOPPED = "stopped"
    FAILED = "failed"
    CRASHED = "crashed"
    """A watched run whose process is gone without a final event."""
    GONE = "gone"
    """A watched run whose folder was deleted or moved away while it was shown."""

    @property
    def active(self) -> bool:
        return self in (RunPhase.RUNNING, RunPhase.STOPPING)
