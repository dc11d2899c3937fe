"""Reading the `.pth` and `.safetensors` files a user points us at, safely.

A file from elsewhere may be truncated, empty, a folder, text, another format, or crafted to run
code when unpickled. `torch.load(weights_only=True)` refuses anything but tensors and plain
values; every failure becomes one `CheckpointError` that names the file and says what is wrong.
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from minimind.safe_read import missing


class CheckpointError(ValueError):
    """A file that should hold weights or a checkpoint is missing, corrupt, foreign or unsafe."""


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    if not path.exists():
        raise CheckpointError(f"{path}: {missing(path)}")
    if not path.is_file():  # a pipe or a device: its size says nothing, reading it may block
        raise CheckpointError(f"{path}: not a regular file (a pipe or a device)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty")


def _first_line(e: BaseException) -> str:
    """The first sentence of an error (torch's go on with advice meant for its developers)."""
    text = str(e).strip()
    return (text.splitlines()[0].split(". ")[0] if text else type(e).__name__)[:160]


# The weights_only unpickler names the object a pickle wanted to import ("GLOBAL posix.system");
# garbage or another format fails earlier, on an opcode it does not know.
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def safe_torch_load(path: str | Path, mmap: bool = False) -> Any:
    """`torch.load(weights_only=True)` on the CPU, or CheckpointError. `mmap`: tensors are read
    from disk only when touched (for a file whose plain values are all that is wanted)."""
    path = Path(path)
    _check_file(path)
    try:
        with warnings.catch_warnings():  # a crafted pickle's protocol is not the user's concern
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        if found := _GLOBAL.search(str(e)):
            raise CheckpointError(f"{path}: refused: it asks to import {found[1]}, not just "
                                  "tensors and plain values, and could run code when loaded"
                                  ) from None
        detail = ""
    except (RuntimeError, zipfile.BadZipFile, OSError) as e:
        detail = f": {_first_line(e)}"
    except (EOFError, ValueError, KeyError, IndexError, TypeError, AttributeError,
            UnicodeDecodeError):  # the unpickler tripping over bytes: its message means nothing
        detail = ""
    raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated, corrupt or "
                          f"another format{detail})")


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


def first_non_finite(tensors: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor holding NaN or inf, or None: such weights
    are never read as a model or written to any file."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            return name
    return None
