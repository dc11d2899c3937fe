"""Every file a run folder holds, by name: which belong to a run and how to remove them.

A run folder (`out_dir`) is shared with whatever else a user keeps there (upstream MiniMind's own
`out/` holds its `pretrain_512.pth`), so nothing deletes "the folder": only the files named here.
Light on purpose (no torch): the runs list, the app and the engine all import it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from minimind.atomic import stale_temp_files

CONFIG_FILE = "config.toml"
METRICS_FILE = "metrics.jsonl"
STATUS_FILE = "run.json"
LOCK_FILE = ".run.lock"
ERROR_FILE = "error.log"
LAUNCH_SETTINGS_FILE = "launch.toml"
"""The settings a run launched as a child process (torchrun, detached) was started with."""
LAUNCH_LOG_FILE = "launch.log"
"""That child's output."""
RESUME_SUFFIX = "_resume.pth"
WEIGHTS_SUFFIX = ".pth"
ADAPTER_FOLDER = "lora"
"""Where a lora run keeps its adapters, inside its folder (upstream's `out/lora/`)."""
RESUME_PATTERNS = (f"*{RESUME_SUFFIX}", f"{ADAPTER_FOLDER}/*{RESUME_SUFFIX}")

# The files of a run with a fixed name; the checkpoints' names depend on its settings.
NAMED_FILES = (STATUS_FILE, METRICS_FILE, CONFIG_FILE, ERROR_FILE, LAUNCH_SETTINGS_FILE,
               LAUNCH_LOG_FILE)
TENSORBOARD_FOLDER = "tensorboard"
"""`report_to = ["tensorboard"]`'s event files, which TensorBoard reads as one run: those of a
run replaced in the folder go with it (wandb's and swanlab's folders hold runs of their own)."""
# A folder with any of these is a run folder (or the start of one) to a runs list.
MARKER_FILES = (STATUS_FILE, METRICS_FILE, CONFIG_FILE)


NAME_PREFIX_MAX = 200
"""The longest save_weight or lora_name: a file name may hold 255 bytes, and the longest one a
run writes adds ~40 (`_<hidden>_moe_resume.pth`, and the atomic write's `.<name>.<random>.tmp`)."""


def weights_name(save_weight: str, hidden_size: int, use_moe: bool) -> str:
    """Upstream's rule: `pretrain_512.pth`, `pretrain_640_moe.pth`."""
    return f"{save_weight}_{hidden_size}{'_moe' if use_moe else ''}{WEIGHTS_SUFFIX}"


def save_weight_of(name: str, hidden_size: int, use_moe: bool) -> str | None:
    """The save_weight (or lora_name) that `weights_name` (or `lora_weights_name`) made a
    weights or resume file's name from: `full_sft` for `full_sft_512_resume.pth`; None for
    a name made another way."""
    stem = weights_of_resume(name) if name.endswith(RESUME_SUFFIX) else name
    for moe in dict.fromkeys((use_moe, False)):  # an adapter file's name has no MoE suffix
        tail = weights_name("", hidden_size, moe)
        if stem.endswith(tail) and len(stem) > len(tail):
            return stem.removesuffix(tail)
    return None


def lora_weights_name(lora_name: str, hidden_size: int) -> str:
    """Upstream's train_lora.py: `lora/lora_medical_512.pth` (no MoE suffix)."""
    return f"{ADAPTER_FOLDER}/{lora_name}_{hidden_size}{WEIGHTS_SUFFIX}"


def holds_adapters(weights: str) -> bool:
    """Whether a run saving `weights` is a lora run, whose adapters only mean something with
    the base they trained on: every reader opens that base again."""
    return Path(weights).parent.name == ADAPTER_FOLDER


def resume_name(weights: str) -> str:
    """`pretrain_512.pth` -> `pretrain_512_resume.pth`."""
    return weights.removesuffix(WEIGHTS_SUFFIX) + RESUME_SUFFIX


def weights_of_resume(resume: str) -> str:
    return resume.removesuffix(RESUME_SUFFIX) + WEIGHTS_SUFFIX


def resume_files(folder: str | Path) -> list[Path]:
    """The resume checkpoints of the run in `folder`: beside their weights, which a lora run
    keeps in `lora/`."""
    return sorted(p for pattern in RESUME_PATTERNS for p in Path(folder).glob(pattern)
                  if p.is_file())


def run_files(folder: str | Path) -> list[Path]:
    """The files a run wrote in `folder`: its named files, each resume checkpoint and the
    weights file saved with it, and the status file's temporary copies a kill left behind.
    A weights file without a resume file beside it is not among them: it may be the user's."""
    folder = Path(folder)
    files = [folder / name for name in NAMED_FILES if (folder / name).is_file()]
    files += sorted(p for p in (folder / TENSORBOARD_FOLDER).glob("events.out.tfevents.*")
                    if p.is_file())
    for resume in resume_files(folder):
        files.append(resume)
        weights = resume.with_name(weights_of_resume(resume.name))
        if weights.is_file():
            files.append(weights)
    return files + status_temp_files(folder)


def status_temp_files(folder: str | Path) -> list[Path]:
    """What a status writer killed mid-write left (`.run.json.<random>.tmp`)."""
    return [p for p in stale_temp_files(folder) if p.name.startswith(f".{STATUS_FILE}.")]


def remove_run_files(folder: str | Path) -> list[Path]:
    """Delete the run's files (see `run_files`), nothing else; returns what was deleted."""
    files = run_files(folder)
    for path in files:
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # left empty by the run's event files, or not at all
        (Path(folder) / TENSORBOARD_FOLDER).rmdir()
    return files
