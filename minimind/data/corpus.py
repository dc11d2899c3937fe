"""The bundled Shakespeare corpus and the mapping from a settings `data_path` to a real file.

Settings may say `data_path = "builtin:shakespeare"` (train split) or
`"builtin:shakespeare-val"` (held-out split). The package ships them gzipped (built by
`scripts/build_corpus.py`); datasets need a plain file they can seek in, so the first use
decompresses into the cache dir (`$MINIMIND_CACHE`, else `~/.cache/minimind-tui/`). User
`.jsonl.gz` files get the same treatment. Cache names carry a hash of the compressed bytes,
so a changed file never reuses a stale copy.
"""

import gzip
import os
import re
import zlib
from pathlib import Path

from minimind.atomic import atomic_file

from .jsonl import NO_LINES, PROGRESS_EVERY, DataError, ProgressFn, digest, note_copy

CORPUS_DIR = Path(__file__).resolve().parent / "corpus"
BUILTIN_PREFIX = "builtin:"
BUILTINS = {
    "shakespeare": CORPUS_DIR / "shakespeare_train.jsonl.gz",
    "shakespeare-val": CORPUS_DIR / "shakespeare_val.jsonl.gz",
    # Conversations about the same plays, for the sft/lora stages (scripts/build_chat_corpus.py).
    "shakespeare-chat": CORPUS_DIR / "shakespeare_chat_train.jsonl.gz",
    "shakespeare-chat-val": CORPUS_DIR / "shakespeare_chat_val.jsonl.gz",
}
# Each bundled text set and the conversations of the same split: a stage that reads the other
# kind of data takes the other one (the form follows a change of stage with it).
CHAT_SETS = {"shakespeare": "shakespeare-chat", "shakespeare-val": "shakespeare-chat-val"}
FIRST_LINE_LIMIT = 1 << 20  # bytes read to find a file's first line before giving up on it


def default_cache_dir() -> Path:
    """Where derived files (decompressed corpora, token caches) live between runs."""
    env = os.environ.get("MINIMIND_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "minimind-tui"


def cache_problem(e: OSError) -> str | None:
    """What to say when `e` concerns the cache folder, not the user's data; else None."""
    cache = default_cache_dir()
    if not e.filename or cache not in (path := Path(e.filename), *path.parents):
        return None
    return (f"{path}: {e.strerror or e}: derived files (decompressed and tokenized data) go to "
            f"{cache}; set MINIMIND_CACHE to a folder this user can write")


def file_digest(path: Path, progress: ProgressFn | None = None) -> str:
    """`digest()` of a file's bytes, streamed so multi-GB files need no memory;
    `progress(done_bytes, total_bytes)` follows it (seconds for GBs)."""
    h = digest()
    total = path.stat().st_size if progress else 0
    done, next_report = 0, PROGRESS_EVERY
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            done += len(chunk)
            if progress and done >= next_report:
                progress(done, total)
                next_report = done + PROGRESS_EVERY
    if progress:
        progress(done, total)
    return h.hexdigest()


def _decompressed(gz_path: Path, named: str | Path) -> Path:
    """A plain copy of `gz_path` in the cache (made once); errors name the file as `named`."""
    stem = gz_path.name.removesuffix(".gz").removesuffix(".jsonl")
    out = default_cache_dir() / "corpus" / f"{stem}-{file_digest(gz_path)}.jsonl"
    note_copy(out, named)
    if out.exists():
        return out
    try:
        # A crash or a parallel run never leaves a half-written file under the final name.
        with atomic_file(out) as dst, gzip.open(gz_path, "rb") as src:
            while chunk := _read_gzip(src, named):
                dst.write(chunk)
    except OSError as e:  # writing the copy failed: the cache's problem, not the data's
        raise DataError(named, None, "cannot keep its decompressed copy: " + (
            cache_problem(e) or f"{out} ({e.strerror or e})")) from None
    return out


def _read_gzip(src: gzip.GzipFile, named: str | Path) -> bytes:
    try:
        return src.read(1 << 20)
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(named, None, f"cannot decompress: corrupt or truncated gzip "
                                     f"({e})") from None


def builtin_for_stage(spec: str, stage: str) -> str | None:
    """The bundled set of `spec`'s split that `stage` reads, when `spec` names a bundled set
    of the other kind (text for sft, conversations for pretraining); else None."""
    name = spec.removeprefix(BUILTIN_PREFIX) if spec.startswith(BUILTIN_PREFIX) else None
    text_of = {chat: text for text, chat in CHAT_SETS.items()}
    other = CHAT_SETS.get(name) if stage != "pretrain" else text_of.get(name)
    return BUILTIN_PREFIX + other if other else None


def first_line(spec: str) -> tuple[int, bytes] | None:
    """The first non-blank line of a data file (a bundled set or a `.gz` read through gzip,
    with no copy made) and its number; None when the file cannot be read or that line is not
    found within `FIRST_LINE_LIMIT` bytes (the reader then judges it at the start). A file of
    blank lines alone is the reader's DataError."""
    name = spec.removeprefix(BUILTIN_PREFIX)
    path = BUILTINS.get(name) if spec.startswith(BUILTIN_PREFIX) else Path(spec).expanduser()
    if path is None:
        return None
    if not path.name.endswith(".gz"):
        _refuse_compressed(path, spec)
    try:
        with (gzip.open if path.name.endswith(".gz") else open)(path, "rb") as f:
            read = 0
            for line_no, raw in enumerate(iter(lambda: f.readline(FIRST_LINE_LIMIT), b""), 1):
                read += len(raw)
                if read >= FIRST_LINE_LIMIT:
                    return None
                if not raw.isspace():
                    return line_no, raw
    except (OSError, EOFError, zlib.error):
        return None
    raise DataError(spec, None, NO_LINES)


def resolve_data_path(spec: str | Path) -> Path:
    """Map a settings `data_path` to a plain JSONL file that datasets can index.

    `builtin:<name>` names a bundled corpus; `*.jsonl.gz` is decompressed into the cache;
    anything else is returned as a Path with `~` expanded (existence is checked by readers).
    """
    if isinstance(spec, str) and spec.startswith(BUILTIN_PREFIX):
        name = spec[len(BUILTIN_PREFIX):]
        if name not in BUILTINS:
            known = ", ".join(BUILTIN_PREFIX + n for n in BUILTINS)
            raise DataError(spec, None, f"unknown built-in corpus (known: {known})")
        return _decompressed(BUILTINS[name], spec)
    path = Path(spec).expanduser()
    if path.name.endswith(".gz") and path.is_file():
        return _decompressed(path, spec)
    _refuse_compressed(path, spec)
    return path


# The first bytes of the compressed files a JSONL corpus is often shipped as.
# bzip2's "BZh" is also text: its block size digit and its first block's magic (or the end of
# stream's, for no data) must follow.
_MAGIC = {re.compile(rb"\x1f\x8b"): "gzip", re.compile(rb"PK\x03\x04"): "zip",
          re.compile(rb"\xfd7zXZ\x00"): "xz", re.compile(rb"\x28\xb5\x2f\xfd"): "zstd",
          re.compile(rb"BZh[1-9](1AY&SY|\x17rE8P\x90)"): "bzip2"}


def _refuse_compressed(path: Path, spec: str | Path) -> None:
    """A compressed file under a name we read as text: its first line would read as "not valid
    UTF-8", with no word of why."""
    if kind := _compressed_as(path):
        if kind == "zip" and _is_torch_save(path):  # a .pth is a zip of pickles and tensors
            raise DataError(spec, None, "is a PyTorch checkpoint (model weights), not data: "
                                        "give a JSONL file")
        how = ("name it .jsonl.gz to have it decompressed, or decompress it (gunzip)"
               if kind == "gzip" else "decompress it first")
        raise DataError(spec, None, f"holds {kind}-compressed data, not text: {how}")


def _is_torch_save(path: Path) -> bool:
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/data.pkl") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _compressed_as(path: Path) -> str | None:
    """The compression a regular file's first bytes show (never a FIFO's: reading one waits)."""
    try:
        if not path.is_file():
            return None
        with path.open("rb") as f:
            start = f.read(10)
    except OSError:  # the reader says what is wrong with the file
        return None
    return next((kind for magic, kind in _MAGIC.items() if magic.match(start)), None)
