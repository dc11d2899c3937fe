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
* hostile lines: one longer than `MAX_LINE_BYTES` is dropped as it streams past (never held
  whole), and `parse_event` refuses nesting deeper than the JSON parser's recursion limit, so
  no single line can cost more than a bounded amount of memory and time;
* a path that is not a regular file (a FIFO, a device): never opened, so never blocks;
* a slow disk: each poll reads at most `chunk` bytes, so a viewer stays responsive while it
  catches up on a long history.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from minimind.events import Event, event_from_dict
from minimind.safe_read import open_regular

# The longest line the engine writes is a samples event or a run's settings: a few KiB.
MAX_LINE_BYTES = 1 << 20


@dataclass
class Lines:
    """A poll's complete lines, not parsed yet (a reader parses them in bulk)."""

    lines: list[bytes] = field(default_factory=list)
    reset: bool = False
    """The file started over: everything read before is gone."""
    caught_up: bool = True
    """Everything in the file up to now has been read (False: more bytes are waiting)."""
    oversized: int = 0
    """Lines longer than MAX_LINE_BYTES, dropped unread."""


class Follower:
    def __init__(self, path: str | Path, chunk: int = 8 << 20):
        self.path = Path(path)
        self.chunk = chunk
        self.offset = 0
        self._partial = b""
        self._dropping = False  # inside an oversized line: skip to its newline
        self._identity: tuple[int, int] | None = None

    def skip_to_end(self) -> None:
        """Start from what is appended from now on (the history is not wanted, e.g. a run
        that is about to be replaced: its new file is noticed as a start over)."""
        try:
            info = os.stat(self.path)
        except OSError:
            return
        self.offset, self._partial, self._dropping = info.st_size, b"", False
        self._identity = (info.st_dev, info.st_ino)

    def poll_lines(self) -> Lines:
        """The complete lines appended since the last poll, as bytes."""
        out = Lines()
        try:
            fd = open_regular(self.path)
        except OSError:
            return out
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            identity = (info.st_dev, info.st_ino)
            if self._identity is not None and (identity != self._identity
                                               or info.st_size < self.offset):
                self.offset, self._partial, self._dropping, out.reset = 0, b"", False, True
            self._identity = identity
            if info.st_size <= self.offset:
                return out
            try:
                f.seek(self.offset)
                data = f.read(self.chunk)
            except OSError:
                return out
        self.offset += len(data)
        out.caught_up = self.offset >= info.st_size
        lines = data.split(b"\n")
        partial = lines.pop()  # b"" after a complete line
        if lines:
            if self._dropping:
                lines[0], self._dropping = b"", False  # the rest of an oversized line
            else:
                lines[0] = self._partial + lines[0]
            self._partial = b""
        for i, line in enumerate(lines):
            if len(line) > MAX_LINE_BYTES:
                lines[i], out.oversized = b"", out.oversized + 1
        if self._dropping:
            return out
        if len(self._partial) + len(partial) > MAX_LINE_BYTES:
            self._partial, self._dropping, out.oversized = b"", True, out.oversized + 1
        else:
            self._partial += partial
        out.lines = [line for line in lines if line]
        return out


def parse_event(line: bytes | str) -> Event | None:
    """One JSONL line as an event, or None if it is not one this version knows."""
    if len(line) > MAX_LINE_BYTES:
        return None
    try:
        data = json.loads(line)
        return event_from_dict(data) if isinstance(data, dict) else None
    except (ValueError, TypeError, KeyError, RecursionError):
        return None
