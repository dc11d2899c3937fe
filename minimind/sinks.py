"""Where events go. The engine calls `emit` on each sink and never knows who listens.

A sink must never block training: the queue sink drops the oldest entries when its reader falls
behind (bounded memory), the console and JSONL sinks write a line and return.
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path
from typing import Protocol, TextIO

from minimind.events import (CheckpointSaved, EvalResult, Event, LogMessage, RunFinished,
                             RunStarted, StepMetrics)


class Sink(Protocol):
    def emit(self, event: Event) -> None: ...

    def close(self) -> None: ...


class QueueSink:
    """A bounded, thread-safe buffer a UI drains on a timer.

    `deque.append` and `popleft` are atomic, so no lock is needed; `maxlen` makes a stalled
    reader cost at most `maxlen` events of memory (the oldest are dropped first).
    """

    def __init__(self, maxlen: int = 20_000):
        self._events: collections.deque[Event] = collections.deque(maxlen=maxlen)

    def emit(self, event: Event) -> None:
        self._events.append(event)

    def drain(self, limit: int | None = None) -> list[Event]:
        out: list[Event] = []
        while self._events and (limit is None or len(out) < limit):
            out.append(self._events.popleft())
        return out

    def close(self) -> None:
        pass


class JsonlSink:
    """`<out_dir>/metrics.jsonl`: one event per line, flushed so another process can follow it."""

    def __init__(self, path: str | Path, append: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a" if append else "w", encoding="utf-8")

    def emit(self, event: Event) -> None:
        self._file.write(event.to_json() + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_step_line(e: StepMetrics) -> str:
    """Upstream's log line, so MiniMind users read it at a glance (epoch_time = minutes left
    in the epoch, as upstream prints it)."""
    epoch_left = (e.steps_per_epoch - e.epoch_step) * e.step_time
    return (f"Epoch:[{e.epoch}/{e.epochs}]({e.epoch_step}/{e.steps_per_epoch}), "
            f"loss: {e.loss:.4f}, logits_loss: {e.logits_loss:.4f}, aux_loss: {e.aux_loss:.4f}, "
            f"lr: {e.lr:.8f}, epoch_time: {epoch_left / 60:.1f}min, "
            f"grad_norm: {e.grad_norm:.3f}, tokens/s: {e.tokens_per_sec:,.0f}")


class ConsoleSink:
    """Upstream-style lines on a text stream (stdout by default)."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stdout

    def emit(self, event: Event) -> None:
        line = self._format(event)
        if line:
            print(line, file=self.stream, flush=True)

    def _format(self, e: Event) -> str | None:
        if isinstance(e, StepMetrics):
            return format_step_line(e)
        if isinstance(e, RunStarted):
            active = (f" ({e.active_parameters / 1e6:.2f}M active)"
                      if e.active_parameters != e.parameters else "")
            return (f"Model params: {e.parameters / 1e6:.3f}M{active} | device: {e.device_name} "
                    f"x{e.world_size} | tokens/step: {e.tokens_per_step:,} | "
                    f"steps: {e.total_steps} ({e.steps_per_epoch}/epoch)"
                    + (f" | resuming at step {e.start_step}" if e.start_step else ""))
        if isinstance(e, EvalResult):
            return f"[eval] step {e.step}: val_loss {e.val_loss:.4f}"
        if isinstance(e, CheckpointSaved):
            return f"[checkpoint] step {e.step}: {e.weights_path}"
        if isinstance(e, LogMessage):
            return e.text if e.level == "info" else f"[{e.level}] {e.text}"
        if isinstance(e, RunFinished):
            parts = [f"[{e.status}] at step {e.step}"]
            parts += [p for p in (e.reason, e.hint and f"hint: {e.hint}",
                                  e.details_path and f"details: {e.details_path}") if p]
            return " | ".join(parts)
        return None

    def close(self) -> None:
        pass
