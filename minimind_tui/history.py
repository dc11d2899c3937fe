"""What the dashboard knows about the current run, as plain Python (no Textual here).

The UI drains the engine's events into a `RunHistory` a few times a second; the dashboard
redraws from it when it is visible. Series are plain lists so a long run costs a few floats
per logged step, and `downsample_minmax` cuts them to what a plot of a given width can show.
"""

from __future__ import annotations

import collections

from minimind.events import (CheckpointSaved, EvalResult, Event, LogMessage, RunFinished,
                             RunStarted, Sample, StepMetrics)

EMA_WEIGHT = 0.9  # the smoothing TensorBoard users know; debiased so early points are not ~0
LOG_KEEP = 2000  # events kept for the log panel (the log widget keeps fewer lines)


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
        self.steps: list[int] = []
        self.tokens: list[int] = []
        self.loss: list[float] = []
        self.loss_ema: list[float] = []
        self.logits_loss: list[float] = []
        self.aux_loss: list[float] = []
        self.lr: list[float] = []
        self.val_steps: list[int] = []
        self.val_tokens: list[int] = []
        self.val_loss: list[float] = []
        self.samples: list[Sample] = []  # every one (a few kB each): the panel pages through them
        self._ema, self._ema_n = 0.0, 0
        self.log: collections.deque[tuple[int, Event]] = collections.deque(maxlen=LOG_KEEP)
        self._log_seq = 0

    @property
    def is_moe(self) -> bool:
        return bool(self.started and self.started.settings["model"].get("use_moe"))

    def apply(self, events: list[Event]) -> None:
        for event in events:
            self._apply(event)
            self._log_seq += 1
            self.log.append((self._log_seq, event))
        if events:
            self.version += 1

    def log_since(self, seq: int) -> list[tuple[int, Event]]:
        """Log events with a sequence number above `seq`, oldest first."""
        return [entry for entry in self.log if entry[0] > seq]

    def _apply(self, e: Event) -> None:
        if isinstance(e, StepMetrics):
            self.latest = e
            self.steps.append(e.step)
            self.tokens.append(e.tokens_seen)
            self.loss.append(e.loss)
            self.logits_loss.append(e.logits_loss)
            self.aux_loss.append(e.aux_loss)
            self.lr.append(e.lr)
            self._ema = EMA_WEIGHT * self._ema + (1 - EMA_WEIGHT) * e.loss
            self._ema_n += 1
            self.loss_ema.append(self._ema / (1 - EMA_WEIGHT ** self._ema_n))
        elif isinstance(e, EvalResult):
            self.last_eval = e
            self.val_steps.append(e.step)
            self.val_tokens.append(self.tokens_at(e.step))
            self.val_loss.append(e.val_loss)
        elif isinstance(e, Sample):
            self.samples.append(e)
        elif isinstance(e, RunStarted):
            self.started = e
        elif isinstance(e, CheckpointSaved):
            self.checkpoint = e
        elif isinstance(e, RunFinished):
            self.finished = e
        elif not isinstance(e, LogMessage):
            raise TypeError(f"unexpected event {type(e).__name__}")

    def tokens_at(self, step: int) -> int:
        """Tokens seen by `step`: exact at logged steps, extrapolated from the last one."""
        if not self.steps:
            return step * (self.started.tokens_per_step if self.started else 0)
        per_step = self.tokens[-1] / max(self.steps[-1], 1)
        return self.tokens[-1] + round((step - self.steps[-1]) * per_step)


def downsample_minmax(xs: list[float], ys: list[float], max_points: int
                      ) -> tuple[list[float], list[float]]:
    """At most `max_points` points, in x order, that keep the first and the last point (the
    newest value of a live series) and each bucket's minimum and maximum.

    Plotting every point of a long run freezes the UI (plotext draws each one); a plot a few
    hundred cells wide cannot show more than a min and a max per column anyway, and keeping
    both means spikes and the best loss never vanish from the chart.
    """
    n = len(ys)
    if n <= max_points:
        return list(xs), list(ys)
    buckets = max((max_points - 2) // 2, 1)  # two points each, plus the two ends
    keep = {0, n - 1}
    for b in range(buckets):
        lo, hi = b * n // buckets, (b + 1) * n // buckets
        chunk = ys[lo:hi]
        # min/max/index run in C: ~100k points cost a few milliseconds
        keep.add(lo + chunk.index(min(chunk)))
        keep.add(lo + chunk.index(max(chunk)))
    order = sorted(keep)
    return [xs[i] for i in order], [ys[i] for i in order]
