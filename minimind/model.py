"""MiniMind decoder-only transformer (both upstream families).

Pre-norm blocks of grouped-query attention with RoPE and a SwiGLU feed-forward (dense or
mixture-of-experts). Module and parameter names follow upstream MiniMind exactly, which are also
the Llama (MiniMind2) and Qwen3 (MiniMind-3) names, so upstream ``.pth`` files load with
``strict=True``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import MoeCausalLMOutputWithPast
from transformers.utils import ModelOutput

from .config import MiniMindConfig
from .feed_forward import FeedForward, MoEFeedForward


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
        """Each family's upstream init, by ``config.weight_init``; RMSNorm weights are 1 in both.

        pytorch (MiniMind2, which never calls post_init): what PyTorch's modules draw when built.
            Every Linear (the MoE router too) is kaiming-uniform with a=sqrt(5), i.e.
            U(+-1/sqrt(fan_in)), and so is a bias. Upstream ties by making the embedding the
            head's Linear weight, so a tied embedding takes that rule (its fan_in is hidden
            too); an untied one is N(0, 1), nn.Embedding's default.
        normal (MiniMind-3, whose HEAD calls post_init): Linear and Embedding N(0, 0.02), biases 0.
        """
        # transformers' init functions skip tensors already loaded by from_pretrained.
        if isinstance(module, RMSNorm):
            init.ones_(module.weight)
            return
        if not isinstance(module, (nn.Linear, nn.Embedding)):
            return
        pytorch = self.config.weight_init == "pytorch"
        if not pytorch:
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
        elif isinstance(module, nn.Linear) or self.config.tie_word_embeddings:
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
        else:
            init.normal_(module.weight)
        if getattr(module, "bias", None) is None:
            return
        if pytorch:
            bound = 1 / math.sqrt(module.in_features)
            init.uniform_(module.bias, -bound, bound)
        else:
            init.zeros_(module.bias)


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
            # The mean over the targets, spelled out so that a batch with none (every reply of
            # an SFT batch cut off by max_seq_len) gives 0 and no gradient, not NaN; where
            # there are targets it is the same value, bit for bit.
            targets = labels[:, 1:].reshape(-1)
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(), targets,
                ignore_index=-100, reduction="sum",
            ) / (targets != -100).sum().clamp(min=1)
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
