"""Run folders as a trainer leaves them (config.toml, metrics.jsonl, run.json), written from
fixed synthetic curves: for the runs view, the comparison snapshot and the README screenshots.
Every value is a function of the arguments, so the pictures are the same on every machine."""

from __future__ import annotations

import math
import os
import random
from pathlib import Path

from minimind.events import (CheckpointSaved, EvalResult, Event, RunFinished, RunStarted,
                             StepMetrics)
from minimind.run_folder import RunFolder
from minimind.run_status import RunStatus, this_process
from minimind.schedule import learning_rate
from minimind_tui.form.presets import load_settings

TOKENS_PER_STEP = 2048
STEP_TIME = 0.4
WHEN = 1_780_000_000.0  # a fixed "last update" (2026-05-28), shown in the when column


def step_event(step: int, total: int, loss: float, lr: float) -> StepMetrics:
    return StepMetrics(
        step=step, total_steps=total, epoch=1, epochs=1, epoch_step=step, steps_per_epoch=total,
        loss=loss, logits_loss=loss, aux_loss=0.0, lr=lr, grad_norm=0.5,
        tokens_per_sec=TOKENS_PER_STEP / STEP_TIME, tokens_seen=step * TOKENS_PER_STEP,
        elapsed=step * STEP_TIME, eta_seconds=(total - step) * STEP_TIME, step_time=STEP_TIME,
        time=WHEN)


def run_events(steps: int, total: int, learning: float, floor: float, seed: int,
               crash_at: int | None = None, resume_from: int | None = None,
               eval_every: int = 50) -> list[Event]:
    """A run's events: an eval every `eval_every` steps; with `crash_at`, the steps up to it,
    then a resume from `resume_from` (the steps between logged twice, as after a crash)."""
    settings = load_settings("tiny", {"train": {"learning_rate": learning, "max_steps": total}})
    rng = random.Random(seed)

    def started(start: int) -> RunStarted:
        return RunStarted(settings=settings.model_dump(mode="json"), parameters=1_213_056,
                          active_parameters=1_213_056, device="cpu", device_name="CPU",
                          world_size=1, tokens_per_step=TOKENS_PER_STEP, steps_per_epoch=total,
                          total_steps=total, start_step=start, flops_per_token=7.7e6,
                          peak_flops=None, out_dir="out", time=WHEN)

    def segment(first: int, last: int) -> list[Event]:
        out: list[Event] = []
        for step in range(first, last + 1):
            loss = floor + 5.5 * math.exp(-step * learning / 0.15) + rng.gauss(0, 0.05)
            out.append(step_event(step, total, loss,
                                  learning_rate(step - 1, total, learning, 10, "cosine")))
            if step % eval_every == 0:
                out.append(EvalResult(step=step, val_loss=loss + 0.25, tokens=8192, time=WHEN))
        return out

    if crash_at is None:
        return [started(0), *segment(1, steps)]
    return [started(0), *segment(1, crash_at),
            CheckpointSaved(step=resume_from, weights_path="w.pth", resume_path="r.pth",
                            time=WHEN),
            started(resume_from), *segment(resume_from + 1, steps)]


def write_run(folder: Path, events: list[Event], *, state: str, learning: float,
              alive: bool = False) -> Path:
    """The folder a run with `events` leaves; `state` is what run.json says, `alive` makes the
    status name this process (a live run) instead of one long gone."""
    folder.mkdir(parents=True, exist_ok=True)
    total = next(e.total_steps for e in events if isinstance(e, RunStarted))
    steps = [e for e in events if isinstance(e, StepMetrics)]
    evals = [e.val_loss for e in events if isinstance(e, EvalResult)]
    load_settings("tiny", {"train": {"learning_rate": learning, "max_steps": total}}
                  ).save_toml(folder / "config.toml")
    ended = state in ("completed", "stopped")  # with a checkpoint at its last step, as a run
    if ended:                                    # that ends or stops writes one
        events = [*events, CheckpointSaved(step=steps[-1].step, weights_path="w.pth",
                                           resume_path="r.pth", time=WHEN),
                  RunFinished(status=state, step=steps[-1].step, time=WHEN)]
    (folder / "metrics.jsonl").write_text("".join(e.to_json() + "\n" for e in events))
    last = steps[-1]
    process = this_process() if alive else {"pid": 2 ** 22 + 1, "host": this_process()["host"],
                                            "process_started": 1.0}
    RunFolder(folder).write_status(RunStatus(
        state=state, **process, started=WHEN - last.elapsed, updated=WHEN,
        step=last.step, total_steps=total, tokens_seen=last.tokens_seen,
        tokens_per_sec=last.tokens_per_sec, elapsed=last.elapsed, loss=last.loss,
        val_loss=evals[-1] if evals else None, best_val_loss=min(evals) if evals else None,
        parameters=1_213_056, device="cpu", checkpoint_step=last.step if ended else None))
    os.utime(folder / "metrics.jsonl", (WHEN, WHEN))
    return folder


def write_fixture_runs(root: Path) -> list[Path]:
    """Four runs of the tiny model under `root`: a completed one, a stopped one with another
    learning rate, a crashed-then-resumed one, and one that is running (this process)."""
    return [
        write_run(root / "tiny-lr3e-3", run_events(300, 300, 3e-3, 3.0, 1),
                  state="completed", learning=3e-3),
        write_run(root / "tiny-lr1e-3", run_events(200, 300, 1e-3, 3.2, 2),
                  state="stopped", learning=1e-3),
        write_run(root / "tiny-resumed", run_events(250, 300, 2e-3, 3.1, 3, crash_at=140,
                                                    resume_from=100),
                  state="completed", learning=2e-3),
        write_run(root / "tiny-live", run_events(120, 300, 5e-3, 3.4, 4),
                  state="running", learning=5e-3, alive=True),
    ]
