"""Configuration for MiniMind decoder-only language models.

One config class describes both upstream MiniMind families (see `minimind.family`): ``family``
only fills in the family-specific fields the caller left as ``None``. After ``__init__`` every
field holds a concrete value, so a saved ``config.json`` reloads to exactly the same shape even if
the family defaults change later.
"""

from __future__ import annotations

from transformers import AutoConfig, PretrainedConfig
from transformers.activations import ACT2FN

from .family import FAMILIES, family_defaults, shape_problems


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
        weight_init: str | None = None,
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

        def pick(value, name):
            return defaults[name] if value is None else value

        self.family = family
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = pick(num_key_value_heads, "num_key_value_heads")
        # An explicit head_dim frees the shape from hidden = heads x head_dim (upstream allows it).
        self.head_dim = (hidden_size // max(num_attention_heads, 1) if head_dim is None
                         else head_dim)
        self.intermediate_size = pick(intermediate_size, "intermediate_size")
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.rope_theta = rope_theta
        self.rms_norm_eps = pick(rms_norm_eps, "rms_norm_eps")
        self.qk_norm = pick(qk_norm, "qk_norm")
        self.dropout = dropout
        self.flash_attn = flash_attn
        self.initializer_range = initializer_range
        self.weight_init = pick(weight_init, "weight_init")
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
        self._validate(head_dim_given=head_dim is not None)
        super().__init__(
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )

    def _validate(self, head_dim_given: bool) -> None:
        positive = (
            "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "intermediate_size", "max_position_embeddings",
            "n_routed_experts", "num_experts_per_tok", "moe_intermediate_size",
        )  # fmt: skip
        problems = [f"{name} ({getattr(self, name)}) must be positive"
                    for name in positive if getattr(self, name) <= 0]
        if self.n_shared_experts < 0:
            problems.append(f"n_shared_experts ({self.n_shared_experts}) must not be negative")
        if not problems:  # the shape rules divide by these
            problems += [p.message for p in shape_problems(
                self.hidden_size, self.num_attention_heads, self.num_key_value_heads,
                self.head_dim if head_dim_given else None, self.n_routed_experts,
                self.num_experts_per_tok)]
        if self.hidden_act not in ACT2FN:
            problems.append(f"hidden_act ({self.hidden_act!r}) is not a known activation")
        if self.weight_init not in ("pytorch", "normal"):
            problems.append(f"weight_init ({self.weight_init!r}) must be 'pytorch' or 'normal'")
        if self.scoring_func != "softmax":
            problems.append(f"scoring_func ({self.scoring_func!r}) must be 'softmax'")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout ({self.dropout}) must be in [0, 1)")
        if self.rope_theta <= 0 or self.rms_norm_eps <= 0:
            problems.append(f"rope_theta ({self.rope_theta}) and rms_norm_eps "
                            f"({self.rms_norm_eps}) must be positive")
        if problems:
            raise ValueError("; ".join(problems))

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


# Let transformers' Auto classes open a saved MiniMind folder (config.json model_type "minimind").
AutoConfig.register("minimind", MiniMindConfig)
