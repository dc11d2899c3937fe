"""How much does watching a run in the dashboard cost? Training tokens/s of the `tiny` preset,
headless vs with the dashboard open, on the same settings in the same process.

    python scripts/ui_overhead.py [--steps 80] [--rounds 5] [--log-interval N]

Three runs per round, in turn:
  headless   `Trainer(...).run()` in the main thread with a `QueueSink` nobody reads (the CLI);
  thread     the same call in a plain thread, no UI: what running in a worker thread costs;
  dashboard  a real `MiniMindApp` driven headless by Textual's test pilot (it lays out and
             renders every frame, as in a terminal), started and watched until the run ends.
Throughput is measured between the first logged step after warm-up and the last one, from the
engine's own `tokens_seen` and `elapsed`, so preparation and the final checkpoint are left out.
On a shared machine single runs swing by ±10%, so the verdict is the median of the per-round
ratios (each round's runs are back to back, so they see about the same neighbours).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
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


def in_thread(settings: RunSettings) -> float:
    result: list[float] = []
    thread = threading.Thread(target=lambda: result.append(headless(settings)))
    thread.start()
    thread.join()
    return result[0]


async def with_dashboard(settings: RunSettings) -> float:
    app = MiniMindApp("tiny", settings.to_toml_dict())
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
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--log-interval", type=int, default=None,
                        help="override the preset's log_interval (1 = the UI's worst case)")
    args = parser.parse_args()
    runs: dict[str, list[float]] = {"headless": [], "thread": [], "dashboard": []}
    with tempfile.TemporaryDirectory() as tmp:
        # Checkpoints, validation and samples off: they cost the same in all runs and only
        # add noise.
        train = {"out_dir": tmp, "max_steps": args.steps, "save_interval": 0,
                 "eval_interval": 0, "val_data_path": "", "sample_prompts": []}
        if args.log_interval:
            train["log_interval"] = args.log_interval
        settings = load_settings("tiny", {"train": train})
        headless(settings)  # warm the token cache and the allocator; not counted
        for i in range(args.rounds):
            t = time.perf_counter()
            runs["headless"].append(headless(settings))
            runs["thread"].append(in_thread(settings))
            runs["dashboard"].append(asyncio.run(with_dashboard(settings)))
            print(f"round {i + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in runs.items())
                  + f" tok/s ({time.perf_counter() - t:.0f} s)", flush=True)
    med = {k: statistics.median(v) for k, v in runs.items()}
    ratio = statistics.median(d / h for d, h in zip(runs["dashboard"], runs["headless"],
                                                    strict=True))
    ui_only = statistics.median(d / t for d, t in zip(runs["dashboard"], runs["thread"],
                                                      strict=True))
    print(f"headless engine:          {med['headless']:,.0f} tokens/s (median)")
    print(f"engine in a thread:       {med['thread']:,.0f} tokens/s")
    print(f"with the dashboard:       {med['dashboard']:,.0f} tokens/s")
    print(f"dashboard / headless:     {ratio:.1%} (median of rounds; target ≥ 95%)")
    print(f"dashboard / thread:       {ui_only:.1%} (the UI's own share)")


if __name__ == "__main__":
    main()
