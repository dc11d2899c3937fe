"""Configuration for MiniMind decoder-only language models.

One config class describes both upstream MiniMind families:

* ``minimind2`` - Llama-style: 2 KV heads, FFN size from the 8/3 rule, RMSNorm eps 1e-5,
  MoE with 4 routed experts (top-2) plus 1 shared expert.
* ``minimind3`` - Qwen3-style: 4 KV heads, per-head q/k RMSNorm, FFN size from the pi rule,
  RMSNorm eps 1e-6, MoE with 4 routed experts (top-1) and no shared expert.

``family`` only fills in the family-specific fields the caller left as ``None``. After
``__init__`` every field holds a concrete value, so a saved ``config.json`` reloads to exactly
the same shape even if the family defaults change later.
"""

from __future__ import annotations

import math

from transformers import PretrainedConfig
from transformers.activations import ACT2FN

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
    }


class MiniMindConfig(PretrainedConfig):
    model_type = "minimind"

    def __init__(
        self,
        family: str = "minimind2",
        vocab_size: int = 6400,
        hidden_size: int = 512,
        num_hidden_layers: int = 8,
        num_attention_heads: int = 8,
        num_key_value_heads: int | None = None,
        head_dim: int | None = None,
        intermediate_size: int | None = None,
        hidden_act: str = "silu",
        max_position_embeddings: int = 32768,
        rope_theta: float = 1e6,
        rms_norm_eps: float | None = None,
        qk_norm: bool | None = None,
        dropout: float = 0.0,
        flash_attn: bool = True,
        tie_word_embeddings: bool = True,
        initializer_range: float = 0.02,
        bos_token_id: int = 1,
        eos_token_id: int = 2,
        pad_token_id: int = 0,
        use_moe: bool = False,
        n_routed_experts: int = 4,
        num_experts_per_tok: int | None = None,
        n_shared_experts: int | None = None,
        moe_intermediate_size: int | None = None,
        aux_loss_alpha: float | None = None,
        seq_aux: bool | None = None,
        norm_topk_prob: bool = True,
        scoring_func: str = "softmax",
        **kwargs,
    ):
        defaults = family_defaults(family, hidden_size)
        if head_dim is None:
            if num_attention_heads <= 0 or hidden_size % num_attention_heads != 0:
                raise ValueError(
                    f"hidden_size ({hidden_size}) must be divisible by num_attention_heads "
                    f"({num_attention_heads}), or head_dim must be given explicitly"
                )
            head_dim = hidden_size // num_attention_heads

        def pick(value, name):
            return defaults[name] if value is None else value

        self.family = family
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = pick(num_key_value_heads, "num_key_value_heads")
        self.head_dim = head_dim
        self.intermediate_size = pick(intermediate_size, "intermediate_size")
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.rope_theta = rope_theta
        self.rms_norm_eps = pick(rms_norm_eps, "rms_norm_eps")
        self.qk_norm = pick(qk_norm, "qk_norm")
        self.dropout = dropout
        self.flash_attn = flash_attn
        self.initializer_range = initializer_range
        self.use_moe = use_moe
        self.n_routed_experts = n_routed_experts
        self.num_experts_per_tok = pick(num_experts_per_tok, "num_experts_per_tok")
        self.n_shared_experts = pick(n_shared_experts, "n_shared_experts")
        self.moe_intermediate_size = (
            self.intermediate_size if moe_intermediate_size is None else moe_intermediate_size
        )
        self.aux_loss_alpha = pick(aux_loss_alpha, "aux_loss_alpha")
        self.seq_aux = pick(seq_aux, "seq_aux")
        self.norm_topk_prob = norm_topk_prob
        self.scoring_func = scoring_func
        self._validate()
        super().__init__(
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )

    def _validate(self) -> None:
        positive = (
            "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "intermediate_size", "max_position_embeddings",
            "n_routed_experts", "num_experts_per_tok", "moe_intermediate_size",
        )  # fmt: skip
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} ({getattr(self, name)}) must be positive")
        if self.n_shared_experts < 0:
            raise ValueError(f"n_shared_experts ({self.n_shared_experts}) must not be negative")
        if self.num_attention_heads % self.num_key_value_heads != 0:
            raise ValueError(
                f"num_key_value_heads ({self.num_key_value_heads}) must divide "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.head_dim % 2 != 0:
            raise ValueError(f"head_dim ({self.head_dim}) must be even: RoPE rotates pairs of dims")
        if self.num_experts_per_tok > self.n_routed_experts:
            raise ValueError(
                f"num_experts_per_tok ({self.num_experts_per_tok}) must not exceed "
                f"n_routed_experts ({self.n_routed_experts})"
            )
        if self.hidden_act not in ACT2FN:
            raise ValueError(f"hidden_act ({self.hidden_act!r}) is not a known activation")
        if self.scoring_func != "softmax":
            raise ValueError(f"scoring_func ({self.scoring_func!r}) must be 'softmax'")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout ({self.dropout}) must be in [0, 1)")
        if self.rope_theta <= 0 or self.rms_norm_eps <= 0:
            raise ValueError(
                f"rope_theta ({self.rope_theta}) and rms_norm_eps ({self.rms_norm_eps}) must be positive"
            )

    def matching_family(self) -> str | None:
        """Which upstream family this config's *checkpoint layout* matches, if any.

        Only fields that change tensor names or shapes are compared, so e.g. a different dropout
        or rms_norm_eps still counts as the same family.
        """
        for family in FAMILIES:
            expected = family_defaults(family, self.hidden_size)
            layout = ["num_key_value_heads", "intermediate_size", "qk_norm"]
            if self.use_moe:
                layout.append("n_shared_experts")
            if self.head_dim != self.hidden_size // self.num_attention_heads:
                continue
            if self.use_moe and self.moe_intermediate_size != self.intermediate_size:
                continue
            if all(getattr(self, name) == expected[name] for name in layout):
                return family
        return None
