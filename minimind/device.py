"""Which torch device a `device` setting means, and whether this machine has it.

One rule for every caller: training (`train.device`, one GPU per rank under torchrun), the
benchmarks, `generate` and the playground. Settings validation asks `device_problem` so a
form shows the problem beside the field; the others call `resolve_device`.
"""

from __future__ import annotations

import re

import torch

from minimind.settings import DEVICE_PATTERN


class DeviceError(ValueError):
    """The device setting is malformed or names a device this machine lacks."""


def device_problem(spec: str) -> str | None:
    """Why `spec` cannot be used on this machine, or None when it can."""
    if not re.match(DEVICE_PATTERN, spec):
        return "expected auto, cpu, cuda or cuda:N"
    if not spec.startswith("cuda"):
        return None
    if not torch.cuda.is_available():
        return "CUDA is not available on this machine"
    index = int(spec.split(":")[1]) if ":" in spec else 0
    if index >= torch.cuda.device_count():
        return f"no such GPU (this machine has {torch.cuda.device_count()})"
    return None


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """auto: this rank's GPU when CUDA is there, else the CPU; cuda: this rank's GPU (under
    torchrun each local rank owns one); cpu and cuda:N as written. DeviceError otherwise."""
    if problem := device_problem(spec):
        raise DeviceError(f"device {spec!r}: {problem}")
    if spec == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if spec == "cuda":
        return torch.device(f"cuda:{local_rank}")
    return torch.device(spec)
