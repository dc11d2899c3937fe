"""Export a trained MiniMind model as a Hugging Face folder or as upstream MiniMind's ``.pth``.

The model comes from `checkpoint_reader.read_checkpoint`, which builds it from what was recorded
with the weights (and says which record).

``export_hf`` writes ``config.json``, ``model.safetensors``, the tokenizer files and
``generation_config.json`` for the standard transformers class that computes the same function
(``hf_architectures`` explains each mapping), or our own modeling code for
``trust_remote_code`` where no such class exists. The folder is built next to ``OUT``, loaded
back and checked against our model's logits in float32, and only then moved into place. That
check is of the conversion: that the folder computes what our model computes, with the config
the reader took from its record. A folder in a narrower dtype is checked against our model with
its weights rounded the same way (exactly what the folder should hold); how far that rounding
itself moves the logits is measured beside it, never passed off as part of the check.

Where an export may go, and what --overwrite may replace: `export_destination`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save

from .atomic import atomic_write_bytes, missing_folders, remove_empty, stale_temp_files
from .checkpoint import weights_bytes
from .checkpoint_reader import Checkpoint, lora_base
from .folder_lock import LockHeld, lock_folder
from .export_destination import (EXPORT_FILES, TOKENIZER_FILES, ExportError, ExportWriteError,
                                 check_an_earlier_export, check_destination,
                                 check_not_the_source, check_only_an_export,
                                 finish_an_interrupted_replace, replaced_folder)
from .hf_architectures import REMOTE_CODE, REMOTE_CODE_AUTO_MAP, hf_files
from .meter import NonFiniteError
from .model import MiniMindForCausalLM
from .run_files import LOCK_FILE, save_weight_of, weights_name
from .tokenizer import load_tokenizer
from .torchfile import CheckpointError, first_non_finite
from .upstream import load_into
from .weight_records import EXPORT_MARK, EXPORTER, locate

PROBE_SHAPE = (2, 24)
# Relative to the largest logit: float32 reorderings stay near 1e-6, a wrong mapping is O(1).
VERIFY_TOLERANCE = 1e-4


class ExportVerificationError(RuntimeError):
    """The written folder does not reproduce the model's logits (a defect, not a user error)."""


@dataclass
class ExportResult:
    path: Path
    architecture: str
    max_logit_diff: float | None  # None when verification was skipped
    rounding_logit_diff: float | None = None
    """How far rounding the weights to the folder's dtype moves our model's logits (None for
    float32, where nothing is rounded, or when verification was skipped)."""

    @property
    def remote_code(self) -> bool:
        return self.architecture == REMOTE_CODE


# -- writing ---------------------------------------------------------------------------------
def export_hf(source: Checkpoint, out: str | Path, *, dtype: torch.dtype = torch.float32,
              remote_code: bool = False, verify: bool = True, overwrite: bool = False
              ) -> ExportResult:
    """Write the Hugging Face folder ``out`` (see the module docstring)."""
    out = Path(out).expanduser()
    check_destination(out, overwrite)
    check_not_the_source(out, source)
    architecture, config_dict, weights, files = hf_files(source.model, dtype, remote_code)
    config_dict[EXPORT_MARK] = EXPORTER
    tokenizer = load_tokenizer(str(source.tokenizer_dir))
    special_ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": (tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                         else source.model.config.pad_token_id),
    }
    config_dict.update(special_ids)

    if bad := first_non_finite(weights):
        raise ExportError(f"{bad} does not fit {str(dtype).removeprefix('torch.')} (it turns "
                          "inf): export as float32 or bfloat16")
    with _staging_folder(out, overwrite) as staging:
        try:
            try:
                _write_folder(staging, config_dict, weights, files, source.tokenizer_dir,
                              special_ids)
            except OSError as e:
                raise ExportWriteError(f"{out}: cannot write the export there "
                                  f"({e.strerror or e})") from None
            diff, rounding = (_verify(source.model, staging, dtype, architecture) if verify
                              else (None, None))
            (staging / LOCK_FILE).unlink()  # still held: the folder moves without it
            try:
                _move_into_place(staging, out)
            except OSError as e:
                raise ExportWriteError(f"{out}: cannot move the export into place "
                                  f"({e.strerror or e})") from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return ExportResult(out, architecture, diff, rounding)


@contextlib.contextmanager
def _staging_folder(out: Path, overwrite: bool) -> Iterator[Path]:
    """`<out>.partial`, the folder beside `out` an export is built in, locked for this export.
    A fixed name: transformers keeps a copy of remote code per folder name, so a random one
    would leave a new copy behind on every export. What an interrupted export left there is
    cleared; a folder of anything else, or one another export is building, is refused (both
    were deleted). An export killed while it replaced an earlier one is finished first
    (`finish_an_interrupted_replace`): the earlier one back in place needs --overwrite again."""
    staging = out.with_name(f"{out.name}.partial")
    if staging.is_symlink() or (staging.exists() and not staging.is_dir()):
        raise ExportError(f"{staging}: in the way: the export is built in a folder of that "
                          f"name beside {out.name}; move it away")
    ours = EXPORT_FILES | {LOCK_FILE} | {p.name for p in stale_temp_files(staging)}
    if staging.is_dir() and (theirs := sorted(p.name for p in staging.iterdir()
                                              if p.name not in ours)):
        raise ExportError(f"{staging}: holds {', '.join(theirs[:3])}, which no export wrote; "
                          f"the export is built in a folder of that name beside {out.name}: "
                          "move it away")
    made = missing_folders(out.parent)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        lock = lock_folder(staging)
    except LockHeld:
        raise ExportError(f"{out}: another export to it is running (it is building "
                          f"{staging})") from None
    except OSError as e:
        remove_empty(made)
        raise ExportWriteError(f"{out}: cannot write the export there ({e.strerror or e})"
                               ) from None
    try:
        if finish_an_interrupted_replace(out) and not overwrite:
            raise ExportError(f"{out}: an export killed while it replaced this folder had left "
                              f"the earlier export in {replaced_folder(out).name}; it is back in "
                              "place (pass --overwrite to replace it)")
        try:
            for leftover in staging.iterdir():
                if leftover.name != LOCK_FILE:
                    shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        except OSError as e:
            raise ExportError(f"{staging}: cannot clear what an interrupted export left there "
                              f"({e.strerror or e})") from None
        yield staging
    finally:
        os.close(lock)
        remove_empty(made)  # a failed export's: a new OUT's folders are not left behind, empty


def _write_folder(folder: Path, config_dict: dict, weights: dict[str, torch.Tensor],
                  files: dict[str, str], tokenizer_dir: Path, special_ids: dict) -> None:
    from transformers import GenerationConfig

    (folder / "config.json").write_text(
        json.dumps(config_dict, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    # Through the atomic writer, which gives the file a plain open()'s mode (safetensors' own
    # writer makes it 0600, unreadable to anyone else unlike the rest of the folder).
    atomic_write_bytes(folder / "model.safetensors", save(weights, metadata={"format": "pt"}))
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copyfile(tokenizer_dir / name, folder / name)
    _put_bos_first(folder / "tokenizer.json", special_ids["bos_token_id"])
    GenerationConfig(**special_ids).save_pretrained(folder)


def _put_bos_first(tokenizer_json: Path, bos_id: int | None) -> None:
    """Make a plain `AutoTokenizer(text)` start with bos, as `generate.encode_prompt` and the
    training data do: without it the exported model would see prompts it never trained on.
    A tokenizer that already post-processes its text is left as its author made it."""
    if bos_id is None or not tokenizer_json.is_file():
        return
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    if data.get("post_processor") is not None:
        return
    bos = next((t["content"] for t in data.get("added_tokens", []) if t.get("id") == bos_id),
               None)
    if bos is None:
        return
    first = {"SpecialToken": {"id": bos, "type_id": 0}}
    data["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [first, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [first, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": bos, "type_id": 1}},
                 {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}},
    }
    tokenizer_json.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def export_upstream(source: Checkpoint, out: str | Path, *, overwrite: bool = False,
                    merged: Path | None = None) -> Path:
    """Write upstream's ``<save_weight>_<hidden>[_moe].pth`` into folder ``out`` (or to ``out``
    itself when it ends in ``.pth``); `merged`: an adapter file merged into `source.model`.
    Returns the file written."""
    model, config = source.model, source.model.config
    if not config.tie_word_embeddings:
        # MiniMind-3's config has had a tie_word_embeddings flag since 2026-04-19, but no
        # option of its scripts sets it: they build tied models, as MiniMind2's always did.
        raise ExportError("upstream's scripts build a tied model (lm_head is the embedding), "
                          "and this one is not (tie_word_embeddings = false): its two matrices "
                          "would load into their one, the last over the first, without an "
                          "error; export it with --format hf instead")
    if config.qk_norm and config.use_moe and config.n_shared_experts:
        raise ExportError("no upstream model has both q/k norms (MiniMind-3's) and shared "
                          "experts (MiniMind2's MoE), so neither family's scripts could load "
                          "this one (a strict load fails; upstream's from_weight would drop "
                          "what its model lacks); export it in the transformers format instead")
    out = Path(out).expanduser()
    check_destination(out, overwrite, upstream=True)
    target = out if out.suffix == ".pth" else \
        out / weights_name(upstream_save_weight(source, merged), config.hidden_size,
                           config.use_moe)
    check_not_the_source(target, source)
    if target.is_dir() or (target.exists() and not overwrite):
        raise ExportError(f"{target}: already exists (pass --overwrite to replace it)")
    if target.exists():
        check_an_earlier_export(target)
    try:
        return atomic_write_bytes(target, weights_bytes(model, metadata={EXPORT_MARK: EXPORTER}))
    except NonFiniteError as e:
        raise ExportError(f"{e}: the model does not fit float16, upstream's format") from None
    except OSError as e:
        raise ExportWriteError(f"{target}: cannot write there ({e.strerror or e})") from None


def upstream_save_weight(source: Checkpoint, merged: Path | None = None) -> str:
    """What upstream's scripts call the model (their --weight): the save_weight its file was
    named with (full_sft for an sft run's), followed by the name of any adapters merged in
    (full_sft_lora_medical); pretrain for a file named another way, as upstream's first. A
    base that is itself a lora run's adapters brings its own base's name first."""
    config = source.model.config

    def named(path: Path) -> str | None:
        if path.is_dir():  # a run's folder (a base recorded so) stands for its weights file
            try:
                path = locate(path)[0]
            except CheckpointError:
                return None
        return save_weight_of(path.name, config.hidden_size, config.use_moe)

    adapters = [Path(a) for a in (source.adapter_path, merged) if a is not None]
    base = Path(source.weights_path)
    while (below := lora_base(base)) is not None and base not in adapters:  # lora on lora
        adapters.insert(0, base)
        base = below
    return "_".join([named(base) or "pretrain", *(named(a) or a.stem for a in adapters)])


def _move_into_place(staging: Path, out: Path) -> None:
    if not out.exists():
        os.rename(staging, out)
        return
    check_only_an_export(out, exported={p.name for p in staging.iterdir()})
    replaced = replaced_folder(out)
    try:
        os.rename(out, replaced)
        os.rename(staging, out)
    except BaseException:  # Ctrl+C or a refusal between the two: the earlier export stays
        if replaced.exists() and not out.exists():
            os.rename(replaced, out)
        raise
    shutil.rmtree(replaced)  # a kill while it goes: the next export finishes it


def _verify(model: MiniMindForCausalLM, folder: Path, dtype: torch.dtype, architecture: str
            ) -> tuple[float, float | None]:
    """Largest |logit difference| between ``folder`` loaded by transformers and ``model`` with its
    weights rounded to ``dtype``, both computed in float32 on a fixed random probe; and how far
    that rounding moves ``model``'s own logits (None for float32, which rounds nothing)."""
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
    with quiet_transformers():
        loaded = model_class.from_pretrained(folder, dtype=torch.float32).eval()
    if type(loaded).__name__ != architecture:
        raise ExportVerificationError(f"transformers loaded {type(loaded).__name__}, "
                                      f"not {architecture}")
    probe = torch.randint(0, model.config.vocab_size, PROBE_SHAPE,
                          generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference(probe.to(model.device)).logits.float().cpu()
        actual = loaded(probe).logits.float()
        original = None if reference is model else model(probe.to(model.device)).logits.float()
    diff = (expected - actual).abs().max().item()
    if not diff <= VERIFY_TOLERANCE * max(1.0, expected.abs().max().item()):
        raise ExportVerificationError(
            f"the exported {architecture} does not reproduce the model (max |logit difference| "
            f"{diff:.3g}); nothing was written")
    return diff, None if original is None else (expected - original.cpu()).abs().max().item()


@contextlib.contextmanager
def quiet_transformers():
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
