"""A fixed, synthetic event stream of a `tiny` run, for snapshot tests and README screenshots.

Everything is a pure function of the step number (noise from a seeded RNG, times derived from
a constant step time), so the dashboard renders the same picture on every machine. The samples
are real ones (`tiny_samples`), and so is the playground's generation.
"""

from __future__ import annotations

import math
import random

from minimind.events import (CheckpointSaved, EvalResult, Event, LogMessage, RunStarted,
                             Sample, StepMetrics)
from minimind.schedule import learning_rate
from minimind_tui.run.generation_worker import (GenerationEnded, GenerationStarted, ModelLoaded,
                                            TextPiece)
from minimind_tui.form.presets import load_settings
from snapshot_apps.tiny_samples import PROMPTS, TEXTS

STEPS = 200
TOTAL = 300
STEP_TIME = 0.42
TOKENS_PER_STEP = 2048
OUT_DIR = "out/tiny"
# `minimind-tui generate <that run, 300 steps> --prompt ROMEO: --seed 1 --max_new_tokens 64`
GENERATION_PROMPT = "ROMEO:"
GENERATION = (
    " I have have?\n"
    "MARLEANS: O, Edward's, do with the mercy was me both\n"
    "I'll have not but I to my same?\n"
    "Let thou have were off the tribunes!\n"
    "But made, with no soldiers's seen,\n"
    "Well a lay thy ru IV to make no;\n"
    "APEMANTUS:"
)
GENERATION_TOKENS, GENERATION_SECONDS = 64, 0.65


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
        if step in TEXTS:
            greedy, sampled = TEXTS[step]
            events.append(Sample(step=step, prompts=PROMPTS, greedy=greedy, sampled=sampled,
                                 time=0.0))
    return events


async def show_fixed_generation(pilot) -> None:
    """The playground after a generation from the run's checkpoint, without a model: the
    events the worker sent for a real one (seed 1), with its measured speed."""
    app = pilot.app
    app.open_playground(f"{OUT_DIR}/pretrain_128.pth")
    await pilot.pause()
    app.screen.query_one("#playground-prompt").text = GENERATION_PROMPT
    app.screen.query_one("#sampling-max_new_tokens").value = str(GENERATION_TOKENS)
    app.screen.apply([
        ModelLoaded(f"minimind2 128/2: 4 heads x 32, 2 kv heads, ffn 384, no q/k norm, vocab "
                    f"6400 · {OUT_DIR}/pretrain_128.pth", "cpu"),
        GenerationStarted(GENERATION_PROMPT),
        TextPiece(GENERATION, GENERATION_TOKENS, GENERATION_SECONDS),
        GenerationEnded(GENERATION_TOKENS, GENERATION_SECONDS, "length"),
    ])
    await pilot.pause()
