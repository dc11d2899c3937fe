"""Following a `metrics.jsonl` that another process may still be writing.

A viewer (`minimind-tui watch`, the dashboard of a run launched as a child process, the runs
view) reads the file the engine appends to, on this machine or synced from another (rsync,
sshfs, NFS). It must never hold the writer up, so it only ever opens the file read-only and reads
what is there; it copes with:

* a partial last line (the writer is mid-write, or a sync copied half a line): kept until its
  newline arrives;
* a file that starts over (replaced by `overwrite`, or a fresh copy): detected by a smaller size
  or another inode, reported as `reset` so the viewer clears what it drew;
* lines it cannot read (a corrupt sync, an event kind from a newer version): skipped and counted;
* a slow disk: each poll reads at most `chunk` bytes, so a viewer stays responsive while it
  catches up on a long history.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from minimind.events import Event, event_from_dict


@dataclass
class Batch:
    events: list[Event] = field(default_factory=list)
    reset: bool = False
    """The file started over: everything read before is gone."""
    skipped: int = 0
    """Complete lines that were not a readable event."""
    caught_up: bool = True
    """Everything in the file up to now has been read (False: more bytes are waiting)."""


@dataclass
class Lines:
    """A poll's complete lines, not parsed yet (for a reader that parses them in bulk)."""

    lines: list[bytes] = field(default_factory=list)
    reset: bool = False
    caught_up: bool = True


class Follower:
    def __init__(self, path: str | Path, chunk: int = 8 << 20):
        self.path = Path(path)
        self.chunk = chunk
        self.offset = 0
        self._partial = b""
        self._identity: tuple[int, int] | None = None

    def skip_to_end(self) -> None:
        """Start from what is appended from now on (the history is not wanted, e.g. a run
        that is about to be replaced: its new file is noticed as a start over)."""
        try:
            stat = os.stat(self.path)
        except OSError:
            return
        self.offset, self._partial = stat.st_size, b""
        self._identity = (stat.st_dev, stat.st_ino)

    def poll(self) -> Batch:
        """The events appended since the last poll (none if the file does not exist yet)."""
        lines = self.poll_lines()
        batch = Batch(reset=lines.reset, caught_up=lines.caught_up)
        for line in lines.lines:
            event = parse_event(line)
            if event is not None:
                batch.events.append(event)
            elif line.strip():
                batch.skipped += 1
        return batch

    def poll_lines(self) -> Lines:
        """The complete lines appended since the last poll, as bytes."""
        try:
            stat = os.stat(self.path)
        except OSError:
            return Lines()
        out = Lines()
        identity = (stat.st_dev, stat.st_ino)
        if self._identity is not None and (identity != self._identity
                                           or stat.st_size < self.offset):
            self.offset, self._partial, out.reset = 0, b"", True
        self._identity = identity
        if stat.st_size <= self.offset:
            return out
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(self.chunk)
        except OSError:
            return out
        self.offset += len(data)
        out.caught_up = self.offset >= stat.st_size
        out.lines = (self._partial + data).split(b"\n")
        self._partial = out.lines.pop()  # b"" after a complete line
        return out


def parse_event(line: bytes | str) -> Event | None:
    """One JSONL line as an event, or None if it is not one this version knows."""
    try:
        data = json.loads(line)
        return event_from_dict(data) if isinstance(data, dict) else None
    except (ValueError, TypeError, KeyError):
        return None


def read_events(path: str | Path) -> list[Event]:
    """Every event of a (finished or live) metrics file, read once."""
    follower, events = Follower(path), []
    while True:
        batch = follower.poll()
        events = batch.events if batch.reset else events + batch.events
        if batch.caught_up:
            return events
