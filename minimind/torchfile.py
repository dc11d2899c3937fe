"""Reading the `.pth` and `.safetensors` files a user points us at, safely.

A file from elsewhere may be truncated, empty, a folder, text, another format, or crafted to run
code when unpickled. `torch.load(weights_only=True)` refuses anything but tensors and plain
values; every failure becomes one `CheckpointError` that names the file and says what is wrong.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch


class CheckpointError(ValueError):
    """A file that should hold weights or a checkpoint is missing, corrupt, foreign or unsafe."""


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:160]


def safe_torch_load(path: str | Path) -> Any:
    """`torch.load(weights_only=True)` on the CPU, or CheckpointError."""
    path = Path(path)
    _check_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "global" in str(e).lower():
            raise CheckpointError(f"{path}: refused: it holds Python objects other than tensors "
                                  "and plain values, which could run code when loaded") from None
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({_first_line(e)})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError,
            IndexError, TypeError, AttributeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated, corrupt "
                              f"or another format: {_first_line(e)})") from None


def safe_safetensors_load(path: str | Path) -> dict[str, torch.Tensor]:
    """A `.safetensors` file's tensors, or CheckpointError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    _check_file(path)
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({_first_line(e)})"
                              ) from None
