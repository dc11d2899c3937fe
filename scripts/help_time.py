"""Time `minimind-tui --help` (a fresh interpreter each time), for one or more source trees.

    python scripts/help_time.py                       # this checkout
    python scripts/help_time.py ../main . --runs 30   # two checkouts, runs interleaved

Prints the best and the median wall time per tree. Runs alternate between the trees, so a
machine that gets busier or quieter affects each alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="*", default=[str(Path(__file__).parent.parent)],
                        help="source trees to import minimind_tui from (default: this one)")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    times: dict[str, list[float]] = {tree: [] for tree in args.trees}
    for _ in range(args.runs):
        for tree in args.trees:
            env = {**os.environ, "PYTHONPATH": str(Path(tree).resolve())}
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "minimind_tui", "--help"], env=env, check=True,
                           stdout=subprocess.DEVNULL)
            times[tree].append(time.perf_counter() - start)
    for tree, runs in times.items():
        print(f"{tree}: best {min(runs):.3f} s, median {statistics.median(runs):.3f} s "
              f"({len(runs)} runs)")


if __name__ == "__main__":
    main()
