"""A plotext chart of metric series that stays fast however long the run gets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from textual.color import Color
from textual_plotext import PlotextPlot

from minimind_tui.history import downsample_minmax
from minimind_tui.readouts import format_count


@dataclass(frozen=True)
class PlotSeries:
    label: str
    xs: list[float]
    ys: list[float]
    color: str
    """A theme variable name ("primary", "accent"…), so the chart follows the theme."""
    kind: Literal["line", "scatter"] = "line"
    yside: Literal["left", "right"] = "left"


class MetricPlot(PlotextPlot):
    """Downsamples each series to a few points per column before plotext sees it: plotext
    draws every point it is given, and 100k points would freeze the UI for over a second."""

    def draw(self, series: list[PlotSeries], xlabel: str, tokens_axis: bool) -> None:
        plt = self.plt
        plt.clear_data()
        budget = max(4 * self.size.width, 200)
        colors = self.app.theme_variables
        all_x: list[float] = []
        for s in series:
            if not s.xs:
                continue
            xs, ys = downsample_minmax(s.xs, s.ys, budget)
            color = Color.parse(colors[s.color]).rgb
            if s.kind == "scatter":
                plt.scatter(xs, ys, label=s.label, color=color, marker="●", yside=s.yside)
            else:
                plt.plot(xs, ys, label=s.label, color=color, marker="braille", yside=s.yside)
            all_x += (xs[0], xs[-1])
        plt.xlabel(xlabel)
        if tokens_axis and all_x:
            # plotext would print 1200000.0; 1.20M reads at a glance.
            lo, hi = min(all_x), max(all_x)
            ticks = [lo + (hi - lo) * i / 4 for i in range(5)] if hi > lo else [lo]
            plt.xticks(ticks, [format_count(int(t)) for t in ticks])
        else:
            plt.xticks(None)
        self.refresh()
