"""What a data file holds, as the tokenizer sees it: documents, tokens, lengths, waste, problems.

`inspect_data` makes one pass over the file with the same parallel tokenizing pass that builds
the packed cache (`stream.stream_chunks`), so a 10 GB file costs minutes and bounded memory.
Bad lines are counted and skipped, never fatal: finding them is part of the point. The figures
that depend on max_seq_len (padding, truncation, samples) are computed afterwards from the
exact histogram of document lengths, so one inspection serves every max_seq_len. It is cached as
JSON beside the token caches, keyed by the file's bytes and the tokenizer, like them.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from minimind.atomic import atomic_write_bytes

from .corpus import default_cache_dir, file_digest, resolve_data_path
from .fast_encode import backend_json
from .jsonl import MAX_FIRST_BAD, ProgressFn, check_file, named_file
from .packed import tokenizer_digest
from .pretrain import special_ids
from .stream import ChunkResult, stream_chunks

FORMAT = "v1"  # bump when the figures change meaning, so old inspections are not reused
TOP_CHARS = 20  # characters without a token of their own, most frequent first
# A tokenizer made for the text spends well under one token per character (English ~0.25,
# Chinese with a Chinese tokenizer ~0.6); byte-spelled characters are the tell-tale sign.
MAX_TOKENS_PER_CHAR = 1.0
MAX_SPLIT_SHARE = 0.05


@dataclass
class DataInspection:
    path: str
    size_bytes: int
    data_digest: str
    tokenizer_digest: str
    documents: int
    characters: int
    text_tokens: int
    """Tokens of the texts alone, without the bos/eos every sample adds."""
    tokens: int
    """Tokens of the packed stream: bos + text + eos per document (the token cache's size)."""
    empty_documents: int
    bad_lines: int
    first_bad: list[tuple[int, str]]
    lengths: dict[int, int]
    """Packed length (bos + text + eos) -> how many documents have it."""
    split_chars: list[tuple[str, int]]
    """The most frequent characters the tokenizer has no single token for, with counts."""
    split_char_total: int
    """How often such characters occur in all."""
    cached: bool = field(default=False, compare=False)
    """Read from the cache rather than computed now (not saved)."""

    @property
    def tokens_per_char(self) -> float:
        return self.text_tokens / max(self.characters, 1)

    def fit(self, max_seq_len: int) -> Fit:
        return Fit.of(self.lengths, self.documents, self.tokens, max_seq_len)

    def tokenizer_mismatch(self) -> str | None:
        """Words for a tokenizer that does not suit the text, or None."""
        split_share = self.split_char_total / max(self.characters, 1)
        if self.tokens_per_char <= MAX_TOKENS_PER_CHAR and split_share <= MAX_SPLIT_SHARE:
            return None
        chars = " ".join(c for c, _ in self.split_chars[:8])
        because = (f"; {split_share:.0%} of the characters ({chars} ...) have no token of their "
                   f"own and are spelled byte by byte" if self.split_chars else "")
        return (f"The tokenizer does not suit this text: {self.tokens_per_char:.2f} tokens per "
                f"character{because}. Samples then hold less text and every character costs "
                f"several steps of compute. Train a tokenizer on this data (minimind-tui "
                f"tokenizer train --data FILE --out DIR) and set train.tokenizer_path to that "
                f"folder, or use one made for this language (for Chinese: upstream MiniMind's "
                f"model/ folder).")

    def to_json(self) -> str:
        data = asdict(self)
        del data["cached"]
        return json.dumps(data, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> DataInspection:
        data = json.loads(text)
        data["lengths"] = {int(k): v for k, v in data["lengths"].items()}
        data["first_bad"] = [tuple(x) for x in data["first_bad"]]
        data["split_chars"] = [tuple(x) for x in data["split_chars"]]
        return cls(**data, cached=True)


@dataclass(frozen=True)
class Fit:
    """How the documents fit samples of max_seq_len tokens, padded (one document per sample,
    cut at max_seq_len) and packed (the stream cut into windows)."""

    max_seq_len: int
    padded_samples: int
    padding_share: float
    """Of the positions padded samples compute, the share that is padding."""
    truncated_documents: int
    truncated_tokens: int
    """Tokens the padded path drops from documents longer than max_seq_len."""
    packed_samples: int

    @classmethod
    def of(cls, lengths: dict[int, int], documents: int, tokens: int, max_seq_len: int) -> Fit:
        T = max_seq_len
        padding = sum(n * (T - length) for length, n in lengths.items() if length < T)
        truncated = sum(n for length, n in lengths.items() if length > T)
        lost = sum(n * (length - T) for length, n in lengths.items() if length > T)
        return cls(T, documents, padding / max(documents * T, 1), truncated, lost, tokens // T)

    @property
    def packing_saves(self) -> float:
        """The share of compute per epoch packing saves over padding (negative when it costs
        more: long documents fill several windows instead of being cut)."""
        return 1 - self.packed_samples / max(self.padded_samples, 1)


def cache_path(path: Path, data_digest: str, tokenizer_key: str, cache_dir: Path | None = None
               ) -> Path:
    root = Path(cache_dir) if cache_dir else default_cache_dir() / "inspect"
    return root / f"{path.stem}-{data_digest}-{tokenizer_key}-{FORMAT}.json"


def inspections_of(path: Path, data_digest: str, cache_dir: Path | None = None) -> list[Path]:
    """Inspections of these data bytes, whatever the tokenizer."""
    root = Path(cache_dir) if cache_dir else default_cache_dir() / "inspect"
    return sorted(root.glob(f"{path.stem}-{data_digest}-*-{FORMAT}.json"))


def cached_inspection(path: Path, data_digest: str, tokenizer_key: str,
                      cache_dir: Path | None = None) -> DataInspection | None:
    try:
        found = DataInspection.from_json(cache_path(path, data_digest, tokenizer_key, cache_dir)
                                         .read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError, KeyError):
        return None
    # These bytes may have been inspected elsewhere; the path is the one the user named.
    return replace(found, path=str(named_file(path)))


def inspect_data(data_path: str | Path, tokenizer, *, progress: ProgressFn | None = None,
                 phase: Callable[[str], None] | None = None,
                 partial: Callable[[DataInspection], None] | None = None,
                 cache_dir: Path | None = None, use_cache: bool = True,
                 workers: int | None = None) -> DataInspection:
    """Inspect a JSONL file (or `builtin:` corpus), from the cache when this file's bytes were
    inspected with this tokenizer before. `phase("hashing" | "tokenizing")` says what the
    progress that follows counts; `partial(figures so far)` follows the tokenizing pass, so a
    viewer can show a mismatched tokenizer long before the end of a big file.
    Raises DataError for a missing, empty or unreadable file."""
    path = resolve_data_path(data_path)
    size = check_file(path)
    if phase:
        phase("hashing")
    digest = file_digest(path, progress)
    key = tokenizer_digest(tokenizer)
    if use_cache and (found := cached_inspection(path, digest, key, cache_dir)):
        return found
    if phase:
        phase("tokenizing")
    bos, eos, _ = special_ids(tokenizer)
    totals = _Totals(DataInspection(str(named_file(path)), size, digest, key, 0, 0, 0, 0, 0, 0,
                                    [], {}, [], 0))
    for chunk in stream_chunks(path, backend_json(tokenizer), bos, eos, skip_bad_lines=True,
                               tokens=False, stats=True, progress=progress, workers=workers):
        totals.add(chunk)
        if partial:
            partial(totals.result())
    result = totals.result()
    atomic_write_bytes(cache_path(path, digest, key, cache_dir), result.to_json().encode())
    return result


class _Totals:
    """The figures of the ranges so far."""

    def __init__(self, empty: DataInspection):
        self.empty = empty
        self.counts: Counter[str] = Counter()
        self.lengths: Counter[int] = Counter()
        self.split: Counter[str] = Counter()
        self.first_bad: list[tuple[int, str]] = []

    def add(self, chunk: ChunkResult) -> None:
        self.lengths.update(chunk.lengths)
        self.split.update(chunk.split_chars)
        self.counts.update(documents=chunk.documents, characters=chunk.chars,
                           text_tokens=chunk.text_tokens, empty_documents=chunk.empty,
                           bad_lines=chunk.bad_lines)
        self.first_bad += chunk.first_bad[:MAX_FIRST_BAD - len(self.first_bad)]

    def result(self) -> DataInspection:
        return replace(self.empty, **self.counts, first_bad=list(self.first_bad),
                       tokens=sum(k * n for k, n in self.lengths.items()),
                       lengths=dict(sorted(self.lengths.items())),
                       split_chars=self.split.most_common(TOP_CHARS),
                       split_char_total=sum(self.split.values()))


def length_histogram(lengths: dict[int, int], bins: int = 20) -> list[tuple[int, int, int]]:
    """(low, high, documents) for `bins` equal ranges of packed length up to the 99th
    percentile; the last range also holds every longer document, so outliers do not squash
    the rest of the chart into one bar."""
    if not lengths:
        return []
    total = sum(lengths.values())
    seen, top = 0, max(lengths)
    for length, n in sorted(lengths.items()):
        seen += n
        if seen >= 0.99 * total:
            top = length
            break
    low = min(lengths)
    width = max(math.ceil((top - low + 1) / bins), 1)
    counts = [0] * bins
    for length, n in lengths.items():
        counts[min((length - low) // width, bins - 1)] += n
    edges = [(low + i * width, low + (i + 1) * width - 1) for i in range(bins)]
    edges[-1] = (edges[-1][0], max(top, max(lengths)))
    used = max(i for i, c in enumerate(counts) if c) + 1
    return [(lo, hi, c) for (lo, hi), c in zip(edges[:used], counts[:used])]

