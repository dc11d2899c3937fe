"""`minimind-tui`: the dashboard by default, the same engine headless with `--no-ui`.

Exit codes (headless): 0 completed, 130 stopped by a signal (checkpoint written), 2 invalid
settings or input, 1 runtime failure.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from minimind.settings import RunSettings, SettingsError
from minimind_tui.flags import add_settings_flags, overrides_from_args
from minimind_tui.presets import list_presets, load_settings

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_SIGNAL = 0, 1, 2, 130

SUBCOMMANDS = {
    "bench": "measure training throughput (tokens/s, MFU, peak memory)",
    "tokenizer": "train a byte-level BPE tokenizer from a {\"text\": ...} JSONL",
    "presets": "list the bundled and user presets",
    "export": "write a trained model as a Hugging Face folder or upstream's .pth",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minimind-tui",
        description="Pretrain MiniMind-style language models: a terminal dashboard, or the "
                    "same engine headless with --no-ui (also under torchrun).",
        epilog="subcommands: " + "; ".join(f"{k}: {v}" for k, v in SUBCOMMANDS.items())
               + ". Relative paths are resolved against the current directory.")
    parser.add_argument("--preset", metavar="NAME|PATH",
                        help="a bundled or user preset name, or a .toml file")
    parser.add_argument("--no-ui", action="store_true",
                        help="run headless: print settings, then upstream-style log lines")
    add_settings_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SUBCOMMANDS:
        return _subcommand(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.preset, overrides_from_args(args))
    except SettingsError as e:
        for problem in e.problems:
            print(f"minimind-tui: error: {problem}", file=sys.stderr)
        return EXIT_INVALID
    if args.no_ui:
        return run_headless(settings)
    from minimind_tui.app import MiniMindApp

    MiniMindApp(args.preset, overrides_from_args(args)).run()
    return EXIT_OK


def run_headless(settings: RunSettings) -> int:
    from minimind.engine import Trainer
    from minimind.sinks import ConsoleSink

    if int(os.environ.get("RANK", "0")) == 0:
        print("# resolved settings")
        import tomli_w

        print(tomli_w.dumps(settings.to_toml_dict()), flush=True)
    stop = threading.Event()
    signalled: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        if stop.is_set():  # a second Ctrl+C means "now"
            raise KeyboardInterrupt
        signalled.append(signum)
        stop.set()
        print(f"\nminimind-tui: {signal.Signals(signum).name} received: finishing the current "
              "step and writing a checkpoint (press Ctrl+C again to abort)",
              file=sys.stderr, flush=True)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    result = Trainer(settings, [ConsoleSink()], stop).run()
    if result.status == "completed":
        return EXIT_OK
    if result.status == "stopped":
        return EXIT_SIGNAL if signalled else EXIT_OK
    if result.cause == "input":
        print(f"minimind-tui: error: {result.reason}", file=sys.stderr)
        return EXIT_INVALID
    where = f" (details: {result.details_path})" if result.details_path else ""
    print(f"minimind-tui: run failed: {result.reason}{where}", file=sys.stderr)
    return EXIT_FAILED


def _subcommand(name: str, argv: list[str]) -> int:
    if name == "tokenizer":
        from minimind.tokenizer import main as tokenizer_main

        return tokenizer_main(argv, prog="minimind-tui tokenizer")
    if name == "bench":
        from minimind_tui.bench_cli import main as bench_main

        return bench_main(argv)
    if name == "export":
        from minimind_tui.export_cli import main as export_main
        return export_main(argv)
    for preset, path in list_presets().items():
        print(f"{preset:20s} {path}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
