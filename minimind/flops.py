"""FLOPs per token and the accelerator peaks that turn throughput into MFU."""

from __future__ import annotations

import torch

# Dense bf16 tensor-core peaks (no 2:4 sparsity), FLOP/s, from the vendors' data sheets.
PEAK_BF16_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "4090": 165e12,
    "3090": 71e12,
}


def peak_flops(device: torch.device) -> float | None:
    """The bf16 peak of a known GPU, or None (CPU, unknown cards): MFU is then left out."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_BF16_FLOPS.items():
        if key in name:
            return value
    return None


def flops_per_token(active_parameters: int, embedding_parameters: int, num_layers: int,
                    hidden_size: int, seq_len: int, tied: bool) -> float:
    """Training FLOPs per token: 6N for the matmuls plus 12*L*d*T for attention (PaLM's
    convention, as nanoGPT counts it). The embedding lookup costs nothing, but a tied embedding
    is also the lm_head matmul, so it stays in N; an untied input embedding is left out."""
    matmul_params = active_parameters - (0 if tied else embedding_parameters)
    return 6.0 * matmul_params + 12.0 * num_layers * hidden_size * seq_len
