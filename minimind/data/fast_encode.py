r"""Exact token ids several times faster than the tokenizer's own encode, by caching chunks.

A byte-level BPE tokenizer like MiniMind's (and GPT-2's) first splits text with the regex

    's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+

and then encodes every piece on its own. A piece that holds a non-whitespace character never
reaches into the whitespace after it (only a *leading* space is ever joined to a word), so each
place where whitespace follows non-whitespace is a piece boundary. The text between two such
places (a "chunk": a whitespace run and the word after it, like " thee," or "\nHERMIA:")
therefore encodes to the same ids on its own as inside its document. Text repeats its chunks
(word frequencies follow Zipf's law), so their ids are kept in a dict and only new chunks go
to the tokenizer. What this saves is mostly the tokenizer's pre-tokenizer: splitting text into
pieces costs it far more than BPE does (~2-3 MB/s per core, against ~20 MB/s here).

The argument holds for that exact pre-tokenizer and no normalizer (`chunkable`); any other
tokenizer encodes whole texts. "Whitespace" is `\s` of the Oniguruma engine the tokenizers
library runs the regex with: Unicode's White_Space property (checked over every code point).
Added tokens are no obstacle (the tokenizer finds them inside a chunk) unless they contain
whitespace or swallow the whitespace after them (rstrip).
"""

from __future__ import annotations

import json
import re
from array import array
from collections.abc import Callable
from itertools import chain, islice

import numpy as np
from tokenizers import Tokenizer

WHITESPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_CHUNK = re.compile(f"[{WHITESPACE}]*[^{WHITESPACE}]+|[{WHITESPACE}]+")
# Where a space follows whitespace, a split at spaces would cut inside a whitespace run.
_SPACE_AFTER_WHITESPACE = re.compile(f"[{WHITESPACE}] ")
_HAS_WHITESPACE = re.compile(f"[{WHITESPACE}]")
_BOUNDARY = re.compile(f"(?<=[^{WHITESPACE}])[{WHITESPACE}]")  # whitespace after a word

# A cache starts over when it holds max_rows entries (~170 bytes each), or max_rows * 16
# characters or max_rows * 8 ids: long entries (a Chinese line has no spaces) rarely repeat.
MAX_ROWS = 1 << 19
CHARS_PER_ROW = 16
IDS_PER_ROW = 8
ENCODE_CHARS = 1 << 18  # characters per tokenizer call

EncodeFn = Callable[[list[str]], tuple[np.ndarray, np.ndarray]]  # -> ids, ids per text


def chunkable(spec: dict) -> bool:
    """Whether a tokenizer (its tokenizer.json as a dict) encodes chunks independently."""
    pre = spec.get("pre_tokenizer") or {}
    model = spec.get("model") or {}
    # The post-processor plays no part: ids are always asked for without special tokens.
    return (spec.get("normalizer") is None
            and pre.get("type") == "ByteLevel" and pre.get("use_regex", True)
            and not pre.get("add_prefix_space", False)
            and model.get("type") == "BPE" and model.get("dropout") is None
            and all(not t.get("rstrip") and not t.get("single_word")
                    and not _HAS_WHITESPACE.search(t["content"])
                    for t in spec.get("added_tokens", [])))


class PrefixCut:
    """`cut(text)`: a prefix of `text` whose ids begin with the whole text's first `tokens` ids,
    exactly, for a tokenizer whose ids may be truncated to that many. It ends at a chunk
    boundary (see above), far enough on that even the vocabulary's longest tokens (each covers
    at most its length in bytes, so as many characters) give `tokens` ids before it. A 50 MB
    line was otherwise encoded whole (~45 s) for its first 512 ids. A tokenizer that is not
    `chunkable` gets the text whole."""

    def __init__(self, tokenizer_json: str, tokens: int):
        spec = json.loads(tokenizer_json)
        longest = max([*map(len, (spec.get("model") or {}).get("vocab") or {"": 0}),
                       *(len(t["content"]) for t in spec.get("added_tokens", []))])
        self.enough = tokens * longest if chunkable(spec) else None

    def __call__(self, text: str) -> str:
        if self.enough is None or len(text) <= self.enough:
            return text
        found = _BOUNDARY.search(text, self.enough)
        return text[:found.start()] if found else text


def pieces(text: str, size: int = ENCODE_CHARS) -> list[str]:
    """`text` in pieces of about `size` characters or more, each ending at a chunk boundary
    (see above): for a `chunkable` tokenizer their ids, joined, are the whole text's, and
    encoding them one by one bounds the tokenizer's memory (~100 bytes per token at once)."""
    cuts, start = [], 0
    while len(text) - start > size and (found := _BOUNDARY.search(text, start + size)):
        cuts.append(text[start:found.start()])
        start = found.start()
    return [*cuts, text[start:]]


def backend_json(tokenizer) -> str:
    """The tokenizer.json text of a transformers tokenizer (or a `tokenizers.Tokenizer`)."""
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    if not isinstance(backend, Tokenizer):
        raise TypeError(f"{type(tokenizer).__name__} is not a fast (Rust) tokenizer")
    return backend.to_str()


class _Rows(dict):
    """key -> row of the cache; a new key gets the next row and waits to be encoded."""

    def __init__(self, cache: _Cache, prefix: str):
        super().__init__()
        self.cache, self.prefix = cache, prefix

    def __missing__(self, key: str) -> int:
        row = self[key] = self.cache.queue(self.prefix + key)
        return row


class _Cache:
    """The ids of independently encodable texts, as one flat array with row offsets (CSR).

    `plain[text]` is the row of a text, `spaced[text]` the row of " " + text (the keys that
    `str.split(" ")` leaves); `encode_new` encodes the texts that were not there yet."""

    def __init__(self, encode_new: EncodeFn, max_rows: int):
        self.encode_new = encode_new
        self.max_rows = max_rows
        self.clear()

    def clear(self) -> None:
        self.plain = _Rows(self, "")
        self.spaced = _Rows(self, " ")
        self.pending: list[str] = []
        self.ids = np.empty(1 << 16, dtype=np.uint32)
        self.starts = np.zeros(1 << 12, dtype=np.int64)  # row r is ids[starts[r]:starts[r+1]]
        self.rows = 0
        self.chars = 0

    def queue(self, text: str) -> int:
        self.pending.append(text)
        self.chars += len(text)
        return self.rows + len(self.pending) - 1

    def full(self) -> bool:
        return (self.rows >= self.max_rows or self.chars >= self.max_rows * CHARS_PER_ROW
                or self.starts[self.rows] >= self.max_rows * IDS_PER_ROW)

    def gather(self, rows: array, rows_per_text: array) -> tuple[np.ndarray, np.ndarray]:
        """The ids of every text, one after another, and how many each has; text i is made of
        the next rows_per_text[i] rows."""
        if self.pending:
            new_ids, counts = self.encode_new(self.pending)
            first, n = self.rows, len(self.pending)
            end = int(self.starts[first]) + len(new_ids)
            self.ids = _grown(self.ids, end)
            self.starts = _grown(self.starts, first + n + 1)
            self.starts[first + 1:first + n + 1] = self.starts[first] + np.cumsum(counts)
            self.ids[self.starts[first]:end] = new_ids
            self.rows += n
            self.pending = []
        rows = np.frombuffer(rows, dtype=np.int64)
        starts = self.starts[rows]
        counts = self.starts[rows + 1] - starts
        ends = np.cumsum(counts)
        # Output position k comes from ids[starts[r] + (k - first output position of r)].
        index = np.arange(int(ends[-1]) if len(ends) else 0) + np.repeat(starts - ends + counts,
                                                                          counts)
        bounds = np.concatenate([[0], ends])
        text_ends = np.cumsum(np.frombuffer(rows_per_text, dtype=np.int64))
        text_starts = text_ends - np.frombuffer(rows_per_text, dtype=np.int64)
        return self.ids[index], bounds[text_ends] - bounds[text_starts]


def _spaces_split(text: str) -> bool:
    """Whether every space in `text` follows non-whitespace (or starts it), so that each is a
    chunk boundary. On ASCII text, substring searches are a little faster than the regex."""
    if text.isascii():
        return not ("  " in text or "\n " in text or "\t " in text or "\r " in text
                    or "\x0b " in text or "\x0c " in text)
    return _SPACE_AFTER_WHITESPACE.search(text) is None


def _grown(a: np.ndarray, size: int) -> np.ndarray:
    if size <= len(a):
        return a
    bigger = np.empty(max(size, 2 * len(a)), dtype=a.dtype)
    bigger[:len(a)] = a
    return bigger


class FastEncoder:
    """`encode(texts)` returns the ids a tokenizer gives each text (no special tokens added),
    concatenated, and the number of ids of each text.

    Two caches: texts cut at spaces (`str.split`, the fastest cut there is), and, for those
    pieces the first has not seen, the finer chunks of the module docstring (" hour\nDraws,"
    is new far more often than " hour" and "\nDraws,"); only new chunks reach the tokenizer,
    which costs ~10 us for each."""

    def __init__(self, tokenizer_json: str, max_rows: int = MAX_ROWS):
        self.backend = Tokenizer.from_str(tokenizer_json)
        self.backend.no_truncation()
        self.backend.no_padding()
        self.chunked = chunkable(json.loads(tokenizer_json))
        self._chunks = _Cache(self._encode_whole, max_rows)
        self._parts = _Cache(self._encode_chunks, max_rows)

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if not self.chunked:
            return self._encode_whole(texts)
        for cache in (self._parts, self._chunks):
            if cache.full():  # between batches, so no row of this batch is lost
                cache.clear()
        rows, rows_per_text = array("q"), array("q")
        plain, spaced = self._parts.plain, self._parts.spaced
        for text in texts:
            if _spaces_split(text):
                # Every space follows non-whitespace (or starts the text), so each one is a
                # chunk boundary.
                parts = text.split(" ")
                rows.append(plain[parts[0]])
                rows.extend(map(spaced.__getitem__, islice(parts, 1, None)))
                rows_per_text.append(len(parts))
            else:
                chunks = _CHUNK.findall(text)
                rows.extend(map(plain.__getitem__, chunks))
                rows_per_text.append(len(chunks))
        return self._parts.gather(rows, rows_per_text)

    def _encode_chunks(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        rows, rows_per_text = array("q"), array("q")
        plain = self._chunks.plain
        for text in texts:
            chunks = _CHUNK.findall(text)
            rows.extend(map(plain.__getitem__, chunks))
            rows_per_text.append(len(chunks))
        return self._chunks.gather(rows, rows_per_text)

    def _encode_whole(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The tokenizer itself, a few hundred kB of text per call: its Encoding objects
        (ids, offsets, token strings) take ~100 bytes per token until they are converted."""
        parts, counts = [], []
        start = 0
        while start < len(texts):
            end, chars = start, 0
            while end < len(texts) and (end == start or chars + len(texts[end]) <= ENCODE_CHARS):
                chars += len(texts[end])
                end += 1
            encoded = [e.ids for e in self.backend.encode_batch_fast(texts[start:end],
                                                                     add_special_tokens=False)]
            counts.append(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)))
            parts.append(np.fromiter(chain.from_iterable(encoded), dtype=np.uint32,
                                     count=int(counts[-1].sum())))
            start = end
        if not parts:
            return np.zeros(0, dtype=np.uint32), np.zeros(0, dtype=np.int64)
        return np.concatenate(parts), np.concatenate(counts)
