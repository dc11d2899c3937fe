"""Checkpoints on disk: atomic writes, upstream-compatible weights, and resume state.

Every file is written to a temporary name in the same folder, fsynced, then renamed over the
target, so a crash or kill mid-write leaves the previous checkpoint intact and loadable.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from minimind.upstream import export_upstream_state_dict


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_torch_save(obj: Any, path: Path) -> Path:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getbuffer())


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not every platform lets a directory be opened.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model behind DDP (`.module`) and torch.compile (`._orig_mod`) wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def save_weights(model: torch.nn.Module, path: Path) -> Path:
    """Upstream's `pretrain_<hidden>[_moe].pth`: every state_dict key (both tied keys) as fp16."""
    return atomic_torch_save(export_upstream_state_dict(unwrap(model)), path)


def resume_path(weights_path: Path) -> Path:
    return weights_path.with_name(weights_path.stem + "_resume.pth")


def save_resume(path: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                scaler: torch.amp.GradScaler | None, progress: dict[str, int],
                rng: dict[str, Any], settings: dict[str, Any], world_size: int) -> Path:
    """Everything needed to continue bit-exactly: fp32 weights, optimizer and scaler state,
    the data position and every RNG state."""
    state = {
        "model": {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "progress": progress,
        "rng": rng,
        "settings": settings,
        "world_size": world_size,
    }
    return atomic_torch_save(state, path)


def load_resume(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


def capture_rng(device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
