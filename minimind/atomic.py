"""Writing files so that a crash, a kill or a full disk never leaves a half-written one.

Every file the project writes for later (checkpoints, config.toml, presets, token caches, the
decompressed corpus, tokenizer files) goes through `atomic_file`: the bytes go to a temporary
name in the same folder, are fsynced, and only then renamed over the target, so readers see the
old file or the new one, never a mixture. The temporary name is `.<name>.<random>.tmp`, one rule
that `stale_temp_files` uses to find what a killed writer left behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from minimind.safe_read import missing

TEMP_SUFFIX = ".tmp"


def _umask() -> int:
    # Linux reports it without changing it; os.umask() can only be read by setting it, which
    # would briefly affect files created by other threads.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _open_temp(path: Path, made: list[Path]) -> tuple[BinaryIO, Path]:
    """A temporary file beside `path`, its folders made first (added to `made`, for
    `remove_empty` to take back if the write fails)."""
    made += missing_folders(path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    return os.fdopen(fd, "wb"), Path(tmp)


def missing_folders(folder: Path) -> list[Path]:
    """`folder` and the folders above it that do not exist yet, innermost first."""
    missing = []
    for each in (folder, *folder.parents):
        if each.exists():
            break
        missing.append(each)
    return missing


def remove_empty(folders: list[Path]) -> None:
    """A failed write leaves no folder it made (an export to a full disk left an empty `up/`);
    one something else has filled since stays."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _seal(f: BinaryIO, tmp: Path) -> None:
    """Make the temporary file's bytes durable and give it a plain `open()`'s mode (0644
    under the usual umask), not mkstemp's 0600."""
    with f:
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o666 & ~_umask())


@contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """Write `path` through a binary file object; on success it replaces `path` at once, on any
    exception the temporary file is removed and `path` is untouched."""
    path, made = Path(path), []
    f, tmp = _open_temp(path, made)
    try:
        yield f
        _seal(f, tmp)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):  # closing flushes, which a full disk refuses too
            f.close()
        tmp.unlink(missing_ok=True)
        remove_empty(made)
        if isinstance(e, OSError) and e.filename is None:
            e.filename = str(path)  # a failed write or fsync names no file by itself
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes | memoryview) -> Path:
    with atomic_file(path) as f:
        f.write(data)
    return Path(path)


def atomic_write_many(files: dict[Path, bytes | memoryview]) -> None:
    """Write several files as one unit: every temporary file is complete and fsynced before
    the first rename, so a kill leaves the old set or the new one (the renames themselves
    follow each other within microseconds). Used for a checkpoint's weights + resume pair."""
    temps: list[tuple[Path, Path]] = []
    made: list[Path] = []
    try:
        for path, data in files.items():
            f, tmp = _open_temp(Path(path), made)
            temps.append((tmp, Path(path)))
            try:
                f.write(data)
            finally:
                _seal(f, tmp)
        while temps:
            tmp, path = temps[0]
            os.replace(tmp, path)
            temps.pop(0)
    except BaseException:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
        remove_empty(made)
        raise
    for folder in {Path(p).parent for p in files}:
        _fsync_dir(folder)


def file_in_the_way(path: str | Path) -> Path | None:
    """The file at `path`, or at a folder above it, that stops `path` from being a folder (or
    from being made one): a writer there would meet "File exists" or "Not a directory". A link
    to nothing counts (exists() follows it, mkdir does not); `in_the_way` says what it is."""
    path = Path(path)
    return next((p for p in (path, *path.parents)
                 if (p.exists() or p.is_symlink()) and not p.is_dir()), None)


def in_the_way(blocking: Path) -> str:
    """What `file_in_the_way` found, in words: "a file", "a pipe or a device", "a link to
    nothing (...)"."""
    if not blocking.exists():
        return missing(blocking)
    return "a file" if blocking.is_file() else "a pipe or a device"


def stale_temp_files(folder: str | Path) -> list[Path]:
    """Temporary files that `atomic_file` writers in `folder` never finished (killed mid-write)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(f".*{TEMP_SUFFIX}") if p.is_file())


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not every platform lets a directory be opened.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
