"""Where events go. The engine calls `emit` on each sink and never knows who listens.

A sink must never block or break training. The queue sink drops the oldest entries when its
reader falls behind (bounded memory); the sinks that write somewhere (the JSONL file, run.json,
the trackers) are `BackgroundSink`s: their own thread writes, so a destination that stalls (a
FIFO nobody reads, a hung network disk) costs dropped lines and a warning, never a stalled step;
the console sink goes quiet if its terminal disappears (a closed SSH session).
"""

from __future__ import annotations

import collections
import errno
import os
import stat
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TextIO

from minimind.event_text import describe
from minimind.events import Event


class Sink(Protocol):
    def emit(self, event: Event) -> None: ...

    def close(self) -> None: ...


class QueueSink:
    """A bounded, thread-safe buffer a UI drains on a timer.

    `deque.append` and `popleft` are atomic, so no lock is needed; `maxlen` makes a stalled
    reader cost at most `maxlen` events of memory (the oldest are dropped first).
    """

    def __init__(self, maxlen: int = 20_000):
        self._events: collections.deque[Event] = collections.deque(maxlen=maxlen)

    def emit(self, event: Event) -> None:
        self._events.append(event)

    def drain(self, limit: int | None = None) -> list[Event]:
        out: list[Event] = []
        while self._events and (limit is None or len(out) < limit):
            out.append(self._events.popleft())
        return out

    def close(self) -> None:
        pass


class BackgroundSink:
    """A sink whose work happens on a thread of its own, so a slow or stuck destination (a
    FIFO, a hung network disk, a tracker's server) costs dropped items and a warning, never a
    stalled step.

    `emit` queues what `item` makes of the event (None: nothing). At most `maxlen` items wait;
    past that the oldest are dropped and counted (`next_item` hands the count over). `work` is
    the thread's body; `close` waits `close_timeout` seconds for it to return, then calls
    `gave_up`, rather than hold the run's end hostage.
    """

    def __init__(self, name: str, *, maxlen: int, close_timeout: float,
                 warn: Callable[[str], None] | None = None):
        self._items: collections.deque = collections.deque()
        self._maxlen = maxlen
        self._dropped = 0
        self._in_hand = 0  # items taken by the thread and not done with yet
        self._closed = False
        self._wake = threading.Condition()
        self._warn = warn or (lambda text: print(f"minimind: {text}", file=sys.stderr))
        self.close_timeout = close_timeout
        self._thread = threading.Thread(target=self.work, daemon=True, name=name)

    def start_thread(self) -> None:
        """Start the thread (a subclass calls it once its own state is set)."""
        self._thread.start()

    def item(self, event: Event) -> object | None:
        """What `emit` queues for `event` (None: nothing); runs on the training thread."""
        return event

    def emit(self, event: Event) -> None:
        item = self.item(event)
        if item is None:
            return
        with self._wake:
            if len(self._items) >= self._maxlen:
                self._items.popleft()
                self._dropped += 1
            self._items.append(item)
            self._wake.notify_all()

    def next_item(self, timeout: float | None = None) -> tuple[object | None, int]:
        """For the thread: the oldest waiting item, waiting for one until `timeout` (None: for
        ever) or `close`, and how many were dropped since the last call. (None, n) if none.
        An item counts as unfinished until `done` is called for it."""
        with self._wake:
            if not self._items and not self._closed:
                self._wake.wait(timeout)
            dropped, self._dropped = self._dropped, 0
            if not self._items:
                return None, dropped
            self._in_hand += 1
            return self._items.popleft(), dropped

    def done(self) -> None:
        """For the thread: the item it took last is handled."""
        with self._wake:
            self._in_hand -= 1
            self._wake.notify_all()

    def drop_queued(self) -> None:
        """Forget what waits (it is covered, or no longer wanted)."""
        with self._wake:
            self._items.clear()
            self._wake.notify_all()

    def unfinished(self) -> int:
        """Items queued or in hand."""
        return len(self._items) + self._in_hand

    def wait_until_done(self, timeout: float) -> bool:
        """Wait until every queued item is handled; False if that took longer than `timeout`."""
        deadline = time.monotonic() + timeout
        with self._wake:
            while self.unfinished():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.wait(min(left, 0.05))
        return True

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        self._thread.join(self.close_timeout)
        if self._thread.is_alive() or self.unfinished():
            self.gave_up()

    def work(self) -> None:
        raise NotImplementedError

    def gave_up(self) -> None:
        """`close` found the work unfinished (still running, or items left unhandled)."""


class JsonlSink(BackgroundSink):
    """`<out_dir>/metrics.jsonl`: one event per line, flushed line by line so another process
    (`minimind-tui watch`) can follow it.

    The writer thread opens the file without blocking (a FIFO with no reader yet is retried,
    not waited on) and writes; at most `maxlen` lines wait, and `warn` says when some were
    dropped or could not be written.
    """

    RETRY_SECONDS = 0.2

    def __init__(self, path: str | Path, append: bool = False, maxlen: int = 10_000,
                 warn: Callable[[str], None] | None = None, close_timeout: float = 5.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._append = append
        super().__init__(f"writer of {self.path.name}", maxlen=maxlen,
                         close_timeout=close_timeout, warn=warn)
        self.start_thread()

    def item(self, event: Event) -> str:
        return event.to_json() + "\n"

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued line is written; False if that took longer than `timeout`."""
        return self.wait_until_done(timeout)

    def gave_up(self) -> None:
        self._warn(f"{self.path}: {self.unfinished()} events could not be written (the file "
                   "does not accept writes)")

    # -- the writer thread --------------------------------------------------------------------
    def work(self) -> None:
        fd: int | None = None
        pending = whole = b""  # a line taken from the queue, and what is not written of it yet
        reported: set[str] = set()

        def once(key: str, text: str) -> None:
            if key not in reported:
                reported.add(key)
                self._warn(text)

        try:
            while True:
                if not pending:
                    line, dropped = self.next_item()
                    if dropped:
                        once("dropped", f"{self.path}: the file fell behind; {dropped} or more "
                                        "events were dropped (training is not slowed)")
                    if line is None:
                        if self.closed:
                            return  # closed and everything written
                        continue
                    pending = whole = line.encode()
                if fd is None:
                    fd = self._open(once)
                if fd is not None:
                    pending = self._write(fd, pending, once)
                if not pending:
                    self.done()
                    continue
                with self._wake:
                    if self._closed:  # the file is stuck and nothing more will come
                        return
                    self._wake.wait(self.RETRY_SECONDS)
        finally:
            if fd is not None:
                # Given up mid-line (a full disk): no half event stays behind.
                if pending and pending != whole:
                    _cut_back(fd, len(whole) - len(pending))
                os.close(fd)

    def _open(self, once: Callable[[str, str], None]) -> int | None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK | (
            os.O_APPEND if self._append else os.O_TRUNC)
        try:
            fd = os.open(self.path, flags, 0o666)
        except OSError as e:
            if e.errno == errno.ENXIO:  # a FIFO with no reader yet
                once("fifo", f"{self.path}: a pipe nobody reads yet; events wait for a reader")
            else:
                once("open", f"{self.path}: cannot open ({e.strerror}); events wait")
            return None
        if self._append and _ends_mid_line(self.path):
            # The file was cut mid-line (a copy, a crash): start on a line of our own, or our
            # first event (a resume's start) would be glued to the broken one and lost.
            self._write(fd, b"\n", once)
        self._append = True  # a reopen must not truncate what was written
        return fd

    def _write(self, fd: int, data: bytes, once: Callable[[str, str], None]) -> bytes:
        """Write what the file takes now; returns the bytes still to write."""
        try:
            while data:
                data = data[os.write(fd, data):]
        except BlockingIOError:  # a pipe whose reader is not keeping up
            pass
        except OSError as e:
            once(f"write{e.errno}", f"{self.path}: cannot write ({e.strerror}); events wait")
        return data


def _cut_back(fd: int, size: int) -> None:
    """Take the last `size` bytes off a regular file (shrinking needs no free space)."""
    try:
        found = os.fstat(fd)
        if stat.S_ISREG(found.st_mode) and found.st_size >= size:
            os.ftruncate(fd, found.st_size - size)
    except OSError:
        pass  # a resume starts its first event on a line of its own all the same


def _ends_mid_line(path: Path) -> bool:
    try:
        if not path.is_file():  # a pipe has no end to look at
            return False
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return False
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except OSError:
        return False


class ConsoleSink:
    """Upstream-style lines on a text stream (stdout by default). If the stream breaks (the
    terminal closed), the sink falls silent; the run goes on."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stdout
        self._broken = False

    def emit(self, event: Event) -> None:
        described = describe(event)
        if described is None or self._broken:
            return
        try:
            print(described[0], file=self.stream, flush=True)
        except (OSError, ValueError):  # EIO/EPIPE after a hang-up, or a closed stream
            self._broken = True

    def close(self) -> None:
        pass
