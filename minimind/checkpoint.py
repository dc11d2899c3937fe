"""Checkpoints on disk: upstream-compatible weights plus the state to resume exactly.

A checkpoint is a pair written together: `pretrain_<hidden>[_moe].pth` (upstream's fp16 weights,
what a user takes away) and `pretrain_<hidden>[_moe]_resume.pth` (fp32 weights, optimizer and
scaler state, progress, every RNG). Both are fully written and fsynced under temporary names
before either is renamed into place, the resume file last: it is the commit. A kill between the
two renames leaves complete files with the weights one save ahead, and resuming rewrites them
from the resume state (`prepare`), so the pair agrees again.

Resume files hold only tensors and plain Python values, so they load with
`torch.load(weights_only=True)`: a crafted file cannot run code.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from minimind.atomic import atomic_write_many
from minimind.lora import adapter_tensors
from minimind.run_folder import resume_files
from minimind.torchfile import CheckpointError, safe_torch_load
from minimind.upstream import export_upstream_state_dict

RESUME_SUFFIX = "_resume.pth"
RESUME_KEYS = ("model", "optimizer", "scaler", "progress", "rng", "settings", "world_size")


def resume_path(weights_path: Path) -> Path:
    """`out/pretrain_512.pth` → `out/pretrain_512_resume.pth`."""
    return weights_path.with_name(weights_path.stem + RESUME_SUFFIX)


def find_resume_files(folder: Path) -> list[Path]:
    return resume_files(folder)


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
    weights = (adapter_tensors(state["model"]) if adapters_only
               else export_upstream_state_dict(plain))
    atomic_write_many({weights_path: torch_bytes(weights),
                       resume: torch_bytes(state)})
    return weights_path, resume


def load_resume(path: Path) -> dict[str, Any]:
    """A resume checkpoint's state, or CheckpointError naming the file and what is wrong."""
    state = safe_torch_load(path)
    missing = [k for k in RESUME_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        looks_like_weights = isinstance(state, dict) and all(
            isinstance(v, torch.Tensor) for v in state.values())
        what = "a weights file, not a resume checkpoint" if looks_like_weights else \
            f"not a resume checkpoint (no {', '.join(missing)})"
        raise CheckpointError(f"{path}: {what}")
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
