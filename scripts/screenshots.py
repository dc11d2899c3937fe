"""Render the README screenshots into docs/screenshots/: configure, dashboard, samples,
playground, inspect, runs, compare, watch and playground-chat (one SVG each).

    python scripts/screenshots.py [--size 140x42] [--theme textual-dark]

The configure screen shows the `tiny` preset; the dashboard and its samples panel are fed the
same fixed synthetic event stream as the snapshot tests (tests/snapshot_apps/replay.py), the
playground a fixed generation from it, the Inspect data screen the bundled validation corpus,
and the runs view, the comparison and the watched run read fixed fixture run folders
(tests/snapshot_apps/run_fixtures.py), so the pictures do not change from one machine or run
to the next. The chat playground needs a model that answers in turns: the script trains the
README's chain (`tiny`, then `tiny-sft` from its weights, cut to SFT_STEPS steps) and has a
greedy conversation with it, so that picture is a real one (about a minute on a quiet 2-core
machine; its tokens/s are that machine's).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the replay stream
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minimind_tui.app import MiniMindApp
from minimind_tui.screens.inspect import InspectScreen
from snapshot_apps.replay import fixed_events, show_fixed_generation
from snapshot_apps.run_fixtures import write_fixture_runs

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "docs" / "screenshots"
SCENES = ("configure", "dashboard", "samples", "playground", "inspect")
# Enough for the sft model to answer in the format and end its turns (README: within 50 steps
# of the full `tiny` run; after a 50-step pretraining it only babbles), and no more.
SFT_STEPS = 50
CHAT_PROMPTS = ('Who says: "O Romeo, Romeo! wherefore art thou Romeo?"',
                "Continue Juliet's speech: O Romeo, Romeo! wherefore art thou Romeo?",
                "Continue Hamlet's speech: To be, or not to be: that is the question:")


async def render(size: tuple[int, int], theme: str, scene: str) -> str:
    app = MiniMindApp("tiny")
    async with app.run_test(size=size) as pilot:
        app.theme = theme
        await app.workers.wait_for_complete()  # the readouts report from threads
        if scene in ("dashboard", "samples", "playground"):
            app.apply_events(fixed_events())
            app.run_phase = "running"  # the look of a live run, without a worker
            app.switch_mode("dashboard")
            await pilot.pause()
        if scene == "samples":
            await pilot.press("s", "left_square_bracket")  # one step back from the newest
        elif scene == "playground":
            await show_fixed_generation(pilot)
        elif scene == "inspect":
            await app.push_screen(InspectScreen("builtin:shakespeare-val", "", 128))
            await app.workers.wait_for_complete()
        await pilot.pause(0.3)
        await pilot.wait_for_scheduled_animations()  # the log scrolls to its end
        await pilot.pause()
        return app.export_screenshot(title="minimind-tui")


async def render_runs(size: tuple[int, int], theme: str, root: Path, view: str) -> str:
    """The Runs screen over the fixture runs, their comparison, or one of them watched."""
    if view == "watch":
        app = MiniMindApp(watch=root / "tiny-resumed")
    else:
        app = MiniMindApp("tiny", {"train": {"out_dir": str(root / "tiny")}})
    async with app.run_test(size=size) as pilot:
        app.theme = theme
        if view != "watch":
            await pilot.press("f4", "down", "space", "down", "space", "down", "space")
        if view == "compare":
            await pilot.press("c")
            await app.workers.wait_for_complete()  # it reads the runs in a thread
        await pilot.pause(1.5)  # a watched folder's reader reports within a poll or two
        await pilot.wait_for_scheduled_animations()
        return app.export_screenshot(title="minimind-tui")


def train_chain(root: Path) -> Path:
    """The README's pretrain -> sft chain, in `root`: the sft run folder."""
    pretrain, sft = root / "tiny", root / "tiny-sft"
    for args in (["--preset", "tiny", "--out_dir", str(pretrain)],
                 ["--preset", "tiny-sft", "--out_dir", str(sft), "--max_steps", str(SFT_STEPS),
                  "--from_weight", str(pretrain / "pretrain_128.pth")]):
        print("training:", " ".join(args[:2]), flush=True)
        subprocess.run([sys.executable, "-m", "minimind_tui", "--no-ui", *args], check=True,
                       stdout=subprocess.DEVNULL, cwd=ROOT)
    return sft


async def render_chat(size: tuple[int, int], theme: str, model: Path) -> str:
    """The playground in chat mode: a greedy conversation of several turns with `model`."""
    app = MiniMindApp("tiny-sft")
    async with app.run_test(size=size) as pilot:
        app.theme = theme
        app.open_playground(str(model))
        await pilot.pause()
        screen = app.screen
        screen.query_one("#sampling-temperature").value = "0"
        await pilot.click("#playground-chat")
        for turn, prompt in enumerate(CHAT_PROMPTS, start=1):
            screen.query_one("#playground-prompt").text = prompt
            await pilot.press("ctrl+g")
            for _ in range(1200):  # a turn ends with the worker (two minutes at the most)
                await pilot.pause(0.1)
                if (len(screen.chat) == 2 * turn
                        or screen.query_one("#playground-status").has_class("-error")):
                    break
            if len(screen.chat) != 2 * turn:
                raise RuntimeError(f"the chat's turn {turn} did not end: "
                                   f"{screen.query_one('#playground-status').render()}")
        await pilot.pause(0.3)
        return app.export_screenshot(title="minimind-tui")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="140x42", help="terminal WIDTHxHEIGHT")
    parser.add_argument("--theme", default="textual-dark")
    parser.add_argument("--only", default="", metavar="NAME,...",
                        help="render these scenes alone (e.g. playground-chat); default: all")
    args = parser.parse_args()
    only = {name for name in args.only.split(",") if name}

    def wanted(scene: str) -> bool:
        return not only or scene in only

    size = tuple(int(n) for n in args.size.split("x"))
    # A fresh cache and no user presets: the readouts and preset list look the same anywhere.
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MINIMIND_CACHE"] = str(Path(tmp) / "cache")
        os.environ["MINIMIND_TUI_PRESETS"] = str(Path(tmp) / "presets")
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        os.environ["TZ"] = "UTC"  # the runs' "when" column
        time.tzset()
        shots = {scene: asyncio.run(render(size, args.theme, scene))
                 for scene in SCENES if wanted(scene)}
        root = Path(tmp) / "out"
        write_fixture_runs(root)
        for view in filter(wanted, ("runs", "compare", "watch")):
            shots[view] = asyncio.run(render_runs(size, args.theme, root, view))
        if wanted("playground-chat"):
            shots["playground-chat"] = asyncio.run(render_chat(
                size, args.theme, train_chain(Path(tmp) / "chain")))
        for name, svg in shots.items():
            path = OUT_DIR / f"{name}.svg"
            path.write_text(svg.replace(str(Path(tmp)), "~"), encoding="utf-8")
            print(path.relative_to(ROOT))


if __name__ == "__main__":
    main()
