"""One streaming pass over a JSONL file: parse and tokenize every line, in worker processes.

The file is cut into byte ranges of about `CHUNK_BYTES` that end at line ends; each worker
process reads its range itself, parses the lines as `JsonlReader` does (same checks, same
messages), tokenizes the texts with `FastEncoder` and sends back the packed token stream and/or
the statistics of the range. Results come back in file order, at most `2 * workers` ranges in
flight, so memory stays bounded (a few hundred MB) whatever the file size; the line numbers of
bad lines are made absolute here, from the line count of every range before them.

The workers are fresh interpreters, not forks: the app and the engine run this from a thread,
and a forked copy of a threaded process can deadlock. Leaving `stream_chunks` early for any
reason (a stop request raised by the progress callback, a bad line, Ctrl+C) kills them.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import tempfile
import traceback
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from .fast_encode import MAX_ROWS, FastEncoder
from .jsonl import MAX_FIRST_BAD, NO_LINES, DataError, ProgressFn, check_file, parse_line

CHUNK_BYTES = 4 << 20  # a range per task: ~1 s of work, small next to 2 GB of memory
# Chunk-cache entries of all workers together (at most ~270 bytes each, see fast_encode): with
# a worker's own ~100 MB and its ranges in flight, a pass stays well under 2 GB on 2 cores and
# grows by ~100 MB per extra core.
CACHE_ROWS = 1 << 21
WAIT_SECONDS = 0.25  # how often progress (and so a stop request) is checked while waiting
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")


@dataclass
class Job:
    path: str
    start: int
    end: int
    skip_bad_lines: bool
    tokens: bool
    """Send back the packed stream (bos + text + eos per document, uint16)."""
    stats: bool
    """Send back what `minimind.data.inspect` counts."""


@dataclass
class ChunkResult:
    start: int
    end: int
    lines: int
    documents: int = 0
    bad_lines: int = 0
    first_bad: list[tuple[int, str]] = field(default_factory=list)
    """(line number, reason): relative to the range in a worker, absolute once yielded."""
    tokens: bytes = b""
    # Statistics (Job.stats): documents' packed lengths, characters, text tokens, ...
    lengths: dict[int, int] = field(default_factory=dict)
    chars: int = 0
    text_tokens: int = 0
    empty: int = 0
    split_chars: dict[str, int] = field(default_factory=dict)
    """Characters the tokenizer has no single token for, and how often they occur."""


@dataclass
class _Worker:
    """What a worker keeps between its ranges: built from the setup tuple
    (tokenizer.json text, bos, eos, cache entries)."""

    encoder: FastEncoder
    bos: int
    eos: int
    split_char: dict[str, bool] = field(default_factory=dict)

    @classmethod
    def from_setup(cls, tokenizer_json: str, bos: int, eos: int, cache_rows: int) -> _Worker:
        return cls(FastEncoder(tokenizer_json, cache_rows), bos, eos)


def _run(job: Job, worker: _Worker) -> ChunkResult:
    with open(job.path, "rb") as f:
        f.seek(job.start)
        data = f.read(job.end - job.start)
    result = ChunkResult(job.start, job.end, 0)
    texts = []
    for line_no, raw in enumerate(io.BytesIO(data), start=1):  # splits at b"\n" only, as a file
        result.lines = line_no
        if raw.isspace():
            continue
        try:
            texts.append(parse_line(raw))
        except ValueError as e:
            result.bad_lines += 1
            if len(result.first_bad) < MAX_FIRST_BAD:
                result.first_bad.append((line_no, str(e)))
            if not job.skip_bad_lines:
                break  # the run stops at this line; nothing after it matters
    del data
    result.documents = len(texts)
    ids, counts = worker.encoder.encode(texts)
    stream, lengths = wrap_documents(ids, counts, worker.bos, worker.eos)
    if job.tokens:
        result.tokens = stream.astype("<u2").tobytes()  # the packed cache checked the vocab
    if job.stats:
        _count(result, worker, texts, counts, lengths)
    return result


def wrap_documents(ids: np.ndarray, counts: np.ndarray, bos: int, eos: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """`wrap_document` over many documents at once: ids of document i are
    ids[sum(counts[:i]):sum(counts[:i+1])]. Returns the stream (of ids' dtype) and each
    document's length in it."""
    ends = np.cumsum(counts)
    starts = ends - counts
    has_bos = np.zeros(len(counts), dtype=bool)
    has_eos = np.zeros(len(counts), dtype=bool)
    if len(ids):
        nonempty = counts > 0
        has_bos = nonempty & (ids[np.minimum(starts, len(ids) - 1)] == bos)
        has_eos = (counts - has_bos > 0) & (ids[np.maximum(ends - 1, 0)] == eos)
    keep = np.ones(len(ids), dtype=bool)
    keep[starts[has_bos]] = False
    keep[ends[has_eos] - 1] = False
    lengths = counts - has_bos - has_eos + 2
    out_ends = np.cumsum(lengths)
    out_starts = out_ends - lengths
    stream = np.empty(int(out_ends[-1]) if len(out_ends) else 0, dtype=ids.dtype)
    body = np.ones(len(stream), dtype=bool)
    body[out_starts] = False
    body[out_ends - 1] = False
    stream[out_starts] = bos
    stream[out_ends - 1] = eos
    stream[body] = ids[keep]
    return stream, lengths


def _count(result: ChunkResult, worker: _Worker, texts: list[str], counts: np.ndarray,
           lengths: np.ndarray) -> None:
    values, how_many = np.unique(lengths, return_counts=True)
    result.lengths = dict(zip(values.tolist(), how_many.tolist()))
    result.chars = sum(map(len, texts))
    result.text_tokens = int(counts.sum())
    result.empty = sum(1 for t in texts if not t or t.isspace())
    seen: Counter[str] = Counter()
    for text in texts:
        if not text.isascii():
            for run in _NON_ASCII.findall(text):
                seen.update(run)
    split = worker.split_char
    for char in seen.keys() - split.keys():
        split[char] = len(worker.encoder.backend.encode(char, add_special_tokens=False)) > 1
    result.split_chars = {c: n for c, n in seen.items() if split[c]}


def byte_ranges(path: Path, size: int, chunk_bytes: int) -> Iterator[tuple[int, int]]:
    """[start, end) ranges of about chunk_bytes that cover the file and end at line ends."""
    with open(path, "rb") as f:
        start = 0
        while start < size:
            end = min(start + chunk_bytes, size)
            if end < size:
                f.seek(end - 1)
                f.readline()  # to the end of the line that holds byte end - 1
                end = min(f.tell(), size)
            yield start, end
            start = end


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def stream_chunks(path: Path, tokenizer_json: str, bos: int, eos: int, *,
                  skip_bad_lines: bool = False, tokens: bool = True, stats: bool = False,
                  progress: ProgressFn | None = None, workers: int | None = None,
                  chunk_bytes: int | None = None) -> Iterator[ChunkResult]:
    """The results of every byte range of `path`, in file order, with absolute line numbers.

    Raises DataError at the first bad line unless `skip_bad_lines`, and when the file holds no
    good line at all (the messages of `JsonlReader`). `progress(done_bytes, total_bytes)` is
    called after every range and, while workers run, at least every WAIT_SECONDS; whatever it
    raises ends the pass (and the workers). A file of one range is read in this process.
    """
    total = check_file(path)
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    ranges = byte_ranges(path, total, chunk_bytes)
    jobs = (Job(str(path), start, end, skip_bad_lines, tokens, stats) for start, end in ranges)
    workers = min(workers or default_workers(), -(-total // chunk_bytes))
    good, bad, first_bad, line_base = 0, 0, [], 0
    setup = (tokenizer_json, bos, eos, min(MAX_ROWS, CACHE_ROWS // (2 * max(workers, 1))))
    results = _inline(jobs, setup) if workers <= 1 else \
        _in_workers(jobs, setup, workers, total, progress)
    for result in results:
        result.first_bad = [(line_base + n, why) for n, why in result.first_bad]
        if result.first_bad and not skip_bad_lines:
            line_no, reason = result.first_bad[0]
            raise DataError(path, line_no, reason)
        line_base += result.lines
        good += result.documents
        bad += result.bad_lines
        first_bad += result.first_bad[:MAX_FIRST_BAD - len(first_bad)]
        if progress is not None:
            progress(result.end, total)
        yield result
    if good == 0:
        if bad:
            line_no, reason = first_bad[0]
            raise DataError(path, None, f"no valid lines ({bad} bad; first at line {line_no}: "
                                        f"{reason})")
        raise DataError(path, None, NO_LINES)


def _inline(jobs: Iterator[Job], setup: tuple) -> Iterator[ChunkResult]:
    """A small file: starting processes would cost more than it saves."""
    worker = _Worker.from_setup(*setup)
    for job in jobs:
        yield _run(job, worker)


def _in_workers(jobs: Iterator[Job], setup: tuple, workers: int, total: int,
                progress: ProgressFn | None) -> Iterator[ChunkResult]:
    """Range k goes to worker k % n, so reading the workers in turn gives file order."""
    processes = [_WorkerProcess(setup) for _ in range(workers)]
    try:
        in_flight: deque[_WorkerProcess] = deque()
        done = 0
        for k, job in enumerate(jobs):
            worker = processes[k % workers]
            worker.send(job)
            in_flight.append(worker)
            if len(in_flight) == 2 * workers:  # bounded: a worker blocks on an unread result
                result = in_flight.popleft().receive(lambda: progress and progress(done, total))
                done = result.end
                yield result
        while in_flight:
            result = in_flight.popleft().receive(lambda: progress and progress(done, total))
            done = result.end
            yield result
    finally:
        for process in processes:  # also when the consumer stops early: none outlives the pass
            process.stop()


@dataclass
class _Failure:
    traceback: str


class _WorkerProcess:
    """A `python -c` child that runs jobs from a pipe and pickles results back.

    Not multiprocessing's Pool: that re-imports the parent's main script in every child (which
    fails or recurses for a script without a `__main__` guard), and waits forever for the
    result of a worker the kernel killed (out of memory)."""

    def __init__(self, setup: tuple):
        jobs_read, jobs_write = os.pipe()
        results_read, results_write = os.pipe()
        self.errors = tempfile.TemporaryFile()
        root = str(Path(__file__).resolve().parents[2])  # where `minimind` is importable from
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (root, os.environ.get("PYTHONPATH")) if p),
               # One process per core already: the tokenizer's own threads would compete.
               "TOKENIZERS_PARALLELISM": "false"}
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", "from minimind.data.stream import serve; serve()"],
                stdin=jobs_read, stdout=results_write, stderr=self.errors, env=env)
        finally:
            os.close(jobs_read)
            os.close(results_write)
        self.jobs = Connection(jobs_write, readable=False)
        self.results = Connection(results_read, writable=False)
        self.send(setup)

    def send(self, message: object) -> None:
        try:
            self.jobs.send(message)
        except BrokenPipeError:  # it exited: it could not even start
            self.process.wait()
            raise RuntimeError(f"a tokenizer worker process exited (exit code "
                               f"{self.process.returncode}){self._stderr_tail()}") from None

    def receive(self, waiting: Callable[[], object]) -> ChunkResult:
        """The next result; `waiting()` runs every WAIT_SECONDS until it comes."""
        while not self.results.poll(WAIT_SECONDS):
            waiting()
        try:
            result = self.results.recv()
        except EOFError:
            self.process.wait()
            raise RuntimeError(f"a tokenizer worker process died (exit code "
                               f"{self.process.returncode}){self._stderr_tail()}") from None
        if isinstance(result, _Failure):
            raise RuntimeError(f"a tokenizer worker process failed:\n{result.traceback}")
        return result

    def _stderr_tail(self) -> str:
        self.errors.seek(0)
        tail = self.errors.read()[-2000:].decode(errors="replace").strip()
        return f": {tail}" if tail else ""

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        self.jobs.close()
        self.results.close()
        self.errors.close()


def serve() -> None:
    """A worker process's loop: the setup, then jobs from stdin until it closes."""
    jobs = Connection(os.dup(0), writable=False)
    results = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)  # a stray print must not corrupt the result stream
    # Ctrl+C reaches the whole process group, as does torchrun's SIGTERM; the parent alone
    # decides what happens (it kills this process, or closes its stdin).
    for stop in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, signal.SIG_IGN)
    worker = _Worker.from_setup(*jobs.recv())
    while True:
        try:
            job = jobs.recv()
        except EOFError:
            return
        try:
            results.send(_run(job, worker))
        except Exception:
            results.send(_Failure(traceback.format_exc()))
