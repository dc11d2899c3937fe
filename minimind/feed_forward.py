"""The feed-forward layers of a block: a SwiGLU MLP, and a mixture of such experts.

Module and parameter names follow upstream MiniMind (``mlp.gate_proj``, ``mlp.experts.0.up_proj``,
``mlp.gate`` for the router...), so its checkpoints load with ``strict=True``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

from .config import MiniMindConfig


class FeedForward(nn.Module):
    """SwiGLU MLP: down(act(gate(x)) * up(x)). Also the expert type of the MoE layer."""

    def __init__(self, config: MiniMindConfig, intermediate_size: int):
        super().__init__()
        # Registration order gate, down, up reproduces upstream's state_dict order.
        self.gate_proj = nn.Linear(config.hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, config.hidden_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, intermediate_size, bias=False)
        self.act_fn = ACT2FN[config.hidden_act]
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x)))


@torch.compiler.assume_constant_result  # a plain call under torch.compile: fixed per device
def _is_hopper(device: torch.device) -> bool:
    return torch.cuda.get_device_properties(device).major == 9


class _StackAs(torch.autograd.Function):
    """``torch.stack(tensors).to(dtype)`` as one copy. The MoE layer stacks its experts' weights
    on every forward; stacking per-weight casts would allocate and write every weight twice."""

    @staticmethod
    def forward(ctx, dtype, *tensors):
        out = tensors[0].new_empty((len(tensors), *tensors[0].shape), dtype=dtype)
        for i, tensor in enumerate(tensors):
            out[i].copy_(tensor)
        return out

    @staticmethod
    def backward(ctx, grad):
        return None, *grad.unbind(0)  # autograd casts each slice to its input's dtype


class MoEFeedForward(nn.Module):
    """Top-k routed SwiGLU experts plus optional always-on shared experts.

    Returns ``(output, aux_loss)``; the load-balancing loss is only computed in training.

    The (token, slot) picks are sorted by expert; then one of two paths computes the experts:

    - grouped: each projection of all experts runs as one ``torch._grouped_mm`` over the sorted
      rows, with the experts' group ends computed on the device. No host read of routing results,
      so no device sync, and ``torch.compile`` captures the layer as one graph. Used on Hopper
      GPUs (sm90) with bf16 operands (a CUTLASS grouped GEMM) and under torch.compile on CPU in
      bf16 (the op traces for bf16 only). Elsewhere on CUDA it would copy the offsets to the
      host, and on sm100 its weight gradient for an expert without tokens is not zero
      (pytorch#172439).
    - split: the sorted rows are split by per-expert counts read on the host and each expert runs
      on its own slice. On CUDA that is one sync per layer (and a graph break under
      torch.compile); running every expert on every token instead would avoid it at E/k times
      the routed work (4x for MiniMind-3-MoE's top-1 of 4), which costs more. On CPU a host read
      syncs nothing, and this path skips stacking the experts' weights, so eager CPU runs it
      (an fp32 MoE layer's step: 117 ms vs 180 ms grouped on 2 cores).
    """

    def __init__(self, config: MiniMindConfig):
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.num_experts = config.n_routed_experts
        # MiniMind2 renormalises the picks' weights only for k > 1 (a top-1 pick keeps its
        # score); MiniMind-3 always, so its top-1 weights are exactly 1.
        self.norm_topk_prob = config.norm_topk_prob and (
            self.top_k > 1 or config.family == "minimind3")
        self.aux_loss_alpha = config.aux_loss_alpha
        self.seq_aux = config.seq_aux
        # MiniMind-3's balance loss keeps each of the k picks' own shares (as HF's qwen3-moe
        # does): k times MiniMind2's, which shares all N*k picks out at once. Alike for top-1.
        self.load_per_pick = config.family == "minimind3"
        # Router (key `mlp.gate.weight`, shape (E, hidden) as in both upstream families).
        self.gate = nn.Linear(config.hidden_size, self.num_experts, bias=False)
        size = config.moe_intermediate_size
        self.experts = nn.ModuleList(FeedForward(config, size) for _ in range(self.num_experts))
        self.shared_experts = nn.ModuleList(
            FeedForward(config, size) for _ in range(config.n_shared_experts)
        )
        # _grouped_mm wants 16-byte aligned row strides: 8 elements cover every float dtype.
        self.grouped_mm_shapes_ok = config.hidden_size % 8 == 0 and size % 8 == 0

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, seq_len, hidden = hidden_states.shape
        x = hidden_states.reshape(-1, hidden)
        logits = self.gate(x)
        scores = logits.float().softmax(dim=-1)  # routing in fp32 even under autocast
        weights, expert_idx = scores.topk(self.top_k, dim=-1)
        if self.norm_topk_prob:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)

        # The router is a Linear on the same input as the experts, so its output dtype is the one
        # their Linear layers compute in: the autocast dtype, or the weights' dtype without it.
        sorted_expert, order = expert_idx.flatten().sort(stable=True)
        if self.use_grouped_mm(x.device, logits.dtype):
            out = self._grouped_dispatch(x, weights, sorted_expert, order, logits.dtype)
        else:
            out = self._split_dispatch(x, weights, sorted_expert, order)
        for expert in self.shared_experts:
            out = out + expert(x)

        if self.training and self.aux_loss_alpha > 0:
            aux_loss = self._load_balancing_loss(scores, expert_idx, batch, seq_len)
        else:
            aux_loss = scores.new_zeros(())
        return out.view(batch, seq_len, hidden), aux_loss

    def use_grouped_mm(self, device: torch.device, dtype: torch.dtype) -> bool:
        """Whether the grouped path runs here rather than the split one (see the class docstring)."""
        if not self.grouped_mm_shapes_ok:
            return False
        if device.type == "cuda":
            return dtype == torch.bfloat16 and _is_hopper(device)
        compiling_bf16 = torch.compiler.is_compiling() and dtype == torch.bfloat16
        return device.type == "cpu" and compiling_bf16

    def _grouped_dispatch(self, x, weights, sorted_expert, order, dtype):
        # Expert e owns sorted rows [ends[e-1], ends[e]).
        token_idx = order // self.top_k
        experts = torch.arange(self.num_experts, device=x.device, dtype=sorted_expert.dtype)
        ends = torch.searchsorted(sorted_expert, experts, right=True).to(torch.int32)
        rows = x.to(dtype).index_select(0, token_idx)

        # The experts' weights, stacked per forward so the parameters keep upstream's names. Every
        # expert is in the graph, so one without tokens still gets a (zero) gradient, which DDP
        # requires of every parameter. Gate and up interleave: (2E, I, H) viewed as (E, 2I, H).
        first = self.experts[0]
        gate_up = _StackAs.apply(
            dtype, *(w for e in self.experts for w in (e.gate_proj.weight, e.up_proj.weight))
        ).view(self.num_experts, 2 * first.gate_proj.out_features, -1)
        down = _StackAs.apply(dtype, *(e.down_proj.weight for e in self.experts))
        gate, up = torch._grouped_mm(rows, gate_up.transpose(1, 2), offs=ends).chunk(2, dim=-1)
        y = torch._grouped_mm(first.act_fn(gate) * up, down.transpose(1, 2), offs=ends)
        y = F.dropout(y, first.dropout.p, self.training)

        # Accumulate in x's dtype (fp32 under autocast): index_add_ needs matching dtypes and bf16
        # sums of several experts would round twice.
        contributions = (y * weights.flatten()[order, None]).to(x.dtype)
        return torch.zeros_like(x).index_add_(0, token_idx, contributions)

    def _split_dispatch(self, x, weights, sorted_expert, order):
        token_idx = order // self.top_k
        counts = sorted_expert.bincount(minlength=self.num_experts).tolist()  # the host sync
        out = torch.zeros_like(x)
        per_expert = zip(self.experts, token_idx.split(counts), weights.flatten()[order].split(counts))
        for expert, tokens, w in per_expert:
            # An expert without tokens still runs on an empty slice: its parameters stay in the
            # autograd graph and receive zero gradients, which DDP requires of every parameter.
            out.index_add_(0, tokens, (expert(x[tokens]) * w[:, None]).to(out.dtype))
        return out

    def _load_balancing_loss(self, scores, expert_idx, batch, seq_len):
        num_picks = seq_len * self.top_k
        if self.seq_aux:
            # Per sequence: share of its T*k picks that went to each expert, relative to uniform,
            # times the expert's mean routing probability over that sequence.
            picks = expert_idx.view(batch, num_picks)
            load = scores.new_zeros(batch, self.num_experts)
            load.scatter_add_(1, picks, scores.new_ones(picks.shape))
            load = load / (num_picks / self.num_experts)
            prob = scores.view(batch, seq_len, self.num_experts).mean(dim=1)
            return self.aux_loss_alpha * (load * prob).sum(dim=1).mean()
        # Over the whole batch: E * an expert's share of the picks, times its mean probability.
        picks = F.one_hot(expert_idx, self.num_experts).float()  # (N, k, E)
        load = (picks.mean(dim=0) if self.load_per_pick else picks.flatten(0, 1).mean(dim=0))
        return self.aux_loss_alpha * (load * self.num_experts * scores.mean(dim=0)).sum()
