"""`minimind-tui`: the dashboard by default, the same engine headless with `--no-ui`, and the
subcommands. Exit codes: `minimind_tui.exit_codes`.

Only argparse, pydantic and the settings load before a command runs: `--help`, flag errors and
`presets` answer without importing torch, transformers or Textual.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import sys

from minimind.settings import SettingsError
from minimind_tui import exit_codes
from minimind_tui.flags import add_settings_flags, overrides_from_args
from minimind_tui.presets import (DEFAULT_PRESET, is_user_preset, list_presets, load_settings,
                                  preset_data, preset_parameters)

# name -> ("module:function" taking argv and returning an exit code, what it does); the module
# is imported only when its command runs.
SUBCOMMANDS = {
    "bench": ("minimind_tui.bench_cli:main",
              "measure training throughput (tokens/s, MFU, memory)"),
    "inspect": ("minimind_tui.inspect_cli:main",
                "what a data file holds as the tokenizer sees it (tokens, lengths, padding)"),
    "export": ("minimind_tui.export_cli:main",
               "write a trained model as a Hugging Face folder or upstream's .pth"),
    "generate": ("minimind_tui.generate_cli:main",
                 "continue a prompt with a trained model, streaming the text"),
    "tokenizer": ("minimind_tui.cli:tokenizer_command",
                  "train a byte-level BPE tokenizer from a JSONL file"),
    "presets": ("minimind_tui.cli:presets_command", "list the bundled and user presets"),
    "serve": ("minimind_tui.serve:main", "serve the dashboard to a web browser (textual-serve)"),
    "completion": ("minimind_tui.completion:main", "print a bash or zsh completion script"),
    "watch": ("minimind_tui.watch_cli:main",
              "follow a run folder's dashboard live, read-only (a run started anywhere)"),
    "runs": ("minimind_tui.runs_cli:main",
             "list the runs under a folder (default out/): status, steps, losses, speed"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minimind-tui",
        description="Pretrain MiniMind-style language models: a terminal dashboard, or the "
                    "same engine headless with --no-ui (also under torchrun).",
        epilog="subcommands (minimind-tui SUBCOMMAND --help): "
               + "; ".join(f"{name}: {text}" for name, (_, text) in SUBCOMMANDS.items())
               + ". Relative paths are resolved against the current directory.")
    parser.add_argument("--preset", metavar="NAME|PATH",
                        help="a bundled or user preset name, or a .toml file")
    parser.add_argument("--no-ui", action="store_true",
                        help="run headless: print settings, then upstream-style log lines")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    add_settings_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SUBCOMMANDS:
        module, _, function = SUBCOMMANDS[argv[0]][0].partition(":")
        return getattr(importlib.import_module(module), function)(argv[1:])
    args = build_parser().parse_args(argv)
    overrides = overrides_from_args(args)
    if args.no_ui:
        try:
            settings = load_settings(args.preset, overrides)
        except SettingsError as e:
            return invalid(*e.problems)
        from minimind.distributed import launched_by_torchrun
        from minimind_tui.launch import exec_torchrun, needs_torchrun

        # nproc_per_node > 1 outside torchrun: become torchrun, which runs this line again.
        if needs_torchrun(settings.train) and not launched_by_torchrun():
            exec_torchrun(settings.train, argv)
        from minimind_tui.headless import run_headless

        return run_headless(settings)
    if not terminal_attached():
        return invalid("no terminal (stdin or stderr is not a TTY, e.g. under nohup or cron): "
                       "use --no-ui to train headless")
    try:  # a preset that cannot be read cannot be shown; bad values are shown in the form
        preset_data(args.preset or DEFAULT_PRESET)
    except SettingsError as e:
        return invalid(*e.problems)
    from minimind_tui.app import MiniMindApp

    MiniMindApp(args.preset, overrides).run_until_stopped()
    return exit_codes.OK


def terminal_attached() -> bool:
    """Textual reads keys from stdin and draws on stderr; without a terminal it would spin.
    A driver named in TEXTUAL_DRIVER (the web driver under `serve`) brings its own channel."""
    return bool(os.environ.get("TEXTUAL_DRIVER")) or (sys.stdin.isatty() and sys.stderr.isatty())


def _version() -> str:
    try:
        return importlib.metadata.version("minimind-tui")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "(not installed)"


def invalid(*problems: object, prog: str = "minimind-tui") -> int:
    for problem in problems:
        print(f"{prog}: error: {problem}", file=sys.stderr)
    return exit_codes.INVALID


def tokenizer_command(argv: list[str]) -> int:
    from minimind.tokenizer import main as tokenizer_main

    return tokenizer_main(argv, prog="minimind-tui tokenizer")


def presets_command(argv: list[str]) -> int:
    argparse.ArgumentParser(prog="minimind-tui presets",
                            description="List the presets with their models' parameter counts, "
                                        "the bundled ones smallest model first.").parse_args(argv)
    from minimind.event_text import format_count

    for name, path in list_presets().items():
        parameters = preset_parameters(path)  # None: a broken preset; `--preset` says why
        size = f"{format_count(parameters)} params" if parameters else "invalid"
        print(f"{name:20s} {size:>15s}  {'user   ' if is_user_preset(path) else 'bundled'} "
              f"{path}")
    return exit_codes.OK


if __name__ == "__main__":
    sys.exit(main())
