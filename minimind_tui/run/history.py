"""What the dashboard knows about a run, as plain Python (no Textual here).

Events (drained from the engine's queue, or read from a metrics.jsonl by `watch`) go into a
`RunHistory`; the dashboard redraws from it when visible. A resumed run keeps its whole history:
a `RunStarted` at step S drops whatever was logged after S (the steps the crash lost, which the
resumed run trains again) and marks S as the start of a resumed segment.

Series are `array('d')`s: 8 bytes a point. Past `MAX_POINTS` the history halves its resolution
(keeping the smallest and the largest loss of every four points, and the newest point), so
memory stays bounded however long the run and recent steps stay the densest;
`downsample_minmax` cuts what a chart draws to a few points per column, keeping each bucket's
extremes and both ends (the newest value of a live run). A long history read from a file comes
in `StepBlock`s (many steps as columns, see `metrics_reader`), appended with numpy.
"""

from __future__ import annotations

import bisect
import collections
from array import array
from dataclasses import dataclass

import numpy as np

from minimind.events import (CheckpointSaved, EvalResult, Event, RunFinished,
                             RunStarted, Sample, StepMetrics)
from minimind.run_status import RunStatus

EMA_WEIGHT = 0.9  # the smoothing TensorBoard users know; debiased so early points are not ~0
LOG_KEEP = 2000  # events kept for the log panel (the log widget keeps fewer lines)
MAX_POINTS = 1 << 20  # per series: 8 MiB of float64
SERIES = ("steps", "tokens", "loss", "loss_ema", "logits_loss", "aux_loss", "lr")
BLOCK_COLUMNS = ("steps", "tokens", "loss", "logits_loss", "aux_loss", "lr")
EMA_SPAN = 256  # w**-256 is ~5e11 for w = 0.9: far from overflow, no precision lost


@dataclass
class StepBlock:
    """Consecutive step events read in bulk (a long metrics.jsonl loading): the charted values
    as columns, in `BLOCK_COLUMNS` order, and the last event whole, for the stats and the log.
    Applying it is the same as applying its events one by one, many times faster."""

    columns: np.ndarray  # shape (n, len(BLOCK_COLUMNS)), float64
    last: StepMetrics


class RunHistory:
    """Metric series, latest stats and log events of one run; `version` counts changes."""

    def __init__(self) -> None:
        self.run_id = 0
        self.reset()

    def reset(self) -> None:
        """Forget the previous run; `run_id` tells viewers to clear what they drew."""
        self.run_id += 1
        self.version = 0
        self.started: RunStarted | None = None
        self.latest: StepMetrics | None = None
        self.last_eval: EvalResult | None = None
        self.checkpoint: CheckpointSaved | None = None
        self.finished: RunFinished | None = None
        self.clock: tuple[float, float] | None = None
        """(wall time, the run's training time then) at its latest step or start: where its
        elapsed time counts on from (never across the idle time before a resume)."""
        self.ended_at: float | None = None
        """When the run's latest segment ended: a start that fails before it begins ends no
        segment of training, so it moves no clock."""
        self.summary = RunStatus()
        """The run's figures folded as its status file and the runs list fold them."""
        for name in SERIES:
            setattr(self, name, array("d"))
        self.val_steps, self.val_tokens, self.val_loss = array("d"), array("d"), array("d")
        self.resumed_at: list[int] = []
        """Steps where a resumed segment of the run begins (for the charts' marks)."""
        self.samples: list[Sample] = []  # every one (a few kB each): the panel pages through them
        self._ema, self._ema_n = 0.0, 0
        self.log: collections.deque[tuple[int, Event]] = collections.deque(maxlen=LOG_KEEP)
        self._log_seq = 0

    @property
    def is_moe(self) -> bool:
        return bool(self.started and self.started.settings["model"].get("use_moe"))

    @property
    def counts_replies(self) -> bool:
        """An sft or lora run: the tokens it counts are the replies' (those it trains on)."""
        return bool(self.started and self.started.settings["train"].get("stage", "pretrain")
                    != "pretrain")

    def apply(self, events: list[Event | StepBlock]) -> None:
        for event in events:
            self._apply(event)
            whole = event.last if isinstance(event, StepBlock) else event
            self.summary.apply(whole)
            self._log_seq += 1
            self.log.append((self._log_seq, whole))
        if events:
            self.version += 1

    def log_since(self, seq: int) -> list[tuple[int, Event]]:
        """Log events with a sequence number above `seq`, oldest first."""
        return [entry for entry in self.log if entry[0] > seq]

    def _apply(self, e: Event | StepBlock) -> None:
        if isinstance(e, StepMetrics):
            self._add_step(e)
        elif isinstance(e, StepBlock):
            self._add_steps(e)
        elif isinstance(e, EvalResult):
            self.last_eval = e
            self.val_steps.append(e.step)
            self.val_tokens.append(self.tokens_at(e.step))
            self.val_loss.append(e.val_loss)
        elif isinstance(e, Sample):
            self.samples.append(e)
        elif isinstance(e, RunStarted):
            self._start_segment(e)
        elif isinstance(e, CheckpointSaved):
            self.checkpoint = e
        elif isinstance(e, RunFinished):
            if self.finished is None:
                self.ended_at = e.time
            self.finished = e
        # Anything else (log messages, kinds a newer version adds) lives in the log only.

    def _add_step(self, e: StepMetrics) -> None:
        self.latest, self.clock = e, (e.time, e.elapsed)
        self._ema = EMA_WEIGHT * self._ema + (1 - EMA_WEIGHT) * e.loss
        self._ema_n += 1
        values = (e.step, e.tokens_seen, e.loss, self._ema / (1 - EMA_WEIGHT ** self._ema_n),
                  e.logits_loss, e.aux_loss, e.lr)
        for name, value in zip(SERIES, values, strict=True):
            getattr(self, name).append(value)
        if len(self.steps) >= MAX_POINTS:
            self._halve()

    def _add_steps(self, block: StepBlock) -> None:
        self.latest, self.clock = block.last, (block.last.time, block.last.elapsed)
        columns = dict(zip(BLOCK_COLUMNS, block.columns.T, strict=True))
        columns["loss_ema"] = self._ema_block(columns["loss"])
        for name in SERIES:
            getattr(self, name).frombytes(np.ascontiguousarray(columns[name]).tobytes())
        while len(self.steps) >= MAX_POINTS:
            self._halve()

    def _ema_block(self, loss: np.ndarray) -> np.ndarray:
        """`_add_step`'s debiased EMA for many points at once: the recurrence unrolled,
        ema_t = w^t ema_0 + (1-w) w^t sum_j<=t w^-j x_j, over spans short enough for w^-j."""
        w, out = EMA_WEIGHT, np.empty_like(loss)
        powers = w ** np.arange(1, EMA_SPAN + 1)
        for start in range(0, len(loss), EMA_SPAN):
            x = loss[start:start + EMA_SPAN]
            p = powers[:len(x)]
            ema = p * (self._ema + (1 - w) * np.cumsum(x / p))
            self._ema = float(ema[-1])
            count = self._ema_n + np.arange(1, len(x) + 1)
            out[start:start + len(x)] = ema / (1 - w ** count)
            self._ema_n += len(x)
        return out

    def _start_segment(self, e: RunStarted) -> None:
        if self.started is not None and e.start_step == 0:
            self.reset()  # the same folder, a new run from scratch
        elif e.start_step:
            self._truncate_after(e.start_step)
            self.resumed_at.append(e.start_step)
        self.started, self.finished, self.clock = e, None, (e.time, e.elapsed)

    def _truncate_after(self, step: int) -> None:
        keep = bisect.bisect_right(self.steps, step)
        for name in SERIES:
            del getattr(self, name)[keep:]
        # The smoothing goes on from the kept point, not from the lost steps' last value.
        self._ema_n = min(self._ema_n, keep)
        self._ema = self.loss_ema[-1] * (1 - EMA_WEIGHT ** self._ema_n) if keep else 0.0
        keep = bisect.bisect_right(self.val_steps, step)
        for series in (self.val_steps, self.val_tokens, self.val_loss):
            del series[keep:]
        self.samples = [sample for sample in self.samples if sample.step <= step]
        if self.checkpoint is not None and self.checkpoint.step > step:
            self.checkpoint = None

    def _halve(self) -> None:
        """Keep the smallest and the largest loss of every four points (and the newest)."""
        loss = np.frombuffer(self.loss, dtype=np.float64)
        n = len(loss)
        groups = np.nan_to_num(loss[: n // 4 * 4], nan=np.inf).reshape(-1, 4)
        low, high = groups.argmin(axis=1), groups.argmax(axis=1)
        high = np.where(high == low, (low + 1) % 4, high)  # a flat group keeps two points
        base = np.arange(len(groups)) * 4
        index = np.unique(np.concatenate((base + low, base + high, np.arange(n // 4 * 4, n),
                                          [n - 1])))
        for name in SERIES:
            kept = np.frombuffer(getattr(self, name), dtype=np.float64)[index]
            setattr(self, name, array("d", kept.tobytes()))

    def tokens_at(self, step: int) -> int:
        """Tokens seen by `step`: exact at logged steps, extrapolated from the last one."""
        if not self.steps:
            return step * (self.started.tokens_per_step if self.started else 0)
        per_step = self.tokens[-1] / max(self.steps[-1], 1)
        return int(self.tokens[-1] + round((step - self.steps[-1]) * per_step))


def downsample_minmax(xs, ys, max_points: int) -> tuple[list[float], list[float]]:
    """At most `max_points` points, in x order, that keep the first and the last point (the
    newest value of a live series) and each bucket's minimum and maximum.

    Plotting every point of a long run freezes the UI (plotext draws each one); a plot a few
    hundred cells wide cannot show more than a min and a max per column anyway, and keeping
    both means spikes and the best loss never vanish from the chart. Vectorised: a million
    points take milliseconds.
    """
    n = len(ys)
    if n <= max_points:
        return np.asarray(xs, dtype=np.float64).tolist(), np.asarray(ys, dtype=np.float64).tolist()
    x = np.asarray(xs, dtype=np.float64)
    y = np.asarray(ys, dtype=np.float64)
    buckets = max((max_points - 2) // 2, 1)
    # Buckets of n // buckets or one more point, spread evenly: the newest points (a live
    # run's edge) are bucketed like all others, not cut to one.
    starts = np.arange(buckets) * n // buckets
    ends = np.append(starts[1:], n)
    index = starts[:, None] + np.arange((ends - starts).max())[None, :]
    outside = index >= ends[:, None]
    body = y[np.minimum(index, n - 1)]
    low = np.where(outside | np.isnan(body), np.inf, body).argmin(axis=1)
    high = np.where(outside | np.isnan(body), -np.inf, body).argmax(axis=1)
    keep = np.unique(np.concatenate(([0, n - 1], starts + low, starts + high)))
    return x[keep].tolist(), y[keep].tolist()
