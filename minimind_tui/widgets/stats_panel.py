"""Where the run stands: step, progress, speed, time, memory and the last checkpoint."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import ProgressBar, Static

from minimind.events import StepMetrics
from minimind.event_text import format_count, format_duration
from minimind_tui.history import RunHistory
from minimind_tui.readouts import format_bytes


class StatsPanel(VerticalScroll):
    """Every figure comes from events, never the wall clock, so a replay renders the same."""

    def compose(self) -> ComposeResult:
        yield Static(id="stats-status", markup=False)
        # show_eta=False: the bar's own ETA uses the wall clock; the engine's is better.
        yield ProgressBar(total=1, show_eta=False, id="run-progress")
        yield Static(id="stats-table")

    def show(self, history: RunHistory, status: str) -> None:
        # layout=False: the status is one line and the table fills a fixed area (app.tcss),
        # so a new value never needs the screen laid out again, which costs a lot mid-run.
        self.query_one("#stats-status", Static).update(Text(status), layout=False)
        bar = self.query_one(ProgressBar)
        # No pulsing bar while the run prepares: its animation would wake the UI 15 times a
        # second for the whole run if the dashboard was left in the background.
        bar.display = history.started is not None
        if history.latest is not None:
            bar.update(total=history.latest.total_steps, progress=history.summary.step)
        elif history.started is not None:
            bar.update(total=history.started.total_steps, progress=history.started.start_step)
        self.query_one("#stats-table", Static).update(self._table(history), layout=False)

    @staticmethod
    def _table(h: RunHistory) -> Table:
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column(overflow="fold")
        e = h.latest
        if e is None:
            grid.add_row("step", "waiting for the first logged step…"
                         if h.started else "no run yet: press F5 on the form")
        else:
            # The run's step (a stop between two logged steps counts), as the runs list says.
            grid.add_row("step", f"{h.summary.step:,}/{e.total_steps:,} · epoch "
                                 f"{e.epoch}/{e.epochs}")
            grid.add_row("loss", f"{e.loss:.4f} · ema {h.loss_ema[-1]:.4f}")
            if h.is_moe:
                grid.add_row("aux loss", f"{e.aux_loss:.4f}")
            if h.last_eval is not None:
                grid.add_row("val loss", f"{h.last_eval.val_loss:.4f} @ step {h.last_eval.step:,}")
            grid.add_row("lr", f"{e.lr:.3g}")
            grid.add_row("grad norm", f"{e.grad_norm:.3f}")
            mfu = f" · MFU {e.mfu:.1%}" if e.mfu is not None else ""
            grid.add_row("tokens/s", f"{e.tokens_per_sec:,.0f}{mfu}")
            grid.add_row("tokens", format_count(h.summary.tokens_seen))
            grid.add_row("elapsed", f"{format_duration(e.elapsed)} · ETA "
                                    f"{format_duration(e.eta_seconds)}")
            grid.add_row("memory", _memory(e))
        if h.checkpoint is not None:
            grid.add_row("checkpoint", f"step {h.checkpoint.step:,}")
            grid.add_row("", Text(h.checkpoint.weights_path, style="dim"))
        if h.started is not None:
            s = h.started
            grid.add_row("model", f"{format_count(s.parameters)} params, {s.device_name}")
        return grid


def _memory(e: StepMetrics) -> str:
    total = f" / {format_bytes(e.mem_total)}" if e.mem_total else ""
    if e.mem_allocated is not None:
        return (f"{format_bytes(e.mem_allocated)} alloc, "
                f"{format_bytes(e.mem_reserved or 0)} reserved, "
                f"{format_bytes(e.mem_peak or 0)} peak{total}")
    if e.rss is not None:
        return f"RSS {format_bytes(e.rss)}{total}"
    return "n/a"
