"""The optimizer a run's settings name: AdamW (upstream's), or Muon for the hidden matrices.

``adamw``: every parameter in one fused AdamW, as upstream trains.

``muon``: PyTorch's own ``torch.optim.Muon`` for the 2-D weights inside the decoder blocks
(attention q/k/v/o, the feed-forward gate/up/down of dense layers and experts), whose updates it
orthogonalises; AdamW for everything else: the embedding (and the head tied to it, or an untied
head), every RMSNorm weight and the MoE routers (a few rows that turn into probabilities, not a
hidden transform). Muon's step is scaled as Moonshot's "match_rms_adamw" (0.2 * sqrt(max(A, B))),
which lets it reuse AdamW's learning rate and weight decay, so one ``learning_rate`` and one
schedule drive both. With ``muon_lr`` set, Muon takes that peak instead, with Keller Jordan's
original scaling (sqrt(max(1, A / B))), as modded-nanogpt trains (muon_lr 0.02): a larger step
than the matched one at upstream's learning rates. Every group then follows the schedule in
proportion to its own peak (`set_learning_rate`).

The options a group takes from the settings (weight decay, Muon's scaling and peak) are put on
the groups by `apply_settings`, when the optimizer is built and again after a resume has loaded
the saved groups, which carry the options of the run that saved them: a resume with another
weight_decay or muon_lr trains with the new values, not silently with the old ones.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from minimind.feed_forward import MoEFeedForward
from minimind.settings import TrainSettings


class OptimizerPair:
    """Two optimizers stepping as one, over disjoint parameters.

    It offers what the engine and a GradScaler use of an optimizer: ``param_groups`` (the lr is
    set there), ``state``, ``step``, ``zero_grad`` and a state dict holding both.
    """

    def __init__(self, **optimizers: torch.optim.Optimizer):
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict]:
        # Read afresh each time: load_state_dict replaces an optimizer's group dicts.
        return [g for opt in self.optimizers.values() for g in opt.param_groups]

    @property
    def state(self) -> dict:
        return {p: s for opt in self.optimizers.values() for p, s in opt.state.items()}

    def step(self) -> None:
        for opt in self.optimizers.values():
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != set(self.optimizers):
            raise ValueError(f"the saved optimizer state holds {sorted(state)}, this run "
                             f"uses {sorted(self.optimizers)}")
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])


LR_RATIO = "lr_ratio"  # a group's peak over learning_rate: the schedule scales every group alike


def set_learning_rate(optimizer: torch.optim.Optimizer | OptimizerPair, lr: float) -> None:
    """The schedule's lr for this step, each group at its own share of it."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get(LR_RATIO, 1.0)


def muon_parameters(model: nn.Module) -> set[nn.Parameter]:
    """The hidden matrices Muon takes: 2-D weights of the decoder blocks, routers excepted."""
    routers = {m.gate.weight for m in model.modules() if isinstance(m, MoEFeedForward)}
    return {p for name, p in model.named_parameters()
            if name.startswith("model.layers.") and p.dim() == 2 and p not in routers}


def build_optimizer(model: nn.Module, t: TrainSettings) -> torch.optim.Optimizer | OptimizerPair:
    # Fused kernels exist for both devices settings allow (CUDA and CPU): one pass over each
    # parameter instead of a dozen per-tensor ops (a 3-7x faster optimizer step on CPU).
    trainable = [p for p in model.parameters() if p.requires_grad]  # lora: the adapters alone
    if t.optimizer == "adamw":
        return torch.optim.AdamW(trainable, lr=t.learning_rate, weight_decay=t.weight_decay,
                                 fused=True)
    hidden = muon_parameters(model)
    rest = [p for p in trainable if p not in hidden]
    pair = OptimizerPair(
        muon=torch.optim.Muon([p for p in trainable if p in hidden], lr=t.learning_rate),
        adamw=torch.optim.AdamW(rest, lr=t.learning_rate, weight_decay=t.weight_decay,
                                fused=True))
    apply_settings(pair, t)
    return pair


def apply_settings(optimizer: torch.optim.Optimizer | OptimizerPair, t: TrainSettings) -> None:
    """Put the settings' per-group options on every group (see the module docstring)."""
    for group in optimizer.param_groups:
        group["weight_decay"] = t.weight_decay
    if isinstance(optimizer, OptimizerPair):
        for group in optimizer.optimizers["muon"].param_groups:
            group["adjust_lr_fn"] = "original" if t.muon_lr else "match_rms_adamw"
            group[LR_RATIO] = (t.muon_lr or t.learning_rate) / t.learning_rate
