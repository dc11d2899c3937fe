"""Events as the lines a person reads: the console, the dashboard's log and `watch` all print
these, so a run reads the same wherever it is followed. Each line has a kind ("step", "eval",
"checkpoint", ...) that a viewer may colour; the words are decided here once.
"""

from __future__ import annotations

from minimind.events import (CheckpointSaved, EvalResult, Event, LogMessage, RunFinished,
                             RunStarted, Sample, StepMetrics)
from minimind.shown import shown_line, shown_text
from minimind.units import format_count


def step_line(e: StepMetrics) -> str:
    """Upstream's log line, so MiniMind users read it at a glance. `epoch_time` keeps
    upstream's meaning, the minutes left in the epoch; when max_steps ends the run first, the
    line shows `eta`, the minutes left in the run, instead."""
    left_in_epoch = e.steps_per_epoch - e.epoch_step
    left_in_run = e.total_steps - e.step
    time_left = (f"epoch_time: {left_in_epoch * e.step_time / 60:.1f}min"
                 if left_in_epoch <= left_in_run
                 else f"eta: {left_in_run * e.step_time / 60:.1f}min")
    return (f"Epoch:[{e.epoch}/{e.epochs}]({e.epoch_step}/{e.steps_per_epoch}), "
            f"loss: {e.loss:.4f}, logits_loss: {e.logits_loss:.4f}, aux_loss: {e.aux_loss:.4f}, "
            f"lr: {e.lr:.8f}, {time_left}, "
            f"grad_norm: {e.grad_norm:.3f}, tokens/s: {e.tokens_per_sec:,.0f}")


def with_hint(reason: str, hint: str | None) -> str:
    """A refusal or failure and what to do about it, on one line, as every console says it."""
    return f"{reason} | hint: {hint}" if hint else reason


def one_line(text: str) -> str:
    """A generated text on one line: its line breaks shown as ⏎, other controls written out."""
    return shown_text(text.replace("\r\n", "⏎").replace("\n", "⏎").replace("\r", "⏎"))


def sample_lines(e: Sample) -> str:
    """Each prompt twice, continued greedily and by the seeded sample, one line each."""
    lines = [f"[sample] step {e.step}"]
    for prompt, greedy, sampled in zip(e.prompts, e.greedy, e.sampled):
        lines.append(f"  greedy  {one_line(prompt + greedy)}")
        lines.append(f"  sampled {one_line(prompt + sampled)}")
    return "\n".join(lines)


def per_step_label(stage: str, packing: bool) -> str:
    """What a step's batch_size × max_seq_len × accumulation_steps counts: tokens only where
    packed text fills every position; padded samples, and sft/lora (whose tokens are the
    replies), have positions that are no such count."""
    return "tokens/step" if stage == "pretrain" and packing else "positions/step"


def describe(e: Event) -> tuple[str, str] | None:
    """(line, kind) for an event, or None for events that print nothing."""
    if isinstance(e, StepMetrics):
        return step_line(e), "step"
    # A message or a path can hold what a terminal would act on (a file name with ESC in it).
    if isinstance(e, LogMessage):
        text = shown_text(e.text)
        return (text if e.level == "info" else f"[{e.level}] {text}"), e.level
    if isinstance(e, EvalResult):
        return f"[eval] step {e.step}: val_loss {e.val_loss:.4f} ({e.tokens:,} tokens)", "eval"
    if isinstance(e, Sample):
        return sample_lines(e), "sample"
    if isinstance(e, CheckpointSaved):
        return f"[checkpoint] step {e.step}: {shown_line(e.weights_path)}", "checkpoint"
    if isinstance(e, RunStarted):
        active = (f" ({format_count(e.active_parameters)} active)"
                  if e.active_parameters != e.parameters else "")
        resume = f" | resuming at step {e.start_step}" if e.start_step else ""
        train = e.settings.get("train", {})
        per_step = per_step_label(train.get("stage", "pretrain"), train.get("packing", True))
        return (f"Model params: {format_count(e.parameters)}{active} | device: {e.device_name} "
                f"x{e.world_size} | {per_step}: {e.tokens_per_step:,} | steps: "
                f"{e.total_steps} ({e.steps_per_epoch}/epoch){resume}"), "start"
    if isinstance(e, RunFinished):
        # A start refused (a resume's checkpoint among them) trained nothing: no "step 0".
        where = "before training" if e.cause == "input" and not e.step else f"at step {e.step}"
        parts = [f"[{e.status}] {where}", e.reason and with_hint(e.reason, e.hint),
                 e.details_path and f"details: {e.details_path}"]
        line = shown_line(" | ".join(p for p in parts if p))
        return line, "error" if e.status == "failed" else "finished"
    return None
