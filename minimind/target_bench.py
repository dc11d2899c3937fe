"""Time to target: how many tokens (and how much training time) each recipe needs to reach the
validation loss the default recipe ends with.

For every seed, the settings as given (the ``default`` recipe) train for N optimizer steps with
a validation pass every ``eval_every`` steps; its last validation loss is that seed's target.
Each other recipe then trains the same N steps with the same seed and data, and its time to
target is the first validation pass at or below the target: the tokens trained on by then, and
the training time by then (validation passes excluded). Both become ratios to the default's
own time to target (which is at step N unless it got there earlier), so 1.5 means 1.5x fewer
tokens. A recipe that never reaches the target in N steps counts as ratio 0 for that seed.

Token counts are exact and do not depend on the machine; wall time does, and on a shared
machine it is noisy, so the report is the median over seeds with the min and max beside it.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
import signal
import statistics
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from typing import Any

import torch

from minimind.engine import Trainer
from minimind.events import EvalResult, RunStarted, StepMetrics
from minimind.parent_death import signal_on_parent_death
from minimind.settings import MOST_EPOCHS, ONE_PROCESS, RunSettings
from minimind.sinks import QueueSink

DEFAULT = "default"
# Recipe words, joined with "+" ("muon+wsd"); each sets train settings over the default's.
RECIPE_WORDS: dict[str, dict[str, Any]] = {
    "muon": {"optimizer": "muon"},
    "wsd": {"lr_schedule": "wsd"},
    # Muon at modded-nanogpt's own step size instead of AdamW's matched one.
    "muonlr": {"optimizer": "muon", "muon_lr": 0.02},
}


class TargetBenchError(RuntimeError):
    pass


class TargetInputError(TargetBenchError):
    """A seed's run refused its input (a bad data line, say): the user's to fix, exit 2."""


def recipe_overrides(name: str) -> dict[str, Any]:
    if name == DEFAULT:
        return {}
    out: dict[str, Any] = {}
    for word in name.split("+"):
        if word == DEFAULT:  # it named 'default' as unknown and known in one line
            raise TargetBenchError(f"{DEFAULT!r} in {name!r}: the default is a recipe alone, "
                                   "never combined (it is what the others are measured "
                                   "against); combine " + ", ".join(RECIPE_WORDS))
        if word not in RECIPE_WORDS:
            raise TargetBenchError(f"unknown recipe word {word!r} in {name!r}; known: "
                                   + ", ".join([DEFAULT, *RECIPE_WORDS]))
        out.update(RECIPE_WORDS[word])
    return out


def curve(settings: RunSettings) -> dict[str, Any]:
    """One run's validation curve: [(step, val_loss, tokens_seen, train_seconds)]."""
    sink = QueueSink()
    result = Trainer(settings, [sink], save_checkpoints=False).run()
    if result.status != "completed":
        error = TargetInputError if result.cause == "input" else TargetBenchError
        raise error(result.reason + (f" ({result.hint})" if result.hint else ""))
    events = sink.drain()
    started = next(e for e in events if isinstance(e, RunStarted))
    points, last_step, eval_seconds = [], None, 0.0
    for event in events:
        if isinstance(event, StepMetrics):
            last_step = event
        elif isinstance(event, EvalResult) and last_step is not None:
            # Each validation pass follows its step's log line; its own time is not training.
            points.append((event.step, event.val_loss, last_step.tokens_seen,
                           last_step.elapsed - eval_seconds))
            eval_seconds += event.time - last_step.time
    return {"points": points, "flops_per_token": started.flops_per_token,
            "device_name": started.device_name}


def first_at_or_below(points: list[tuple], target: float) -> tuple | None:
    return next((p for p in points if p[1] <= target), None)


def _seeds_context() -> multiprocessing.context.BaseContext:
    """Where the seeds' processes come from. Not a fork of this process, whose torch threads
    a fork would leave in an unknown state: a fork of a fresh server that imported torch and
    this module once; spawn (where there is no fork server) imports them for each seed,
    ~5 s of CPU each."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["minimind.seed_server", __name__])
    # Started now, ignoring Ctrl+C from its first instruction (a disposition its exec keeps):
    # the terminal's reaches every process of the group, and one in the server's imports
    # printed a traceback after bench's own one-line report. Bench stops the seeds itself.
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, before)
    return context


SEED_END_SECONDS = 30.0
"""How long an interrupted bench waits for each seed's process to end (its run stops at the next
step, and its temporary folder goes)."""


class SeedEnded(BaseException):
    """A seed's process was told to end: Ctrl+C, `kill`, or the kernel's SIGTERM when the
    process it came from died."""


_in_a_seed = False  # in a seed's process: whether it is training one now
_ending = False  # in a seed's process: told to end, and removing its run's folder


def seed_process(threads: int, interruptible: bool) -> None:
    """The start of each seed's process: its share of the cores; Ctrl+C heard as bench hears
    it (the fork server ignored it; `interruptible`: bench does not); an end when the process
    it came from dies, even by `kill -9` (SIGTERM from the kernel)."""
    if interruptible:
        signal.signal(signal.SIGINT, _end_seed_process)
    signal.signal(signal.SIGTERM, _end_seed_process)
    signal_on_parent_death(signal.SIGTERM)
    torch.set_num_threads(threads)


def _end_seed_process(signum: int, frame: object) -> None:
    global _ending
    if _ending:  # told again (bench's SIGTERM, then the kernel's as bench exits): the first
        return  # is still removing the run's folder, which a second stop cut short
    _ending = True
    if not _in_a_seed:  # between seeds, or after one: nothing to stop or remove
        os._exit(128 + signum)
    raise SeedEnded(signum)


def _seed_here(one_seed: Callable[[int], Any], seed: int) -> Any:
    """`one_seed(seed)` in a seed's process. Told to end, its run stops and its temporary
    folder is removed, then the process ends: the pool's worker loop would go on (waiting for
    work from a parent that may be gone, or printing a traceback at the next Ctrl+C), as an
    exception is only a result to send back there."""
    global _in_a_seed
    _in_a_seed = True
    try:
        return one_seed(seed)
    except SeedEnded as e:
        os._exit(128 + e.args[0])
    finally:
        _in_a_seed = False


def run_target_bench(base: RunSettings, recipes: list[str], steps: int, seeds: list[int],
                     eval_every: int, log: Callable[[str], None], jobs: int = 1
                     ) -> list[dict[str, Any]]:
    """One record per recipe (the default first): median ratios over the seeds, with spread.

    `jobs` > 1 trains that many seeds at once (at most one per core), each in its own process
    with an equal share of the cores (`log` must then be a module-level function, to reach the
    workers). Token counts do not change; wall-time ratios compare runs on the same number of
    threads."""
    names = [DEFAULT] + [r for r in recipes if r != DEFAULT]
    overrides = {name: recipe_overrides(name) for name in names}
    one_seed = partial(_seed_runs, base, overrides, steps, eval_every=eval_every, log=log)
    cores = len(os.sched_getaffinity(0))
    if jobs > cores:
        log(f"bench: --jobs {jobs} on {cores} cores: {cores} seeds at once (more would share "
            "cores unevenly as seeds finish, and bias the wall-time ratios)")
    jobs = min(jobs, len(seeds), cores)
    if jobs <= 1:
        per_seed = [one_seed(seed) for seed in seeds]
    else:
        threads = cores // jobs
        interruptible = signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
        with ProcessPoolExecutor(jobs, mp_context=_seeds_context(),
                                 initializer=seed_process,
                                 initargs=(threads, interruptible)) as pool:
            try:
                per_seed = list(pool.map(partial(_seed_here, one_seed), seeds))
            except BrokenProcessPool:  # killed (out of memory, a signal): no traceback to show
                raise TargetBenchError("a worker process died before its seed was done") from None
            except BaseException:  # interrupted: stop the seeds still training, not wait them out
                pool.shutdown(wait=False, cancel_futures=True)
                workers = multiprocessing.active_children()
                for worker in workers:
                    os.kill(worker.pid, signal.SIGTERM)
                for worker in workers:  # each removes its run's folder as it ends
                    worker.join(SEED_END_SECONDS)
                raise
    targets = [target for target, _, _ in per_seed]
    reached = {name: [runs[name] for _, runs, _ in per_seed] for name in names}
    device_name = per_seed[-1][2]
    records = []
    for name in names:
        tokens = [_ratio(d, r, 2) for d, r in zip(reached[DEFAULT], reached[name])]
        seconds = [_ratio(d, r, 3) for d, r in zip(reached[DEFAULT], reached[name])]
        records.append({
            "recipe": name, "overrides": overrides[name], "steps": steps, "seeds": seeds,
            "eval_every": eval_every, "jobs": max(jobs, 1), "targets": targets,
            "device_name": device_name,
            "reached_at_step": [r[0] if r else None for r in reached[name]],
            "missed": sum(r is None for r in reached[name]),
            "tokens_ratio": ratio_spread(tokens), "time_ratio": ratio_spread(seconds),
            "tokens_ratios": tokens, "time_ratios": seconds})
    return records


WARM_UP_STEPS = 2
"""Each recipe's untimed steps before a seed's timed runs (in the process that trains it)."""


def harness_settings(seed: int, steps: int, eval_every: int, out_dir: str) -> dict[str, Any]:
    """The train settings time to target sets itself for each run (a flag for one is refused,
    as it would be ignored)."""
    return {"seed": seed, "max_steps": steps, "epochs": MOST_EPOCHS, "eval_interval": eval_every,
            "log_interval": eval_every, "save_interval": 0, "from_resume": False,
            "overwrite": True, "out_dir": out_dir, "sample_prompts": [], "sample_interval": 0,
            "report_to": [], **ONE_PROCESS}


def _seed_runs(base: RunSettings, overrides: dict[str, dict[str, Any]], steps: int, seed: int,
               *, eval_every: int, log: Callable[[str], None]
               ) -> tuple[float, dict[str, tuple | None], str]:
    """One seed's runs of each recipe (name -> its train overrides), the default first: its
    target, where each recipe first reached it, and the device's name."""
    target, reached, device_name = None, {}, ""

    def settings_of(recipe: dict[str, Any], length: int, folder: str, **more: Any
                    ) -> RunSettings:
        train = {**base.train.model_dump(), **recipe,
                 **harness_settings(seed, length, eval_every, folder), **more}
        return RunSettings.parse({"model": base.model.model_dump(), "train": train})

    with tempfile.TemporaryDirectory(prefix="minimind-target-") as out_dir:
        # Untimed first: a process's first steps of a recipe pay one-off costs (kernels,
        # allocations) that counted against the default, which runs first; a recipe reaching
        # the target at the default's step read as 0.5x to 8x the time in a short run.
        for name, recipe in overrides.items():
            curve(settings_of(recipe, WARM_UP_STEPS, f"{out_dir}/warm-up-{name}",
                              eval_interval=0, val_data_path=""))
        for name, recipe in overrides.items():
            log(f"bench: time to target: {name}, seed {seed} ({steps} steps) ...")
            run = curve(settings_of(recipe, steps, f"{out_dir}/{name}"))
            device_name = run["device_name"]
            if target is None:  # the default runs first: its last point is the target
                target = run["points"][-1][1]
            reached[name] = first_at_or_below(run["points"], target)
    return target, reached, device_name


def _ratio(default: tuple, recipe: tuple | None, index: int) -> float | None:
    """How many times less of the quantity at `index` the recipe needed than the default;
    None when it missed the target (it needed more than the steps it had)."""
    return default[index] / recipe[index] if recipe else None


def ratio_spread(values: list[float | None]) -> dict[str, float | None]:
    """Median, min and max of the seeds' ratios, a miss counting below every ratio reached:
    where the middle falls on a miss the median is None (a miss is no 0x to average), as is
    the min after any miss and the max when every seed missed."""
    reached = sorted(v for v in values if v is not None)
    ranked = [None] * (len(values) - len(reached)) + reached
    middle = ranked[(len(ranked) - 1) // 2: len(ranked) // 2 + 1]
    median = None if None in middle else statistics.fmean(middle)
    return {"median": median, "min": ranked[0], "max": ranked[-1]}
