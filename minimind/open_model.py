"""Open any trained model for generation, with the tokenizer that goes with it.

Accepts everything `minimind.checkpoint_reader.read_checkpoint` does (a run folder, a weights
file of ours or upstream's, a resume checkpoint, ``.safetensors``, a folder saved by
``save_pretrained`` or exported with our own modeling code) and also a Hugging Face folder
exported to a standard transformers class (Llama, Qwen3, ...), which transformers loads from its
safetensors. Nothing is unpickled beyond tensors and plain data: a checkpoint is user input.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import MiniMindConfig
from .device import DeviceError, resolve_device
from .checkpoint_reader import read_checkpoint
from .export import quiet_transformers
from .run_files import CONFIG_FILE
from .tokenizer import TokenizerError, load_tokenizer
from .torchfile import CheckpointError
from .upstream import describe_config


class ModelOpenError(ValueError):
    """The model or its tokenizer cannot be opened; the message is one line naming why."""


@dataclass
class OpenedModel:
    model: torch.nn.Module  # in eval mode, on `device`
    tokenizer: Any
    device: torch.device
    description: str  # what was loaded and from where, one line for the user

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def open_model(src: str | Path, tokenizer_path: str | None = None, device: str = "auto",
               num_attention_heads: int | None = None) -> OpenedModel:
    """The model in `src` on `device` in eval mode. `tokenizer_path` overrides the tokenizer
    the source names ("" or "builtin": the bundled one); `num_attention_heads` settles the head
    split of a weights file that records none."""
    try:
        target = resolve_device(device)
    except DeviceError as e:
        raise ModelOpenError(str(e)) from None
    path = Path(src).expanduser()
    if _standard_hf_folder(path):
        model, tokenizer, description = _from_hf_folder(path, tokenizer_path)
    else:
        try:
            source = read_checkpoint(path, tokenizer_path, num_attention_heads)
        except CheckpointError as e:
            raise ModelOpenError(str(e)) from None
        model, tokenizer = source.model, _tokenizer(source.tokenizer_dir)
        description = (f"{describe_config(source.model.config)} · {source.built_from} · "
                       f"config from {source.config_origin}"
                       + (f" · warning: {source.tokenizer_note}" if source.tokenizer_note else ""))
    return OpenedModel(model.to(target).eval(), tokenizer, target, description)


def _standard_hf_folder(path: Path) -> bool:
    """A config.json folder that is not ours (no run config.toml, model_type not MiniMind's)."""
    if not path.is_dir() or (path / CONFIG_FILE).is_file():
        return False
    try:
        data = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # read_checkpoint explains what is wrong with the folder
    return isinstance(data, dict) and data.get("model_type") != MiniMindConfig.model_type


def _from_hf_folder(path: Path, tokenizer_path: str | None):
    from transformers import AutoModelForCausalLM

    try:
        with quiet_transformers():
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                         use_safetensors=True)
    except Exception as e:  # transformers raises many types; the user needs the cause only
        cause = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelOpenError(f"{path}: transformers cannot load this folder ({cause})") from None
    has_tokenizer = any((path / name).is_file()
                        for name in ("tokenizer.json", "tokenizer_config.json"))
    if tokenizer_path is not None:
        spec, which = tokenizer_path, f"tokenizer {tokenizer_path or 'bundled'}"
    elif has_tokenizer:
        spec, which = str(path), "its own tokenizer"
    else:  # upstream's tokenizer has 6,400 tokens too: a wrong guess would still run
        spec, which = "", ("warning: the folder holds no tokenizer, so the bundled one is a "
                           "guess (give the one it trained with: --tokenizer_path)")
    tokenizer = _tokenizer(spec)
    vocab = model.config.vocab_size
    if len(tokenizer) > vocab:
        raise ModelOpenError(f"the tokenizer has {len(tokenizer)} tokens, more than the model's "
                             f"vocab_size {vocab}")
    return model, tokenizer, f"{type(model).__name__} · {path} · {which}"


def _tokenizer(spec: str | Path):
    try:
        return load_tokenizer(str(spec) or None)
    except TokenizerError as e:
        raise ModelOpenError(f"tokenizer: {e}") from None
