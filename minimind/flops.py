"""FLOPs per token, and the peaks that turn throughput into a share of what the machine can do:
the vendors' GPU peaks (MFU), and a matmul rate measured on the machine itself (any device)."""

from __future__ import annotations

import re
import time
from functools import cache

import torch

# Dense bf16 tensor-core peaks (no 2:4 sparsity), FLOP/s, from the vendors' data sheets, by
# the card's name as torch reports it ("NVIDIA H100 PCIe"): the first pattern that matches, so
# the H100's slower forms come before its SXM one, and a digit may not follow (an RTX A1000 is
# no A100).
PEAK_BF16_FLOPS = (
    (r"H200", 989e12),
    (r"H100 PCIe", 756e12),
    (r"H100 NVL", 835e12),
    (r"H100", 989e12),
    (r"A100", 312e12),
    (r"L40S", 362e12),
    (r"4090", 165e12),
    (r"3090", 71e12),
)


def peak_flops(device: torch.device) -> float | None:
    """The bf16 peak of a known GPU, or None (CPU, unknown cards): MFU is then left out."""
    return peak_for_card(torch.cuda.get_device_name(device)) if device.type == "cuda" else None


def peak_for_card(name: str) -> float | None:
    for pattern, value in PEAK_BF16_FLOPS:
        if re.search(rf"\b{pattern}(?!\d)", name):
            return value
    return None


def flops_per_token(active_parameters: int, embedding_parameters: int, num_layers: int,
                    hidden_size: int, seq_len: int, tied: bool, frozen: int = 0) -> float:
    """Training FLOPs per token: 6N for the matmuls plus 12*L*d*T for attention (PaLM's
    convention, as nanoGPT counts it). The embedding lookup costs nothing, but a tied embedding
    is also the lm_head matmul, so it stays in N; an untied input embedding is left out.
    `frozen` of the active parameters (a lora run's base, its embedding among them) get no
    weight gradient: 4 FLOPs a token each, the forward and the gradient passed back."""
    untied_input = 0 if tied else embedding_parameters
    matmul_params = active_parameters - untied_input
    frozen_matmul_params = max(0, frozen - untied_input) if frozen else 0
    return (6.0 * matmul_params - 2.0 * frozen_matmul_params
            + 12.0 * num_layers * hidden_size * seq_len)


@cache
def measured_matmul_rate(device: torch.device, dtype: torch.dtype, size: int = 2048) -> float:
    """FLOP/s of one `size`^3 matmul in `dtype` on `device`, the best of five after a warm-up.

    The best, because on a shared machine other work only ever slows a matmul down. A run's
    useful FLOP/s over this rate is a utilisation figure that means the same on any machine
    (a "CPU MFU"), since the model's own matmuls are what it is made of.
    """
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    best = float("inf")
    for i in range(6):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:  # the first call pays for allocation and kernel selection
            best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best
