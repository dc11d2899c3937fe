"""Packed pretraining: every document tokenized once into a flat token file, cut into
fixed windows of max_seq_len with no padding, so no compute is spent on pad positions.

The token stream is the concatenation of `wrap_document(tokens)` over the documents, i.e.
the same bos + text + eos unit that PretrainDataset uses (minus padding and truncation).
It is cached on disk as raw little-endian uint16 (vocab <= 65535), named by a hash of the
data file's bytes, of the tokenizer and by whether bad lines were skipped (`token_cache_name`),
so a rerun or a resumed run skips tokenization and a strict run never reuses a lenient cache.
The stream does not depend on max_seq_len, so the cache is shared across sequence lengths.
"""

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from minimind.atomic import atomic_file, atomic_write_bytes

from .corpus import file_digest, resolve_data_path
from .fast_encode import backend_json
from .jsonl import MAX_FIRST_BAD, DataError, ProgressFn, check_file
from .pretrain import special_ids
from .stream import stream_chunks

CACHE_FORMAT = "v1"  # bump when the stream layout changes, so old caches are not reused
MAX_VOCAB = 65535  # ids are stored as uint16; half the disk and page cache of int32


def tokenizer_digest(tokenizer) -> str:
    """A hash that changes whenever the tokenizer would produce different ids."""
    h = hashlib.blake2b(digest_size=8)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        # transformers rewrites these per call (e.g. truncation=True in PretrainDataset);
        # they do not change the ids of a plain encode, so they must not change the key.
        spec.pop("truncation", None)
        spec.pop("padding", None)
        h.update(json.dumps(spec, sort_keys=True).encode())
    else:  # a slow tokenizer: its vocab is the best fingerprint available
        h.update(repr(sorted(tokenizer.get_vocab().items())).encode())
    h.update(repr(special_ids(tokenizer)).encode())
    return h.hexdigest()


def token_cache_name(data: Path, data_digest: str, tokenizer_key: str,
                     skip_bad_lines: bool) -> str:
    """The one rule for a token cache's file name (`cached_token_files` globs it)."""
    lenient = "-skipbad" if skip_bad_lines else ""
    return f"{data.stem}-{data_digest}-{tokenizer_key}{lenient}-{CACHE_FORMAT}.u16"


def cached_token_files(cache_dir: Path, data: Path, data_digest: str, tokenizer_key: str = ""
                       ) -> list[Path]:
    """Token caches of these data bytes by the tokenizer of `tokenizer_key` (`tokenizer_digest`;
    "" for any): another one's counts other tokens (2.5 times as many for a 300-token
    vocabulary)."""
    return sorted(Path(cache_dir).glob(
        f"{data.stem}-{data_digest}-{tokenizer_key}*-{CACHE_FORMAT}.u16"))


def _write_tokens(path: Path, tokenizer, out, skip_bad_lines: bool,
                  progress: ProgressFn | None) -> dict:
    """Tokenize every good line of `path` into `out` (in worker processes, in file order);
    returns the report: documents, bad lines skipped (first few, with line numbers)."""
    bos, eos, _ = special_ids(tokenizer)
    report = {"documents": 0, "bad_lines": 0, "first_bad": [], "tokens": 0}
    for chunk in stream_chunks(path, backend_json(tokenizer), bos, eos,
                               skip_bad_lines=skip_bad_lines, progress=progress):
        out.write(chunk.tokens)
        report["tokens"] += len(chunk.tokens) // 2
        report["documents"] += chunk.documents
        report["bad_lines"] += chunk.bad_lines
        report["first_bad"] += chunk.first_bad[:MAX_FIRST_BAD - len(report["first_bad"])]
    return report


def cache_report(token_file: Path) -> dict | None:
    """What building a token cache found: documents, bad lines skipped (first few, with line
    numbers). Kept beside the cache, so a cache hit can still report the bad lines."""
    try:
        return json.loads(token_file.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def build_token_cache(
    data_path: str | Path,
    tokenizer,
    max_seq_len: int,
    cache_dir: str | Path,
    skip_bad_lines: bool = False,
    progress: ProgressFn | None = None,
    data_digest: str | None = None,
    log: Callable[[str, str], None] | None = None,
) -> Path:
    """Tokenize a JSONL file into a cached flat uint16 token file and return its path.

    A second call with the same data bytes and tokenizer returns the cached file at once
    (after hashing the data, unless the caller passes `data_digest`, the data's `file_digest`).
    `progress(done_bytes, total_bytes)` follows the tokenizing pass.
    Raises DataError for bad data, or when the data holds fewer than max_seq_len tokens.
    A cached file whose length is not the token count its record holds (cut short, or
    written over) is built again, and `log(text, "warning")` says so.
    """
    vocab = len(tokenizer)
    if vocab > MAX_VOCAB:
        raise ValueError(f"packed token cache stores uint16 ids; tokenizer has {vocab} tokens (max {MAX_VOCAB})")
    path = resolve_data_path(data_path)
    check_file(path)
    name = token_cache_name(path, data_digest or file_digest(path), tokenizer_digest(tokenizer),
                            skip_bad_lines)
    out = Path(cache_dir).expanduser() / name
    # None: no record, or one from before the count was kept (trusted, as it always was).
    counted = (cache_report(out) or {}).get("tokens") if out.exists() else None
    if counted is not None and (size := out.stat().st_size) != 2 * counted:
        if log:
            log(f"{out}: the token cache holds {size:,} bytes where its record counts "
                f"{counted:,} tokens ({2 * counted:,} bytes): tokenizing again", "warning")
        out.unlink()
    if not out.exists():
        with atomic_file(out) as f:  # readers only ever see a complete file under this name
            report = _write_tokens(path, tokenizer, f, skip_bad_lines, progress)
        atomic_write_bytes(out.with_suffix(".json"), json.dumps(report).encode())
    n_tokens = out.stat().st_size // 2
    if n_tokens < max_seq_len:
        raise DataError(path, None, f"only {n_tokens} tokens, fewer than max_seq_len={max_seq_len}: not one full sample")
    return out


class PackedDataset(Dataset):
    """Sample i is tokens[i*T:(i+1)*T] of a token file; labels == input_ids (nothing masked).

    Every token appears in exactly one sample per epoch; the last n_tokens % T are dropped.
    """

    def __init__(self, token_file: str | Path, max_seq_len: int):
        self.path = Path(token_file).expanduser()
        if not self.path.is_file():
            raise DataError(self.path, None, "no such token file")
        self.max_seq_len = max_seq_len
        self.n_tokens = self.path.stat().st_size // 2
        if self.n_tokens < max_seq_len:
            raise DataError(self.path, None, f"only {self.n_tokens} tokens, fewer than max_seq_len={max_seq_len}")
        self._tokens = None
        self._pid = None

    def __len__(self) -> int:
        return self.n_tokens // self.max_seq_len

    def __getstate__(self) -> dict:
        # A memmap pickles as a full copy of the data; workers map the file themselves.
        return {**self.__dict__, "_tokens": None, "_pid": None}

    def _memmap(self) -> np.memmap:
        if self._tokens is None or self._pid != os.getpid():
            self._tokens = np.memmap(self.path, dtype="<u2", mode="r", shape=(self.n_tokens,))
            self._pid = os.getpid()
        return self._tokens

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"sample {i} out of range for {n} samples")
        i %= n
        T = self.max_seq_len
        window = self._memmap()[i * T : (i + 1) * T]
        input_ids = torch.from_numpy(window.astype(np.int64))
        return input_ids, input_ids.clone()

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A whole batch, which DataLoader asks for when this method exists: one row gather
        from the memmap and one int64 conversion. Per-sample slicing and copying took ~1 ms
        per 128 x 512 batch (3% of a step at 2M tokens/s, in the loader's process); this
        takes a quarter of that."""
        n, T = len(self), self.max_seq_len
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and not (-n <= idx.min() and idx.max() < n):
            raise IndexError(f"sample indices out of range for {n} samples")
        rows = self._memmap()[: n * T].reshape(n, T)[idx % n]
        samples = torch.from_numpy(rows.astype(np.int64)).unbind()
        # The collate step stacks inputs and labels into two separate batch tensors, so the
        # rows can be shared here without the per-sample clone.
        return list(zip(samples, samples))
