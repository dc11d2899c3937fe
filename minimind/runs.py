"""The runs under a folder, one summary each, for `minimind-tui runs` and the Runs screen.

A run folder is found by its files (run.json, metrics.jsonl, config.toml). Its figures come
from run.json, which the trainer keeps current; a folder without one (a run from before it, or
only a metrics.jsonl synced from elsewhere) is summarised from the end of its metrics file. Its
stage and what it started from (`from_weight`) come from its config.toml, so pretrain -> sft ->
lora reads as a chain. No Textual here.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from minimind.environment import as_the_run_took_it, start_unknown
from minimind.shown import printable_path
from minimind.events import RunStarted
from minimind.follow import parse_event
from minimind.units import format_count, format_duration
from minimind.run_files import CONFIG_FILE, MARKER_FILES, METRICS_FILE
from minimind.run_folder import RunFolder
from minimind.run_status import RunStatus, first_start
from minimind.safe_read import open_regular
from minimind.settings import CONSENT_FIELDS, STAGES, SettingsError
from minimind.settings_file import read_toml

MAX_DEPTH = 4  # out/<project>/<run>/... is as deep as people nest runs


@dataclass
class RunSummary:
    path: Path
    name: str
    """The folder relative to the root the runs were listed from."""
    shape: str
    state: str
    step: int = 0
    total_steps: int = 0
    saved_step: int | None = None
    """The step its last checkpoint holds, where a resume starts (None: none was written)."""
    loss: float | None = None
    val_loss: float | None = None
    best_val_loss: float | None = None
    tokens: int = 0
    tokens_per_sec: float = 0.0
    elapsed: float = 0.0
    updated: float = 0.0
    parameters: int = 0
    stage: str = "?"
    """pretrain, sft or lora; "?" without a readable config.toml."""
    from_weight: str | None = None
    """The weights it started from as config.toml records them ("": none; None: unknown)."""
    out_dir: str = ""
    """Its out_dir as config.toml records it: where a relative from_weight counts from."""
    origin: str = "unknown"
    """`from_weight` for the user: the name of the listed run it points into, "scratch", or
    "missing: ..." when it is gone (see `describe_origin`)."""
    save_id: str = ""
    """Its last checkpoint's `save_id`."""
    origin_save: str = ""
    """The `save_id` its from_weight had when it started from it ("": not a run's checkpoint,
    or a run from before ids were kept)."""
    origin_changed: bool = False
    """The origin run has saved again or was replaced since: its file holds other weights than
    this run started from (its resume, overwrite, or a lora base trained on)."""

    def as_json(self) -> dict[str, Any]:
        """Its fields for `runs --json`; a figure that is not finite (a run.json edited or
        synced badly) is null, as JSON has no NaN for the tools that read it (jq refuses it)."""
        fields = {**asdict(self), "path": str(self.path)}
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v
                for k, v in fields.items()}

    def cells(self) -> dict[str, str]:
        """The figures as a table shows them, by column key (`COLUMNS`)."""
        return {
            "name": printable_path(self.name), "stage": self.stage,
            "origin": self.origin + (CHANGED_ORIGIN if self.origin_changed else ""),
            "shape": self.shape, "state": self.state,
            "step": self._steps(),
            "loss": _loss(self.loss), "val_loss": _loss(self.val_loss),
            "best_val_loss": _loss(self.best_val_loss),
            "tokens": format_count(self.tokens) if self.tokens else "–",
            "tokens_per_sec": f"{self.tokens_per_sec:,.0f}" if self.tokens_per_sec else "–",
            "elapsed": format_duration(self.elapsed) if self.elapsed else "–",
            "updated": (time.strftime("%Y-%m-%d %H:%M", time.localtime(self.updated))
                        if self.updated else "–"),
        }

    def _steps(self) -> str:
        """"18/40", and for an ended run whose last steps were not saved (a second Ctrl+C, a
        crash) where a resume starts: "18/40 (saved 14)", or "(none saved)" where nothing
        is to resume (a crash before its first log said "0/200" alone, as a run at its start)."""
        steps = f"{self.step:,}/{self.total_steps:,}" if self.total_steps else f"{self.step:,}"
        if self.state in ("stopped", "failed", "crashed") and self.step != self.saved_step:
            steps += f" (saved {self.saved_step:,})" if self.saved_step else " (none saved)"
        return steps


# Column key -> heading. The order is the table's.
COLUMNS = {"name": "run", "stage": "stage", "origin": "from", "shape": "shape",
           "state": "status", "step": "steps",
           "loss": "loss", "val_loss": "val loss", "best_val_loss": "best val",
           "tokens": "tokens", "tokens_per_sec": "tokens/s", "elapsed": "duration",
           "updated": "when"}


LOSS_COLUMNS = ("loss", "val_loss", "best_val_loss")
"""Each stage's are measured on its own kind of data (text; the replies of conversations), so
they rank runs within a stage only."""


def sorted_runs(runs: Iterable[RunSummary], column: str, reverse: bool = False
                ) -> list[RunSummary]:
    """The runs by a column's value, either way, and those without one (no validation yet)
    last both ways; by a loss, stage by stage (pretrain, sft, lora, then any other)."""
    runs = list(runs)
    if column not in LOSS_COLUMNS:
        return _by_value(runs, column, reverse)
    order = {stage: i for i, stage in enumerate(STAGES)}
    stages = sorted({run.stage for run in runs}, key=lambda stage: (order.get(stage, 3), stage))
    return [ranked for stage in stages
            for ranked in _by_value([run for run in runs if run.stage == stage], column, reverse)]


def _by_value(runs: list[RunSummary], column: str, reverse: bool) -> list[RunSummary]:
    valued = [run for run in runs if getattr(run, column) is not None]
    return (sorted(valued, key=lambda run: getattr(run, column), reverse=reverse)
            + [run for run in runs if getattr(run, column) is None])


def _loss(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def runs_root(out_dir: str | Path) -> Path:
    """Where the runs beside a run live: the folder around its out_dir (out/ for out/tiny), or
    out_dir itself when it is a bare name (out)."""
    out_dir = Path(out_dir or "out")
    return out_dir.parent if out_dir.parent != Path(".") else out_dir


def find_runs(root: str | Path) -> list[RunSummary]:
    """Every run folder under `root` (and `root` itself if it is one), by path; a folder that
    cannot be listed is one too, "unreadable": it may hold a run, and must not vanish."""
    root = Path(root)
    runs = []

    def unreadable(error: OSError) -> None:
        path = Path(error.filename)
        name = str(path.relative_to(root)) if path != root else path.name
        runs.append(RunSummary(path, name, "?", "unreadable"))

    for folder, dirs, files in os.walk(root, onerror=unreadable):
        here = Path(folder)
        # A run's folder may hold others: upstream's presets train into out/ and fine-tune
        # into out/sft, out/lora_medical.
        if any(name in files or name in dirs for name in MARKER_FILES):
            runs.append(summarise(here, root))
        depth = len(here.relative_to(root).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < MAX_DEPTH else []
    known = {run.path.resolve(): run.name for run in runs}
    for run in runs:
        run.origin = describe_origin(run.from_weight, known, run.path, run.out_dir)
    by_name = {run.name: run for run in runs}
    for run in runs:
        source = by_name.get(run.origin)
        run.origin_changed = bool(source and run.origin_save
                                  and source.save_id != run.origin_save)
    return sorted(runs, key=lambda run: run.name)


def started_from(folder: Path) -> str:
    """The runs around `folder` (as the runs list finds them) that started from weights in it,
    and where they were looked for: replacing its run takes their origin away, and a lora
    run's base with it. "tiny-sft, tiny-lora (tiny-lora is a lora run: its adapters ...; of
    the runs in out, 4 folders deep)", or "" for none."""
    shown_root = runs_root(folder)  # as the caller named it
    folder = folder.resolve()
    runs = find_runs(runs_root(folder)) if folder.parent.is_dir() else []
    name = next((run.name for run in runs if run.path.resolve() == folder), None)
    runs = [run for run in runs if name is not None and run.origin == name]
    if not runs:
        return ""
    lora = [run.name for run in runs if run.stage == "lora"]
    one = len(lora) == 1
    # Runs elsewhere may start from it too: the list says where it looked.
    return (", ".join(run.name for run in runs) + " ("
            + (f"{', '.join(lora)} {'is a lora run' if one else 'are lora runs'}: "
               f"{'its' if one else 'their'} adapters open only with that base, or through "
               f"the resume file in {'its' if one else 'their'} lora/ folder, which keeps a "
               "copy of it; " if lora else "")
            + f"of the runs in {shown_root}, {MAX_DEPTH} folders deep)")


def summarise(path: Path, root: Path | None = None) -> RunSummary:
    folder = RunFolder(path)
    name = str(path.relative_to(root)) if root is not None and path != root else path.name
    status = folder.status()
    state, status = folder.state(status), status or RunStatus()  # its metrics read once
    try:  # missing, a pipe, not TOML: no settings to show
        config = read_toml(path / CONFIG_FILE)
    except SettingsError:
        config = None
    if config is None and not (path / CONFIG_FILE).exists():  # a metrics.jsonl synced alone
        started = first_start(path / METRICS_FILE)
        config = started.settings if started and started.settings else None
    train = config.get("train", {}) if config else {}
    return RunSummary(
        path, name, describe_shape(config, status), state, status.step, status.total_steps,
        status.checkpoint_step, status.loss, status.val_loss, status.best_val_loss,
        status.tokens_seen, status.tokens_per_sec, status.elapsed, status.updated or status.started,
        status.parameters, stage=str(train.get("stage", "pretrain")) if config else "?",
        save_id=status.save_id, origin_save=status.origin_save,
        from_weight=str(train.get("from_weight", "")) if config else None,
        out_dir=str(train.get("out_dir", "")))


def runs_below_text(folder: Path, shown: int = 3) -> str:
    """For a folder that holds no run of its own: the runs below it, named as paths to watch
    ("out holds 20 run(s) below it, none of its own: out/a, out/b, out/c, ...: watch one of
    those (...); minimind-tui runs out lists them"), or "" when it holds none (or a run of its
    own)."""
    if not folder.is_dir() or any((folder / name).exists() for name in MARKER_FILES):
        return ""
    below = [run for run in find_runs(folder) if run.path != folder]
    if not below:
        return ""
    names = [printable_path(str(run.path)) for run in below[:shown]]
    where = printable_path(str(folder))
    return (f"{where} holds {len(below)} run(s) below it, none of its own: "
            + ", ".join(names) + (", ..." if len(below) > shown else "")
            + f": watch one of those (minimind-tui watch {names[0]}); minimind-tui runs {where} "
            "lists them")


MISSING_ORIGIN = "missing: "  # an origin whose from_weight is gone: "missing: out/tiny/..."
UNPLACED_ORIGIN = "not here: "
"""An origin relative to a start folder its run's record no longer tells (a folder renamed off
its out_dir) and not in the current folder: maybe there, maybe gone."""
CHANGED_ORIGIN = " (changed since)"  # its from_weight was saved again or replaced since


def describe_origin(from_weight: str | None, known: dict[Path, str], run_folder: Path,
                    out_dir: str) -> str:
    """What a run started from: "scratch" (no from_weight), the name of the run folder in
    `known` (resolved path -> name) the file lies in, else the path as recorded (control
    characters escaped); "missing: ..." when the file is gone (a relative path counts from the
    folder the run was started in: `as_the_run_took_it`), "unknown" without a record."""
    if from_weight is None:
        return "unknown"
    if not from_weight.strip():
        return "scratch"
    try:
        path = as_the_run_took_it(from_weight, run_folder, out_dir)
        resolved = path.resolve()  # a lora run's folder is a from_weight too: itself counts
        short = next((known[folder] for folder in (resolved, *resolved.parents)
                      if folder in known), printable_path(from_weight))
        if path.is_file() or path.is_dir():
            return short
        return (f"{UNPLACED_ORIGIN}{short}" if start_unknown(from_weight, run_folder, out_dir)
                else f"{MISSING_ORIGIN}{short}")
    except (OSError, ValueError, RuntimeError):  # too long, a NUL, ~nosuchuser: no such file
        return f"{MISSING_ORIGIN}{printable_path(from_weight)}"


def describe_shape(config: dict[str, Any] | None, status: RunStatus) -> str:
    """"minimind2 128x2 · 1.21M" (family, width x layers, MoE, parameters), from config.toml's
    tables ("?" without them)."""
    if config is None:
        return "?"
    model = config.get("model", {})
    shape = (f"{model.get('family', 'minimind2')} {model.get('hidden_size', '?')}x"
             f"{model.get('num_hidden_layers', '?')}{' moe' if model.get('use_moe') else ''}")
    return f"{shape} · {format_count(status.parameters)}" if status.parameters else shape


# The consent a start was given, not a setting of the run (records written before
# `save_toml` left it out still hold it): two runs never differ by it.
CONSENTS = {f"train.{name}" for name in CONSENT_FIELDS}


def settings_diff(a: Path, b: Path) -> list[tuple[str, str, str]]:
    """(field, value in a, value in b) for every setting the two runs' config.toml differ in;
    a field one file leaves out (a family default) reads "default". Raises SettingsError."""
    return _differences(read_toml(a / CONFIG_FILE), read_toml(b / CONFIG_FILE))


def _differences(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(field, value in a, value in b) for every setting two settings tables differ in, model
    first; "default" for one a table leaves out; the consents a launch was given aside."""
    flat_a, flat_b = _flat(a), _flat(b)
    return [(key, flat_a.get(key, "default"), flat_b.get(key, "default"))
            for key in sorted(flat_a.keys() | flat_b.keys(), key=_field_order)
            if flat_a.get(key) != flat_b.get(key) and key not in CONSENTS]


def resumed_changes(path: Path) -> list[str]:
    """"from step 16 on: train.learning_rate 0.003 → 0.002" for each setting a resume of the
    run in `path` changed (its config.toml holds its last start's alone), from the start events
    in its metrics.jsonl: a diff showed one learning rate for a run that trained with two."""
    try:
        metrics = os.fdopen(open_regular(path / METRICS_FILE), "rb")
    except OSError:  # none, a FIFO: no history to tell
        return []
    prefix = RunStarted.line_prefix()
    with metrics:
        starts = [event for line in metrics if line.startswith(prefix)
                  and isinstance(event := parse_event(line), RunStarted)]
    changes = []
    for before, after in zip(starts, starts[1:]):
        changed = [f"{key} {old} → {new}"
                   for key, old, new in _differences(before.settings, after.settings)]
        if changed:
            # As the resume's own log says it: its first step trained with the new ones.
            changes.append(f"from step {after.start_step + 1:,} on: {', '.join(changed)}")
    return changes


def _flat(data: dict[str, Any]) -> dict[str, str]:
    return {f"{section}.{name}": _text(value) for section, values in data.items()
            for name, value in values.items()}


def _text(value: Any) -> str:
    if isinstance(value, list):  # quoted: prompts hold commas ("To be, or not to be")
        return ", ".join(json.dumps(item, ensure_ascii=False) if isinstance(item, str)
                         else str(item) for item in value) or "(none)"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _field_order(key: str) -> tuple[int, str]:
    return (0 if key.startswith("model.") else 1, key)


def next_free_folder(path: Path) -> Path:
    """"out/tiny" -> "out/tiny-2" (or the first free number): a new run beside an old one."""
    base = re.sub(r"-\d+$", "", path.name)
    number = 2
    while (candidate := path.with_name(f"{base}-{number}")).exists():
        number += 1
    return candidate


def delete_run(path: Path) -> list[Path]:
    """Delete a run's files (not the rest of the folder), holding its lock so no trainer can
    start there meanwhile; the folder goes too if nothing else is left. Raises RunBusy for a
    live run."""
    folder = RunFolder(path)
    folder.claim(resume=True, overwrite=False)
    try:
        removed = folder.remove_run_files()
    finally:
        folder.abandon([path])  # other files of the user's are kept, and the folder with them
    return removed
