"""Render the README screenshots: docs/screenshots/configure.svg, dashboard.svg, inspect.svg.

    python scripts/screenshots.py [--size 140x42] [--theme textual-dark]

The configure screen shows the `tiny` preset; the dashboard is fed the same fixed synthetic
event stream as the snapshot tests (tests/snapshot_apps/replay.py) and the Inspect data screen
shows the bundled validation corpus, so the pictures do not change from one machine or run to
the next.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the replay stream
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minimind_tui.app import MiniMindApp
from minimind_tui.screens.inspect import InspectScreen
from snapshot_apps.replay import fixed_events

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "docs" / "screenshots"


async def render(size: tuple[int, int], theme: str, view: str) -> str:
    app = MiniMindApp("tiny")
    async with app.run_test(size=size) as pilot:
        app.theme = theme
        await app.workers.wait_for_complete()  # the readouts report from threads
        if view == "dashboard":
            app.apply_events(fixed_events())
            app.run_phase = "running"  # the look of a live run, without a worker
            app.switch_mode("dashboard")
        elif view == "inspect":
            await app.push_screen(InspectScreen("builtin:shakespeare-val", "", 128))
            await app.workers.wait_for_complete()
        await pilot.pause(0.3)
        await pilot.wait_for_scheduled_animations()  # the log scrolls to its end
        await pilot.pause()
        return app.export_screenshot(title="minimind-tui")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="140x42", help="terminal WIDTHxHEIGHT")
    parser.add_argument("--theme", default="textual-dark")
    args = parser.parse_args()
    size = tuple(int(n) for n in args.size.split("x"))
    # A fresh cache and no user presets: the readouts and preset list look the same anywhere.
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MINIMIND_CACHE"] = str(Path(tmp) / "cache")
        os.environ["MINIMIND_TUI_PRESETS"] = str(Path(tmp) / "presets")
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        for name in ("configure", "dashboard", "inspect"):
            svg = asyncio.run(render(size, args.theme, name))
            path = OUT_DIR / f"{name}.svg"
            path.write_text(svg, encoding="utf-8")
            print(path.relative_to(ROOT))


if __name__ == "__main__":
    main()
