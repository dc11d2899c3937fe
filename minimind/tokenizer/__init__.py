"""The project's own byte-level BPE tokenizer, and the code that trains one.

The bundled tokenizer (this directory's tokenizer.json + tokenizer_config.json) follows
MiniMind's conventions so checkpoints and data stay interchangeable in shape: vocab 6400,
byte-level BPE without a normalizer or post-processor, and three special tokens
    0 <|endoftext|>  (pad, unk)    1 <|im_start|>  (bos)    2 <|im_end|>  (eos).
`tokenizer(text)` adds no special tokens; datasets add bos/eos themselves.
Its merges are learned from the bundled Shakespeare corpus, so English verse compresses
well; any other text (Chinese, emoji, code) still round-trips exactly, byte by byte.

Regenerate the shipped files (deterministic; reproduces them byte for byte):

    python -m minimind.tokenizer train --data builtin:shakespeare --out minimind/tokenizer --overwrite

`load_tokenizer(path)` also accepts any Hugging Face tokenizer directory, e.g. upstream
MiniMind's `model/`.
"""

import argparse
import functools
import json
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from minimind.atomic import atomic_write_many, file_in_the_way, in_the_way
from minimind.data.corpus import resolve_data_path
from minimind.data.jsonl import DataError, JsonlReader

BUNDLED_TOKENIZER_DIR = Path(__file__).resolve().parent
BUNDLED_NAMES = ("", "builtin")

# Order fixes the ids: the trainer assigns special tokens the first ids, in this order.
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
PAD, BOS, EOS = SPECIAL_TOKENS
MODEL_MAX_LENGTH = 32768

# Plain ChatML. No default system prompt: a pretraining project should not invent one.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


# What AutoTokenizer reads from a folder, where present (the first two: one must be).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "chat_template.jinja", "chat_template.json",
                   "vocab.json", "merges.txt", "tokenizer.model")


class TokenizerError(ValueError):
    """A tokenizer directory is missing or cannot be loaded, or cannot be written; the message
    is one line."""


class TrainedTokenizer(NamedTuple):
    folder: Path
    vocab_size: int  # what the corpus gave: below the size asked for when it runs out of merges


def tokenizer_vocab_size(path: str) -> int | None:
    """How many ids the tokenizer at `path` ("" or "builtin": the bundled one) gives, added
    tokens included, as its tokenizer.json tells without loading transformers (the form asks at
    every change); None where there is no such file to read (loading it then decides)."""
    directory = BUNDLED_TOKENIZER_DIR if path.strip() in BUNDLED_NAMES else Path(path).expanduser()
    file = directory / "tokenizer.json"
    try:
        found = file.stat()
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(found.st_mode):
        return None
    return _vocab_size(str(file.resolve()), found.st_mtime_ns, found.st_size)


@functools.lru_cache(maxsize=8)
def _vocab_size(file: str, mtime_ns: int, size: int) -> int | None:
    """(Keyed by the file's time and size too: an edited tokenizer.json is read again.)"""
    try:
        return Tokenizer.from_file(file).get_vocab_size(with_added_tokens=True)
    except Exception:  # the tokenizers library raises its own kinds; loading it says why
        return None


def tokenizer_folder_problem(directory: Path) -> str | None:
    """Why `directory` holds no tokenizer to load whole, as far as its files tell without
    loading it (the form asks at every change); None when they do."""
    if not directory.is_dir():
        return f"{directory}: " + ("not a folder (a tokenizer is a folder holding "
                                   "tokenizer.json)" if directory.exists() else
                                   "no such tokenizer directory")
    for name in TOKENIZER_FILES:  # transformers passes over what is no file as if missing
        file = directory / name
        if file.is_symlink() and not file.exists():
            return (f"{file}: a link to {os.readlink(file)}, which is not there, so the "
                    "tokenizer would load without it")
        if file.exists() and not file.is_file():
            return (f"{file}: not a file (a FIFO, a folder or a device), so the tokenizer "
                    "would load without it")
    if not any((directory / name).is_file() for name in TOKENIZER_FILES[:2]):
        return f"{directory}: no tokenizer.json or tokenizer_config.json in this directory"
    return None


def load_tokenizer(path: str | Path | None = None):
    """Load a tokenizer: None, "" or "builtin" gives the bundled one, else an HF tokenizer dir."""
    if path is None or (isinstance(path, str) and path.strip() in BUNDLED_NAMES):
        directory = BUNDLED_TOKENIZER_DIR
    else:
        directory = Path(path).expanduser()
    if problem := tokenizer_folder_problem(directory):
        raise TokenizerError(problem)
    # Imported here: transformers takes seconds to import and most callers of this package
    # (the TUI shell, the corpus tools) never need it.
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(directory))
    except Exception as e:  # transformers raises many types; the user needs the cause only
        cause = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TokenizerError(f"{directory}: cannot load tokenizer ({cause})") from None
    if tok.bos_token_id is None or tok.eos_token_id is None:
        # tokenizer.json holds the tokens, tokenizer_config.json says which are bos and eos.
        lacking = ("; it has no tokenizer_config.json, which names them"
                   if not (directory / "tokenizer_config.json").is_file() else "")
        raise TokenizerError(f"{directory}: tokenizer defines no bos/eos token; pretraining "
                             f"needs both{lacking}")
    return tok


def tokenizer_config() -> dict:
    """The hand-written tokenizer_config.json that makes AutoTokenizer see our conventions."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": False,
        "add_eos_token": False,
        "add_prefix_space": False,
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "unk_token": PAD,
        "added_tokens_decoder": {
            str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                     "single_word": False, "special": True}
            for i, t in enumerate(SPECIAL_TOKENS)
        },
        # Byte-level BPE already decodes spaces exactly; the "cleanup" would corrupt text.
        "clean_up_tokenization_spaces": False,
        "model_max_length": MODEL_MAX_LENGTH,
        "chat_template": CHAT_TEMPLATE,
    }


def _check_destination(out_dir: str | Path, overwrite: bool = False) -> None:
    """Refuse an `out_dir` that already holds a tokenizer unless `overwrite`: runs trained on it
    would silently decode with the new ids."""
    out = Path(out_dir).expanduser()
    if blocking := file_in_the_way(out):
        what = in_the_way(blocking)
        raise TokenizerError(f"{out}: is {what}; the tokenizer is written into a folder"
                             if blocking == out else
                             f"{out}: cannot write there: {blocking} is {what}, not a folder")
    held = any((out / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json"))
    if held and not overwrite:
        raise TokenizerError(f"{out}: already holds a tokenizer; pass --overwrite to replace its "
                             "tokenizer.json and tokenizer_config.json (runs trained with the old "
                             "one would then decode wrongly)")


def train_tokenizer(jsonl_path: str | Path, out_dir: str | Path, vocab_size: int = 6400,
                    progress: bool = True, overwrite: bool = False) -> TrainedTokenizer:
    """Train a byte-level BPE tokenizer on the `text` fields of a JSONL file.

    `jsonl_path` may be any data spec `resolve_data_path` understands (e.g.
    `builtin:shakespeare`). Writes tokenizer.json and tokenizer_config.json into `out_dir`
    (other files there are left alone); one already there is replaced only with `overwrite`.
    """
    n_bytes = 256  # the initial byte alphabet is always in the vocab
    if vocab_size < len(SPECIAL_TOKENS) + n_bytes + 1:
        raise ValueError(f"vocab_size must be at least {len(SPECIAL_TOKENS) + n_bytes + 1}, got {vocab_size}")
    if vocab_size > 65535:  # token caches store ids as uint16
        raise ValueError(f"vocab_size must be at most 65535, got {vocab_size}")
    _check_destination(out_dir, overwrite)  # before minutes of training, not after
    reader = JsonlReader(resolve_data_path(jsonl_path))

    learned = [0]  # texts with something in them

    def texts() -> Iterator[str]:
        for _, text in reader:
            learned[0] += bool(text)
            yield text

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        # Every byte gets a token even if the corpus lacks it, so no text is ever unencodable.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=progress,
    )
    tok.train_from_iterator(texts(), trainer=trainer)
    if not learned[0]:  # it wrote the bytes and specials alone, and said it was done
        raise DataError(jsonl_path, None, "every text is empty: nothing to learn from")
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i, f"special token {t} got id {tok.token_to_id(t)}, expected {i}"

    out = Path(out_dir).expanduser()
    config = json.dumps(tokenizer_config(), indent=2, ensure_ascii=False) + "\n"
    # One unit: a failure leaves the folder's previous pair (say, upstream's, whose config
    # differs) whole, never its tokenizer.json beside our config.
    atomic_write_many({out / "tokenizer.json": tok.to_str(pretty=True).encode(),
                       out / "tokenizer_config.json": config.encode()})
    return TrainedTokenizer(out, tok.get_vocab_size())


def main(argv: list[str] | None = None, prog: str = "python -m minimind.tokenizer") -> int:
    """`minimind-tui tokenizer train --data X.jsonl --out DIR [--vocab_size N] [--overwrite]`.

    Exit codes as the main CLI's: 0 written, 2 bad input (one line on stderr), 1 failure."""
    parser = argparse.ArgumentParser(allow_abbrev=False, prog=prog,
                                     description="Train a byte-level BPE tokenizer.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", allow_abbrev=False,
                           help="train a tokenizer on the text fields of a JSONL file")
    train.add_argument("--data", required=True,
                       help='JSONL file with {"text": ...} lines, or builtin:shakespeare')
    train.add_argument("--out", required=True,
                       help="directory to write tokenizer.json and tokenizer_config.json")
    train.add_argument("--vocab_size", "--vocab-size", type=int, default=6400,
                       help="vocabulary size (default 6400)")
    train.add_argument("--overwrite", action="store_true",
                       help="replace the tokenizer.json and tokenizer_config.json already in --out")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if not args.out.strip():  # it wrote into the current folder
        parser.error("--out is empty: give a folder (. for the current one)")

    # The tokenizers library's bar redraws with blank lines when stderr is not a terminal.
    progress = not args.quiet and sys.stderr.isatty()
    try:
        trained = train_tokenizer(args.data, args.out, vocab_size=args.vocab_size,
                                  progress=progress, overwrite=args.overwrite)
    except (DataError, ValueError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"{prog}: error: cannot write {e.filename or args.out} ({e.strerror})",
              file=sys.stderr)
        return 1
    out = trained.folder
    print(f"wrote {out / 'tokenizer.json'} and {out / 'tokenizer_config.json'}")
    if trained.vocab_size < args.vocab_size:  # BPE ran out of pairs to merge: not an error
        print(f"note: the corpus gave only {trained.vocab_size} tokens of the {args.vocab_size} "
              "asked for; a larger corpus gives more")
    return 0
