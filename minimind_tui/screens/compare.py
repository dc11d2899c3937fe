"""Several runs' curves overlaid: loss (smoothed), validation loss and learning rate, against
steps or tokens, each run in its own colour with a legend."""

from __future__ import annotations

from functools import partial

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual.worker import Worker, WorkerState

from minimind.run_files import METRICS_FILE
from minimind_tui.run.history import RunHistory
from minimind_tui.run.metrics_reader import read_history
from minimind.runs import RunSummary
from minimind_tui.widgets.metric_plot import MetricPlot, PlotSeries
from minimind_tui.worker_end import worker_ended
from minimind_tui.screens.styled_once import StyledOnce

# Theme variables, so the colours follow the theme; as far apart as the themes make them.
RUN_COLORS = ("primary", "warning", "success", "error", "accent", "secondary", "foreground",
              "primary-lighten-3")


class ComparisonScreen(StyledOnce, Screen[None]):
    BINDINGS = [
        Binding("ctrl+t,t", "toggle_x_axis", "Steps/tokens", id="compare_x_axis",
                tooltip="Plot against optimizer steps or tokens seen"),
        Binding("escape", "app.pop_screen", "Back", id="compare_back"),
    ]

    def __init__(self, runs: list[RunSummary]) -> None:
        super().__init__(id="compare")
        self.runs = runs
        self.histories: list[RunHistory] | None = None
        self.x_axis = "step"

    def compose(self) -> ComposeResult:
        yield Static(id="compare-key")
        yield MetricPlot(id="compare-loss")
        with Horizontal(id="compare-lower"):
            yield MetricPlot(id="compare-val")
            yield MetricPlot(id="compare-lr")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#compare-loss").border_title = "Loss (smoothed)"
        self.query_one("#compare-val").border_title = "Validation loss"
        self.query_one("#compare-lr").border_title = "Learning rate"
        self.query_one("#compare-key", Static).update(self._key())
        # A long run's history takes a moment to read: off the UI thread.
        self.run_worker(partial(self._load, [run.path / METRICS_FILE for run in self.runs]),
                        thread=True, group="compare-load", exit_on_error=False)

    @staticmethod
    def _load(paths: list) -> list[RunHistory]:
        return [read_history(path) for path in paths]

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "compare-load" or not worker_ended(event):
            return
        if event.state == WorkerState.SUCCESS:
            self.histories = event.worker.result
            self.draw()
        elif event.state == WorkerState.ERROR:
            self.notify(str(event.worker.error), title="Cannot read the runs",
                        severity="error", markup=False)

    def _key(self) -> Text:
        """The legend once, above the charts: each run's name in its colour; and a word when
        the runs' tokens and losses are not of one kind."""
        colors = self.app.theme_variables
        key = Text(" ")
        for i, run in enumerate(self.runs):
            key.append("━━ ", style=colors[RUN_COLORS[i]])
            key.append(f"{run.name}  ")
        stages = sorted({run.stage for run in self.runs})
        if len(stages) > 1:
            key.append(f"\n stages differ ({', '.join(stages)}): pretraining counts and scores "
                       "every token, sft and lora only the replies", style=colors["warning"])
        return key

    def action_toggle_x_axis(self) -> None:
        self.x_axis = "tokens" if self.x_axis == "step" else "step"
        self.draw()

    def draw(self) -> None:
        if self.histories is None:
            return
        tokens = self.x_axis == "tokens"
        loss, val, lr = [], [], []
        for i, (run, h) in enumerate(zip(self.runs, self.histories, strict=True)):
            xs = h.tokens if tokens else h.steps
            color = RUN_COLORS[i]
            loss.append(PlotSeries(run.name, xs, h.loss_ema, color))
            val.append(PlotSeries(run.name, h.val_tokens if tokens else h.val_steps, h.val_loss,
                                  color))
            lr.append(PlotSeries(run.name, xs, h.lr, color))
        xlabel = "tokens seen" if tokens else "step"
        for plot_id, series in (("#compare-loss", loss), ("#compare-val", val),
                                ("#compare-lr", lr)):
            self.query_one(plot_id, MetricPlot).draw(series, xlabel, legend=False)
