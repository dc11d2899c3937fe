"""Whether a run can continue from its resume checkpoint under these settings.

The rules have one home here. The engine applies them to the checkpoint's own record when the
run starts; the form (on every change) and every launch apply them first to what the run
folder records of the same run (config.toml, run.json), so a resume that would be refused is
never shown as ready to start. Loading the checkpoint itself would take seconds (a 200M
model's optimizer state is a GB): the engine's check stays the one that decides. Light on
purpose (no torch).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from minimind.environment import as_the_run_took_it, processes_launched
from minimind.run_files import CONFIG_FILE, METRICS_FILE, resume_files, resume_name
from minimind.run_folder import RunFolder
from minimind.run_status import first_start
from minimind.settings import Problem, RunSettings, SettingsError, TrainSettings, planned_steps

_DATA_ORDER = ("stage", "packing", "max_seq_len", "batch_size", "accumulation_steps", "seed")
"""Settings that fix which samples each step reads; changing them would break exact resume.
The data themselves are checked by their contents, wherever the file lies now (a data_path
moved to another disk, or written from another folder, is the same data)."""

_STATE_SHAPE = {"pretrain": ("optimizer",), "sft": ("optimizer",),
                "lora": ("optimizer", "lora_rank")}
"""What else the saved state itself fixes: the optimizer whose moments it holds, a lora run's
adapters' rank."""


def differences(saved: dict[str, Any], current: dict[str, Any],
                keys: list[tuple[str, str]]) -> list[str]:
    """"train.lr_schedule (cosine → wsd)" for each (section, name) whose value differs between
    a record's settings and these (both as JSON): the one way a resume names what changed."""
    return [f"{s}.{k} ({saved.get(s, {}).get(k)} → {current[s][k]})"
            for s, k in keys if saved.get(s, {}).get(k) != current[s][k]]


def fixed_changes(saved: dict[str, Any], settings: RunSettings) -> list[str]:
    """What these settings change of those a resume may not change: the model, the data's
    order, the state's shape, and the base the weights came from (the state holds it, so a
    new from_weight would only be recorded, not trained on). A from_weight written another way
    (absolute, or from another folder) that names the same file is no change."""
    current = settings.model_dump(mode="json")
    # Runs recorded before the optimizer was a setting trained with AdamW.
    saved = {**saved, "train": {"optimizer": "adamw", **saved.get("train", {})}}
    keys = [("model", k) for k in current["model"]] + [
        ("train", k) for k in _DATA_ORDER + _STATE_SHAPE[settings.train.stage]]
    changed = differences(saved, current, keys)
    if not same_base(saved, settings):
        changed += differences(saved, current, [("train", "from_weight")])
    return changed


def same_base(saved: dict[str, Any], settings: RunSettings) -> bool:
    """Whether the recorded from_weight and this one name the same file: the recorded one as
    its run took it (a relative one from the folder the run was started in)."""
    t, recorded = settings.train, saved.get("train", {})
    before = recorded.get("from_weight")
    if before == t.from_weight or not (isinstance(before, str) and before and t.from_weight):
        return before == t.from_weight
    try:
        then = as_the_run_took_it(before, Path(t.out_dir).expanduser(),
                                  str(recorded.get("out_dir", "")))
        return then.resolve() == Path(t.from_weight).expanduser().resolve()
    except (RuntimeError, OSError):  # an unknown ~user, an unusable path: the text decides
        return False


def missing_checkpoint(path: Path, out_dir: Path) -> str:
    """The refusal of a resume whose checkpoint is not there. Its name comes from the settings
    (save_weight, hidden_size, use_moe, lora_name): a changed one looks for a file the run
    never wrote, beside the one it did."""
    found = [p.relative_to(out_dir) for p in resume_files(out_dir)] if out_dir.is_dir() else []
    return f"no resume checkpoint at {path}" + (
        f"; the folder holds {', '.join(map(str, found))}: resume with the settings that name "
        "it (save_weight, hidden_size, use_moe, lora_name as its run had them)" if found else "")


def changed_text(changed: list[str], record: str) -> str:
    return (f"{record} used different settings, so it cannot continue exactly: "
            + ", ".join(changed))


def checkpoint_refusal(changed: list[str], settings: RunSettings) -> str:
    """The engine's refusal of a checkpoint whose run used other settings. Where the folder's
    config.toml records these settings, the run's two records disagree: it names both (each
    check named its own, and neither value could start)."""
    text = changed_text(changed, "the checkpoint's run")
    folder = Path(settings.train.out_dir).expanduser()
    recorded = _recorded_settings(folder)
    if recorded is not None and not fixed_changes(recorded.model_dump(mode="json"), settings):
        text += (f"; but {folder / CONFIG_FILE} records these settings: the run's two records "
                 "disagree, so one was changed after the checkpoint was written; resume with "
                 f"the checkpoint's values and restore {CONFIG_FILE} to match")
    return text


def _recorded_settings(folder: Path) -> RunSettings | None:
    """The settings the folder's config.toml records, or None (a FIFO there is not read)."""
    record = folder / CONFIG_FILE
    try:
        return RunSettings.from_toml(record) if record.is_file() else None
    except SettingsError:
        return None


def plan_problem(reached: int, steps_per_epoch: int, t: TrainSettings, completed: bool
                 ) -> Problem | None:
    """What the plan of these settings (epochs, max_steps) leaves a resume at step `reached`
    of a run whose epochs take `steps_per_epoch`: a plan that ends before it, or nothing left
    to train after a completed run (one that reached its last step but stopped or crashed
    before its final evaluation may resume to finish)."""
    total = planned_steps(steps_per_epoch, t.epochs, t.max_steps)
    if reached > total:  # a resumed run goes on from the checkpoint, never back
        if t.max_steps and t.max_steps < reached:
            return Problem("train.max_steps", f"{t.max_steps} is below step {reached}, where the "
                           f"checkpoint stands: set max_steps to at least {reached} (or 0 for "
                           "the epochs' end)")
        return Problem("train.epochs", f"{t.epochs} epoch(s) of {steps_per_epoch} steps end at "
                       f"step {total}, before step {reached}, where the checkpoint stands: set "
                       f"epochs to at least {math.ceil(reached / steps_per_epoch)}")
    if not (completed and reached == total):
        return None
    epochs_end = steps_per_epoch * t.epochs  # what ends the run: raising the other does nothing
    ends = ([] if t.max_steps and t.max_steps < epochs_end else ["epochs"]) + (
        ["max_steps"] if t.max_steps and t.max_steps <= epochs_end else [])
    return Problem("train.from_resume", f"the run completed at step {reached}, where these "
                   f"settings end it too: nothing is left to train; raise {' and '.join(ends)} "
                   "to train on", tuple(f"train.{name}" for name in ends))


def resume_problems(settings: RunSettings) -> list[Problem]:
    """What the run folder's records say a resume under `settings` would meet: no checkpoint
    to continue from, settings it may not change, or a completed run with nothing left."""
    t = settings.train
    folder = RunFolder(Path(t.out_dir).expanduser())
    weights = folder.path / settings.weights_name()
    checkpoint = weights.parent / resume_name(weights.name)
    recorded = _recorded_settings(folder.path)
    # A changed stage or name looks for a checkpoint the run never wrote: the change is the
    # cause, not the missing file.
    if changed := recorded and fixed_changes(recorded.model_dump(mode="json"), settings):
        return [Problem("train.from_resume", changed_text(changed, f"the run in {t.out_dir} "
                                                                    f"({CONFIG_FILE})"))]
    if not checkpoint.is_file():
        return [Problem("train.from_resume", missing_checkpoint(checkpoint, folder.path))]
    if recorded is None:  # no usable record: the checkpoint's own decides when the run starts
        return []
    # An epoch's steps as the run counted them (the data may not change, nor the batch): with
    # data allowed to change, only the engine, which reads them, knows the plan.
    status = folder.status()
    if status is None or status.checkpoint_step is None:
        return []
    if status.world_size != (now := processes_launched(settings)):  # each rank's shard, state
        return [Problem("train.from_resume", f"the run in {t.out_dir} trained in "
                                             f"{processes(status.world_size)}; resume it with "
                                             f"as many (nproc_per_node × nnodes, now {now})")]
    if t.allow_data_change:
        return []
    # (a run.json older than the field: the start its metrics.jsonl records)
    steps_per_epoch = status.steps_per_epoch or getattr(
        first_start(folder.path / METRICS_FILE), "steps_per_epoch", 0)
    problem = steps_per_epoch and plan_problem(status.checkpoint_step, steps_per_epoch, t,
                                               status.state == "completed")
    return [problem] if problem else []


def resume_start_step(t: TrainSettings) -> int:
    """The step a start under `t` trains from: the folder's checkpoint step for a resume (as
    its run.json records it), 0 otherwise."""
    status = RunFolder(Path(t.out_dir).expanduser()).status() if t.from_resume else None
    return (status.checkpoint_step or 0) if status else 0


def processes(count: int) -> str:
    return f"{count} process" + ("" if count == 1 else "es")
