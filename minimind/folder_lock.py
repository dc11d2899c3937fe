"""The lock that keeps one trainer per run folder: an exclusive `flock` on `<folder>/.run.lock`,
held for the trainer's whole life, so it vanishes with the process however that ends.

A launcher takes the lock before it writes anything into the folder, then hands it on:
* to a training process it starts, by descriptor (its number in `LOCK_FD_ENV`);
* to torchrun, whose workers inherit no descriptor, by a reservation written into the lock
  file: until the process it names (torchrun's own) exits, only that process and its
  descendants may take the folder, so no other launch slips in while rank 0 starts.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import psutil

from minimind.run_files import LOCK_FILE

LOCK_FD_ENV = "MINIMIND_RUN_LOCK_FD"
"""A launcher that took a folder's lock for its child names the inherited descriptor here."""


class LockHeld(Exception):
    """Another process holds the folder's lock, or it is reserved for another process's
    children (`reserved_for`: that process's pid)."""

    def __init__(self, reserved_for: int | None = None):
        super().__init__()
        self.reserved_for = reserved_for


def lock_folder(folder: Path) -> int:
    """The descriptor holding the lock on `folder` (created if need be), or LockHeld. A file
    removed while held (`RunFolder.abandon`) may be opened just before: it is checked to still
    be the folder's, or locked anew."""
    for _ in range(5):
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise LockHeld() from None
        if not same_file(fd, folder / LOCK_FILE):
            os.close(fd)
            continue
        if (holder := _reserved_elsewhere(fd)) is not None:
            os.close(fd)
            raise LockHeld(holder)
        os.ftruncate(fd, 0)  # a reservation for this process (or a dead one) is used up
        return fd
    raise LockHeld()


def inherited_lock(folder: Path) -> int | None:
    """The descriptor of `folder`'s lock file that a launcher passed down, if any: its lock is
    already this process's. Taken once: a process started from here inherits no claim."""
    value = os.environ.get(LOCK_FD_ENV, "")
    if not value.isdigit() or not same_file(int(value), folder / LOCK_FILE):
        return None
    del os.environ[LOCK_FD_ENV]
    return int(value)


def reserve(fd: int, pid: int) -> None:
    """Write into the locked file `fd` that the folder is `pid`'s and its children's (the
    caller then releases the lock): its start time too, so a reused pid is no match. A process
    already gone gets none."""
    try:
        record = f"{pid} {psutil.Process(pid).create_time()!r}\n".encode()
    except psutil.Error:
        return
    os.ftruncate(fd, 0)
    os.pwrite(fd, record, 0)


def _reserved_elsewhere(fd: int) -> int | None:
    """The pid of a live process the folder is reserved for, unless it is this one or one of
    its ancestors; None otherwise (no reservation, or one whose process is gone)."""
    try:
        pid_text, started_text = os.pread(fd, 64, 0).decode().split()
        pid, started = int(pid_text), float(started_text)
        if not abs(psutil.Process(pid).create_time() - started) < 1.0:  # (NaN too)
            return None
        me = psutil.Process()
        ours = {me.pid, *(p.pid for p in me.parents())}
    except (OSError, ValueError, psutil.Error):  # (UnicodeDecodeError is a ValueError)
        return None  # not a reservation, or its process is gone
    return None if pid in ours else pid


def same_file(fd: int, path: Path) -> bool:
    try:
        held, here = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (held.st_dev, held.st_ino) == (here.st_dev, here.st_ino)
