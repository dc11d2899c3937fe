"""A bar chart of document (or conversation) lengths in tokens, with max_seq_len marked."""

from __future__ import annotations

from textual.color import Color
from textual_plotext import PlotextPlot

from minimind.data.inspect import length_histogram
from minimind_tui.widgets.metric_plot import nice_ticks, tick_label

BINS = 24


class LengthHistogram(PlotextPlot):
    def show(self, lengths: dict[int, int], max_seq_len: int,
             what: str = "tokens, bos + text + eos") -> None:
        """`lengths`: length in tokens -> how many have it; `what` names the x axis (short:
        plotext drops a label wider than the plot)."""
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        bars = length_histogram(lengths, BINS)
        if not bars:
            self.refresh()
            return
        colors = self.app.theme_variables
        centers = [(lo + hi) / 2 for lo, hi, _ in bars]
        counts = [n for _, _, n in bars]
        plt.bar(centers, counts, width=0.8, color=Color.parse(colors["primary"]).rgb)
        heights = [t for t in nice_ticks(0, max(counts), 4) if t == int(t)]  # whole documents
        plt.yticks(heights, [tick_label(t) for t in heights])
        lo, hi = bars[0][0], bars[-1][1]
        if lo <= max_seq_len <= hi:
            plt.vline(max_seq_len, color=Color.parse(colors["warning"]).rgb)
            self.border_subtitle = f"[$warning]│[/] max_seq_len {max_seq_len}"
        else:
            side = "above the longest" if max_seq_len > hi else "below the shortest"
            self.border_subtitle = f"max_seq_len {max_seq_len}: {side}"
        ticks = nice_ticks(lo, hi)
        plt.xticks(ticks, [tick_label(t) for t in ticks])
        plt.xlabel(what)
        self.refresh()
