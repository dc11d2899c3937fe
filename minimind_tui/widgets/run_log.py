"""The run's log: upstream-style step lines plus messages, evals, checkpoints and the end."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import RichLog

from minimind.events import (CheckpointSaved, EvalResult, Event, LogMessage, RunFinished,
                             RunStarted, StepMetrics)
from minimind.sinks import format_step_line
from minimind_tui.readouts import format_count

# Which theme colour each kind of line gets; everything else uses the normal text colour.
_COLORS = {"warning": "warning", "error": "error", "checkpoint": "success", "eval": "primary",
           "start": "accent"}


class RunLog(RichLog):
    def __init__(self, **kwargs) -> None:
        # min_width: RichLog's default of 78 would scroll sideways in a narrow terminal.
        super().__init__(max_lines=1000, wrap=True, min_width=20, markup=False,
                         highlight=False, **kwargs)

    def write_events(self, events: list[Event]) -> None:
        """One write for the whole batch: the log's cost is per write, not per line."""
        text = Text()
        for event in events:
            line = self._line(event)
            if line is None:
                continue
            line_text, kind = line
            color = self.app.theme_variables.get(_COLORS.get(kind, ""), "")
            if text:
                text.append("\n")
            text.append(line_text, style=f"bold {color}" if color else "")
        if text:
            # expand: wrap at the panel width, not at the console width Rich measures with.
            self.write(text, expand=True)

    @staticmethod
    def _line(e: Event) -> tuple[str, str] | None:
        if isinstance(e, StepMetrics):
            return format_step_line(e), "step"
        if isinstance(e, LogMessage):
            return (e.text if e.level == "info" else f"[{e.level}] {e.text}"), e.level
        if isinstance(e, EvalResult):
            return f"[eval] step {e.step}: val_loss {e.val_loss:.4f} ({e.tokens:,} tokens)", "eval"
        if isinstance(e, CheckpointSaved):
            return f"[checkpoint] step {e.step}: {e.weights_path}, {e.resume_path}", "checkpoint"
        if isinstance(e, RunStarted):
            active = (f" ({format_count(e.active_parameters)} active)"
                      if e.active_parameters != e.parameters else "")
            resume = f", resuming at step {e.start_step}" if e.start_step else ""
            return (f"Model params: {format_count(e.parameters)}{active} | {e.device_name} "
                    f"x{e.world_size} | tokens/step {e.tokens_per_step:,} | {e.total_steps} "
                    f"steps ({e.steps_per_epoch}/epoch){resume}", "start")
        if isinstance(e, RunFinished):
            parts = [f"[{e.status}] at step {e.step}", e.reason,
                     e.hint and f"hint: {e.hint}", e.details_path and f"details: {e.details_path}"]
            return " | ".join(p for p in parts if p), ("error" if e.status == "failed"
                                                       else "checkpoint")
        return None
