"""Export a trained MiniMind model as a Hugging Face folder or as upstream MiniMind's ``.pth``.

``load_source`` accepts a run folder (``config.toml`` + ``<save_weight>_<hidden>[_moe].pth``, or
its resume file when that is all there is), a weights file (upstream's or ours, a resume
checkpoint, ``.safetensors``) or a folder written by our ``save_pretrained``. Fields that tensor
shapes cannot tell (rope_theta, rms_norm_eps, top-k, ...) come from the run's settings where there
are any: the run folder's ``config.toml``, the settings inside a resume file, or the
``config.toml`` of the run folder a weights file sits in; a bare upstream file gets the family
defaults, which is what upstream trained with.

``export_hf`` writes ``config.json``, ``model.safetensors``, the tokenizer files and
``generation_config.json`` for the standard transformers class that computes the same function
(``hf_architectures`` explains each mapping), or our own modeling code for
``trust_remote_code`` where no such class exists. The folder is built next to ``OUT``, loaded
back and checked against our logits in float32, and only then moved into place.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import BaseModel, ValidationError
from safetensors.torch import save_file

from .atomic import atomic_write_bytes
from .checkpoint import resume_path, torch_bytes
from .config import MiniMindConfig
from .hf_architectures import REMOTE_CODE, REMOTE_CODE_AUTO_MAP, hf_files
from .model import MiniMindForCausalLM
from .run_files import CONFIG_FILE, weights_name
from .settings import ModelSettings, SettingsError, TrainSettings, read_toml
from .tokenizer import BUNDLED_NAMES, BUNDLED_TOKENIZER_DIR, TokenizerError, load_tokenizer
from .torchfile import CheckpointError, safe_safetensors_load, safe_torch_load
from .upstream import (WeightsMismatchError, _strip_wrapper_prefixes, export_upstream_state_dict,
                       infer_config, load_into)

# Files a Hugging Face tokenizer folder may consist of; whichever exist are copied verbatim, so
# the export loads with the same tokenizer class the source names.
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja", "chat_template.json",
)  # fmt: skip
PROBE_SHAPE = (2, 24)
# Relative to the largest logit: float32 reorderings stay near 1e-6, a wrong mapping is O(1).
VERIFY_TOLERANCE = 1e-4


class ExportError(ValueError):
    """The source or destination is unusable; the message is one line naming the path and why."""


class ExportVerificationError(RuntimeError):
    """The written folder does not reproduce the model's logits (a defect, not a user error)."""


@dataclass
class ExportSource:
    model: MiniMindForCausalLM
    weights_path: Path
    config_origin: str  # where the non-layout fields came from, for the user
    tokenizer_dir: Path


@dataclass
class ExportResult:
    path: Path
    architecture: str
    max_logit_diff: float | None  # None when verification was skipped

    @property
    def remote_code(self) -> bool:
        return self.architecture == REMOTE_CODE


# -- reading the source ----------------------------------------------------------------------
def load_source(src: str | Path, tokenizer_path: str | None = None) -> ExportSource:
    """Load the model (and locate its tokenizer) from a run folder, weights file or saved folder.

    ``tokenizer_path`` overrides the tokenizer the source names; "" means the bundled one.
    """
    path = Path(src).expanduser()
    if path.is_dir():
        if (path / CONFIG_FILE).is_file():
            model, weights, origin, tokenizer = _from_run_folder(path)
        elif (path / "config.json").is_file():
            model, weights, origin, tokenizer = _from_saved_folder(path)
        else:
            raise ExportError(f"{path}: neither a run folder (no config.toml) nor a saved model "
                              "(no config.json)")
    elif path.is_file():
        model, weights, origin, tokenizer = _from_weights_file(path)
    else:
        raise ExportError(f"{path}: no such file or folder")
    if tokenizer_path is not None:
        tokenizer = (tokenizer_path, "--tokenizer_path")
    tokenizer_dir = _check_tokenizer(*tokenizer, model.config.vocab_size)
    return ExportSource(model.eval(), weights, origin, tokenizer_dir)


def _from_run_folder(folder: Path):
    toml = folder / CONFIG_FILE
    model_settings, train = _read_run_settings(toml)
    name = weights_name(train.save_weight, model_settings.hidden_size, model_settings.use_moe)
    weights = folder / name
    if not weights.is_file():
        if not resume_path(weights).is_file():
            raise ExportError(f"{folder}: no {name} (nor its resume file): the run has not saved "
                              "a checkpoint yet")
        weights = resume_path(weights)
    state_dict, _ = _read_checkpoint(weights)
    model = _build(_config_from_settings(model_settings, toml), state_dict, weights)
    return model, weights, str(toml), (train.tokenizer_path, f"train.tokenizer_path in {toml}")


def _from_weights_file(path: Path):
    state_dict, saved_settings = _read_checkpoint(path)
    if saved_settings is not None:
        where = f"the settings saved in {path.name}"
        settings = (_validate(ModelSettings, saved_settings.get("model", {}), where),
                    _validate(TrainSettings, saved_settings.get("train", {}), where))
    else:
        where, settings = str(path.parent / CONFIG_FILE), _settings_of_enclosing_run(path)
    if settings is None:
        try:
            config = infer_config(state_dict)
        except (ValueError, IndexError, ZeroDivisionError) as e:
            raise ExportError(f"{path}: not a MiniMind checkpoint ({e})") from None
        where = "tensor shapes (other fields: the family's defaults)"
        return _build(config, state_dict, path), path, where, ("", "the bundled tokenizer")
    model_settings, train = settings
    model = _build(_config_from_settings(model_settings, where), state_dict, path)
    return model, path, where, (train.tokenizer_path, f"train.tokenizer_path in {where}")


def _from_saved_folder(folder: Path):
    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise ExportError(f"{folder / 'config.json'}: not readable JSON ({e})") from None
    model_type = data.get("model_type") if isinstance(data, dict) else None
    if model_type != MiniMindConfig.model_type:
        raise ExportError(f"{folder}: config.json describes a {model_type!r} model, not a MiniMind "
                          "one (export needs our own checkpoint)")
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise ExportError(f"{folder}: no model.safetensors next to config.json")
    try:
        config = MiniMindConfig.from_dict(data)
    except (TypeError, ValueError) as e:
        raise ExportError(f"{folder / 'config.json'}: {e}") from None
    state_dict, _ = _read_checkpoint(weights)
    has_tokenizer = any((folder / name).is_file()
                        for name in ("tokenizer.json", "tokenizer_config.json"))
    tokenizer = (str(folder), f"{folder}") if has_tokenizer else ("", "the bundled tokenizer")
    return _build(config, state_dict, weights), weights, str(folder / "config.json"), tokenizer


def _read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """The state_dict in a weights file and, for a resume checkpoint, the run settings saved in it.

    Only tensors and plain data are unpickled (``weights_only=True``): a checkpoint is user input.
    """
    try:
        data = (safe_safetensors_load(path) if path.suffix == ".safetensors"
                else safe_torch_load(path))
    except CheckpointError as e:
        raise ExportError(f"not a MiniMind checkpoint: {e}") from None
    settings = None
    if isinstance(data, dict) and isinstance(data.get("model"), dict):  # resume checkpoint
        settings = data.get("settings") if isinstance(data.get("settings"), dict) else None
        data = data["model"]
    if not (isinstance(data, dict) and data and all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items())):
        raise ExportError(f"{path}: not a MiniMind checkpoint (no state_dict of tensors in it)")
    return {_strip_wrapper_prefixes(k): v for k, v in data.items()}, settings


def _build(config: MiniMindConfig, state_dict: dict[str, torch.Tensor], path: Path
           ) -> MiniMindForCausalLM:
    model = MiniMindForCausalLM(config)
    try:
        load_into(model, state_dict)
    except WeightsMismatchError as e:
        raise ExportError(f"{path}: " + "; ".join(line.strip() for line in str(e).splitlines())
                          ) from None
    return model


def _read_run_settings(toml: Path) -> tuple[ModelSettings, TrainSettings]:
    """[model] and [train] of a run's config.toml, field by field: the cross-field checks (e.g.
    "CUDA is not available") are about training on this machine, not about exporting."""
    try:
        data = read_toml(toml)
    except SettingsError as e:
        raise ExportError(str(e.problems[0])) from None
    return (_validate(ModelSettings, data.get("model", {}), str(toml)),
            _validate(TrainSettings, data.get("train", {}), str(toml)))


def _validate(section: type[BaseModel], data: dict, where: str):
    try:
        return section.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(map(str, err["loc"]))
        raise ExportError(f"{where}: {field}: {err['msg']}") from None


def _settings_of_enclosing_run(path: Path) -> tuple[ModelSettings, TrainSettings] | None:
    """Settings of the run folder ``path`` lies in, if it is that run's weights or resume file."""
    toml = path.parent / CONFIG_FILE
    if not toml.is_file():
        return None
    try:
        model_settings, train = _read_run_settings(toml)
    except ExportError:  # not a config.toml of ours: the file stands alone
        return None
    name = weights_name(train.save_weight, model_settings.hidden_size, model_settings.use_moe)
    return (model_settings, train) if path.name in (name, resume_path(Path(name)).name) else None


def _config_from_settings(model_settings: ModelSettings, where: str | Path) -> MiniMindConfig:
    try:
        return MiniMindConfig(**model_settings.to_config_kwargs())
    except ValueError as e:
        raise ExportError(f"{where}: {e}") from None


def _check_tokenizer(spec: str, where: str, vocab_size: int) -> Path:
    try:
        tokenizer = load_tokenizer(spec or None)
    except TokenizerError as e:
        hint = "" if where == "--tokenizer_path" else "; choose one with --tokenizer_path"
        raise ExportError(f"tokenizer ({where}): {e}{hint}") from None
    if len(tokenizer) > vocab_size:
        raise ExportError(f"tokenizer ({where}) has {len(tokenizer)} tokens, more than the "
                          f"model's vocab_size {vocab_size}")
    return BUNDLED_TOKENIZER_DIR if spec.strip() in BUNDLED_NAMES else Path(spec).expanduser()



# -- writing ---------------------------------------------------------------------------------
def export_hf(source: ExportSource, out: str | Path, *, dtype: torch.dtype = torch.float32,
              remote_code: bool = False, verify: bool = True, overwrite: bool = False
              ) -> ExportResult:
    """Write the Hugging Face folder ``out`` (see the module docstring)."""
    out = Path(out).expanduser()
    check_destination(out, overwrite)
    architecture, config_dict, weights, files = hf_files(source.model, dtype, remote_code)
    tokenizer = load_tokenizer(str(source.tokenizer_dir))
    special_ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": (tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                         else source.model.config.pad_token_id),
    }
    config_dict.update(special_ids)

    out.parent.mkdir(parents=True, exist_ok=True)
    # A fixed name: transformers keeps a copy of remote code per folder name, so a random one
    # would leave a new copy behind on every export. A leftover is from an interrupted export.
    staging = out.with_name(f"{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        (staging / "config.json").write_text(
            json.dumps(config_dict, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        save_file(weights, staging / "model.safetensors", metadata={"format": "pt"})
        for name, text in files.items():
            (staging / name).write_text(text, encoding="utf-8")
        for name in TOKENIZER_FILES:
            if (source.tokenizer_dir / name).is_file():
                shutil.copyfile(source.tokenizer_dir / name, staging / name)
        from transformers import GenerationConfig

        GenerationConfig(**special_ids).save_pretrained(staging)
        diff = _verify(source.model, staging, dtype, architecture) if verify else None
        _move_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(out, architecture, diff)


def export_upstream(model: MiniMindForCausalLM, out: str | Path, *, overwrite: bool = False
                    ) -> Path:
    """Write upstream's ``pretrain_<hidden>[_moe].pth`` into folder ``out`` (or to ``out`` itself
    when it ends in ``.pth``). Returns the file written."""
    config = model.config
    if not config.tie_word_embeddings:
        raise ExportError("upstream MiniMind always ties lm_head to the embedding; this model "
                          "does not (tie_word_embeddings = false), so upstream could not load it")
    out = Path(out).expanduser()
    target = out if out.suffix == ".pth" else \
        out / weights_name("pretrain", config.hidden_size, config.use_moe)
    if target.is_dir() or (target.exists() and not overwrite):
        raise ExportError(f"{target}: already exists (pass --overwrite to replace it)")
    return atomic_write_bytes(target, torch_bytes(export_upstream_state_dict(model)))


def check_destination(out: str | Path, overwrite: bool = False) -> None:
    """Refuse an ``out`` that ``export_hf`` could not fill (callers may ask before loading)."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: is a file; the export is a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ExportError(f"{out}: folder is not empty (pass --overwrite to replace it)")
        # --overwrite deletes the folder: only do that to something that looks like an export.
        if not (out / "config.json").is_file():
            raise ExportError(f"{out}: not an exported model (no config.json); refusing to "
                              "replace it even with --overwrite")


def _move_into_place(staging: Path, out: Path) -> None:
    if not out.exists():
        os.rename(staging, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f"{out.name}.old-", dir=out.parent))
    os.rename(out, old / out.name)
    os.rename(staging, out)
    shutil.rmtree(old)


def _verify(model: MiniMindForCausalLM, folder: Path, dtype: torch.dtype, architecture: str
            ) -> float:
    """Largest |logit difference| between ``folder`` loaded by transformers and ``model`` with its
    weights rounded to ``dtype``, both computed in float32 on a fixed random probe."""
    from transformers import AutoModelForCausalLM

    reference = model
    if dtype != torch.float32:
        reference = MiniMindForCausalLM(model.config).eval()
        load_into(reference, {k: v.to(dtype).float() for k, v in model.state_dict().items()})
    model_class = AutoModelForCausalLM
    if architecture == REMOTE_CODE:
        # Where this package is imported, the Auto classes would pick its registered MiniMind
        # classes over the folder's files; load the folder's own code to check that instead.
        from transformers.dynamic_module_utils import get_class_from_dynamic_module

        model_class = get_class_from_dynamic_module(REMOTE_CODE_AUTO_MAP["AutoModelForCausalLM"],
                                                    str(folder))
    with _quiet_transformers():
        loaded = model_class.from_pretrained(folder, dtype=torch.float32).eval()
    if type(loaded).__name__ != architecture:
        raise ExportVerificationError(f"transformers loaded {type(loaded).__name__}, "
                                      f"not {architecture}")
    probe = torch.randint(0, model.config.vocab_size, PROBE_SHAPE,
                          generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference(probe.to(model.device)).logits.float().cpu()
        actual = loaded(probe).logits.float()
    diff = (expected - actual).abs().max().item()
    if not diff <= VERIFY_TOLERANCE * max(1.0, expected.abs().max().item()):
        raise ExportVerificationError(
            f"the exported {architecture} does not reproduce the model (max |logit difference| "
            f"{diff:.3g}); nothing was written")
    return diff


@contextlib.contextmanager
def _quiet_transformers():
    """No progress bars or load reports while we load our own folder back."""
    from transformers.utils import logging

    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()
