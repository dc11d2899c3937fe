"""Low-rank adapters as upstream MiniMind2 defines them (`model/model_lora.py`), by its facts:

every `nn.Linear` whose weight is square gets a child `lora` with `A: Linear(in, r)` drawn from
N(0, 0.02) and `B: Linear(r, out)` set to 0, and computes `W x + B(A x)` (no alpha/r scaling),
so a fresh adapter leaves the model's output unchanged. Only adapter weights train. An adapter
file holds only them, keyed `<module path>.lora.A.weight` / `.lora.B.weight`, which is what
upstream's `load_lora` reads, so files go both ways.

The adapter is a child module plus a forward hook, so the base weights keep their own names
(`...q_proj.weight`) and a model with adapters still loads and saves upstream's full files.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from minimind.torchfile import CheckpointError, safe_torch_load

ADAPTER_MARK = ".lora."
INIT_STD = 0.02


class LoRAError(ValueError):
    """An adapter file that does not fit the model; the message names the file."""


class LoRA(nn.Module):
    def __init__(self, in_features: int, out_features: int, rank: int):
        super().__init__()
        self.A = nn.Linear(in_features, rank, bias=False)
        self.B = nn.Linear(rank, out_features, bias=False)
        nn.init.normal_(self.A.weight, mean=0.0, std=INIT_STD)
        nn.init.zeros_(self.B.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.B(self.A(x))


def _add_adapter_output(linear: nn.Linear, inputs: tuple[torch.Tensor], output: torch.Tensor
                        ) -> torch.Tensor:
    return output + linear.lora(inputs[0])


def adapted_layers(model: nn.Module) -> dict[str, nn.Linear]:
    """The layers upstream adapts: every nn.Linear with a square weight, by module path."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and m.weight.shape[0] == m.weight.shape[1]
            and "lora" not in name.split(".")}


def apply_lora(model: nn.Module, rank: int) -> list[nn.Parameter]:
    """Add fresh adapters (drawn from the global RNG) and freeze everything else; returns the
    adapter parameters, the only ones left to train."""
    for linear in adapted_layers(model).values():
        linear.lora = LoRA(linear.in_features, linear.out_features, rank).to(
            device=linear.weight.device, dtype=linear.weight.dtype)
        linear.lora_hook = linear.register_forward_hook(_add_adapter_output)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(ADAPTER_MARK in name)
    return [p for name, p in model.named_parameters() if ADAPTER_MARK in name]


def adapter_tensors(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What an adapter file holds: the adapter entries of a model's state dict, fp32 on CPU."""
    return {k: v.detach().float().cpu() for k, v in state_dict.items() if ADAPTER_MARK in k}


def load_lora(model: nn.Module, path: str | Path) -> int:
    """Give the model the adapters saved in `path` (adding them first); returns their rank."""
    state = _read_adapter_file(path)
    layers = adapted_layers(model)
    expected = {f"{name}.lora.{part}.weight" for name in layers for part in "AB"}
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise LoRAError(f"{path}: adapters do not fit this model"
                        + (f"; missing {', '.join(missing[:4])}" if missing else "")
                        + (f"; unexpected {', '.join(extra[:4])}" if extra else ""))
    rank = state[f"{next(iter(layers))}.lora.A.weight"].shape[0]
    for name, linear in layers.items():
        a, b = state[f"{name}.lora.A.weight"], state[f"{name}.lora.B.weight"]
        if a.shape != (rank, linear.in_features) or b.shape != (linear.out_features, rank):
            raise LoRAError(f"{path}: {name} adapter has shapes {tuple(a.shape)} and "
                            f"{tuple(b.shape)}; this model needs ({rank}, {linear.in_features}) "
                            f"and ({linear.out_features}, {rank})")
    apply_lora(model, rank)
    model.load_state_dict(state, strict=False)
    return rank


def _read_adapter_file(path: str | Path) -> dict[str, torch.Tensor]:
    try:
        state = safe_torch_load(Path(path).expanduser())
    except CheckpointError as e:
        raise LoRAError(str(e)) from None
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and ADAPTER_MARK in k and isinstance(v, torch.Tensor)
            for k, v in state.items()):
        raise LoRAError(f"{path}: not an adapter file (expected only '<module>.lora.A.weight' "
                        "and '.lora.B.weight' tensors)")
    return state


def fold_adapters(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A lora run's whole state (its resume file: the frozen base and the adapters) as plain
    weights, each adapter folded into its layer (W + B A) as `merge_lora` folds a model's:
    the model the run had at that step. LoRAError for adapters without their layer."""
    plain = {k: v for k, v in state_dict.items() if ADAPTER_MARK not in k}
    for key, a in state_dict.items():
        if not key.endswith(".lora.A.weight"):
            continue
        layer = key.removesuffix(".lora.A.weight")
        b, weight = state_dict.get(f"{layer}.lora.B.weight"), plain.get(f"{layer}.weight")
        if b is None or weight is None or b.shape[1:] != a.shape[:1] \
                or (b.shape[0], a.shape[1]) != weight.shape:
            raise LoRAError(f"{layer}: its adapter does not fit its layer (A {tuple(a.shape)}, "
                            f"B {tuple(b.shape) if b is not None else 'missing'}, weight "
                            f"{tuple(weight.shape) if weight is not None else 'missing'})")
        plain[f"{layer}.weight"] = (weight.float() + b.float() @ a.float()).to(weight.dtype)
    return plain


@torch.no_grad()
def merge_lora(model: nn.Module) -> None:
    """Fold each adapter into its layer (W += B A) and remove it: a plain model with the same
    outputs, which saves as an ordinary upstream weights file."""
    for linear in adapted_layers(model).values():
        if not hasattr(linear, "lora"):
            continue
        delta = linear.lora.B.weight.float() @ linear.lora.A.weight.float()
        linear.weight += delta.to(linear.weight.dtype)
        linear.lora_hook.remove()
        del linear.lora, linear.lora_hook
    for parameter in model.parameters():
        parameter.requires_grad_(True)
