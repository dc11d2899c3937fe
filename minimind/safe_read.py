"""Reading a path that names a file but may be a pipe or a device.

A run folder is a folder anyone may have put anything into (a sync, a test, a mistake), and a
preset path may be `<(...)`. Opening a FIFO for reading waits until something opens it for
writing, which may be never; reading a device such as /dev/zero never ends. The readers of
presets and of a run folder's records (config.toml, run.json, metrics.jsonl) go through here,
so none of them can hang.
"""

from __future__ import annotations

import os
import select
import stat
from pathlib import Path

SETTINGS_MAX_BYTES = 1 << 20  # a preset or config.toml is a few KiB
PIPE_WAIT_SECONDS = 30.0


def missing(path: Path, what: str = "file") -> str:
    """Why `path`, which does not exist, is missing: exists() follows links, so a dangling link
    or a loop of links read as no such file."""
    if path.is_symlink():
        return "a link to nothing (its target is missing, or the links loop)"
    return f"no such {what}"


def open_regular(path: Path) -> int:
    """A read-only descriptor of `path` if it is a regular file; OSError otherwise. Opened
    without blocking, so a FIFO nobody writes to cannot hang the reader, and then refused."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path}: not a regular file")
    return fd


def read_regular_tail(path: Path, size: int) -> tuple[bytes, float] | None:
    """The last `size` bytes of a regular file and its modification time; None for a missing,
    unreadable or non-regular path (a FIFO is never waited on)."""
    try:
        with os.fdopen(open_regular(path), "rb") as f:
            end = f.seek(0, os.SEEK_END)
            f.seek(max(0, end - size))
            return f.read(), os.fstat(f.fileno()).st_mtime
    except OSError:
        return None


def read_small(path: Path, limit: int = SETTINGS_MAX_BYTES) -> bytes:
    """All of a file that must be small (a settings file): OSError, its strerror saying why,
    for more than `limit` bytes or a pipe that gave nothing. A pipe that is being written, as
    `<(...)` is, reads as it comes; one nobody writes to reads as empty at once, since it is
    opened without waiting for a writer; one whose writer falls silent for PIPE_WAIT_SECONDS
    is given up on (its writer may never write: `<(cat)` with no input)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    chunks, size = [], 0
    with os.fdopen(fd, "rb", buffering=0) as f:
        while size <= limit:
            # None: a writer is there, with nothing written yet (b"": none, or it is done).
            if (chunk := f.read(limit + 1 - size)) is None:
                if not select.select([fd], [], [], PIPE_WAIT_SECONDS)[0]:
                    raise OSError(0, f"a pipe that gave nothing for {PIPE_WAIT_SECONDS:g} s")
                continue
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    data = b"".join(chunks)
    if not data and not path.is_file():
        raise OSError(0, "a pipe or a device that gave nothing to read")
    if len(data) > limit:
        raise OSError(0, f"over {limit >> 20} MiB, too large for settings")
    return data
