"""What `run.json` holds: a run's process, host, state and progress (`RunStatus`), the one fold
of its events into that summary (`RunStatus.apply`), and reading it back through the schema, so
a status that is not one reads as "unknown" everywhere."""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path
from typing import Any, Literal

import psutil
from pydantic import BaseModel, ConfigDict, ValidationError

from minimind.events import (CheckpointSaved, EvalResult, Event, RunFinished, RunStarted,
                             StepMetrics)
from minimind.follow import MAX_LINE_BYTES, parse_event
from minimind.safe_read import open_regular, read_regular_tail

STATUS_MAX_BYTES = 64 << 10  # run.json is ~600 bytes; more is not ours, and is not read


class RunStatus(BaseModel):
    """What `run.json` holds, and the one fold of a run's events into its summary (`apply`),
    used by the status file, the runs list and the dashboard. `state` is what the trainer last
    wrote; `RunFolder.state` also knows whether a "running" run's process still exists."""

    model_config = ConfigDict(extra="ignore")

    state: Literal["running", "completed", "stopped", "failed"] = "running"
    pid: int = 0
    host: str = ""
    process_started: float = 0.0  # the process's creation time, so a reused pid is no match
    started: float = 0.0
    updated: float = 0.0
    resumed_from: int = 0
    step: int = 0
    """The last step trained: a stop or a failure between two logged steps counts."""
    total_steps: int = 0
    steps_per_epoch: int = 0
    """0 in a run.json written before it was kept. A resume keeps it (the data and the batch
    may not change), so with the epochs and max_steps a resume is given, it tells that plan."""
    tokens_seen: int = 0
    """Tokens trained on by `step` (past the last logged step: at the run's tokens per step)."""
    tokens_per_sec: float = 0.0
    """The run's rate: its tokens over its elapsed time, evaluations, samples and saves
    included, the last ones too once it ended (what the run delivers; each log interval's
    rate, jumpy over a short interval, counts the training alone)."""
    elapsed: float = 0.0
    loss: float | None = None
    val_loss: float | None = None
    best_val_loss: float | None = None
    checkpoint_step: int | None = None
    checkpoint_evals: tuple[float | None, float | None] | None = None
    """val_loss and best_val_loss as they stood at the last checkpoint: what a resume from it
    goes back to (an evaluation after it measured weights the resume drops). None in a
    run.json written before it was kept."""
    save_id: str = ""
    """The last checkpoint's `CheckpointSaved.save_id`."""
    origin_save: str = ""
    """The `save_id` of the checkpoint the run started from (`RunStarted.origin_save`)."""
    parameters: int = 0
    tokens_per_step: int = 0
    device: str = ""
    world_size: int = 1
    reason: str = ""

    def apply(self, event: Event) -> bool:
        """Fold one event in. True when the status is worth writing at once (a start, a
        checkpoint, the end); False for a routine change or an event that changes nothing."""
        if isinstance(event, RunStarted):
            if self.step != event.start_step:  # a loss from steps the resume dropped, or none
                self.loss = None
                if self.checkpoint_evals and self.checkpoint_step == event.start_step:
                    self.val_loss, self.best_val_loss = self.checkpoint_evals
            self.state, self.reason = "running", ""
            self.resumed_from = self.step = event.start_step
            self.total_steps, self.parameters = event.total_steps, event.parameters
            self.steps_per_epoch = event.steps_per_epoch
            self.tokens_per_step = event.tokens_per_step
            self.device, self.world_size = event.device_name, event.world_size
            self._set_progress(event.tokens_seen, event.elapsed)
            # A resume starts from its checkpoint; evaluations up to it stay in the status.
            self.checkpoint_step = event.start_step or None
            if not event.start_step:  # a resume goes on from the same start
                self.origin_save = event.origin_save
            return True
        if isinstance(event, StepMetrics):
            self.step, self.total_steps, self.loss = event.step, event.total_steps, event.loss
            self._set_progress(event.tokens_seen, event.elapsed)
            return False
        if isinstance(event, EvalResult):
            self.val_loss = event.val_loss
            # A best that is not a number (a run.json a resume starts from may hold one) would
            # never compare lower: any finite loss replaces it.
            best = self.best_val_loss
            if math.isfinite(event.val_loss) and (best is None or not math.isfinite(best)
                                                  or event.val_loss < best):
                self.best_val_loss = event.val_loss
            if self.checkpoint_step is not None and event.step <= self.checkpoint_step:
                self.checkpoint_evals = (self.val_loss, self.best_val_loss)  # (saved first)
            return False
        if isinstance(event, CheckpointSaved):
            self.checkpoint_step, self.save_id = event.step, event.save_id
            self.checkpoint_evals = (self.val_loss, self.best_val_loss)
            self._reached(event)
            return True
        if isinstance(event, RunFinished):
            self.state, self.reason = event.status, event.reason
            self._reached(event)
            return True
        return False

    def _reached(self, event: CheckpointSaved | RunFinished) -> None:
        """A save or the end: the step it names, and its own count of tokens and time where it
        carries them (a metrics file from before they were kept, or a stop that saved nothing,
        lacks them)."""
        self._trained_to(event.step)
        if event.tokens_seen is not None:
            self.tokens_seen = event.tokens_seen
        if event.elapsed is not None:  # (without it, the rate stays the last log's)
            self._set_progress(self.tokens_seen, event.elapsed)

    def _set_progress(self, tokens_seen: int, elapsed: float) -> None:
        self.tokens_seen, self.elapsed = tokens_seen, elapsed
        self.tokens_per_sec = tokens_seen / elapsed if elapsed > 0 else 0.0

    def _trained_to(self, step: int) -> None:
        """Steps trained after the last logged one: the step count moves on, and the tokens
        with it at the run's tokens per step so far, so every figure describes one step (an
        estimate the event's own count, where it has one, replaces)."""
        if step <= self.step:
            return
        if self.step > 0:
            self.tokens_seen = round(self.tokens_seen * step / self.step)
        else:  # nothing logged yet: the run's tokens per step, as it announced them
            self.tokens_seen = step * self.tokens_per_step
        self.step = step


def status_from_metrics(metrics: Path, max_bytes: int) -> RunStatus | None:
    """The events in the last `max_bytes` of a metrics file folded as the trainer folds them
    (for a folder without a status file: a run from before it, a metrics.jsonl synced alone, a
    status lost), or None if it holds none. State "running" if none ended it; `updated` is the
    last event's time (a copy's file time is the copy's)."""
    events, updated = _tail_events(metrics, max_bytes)
    if not events:
        return None
    status = RunStatus(updated=events[-1].time or updated or 0.0)
    for event in events:
        status.apply(event)
    return status


def caught_up(status: RunStatus, metrics: Path, max_bytes: int) -> RunStatus:
    """`status` moved on by what its metrics file logged after its step: a crash leaves the
    status (written every few seconds) behind the log, and a report must not name an earlier
    step than the log shows."""
    since = status.step
    for event in _tail_events(metrics, max_bytes)[0]:
        if isinstance(event, (StepMetrics, EvalResult, CheckpointSaved)) and event.step > since:
            status.apply(event)
    return status


def _tail_events(metrics: Path, max_bytes: int) -> tuple[list[Event], float | None]:
    """The events in the last `max_bytes` of a metrics file, and the file's time."""
    tail = read_regular_tail(metrics, max_bytes)
    if tail is None:
        return [], None
    data, updated = tail
    lines = data.splitlines()
    if len(data) >= max_bytes:  # read from mid-file: the first line may be cut
        lines = lines[1:]
    return list(filter(None, map(parse_event, lines))), updated


def first_start(metrics: Path) -> RunStarted | None:
    """The start a run wrote at the head of its metrics.jsonl (its settings, its epoch's
    steps); None where there is none or the file is no regular file (a pipe is never read)."""
    try:
        with os.fdopen(open_regular(metrics), "rb") as f:
            event = parse_event(f.readline(MAX_LINE_BYTES + 1))
    except OSError:
        return None
    return event if isinstance(event, RunStarted) else None


def this_process() -> dict[str, Any]:
    me = psutil.Process()
    return {"pid": me.pid, "host": socket.gethostname(), "process_started": me.create_time()}


def read_status(path: Path) -> RunStatus | None | Literal["unknown"]:
    """`run.json` read through `RunStatus`: None when there is none, "unknown" when it is
    not one (not JSON, wrong types, too big or too deep, not a regular file, unreadable)."""
    try:
        with os.fdopen(open_regular(path), "rb") as f:
            data = f.read(STATUS_MAX_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return "unknown"
    if len(data) > STATUS_MAX_BYTES:
        return "unknown"
    try:  # pydantic's own JSON parser: a depth limit, no RecursionError
        return RunStatus.model_validate_json(data)
    except ValidationError:
        return "unknown"
