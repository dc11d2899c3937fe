"""One reader for every checkpoint a user points at, trusting records over guesses.

Formats: a run folder (``config.toml`` + ``<save_weight>_<hidden>[_moe].pth``, or its resume
file when that is all there is; a lora run's folder is its recorded base with its adapters
merged in), a weights file (ours or upstream's ``.pth``, a resume
checkpoint, ``.safetensors``) and a folder written by ``save_pretrained``. Only tensors and
plain data are unpickled (``weights_only=True``), and weights holding NaN/inf are refused.

Tensor shapes do not tell everything: a MiniMind2 file fits several head splits, which compute
different functions, and rope_theta or rms_norm_eps leave no trace at all. So the config comes
from what was *recorded* with the weights: the settings saved in the resume file (the file
itself, or the ``*_resume.pth`` beside a weights file), the ``config.toml`` of the run folder
the file belongs to, or a saved folder's ``config.json``. Two records that disagree are refused,
naming both; with no record, the shapes must settle the head split (or ``num_attention_heads``
does), and the other fields are the family's defaults, which is what upstream trained with.
Every result says which record it used. The records are found and read by `weight_records`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from .checkpoint import load_resume, resume_path
from .checkpoint_tokenizer import choose_tokenizer, other_ids
from .config import MiniMindConfig
from .environment import as_the_run_took_it, start_unknown, unusable_path
from .lora import ADAPTER_MARK, LoRAError, load_lora, merge_lora
from .model import MiniMindForCausalLM
from .run_files import CONFIG_FILE, RESUME_SUFFIX, holds_adapters, weights_of_resume
from .settings import ModelSettings, RunSettings
from .torchfile import CheckpointError
from .upstream import HeadSplitError, WeightsMismatchError, infer_config, load_into
from .weight_records import (BUNDLED, Record, agreed, locate, read_weights, resume_beside,
                             run_settings, settings_as_record)


@dataclass
class Checkpoint:
    model: MiniMindForCausalLM  # in eval mode, on the CPU
    weights_path: Path
    config_origin: str  # which record the config came from, for the user
    tokenizer_dir: Path
    tokenizer_note: str = ""
    """Where --tokenizer_path gives other ids than the recorded tokenizer: that, for the user."""
    adapter_path: Path | None = None
    """A lora run's adapters, merged into the base `weights_path` holds."""
    base_check: str = ""
    """With adapters: whether the base is the one the run trained on, and against what."""
    adapters_within: bool = False
    """`weights_path` held lora adapters beside its base (a lora run's resume file), merged."""

    @property
    def built_from(self) -> str:
        """The files the model was built from, for the user."""
        if self.adapters_within:
            return f"{self.weights_path} (the base the lora run froze, its adapters merged in)"
        if self.adapter_path is None:
            return str(self.weights_path)
        return _merged_text(self.weights_path, self.adapter_path, self.base_check)


def _merged_text(base: Path, adapter: Path, base_check: str) -> str:
    return f"{base} with the adapters of {adapter} merged in ({base_check})"


@dataclass
class _MergedLora:
    """The model a lora run trained, and the files it was built from."""

    model: MiniMindForCausalLM
    record: Record
    base: Path
    adapter: Path
    base_check: str

    @property
    def fingerprint(self) -> Record | None:
        """The adapters' resume file's record, which holds the fingerprint of the tokenizer
        the run trained with, where it does."""
        return next((r for r in resume_beside(self.adapter) if r.tokenizer_digest), None)


def read_checkpoint(src: str | Path, tokenizer_path: str | None = None,
                    num_attention_heads: int | None = None) -> Checkpoint:
    """The model in `src` (see the module docstring), or CheckpointError naming the file and why.

    `tokenizer_path` overrides the tokenizer the source names ("" means the bundled one);
    `num_attention_heads` settles the head split of a file that records none, and must agree
    with a record where there is one.
    """
    path = Path(src).expanduser()
    if lora_run := _lora_run(path):
        return _read_lora_run(*lora_run, tokenizer_path, num_attention_heads)
    weights, records = locate(path)
    state_dict, saved, folded = read_weights(weights)
    if saved is not None:
        records.insert(0, saved)
    record = agreed(weights, records)
    if record is None:
        config, origin = _config_from_shapes(weights, state_dict, num_attention_heads)
        tokenizer = BUNDLED
    else:
        config, origin, tokenizer = record.config(), record.where, record.tokenizer
        if num_attention_heads not in (None, config.num_attention_heads):
            raise CheckpointError(
                f"{weights}: num_attention_heads {num_attention_heads} contradicts "
                f"{record.where}, which records {config.num_attention_heads}")
        if len(records) > 1:
            origin += " (agrees with " + ", ".join(r.where for r in records[1:]) + ")"
    model = _build(config, state_dict, weights)
    fingerprint = next((r for r in records if r.tokenizer_digest), None)
    return Checkpoint(model.eval(), weights, origin,
                      *choose_tokenizer(tokenizer if record else None, tokenizer_path,
                                         config.vocab_size, fingerprint),
                      adapters_within=folded)


def load_model(path: str | Path, num_attention_heads: int | None = None) -> MiniMindForCausalLM:
    """The model in a weights file, run folder or saved folder (`read_checkpoint`)."""
    return read_checkpoint(path, "", num_attention_heads).model


def load_pretrained_weights(model: MiniMindForCausalLM, path: str | Path, tokenizer: Any = None,
                            tokenizer_path: str = "") -> tuple[str, str]:
    """Copy the weights in `path` into `model` (a run's `from_weight`). Returns which head
    split record was checked, and a warning ("" for none) when the run's `tokenizer` (named
    by its `tokenizer_path`) gives other ids than the tokenizer the file's record names. The
    file's own record, where there is one, must give the model's head split: the shapes fit
    other splits too, and the weights only mean what they learned with their own. The warning
    also names the settings that leave no trace in the shapes (rope_theta, ...) where the
    record's differ from the model's."""
    note, record = _load_weights(model, Path(path).expanduser(), ())
    if record is None:
        return note, ""
    warnings = [_other_function(record, model.config)]
    if tokenizer is not None:
        warnings.append(other_ids(record.tokenizer, tokenizer, tokenizer_path,
                                   "train.tokenizer_path",
                                   record if record.tokenizer_digest else None))
    return note, "; ".join(filter(None, warnings))


# Fields that change what the weights compute but not their shapes (so no load notices them).
_FUNCTION_FIELDS = ("hidden_act", "rope_theta", "rms_norm_eps")
_ROUTING_FIELDS = ("num_experts_per_tok", "norm_topk_prob", "scoring_func")  # MoE layers only


def _other_function(record: Record, ours: MiniMindConfig) -> str:
    """A warning when the model computes another function with these weights than the one they
    learned (as their record says); "" when it is the same."""
    changed = _function_changes(record.config(), ours)
    return (f"the weights learned with other settings than this model's ({record.where}): "
            + ", ".join(changed) + "; they start from another function than they computed"
            if changed else "")


def _function_changes(theirs: MiniMindConfig, ours: MiniMindConfig) -> list[str]:
    """"rope_theta 10000.0 there, 1000000.0 here" for each setting that makes the same
    weights compute another function."""
    fields = _FUNCTION_FIELDS + (_ROUTING_FIELDS if theirs.use_moe and ours.use_moe else ())
    return [f"{name} {getattr(theirs, name)} there, {getattr(ours, name)} here"
            for name in fields if getattr(theirs, name) != getattr(ours, name)]


def _load_weights(model: MiniMindForCausalLM, path: Path, chain: tuple[Path, ...]
                  ) -> tuple[str, Record | None]:
    """`load_pretrained_weights`, and the record it went by; `chain`: the adapter files whose
    bases led here."""
    if lora_run := _lora_run(path):
        # A lora run's adapters (or folder): the model it trained, as generate and export read
        # it, base and adapters merged. Read as a plain file it "did not fit" a same-shaped model.
        merged = _lora_model(*lora_run, None, chain)
        _same_head_split(path, merged.record, model.config)
        load_into(model, merged.model.state_dict(), (merged.record.config(), merged.record.where))
        return (_merged_text(merged.base, merged.adapter, merged.base_check),
                merged.fingerprint or merged.record)
    weights, records = locate(path)  # a run's or saved folder: its own weights file
    state_dict, saved, _ = read_weights(weights)
    records = ([saved] if saved else []) + records
    record = agreed(weights, records)
    if record is not None:
        _same_head_split(weights, record, model.config)
    load_into(model, state_dict, None if record is None else (record.config(), record.where))
    note = (f"head split as recorded in {record.where}" if record is not None
            else "the file records no head split; the run's settings give it")
    return (f"its weights {weights}; {note}" if weights != path else note), record


def _same_head_split(path: Path, record: Record, ours: MiniMindConfig) -> None:
    recorded = record.config()
    split = (recorded.num_attention_heads, recorded.num_key_value_heads)
    if split != (ours.num_attention_heads, ours.num_key_value_heads):
        raise WeightsMismatchError(
            f"{path}: trained with num_attention_heads/num_key_value_heads {split[0]}/"
            f"{split[1]} ({record.where}); this run's model has {ours.num_attention_heads}/"
            f"{ours.num_key_value_heads}: set the model's heads to {split[0]}/{split[1]}")


# -- a lora run: its base and its adapters -------------------------------------------------
def _lora_run(path: Path) -> tuple[Path, RunSettings] | None:
    """(config.toml, its settings) when `path` is a lora run's folder or its adapter file."""
    if path.is_dir():
        toml = path / CONFIG_FILE
    elif path.is_file() and holds_adapters(str(path)):  # <run>/lora/<lora_name>_<hidden>.pth
        toml = path.parent.parent / CONFIG_FILE
    else:
        return None
    if not toml.is_file():
        return None
    try:
        settings = run_settings(toml)
    except CheckpointError:
        if path.is_dir():
            raise  # the run folder's own config.toml: the user needs to know
        return None
    if settings.train.stage != "lora" or (path.is_file() and path != toml.parent
                                          / settings.weights_name()):
        return None
    return toml, settings


def lora_base(path: Path) -> Path | None:
    """The base a lora run's adapter file, folder or resume file trained on, as the run
    recorded it (a relative from_weight as the run took it); None when `path` is no lora
    run's."""
    if path.name.endswith(RESUME_SUFFIX):  # the adapters beside it name their run
        path = path.with_name(weights_of_resume(path.name))
    if (run := _lora_run(path)) is None or not run[1].train.from_weight:
        return None
    toml, settings = run
    return as_the_run_took_it(settings.train.from_weight, toml.parent, settings.train.out_dir)


def _read_lora_run(toml: Path, settings: RunSettings, tokenizer_path: str | None,
                   num_attention_heads: int | None) -> Checkpoint:
    """The model a lora run trained (`_lora_model`) with its tokenizer."""
    merged = _lora_model(toml, settings, num_attention_heads, ())
    return Checkpoint(merged.model.eval(), merged.base, merged.record.where,
                      *choose_tokenizer(merged.record.tokenizer, tokenizer_path,
                                         merged.model.config.vocab_size, merged.fingerprint),
                      adapter_path=merged.adapter, base_check=merged.base_check)


def _lora_model(toml: Path, settings: RunSettings, num_attention_heads: int | None,
                chain: tuple[Path, ...]) -> _MergedLora:
    """The model a lora run trained: its recorded
    config, the base weights it started from (`train.from_weight`, a relative one as the run
    took it: `as_the_run_took_it`; itself another lora run's, merged, where it is one) and its
    adapters, merged. A base that is gone or does not fit is refused naming both files."""
    adapter = toml.parent / settings.weights_name()
    if not adapter.is_file():
        raise CheckpointError(f"{toml.parent}: no {settings.weights_name()}: the lora run has "
                              "not saved its adapters yet")
    if adapter in chain:  # config.toml files edited to name each other
        raise BaseCheckError(f"{adapter}: its base leads back to it: "
                              + " → ".join(map(str, (*chain, adapter))))
    if not settings.train.from_weight:
        raise CheckpointError(f"{adapter}: its run records no base (train.from_weight in {toml} "
                              "is empty)")
    resume = resume_path(adapter)
    instead = (f"; the run's resume file {resume} keeps the base its adapters trained on: give "
               "that file instead" if resume.is_file() else "")
    if why := unusable_path(settings.train.from_weight):
        raise CheckpointError(f"{adapter}: its base (train.from_weight in {toml}) is gone: {why}"
                              + instead)
    recorded = settings.train.from_weight
    base = as_the_run_took_it(recorded, toml.parent, settings.train.out_dir)
    if not (base.is_file() or base.is_dir()):  # a folder: a run's or a saved model's
        out_dir = settings.train.out_dir
        if start_unknown(recorded, toml.parent, out_dir):  # not known to be gone
            raise CheckpointError(
                f"{adapter}: its base {recorded} (train.from_weight in {toml}) counts from the "
                f"folder the run was started in, which its out_dir {out_dir!r} cannot tell "
                f"from where the run is now ({toml.parent}: moved or renamed, or an absolute "
                "out_dir); it is not in the current folder: open the run from the folder it "
                "was started in" + instead)
        raise CheckpointError(f"{adapter}: its base {base} (train.from_weight in {toml}) is gone"
                              + ("" if Path(recorded).expanduser().is_absolute() else
                                 " (a relative from_weight counts from the folder the run was "
                                 "started in)") + instead)
    record = settings_as_record(toml, settings)
    config = record.config()
    if num_attention_heads not in (None, config.num_attention_heads):
        raise CheckpointError(f"{adapter}: num_attention_heads {num_attention_heads} contradicts "
                              f"{toml}, which records {config.num_attention_heads}")
    model = MiniMindForCausalLM(config)
    try:
        _load_weights(model, base, (*chain, adapter))
        base_check = check_lora_base(model, base, adapter)
        load_lora(model, adapter)
    except BaseCheckError:
        raise  # it names both files and what differs already
    except (CheckpointError, WeightsMismatchError, LoRAError) as e:
        lines = e.differences if isinstance(e, WeightsMismatchError) else str(e).splitlines()
        detail = "; ".join(line.strip().removeprefix(f"{base}: ").removeprefix(f"{adapter}: ")
                           for line in lines)
        raise CheckpointError(f"{adapter}: its base {base} does not fit the lora run's model "
                              f"({toml}): {detail}") from None
    merge_lora(model)
    return _MergedLora(model, record, base, adapter, base_check)


class BaseCheckError(CheckpointError):
    """A lora run's base file is not, or cannot be shown to be, the base its adapters trained
    on."""


def check_lora_base(model: MiniMindForCausalLM, base: Path, adapter: Path) -> str:
    """Whether `model`, loaded from `base` as it is now, holds the frozen base the `adapter`
    file's lora run trained on, as the run's own resume file saved it (written with the
    adapters, as one pair): the adapters only mean what they learned on that base.
    BaseCheckError when it does not; what was checked, for the user, when it does or cannot
    be checked."""
    resume = resume_path(adapter)
    if not resume.is_file():
        return f"base not checked: no {resume.name} beside the adapters to check it against"
    try:
        state = load_resume(resume)
        trained = ModelSettings.model_validate(state["settings"]["model"])
        changed = _function_changes(trained.to_config(), model.config)
    except (CheckpointError, ValidationError, ValueError, KeyError, TypeError) as e:
        raise BaseCheckError(f"{adapter}: cannot check its base {base} against the run's resume "
                             f"file: {e}") from None
    if changed:  # the same tensors, another function: not the model the adapters trained on
        raise BaseCheckError(
            f"{adapter}: its lora run trained with other settings than {base} records "
            f"({resume} there, {base.name}'s record here): " + ", ".join(changed) + "; open "
            "the lora run's folder instead, which takes the run's own settings")
    saved = state["model"]
    for name, tensor in model.state_dict().items():
        if ADAPTER_MARK in name:  # the adapters themselves, if already loaded, are not the base
            continue
        if name not in saved or not torch.equal(saved[name].to(tensor.dtype), tensor):
            raise BaseCheckError(
                f"{adapter}: its base {base} is not the one the lora run trained on: "
                f"{name} differs from the base saved in {resume}. " + _why_another_base(
                    base, adapter))
    return f"base checked against {resume.name}"


def _why_another_base(base: Path, adapter: Path) -> str:
    """Another file than the run's own base, or the run's base changed since: its record
    tells which."""
    unknown = ("Either it is another file than the run started from, or that file was "
               "replaced or trained on since")
    if (run := _lora_run(adapter)) is None:  # away from its run folder: no record to ask
        return unknown
    toml, settings = run
    try:
        recorded = as_the_run_took_it(settings.train.from_weight, toml.parent,
                                      settings.train.out_dir)
    except RuntimeError:  # a ~user this machine does not know
        return unknown
    if recorded.resolve() != base.resolve():
        return (f"The run started from {recorded} ({toml}): merge the adapters into that "
                f"file, or open the run folder {toml.parent}, which merges them itself")
    return ("The file was replaced or trained on since; the run's resume file "
            f"{resume_path(adapter)} keeps the base its adapters trained on: give that file to "
            "export or generate, or restore the base the run started from")


# -- building the model ----------------------------------------------------------------------
def _config_from_shapes(path: Path, state_dict: dict[str, torch.Tensor],
                        num_attention_heads: int | None) -> tuple[MiniMindConfig, str]:
    try:
        config = infer_config(state_dict, num_attention_heads)
    except HeadSplitError as e:
        # The playground and the export screen have no field for it: name where it is given.
        raise CheckpointError(f"{path}: {e}".replace(
            "with num_attention_heads",
            "with the --num_attention_heads of minimind-tui generate or export")) from None
    except (ValueError, IndexError, ZeroDivisionError) as e:
        raise CheckpointError(f"{path}: not a MiniMind checkpoint ({e})") from None
    heads = f" and num_attention_heads {num_attention_heads}" if num_attention_heads else ""
    return config, f"tensor shapes{heads} (other fields: the family's defaults)"


def _build(config: MiniMindConfig, state_dict: dict[str, torch.Tensor], path: Path
           ) -> MiniMindForCausalLM:
    model = MiniMindForCausalLM(config)
    try:
        load_into(model, state_dict)
    except WeightsMismatchError as e:
        raise CheckpointError(f"{path}: " + "; ".join(line.strip() for line in str(e).splitlines())
                              ) from None
    return model
