"""How much memory a run needs on one device, roughly, and whether the device has that much.

The form shows the estimate beside the settings; the engine says so before the first step when
the estimate alone is more than the device holds (the kernel's out-of-memory killer gives no
reason, and CUDA's error comes only after the model and data are loaded).
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil
import torch

from minimind.settings import RunSettings
from minimind.units import format_bytes


# Bytes per parameter a step keeps: fp32 weights, gradients and AdamW's two moments.
TRAIN_BYTES_PER_PARAMETER = 16


@dataclass(frozen=True)
class MemoryEstimate:
    states: int
    activations: int
    logits: int

    @property
    def total(self) -> int:
        return self.states + self.activations + self.logits


def memory_estimate(settings: RunSettings, parameters: int) -> MemoryEstimate:
    """A rough training-memory figure, in bytes, for one device.

    * weights, gradients and AdamW's two moments in float32: params * (4 + 4 + 8); a lora run
      keeps the weights alone (its adapters are a rounding error);
    * activations: ~34 bytes per token per layer per hidden unit at 16-bit precision
      (Korthikanti et al., 2022, without the attention-score term that fused attention
      avoids), twice that in float32; with grad_checkpointing only each layer's 16-bit
      input (2 bytes) is kept;
    * logits: batch * seq * vocab * (4 + 2 + 4) for the 16-bit logits, their float32 copy
      for the loss and its gradient.
    Allocator overhead, the CUDA context and MoE routing buffers are not included.
    """
    m, t = settings.model, settings.train
    tokens = t.batch_size * t.max_seq_len
    per_unit = 2 if t.grad_checkpointing else 34 * (2 if t.dtype == "float32" else 1)
    per_parameter = 4 if t.stage == "lora" else TRAIN_BYTES_PER_PARAMETER
    return MemoryEstimate(states=parameters * per_parameter,
                          activations=tokens * m.num_hidden_layers * m.hidden_size * per_unit,
                          logits=tokens * m.vocab_size * (4 + 2 + 4))


def device_memory(device: torch.device) -> int:
    """What a device holds: a GPU's memory, or this machine's RAM for the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return psutil.virtual_memory().total


def states_problem(settings: RunSettings, parameters: int, device: torch.device) -> str | None:
    """Why the model cannot train here at all: its weights and optimizer state alone (no guess
    in that part of the estimate) are more than the device has free. None when they fit."""
    need = memory_estimate(settings, parameters).states
    if device.type == "cuda":
        have, where = torch.cuda.mem_get_info(device)[0], f"GPU {device}"
    else:
        have, where = psutil.virtual_memory().available, "this machine"
    if need <= have:
        return None
    what = ("its frozen weights" if settings.train.stage == "lora"
            else "weights, gradients and AdamW state")
    return (f"{parameters / 1e6:,.1f}M parameters need about {format_bytes(need)} for {what} "
            f"alone, but {where} has {format_bytes(have)} free; choose a smaller shape")


def shortfall(settings: RunSettings, need: MemoryEstimate, device: torch.device) -> int | None:
    """What the device holds, when that is less than `need` (on the CPU, `need` of every
    process this node runs); None when it holds enough."""
    have = device_memory(device)
    return have if need.total * _processes_sharing(settings, device) > have else None


def _processes_sharing(settings: RunSettings, device: torch.device) -> int:
    return settings.train.nproc_per_node if device.type == "cpu" else 1


def memory_warning(settings: RunSettings, parameters: int, device: torch.device) -> str | None:
    """What to say when the estimate is more than the device holds, or None."""
    need = memory_estimate(settings, parameters)
    if (have := shortfall(settings, need, device)) is None:
        return None
    processes = _processes_sharing(settings, device)
    where = "this machine's RAM" if device.type == "cpu" else str(device)
    each = f" per process, {processes} processes" if processes > 1 else ""
    parts = {"logits": need.logits, "activations": need.activations,
             "weights and optimizer state": need.states}
    largest = max(parts, key=parts.__getitem__)
    return (f"memory: this run needs about {format_bytes(need.total)}{each}, most of it "
            f"{largest} ({format_bytes(parts[largest])}), and {where} holds "
            f"{format_bytes(have)}: expect it to run out of memory; {_FIXES[largest]}")


_FIXES = {"logits": "lower batch_size or max_seq_len",
          "activations": "lower batch_size or max_seq_len, or turn on grad_checkpointing",
          "weights and optimizer state": "train a smaller model"}
