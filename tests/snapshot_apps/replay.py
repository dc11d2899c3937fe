"""A fixed, synthetic event stream of a `tiny` run, for snapshot tests and README screenshots.

Everything is a pure function of the step number (noise from a seeded RNG, times derived from
a constant step time), so the dashboard renders the same picture on every machine.
"""

from __future__ import annotations

import math
import random

from minimind.events import (CheckpointSaved, EvalResult, Event, LogMessage, RunStarted,
                             StepMetrics)
from minimind.schedule import learning_rate
from minimind_tui.presets import load_settings

STEPS = 200
TOTAL = 300
STEP_TIME = 0.42
TOKENS_PER_STEP = 2048
OUT_DIR = "out/tiny"


def fixed_events(steps: int = STEPS) -> list[Event]:
    settings = load_settings("tiny", {"train": {"max_steps": TOTAL, "log_interval": 1}})
    t = settings.train
    rng = random.Random(0)
    events: list[Event] = [
        LogMessage(level="info", text="reading shakespeare_train.jsonl: 100%", time=0.0),
        RunStarted(settings=settings.model_dump(mode="json"), parameters=1_213_056,
                   active_parameters=1_213_056, device="cpu", device_name="CPU (8 threads)",
                   world_size=1, tokens_per_step=TOKENS_PER_STEP, steps_per_epoch=699,
                   total_steps=TOTAL, start_step=0, flops_per_token=7.67e6, peak_flops=None,
                   out_dir=OUT_DIR, time=0.0),
    ]
    for step in range(1, steps + 1):
        loss = 3.1 + 5.7 * math.exp(-step / 45) + rng.gauss(0, 0.08)
        events.append(StepMetrics(
            step=step, total_steps=TOTAL, epoch=1, epochs=1, epoch_step=step,
            steps_per_epoch=699, loss=loss, logits_loss=loss, aux_loss=0.0,
            lr=learning_rate(step - 1, TOTAL, t.learning_rate, t.warmup_iters, t.lr_schedule),
            grad_norm=0.4 + 1.2 * math.exp(-step / 60) + abs(rng.gauss(0, 0.05)),
            tokens_per_sec=TOKENS_PER_STEP / STEP_TIME, tokens_seen=step * TOKENS_PER_STEP,
            elapsed=step * STEP_TIME, eta_seconds=(TOTAL - step) * STEP_TIME,
            step_time=STEP_TIME, rss=612 << 20, mem_total=16 << 30, time=0.0))
        if step == 100:
            events.append(CheckpointSaved(
                step=step, weights_path=f"{OUT_DIR}/pretrain_128.pth",
                resume_path=f"{OUT_DIR}/pretrain_128_resume.pth", time=0.0))
        if step == 150:
            events.append(EvalResult(step=step, val_loss=3.92, tokens=16_256, time=0.0))
            events.append(LogMessage(level="warning", text="grad_norm spiked to 2.91 at step "
                                     "150 (clipped to 1.0)", time=0.0))
    return events
