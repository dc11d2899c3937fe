"""A plotext chart of metric series that stays fast however long the run gets."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from textual.app import RenderResult
from textual.color import Color
from textual_plotext import PlotextPlot

from minimind_tui.run.history import downsample_minmax


@dataclass(frozen=True)
class PlotSeries:
    label: str
    xs: list[float]
    ys: list[float]
    color: str
    """A theme variable name ("primary", "accent"…), so the chart follows the theme."""
    kind: Literal["line", "scatter"] = "line"


class MetricPlot(PlotextPlot):
    """Downsamples each series to a few points per column before plotext sees it: plotext
    draws every point it is given, and 100k points would freeze the UI for over a second.
    The built chart is kept until the data, size or theme change: a repaint for any other
    reason (the log growing lays out the whole screen) then costs no plotext build."""

    _built: tuple[object, RenderResult] | None = None

    def render(self) -> RenderResult:
        key = (self.size, self.app.theme)
        if self._built is None or self._built[0] != key:
            self._built = (key, super().render())
        return self._built[1]

    def draw(self, series: list[PlotSeries], xlabel: str, marks: list[float] = (),
             mark_color: str = "warning", legend: bool = True) -> None:
        """`marks`: x values to draw a vertical line at (where a resumed segment begins).
        `legend=False` when the screen shows one for several charts."""
        plt = self.plt
        plt.clear_data()
        budget = max(2 * self.size.width, 100)  # a min and a max per column
        colors = self.app.theme_variables
        finite = [(s, *finite_points(s)) for s in series]
        shown = [(s, xs, ys, bad) for s, xs, ys, bad in finite if len(xs)]
        all_x: list[float] = []
        all_y: list[float] = []
        for s, xs, ys, bad in shown:
            xs, ys = downsample_minmax(xs, ys, budget)
            color = Color.parse(colors[s.color]).rgb
            # The panel title names a lone series; one with NaN/inf says how many it left out.
            label = s.label if legend and len(shown) > 1 else None
            if bad:
                label = f"{s.label}: {len(bad):,} not finite, first at {tick_label(bad[0])}"
                plt.vline(bad[0], Color.parse(colors["error"]).rgb)
            if s.kind == "scatter":
                plt.scatter(xs, ys, label=label, color=color, marker="●")
            else:
                plt.plot(xs, ys, label=label, color=color, marker="braille")
            all_x += (xs[0], xs[-1])
            all_y += (min(ys), max(ys))
        for x in marks:
            plt.vline(x, Color.parse(colors[mark_color]).rgb)
        plt.xlabel(xlabel)
        if all_x:
            # plotext would label a token axis 1200000.0; round ticks read as 1.2M.
            ticks = nice_ticks(min(all_x), max(all_x))
            plt.xticks(ticks, [tick_label(t) for t in ticks])
            # plotext's own y labels are evenly spaced values, not round ones (0.000347).
            ticks = nice_ticks(min(all_y), max(all_y))
            plt.yticks(ticks, [tick_label(t) for t in ticks])
        self._built = None
        self.refresh()


def finite_points(series: PlotSeries) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """The points a chart can draw, and the x of those it cannot (NaN, inf: a diverged run
    writes them), which would break plotext's scaling."""
    x = np.asarray(series.xs, dtype=np.float64)
    y = np.asarray(series.ys, dtype=np.float64)[: len(x)]
    x = x[: len(y)]
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok], x[~ok].tolist()


def legend_markup(series: list[PlotSeries], colors: dict[str, str]) -> str:
    """The series' names in their colours, for a border title: plotext draws its legend in
    the plot's top-left corner, over the start of a loss curve, which begins at its highest."""
    return " ".join(f"[{colors[s.color]}]{'●' if s.kind == 'scatter' else '━'} {s.label}[/]"
                    for s in series if s.xs)


def tick_label(value: float) -> str:
    """150, 12k, 1.5M: short enough that plotext does not drop overlapping labels."""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:g}{suffix}"
    return f"{value:g}"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About `count` round values (1, 2 or 5 times a power of ten apart) within [lo, hi]."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) // step) + 1)]
