"""MiniMind decoder-only transformer (both upstream families).

Pre-norm blocks of grouped-query attention with RoPE and a SwiGLU feed-forward (dense or
mixture-of-experts). Module and parameter names follow upstream MiniMind exactly, which are also
the Llama (MiniMind2) and Qwen3 (MiniMind-3) names, so upstream ``.pth`` files load with
``strict=True``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import MoeCausalLMOutputWithPast
from transformers.utils import ModelOutput

from .config import MiniMindConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 so bf16/fp16 activations do not lose the mean-square. The weight is
        # applied before casting back (MiniMind-3 order; MiniMind2 cast first): the output then has
        # the input dtype in every case, and the two orders differ only in rounding.
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight * x32).type_as(x)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.eps}"


class RotaryEmbedding(nn.Module):
    """cos/sin of the RoPE angles for given positions, in the non-interleaved (rotate_half) layout.

    Upstream precomputes max_position_embeddings-row tables as buffers. Here only the requested
    positions are computed, once per model forward (T x head_dim values): nothing needs rebuilding
    after transformers materialises the model from the meta device, DDP has no buffer to
    broadcast, and ``model.to(torch.bfloat16)`` cannot degrade the angles, which stay fp32. The
    values are the same fp32 products ``position * inv_freq`` as in upstream's tables.
    """

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        self.head_dim = head_dim
        self.theta = theta

    def forward(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        exponents = torch.arange(0, self.head_dim, 2, device=position_ids.device, dtype=torch.float32)
        inv_freq = 1.0 / (self.theta ** (exponents / self.head_dim))
        angles = position_ids[..., None].float() * inv_freq
        angles = torch.cat((angles, angles), dim=-1)
        return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q, k, cos, sin):
    """Rotate (B, heads, T, head_dim) q and k; cos/sin are (B or 1, T, head_dim) fp32."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    # The products promote to fp32; cast back so SDPA sees one dtype for q, k and v.
    q_rot = (q * cos + rotate_half(q) * sin).to(q.dtype)
    k_rot = (k * cos + rotate_half(k) * sin).to(k.dtype)
    return q_rot, k_rot


class Attention(nn.Module):
    """Grouped-query self-attention; optional per-head q/k RMSNorm (MiniMind-3)."""

    def __init__(self, config: MiniMindConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_key_value_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.attention_dropout = config.dropout
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, self.num_key_value_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, self.num_key_value_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=False)
        if config.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        else:  # Identity keeps MiniMind2's key set free of q/k norms without a branch in forward
            self.q_norm = self.k_norm = nn.Identity()
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, hidden_states, position_embeddings, attention_mask=None, cache=None):
        batch, seq_len, _ = hidden_states.shape
        q = self.q_proj(hidden_states).view(batch, seq_len, self.num_heads, self.head_dim)
        k = self.k_proj(hidden_states).view(batch, seq_len, self.num_key_value_heads, self.head_dim)
        v = self.v_proj(hidden_states).view(batch, seq_len, self.num_key_value_heads, self.head_dim)
        q, k = self.q_norm(q), self.k_norm(k)  # per head, before RoPE (Qwen3 order)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, *position_embeddings)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)

        # Without an explicit mask the block is either plain causal (prefill) or a single new token
        # that may see the whole cache; `enable_gqa` lets SDPA share KV heads without copying them.
        out = F.scaled_dot_product_attention(
            q, k, v,
            attn_mask=attention_mask,
            dropout_p=self.attention_dropout if self.training else 0.0,
            is_causal=attention_mask is None and seq_len > 1,
            enable_gqa=True,
        )  # fmt: skip
        out = out.transpose(1, 2).reshape(batch, seq_len, self.num_heads * self.head_dim)
        return self.resid_dropout(self.o_proj(out))


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
      so no device sync, and ``torch.compile`` captures the layer as one graph. Used where the op
      neither syncs nor is known to misbehave: on CPU (eager in every float dtype, compiled in
      bf16) and on Hopper GPUs (sm90) with bf16 operands (a CUTLASS grouped GEMM). Elsewhere on
      CUDA it would copy the offsets to the host, and on sm100 its weight gradient for an expert
      without tokens is not zero (pytorch#172439).
    - split: the sorted rows are split by per-expert counts read on the host (one sync per layer,
      and a graph break under torch.compile) and each expert runs on its own slice. Used
      everywhere else. Running every expert on every token would avoid the sync, but at E/k
      times the routed work (4x for MiniMind-3-MoE's top-1 of 4), which costs more than a sync.
    """

    def __init__(self, config: MiniMindConfig):
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.num_experts = config.n_routed_experts
        self.norm_topk_prob = config.norm_topk_prob
        self.aux_loss_alpha = config.aux_loss_alpha
        self.seq_aux = config.seq_aux
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
        if self.norm_topk_prob:  # for top-1 this makes every weight exactly 1
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
        """Whether the grouped path runs here without a host sync (see the class docstring)."""
        if not self.grouped_mm_shapes_ok:
            return False
        if device.type == "cuda":
            return dtype == torch.bfloat16 and _is_hopper(device)
        # On CPU every float dtype works eagerly, but torch.compile traces the op for bf16 only.
        traceable = dtype == torch.bfloat16 or not torch.compiler.is_compiling()
        return device.type == "cpu" and traceable

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
        # Over the whole batch: E * fraction of all picks per expert, times mean routing probability.
        load = F.one_hot(expert_idx.flatten(), self.num_experts).float().mean(dim=0) * self.num_experts
        return self.aux_loss_alpha * (load * scores.mean(dim=0)).sum()


class MiniMindBlock(GradientCheckpointingLayer):
    """Pre-norm decoder layer: x + attn(norm(x)), then h + mlp(norm(h))."""

    def __init__(self, config: MiniMindConfig, layer_idx: int):
        super().__init__()
        self.self_attn = Attention(config, layer_idx)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.is_moe = config.use_moe
        if config.use_moe:
            self.mlp = MoEFeedForward(config)
        else:
            self.mlp = FeedForward(config, config.intermediate_size)

    def forward(self, hidden_states, position_embeddings, attention_mask=None, cache=None):
        # `hidden_states` stays positional: reentrant checkpointing only tracks positional inputs.
        hidden_states = hidden_states + self.self_attn(
            self.input_layernorm(hidden_states), position_embeddings, attention_mask, cache
        )
        mlp_input = self.post_attention_layernorm(hidden_states)
        if self.is_moe:
            mlp_out, aux_loss = self.mlp(mlp_input)
        else:
            mlp_out, aux_loss = self.mlp(mlp_input), hidden_states.new_zeros((), dtype=torch.float32)
        return hidden_states + mlp_out, aux_loss


class MiniMindPreTrainedModel(PreTrainedModel):
    config_class = MiniMindConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MiniMindBlock"]
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        # transformers' init functions skip tensors already loaded by from_pretrained.
        if isinstance(module, (nn.Linear, nn.Embedding)):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
        elif isinstance(module, RMSNorm):
            init.ones_(module.weight)


@dataclass
class MiniMindModelOutput(ModelOutput):
    last_hidden_state: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None
    cache: Cache | None = None


class MiniMindModel(MiniMindPreTrainedModel):
    def __init__(self, config: MiniMindConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(MiniMindBlock(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config.head_dim, config.rope_theta)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        use_cache: bool = False,
    ) -> MiniMindModelOutput:
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        past_len = cache.get_seq_length() if cache is not None else 0
        seq_len = input_ids.shape[1]

        if position_ids is None:
            if attention_mask is not None:
                # Left padding: number each row's real tokens from 0, as if it were unpadded.
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -seq_len:]
            else:
                position_ids = torch.arange(past_len, past_len + seq_len, device=input_ids.device)[None]
        position_embeddings = self.rotary_emb(position_ids)
        mask = self._attention_mask(attention_mask, seq_len, past_len, input_ids.device)

        hidden_states = self.dropout(self.embed_tokens(input_ids))
        aux_loss = hidden_states.new_zeros((), dtype=torch.float32)
        for layer in self.layers:
            hidden_states, layer_aux = layer(
                hidden_states, position_embeddings=position_embeddings, attention_mask=mask, cache=cache
            )
            aux_loss = aux_loss + layer_aux
        hidden_states = self.norm(hidden_states)
        return MiniMindModelOutput(last_hidden_state=hidden_states, aux_loss=aux_loss, cache=cache)

    def _attention_mask(self, attention_mask, seq_len, past_len, device) -> torch.Tensor | None:
        """Boolean (B|1, 1, T, past+T) mask, or None when SDPA's own causal handling suffices.

        None covers the training case (no padding, no cache) and single-token decoding without
        padding. ``attention_mask`` (B, past+T) of 1/0 marks real/padding tokens, as in transformers.
        ``flash_attn=False`` always builds the mask, which keeps SDPA off its fused causal kernels.
        """
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None
        fast = attention_mask is None and (past_len == 0 or seq_len == 1)
        if fast and self.config.flash_attn:
            return None
        total = past_len + seq_len
        query_pos = torch.arange(past_len, total, device=device)[:, None]
        key_pos = torch.arange(total, device=device)[None, :]
        allowed = key_pos <= query_pos
        if attention_mask is None:
            return allowed[None, None]
        # Every query keeps itself visible: a padding query would otherwise have no key at all and
        # SDPA would return NaN, which later layers would spread through the padded values.
        return (allowed & attention_mask[:, None, None, -total:].bool()) | (key_pos == query_pos)


class MiniMindForCausalLM(MiniMindPreTrainedModel, GenerationMixin):
    # Used by transformers only while config.tie_word_embeddings is true.
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: MiniMindConfig):
        super().__init__(config)
        self.model = MiniMindModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        cache: Cache | None = None,
        use_cache: bool = False,
        logits_to_keep: int | torch.Tensor = 0,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> MoeCausalLMOutputWithPast:
        """Logits, shifted next-token loss when ``labels`` are given, and the MoE aux loss.

        ``loss`` does not include ``aux_loss``: the trainer adds them and reports both.
        ``past_key_values`` is accepted as the upstream / transformers-4 name of ``cache``.
        """
        outputs = self.model(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache if cache is not None else past_key_values,
            use_cache=use_cache,
        )
        hidden_states = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, keep])

        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                labels[:, 1:].reshape(-1),
                ignore_index=-100,
            )
        return MoeCausalLMOutputWithPast(
            loss=loss, aux_loss=outputs.aux_loss, logits=logits, cache=outputs.cache
        )

    def active_parameters(self) -> int:
        """Parameters used per token: only the top-k routed experts of each MoE layer count."""
        total = sum(p.numel() for p in self.parameters())
        for module in self.modules():
            if isinstance(module, MoEFeedForward):
                per_expert = sum(p.numel() for p in module.experts[0].parameters())
                total -= (module.num_experts - module.top_k) * per_expert
        return total


# Let AutoModelForCausalLM open a folder saved by `save_pretrained` (model_type "minimind").
AutoModelForCausalLM.register(MiniMindConfig, MiniMindForCausalLM)
