"""How much does watching a run in the dashboard cost? Training tokens/s of the `tiny` preset,
headless vs with the dashboard open, on the same settings in the same process.

    python scripts/ui_overhead.py [--steps 120] [--rounds 3] [--log-interval N]

The dashboard run is a real `MiniMindApp` driven headless by Textual's test pilot (it lays out
and renders every frame, as in a terminal), started and watched until the run ends. The
headless run is `Trainer(...).run()` with a `QueueSink` nobody reads. Rounds alternate
(headless, dashboard, headless, …) so a noisy neighbour on the machine hits both alike.
Throughput is measured between the first logged step after warm-up and the last one, from the
engine's own `tokens_seen` and `elapsed`, so preparation and the final checkpoint are left out.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from minimind.engine import Trainer
from minimind.events import StepMetrics
from minimind.settings import RunSettings
from minimind.sinks import QueueSink
from minimind_tui.app import MiniMindApp
from minimind_tui.presets import load_settings

WARMUP_STEPS = 10  # the first logged step at or after this one starts the measurement


def throughput(metrics: list[StepMetrics]) -> float:
    steady = [m for m in metrics if m.step >= WARMUP_STEPS]
    first, last = steady[0], steady[-1]
    return (last.tokens_seen - first.tokens_seen) / (last.elapsed - first.elapsed)


def headless(settings: RunSettings) -> float:
    sink = QueueSink()
    result = Trainer(settings, [sink]).run()
    assert result.status == "completed", result
    return throughput([e for e in sink.drain() if isinstance(e, StepMetrics)])


async def with_dashboard(settings: RunSettings) -> float:
    app = MiniMindApp(settings=settings, preset="tiny")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.5)
        app.action_start()
        while app.run_phase == "running":
            await asyncio.sleep(0.5)  # the harness's own polling is UI-thread work too
        assert app.run_phase == "completed", app.history.finished
    # The history's log holds every event the dashboard drained (2000 max: plenty here).
    return throughput([e for _, e in app.history.log if isinstance(e, StepMetrics)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--log-interval", type=int, default=None,
                        help="override the preset's log_interval (1 = the UI's worst case)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        # Checkpoints and validation off: they cost the same in both runs and only add noise.
        train = {"out_dir": tmp, "max_steps": args.steps, "save_interval": 0,
                 "eval_interval": 0, "val_data_path": ""}
        if args.log_interval:
            train["log_interval"] = args.log_interval
        settings = load_settings("tiny", {"train": train})
        headless(settings)  # warm the token cache and the allocator; not counted
        plain, shown = [], []
        for i in range(args.rounds):
            t = time.perf_counter()
            plain.append(headless(settings))
            shown.append(asyncio.run(with_dashboard(settings)))
            print(f"round {i + 1}: headless {plain[-1]:,.0f} tok/s, dashboard "
                  f"{shown[-1]:,.0f} tok/s ({time.perf_counter() - t:.0f} s)", flush=True)
    a, b = statistics.median(plain), statistics.median(shown)
    print(f"headless engine:     {a:,.0f} tokens/s")
    print(f"with the dashboard:  {b:,.0f} tokens/s")
    print(f"ratio:               {b / a:.1%} (target ≥ 95%)")


if __name__ == "__main__":
    main()
