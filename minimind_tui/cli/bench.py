"""`minimind-tui bench`: throughput of a preset under several variants, one JSON line each.

    minimind-tui bench --preset minimind2-small --variants baseline,packed,packed+compile \\
        --micro_batches 32,128 --steps 20

JSON goes to stdout (and `--out FILE`, appended line by line so a killed run keeps what it
measured); progress and a summary table go to stderr. Exit 0 when every configuration ran,
1 when any failed, 2 for invalid flags, settings or files (refused before anything runs), 130
when interrupted.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TextIO

from minimind.run_files import run_files
from minimind.safe_read import missing
from minimind.settings import RunSettings, SettingsError
from minimind_tui.cli import exit_codes
from minimind_tui.cli.flags import add_settings_flags, overrides_from_args
from minimind_tui.form.presets import load_settings, load_start_settings

PROG = "minimind-tui bench"

DEFAULT_VARIANTS = "baseline,padded,packed"
# What only the throughput variants read: with --recipes they would be ignored.
THROUGHPUT_ONLY = ("variants", "micro_batches", "warmup", "repeat", "compile_mode", "profile")
# ...and what only time to target reads: without --recipes.
TARGET_ONLY = ("seeds", "jobs", "eval_every")


class OutError(Exception):
    """`--out` cannot be written: refused before anything is measured."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog=PROG,
        description="Train a preset for a fixed number of steps after warm-up and report "
                    "useful tokens/s (padding excluded), padded tokens/s, MFU, the useful "
                    "FLOP/s as a share of this machine's own 2048^3 matmul rate in the run's "
                    "dtype ('matmul'), step time and peak memory for each variant. Data: "
                    "the bundled corpus unless --data_path is given; tokenizer: the bundled "
                    "one unless --tokenizer_path is given.",
        epilog="Variants are '+'-joined words: padded|packed, eager|compile, fp32|bf16|fp16, "
               "ckpt (activation checkpointing), w<N> (N loader workers), mb<N> (micro-batch "
               "N); 'engine' keeps the settings as given; 'baseline' is the upstream-style "
               "loop (padded, tokenized in __getitem__, 1 worker, eager, non-fused AdamW, "
               "fp16+GradScaler on CUDA, fp32 on CPU). A micro-batch keeps the samples per "
               "optimizer step: accumulation_steps = batch_size * accumulation_steps / N. "
               "'prepare' is not training: it builds the packed token cache of the data the "
               "old way (one process) and the new way (worker processes) and reports MB/s.")
    parser.add_argument("--preset", metavar="NAME|PATH", help="bundled or user preset, or a .toml")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS,
                        help=f"comma-separated variants (default: {DEFAULT_VARIANTS})")
    parser.add_argument("--micro_batches", default="", metavar="N,N,...",
                        help="micro-batch sizes to try for every engine variant without an "
                             "mb<N> word (default: the settings' batch_size)")
    parser.add_argument("--warmup", type=int, default=3, metavar="N",
                        help="optimizer steps before timing starts (compilation happens here)")
    parser.add_argument("--steps", type=int, default=10, metavar="N", help="timed optimizer steps")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="run the whole list N times, interleaved, and report each "
                             "configuration's fastest run (for shared, noisy machines)")
    parser.add_argument("--compile_mode", default=None,
                        choices=["default", "reduce-overhead", "max-autotune",
                                 "max-autotune-no-cudagraphs"],
                        help="torch.compile mode for compiled variants")
    parser.add_argument("--out", type=Path, metavar="FILE", help="also append the JSON lines here")
    parser.add_argument("--profile", action="store_true",
                        help="profile the timed steps of each engine variant (torch.profiler) "
                             "and report where their time went: matmul, attention, "
                             "elementwise, loss, optimizer, ... (slower: compare tokens/s "
                             "without it)")
    target = parser.add_argument_group(
        "time to target", "train the settings as given (the 'default' recipe) for --steps steps "
        "per seed; its final validation loss is the target; report each recipe's tokens and "
        "training time to first reach it, as ratios to the default (median, min, max over "
        "the seeds). Validation data: --val_data_path (the bundled held-out split by default)")
    target.add_argument("--recipes", default="", metavar="R,R,...",
                        help="'+'-joined recipe words: muon (optimizer), wsd (lr_schedule), "
                             "muonlr (muon at muon_lr 0.02, modded-nanogpt's step); "
                             "e.g. muon,wsd,muon+wsd,muonlr+wsd. Given, this replaces the throughput "
                             "variants")
    target.add_argument("--seeds", default="1,2,3", metavar="N,N,...",
                        help="seeds, each a full set of runs (default: 1,2,3)")
    target.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="seeds trained at once, each in its own process with an equal "
                             "share of the cores, at most one per core (default: 1; a small "
                             "model does not use many threads well)")
    target.add_argument("--eval_every", type=int, default=0, metavar="N",
                        help="steps between validation passes (default: --steps / 20)")
    add_settings_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if min(args.warmup, args.steps, args.repeat) < 1:
        parser.error("--warmup, --steps and --repeat must be at least 1")
    try:
        micro_batches = [int(x) for x in args.micro_batches.split(",") if x.strip()] or [None]
    except ValueError:
        parser.error(f"--micro_batches takes whole numbers, got {args.micro_batches!r}")
    if any(mb is not None and mb < 1 for mb in micro_batches):
        parser.error("--micro_batches must be at least 1")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not variants:
        parser.error(f"--variants needs at least one variant, got {args.variants!r}")
    if args.recipes and (given := [f"--{name}" for name in THROUGHPUT_ONLY
                                   if getattr(args, name) != parser.get_default(name)]):
        parser.error(f"{', '.join(given)}: for the throughput variants, which --recipes "
                     "replaces (time to target trains --steps steps per seed)")
    if not args.recipes and (given := [f"--{name}" for name in TARGET_ONLY
                                       if getattr(args, name) != parser.get_default(name)]):
        parser.error(f"{', '.join(given)}: for time to target, which --recipes asks for (the "
                     "throughput variants train one process, once)")

    # Imported here so that --help and flag errors answer before torch loads.
    from minimind.bench import BenchError, harness_settings, parse_variant, run_bench

    try:
        overrides = bench_overrides(args)
        if args.recipes:
            return time_to_target(parser, args, overrides)
        if ignored := harness_flags(overrides, harness_settings(1, 1, ""), THROUGHPUT_HARNESS):
            return exit_codes.invalid(*ignored, prog=PROG)
        for v in variants:
            parse_variant(v)
        base = load_settings(args.preset, overrides)
    except (SettingsError, BenchError) as e:
        return refuse(e)

    mode = None if args.compile_mode == "default" else args.compile_mode
    try:
        with json_lines(args.out) as emit:
            records = run_bench(base, args.preset, variants, micro_batches, args.warmup,
                                args.steps, mode, emit, log, args.repeat, args.profile)
    except (SettingsError, BenchError, OutError) as e:  # refused before anything was measured
        return refuse(e)
    except KeyboardInterrupt:  # Ctrl+C, or a time limit: what was measured is already out
        log("minimind-tui bench: interrupted; the lines written so far are complete")
        return exit_codes.SIGNALLED
    log(summary(records))
    if args.profile:
        log(profile_summary(records))
    return exit_codes.FAILED if any("error" in r for r in records) else exit_codes.OK


def time_to_target(parser: argparse.ArgumentParser, args: argparse.Namespace,
                   overrides: dict) -> int:
    try:
        seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--seeds takes whole numbers, got {args.seeds!r}")
    if not seeds or args.eval_every < 0 or args.jobs < 1:
        parser.error("--seeds needs at least one seed, --eval_every must not be negative and "
                     "--jobs must be at least 1")
    if twice := sorted({s for s in seeds if seeds.count(s) > 1}):
        parser.error(f"--seeds names seed {twice[0]} more than once: the median would count "
                     "its runs twice")
    if overrides["train"]["data_path"] == "builtin:shakespeare":
        overrides["train"].setdefault("val_data_path", "builtin:shakespeare-val")
    from minimind.target_bench import (TargetBenchError, TargetInputError, harness_settings,
                                       recipe_overrides, run_target_bench)

    if ignored := harness_flags(overrides, harness_settings(1, 1, 1, ""), TARGET_HARNESS):
        return exit_codes.invalid(*ignored, prog=PROG)
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    # The runs' eval_interval is the harness's; a preset's would ask for validation data in
    # words that name a setting the harness refuses, where the check below names --val_data_path.
    overrides["train"]["eval_interval"] = 0
    try:
        for recipe in recipes:
            recipe_overrides(recipe)
        base = load_start_settings(args.preset, overrides)  # and the files it reads exist
        data = base.model_dump(mode="json")
        for seed in seeds:  # each seed's settings, refused now rather than at its turn
            RunSettings.parse({**data, "train": {**data["train"], "seed": seed}})
        if not base.train.val_data_path:
            raise TargetBenchError("time to target needs validation data: set --val_data_path")
    except (SettingsError, TargetBenchError) as e:
        return refuse(e)
    eval_every = args.eval_every or max(1, args.steps // 20)
    for sig in (signal.SIGTERM, signal.SIGHUP):  # as Ctrl+C: the runs' temporary folders go,
        if signal.getsignal(sig) is not signal.SIG_IGN:  # and so do the seeds' processes
            signal.signal(sig, signal.default_int_handler)
    try:
        with json_lines(args.out) as emit:  # opened first: a bad --out is said at once
            records = run_target_bench(base, recipes, args.steps, seeds, eval_every, log,
                                       args.jobs)
            for record in records:
                emit(record)
    except (OutError, TargetInputError) as e:
        return refuse(e)
    except TargetBenchError as e:
        print(f"minimind-tui bench: error: {e}", file=sys.stderr)
        return exit_codes.FAILED
    except KeyboardInterrupt:
        log("minimind-tui bench: interrupted before every seed had run; nothing to report")
        return exit_codes.SIGNALLED
    log(target_summary(records))
    return exit_codes.OK


THROUGHPUT_HARNESS = ("--warmup and --steps give its length; it evaluates, samples and saves "
                      "nothing, reports to no tracker, in one process and a folder of its own")
TARGET_HARNESS = ("--steps, --seeds and --eval_every set each run, in one process and a folder "
                  "of its own")


def harness_flags(overrides: dict, harness: dict, how: str) -> list[str]:
    """A line for each flag given for a setting the benchmark sets itself: ignored, it would
    measure something else than was asked without a word."""
    return [f"--{name}: the benchmark sets it itself ({how}); leave it out"
            for name in harness if name in overrides["train"]]


def refuse(e: Exception) -> int:
    """Exit 2 with one line per problem: each of a SettingsError's, or the error itself."""
    return exit_codes.invalid(*(e.problems if isinstance(e, SettingsError) else [e]), prog=PROG)


def bench_overrides(args: argparse.Namespace) -> dict:
    """The flags given, typed (a flag of the wrong type: load_settings says). Presets name
    upstream's files (dataset/..., model/); a benchmark uses the bundled ones unless told
    otherwise, so it runs anywhere."""
    overrides = overrides_from_args(args)[0]
    overrides["train"].setdefault("data_path", "builtin:shakespeare")
    overrides["train"].setdefault("tokenizer_path", "")
    return overrides


@contextmanager
def json_lines(path: Path | None) -> Iterator[Callable[[dict], None]]:
    """An `emit(record)` that prints one JSON line to stdout and appends it to `path` at once,
    so a killed benchmark keeps what it measured. `path` is opened on entering, before the
    benchmark runs: one it cannot write is an OutError, not minutes of measuring lost. A run's
    own file is refused: appended to, its config.toml no longer read as TOML, and the run could
    neither resume nor be exported."""
    try:
        target = path.expanduser().resolve() if path else None  # a link to one too
        run_file = target and target in {p.resolve() for p in run_files(target.parent)}
    except (OSError, RuntimeError):  # links in a loop
        raise OutError(f"--out: {path}: {missing(path)}") from None
    if run_file:
        raise OutError(f"--out: {path}: a file of the run in {target.parent}; give the "
                       "benchmark's lines a file of their own")
    try:
        out = _open_appending(path) if path else None
    except OSError as e:
        why = ("a pipe no process reads (writing would wait for one)" if e.errno == errno.ENXIO
               else e.strerror or e)
        raise OutError(f"--out: {path}: {why}") from None
    with out or nullcontext():
        def emit(record: dict) -> None:
            line = json.dumps(record)
            print(line, flush=True)
            if out:
                out.write(line + "\n")
                out.flush()

        yield emit


def _open_appending(path: Path) -> TextIO:
    """`path` opened to append to. Not blocking while it opens: a pipe no one reads would wait
    for a reader forever (one that has a reader, `--out >(tee log)`, is written to)."""
    fd = os.open(path.expanduser(), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o666)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "a", encoding="utf-8")


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def target_summary(records: list[dict]) -> str:
    r0 = records[0]
    rows = [f"time to target: val loss {', '.join(f'{t:.3f}' for t in r0['targets'])} "
            f"(default, {r0['steps']} steps, seeds {r0['seeds']}) on {r0['device_name']}"
            + (f", {r0['jobs']} seeds at once" if r0.get("jobs", 1) > 1 else ""),
            f"{'recipe':16s} {'fewer tokens (median, min-max)':>32s} "
            f"{'less time (median, min-max)':>30s} {'missed':>6s}"]
    for r in records:
        rows.append(f"{r['recipe']:16s} {_spread_text(r['tokens_ratio']):>32s} "
                    f"{_spread_text(r['time_ratio']):>30s} {r['missed']:6d}")
    return "\n".join(rows)


def _spread_text(spread: dict) -> str:
    """"1.20x (1.14-1.26)"; a figure a miss leaves undefined reads "missed"."""
    def shown(value: float | None) -> str:
        return "missed" if value is None else f"{value:.2f}"

    median = "missed" if spread["median"] is None else f"{spread['median']:.2f}x"
    return f"{median} ({shown(spread['min'])}-{shown(spread['max'])})"


def summary(records: list[dict]) -> str:
    header = (f"{'variant':28s} {'micro':>9s} {'useful tok/s':>13s} {'padded tok/s':>13s} "
              f"{'MFU':>6s} {'matmul':>6s} {'step s':>8s} {'peak MiB':>9s} {'vs base':>7s}")
    rows = [header]
    for r in records:
        if r["variant"] == "prepare":
            rows.append(prepare_row(r))
            continue
        micro = f"{r['micro_batch']}x{r['accumulation_steps']}"
        if "error" in r:
            rows.append(f"{r['variant']:28s} {micro:>9s}  {r['error']}")
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        mem = f"{r['peak_mem_bytes'] / 2**20:.0f}" if r["peak_mem_bytes"] else "-"
        ratio = f"{r['speedup_vs_baseline']:.2f}x" if r["speedup_vs_baseline"] else "-"
        share = f"{100 * r['share_of_matmul_rate']:.0f}%"
        rows.append(f"{r['variant']:28s} {micro:>9s} {r['useful_tokens_per_sec']:13,.0f} "
                    f"{r['padded_tokens_per_sec']:13,.0f} {mfu:>6s} {share:>6s} "
                    f"{r['step_time_s']:8.3f} {mem:>9s} {ratio:>7s}")
    return "\n".join(rows)


def profile_summary(records: list[dict]) -> str:
    """Per profiled variant: milliseconds per step and share of the step for each category,
    and the rate the model's own matmuls ran at against the 2048^3 matmul's."""
    from minimind.step_profile import CATEGORIES

    rows = []
    for r in records:
        p = r.get("profile")
        if not p:
            continue
        rows.append(f"where the time went: {r['variant']} (micro-batch {r['micro_batch']}x"
                    f"{r['accumulation_steps']}, {p['profiled_steps']} profiled steps)")
        for name in CATEGORIES:
            rows.append(f"  {name:20s} {1e3 * p['seconds_per_step'][name]:10.1f} ms/step "
                        f"{100 * p['share'][name]:5.1f}%")
        if p["matmul_flops_per_sec"]:
            rows.append(f"  the model's matmuls ran at {p['matmul_flops_per_sec'] / 1e9:.1f} "
                        f"GFLOP/s, {100 * p['matmul_flops_per_sec'] / r['matmul_flops_per_sec']:.0f}%"
                        f" of the 2048^3 matmul's {r['matmul_flops_per_sec'] / 1e9:.1f}")
    return "\n".join(rows)


def prepare_row(r: dict) -> str:
    """The data-preparation line: old single-process MB/s, new MB/s and the ratio."""
    if "error" in r:
        return f"{'prepare (token cache)':28s} {'':>9s}  {r['error']}"
    return (f"{'prepare (token cache)':28s} {r['bytes'] / 1e6:8,.0f}M "
            f"old {r['old_mb_per_sec']:.2f} MB/s -> new {r['new_mb_per_sec']:.2f} MB/s "
            f"(peak memory {r['new_peak_rss_bytes'] / 2**20:,.0f} MiB + "
            f"{r['new_children_peak_rss_bytes'] / 2**20:,.0f} MiB in {r['workers']} workers) "
            f"{r['speedup_vs_baseline']:7.2f}x")
