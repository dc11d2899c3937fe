"""`minimind-tui watch OUT_DIR`: the dashboard of a run started anywhere else, read-only.

The run may be training in another terminal, under torchrun, detached from the app, or on
another machine whose out_dir is synced or mounted here (rsync, sshfs, NFS): only the folder's
files are read, never written, and the writer is never held up.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from minimind.run_files import METRICS_FILE
from minimind_tui import exit_codes
from minimind_tui.cli import terminal_attached

PROG = "minimind-tui watch"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Open the dashboard on a run folder, read-only: its history "
        "first, then its metrics.jsonl followed live (through a crash, a resume or a restart). "
        "Works on a folder synced from another machine.")
    parser.add_argument("out_dir", help="the run's folder (or its metrics.jsonl)")
    args = parser.parse_args(argv)
    folder = Path(args.out_dir).expanduser()
    if folder.name == METRICS_FILE and folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        return exit_codes.invalid(f"{folder}: no such folder", prog=PROG)
    if not terminal_attached():
        return exit_codes.invalid("no terminal (stdin or stderr is not a TTY): the dashboard "
                                  f"needs one; `minimind-tui runs {folder.parent}` prints a "
                                  "run's status", prog=PROG)
    from minimind_tui.app import MiniMindApp

    app = MiniMindApp(watch=folder)
    app.run()
    # Textual prints the traceback of a crash and sets this; it must not read as success.
    return exit_codes.FAILED if app.return_code else exit_codes.OK
