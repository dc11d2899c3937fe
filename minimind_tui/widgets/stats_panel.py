"""Where the run stands: step, progress, speed, time, memory and the last checkpoint."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import ProgressBar, Static

from minimind.events import RunFinished, StepMetrics
from minimind.run_folder import named_in
from minimind.shown import shown_line
from minimind.units import format_bytes, format_count, format_duration
from minimind_tui.run.history import RunHistory


class StatsPanel(VerticalScroll):
    """Every figure comes from the events the charts were drawn from (the dashboard shows
    them together, so the panel never runs ahead of the chart and the log). Only elapsed and
    ETA move on with the clock between two draws, and only for a run being trained or followed
    (`tick`): a replay renders the same everywhere."""

    read_only = False
    """Showing a run watched from outside: there is no form to start one from."""

    _rows: list[tuple[str, Any]] = []
    _latest: StepMetrics | None = None
    _finished: RunFinished | None = None
    _clock: tuple[float, float] = (0.0, 0.0)
    _ended_at = 0.0
    _running = _ticking = False
    _status = ""

    def compose(self) -> ComposeResult:
        yield Static(id="stats-status", markup=False)
        # show_eta=False: the bar's own ETA uses the wall clock; the engine's is better.
        yield ProgressBar(total=1, show_eta=False, id="run-progress")
        yield Static(id="stats-table")

    def show(self, history: RunHistory, status: str, *, running: bool = False,
             ticking: bool = False) -> None:
        """`running`: the run goes on (an ETA means something); `ticking`: elapsed and ETA
        count on from the last step's time each `tick`."""
        # Laid out again only when the status changes (rarely; at every value it cost a lot
        # mid-run): a long one wraps in a narrow panel ("Folder gone ..." lost its step).
        if status != self._status:
            self._status = status
            self.query_one("#stats-status", Static).update(Text(status))
        bar = self.query_one(ProgressBar)
        # No pulsing bar while the run prepares: its animation would wake the UI 15 times a
        # second for the whole run if the dashboard was left in the background.
        bar.display = history.started is not None
        if history.latest is not None:
            bar.update(total=history.latest.total_steps, progress=history.summary.step)
        elif history.started is not None:
            bar.update(total=history.started.total_steps, progress=history.started.start_step)
        self._running, self._ticking = running, ticking
        self._rows = self._rows_of(history)
        self._latest, self._finished = history.latest, history.finished
        self._clock, self._ended_at = history.clock or (0.0, 0.0), history.ended_at or 0.0
        self._draw_table()

    def tick(self) -> None:
        """Move elapsed and ETA on by the clock (each second while a run goes on)."""
        if self._ticking and self._latest is not None:
            self._draw_table()

    def _draw_table(self) -> None:
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column(overflow="fold")
        for label, value in self._rows:
            grid.add_row(label, self._elapsed() if label == "elapsed" else value)
        self.query_one("#stats-table", Static).update(grid, layout=False)

    def _elapsed(self) -> str:
        e = self._latest
        assert e is not None
        at, elapsed = self._clock
        if self._finished is not None:  # the time up to the end, which came after the clock
            if self._finished.elapsed is not None:  # as the run's own clock told it
                return format_duration(self._finished.elapsed)
            return format_duration(elapsed + max(0.0, self._ended_at - at))
        if not self._running:  # crashed, or stopping: no time left to tell
            return format_duration(elapsed)
        # The step's time is the trainer's clock: on another machine (a synced folder) the
        # two may differ, so the count never goes below the step's own figures.
        since = max(0.0, time.time() - at) if self._ticking else 0.0
        left = e.eta_seconds - max(0.0, time.time() - e.time) if self._ticking else e.eta_seconds
        # Counted down past its estimate with steps still to go (an evaluation or a save is
        # running, or the steps slowed): 0:00 would say the run is about to end.
        eta = "—" if left <= 0 and e.step < e.total_steps else format_duration(max(0.0, left))
        return f"{format_duration(elapsed + since)} · ETA {eta}"

    def _rows_of(self, h: RunHistory) -> list[tuple[str, Any]]:
        rows: list[tuple[str, Any]] = []
        e = h.latest
        if e is None:
            rows.append(("step", self._before_the_first_log(h)))
        else:
            # The run's step (a stop between two logged steps counts), as the runs list says;
            # loss, lr and grad norm are the last logged step's.
            rows.append(("step", f"{h.summary.step:,}/{e.total_steps:,} · "
                                 f"epoch {e.epoch}/{e.epochs}"))
            if e.step != h.summary.step:
                rows.append(("last log", f"step {e.step:,}"))
            rows.append(("loss", f"{e.loss:.4f} · ema {h.loss_ema[-1]:.4f}"))
            if h.is_moe:
                rows.append(("aux loss", f"{e.aux_loss:.4f}"))
            if h.last_eval is not None:
                rows.append(("val loss",
                             f"{h.last_eval.val_loss:.4f} @ step {h.last_eval.step:,}"))
            rows.append(("lr", f"{e.lr:.3g}"))
            rows.append(("grad norm", f"{e.grad_norm:.3f}"))
            mfu = f" · MFU {e.mfu:.1%}" if e.mfu is not None else ""
            # An ended run's rate is its average, as the runs list gives it (the log keeps
            # each interval's).
            # An sft run counts its replies' tokens: a fifth of those read, say, unlabelled.
            what = "reply tokens" if h.counts_replies else "tokens"
            rows.append((f"{what}/s", f"{h.summary.tokens_per_sec:,.0f} run average"
                         if h.finished is not None else f"{e.tokens_per_sec:,.0f}{mfu}"))
            rows.append((what, format_count(h.summary.tokens_seen)))
            rows.append(("elapsed", None))  # drawn by `_elapsed`, which the clock moves on
            rows.append(("memory", _memory(e)))
        if h.checkpoint is not None:
            rows.append(("checkpoint", f"step {h.checkpoint.step:,}"))
            rows.append(("", Text(_in_the_run_folder(h), style="dim")))
        if h.started is not None:
            s = h.started
            rows.append(("model", f"{format_count(s.parameters)} params, {s.device_name}"))
        return rows


    def _before_the_first_log(self, h: RunHistory) -> str:
        if h.finished is not None:  # it ended first: a failed start, or a stop before a log
            return (f"{h.summary.step:,} trained, none logged" if h.summary.step else
                    "none trained")
        if h.started is not None or self._running:
            return "waiting for the first logged step…"
        return ("no run yet: waiting for one to start" if self.read_only else
                f"no run yet: press {self.app.start_key} on the form")


def _memory(e: StepMetrics) -> str:
    total = f" / {format_bytes(e.mem_total)}" if e.mem_total else ""
    if e.mem_allocated is not None:
        return (f"{format_bytes(e.mem_allocated)} alloc, "
                f"{format_bytes(e.mem_reserved or 0)} reserved, "
                f"{format_bytes(e.mem_peak or 0)} peak{total}")
    if e.rss is not None:
        return f"RSS {format_bytes(e.rss)}{total}"
    return "n/a"


def _in_the_run_folder(h: RunHistory) -> str:
    """The last checkpoint's file within the run's folder ("pretrain_128.pth", "lora/x.pth"):
    the path its event recorded names the folder as the run knew it, which a folder watched
    after a sync or a move is not. Its control characters written out, as the log's line."""
    path = Path(h.checkpoint.weights_path)
    return shown_line(named_in(Path(h.started.out_dir), path) if h.started else str(path))
