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
import shutil
import zlib
from pathlib import Path

from minimind.atomic import atomic_file

from .jsonl import PROGRESS_EVERY, DataError, ProgressFn, digest

CORPUS_DIR = Path(__file__).resolve().parent / "corpus"
BUILTIN_PREFIX = "builtin:"
BUILTINS = {
    "shakespeare": CORPUS_DIR / "shakespeare_train.jsonl.gz",
    "shakespeare-val": CORPUS_DIR / "shakespeare_val.jsonl.gz",
    # Conversations about the same plays, for the sft/lora stages (scripts/build_chat_corpus.py).
    "shakespeare-chat": CORPUS_DIR / "shakespeare_chat_train.jsonl.gz",
    "shakespeare-chat-val": CORPUS_DIR / "shakespeare_chat_val.jsonl.gz",
}


def default_cache_dir() -> Path:
    """Where derived files (decompressed corpora, token caches) live between runs."""
    env = os.environ.get("MINIMIND_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "minimind-tui"


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


def _decompressed(gz_path: Path) -> Path:
    stem = gz_path.name.removesuffix(".gz").removesuffix(".jsonl")
    out = default_cache_dir() / "corpus" / f"{stem}-{file_digest(gz_path)}.jsonl"
    if out.exists():
        return out
    # A crash or a parallel run never leaves a half-written file under the final name.
    with atomic_file(out) as dst, gzip.open(gz_path, "rb") as src:
        shutil.copyfileobj(src, dst, 1 << 20)
    return out


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
        return _decompressed(BUILTINS[name])
    path = Path(spec).expanduser()
    if path.name.endswith(".gz") and path.is_file():
        try:
            return _decompressed(path)
        except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
            raise DataError(path, None, f"cannot decompress: corrupt or truncated gzip "
                                        f"({e})") from None
    return path
