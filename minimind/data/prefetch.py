"""Fetching batches in a background thread, so that building them overlaps the training step.

With `num_workers = 0` the DataLoader builds each batch in the training loop's own thread, and
the GPU waits while the padded path tokenizes. The tokenizer's batch call releases the GIL (it
runs in Rust), so one thread that stays a few batches ahead hides it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

DEPTH = 4  # batches kept ready: enough to absorb a slow one, small in memory

_END = object()


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


class Prefetcher(Iterator):
    """Iterates `source` in a daemon thread, `depth` items ahead. Items and the exception that
    ends `source` arrive in order. `close()` (also on garbage collection) stops the thread."""

    def __init__(self, source: Iterable[Any], depth: int = DEPTH):
        self._queue: queue.Queue = queue.Queue(depth)
        self._stop = threading.Event()
        # The thread holds the queue and the event, not self: dropping the Prefetcher ends it.
        self._thread = threading.Thread(target=_fill, args=(iter(source), self._queue,
                                                            self._stop),
                                        name="batch-prefetch", daemon=True)
        self._thread.start()

    def __next__(self) -> Any:
        item = self._queue.get()
        if item is _END:
            self._queue.put(_END)  # later calls stop too
            raise StopIteration
        if isinstance(item, _Failed):
            raise item.error
        return item

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread and wait for it (it finishes the batch it is building): a thread
        still inside the tokenizer or torch when the interpreter exits can abort the process."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def __del__(self) -> None:
        self._stop.set()


def _fill(source: Iterator[Any], out: queue.Queue, stop: threading.Event) -> None:
    try:
        for item in source:
            if not _put(out, item, stop):
                return
    except BaseException as e:  # delivered to the consumer, who decides
        _put(out, _Failed(e), stop)
        return
    _put(out, _END, stop)


def _put(out: queue.Queue, item: Any, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            out.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False
