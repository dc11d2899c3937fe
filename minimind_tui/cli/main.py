"""`minimind-tui`: the dashboard by default, the same engine headless with `--no-ui`, and the
subcommands. Exit codes: `minimind_tui.cli.exit_codes`.

Only argparse, pydantic and the settings load before a command runs: `--help`, flag errors and
`presets` answer without importing torch, transformers or Textual.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import importlib.metadata
import os
import sys
from pathlib import Path

from minimind.settings import RunSettings, SettingsError
from minimind_tui.cli import exit_codes
from minimind_tui.cli.exit_codes import invalid
from minimind_tui.cli.flags import add_settings_flags, overrides_from_args
from minimind_tui.form.presets import (DEFAULT_PRESET, is_user_preset, list_presets,
                                  load_start_settings, preset_data, preset_parameters,
                                  resolve_preset, user_preset_dir_problem)

# name -> ("module:function" taking argv and returning an exit code, what it does); the module
# is imported only when its command runs.
SUBCOMMANDS = {
    "bench": ("minimind_tui.cli.bench:main",
              "measure training throughput (tokens/s, MFU, memory)"),
    "inspect": ("minimind_tui.cli.inspect:main",
                "what a data file holds as the tokenizer sees it (tokens, lengths, padding)"),
    "export": ("minimind_tui.cli.export:main",
               "write a trained model as a Hugging Face folder or upstream's .pth"),
    "generate": ("minimind_tui.cli.generate:main",
                 "continue a prompt with a trained model, streaming the text"),
    "tokenizer": ("minimind_tui.cli.main:tokenizer_command",
                  "train a byte-level BPE tokenizer from a JSONL file"),
    "presets": ("minimind_tui.cli.main:presets_command", "list the bundled and user presets"),
    "serve": ("minimind_tui.cli.serve:main", "serve the dashboard to a web browser (textual-serve)"),
    "completion": ("minimind_tui.cli.completion:main", "print a bash or zsh completion script"),
    "watch": ("minimind_tui.cli.watch:main",
              "follow a run folder's dashboard live, read-only (a run started anywhere)"),
    "runs": ("minimind_tui.cli.runs:main",
             "list the runs under a folder (default out/): status, steps, losses, speed"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
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
    parser.add_argument("--detach", action="store_true",
                        help="with --no-ui: start the run in the background, detached from this "
                             "terminal (output to OUT_DIR/launch.log), print its pid and how to "
                             "watch it, and return")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    add_settings_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        code = _main(argv)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        # The reader left early (`minimind-tui runs | head`): it has all it wanted. Nothing
        # more may reach the pipe, not even the interpreter's final flush.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return exit_codes.OK
    except KeyboardInterrupt:
        # Ctrl+C before a command's own handling began (torch takes seconds to import): a
        # run stops with a checkpoint by itself, this is only the way out of the rest.
        print("\nminimind-tui: interrupted", file=sys.stderr)
        return exit_codes.SIGNALLED


def _main(argv: list[str]) -> int:
    if argv and argv[0] in SUBCOMMANDS:
        module, _, function = SUBCOMMANDS[argv[0]][0].partition(":")
        return getattr(importlib.import_module(module), function)(argv[1:])
    if argv and not argv[0].startswith("-"):  # the app takes flags alone: a mistyped command
        close = difflib.get_close_matches(argv[0], SUBCOMMANDS, n=1)
        return invalid(f"unknown command {argv[0]!r}: " + (
            f"did you mean {close[0]}?" if close else
            f"the commands are {', '.join(SUBCOMMANDS)}; the app itself takes flags alone"))
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.detach and not args.no_ui:
        parser.error("--detach starts a headless run: use it with --no-ui")
    overrides, untyped = overrides_from_args(args)  # typed here, once, for either mode
    try:
        if args.no_ui:  # every problem at once: the untyped flags are among them
            settings = load_start_settings(args.preset, overrides)
        else:  # a preset that cannot be read cannot be shown; bad values are shown in the form
            preset_data(args.preset or DEFAULT_PRESET)
    except SettingsError as e:
        return invalid(*e.problems)
    if untyped:  # a switch cannot show "maybe"
        return invalid(*untyped)
    if args.no_ui:
        return _headless(settings, argv, args.preset, detach=args.detach)
    if not terminal_attached():
        return invalid("no terminal (stdin or stderr is not a TTY, e.g. under nohup or cron): "
                       "use --no-ui to train headless")
    from minimind_tui.app import MiniMindApp

    app = MiniMindApp(args.preset, overrides)
    app.run_until_stopped()
    if app.return_value:  # its last word, once the screen is gone: one line, as --no-ui's
        print(app.return_value, file=sys.stderr)
    return app.return_code or exit_codes.OK  # Textual sets 1 when the app crashed


def _headless(settings: RunSettings, argv: list[str], preset: str | None, *,
              detach: bool) -> int:
    from minimind.environment import launched_by_torchrun
    from minimind_tui.run.launch import exec_torchrun, needs_torchrun

    if detach:
        from minimind_tui.cli.headless import start_detached

        return start_detached(settings)
    if not launched_by_torchrun():  # under torchrun the engine's claim says it, on every rank
        from minimind.run_folder import NeedsConsent, RunFolder

        t = settings.train
        refusal = RunFolder(Path(t.out_dir).expanduser()).refusal(
            resume=t.from_resume, overwrite=t.overwrite, weights_name=settings.weights_name(),
            from_weight=t.from_weight)
        if refusal is not None:  # said before the settings dump, which would bury it
            from minimind.runs import started_from

            lost = (started_from(Path(t.out_dir).expanduser())
                    if isinstance(refusal, NeedsConsent) else "")
            return invalid(f"train.out_dir: {refusal}"
                           + (f"; runs started from its weights: {lost}" if lost else ""))
        # nproc_per_node > 1: become torchrun, which runs this line again.
        if needs_torchrun(settings.train):
            if preset and not resolve_preset(preset).is_file():  # <(...), a pipe: read once
                return invalid(f"--preset {preset}: not a regular file, and each of the "
                               f"{settings.train.nproc_per_node} processes torchrun starts reads "
                               "it again; save it to a file")
            exec_torchrun(settings.train, argv)
    from minimind_tui.cli.headless import run_headless

    return run_headless(settings)


def terminal_attached() -> bool:
    """Textual reads keys from stdin and draws on stderr; without a terminal it would spin.
    A driver named in TEXTUAL_DRIVER (the web driver under `serve`) brings its own channel."""
    return bool(os.environ.get("TEXTUAL_DRIVER")) or (sys.stdin.isatty() and sys.stderr.isatty())


def _version() -> str:
    try:
        return importlib.metadata.version("minimind-tui")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "(not installed)"


def tokenizer_command(argv: list[str]) -> int:
    from minimind.tokenizer import main as tokenizer_main

    return tokenizer_main(argv, prog="minimind-tui tokenizer")


def presets_command(argv: list[str]) -> int:
    argparse.ArgumentParser(allow_abbrev=False, prog="minimind-tui presets",
                            description="List the presets with their models' parameter counts, "
                                        "the bundled ones smallest model first.").parse_args(argv)
    from minimind.units import format_count

    for name, path in list_presets().items():
        parameters = preset_parameters(path)  # None: a broken preset; `--preset` says why
        size = f"{format_count(parameters)} params" if parameters else "invalid"
        print(f"{name:20s} {size:>15s}  {'user   ' if is_user_preset(path) else 'bundled'} "
              f"{path}")
    if problem := user_preset_dir_problem():  # (MINIMIND_TUI_PRESETS=/dev/null)
        print(f"minimind-tui presets: warning: {problem}", file=sys.stderr)
    return exit_codes.OK


def run() -> None:
    """The `minimind-tui` command (and `python -m minimind_tui`)."""
    exit_codes.exit_with(main)


if __name__ == "__main__":
    run()
