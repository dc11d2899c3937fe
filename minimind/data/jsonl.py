"""Reading `{"text": ...}` JSONL files that may be far larger than memory.

Users point the trainer at 1-10 GB files, so nothing here keeps the texts: `JsonlReader`
streams the good lines once (validating each), and `JsonlIndex` remembers only the byte
offset of every good line (8 bytes per line) so a Dataset can fetch line i with one seek.
Every problem is reported as a `DataError` that names the file and the 1-based line number.
"""

import hashlib
import json
import os
import sys
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from minimind.safe_read import missing

ProgressFn = Callable[[int, int], None]  # (done_bytes, total_bytes)

PROGRESS_EVERY = 8 << 20  # bytes between progress callbacks: often enough for a UI bar, cheap
MAX_FIRST_BAD = 5  # how many bad lines skip_bad_lines remembers for its report
NO_LINES = "file has no lines with text"  # blank lines alone


# A decompressed copy in the cache -> the file the user named (`note_copy`): its lines are the
# same, so a problem at one of them is reported against the file the user can open and fix.
_COPIES: dict[Path, Path] = {}


def note_copy(copy: Path, original: str | Path) -> None:
    _COPIES[copy] = Path(original)


def named_file(path: str | Path) -> Path:
    """The file the user named for `path`: itself, or the original of a decompressed copy."""
    return _COPIES.get(Path(path), Path(path))


class DataError(ValueError):
    """A problem with a data file, printed like a compiler error: `path:line: message`."""

    def __init__(self, path: str | Path, line: int | None, message: str):
        self.path = named_file(path)
        self.line = line
        self.message = message
        super().__init__(str(self))

    def __reduce__(self) -> tuple:  # (to pass between ranks) pickled as it was made
        return type(self), (self.path, self.line, self.message)

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else f"{self.path}"
        return f"{where}: {self.message}"


def type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


# json's terse messages, in words a person fixing the file by hand can act on.
_JSON_WORDS = {
    "Expecting value": "expected a value (a string, number, object, ...)",
    "Unterminated string starting at": "unterminated string (a closing quote is missing)",
    "Invalid control character at": "a raw control character (newline, tab, ...) inside a "
                                    "string; write it as \\n or \\t",
    "Expecting ',' delimiter": "expected ',' between items",
    "Expecting ':' delimiter": "expected ':' after a key",
    "Expecting property name enclosed in double quotes": "expected a key in double quotes",
    "Extra data": "extra text after the JSON value (two objects on one line?)",
    "Invalid \\escape": "an invalid backslash escape",
    "Invalid \\uXXXX escape": "an invalid \\u escape",
}


def digest() -> "hashlib._Hash":
    """The hash that fingerprints a data file's bytes (cache names, resume checks)."""
    return hashlib.blake2b(digest_size=16)


def load_json_line(raw: bytes) -> Any:
    """The JSON value of one line, or ValueError with a reason a person can act on."""
    try:
        # Decoded here, not by json.loads(bytes): that also takes UTF-16/32, and with them lone
        # surrogates that no tokenizer accepts. "-sig" lets a file start with a byte-order mark.
        # Without its line end: json counts a newline as a new line, so a line that ends early
        # had its error placed at column 1 of a line 2 that is not there.
        obj = json.loads(raw.decode("utf-8-sig").rstrip("\r\n"))
    except UnicodeDecodeError:
        raise ValueError("line is not valid UTF-8") from None
    except RecursionError:  # "[[[[..." thousands deep: json recurses once per level
        raise ValueError("line is not valid JSON: nested too deeply") from None
    except json.JSONDecodeError as e:
        words = _JSON_WORDS.get(e.msg, e.msg[:1].lower() + e.msg[1:])
        raise ValueError(f"line is not valid JSON at column {e.colno}: {words}") from None
    except ValueError as e:  # Python's own limit, with advice for programmers
        if "integer string conversion" not in str(e):
            raise
        raise ValueError(f"line holds a number of more than {sys.get_int_max_str_digits():,} "
                         "digits, which no setting or text needs") from None
    return obj


def parse_line(raw: bytes) -> str:
    """Return the `text` of one JSONL line, or raise ValueError with a short reason."""
    obj = load_json_line(raw)
    if not isinstance(obj, dict):
        raise ValueError(f'expected a JSON object with a "text" field, got {type_name(obj)}')
    if "text" not in obj:
        hint = (' (this looks like conversation data, which stages "sft" and "lora" read)'
                if "conversations" in obj else "")
        raise ValueError(f'missing "text" field{hint}')
    text = obj["text"]
    if not isinstance(text, str):
        raise ValueError(f'"text" must be a string, got {type_name(text)}')
    # JSON can spell a lone UTF-16 surrogate ("\\ud800"), which no tokenizer can encode.
    if b"\\u" in raw:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(f'"text" holds an unpaired surrogate (\\u{ord(text[e.start]):04x}) '
                             f"at character {e.start + 1}: not valid Unicode text") from None
    return text


def check_file(path: Path) -> int:
    """Raise DataError unless `path` is a readable non-empty file; return its size."""
    if not path.exists():
        raise DataError(path, None, missing(path))
    if not path.is_file():
        raise DataError(path, None, "not a file")
    size = path.stat().st_size
    if size == 0:
        raise DataError(path, None, "file is empty")
    return size


LineParser = Callable[[bytes], Any]  # one raw line -> its record, or ValueError with a reason


class JsonlReader:
    """One streaming pass over the good lines of a JSONL file, yielding `(offset, record)`;
    a record is what `parse` makes of a line (by default its `text`).

    Blank lines are skipped silently. A bad line raises DataError, or with `skip_bad_lines`
    is counted in `bad_lines` (the first few kept in `first_bad` as `(line_no, reason)`).
    A file without a single good line is always an error: training on nothing is a mistake.
    """

    def __init__(self, path: str | Path, skip_bad_lines: bool = False, progress: ProgressFn | None = None,
                 parse: LineParser = parse_line):
        self.path = Path(path).expanduser()
        self.skip_bad_lines = skip_bad_lines
        self.progress = progress
        self.parse = parse
        self.bad_lines = 0
        self.first_bad: list[tuple[int, str]] = []
        self.digest = ""
        """The file's `digest()` once a pass has read it to the end."""

    def __iter__(self) -> Iterator[tuple[int, str]]:
        total = check_file(self.path)
        self.bad_lines, self.first_bad = 0, []
        good, offset, next_report = 0, 0, PROGRESS_EVERY
        h = digest()
        with open(self.path, "rb") as f:
            for line_no, raw in enumerate(f, start=1):
                start, offset = offset, offset + len(raw)
                h.update(raw)
                if self.progress is not None and offset >= next_report:
                    self.progress(offset, total)
                    next_report = offset + PROGRESS_EVERY
                if raw.isspace():
                    continue
                try:
                    text = self.parse(raw)
                except ValueError as e:
                    if not self.skip_bad_lines:
                        raise DataError(self.path, line_no, str(e)) from None
                    self.bad_lines += 1
                    if len(self.first_bad) < MAX_FIRST_BAD:
                        self.first_bad.append((line_no, str(e)))
                    continue
                good += 1
                yield start, text
        if self.progress is not None:
            self.progress(offset, total)
        self.digest = h.hexdigest()
        if good == 0:
            if self.bad_lines:
                line_no, reason = self.first_bad[0]
                raise DataError(self.path, None, f"no valid lines ({self.bad_lines} bad; first at line {line_no}: {reason})")
            raise DataError(self.path, None, NO_LINES)


class JsonlIndex:
    """Random access to the texts of a JSONL file by line number among its good lines.

    Construction reads the file once and keeps only byte offsets (numpy int64). The file is
    reopened lazily in each process, so the index can be pickled into DataLoader workers.
    """

    def __init__(self, path: str | Path, skip_bad_lines: bool = False, progress: ProgressFn | None = None,
                 parse: LineParser = parse_line):
        reader = JsonlReader(path, skip_bad_lines, progress, parse)
        offsets = array("q")  # compact while growing; a Python list would cost ~4x the memory
        for offset, _ in reader:
            offsets.append(offset)
        self.path = reader.path
        self.offsets = np.frombuffer(offsets, dtype=np.int64)
        self.bad_lines = reader.bad_lines
        self.first_bad = reader.first_bad
        self.digest = reader.digest
        self.parse = parse
        self._file = None
        self._pid = None

    def __len__(self) -> int:
        return len(self.offsets)

    def __getstate__(self) -> dict:
        # An open file object must not travel to worker processes; each opens its own.
        return {**self.__dict__, "_file": None, "_pid": None}

    def _handle(self):
        if self._file is None or self._pid != os.getpid():
            self._file = open(self.path, "rb")
            self._pid = os.getpid()
        return self._file

    def _parse(self, raw: bytes) -> Any:
        try:
            return self.parse(raw)
        except ValueError:
            raise DataError(self.path, None, "file changed since it was indexed; restart to re-read it") from None

    def text(self, i: int) -> Any:
        """The record of good line i: its text, or what the index's `parse` makes of it."""
        n = len(self.offsets)
        if not -n <= i < n:
            raise IndexError(f"line {i} out of range for {n} lines")
        f = self._handle()
        f.seek(int(self.offsets[i]))
        return self._parse(f.readline())
