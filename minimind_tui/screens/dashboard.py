"""The run dashboard: loss and learning-rate charts, run stats, the log and the samples."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.reactive import var
from textual.screen import Screen
from textual.widgets import Button, Footer, Static

from minimind.run_files import METRICS_FILE, STATUS_FILE
from minimind_tui.run.history import RunHistory
from minimind_tui.run.phase import RunPhase
from minimind_tui.screens.size_classes import size_classes
from minimind_tui.screens.styled_once import StyledOnce
from minimind_tui.widgets.metric_plot import MetricPlot, PlotSeries, legend_markup
from minimind_tui.widgets.run_log import RunLog
from minimind_tui.widgets.samples_panel import SamplesPanel
from minimind_tui.widgets.stats_panel import StatsPanel

if TYPE_CHECKING:
    from minimind_tui.app import MiniMindApp

# Every redraw holds the GIL, and on a small CPU machine a core, that the training thread
# wants: measured on two cores, each millisecond of UI work per second costs the run about
# 0.3% of its speed. So the app drains events at 4 Hz but the dashboard redraws less often:
# the charts, the log and the Run panel's numbers together (~30 ms of work, and the log's new
# lines lay the screen out again), so all three show the same step, every three seconds, or
# every ten while the run trains on the CPU, whose cores the UI would take from it
# (scripts/ui_overhead.py measures the difference). In between, once a second, only the
# elapsed time and the ETA move on.
STATS_SECONDS = 1.0
CHARTS_SECONDS = 3.0
CHARTS_SECONDS_CPU_RUN = 10.0
# Below this many rows the lower charts (lr, MoE aux loss) would be too flat to read: they
# are hidden, the loss chart's border says how to get them back and the stats show the lr.
TALL_ROWS = 32
LOG_BATCH = 100  # at most this many new lines per log update


class DashboardScreen(StyledOnce, Screen[None]):
    """Pulls from the app's `RunHistory` while visible, so a hidden dashboard costs nothing
    and one opened mid-run (or after it) shows everything logged so far."""

    app: MiniMindApp

    BINDINGS = [
        Binding("ctrl+t", "toggle_x_axis", "Steps/tokens", id="x_axis",
                tooltip="Plot against optimizer steps or tokens seen"),
        Binding("f2", "app.toggle_view", "Form", id="to_form", key_display="F2",
                tooltip="Show the settings form (the run goes on)"),
        # The form's other keys (ctrl+l, ctrl+s) work here too; resume is the one a stop
        # calls for, so the footer names it.
        Binding("ctrl+o", "app.on_form('resume')", "Resume", id="dashboard_resume",
                tooltip="Load a run folder's settings on the form and continue it"),
        # The footer has no room left at 80 columns: the log's border names the samples key,
        # the samples panel's the paging keys, the Try it button its key.
        Binding("s,S", "toggle_samples", "Samples", id="samples", show=False,
                tooltip="Show the live samples in place of the log, or the log again"),
        Binding("left_square_bracket", "page_samples(-1)", "Older sample", show=False),
        Binding("right_square_bracket", "page_samples(1)", "Newer sample", show=False),
        Binding("f7", "try_it", "Try it", id="try_it", key_display="F7", show=False,
                tooltip="Open the playground on the run's latest checkpoint"),
    ]

    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (TALL_ROWS, "-tall")]
    AUTO_FOCUS = "#run-log"  # not the Stop button: a stray Enter must not stop the run

    x_axis: var[str] = var("step")

    def __init__(self, history: RunHistory) -> None:
        super().__init__(id="dashboard")
        self.history = history
        self._charts_drawn: tuple[object, ...] | None = None
        self._charts_time = 0.0
        self._log_run, self._log_seq = 0, 0
        self.watching: Path | None = None
        """The folder of a run followed read-only (no Stop), or None."""

    def compose(self) -> ComposeResult:
        self.update_classes(size_classes(self, self.app.size), update=False)
        with Horizontal(id="dashboard-top"):
            with Vertical(id="charts"):
                yield MetricPlot(id="loss-plot")
                with Horizontal(id="lower-charts"):
                    yield MetricPlot(id="lr-plot")
                    yield MetricPlot(id="aux-plot")
            with Vertical(id="stats-column"):
                yield StatsPanel(id="stats")
                with Horizontal(id="run-buttons"):
                    yield Button("Stop F6", id="stop-button", variant="error",
                                 action="app.stop", compact=True)
                    yield Button("Try it F7", id="try-button", variant="primary",
                                 action="screen.try_it", compact=True)
                yield Static(id="watch-note", markup=False)
        yield RunLog(id="run-log")
        yield SamplesPanel(id="samples")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#loss-plot").border_title = "Loss"
        self.query_one("#aux-plot").border_title = "MoE aux loss"
        self.query_one("#lr-plot").border_title = "Learning rate"
        self.query_one("#stats").border_title = "Run"
        self.query_one("#run-log").border_title = "Log"
        self.query_one("#samples").border_title = "Samples"
        self.watch(self.app, "run_phase", self._run_phase_changed)
        self.set_interval(STATS_SECONDS, self.sync)
        self._show_watching()

    def show_watching(self, folder: Path | None) -> None:
        """Read-only for a watched run: the Stop button gives way to a note naming the folder."""
        self.watching = folder
        if self.is_mounted:  # else on_mount shows it
            self._show_watching()

    def _show_watching(self) -> None:
        folder = self.watching
        self.set_class(folder is not None, "-read-only")
        self.query_one(StatsPanel).read_only = folder is not None
        self.query_one("#watch-note", Static).update(
            f"watching {folder} (read-only)" if folder else "")
        self.query_one("#stats").border_title = "Run (watching)" if folder else "Run"
        self.sync(charts_now=True)  # the status and the panel say what a watch waits for

    def on_screen_resume(self) -> None:
        self._hint_hidden_charts(self.size.height)
        self.sync(charts_now=True)

    def on_resize(self, event: events.Resize) -> None:
        self._charts_drawn = None  # the downsampling budget depends on the width
        self._hint_hidden_charts(event.size.height)

    def _hint_hidden_charts(self, height: int) -> None:
        charts = "LR + aux charts need" if self.history.is_moe else "LR chart needs"
        self.query_one("#loss-plot").border_subtitle = (
            f"{charts} ≥ {TALL_ROWS} rows" if height < TALL_ROWS else "")

    def _run_phase_changed(self, phase: RunPhase) -> None:
        self.query_one("#stop-button", Button).disabled = phase != RunPhase.RUNNING
        self.sync(charts_now=True)

    def watch_x_axis(self) -> None:
        self.sync(charts_now=True)

    def action_toggle_x_axis(self) -> None:
        self.x_axis = "tokens" if self.x_axis == "step" else "step"

    def action_toggle_samples(self) -> None:
        showing = not self.has_class("-samples")
        self.set_class(showing, "-samples")
        self.query_one(SamplesPanel if showing else RunLog).focus()

    def action_page_samples(self, delta: int) -> None:
        if not self.has_class("-samples"):
            self.action_toggle_samples()
        self.query_one(SamplesPanel).action_page(delta)

    def action_try_it(self) -> None:
        checkpoint = self.history.checkpoint
        if checkpoint is None:
            why = ("No run on show yet: F5 starts the form's run, F4 lists the runs to watch."
                   if self.history.started is None else
                   "The run has not saved a checkpoint yet (every save_interval steps, and at "
                   "the end).")
            self.notify(why, title="Nothing to try yet", severity="warning")
            return
        started = self.history.started
        stage = started.settings.get("train", {}).get("stage") if started else "pretrain"
        self.app.open_playground(checkpoint.weights_path, chat=stage not in (None, "pretrain"))

    def sync(self, charts_now: bool = False) -> None:
        """Redraw what changed; nothing while another screen is shown. Charts, log and
        numbers follow at most once per `CHARTS_SECONDS` (`CHARTS_SECONDS_CPU_RUN` for a run
        on the CPU) unless `charts_now` (a new run, phase or axis); the clock in between."""
        if not self.is_current:
            return
        h = self.history
        # The theme is in the key because the charts take their colours from it.
        charts = (h.run_id, h.version, self.app.run_phase, self.x_axis, self.app.theme,
                  self.watching)
        on_cpu = h.started is not None and h.started.device == "cpu"
        every = CHARTS_SECONDS_CPU_RUN if on_cpu else CHARTS_SECONDS
        due = time.monotonic() - self._charts_time >= every
        if charts != self._charts_drawn and (due or charts_now):
            self._charts_drawn, self._charts_time = charts, time.monotonic()
            self._show_numbers()
            self._draw_charts()
            self._append_log()
        else:
            self.query_one(StatsPanel).tick()

    def _show_numbers(self) -> None:
        h, phase = self.history, self.app.run_phase
        running = phase == RunPhase.RUNNING
        # Only a run that is trained or followed now moves on with the clock (not a replay).
        self.query_one(StatsPanel).show(h, self._status(), running=running,
                                        ticking=running and self.app.training is not None)
        self.query_one(SamplesPanel).show(h)
        self.query_one("#try-button", Button).disabled = h.checkpoint is None
        self.query_one(RunLog).border_subtitle = "s: samples" if h.samples else ""

    def _draw_charts(self) -> None:
        h = self.history
        tokens = self.x_axis == "tokens"
        xs = h.tokens if tokens else h.steps
        xlabel = "tokens seen" if tokens else "step"
        loss = [PlotSeries("loss", xs, h.loss, "foreground-darken-3"),
                PlotSeries("ema", xs, h.loss_ema, "primary-lighten-1")]
        # An aux loss is ~100x smaller than the loss: on the same axes it would be a flat line.
        self.set_class(h.is_moe, "-moe")
        self._hint_hidden_charts(self.size.height)
        if h.is_moe:
            loss.append(PlotSeries("logits", xs, h.logits_loss, "secondary-lighten-2"))
            self.query_one("#aux-plot", MetricPlot).draw(
                [PlotSeries("aux", xs, h.aux_loss, "warning")], xlabel)
        loss.append(PlotSeries("val", h.val_tokens if tokens else h.val_steps, h.val_loss,
                               "success", kind="scatter"))
        # A resumed segment begins at a vertical line; the title says where, after the legend
        # (a border cuts a long title at its end: at 80 columns the legend was lost).
        marks = [h.tokens_at(step) if tokens else step for step in h.resumed_at]
        resumed = ", ".join(f"{step:,}" for step in h.resumed_at[-3:])
        loss_plot = self.query_one("#loss-plot", MetricPlot)
        loss_plot.border_title = (f"Loss  {legend_markup(loss, self.app.theme_variables)}"
                                  + (f" · resumed at {resumed} (│)" if resumed else ""))
        loss_plot.draw(loss, xlabel, marks, legend=False)
        self.query_one("#lr-plot", MetricPlot).draw([PlotSeries("lr", xs, h.lr, "accent")],
                                                     xlabel, marks)

    def _status(self) -> str:
        h, phase = self.history, self.app.run_phase
        if phase == RunPhase.IDLE:
            return "Waiting for the run to write…" if self.watching else "No run yet"
        if phase == RunPhase.CRASHED:
            step = h.latest.step if h.latest else 0
            return f"Crashed at step {step:,} (process gone)"
        if phase == RunPhase.GONE:
            step = h.latest.step if h.latest else 0
            return f"Folder gone (deleted or moved): shown as read, up to step {step:,}"
        if phase == RunPhase.RUNNING:
            return f"Running on {h.started.device}" if h.started else "Preparing data and model…"
        if phase == RunPhase.STOPPING:
            return "Stopping: writing a checkpoint…"
        step = h.finished.step if h.finished else (h.latest.step if h.latest else 0)
        told = self.app.training.status_step if self.app.training is not None else 0
        if not h.finished and told > step:  # its end never reached the log read here
            return (f"{phase.capitalize()} at step {told:,} (says {STATUS_FILE}; the "
                    f"{METRICS_FILE} here ends at step {step:,})")
        return f"{phase.capitalize()} at step {step:,}"

    def _append_log(self) -> None:
        log = self.query_one(RunLog)
        if self._log_run != self.history.run_id:
            log.clear()
            self._log_run, self._log_seq = self.history.run_id, 0
        entries = self.history.log_since(self._log_seq)
        if entries:
            # A long history arrives in big batches: wrapping a thousand lines holds the UI
            # for a second or more, and nobody reads them scrolling past; the newest stay.
            log.write_events([event for _, event in entries[-LOG_BATCH:]])
            self._log_seq = entries[-1][0]
