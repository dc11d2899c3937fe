"""`minimind-tui runs [ROOT]`: the runs under a folder (default out/), one line each."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.cells import cell_len

from minimind_tui.cli import exit_codes
from minimind_tui.cli.flags import path_arg
from minimind.runs import COLUMNS, MAX_DEPTH, RunSummary, find_runs, sorted_runs
from minimind.safe_read import missing

PROG = "minimind-tui runs"
_RIGHT = {"step", "loss", "val_loss", "best_val_loss", "tokens", "tokens_per_sec", "elapsed"}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog=PROG, description="List the training runs under a folder: stage and what it "
        "started from (the run folder its from_weight lies in, 'scratch', or 'missing: ...' when "
        "the file is gone), status (running, completed, stopped, failed, crashed), steps, last "
        "and best validation loss, tokens, speed, duration and when it last wrote. The app's "
        "Runs screen (F4) compares them.")
    parser.add_argument("root", nargs="?", default="out", type=path_arg,
                        help=f"folder to search, {MAX_DEPTH} folders deep (default: out)")
    parser.add_argument("--sort", choices=list(COLUMNS), default="name",
                        help="column to sort by (default: name); a loss ranks runs stage by "
                             "stage, since each stage measures it on its own kind of data")
    parser.add_argument("--reverse", action="store_true", help="sort descending")
    parser.add_argument("--json", action="store_true", help="one JSON object per run, in a list")
    args = parser.parse_args(argv)
    root = Path(args.root).expanduser()
    if not root.is_dir():
        what = "not a folder" if root.exists() else missing(root, "folder")
        return exit_codes.invalid(f"{root}: {what}", prog=PROG)
    runs = sorted_runs(find_runs(root), args.sort, args.reverse)
    if args.json:
        print(json.dumps([run.as_json() for run in runs], indent=1))
    elif runs:
        print(table(runs))
    else:
        print(f"no runs under {root}")
    return exit_codes.OK


def table(runs: list[RunSummary]) -> str:
    rows = [list(COLUMNS.values())] + [list(run.cells().values()) for run in runs]
    # Widths in terminal cells: a CJK run name takes two a character.
    widths = [max(cell_len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    right = [key in _RIGHT for key in COLUMNS]

    def padded(cell: str, width: int, to_the_right: bool) -> str:
        pad = " " * (width - cell_len(cell))
        return pad + cell if to_the_right else cell + pad

    return "\n".join("  ".join(padded(*column) for column in zip(row, widths, right, strict=True)
                               ).rstrip()
                     for row in rows)
