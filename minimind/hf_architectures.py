"""Standard transformers classes that compute exactly a MiniMind model's function.

Each mapping below was checked against the transformers 5 source, not only the tensor names, and
``export_hf`` checks it again numerically when it writes a folder (the folder's logits against
ours, in float32):

* Dense, no q/k norm (MiniMind2) -> ``LlamaForCausalLM``. Same pre-norm block, bias-free
  projections (``attention_bias=False``, ``mlp_bias=False``), SwiGLU ``down(silu(gate) * up)``,
  GQA with ``scale = head_dim ** -0.5``, non-interleaved (rotate_half) RoPE with
  ``inv_freq = 1 / theta ** (arange(0, d, 2) / d)`` and default rope type, tying as ours.
  Llama's RMSNorm casts the normalised fp32 value to the input dtype *before* multiplying the
  weight and ours after: identical in float32, a rounding difference in bf16/fp16. Llama
  computes cos/sin in the activation dtype, ours in fp32: again identical in float32.
* Dense with q/k norm (MiniMind-3) -> ``Qwen3ForCausalLM``: the Llama function plus a per-head
  RMSNorm on q and k before RoPE (our order), sliding window off.
* MoE with q/k norm, no shared expert (MiniMind-3-MoE) -> ``Qwen3MoeForCausalLM``: softmax
  router in fp32 over ``num_experts``, top-k, ``norm_topk_prob`` as ours (we add 1e-20 to the
  divisor, which cannot change an fp32 sum of softmax probabilities that is at least 1/E),
  ``decoder_sparse_step=1`` and ``mlp_only_layers=[]`` so every layer is sparse, no shared expert.
  Experts are written per expert (``mlp.experts.N.gate_proj.weight``), the layout of Qwen3-MoE
  checkpoints on the Hub; transformers 5 fuses them into 3D tensors while loading.
* MoE without q/k norm, ``norm_topk_prob`` on (MiniMind2-MoE) -> ``Ernie4_5_MoeForCausalLM``.
  Its router is a softmax in fp32, top-k on the probabilities (plus a correction bias we write as
  zeros), then always renormalised (divisor clamped at 1e-12 instead of our +1e-20: no
  difference for the same reason as above); shared experts are one SwiGLU of width
  ``moe_intermediate_size * n_shared`` added to the routed output, which equals the sum of our
  shared experts once their weights are concatenated along the intermediate dimension.
  Ernie applies RoPE to interleaved pairs (2i, 2i+1) where we rotate (i, i + d/2); permuting the
  rows of each q and k head so that pair i lands on (2i, 2i+1) gives the same rotated vectors up
  to that permutation, and q.k is a sum over dimensions, so attention is unchanged.

Everything else (MoE with q/k norm *and* shared experts, MoE without renormalised top-k, ...)
has no standard class: it is exported with our own modeling code (``trust_remote_code``).
Only training-time behaviour differs: dropout is not carried over (the standard configs get 0),
their embeddings take ``padding_idx`` = the pad id (which only freezes that row's gradient), and
their MoE load-balancing losses are not our formula.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from transformers import Ernie4_5_MoeConfig, LlamaConfig, Qwen3Config, Qwen3MoeConfig

from .config import MiniMindConfig
from .model import MiniMindForCausalLM

REMOTE_CODE = "MiniMindForCausalLM"
REMOTE_CODE_AUTO_MAP = {
    "AutoConfig": "configuration_minimind.MiniMindConfig",
    "AutoModelForCausalLM": "modeling_minimind.MiniMindForCausalLM",
}
# Ernie's router correction bias, named as in its Hub checkpoints (transformers renames it on load).
ERNIE_BIAS_KEY = "model.layers.{}.mlp.moe_statics.e_score_correction_bias"
_SOURCE_DIR = Path(__file__).resolve().parent
# Our modules that the remote code consists of, and the names they get in the exported folder.
_REMOTE_MODULES = {"family": "family_minimind", "config": "configuration_minimind",
                   "feed_forward": "feed_forward_minimind", "model": "modeling_minimind"}
REMOTE_CODE_FILES = frozenset(f"{name}.py" for name in _REMOTE_MODULES.values())


def standard_architecture(config: MiniMindConfig) -> str | None:
    """The transformers class that computes this config's function, or None if there is none."""
    if not config.use_moe:
        if config.qk_norm:
            return "Qwen3ForCausalLM"
        # LlamaConfig insists on hidden_size being a multiple of the head count.
        if config.hidden_size % config.num_attention_heads == 0:
            return "LlamaForCausalLM"
        return None
    if config.qk_norm:
        return "Qwen3MoeForCausalLM" if config.n_shared_experts == 0 else None
    return "Ernie4_5_MoeForCausalLM" if config.norm_topk_prob else None


def hf_files(model: MiniMindForCausalLM, dtype: torch.dtype, remote_code: bool = False
             ) -> tuple[str, dict, dict[str, torch.Tensor], dict[str, str]]:
    """``(architecture, config.json dict, safetensors state_dict, extra source files)``.

    ``remote_code`` forces our own modeling code even where a standard class exists.
    """
    config = model.config
    architecture = None if remote_code else standard_architecture(config)
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if config.tie_word_embeddings:
        weights.pop("lm_head.weight")  # transformers re-ties it from the embedding on load
    if architecture is None:
        config_dict, files = _remote_code_config(config), _remote_code_sources()
        architecture = REMOTE_CODE
    else:
        config_dict, files = _standard_config(architecture, config), {}
        if architecture == "Ernie4_5_MoeForCausalLM":
            weights = _ernie_weights(weights, config)
    config_dict["dtype"] = str(dtype).removeprefix("torch.")
    weights = {k: v.to(dtype).contiguous() for k, v in weights.items()}
    return architecture, config_dict, weights, files


def _standard_config(architecture: str, config: MiniMindConfig) -> dict:
    common = dict(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        head_dim=config.head_dim,
        hidden_act=config.hidden_act,
        max_position_embeddings=config.max_position_embeddings,
        rms_norm_eps=config.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
        tie_word_embeddings=config.tie_word_embeddings,
        initializer_range=config.initializer_range,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    moe = dict(
        num_experts_per_tok=config.num_experts_per_tok,
        moe_intermediate_size=config.moe_intermediate_size,
        router_aux_loss_coef=config.aux_loss_alpha,
    )
    if architecture == "LlamaForCausalLM":
        hf_config = LlamaConfig(**common, attention_bias=False, mlp_bias=False)
    elif architecture == "Qwen3ForCausalLM":
        hf_config = Qwen3Config(**common, attention_bias=False, use_sliding_window=False)
    elif architecture == "Qwen3MoeForCausalLM":
        hf_config = Qwen3MoeConfig(
            **common, **moe, attention_bias=False, use_sliding_window=False,
            num_experts=config.n_routed_experts, norm_topk_prob=config.norm_topk_prob,
            decoder_sparse_step=1, mlp_only_layers=[],
        )  # fmt: skip
    else:
        hf_config = Ernie4_5_MoeConfig(
            **common, **moe, use_bias=False, moe_num_experts=config.n_routed_experts,
            moe_num_shared_experts=config.n_shared_experts, moe_layer_start_index=0,
            moe_layer_end_index=config.num_hidden_layers - 1, moe_layer_interval=1,
        )  # fmt: skip
    config_dict = hf_config.to_diff_dict()
    config_dict["architectures"] = [architecture]
    # Names transformers 4 and other readers (vLLM, llama.cpp's converter) look for; transformers 5
    # accepts them as aliases. Without rope_theta such a reader would silently use its own default.
    config_dict["rope_theta"] = config.rope_theta
    if architecture == "Qwen3MoeForCausalLM":
        config_dict["num_experts"] = config.n_routed_experts
    return config_dict


def _ernie_weights(weights: dict[str, torch.Tensor], config: MiniMindConfig
                   ) -> dict[str, torch.Tensor]:
    half = config.head_dim // 2
    # Row order that puts rotation pair (i, i + d/2) at (2i, 2i + 1): [0, d/2, 1, d/2 + 1, ...].
    interleave = torch.stack([torch.arange(half), torch.arange(half) + half], dim=1).flatten()
    shared = re.compile(r"(.*\.mlp\.shared_experts)\.\d+\.(\w+_proj)\.weight")
    out, shared_parts = {}, {}
    for key, tensor in weights.items():
        if key.endswith(("self_attn.q_proj.weight", "self_attn.k_proj.weight")):
            heads = tensor.view(-1, config.head_dim, tensor.shape[1])
            out[key] = heads[:, interleave].reshape(tensor.shape)
        elif match := shared.fullmatch(key):
            shared_parts.setdefault(f"{match[1]}.{match[2]}.weight", []).append(tensor)
        else:
            out[key] = tensor
    for key, parts in shared_parts.items():  # insertion order is expert order
        out[key] = torch.cat(parts, dim=1 if key.endswith("down_proj.weight") else 0)
    for layer in range(config.num_hidden_layers):
        out[ERNIE_BIAS_KEY.format(layer)] = torch.zeros(1, config.n_routed_experts)
    return out


def _remote_code_config(config: MiniMindConfig) -> dict:
    config_dict = config.to_diff_dict()
    config_dict["architectures"] = [REMOTE_CODE]
    config_dict["auto_map"] = dict(REMOTE_CODE_AUTO_MAP)
    return config_dict


def _remote_code_sources() -> dict[str, str]:
    """Our family.py, config.py, feed_forward.py and model.py as a self-contained set: their package-relative
    imports of each other are pointed at the sibling files, and nothing else of this package
    may be imported."""
    header = "# Written by `minimind-tui export` from minimind/{}; needs torch and transformers.\n"
    sibling = re.compile(r"^from \.(\w+) import", re.MULTILINE)
    out = {}
    for module, exported in _REMOTE_MODULES.items():
        text = (_SOURCE_DIR / f"{module}.py").read_text(encoding="utf-8")
        imported = set(sibling.findall(text))
        if imported - set(_REMOTE_MODULES) or re.search(
                r"^\s*(import minimind|from minimind)", text, re.MULTILINE):
            raise RuntimeError(f"minimind/{module}.py imports from this package beyond "
                               f"{', '.join(_REMOTE_MODULES)}: the export would not be "
                               "self-contained")
        text = sibling.sub(lambda m: f"from .{_REMOTE_MODULES[m[1]]} import", text)
        out[f"{exported}.py"] = header.format(f"{module}.py") + text
    return out
