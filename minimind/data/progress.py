"""Progress of a pass over a data file, from its `(done_bytes, total_bytes)` reports: its
speed and time left (`Throughput`), and what a run logs while it reads (`ReadingProgress`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from minimind.units import format_duration


class Throughput:
    """Feed it every progress report; `text()` then reads like "12.3 MB/s, 1:05 left".

    The rate is the average since the first report: a pass over a file runs at a steady
    speed, and an average does not jump around the way the last interval's rate does."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.started: tuple[float, int] | None = None
        self.done = 0
        self.total = 0
        self.elapsed = 0.0

    def update(self, done: int, total: int) -> None:
        now = self.clock()
        if self.started is None:
            self.started = (now, done)
        self.done, self.total = done, total
        self.elapsed = now - self.started[0]

    @property
    def bytes_per_second(self) -> float | None:
        if self.started is None or self.elapsed <= 0 or self.done <= self.started[1]:
            return None
        return (self.done - self.started[1]) / self.elapsed

    @property
    def seconds_left(self) -> float | None:
        rate = self.bytes_per_second
        return None if rate is None else max(self.total - self.done, 0) / rate

    def text(self) -> str:
        rate, left = self.bytes_per_second, self.seconds_left
        if rate is None or left is None:
            return "starting…"
        return f"{rate / 1e6:.1f} MB/s, {format_duration(left)} left"


class PreparationStopped(Exception):
    """A stop was requested while the data were being read or tokenized."""


class ReadingProgress:
    """The progress callback of reading a data file: logs every 10% of a big file with the
    speed and the time left, and raises PreparationStopped as soon as a stop is requested."""

    def __init__(self, spec: str, log: Callable[..., None], stop: threading.Event,
                 doing: str = "reading"):
        self.name, self.log, self.stop, self.doing = Path(spec).name, log, stop, doing
        self.reported = {-1}
        self.throughput = Throughput()

    def again(self, doing: str) -> ReadingProgress:
        """A fresh reporter for another pass over the same file."""
        return ReadingProgress(self.name, self.log, self.stop, doing)

    def __call__(self, done: int, total: int) -> None:
        if self.stop.is_set():
            raise PreparationStopped
        self.throughput.update(done, total)
        decile = 10 * done // max(total, 1)
        if total >= 1 << 24 and decile not in self.reported:  # quiet for small files
            self.reported.add(decile)
            self.log(f"{self.doing} {self.name}: {10 * decile}% ({self.throughput.text()})")
