"""`minimind-tui inspect DATA`: what a JSONL file holds, as the tokenizer sees it.

    minimind-tui inspect pretrain_hq.jsonl --tokenizer_path model/ --max_seq_len 512
    minimind-tui inspect sft_mini_512.jsonl --stage sft --tokenizer_path model/ --json

Streams the file through the tokenizer on every core (bounded memory, a progress bar on a
terminal) and prints documents, tokens, tokens per character, the length histogram, padding and
truncation at max_seq_len, what packing saves, bad lines and characters the tokenizer spells
byte by byte, with warnings in words; `--json` prints the same as one JSON object. The result is
cached per file content and tokenizer. Exit 0 done, 2 for a missing or unreadable file or
tokenizer (one line on stderr), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict
from typing import TypeVar

from minimind.data.progress import Throughput
from minimind.shown import printable_path
from minimind_tui.cli import exit_codes
from minimind_tui.cli.flags import path_arg

T = TypeVar("T")

PROG = "minimind-tui inspect"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog=PROG, description="What a JSONL file holds, as the tokenizer sees it: documents, "
                               "tokens, lengths, padding and truncation at max_seq_len, bad "
                               "lines and characters the tokenizer spells byte by byte.")
    parser.add_argument("data", metavar="DATA", type=path_arg,
                        help="JSONL file with {\"text\": ...} lines, .jsonl.gz, or "
                             "builtin:shakespeare")
    parser.add_argument("--tokenizer_path", "--tokenizer-path", metavar="DIR", default="",
                        type=path_arg,
                        help="tokenizer folder (default: the bundled one)")
    parser.add_argument("--max_seq_len", "--max-seq-len", type=int, default=512, metavar="N",
                        help="sample length for the padding, truncation and packing figures "
                             "(default 512)")
    parser.add_argument("--stage", choices=("pretrain", "sft", "lora"), default="pretrain",
                        help="sft/lora: a conversation file; reports turns and the tokens the "
                             "loss trains on (supervised)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--no_cache", "--no-cache", action="store_true",
                        help="inspect again even if this file was inspected before")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="tokenizing processes (default: one per core)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    from minimind.settings import RunSettings, SettingsError

    try:  # the training rule: figures for a max_seq_len no run may use would mislead
        RunSettings.parse({"train": {"max_seq_len": args.max_seq_len}})
    except SettingsError as e:
        parser.error(f"--max_seq_len: {e.problems[0].text}")
    cores = os.cpu_count() or 1
    if args.workers is not None and not 1 <= args.workers <= 4 * cores:
        parser.error(f"--workers: must be from 1 to {4 * cores} (4 per core here), got "
                     f"{args.workers}")
    # Imported here: the tokenizer loads transformers (seconds); --help should not wait.
    from minimind.data.inspect import inspect_data
    from minimind.tokenizer import TokenizerError, load_tokenizer

    try:
        tokenizer = load_tokenizer(args.tokenizer_path or None)
    except TokenizerError as e:
        return exit_codes.invalid(f"--tokenizer_path: {e}", prog=PROG)
    if args.stage != "pretrain":
        return _inspect_conversations(args, tokenizer)
    insp = _with_progress(args, lambda bar: inspect_data(
        args.data, tokenizer, progress=bar, phase=bar and bar.phase, use_cache=not args.no_cache,
        workers=args.workers))
    if isinstance(insp, int):
        return insp
    print(as_json(insp, args.max_seq_len) if args.json else as_text(insp, args.max_seq_len,
                                                                       args.tokenizer_path))
    return exit_codes.OK


def _with_progress(args, inspect: Callable[[_ProgressBar | None], T]) -> T | int:
    """Run one inspection pass with a progress bar on a terminal: its result, or the exit code
    of a bad file or Ctrl+C (said on stderr)."""
    from minimind.data import DataError
    from minimind.data.corpus import cache_problem

    bar = _ProgressBar() if sys.stderr.isatty() else None
    try:
        return inspect(bar)
    except DataError as e:
        return exit_codes.invalid(str(e), prog=PROG)
    except OSError as e:
        return exit_codes.invalid(cache_problem(e) or f"{args.data}: cannot read "
                                                     f"({e.strerror or e})", prog=PROG)
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return exit_codes.SIGNALLED
    finally:
        if bar:
            bar.clear()


def _inspect_conversations(args, tokenizer) -> int:
    from minimind.data.inspect_report import (bad_line_rows, conversation_rows,
                                             conversation_warnings)
    from minimind.data.sft import ChatTemplateError
    from minimind.data.sft_inspect import inspect_conversations

    try:
        insp = _with_progress(args, lambda bar: inspect_conversations(
            args.data, tokenizer, args.max_seq_len, progress=bar, phase=bar and bar.phase,
            use_cache=not args.no_cache))
    except ChatTemplateError as e:
        return exit_codes.invalid(f"--tokenizer_path: {e}", prog=PROG)
    if isinstance(insp, int):
        return insp
    if args.json:
        print(json.dumps(insp.to_dict(), ensure_ascii=False))
        return exit_codes.OK
    cached = " (cached)" if insp.cached else ""
    lines = [f"{printable_path(str(insp.path))}: conversations, tokenizer "
             f"{printable_path(args.tokenizer_path or 'bundled')}{cached}", ""]
    lines += [f"{label:18s} {value}" for label, value in conversation_rows(insp)]
    lines += [f"  {line}" for line in bad_line_rows(insp)]
    lines += [f"warning: {w}" for w in conversation_warnings(insp)]
    print("\n".join(lines))
    return exit_codes.OK


def as_text(insp, max_seq_len: int, tokenizer_path: str) -> str:
    from minimind.data.inspect_report import (bad_line_rows, figure_rows, histogram_lines,
                                             split_chars_text, warning_texts)

    cached = " (cached)" if insp.cached else ""
    lines = [f"{printable_path(str(insp.path))}: {insp.size_bytes / 1e6:,.1f} MB, tokenizer "
             f"{printable_path(tokenizer_path or 'bundled')}{cached}", ""]
    lines += [f"{label:18s} {value}" for label, value in figure_rows(insp, max_seq_len)]
    lines += ["", "document lengths in tokens (bos + text + eos):"]
    lines += ["  " + line for line in histogram_lines(insp)]
    if chars := split_chars_text(insp):
        lines += ["", f"characters without a token of their own: {chars}"]
    if bad := bad_line_rows(insp):
        lines += ["", "first bad lines:"] + ["  " + line for line in bad]
    lines += [""] + [f"warning: {w}" for w in warning_texts(insp, max_seq_len)]
    return "\n".join(lines).rstrip()


def as_json(insp, max_seq_len: int) -> str:
    from minimind.data.inspect_report import warning_texts

    data = json.loads(insp.to_json())
    data["lengths"] = {str(k): v for k, v in insp.lengths.items()}
    data["tokens_per_char"] = insp.tokens_per_char
    data["fit"] = {**asdict(insp.fit(max_seq_len)),
                   "packing_saves": insp.fit(max_seq_len).packing_saves}
    data["warnings"] = warning_texts(insp, max_seq_len)
    data["cached"] = insp.cached
    return json.dumps(data, ensure_ascii=False)


class _ProgressBar:
    """One redrawn stderr line: what is being done, a bar, the speed and the time left."""

    WIDTH = 30

    def __init__(self) -> None:
        self.throughput = Throughput()
        self.what = "reading"

    def phase(self, what: str) -> None:
        self.what = what
        self.throughput = Throughput()

    def __call__(self, done: int, total: int) -> None:
        self.throughput.update(done, total)
        filled = self.WIDTH * done // max(total, 1)
        print(f"\r{self.what:10s} {'█' * filled}{'░' * (self.WIDTH - filled)} "
              f"{100 * done // max(total, 1):3d}% {self.throughput.text():30s}",
              end="", file=sys.stderr, flush=True)

    def clear(self) -> None:
        print("\r" + " " * (self.WIDTH + 60) + "\r", end="", file=sys.stderr, flush=True)
