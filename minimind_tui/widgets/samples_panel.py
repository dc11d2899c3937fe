"""The run's live samples, one sample step at a time, pageable back through the run.

Each prompt shows twice: continued greedily and by the seeded sample. The panel follows the
newest step until the user pages back; it then stays on that step (new samples do not pull it
away) until paged forward to the newest again, or End goes straight back to following it.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Static

from minimind.event_text import one_line
from minimind_tui.run.history import RunHistory


class SamplesPanel(VerticalScroll):
    BINDINGS = [
        Binding("left", "page(-1)", "Older", show=False),
        Binding("right", "page(1)", "Newer", show=False),
        Binding("end", "follow_newest", "Newest", show=False),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._history: RunHistory | None = None
        self._run = 0
        self._index: int | None = None  # the step shown; None: the newest
        self._shown: tuple[object, ...] | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="samples-text")

    def show(self, history: RunHistory) -> None:
        """Draw the step in view; nothing when that is what is drawn (the dashboard calls this
        whenever any event came, and a redraw lays the screen out again)."""
        if history.run_id != self._run:  # a new run: back to following the newest
            self._run, self._index = history.run_id, None
        self._history = history
        samples = history.samples
        shown = (self._run, self._index, len(samples), history.started is not None)
        if shown == self._shown:
            return
        self._shown = shown
        if not samples:
            self.border_subtitle = ""
            self.query_one("#samples-text", Static).update(Text(_empty_text(history),
                                                                style="dim"))
            return
        index = len(samples) - 1 if self._index is None else self._index
        sample = samples[index]
        where = "newest" if index == len(samples) - 1 else f"{index + 1}/{len(samples)}"
        back = "" if self._index is None else " · End: newest"
        self.border_subtitle = f"step {sample.step:,} · {where} · ←/→ or [ ] page{back}"
        text = Text()
        for prompt, greedy, sampled in zip(sample.prompts, sample.greedy, sample.sampled):
            for label, continuation in (("greedy ", greedy), ("sampled", sampled)):
                if text:
                    text.append("\n")
                text.append(f"{label} ", style="dim")
                text.append(one_line(prompt), style="bold")
                text.append(one_line(continuation))
        self.query_one("#samples-text", Static).update(text)

    def action_page(self, delta: int) -> None:
        """Show an older (-1) or newer (+1) sample step; past the newest, follow it again."""
        if self._history is None or not self._history.samples:
            return
        last = len(self._history.samples) - 1
        index = (last if self._index is None else self._index) + delta
        self._index = None if index >= last else max(index, 0)
        self.show(self._history)


    def action_follow_newest(self) -> None:
        """Back to the newest sample step, following new ones as they come."""
        self._index = None
        if self._history is not None:
            self.show(self._history)


def _empty_text(history: RunHistory) -> str:
    if history.started is None:
        return "No samples yet: they appear while a run trains."
    train = history.started.settings["train"]
    if not train.get("sample_prompts"):
        return "Samples are off for this run (sample_prompts is empty)."
    every = (f"every {train['sample_interval']} steps" if train.get("sample_interval")
             else "at each evaluation")
    if history.finished is not None:  # a stop or a failure samples nothing at its end
        return (f"No samples: the run {history.finished.status} before its first (the model "
                f"continues sample_prompts {every} and at a completed run's end).")
    return f"No samples yet: the model continues sample_prompts {every} and at the end."
