"""What does watching a run in the dashboard cost? Training tokens/s headless vs with the
dashboard open, on the same settings in the same process, plus the UI thread's own CPU time.

    python scripts/ui_overhead.py [--preset tiny] [--steps 80] [--rounds 5] [--log-interval N]
                                  [--flag value ...]     # any settings flag, e.g. --batch_size 4

Each round runs, back to back:
  headless   `Trainer(...).run()` in the main thread with a `QueueSink` nobody reads (the CLI);
  dashboard  a real `MiniMindApp` driven by Textual's test pilot (it lays out and renders every
             frame, as in a terminal), started and watched until the run ends.
Throughput is measured between the first logged step after warm-up and the last one, from the
engine's own `tokens_seen` and `elapsed`, so preparation and the final checkpoint are left out.

Two figures, because a shared machine's noise swings single runs by ±10%:
  * the median over rounds of dashboard/headless tokens/s, with its spread (min..max): each
    round's pair runs back to back, so both see about the same neighbours;
  * the UI thread's CPU seconds per second of training (from the process's per-thread times):
    what the dashboard takes from the training thread, which noise barely moves. On a machine
    with cores to spare the training thread does not feel it; on a saturated one it costs at most
    that share.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from minimind.engine import Trainer  # noqa: E402
from minimind.events import StepMetrics  # noqa: E402
from minimind.settings import RunSettings  # noqa: E402
from minimind.sinks import QueueSink  # noqa: E402
from minimind_tui.app import MiniMindApp  # noqa: E402
from minimind_tui.form.presets import load_settings  # noqa: E402
from minimind_tui.run.phase import RunPhase  # noqa: E402

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


def main_thread_cpu() -> float:
    """CPU seconds the main (UI) thread has used so far."""
    me = threading.main_thread().native_id
    thread = next(t for t in psutil.Process().threads() if t.id == me)
    return thread.user_time + thread.system_time


async def with_dashboard(settings: RunSettings) -> tuple[float, float]:
    """(training tokens/s, UI CPU seconds per second of training). `settings.train.out_dir` must
    not hold a run: Start would ask what to do with it."""
    app = MiniMindApp("tiny", settings.to_toml_dict())
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.5)
        app.action_start()
        deadline = time.monotonic() + 120
        while app.history.started is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the run did not start; the app shows {app.screen!r}")
            await asyncio.sleep(0.05)
        cpu, wall = main_thread_cpu(), time.perf_counter()
        while app.run_phase == RunPhase.RUNNING:
            await asyncio.sleep(0.5)  # the harness's own polling is UI-thread work too
        ui_share = (main_thread_cpu() - cpu) / (time.perf_counter() - wall)
        assert app.run_phase == RunPhase.COMPLETED, app.history.finished
    # The history's log holds every event the dashboard drained (2000 max: plenty here).
    steps = [e for _, e in app.history.log if isinstance(e, StepMetrics)]
    return throughput(steps), ui_share


def flag_overrides(extra: list[str]) -> dict[str, dict[str, str]]:
    from minimind_tui.cli.main import build_parser
    from minimind_tui.cli.flags import overrides_from_args

    return overrides_from_args(build_parser().parse_args(extra))[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--log-interval", type=int, default=None,
                        help="override the preset's log_interval (1 = the UI's worst case)")
    args, extra = parser.parse_known_args()
    overrides = flag_overrides(extra)
    # As in the benchmark: the bundled corpus and tokenizer unless flags say otherwise, since the
    # upstream presets name MiniMind's dataset/ and model/ folders.
    overrides["train"].setdefault("data_path", "builtin:shakespeare")
    overrides["train"].setdefault("tokenizer_path", "")
    headless_rates, dashboard_rates, ui_shares = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        # Checkpoints and validation off: they cost the same in all runs and only add noise.
        train = {**overrides["train"], "out_dir": f"{tmp}/headless", "max_steps": args.steps,
                 "save_interval": 0, "eval_interval": 0, "val_data_path": "", "overwrite": True,
                 "sample_prompts": []}
        if args.log_interval:
            train["log_interval"] = args.log_interval
        settings = load_settings(args.preset, {"model": overrides["model"], "train": train})
        headless(settings)  # warm the token cache and the allocator; not counted
        for i in range(args.rounds):
            started = time.perf_counter()
            headless_rates.append(headless(settings))
            fresh = {**train, "out_dir": f"{tmp}/dashboard-{i}"}  # Start asks about old runs
            rate, share = asyncio.run(with_dashboard(
                load_settings(args.preset, {"model": overrides["model"], "train": fresh})))
            dashboard_rates.append(rate)
            ui_shares.append(share)
            print(f"round {i + 1}: headless {headless_rates[-1]:,.0f} tok/s, dashboard "
                  f"{rate:,.0f} tok/s, UI thread {share:.1%} of a core "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
    ratios = [d / h for d, h in zip(dashboard_rates, headless_rates, strict=True)]
    summary = {
        "preset": args.preset, "flags": extra, "steps": args.steps, "rounds": args.rounds,
        "headless_tokens_per_sec": statistics.median(headless_rates),
        "dashboard_tokens_per_sec": statistics.median(dashboard_rates),
        "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
        "ratio_max": max(ratios), "ui_thread_cpu_share_median": statistics.median(ui_shares),
        "cpus": psutil.cpu_count(), "load_average": psutil.getloadavg()[0],
    }
    print(f"dashboard / headless: {summary['ratio_median']:.1%} median "
          f"({summary['ratio_min']:.1%} .. {summary['ratio_max']:.1%}); target ≥ 95%")
    print(f"UI thread: {summary['ui_thread_cpu_share_median']:.1%} of a core per second of "
          "training (median)")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
