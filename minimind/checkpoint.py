"""Checkpoints on disk: upstream-compatible weights plus the state to resume exactly.

A checkpoint is a pair written together: `pretrain_<hidden>[_moe].pth` (upstream's fp16 weights,
what a user takes away) and `pretrain_<hidden>[_moe]_resume.pth` (fp32 weights, optimizer and
scaler state, progress, every RNG). Both are fully written and fsynced under temporary names
before either is renamed into place, the resume file last: it is the commit. A kill between the
two renames leaves complete files with the weights one save ahead, and resuming rewrites them
from the resume state (`prepare`), so the pair agrees again.

Resume files hold only tensors and plain Python values, so they load with
`torch.load(weights_only=True)`: a crafted file cannot run code. What they hold is checked
against `ResumeFile` before any of it is used, and `weights_bytes`, the one way weights become a
file, refuses NaN/inf: a diverged run never replaces good weights.
"""

from __future__ import annotations

import errno
import io
import re
from collections import OrderedDict
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, PlainValidator, StrictFloat,
                      StrictInt, ValidationError)

from minimind.atomic import atomic_write_many
from minimind.lora import adapter_tensors
from minimind.meter import NonFiniteError
from minimind.run_files import resume_name
from minimind.settings import ModelSettings
from minimind.torchfile import CheckpointError, first_non_finite, safe_torch_load
from minimind.upstream import export_upstream_state_dict

def resume_path(weights_path: Path) -> Path:
    """`out/pretrain_512.pth` → `out/pretrain_512_resume.pth`."""
    return weights_path.with_name(resume_name(weights_path.name))


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model behind DDP (`.module`) and torch.compile (`._orig_mod`) wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def torch_bytes(obj: Any) -> memoryview:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getbuffer()


def save_checkpoint(weights_path: Path, *, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
                    progress: dict[str, Any], rng: list[dict[str, torch.Tensor]],
                    settings: dict[str, Any], world_size: int, data: dict[str, Any],
                    adapters_only: bool = False) -> tuple[Path, Path]:
    """Write the weights and resume files as one pair; returns their paths. With
    `adapters_only` (a lora run) the weights file holds only the adapters, as upstream's."""
    plain = unwrap(model)
    state = {
        "model": {k: v.detach().cpu() for k, v in plain.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "progress": progress,
        "rng": rng,
        "settings": settings,
        "world_size": world_size,
        "data": data,
    }
    resume = resume_path(weights_path)
    atomic_write_many({weights_path: weights_bytes(state["model"], adapters_only),
                       resume: torch_bytes(state)})
    return weights_path, resume


def weights_bytes(weights: torch.nn.Module | dict[str, torch.Tensor],
                  adapters_only: bool = False, *, metadata: dict[str, str] | None = None
                  ) -> memoryview:
    """Upstream's weights file, as bytes: the fp16 model, or (`adapters_only`, a lora run's
    state dict) its adapters alone. NonFiniteError for NaN/inf, which no file we write may hold
    (a weight beyond float16's range turns inf here too). `metadata` goes where a state dict
    keeps its modules' versions (`_metadata[""]`): `load_state_dict` passes it to the model,
    which ignores what it does not know, so upstream's scripts load the file as before."""
    tensors = adapter_tensors(weights) if adapters_only else export_upstream_state_dict(weights)
    if bad := first_non_finite(tensors):
        raise NonFiniteError(f"{bad} holds NaN/inf; refusing to write such weights")
    if metadata is not None:
        tensors = OrderedDict(tensors)
        tensors._metadata = OrderedDict({"": dict(metadata)})
    return torch_bytes(tensors)


def weights_metadata(state: Any) -> dict:
    """What `weights_bytes` recorded as `metadata` in a loaded weights file; {} for none."""
    recorded = getattr(state, "_metadata", None)
    root = recorded.get("") if isinstance(recorded, dict) else None
    return root if isinstance(root, dict) else {}


def _tensor(value: Any) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"must be a tensor, not {type(value).__name__}")
    return value


def _weights(value: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if not value:
        raise ValueError("holds no tensors")
    if bad := first_non_finite(value):
        raise ValueError(f"{bad} holds NaN/inf (the run diverged; use an earlier checkpoint)")
    return value


def _rng_bytes(value: torch.Tensor) -> torch.Tensor:
    if value.dtype != torch.uint8 or value.dim() != 1 or not value.numel():
        raise ValueError("must be a non-empty RNG state (a 1-D uint8 tensor)")
    return value


Tensor = Annotated[Any, AfterValidator(_tensor)]
RngBytes = Annotated[Tensor, AfterValidator(_rng_bytes)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


class _RngState(_Strict):
    torch: RngBytes
    cuda: RngBytes | None = None


class _Window(_Strict):
    loss: StrictFloat | StrictInt = Field(allow_inf_nan=False)
    aux: StrictFloat | StrictInt = Field(allow_inf_nan=False)
    filled: StrictInt = Field(ge=0)
    micro: StrictInt = Field(ge=0)


class _Progress(_Strict):
    step: StrictInt = Field(ge=0)
    tokens_seen: StrictInt = Field(0, ge=0)
    elapsed: StrictFloat | StrictInt = Field(0.0, ge=0, allow_inf_nan=False)
    window: _Window | None = None  # checkpoints before it kept no partial log window


class _Optimizer(BaseModel):
    model_config = ConfigDict(extra="allow")
    state: dict[StrictInt, dict[str, Any]]
    param_groups: list[dict[str, Any]] = Field(min_length=1)


def _optimizer_state(value: Any) -> Any:
    """One optimizer's state dict, or those of a pair stepping as one (muon: `{"muon": ...,
    "adamw": ...}`), each checked as `_Optimizer`."""
    named = (isinstance(value, dict) and value and "state" not in value
             and all(isinstance(v, dict) for v in value.values()))
    try:
        if named:
            return {name: _Optimizer.model_validate(v) for name, v in value.items()}
        return _Optimizer.model_validate(value)
    except ValidationError as e:
        err = e.errors()[0]
        raise ValueError(f"{'.'.join(map(str, err['loc']))}: {err['msg']}") from None


class _Settings(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: ModelSettings
    train: dict[str, Any]


class ResumeFile(_Strict):
    """What a resume checkpoint must hold, checked before any of it is used."""

    model: Annotated[dict[str, Tensor], AfterValidator(_weights)]
    optimizer: Annotated[Any, PlainValidator(_optimizer_state)]
    scaler: dict[str, Any] | None
    progress: _Progress
    rng: list[_RngState] = Field(min_length=1)
    settings: _Settings
    world_size: StrictInt = Field(ge=1)
    data: dict[str, Any] = Field(default_factory=dict)


def _plain(message: str) -> str:
    """pydantic's message without what only a programmer reads ("Value error, ", "or instance
    of _Settings")."""
    return re.sub(r" or instance of \w+", "", message.removeprefix("Value error, "))


def load_resume(path: Path, state: Any = None) -> dict[str, Any]:
    """A resume checkpoint's state (`state`: already unpickled from `path`), checked against
    `ResumeFile`, or CheckpointError naming the file and the first thing wrong in it."""
    state = safe_torch_load(path) if state is None else state
    if isinstance(state, dict) and state and all(isinstance(v, torch.Tensor)
                                                 for v in state.values()):
        raise CheckpointError(f"{path}: a weights file, not a resume checkpoint")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a resume checkpoint (it holds a "
                              f"{type(state).__name__}, not a dict of its parts)")
    try:
        checked = ResumeFile.model_validate(state)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(map(str, err["loc"])) or "the file"
        raise CheckpointError(f"{path}: not a valid resume checkpoint: {where}: "
                              f"{_plain(err['msg'])}") from None
    if len(checked.rng) != checked.world_size:
        raise CheckpointError(f"{path}: not a valid resume checkpoint: rng: holds "
                              f"{len(checked.rng)} states for world_size {checked.world_size}")
    return state


def capture_rng(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class CheckpointWriteError(RuntimeError):
    """The disk refused a checkpoint; the previous one is intact."""


def write_error(e: OSError, path: Path, last_good: int | None) -> CheckpointWriteError:
    """What a refused save tells the user: why, which file, and which checkpoint is intact."""
    kept = (f"the checkpoint from step {last_good} is intact" if last_good is not None
            else "no earlier checkpoint existed")
    return CheckpointWriteError(f"{os_reason(e)} writing {e.filename or path}; {kept}")


def os_reason(e: OSError) -> str:
    return "no space left on device" if e.errno == errno.ENOSPC else (e.strerror or str(e))
