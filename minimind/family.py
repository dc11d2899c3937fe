"""The two upstream families and the rules every model shape obeys (plain Python, no torch).

* ``minimind2`` - Llama-style: 2 KV heads, FFN size from the 8/3 rule, RMSNorm eps 1e-5,
  MoE with 4 routed experts (top-2) plus 1 shared expert, PyTorch's default init.
* ``minimind3`` - Qwen3-style: 4 KV heads, per-head q/k RMSNorm, FFN size from the pi rule,
  RMSNorm eps 1e-6, MoE with 4 routed experts (top-1) and no shared expert, N(0, 0.02) init.

`MiniMindConfig` raises on a broken shape and the settings report it beside the form's fields;
both ask `shape_problems`, so the rules live here once. This module is light on purpose: the
CLI validates flags with it before torch or transformers are imported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FAMILIES = ("minimind2", "minimind3")


def default_intermediate_size(family: str, hidden_size: int) -> int:
    """FFN width rule of each upstream family, rounded up to a multiple of 64."""
    if family == "minimind2":
        return 64 * math.ceil(int(hidden_size * 8 / 3) / 64)
    return math.ceil(hidden_size * math.pi / 64) * 64


def family_defaults(family: str, hidden_size: int) -> dict:
    """Values of the family-specific fields, for a given hidden size."""
    if family not in FAMILIES:
        raise ValueError(f"family ({family!r}) must be one of {', '.join(FAMILIES)}")
    is_v2 = family == "minimind2"
    return {
        "num_key_value_heads": 2 if is_v2 else 4,
        "intermediate_size": default_intermediate_size(family, hidden_size),
        "rms_norm_eps": 1e-5 if is_v2 else 1e-6,
        "qk_norm": not is_v2,
        "num_experts_per_tok": 2 if is_v2 else 1,
        "n_shared_experts": 1 if is_v2 else 0,
        "aux_loss_alpha": 0.1 if is_v2 else 5e-4,
        "seq_aux": is_v2,
        # MiniMind2 never calls post_init (PyTorch's module defaults); MiniMind-3's HEAD does.
        "weight_init": "pytorch" if is_v2 else "normal",
    }


@dataclass(frozen=True)
class ShapeProblem:
    """A rule broken by several fields together; `fields` lists them, the usual fix first."""

    fields: tuple[str, ...]
    message: str


def shape_problems(hidden_size: int, num_attention_heads: int, num_key_value_heads: int,
                   head_dim: int | None = None, n_routed_experts: int = 1,
                   num_experts_per_tok: int = 1) -> list[ShapeProblem]:
    """Every rule the given (resolved) shape breaks. `head_dim` None means hidden / heads."""
    out: list[ShapeProblem] = []
    heads = ("num_attention_heads", "hidden_size")
    if head_dim is None and hidden_size % num_attention_heads:
        out.append(ShapeProblem(heads, f"num_attention_heads ({num_attention_heads}) must divide "
                                       f"hidden_size ({hidden_size})"))
    elif (head_dim or hidden_size // num_attention_heads) % 2:
        size = (f"head_dim ({head_dim})" if head_dim else
                f"head_dim = hidden_size / num_attention_heads = {hidden_size // num_attention_heads}")
        out.append(ShapeProblem(heads, f"{size} must be even: RoPE rotates pairs of dimensions"))
    if num_attention_heads % num_key_value_heads:
        out.append(ShapeProblem(
            ("num_key_value_heads", "num_attention_heads"),
            f"num_key_value_heads ({num_key_value_heads}) must divide num_attention_heads "
            f"({num_attention_heads})"))
    if num_experts_per_tok > n_routed_experts:
        out.append(ShapeProblem(
            ("num_experts_per_tok", "n_routed_experts"),
            f"num_experts_per_tok ({num_experts_per_tok}) must be ≤ n_routed_experts "
            f"({n_routed_experts})"))
    return out


def parameter_count(family: str, hidden_size: int, num_hidden_layers: int,
                    num_attention_heads: int, vocab_size: int, *, tie_word_embeddings: bool = True,
                    use_moe: bool = False, n_routed_experts: int = 4,
                    num_key_value_heads: int | None = None, intermediate_size: int | None = None,
                    qk_norm: bool | None = None, n_shared_experts: int | None = None,
                    moe_intermediate_size: int | None = None, **_other: object) -> int:
    """The parameters of a shape (`ModelSettings.to_config_kwargs()`), counted without torch so
    that `minimind-tui presets` can list sizes at once. The model built on the meta device is
    the truth; tests/test_model.py holds the two together for every bundled preset and variant."""
    defaults = family_defaults(family, hidden_size)
    kv_heads = num_key_value_heads or defaults["num_key_value_heads"]
    ffn = intermediate_size or defaults["intermediate_size"]
    head_dim = hidden_size // num_attention_heads
    attention = 2 * hidden_size * head_dim * (num_attention_heads + kv_heads)  # q, o; k, v
    if defaults["qk_norm"] if qk_norm is None else qk_norm:
        attention += 2 * head_dim
    if use_moe:
        shared = defaults["n_shared_experts"] if n_shared_experts is None else n_shared_experts
        expert = 3 * hidden_size * (moe_intermediate_size or ffn)
        feed_forward = hidden_size * n_routed_experts + (n_routed_experts + shared) * expert
    else:
        feed_forward = 3 * hidden_size * ffn
    block = attention + feed_forward + 2 * hidden_size  # and its two RMSNorms
    embeddings = vocab_size * hidden_size * (1 if tie_word_embeddings else 2)
    return embeddings + num_hidden_layers * block + hidden_size  # and the final RMSNorm
