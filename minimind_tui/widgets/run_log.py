"""The run's log: the same lines the console prints (`minimind.event_text`), in colour."""

from __future__ import annotations

from rich.text import Text
from textual.events import Resize
from textual.widgets import RichLog

from minimind.event_text import describe
from minimind.events import Event, Sample

# Which theme colour each kind of line gets; everything else uses the normal text colour.
_COLORS = {"warning": "warning", "error": "error", "checkpoint": "success", "eval": "primary",
           "start": "accent", "finished": "success"}


class RunLog(RichLog):
    def __init__(self, **kwargs) -> None:
        # min_width: RichLog's default of 78 would scroll sideways in a narrow terminal.
        super().__init__(max_lines=1000, wrap=True, min_width=20, markup=False,
                         highlight=False, **kwargs)

    def on_resize(self, _event: Resize) -> None:
        # A new size moves the end (fewer rows to show it in): the log follows it, as it
        # follows each write, or the newest lines ([completed] among them) stay out of view.
        self.call_after_refresh(self.scroll_end, animate=False)

    def write_events(self, events: list[Event]) -> None:
        """One write for the whole batch: the log's cost is per write, not per line."""
        text = Text()
        for event in events:
            # The samples panel shows the texts; the log only says they came.
            described = (_sample_line(event) if isinstance(event, Sample)
                         else describe(event))
            if described is None:
                continue
            line, kind = described
            color = self.app.theme_variables.get(_COLORS.get(kind, ""), "")
            if text:
                text.append("\n")
            text.append(line, style=f"bold {color}" if color else "")
        if text:
            # expand: wrap at the panel width, not at the console width Rich measures with.
            self.write(text, expand=True)


def _sample_line(e: Sample) -> tuple[str, str]:
    return f"[sample] step {e.step}: {len(e.prompts)} prompts continued (s: show them)", "sample"
