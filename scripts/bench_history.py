"""How long a long run takes to load and draw: a synthetic 1,000,000-step metrics.jsonl (a step
line each step, an eval every 1,000, a checkpoint every 5,000), loaded the way `watch` loads it
and drawn as the dashboard's loss chart at 120x40.

    python scripts/bench_history.py [--steps 1000000] [--file /tmp/metrics-1M.jsonl]

Prints the file size, the load time (read + parse into a RunHistory), the peak memory of the
loading process, the time of one chart draw, and for comparison the time per line of parsing
every line as an event (the path short live tails take). Each measurement runs in a fresh
process, so imports and the file's generation do not count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TOKENS_PER_STEP = 8192


def write_metrics(path: Path, steps: int) -> None:
    from minimind.events import CheckpointSaved, EvalResult, RunStarted, StepMetrics

    started = RunStarted(settings={"model": {}, "train": {}}, parameters=25_830_000,
                         active_parameters=25_830_000, device="cuda:0", device_name="GPU",
                         world_size=1, tokens_per_step=TOKENS_PER_STEP, steps_per_epoch=steps,
                         total_steps=steps, start_step=0, flops_per_token=1.6e8,
                         peak_flops=1e15, out_dir="out")
    with open(path, "w", encoding="utf-8") as f:
        f.write(started.to_json() + "\n")
        for step in range(1, steps + 1):
            loss = 2.0 + 6.0 * math.exp(-step / 20_000) + 0.05 * math.sin(step * 0.37)
            f.write(StepMetrics(
                step=step, total_steps=steps, epoch=1, epochs=1, epoch_step=step,
                steps_per_epoch=steps, loss=loss, logits_loss=loss, aux_loss=0.0,
                lr=5e-4 * (0.1 + 0.45 * (1 + math.cos(math.pi * step / steps))),
                grad_norm=0.8, tokens_per_sec=250_000.0, tokens_seen=step * TOKENS_PER_STEP,
                elapsed=step * 0.033, eta_seconds=(steps - step) * 0.033, step_time=0.033,
                mfu=0.31, mem_allocated=3 << 30, mem_reserved=4 << 30, mem_peak=5 << 30,
                mem_total=80 << 30).to_json() + "\n")
            if step % 1000 == 0:
                f.write(EvalResult(step=step, val_loss=loss + 0.1, tokens=160_000).to_json()
                        + "\n")
            if step % 5000 == 0:
                f.write(CheckpointSaved(step=step, weights_path="out/pretrain_512.pth",
                                        resume_path="out/pretrain_512_resume.pth").to_json()
                        + "\n")


def measure_load(path: Path) -> dict[str, float]:
    """In this (fresh) process: load the file, then draw the loss chart once."""
    from minimind_tui.run.metrics_reader import read_history

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start, cpu = time.perf_counter(), time.process_time()
    history = read_history(path)
    load, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    draw = asyncio.run(_draw(history))
    return {"points": len(history.steps), "load_s": load, "load_cpu_s": cpu, "draw_s": draw,
            "peak_rss_mib": peak / 1024, "load_rss_mib": (peak - rss_before) / 1024}


async def _draw(history) -> float:
    """One draw of the dashboard's loss chart (loss, ema, val) at 120x40, built and rendered."""
    from textual.app import App

    from minimind_tui.widgets.metric_plot import MetricPlot, PlotSeries

    class ChartApp(App[None]):
        def compose(self):
            yield MetricPlot()

    app = ChartApp()
    async with app.run_test(size=(120, 40)):
        plot = app.query_one(MetricPlot)
        start = time.perf_counter()
        plot.draw([PlotSeries("loss", history.steps, history.loss, "foreground"),
                   PlotSeries("ema", history.steps, history.loss_ema, "primary"),
                   PlotSeries("val", history.val_steps, history.val_loss, "success",
                              kind="scatter")], "step")
        plot.render()
        return time.perf_counter() - start


def measure_line_by_line(path: Path, lines: int = 100_000) -> dict[str, float]:
    """Parsing each line as an event (json + dataclass), per line, over the first lines."""
    from minimind.follow import parse_event

    with open(path, "rb") as f:
        head = [f.readline() for _ in range(lines)]
    start = time.perf_counter()
    for line in head:
        parse_event(line)
    return {"line_by_line_us": (time.perf_counter() - start) / lines * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--file", type=Path, default=None)
    parser.add_argument("--measure", choices=["load", "lines"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    path = args.file or Path(f"/tmp/minimind-metrics-{args.steps}.jsonl")
    if args.measure == "load":
        print(json.dumps(measure_load(path)))
        return
    if args.measure == "lines":
        print(json.dumps(measure_line_by_line(path)))
        return
    if not path.exists():
        start = time.perf_counter()
        write_metrics(path, args.steps)
        print(f"wrote {path} in {time.perf_counter() - start:.0f} s")
    results = {}
    for what in ("load", "lines"):
        out = subprocess.run([sys.executable, __file__, "--file", str(path), "--measure", what],
                             capture_output=True, text=True, check=True)
        results.update(json.loads(out.stdout.strip().splitlines()[-1]))
    size = path.stat().st_size
    print(f"{args.steps:,} steps, {size / 2**20:,.0f} MiB ({os.cpu_count()} CPUs, load "
          f"average {os.getloadavg()[0]:.1f})")
    print(f"load into RunHistory: {results['load_s']:.1f} s ({results['load_cpu_s']:.1f} s of "
          f"CPU; {size / 2**20 / results['load_s']:,.0f} MiB/s, {results['points']:,} points "
          "kept)")
    print(f"peak memory of the loading process: {results['peak_rss_mib']:,.0f} MiB "
          f"(+{results['load_rss_mib']:,.0f} MiB while loading)")
    print(f"one loss chart draw (3 series, 120x40): {results['draw_s'] * 1000:.0f} ms")
    print(f"for comparison, parsing line by line: {results['line_by_line_us']:.1f} us/line "
          f"= {results['line_by_line_us'] * args.steps / 1e6:.0f} s for the file's step lines")


if __name__ == "__main__":
    main()
