"""What was recorded with a weights file, and where: a checkpoint's records, found and read.

A weights file's records are the settings saved in its resume file (the file itself, or the
``*_resume.pth`` beside it), the ``config.toml`` of the run folder it belongs to, and a saved
folder's ``config.json``. `agreed` refuses records that disagree, naming both. The reader
(`checkpoint_reader`) builds models from them; nothing here builds one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from .checkpoint import load_resume, resume_path
from .config import MiniMindConfig
from .lora import ADAPTER_MARK, LoRAError, fold_adapters
from .environment import as_the_run_took_it
from .run_files import CONFIG_FILE, RESUME_SUFFIX, holds_adapters
from .safe_read import missing
from .settings import ModelSettings, RunSettings, SettingsError
from .settings_file import read_toml
from .tokenizer import BUNDLED_NAMES
from .torchfile import CheckpointError, first_non_finite, safe_safetensors_load, safe_torch_load
from .upstream import strip_wrapper_prefixes

BUNDLED = ("", "the bundled tokenizer")
SAVED_WEIGHTS = "model.safetensors"
SAVED_CONFIG = "config.json"
# Keys only our resume files hold; upstream's keep {model, optimizer, epoch, step, world_size, ...}.
OUR_RESUME_MARKS = {"settings", "progress", "rng"}


EXPORT_MARK, EXPORTER = "exported_by", "minimind-tui"
"""The record that this tool wrote an export, the one thing export --overwrite replaces: in a
folder's config.json, and in an upstream file's state-dict metadata (`weights_bytes`)."""


@dataclass(frozen=True)
class Record:
    """Settings written down with the weights, and where."""

    where: str
    model: ModelSettings | MiniMindConfig
    tokenizer: tuple[str, str]  # (tokenizer_path, where it is named)
    tokenizer_digest: str = ""
    """The fingerprint of the tokenizer the run trained with (a resume file records it): the
    file at tokenizer_path may have been replaced or retrained since."""
    chat_template_digest: str = ""
    """And of its chat template, for an sft or lora run: the one its conversations were in."""

    def config(self) -> MiniMindConfig:
        if isinstance(self.model, MiniMindConfig):
            return self.model
        try:
            return self.model.to_config()
        except ValueError as e:
            raise CheckpointError(f"{self.where}: {e}") from None


def locate(path: Path) -> tuple[Path, list[Record]]:
    """The weights file `path` names and the records beside it."""
    if path.is_dir():
        if (path / CONFIG_FILE).is_file():
            toml = path / CONFIG_FILE
            record, name = run_record(toml)
            weights = path / name
            if not weights.is_file():
                if not resume_path(weights).is_file():
                    raise CheckpointError(f"{path}: no {name} (nor its resume file): the run has "
                                          "not saved a checkpoint yet")
                weights = resume_path(weights)
            return weights, [record] + resume_beside(weights)
        if (path / SAVED_CONFIG).is_file():
            record, weights = saved_folder_record(path), path / SAVED_WEIGHTS
            if not weights.is_file():
                raise CheckpointError(f"{path}: no {SAVED_WEIGHTS} next to {SAVED_CONFIG}")
            return weights, [record]
        raise CheckpointError(f"{path}: neither a run folder (no {CONFIG_FILE}) nor a saved "
                              f"model (no {SAVED_CONFIG})")
    if path.is_file():
        return path, records_beside(path)
    raise CheckpointError(f"{path}: " + ("not a regular file (a pipe or a device)"
                                         if path.exists() else missing(path, "file or folder")))


def records_beside(weights: Path) -> list[Record]:
    """The records of a weights file: its resume file, and the run folder or saved folder it
    lies in when it is that folder's own file."""
    records = resume_beside(weights)
    folder = weights.parent
    if (folder / CONFIG_FILE).is_file():
        try:
            record, name = run_record(folder / CONFIG_FILE)
        except CheckpointError:  # not a config.toml of ours: the file stands alone
            record, name = None, ""
        if record and weights.name in (name, resume_path(Path(name)).name):
            records.append(record)
    if weights.name == SAVED_WEIGHTS and (folder / SAVED_CONFIG).is_file():
        records.append(saved_folder_record(folder))
    return records


def resume_beside(weights: Path) -> list[Record]:
    """The settings saved in the resume file next to a weights file (read without loading its
    tensors: memory-mapped). One of another layout (upstream's) records nothing; one that
    cannot be read (truncated, corrupt, refused) is refused by name: it was skipped without a
    word, and the head split, settings and tokenizer it records went unchecked."""
    resume = resume_path(weights)
    if weights.name.endswith(RESUME_SUFFIX) or not resume.is_file():
        return []
    try:
        state = safe_torch_load(resume, mmap=True)
        model = ModelSettings.model_validate(state["settings"]["model"])
        train, data = state["settings"]["train"], state.get("data")
    except (KeyError, TypeError):
        return []
    except (CheckpointError, ValidationError) as e:
        why = str(e).removeprefix(f"{resume}: ").splitlines()[0]
        raise CheckpointError(f"{resume}: the resume file beside {weights.name} cannot be read "
                              f"({why}), and the record it holds of how the weights were "
                              f"trained cannot be checked: restore it, or move it away to open "
                              f"{weights.name} without it") from None
    return [settings_record(resume, model, train, data)]


def settings_record(resume: Path, model: ModelSettings, train: Any, data: Any = None) -> Record:
    """A resume file's settings (and its `data` fingerprints, where given) as a record."""
    where = f"the settings saved in {resume}"
    train = train if isinstance(train, dict) else {}
    spec, out_dir = train.get("tokenizer_path", ""), train.get("out_dir", "")
    data = data if isinstance(data, dict) else {}
    digest, template = data.get("tokenizer", ""), data.get("chat_template", "")
    # A lora run keeps its resume file in the run folder's lora/ folder.
    run_folder = resume.parent.parent if holds_adapters(str(resume)) else resume.parent
    if isinstance(spec, str):
        spec = _tokenizer_as_the_run_took_it(spec, run_folder, out_dir)
    else:
        spec = ""
    return Record(where, model, (spec, f"train.tokenizer_path in {where}"),
                  digest if isinstance(digest, str) else "",
                  template if isinstance(template, str) else "")


def _tokenizer_as_the_run_took_it(tokenizer_path: str, run_folder: Path, out_dir: Any) -> str:
    """A recorded tokenizer_path as the run took it: a relative one counts from the folder the
    run was started in (`as_the_run_took_it`), not from wherever the reader runs, where a
    folder of the same name may hold another tokenizer."""
    if tokenizer_path.strip() in BUNDLED_NAMES or not isinstance(out_dir, str):
        return tokenizer_path
    try:
        return str(as_the_run_took_it(tokenizer_path, run_folder, out_dir))
    except RuntimeError:  # a ~user this machine does not know: the loader says so
        return tokenizer_path


def run_settings(toml: Path) -> RunSettings:
    try:
        data = read_toml(toml)
    except SettingsError as e:  # its problems name the file already
        raise CheckpointError("; ".join(map(str, e.problems))) from None
    try:  # the settings' own rules, which never look at this machine
        return RunSettings.parse(data)
    except SettingsError as e:
        raise CheckpointError(f"{toml}: " + "; ".join(map(str, e.problems))) from None


def run_record(toml: Path) -> tuple[Record, str]:
    """A run's config.toml as a record, and the weights file name it gives."""
    settings = run_settings(toml)
    return settings_as_record(toml, settings), settings.weights_name()


def settings_as_record(toml: Path, settings: RunSettings) -> Record:
    train = settings.train
    spec = _tokenizer_as_the_run_took_it(train.tokenizer_path, toml.parent, train.out_dir)
    return Record(str(toml), settings.model, (spec, f"train.tokenizer_path in {toml}"))


def saved_folder_record(folder: Path) -> Record:
    where = folder / SAVED_CONFIG
    try:
        data = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{where}: not readable JSON ({e})") from None
    model_type = data.get("model_type") if isinstance(data, dict) else None
    if model_type != MiniMindConfig.model_type:
        # generate reads such a folder through transformers; our model needs our names.
        exported = isinstance(data, dict) and data.get(EXPORT_MARK) == EXPORTER
        ours = (f": an export of this tool, in {model_type}'s names; use the run it came from "
                "(its folder or its weights file)" if exported else "")
        raise CheckpointError(f"{folder}: {SAVED_CONFIG} describes a {model_type!r} model, not a "
                              f"MiniMind one{ours}")
    try:
        config = MiniMindConfig.from_dict(data)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: {e}") from None
    has_tokenizer = any((folder / name).is_file()
                        for name in ("tokenizer.json", "tokenizer_config.json"))
    return Record(str(where), config, (str(folder), str(folder)) if has_tokenizer else BUNDLED)


def agreed(weights: Path, records: list[Record]) -> Record | None:
    """The first record, once every other one agrees with it; None when there is none."""
    if not records:
        return None
    first = records[0].config().to_dict()
    for other in records[1:]:
        second = other.config().to_dict()
        differ = [k for k in ModelSettings.model_fields if first.get(k) != second.get(k)]
        if differ:
            detail = ", ".join(f"{k} {first.get(k)!r} vs {second.get(k)!r}" for k in differ)
            raise CheckpointError(
                f"{weights}: its records disagree: {records[0].where} and {other.where} "
                f"({detail}); restore the one that was changed")
    return records[0]


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], Record | None, bool]:
    """The state_dict in a weights file, for a resume file the settings it records, and
    whether the file held lora adapters, now merged into its base (a lora run's resume)."""
    data = safe_safetensors_load(path) if path.suffix == ".safetensors" else safe_torch_load(path)
    saved = None
    if isinstance(data, dict) and "model" in data and not isinstance(data["model"], torch.Tensor):
        if data.keys() & OUR_RESUME_MARKS:  # ours: its structure and settings are checked
            state = load_resume(path, data)
            saved = settings_record(path, ModelSettings.model_validate(state["settings"]["model"]),
                                    state["settings"]["train"], state.get("data"))
        data = data["model"]  # upstream's resume file records no config
    if not (isinstance(data, dict) and data and all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items())):
        raise CheckpointError(f"{path}: not a MiniMind checkpoint (no state_dict of tensors "
                              "in it)")
    if bad := first_non_finite(data):
        raise CheckpointError(f"{path}: {bad} holds NaN/inf: the run that wrote it diverged; "
                              "use an earlier checkpoint")
    data = {strip_wrapper_prefixes(k): v for k, v in data.items()}
    if all(ADAPTER_MARK in k for k in data):
        raise CheckpointError(f"{path}: holds only LoRA adapters, no base weights: open the lora "
                              "run's folder (it names the base), or merge the file into its "
                              "base with export's --lora")
    folded = any(ADAPTER_MARK in k for k in data)  # a lora run's resume: base and adapters
    if folded:
        try:
            data = fold_adapters(data)
        except LoRAError as e:
            raise CheckpointError(f"{path}: {e}") from None
    return data, saved, folded
