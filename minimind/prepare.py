"""Everything a run needs before its first step, checked up front.

Each user mistake (unwritable out_dir, missing or malformed data, a tokenizer that cannot load,
weights that do not fit, a resume checkpoint that is not there) becomes an `InputError` with one
clear message, before any training time is spent.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from minimind import distributed
from minimind.checkpoint import load_resume, resume_path
from minimind.config import MiniMindConfig
from minimind.data import (DataError, JsonlIndex, PackedDataset, PretrainDataset,
                           build_token_cache, resolve_data_path)
from minimind.data.corpus import default_cache_dir
from minimind.model import MiniMindForCausalLM
from minimind.settings import RunSettings
from minimind.tokenizer import TokenizerError, load_tokenizer
from minimind.upstream import WeightsMismatchError, load_pretrained_weights


class InputError(Exception):
    """A problem with the user's settings, files or folders (exit code 2, no traceback)."""


@dataclass
class Prepared:
    out_dir: Path
    weights_path: Path
    train_data: Dataset
    val_data: Dataset | None
    model: MiniMindForCausalLM
    resume: dict[str, Any] | None


def prepare(settings: RunSettings, dist: distributed.DistInfo,
            log: Callable[[str], None]) -> Prepared:
    t = settings.train
    out_dir = _writable_dir(Path(t.out_dir).expanduser())
    weights_path = out_dir / settings.weights_name()
    try:
        tokenizer = load_tokenizer(t.tokenizer_path or None)
    except TokenizerError as e:
        raise InputError(f"train.tokenizer_path: {e}") from None
    if len(tokenizer) > settings.model.vocab_size:
        raise InputError(f"model.vocab_size ({settings.model.vocab_size}) is smaller than the "
                         f"tokenizer's vocabulary ({len(tokenizer)})")

    def dataset(spec: str, field: str) -> Dataset:
        try:
            return _dataset(spec, tokenizer, settings, dist, log)
        except DataError as e:
            raise InputError(f"train.{field}: {e}") from None

    train_data = dataset(t.data_path, "data_path")
    val_data = dataset(t.val_data_path, "val_data_path") if t.val_data_path else None
    if len(train_data) == 0:
        raise InputError(f"train.data_path: {t.data_path} holds no complete sample")

    try:
        config = MiniMindConfig(**settings.model.to_config_kwargs())
    except ValueError as e:
        raise InputError(f"model: {e}") from None
    torch.manual_seed(t.seed)  # identical initial weights on every rank
    model = MiniMindForCausalLM(config)
    if t.from_weight:
        try:
            load_pretrained_weights(model, Path(t.from_weight).expanduser())
        except FileNotFoundError:
            raise InputError(f"train.from_weight: {t.from_weight}: no such file") from None
        except WeightsMismatchError as e:
            raise InputError(f"train.from_weight: {e}") from None
        log(f"initialised from {t.from_weight}")

    resume = _resume_state(settings, resume_path(weights_path), dist) if t.from_resume else None
    return Prepared(out_dir, weights_path, train_data, val_data, model, resume)


def _writable_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
        # A uniquely named probe: under torchrun every rank checks the same folder at once.
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise InputError(f"train.out_dir: cannot write to {path} ({e.strerror or e})") from None
    return path


def _dataset(spec: str, tokenizer: Any, settings: RunSettings, dist: distributed.DistInfo,
             log: Callable[[str], None]) -> Dataset:
    t = settings.train
    path = resolve_data_path(spec)
    reporter = _progress_reporter(path.name, log)
    if not t.packing:
        index = JsonlIndex(path, skip_bad_lines=t.skip_bad_lines, progress=reporter)
        if index.bad_lines:
            log(f"{path}: skipped {index.bad_lines} bad lines, first: "
                + "; ".join(f"line {n}: {why}" for n, why in index.first_bad))
        return PretrainDataset(index, tokenizer, t.max_seq_len)

    def build() -> Path:
        return build_token_cache(path, tokenizer, t.max_seq_len, default_cache_dir() / "tokens",
                                 skip_bad_lines=t.skip_bad_lines, progress=reporter)

    # Rank 0 tokenizes; the others wait and then find the cached file.
    token_file = build() if dist.is_main else None
    distributed.barrier(dist)
    return PackedDataset(token_file or build(), t.max_seq_len)


def _progress_reporter(name: str, log: Callable[[str], None]) -> Callable[[int, int], None]:
    reported = {-1}

    def report(done: int, total: int) -> None:
        decile = 10 * done // max(total, 1)
        if total >= 1 << 24 and decile not in reported:  # quiet for small files
            reported.add(decile)
            log(f"reading {name}: {10 * decile}%")

    return report


# Settings that fix which samples each step reads; changing them would break exact resume.
_DATA_ORDER = ("data_path", "packing", "max_seq_len", "batch_size", "accumulation_steps", "seed")


def _resume_state(settings: RunSettings, path: Path, dist: distributed.DistInfo
                  ) -> dict[str, Any]:
    if not path.exists():
        raise InputError(f"train.from_resume: no resume checkpoint at {path}")
    state = load_resume(path)
    saved, current = state["settings"], settings.model_dump(mode="json")
    keys = [("model", k) for k in current["model"]] + [("train", k) for k in _DATA_ORDER]
    changed = [f"{s}.{k} ({saved[s].get(k)} → {current[s][k]})"
               for s, k in keys if saved[s].get(k) != current[s][k]]
    if changed:
        raise InputError("train.from_resume: the checkpoint's run used different settings, so "
                         "it cannot continue exactly: " + ", ".join(changed))
    if state["world_size"] != dist.world_size:
        raise InputError(f"train.from_resume: the checkpoint was written by "
                         f"{state['world_size']} processes; resume with the same number "
                         f"(now {dist.world_size})")
    return state
