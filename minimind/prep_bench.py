"""The benchmark's data-preparation line: building the packed token cache the old way (one
process, the tokenizer's batch call, a Python loop over the tokens) and the new way
(`build_token_cache`: worker processes and the chunk cache), on the same file, in the same run.

The file is the configured data file when it is big enough to measure, otherwise the bundled
corpus repeated to `SYNTHETIC_BYTES` (repeating makes the chunk cache hit more often than in
real text of that size: the record says which file it measured). Both caches must be identical
byte for byte, or the record carries an error.
"""

from __future__ import annotations

import resource
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from minimind.atomic import atomic_file
from minimind.data import build_token_cache, resolve_data_path
from minimind.data.corpus import default_cache_dir
from minimind.data.jsonl import JsonlReader
from minimind.data.pretrain import special_ids, wrap_document
from minimind.data.stream import default_workers
from minimind.peak_memory import peak_rss, reset_peak_rss

PREPARE = "prepare"  # not training: building the packed token cache, old path vs new

SYNTHETIC_BYTES = 64 << 20
OLD_BATCH_LINES = 2000  # what the old path passed to one tokenizer call


def old_token_cache(path: Path, tokenizer, out) -> None:
    """The packed stream as it was built before the parallel pass: the baseline."""
    bos, eos, _ = special_ids(tokenizer)
    batch: list[str] = []

    def flush() -> None:
        encoded = tokenizer(batch, add_special_tokens=False,
                            return_attention_mask=False)["input_ids"]
        stream = [t for ids in encoded for t in wrap_document(ids, bos, eos)]
        out.write(np.asarray(stream, dtype="<u2").tobytes())
        batch.clear()

    for _, text in JsonlReader(path):
        batch.append(text)
        if len(batch) == OLD_BATCH_LINES:
            flush()
    if batch:
        flush()


def bench_file(data_path: str, log: Callable[[str], None], min_bytes: int) -> Path:
    path = resolve_data_path(data_path)
    if path.stat().st_size >= min_bytes:
        return path
    copies = -(-min_bytes // path.stat().st_size)
    out = default_cache_dir() / "bench" / f"{path.stem}-prepare-x{copies}.jsonl"
    if not out.exists():
        log(f"writing {out.name} ({copies} copies of {path.name})")
        text = path.read_bytes()
        text += b"" if text.endswith(b"\n") else b"\n"
        with atomic_file(out) as f:
            for _ in range(copies):
                f.write(text)
    return out


def measure_preparation(data_path: str, tokenizer, log: Callable[[str], None],
                        min_bytes: int = SYNTHETIC_BYTES) -> dict[str, Any]:
    path = bench_file(data_path, log, min_bytes)
    size = path.stat().st_size
    record: dict[str, Any] = {"variant": PREPARE, "data": str(path), "bytes": size,
                              "workers": default_workers()}
    with tempfile.TemporaryDirectory(prefix="minimind-bench-") as tmp:
        old_file = Path(tmp) / "old.u16"
        log(f"bench: {PREPARE}: old single-process path on {path.name} "
            f"({size / 1e6:,.0f} MB) ...")
        with open(old_file, "wb") as f:
            old = _timed(lambda: old_token_cache(path, tokenizer, f))
        log(f"bench: {PREPARE}: parallel path ...")
        new = _timed(lambda: build_token_cache(path, tokenizer, 1, Path(tmp) / "cache",
                                               data_digest="bench"))
        same = old_file.read_bytes() == new.pop("result").read_bytes()
        del old["result"]
    record.update({f"old_{k}": v for k, v in old.items()})
    record.update({f"new_{k}": v for k, v in new.items()})
    record["old_mb_per_sec"] = size / 1e6 / old["seconds"]
    record["new_mb_per_sec"] = size / 1e6 / new["seconds"]
    record["speedup_vs_baseline"] = old["seconds"] / new["seconds"]
    if not same:
        record["error"] = "the parallel path wrote different bytes than the old one"
    return record


def _timed(work: Callable[[], Any]) -> dict[str, Any]:
    """Wall and CPU seconds (this process and its finished children), this process's peak
    memory, and the peak of its child processes' memory added up (sampled)."""
    reset_peak_rss()
    own, children = time.process_time(), _children_cpu()
    sampler = _ChildMemory()
    start = time.perf_counter()
    try:
        result = work()
    finally:
        sampler.stop()
    seconds = time.perf_counter() - start
    return {"result": result, "seconds": seconds,
            "cpu_seconds": time.process_time() - own + _children_cpu() - children,
            "peak_rss_bytes": peak_rss(), "children_peak_rss_bytes": sampler.peak}


class _ChildMemory:
    """The largest total resident memory of this process's children, sampled every 0.1 s
    (the kernel's own maximum for children counts the parent's pages they were forked with)."""

    def __init__(self) -> None:
        self.peak = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._done.wait(0.1):
            total = 0
            for child in me.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.Error:  # it ended between listing and reading
                    pass
            self.peak = max(self.peak, total)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime

