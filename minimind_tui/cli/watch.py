"""`minimind-tui watch OUT_DIR`: the dashboard of a run started anywhere else, read-only.

The run may be training in another terminal, under torchrun, detached from the app, or on
another machine whose out_dir is synced or mounted here (rsync, sshfs, NFS): only the folder's
files are read, never written, and the writer is never held up. With `--plain` (the default without a
terminal) it prints the run's log lines instead of drawing the dashboard: `watch_plain`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from minimind.atomic import file_in_the_way, in_the_way
from minimind.run_files import METRICS_FILE
from minimind_tui.cli import exit_codes
from minimind_tui.cli.flags import path_arg
from minimind_tui.cli.main import terminal_attached

PROG = "minimind-tui watch"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog=PROG, description="Open the dashboard on a run folder, read-only: its history "
        "first, then its metrics.jsonl followed live (through a crash, a resume or a restart). "
        "Works on a folder synced from another machine.",
        epilog="--plain ends when the run does; its exit code is the run's outcome: "
        f"{exit_codes.RUN_OUTCOMES}.")
    parser.add_argument("out_dir", type=path_arg, help="the run's folder (or its metrics.jsonl)")
    parser.add_argument("--plain", action="store_true",
                        help="print the run's log lines as they arrive instead of the dashboard "
                             "(the default when stdin or stderr is not a terminal)")
    args = parser.parse_args(argv)
    folder = Path(args.out_dir).expanduser()
    if folder.name == METRICS_FILE and folder.is_file():
        folder = folder.parent
    # A folder not made yet is waited for, as one with no run yet: `train & watch` races it;
    # one below a file never can be.
    if blocking := file_in_the_way(folder):
        return exit_codes.invalid(f"{blocking}: {in_the_way(blocking)}, not a folder", prog=PROG)
    if args.plain or not terminal_attached():
        return plain(folder)
    from minimind_tui.app import MiniMindApp

    app = MiniMindApp(watch=folder)
    app.run()
    # Textual prints the traceback of a crash and sets this; it must not read as success.
    return exit_codes.FAILED if app.return_code else exit_codes.OK


def plain(folder: Path) -> int:
    from minimind_tui.cli.watch_plain import follow

    try:
        return follow(folder)
    except KeyboardInterrupt:  # Ctrl+C leaves the watcher; the run goes on
        print(f"\n{PROG}: stopped watching; watching never stops the run", file=sys.stderr)
        return exit_codes.SIGNALLED
    except BrokenPipeError:  # `watch --plain DIR | head`: the reader has gone
        # Python would complain again when it flushes stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return exit_codes.OK
