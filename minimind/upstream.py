"""Upstream MiniMind's weights layout: its config deduced from tensor shapes, weights copied
into a model with a readable error when they do not fit, and the fp16 dict upstream saves.

Upstream saves ``{name: tensor.half()}`` of the full state_dict (both tied embedding keys) to
``pretrain_{hidden}[_moe].pth``; its resume files and ours keep that dict under ``"model"``.
Models saved with ``save_pretrained`` use ``.safetensors`` with a single tied key.
"""

from __future__ import annotations

import re

import torch

from .config import MiniMindConfig
from .model import MiniMindForCausalLM

EMBED_KEY = "model.embed_tokens.weight"
LM_HEAD_KEY = "lm_head.weight"
# Added by torch.compile (`_orig_mod.`) and DistributedDataParallel (`module.`) wrappers.
WRAPPER_PREFIXES = ("_orig_mod.", "module.")
MAX_LISTED_KEYS = 5

# Published upstream checkpoints: (family, hidden, layers, use_moe) -> (name, bundled preset).
UPSTREAM_MODELS = {
    ("minimind2", 512, 8, False): ("MiniMind2-Small", "minimind2-small"),
    ("minimind2", 768, 16, False): ("MiniMind2", "minimind2"),
    ("minimind2", 640, 8, True): ("MiniMind2-MoE", "minimind2-moe"),
    ("minimind3", 768, 8, False): ("MiniMind-3", "minimind3"),
    ("minimind3", 768, 8, True): ("MiniMind-3-MoE", "minimind3-moe"),
}
# Fields that, besides family/hidden/layers/use_moe, decide tensor names and shapes.
LAYOUT_FIELDS = (
    "vocab_size", "num_attention_heads", "num_key_value_heads", "head_dim", "intermediate_size",
    "qk_norm", "tie_word_embeddings",
)
MOE_LAYOUT_FIELDS = ("n_routed_experts", "n_shared_experts", "moe_intermediate_size")


def _upstream_model(config: MiniMindConfig) -> tuple[str, str] | None:
    family = config.matching_family()
    return UPSTREAM_MODELS.get((family, config.hidden_size, config.num_hidden_layers, config.use_moe))


class WeightsMismatchError(ValueError):
    """A weights file does not fit the model's config (names or shapes differ). `differences`:
    the lines that say how, without the key listings and hints a full report adds."""

    def __init__(self, message: str, differences: list[str] | None = None):
        super().__init__(message)
        self.differences = differences if differences is not None else message.splitlines()


def strip_wrapper_prefixes(key: str) -> str:
    while key.startswith(WRAPPER_PREFIXES):
        key = key.split(".", 1)[1]
    return key


def _head_counts(q_rows: int, k_rows: int) -> list[int]:
    """Every query head count whose (even) head size the q and k projection rows allow."""

    def fits(heads: int) -> bool:
        if q_rows % heads:
            return False
        head_dim = q_rows // heads
        return head_dim % 2 == 0 and k_rows % head_dim == 0 and heads % (k_rows // head_dim) == 0

    return [h for h in range(1, q_rows + 1) if fits(h)]


class HeadSplitError(ValueError):
    """The shapes fit several head splits and nothing says which one the file was trained with."""

    def __init__(self, message: str, choices: list[int]):
        super().__init__(message)
        self.choices = choices


def _splits_text(heads: list[int], q_rows: int, k_rows: int) -> str:
    return ", ".join(f"{h}/{k_rows * h // q_rows}" for h in heads)


def infer_config(state_dict: dict[str, torch.Tensor],
                 num_attention_heads: int | None = None) -> MiniMindConfig:
    """Deduce the MiniMind config whose state_dict has these names and shapes.

    Upstream files carry no config. q/k norms mark MiniMind-3 and give head_dim. A MiniMind2
    file's shapes often fit several head splits, which compute different functions: its head
    count is `num_attention_heads` (which must fit), the only split that fits, or upstream's
    8 for the shape of a published upstream model; otherwise HeadSplitError lists the splits.
    """
    embed, lm_head = state_dict.get(EMBED_KEY), state_dict.get(LM_HEAD_KEY)
    if embed is None and lm_head is None:
        raise ValueError(f"not a MiniMind state_dict: neither {EMBED_KEY} nor {LM_HEAD_KEY} is present")
    # One key (safetensors stores a tied pair once) or the same tensor twice means tied.
    tied = embed is None or lm_head is None or lm_head is embed or torch.equal(lm_head, embed)
    vocab_size, hidden_size = (embed if embed is not None else lm_head).shape
    layer_ids = {int(m.group(1)) for k in state_dict if (m := re.match(r"model\.layers\.(\d+)\.", k))}
    if not layer_ids:
        raise ValueError("not a MiniMind state_dict: no model.layers.* keys")

    def shape(name: str) -> torch.Size:
        if f"model.layers.0.{name}" not in state_dict:
            raise ValueError(f"not a MiniMind state_dict: no model.layers.0.{name}")
        return state_dict[f"model.layers.0.{name}"].shape

    q_rows = shape("self_attn.q_proj.weight")[0]
    qk_norm = "model.layers.0.self_attn.q_norm.weight" in state_dict
    k_rows = shape("self_attn.k_proj.weight")[0]
    use_moe = "model.layers.0.mlp.gate.weight" in state_dict
    num_layers = max(layer_ids) + 1
    if qk_norm:
        head_dim = shape("self_attn.q_norm.weight")[0]
        if num_attention_heads not in (None, q_rows // head_dim):
            raise ValueError(f"num_attention_heads {num_attention_heads} does not fit: the "
                             f"file's q/k norms give {q_rows // head_dim} heads")
    else:
        counts = _head_counts(q_rows, k_rows)
        if not counts:
            raise ValueError(f"no head split fits q_proj's {q_rows} rows and k_proj's {k_rows}")
        published = ("minimind2", hidden_size, num_layers, use_moe) in UPSTREAM_MODELS
        if num_attention_heads is not None and num_attention_heads not in counts:
            raise HeadSplitError(
                f"num_attention_heads {num_attention_heads} does not fit the file's shapes; "
                f"num_attention_heads/num_key_value_heads {_splits_text(counts, q_rows, k_rows)}"
                " do", counts)
        if num_attention_heads is None and len(counts) > 1 and not (published and 8 in counts):
            raise HeadSplitError(
                "the file does not record its head split and its shapes fit "
                f"num_attention_heads/num_key_value_heads {_splits_text(counts, q_rows, k_rows)}"
                ": say which with num_attention_heads (or keep the file beside its run's "
                "config.toml or resume file)", counts)
        heads = num_attention_heads or (counts[0] if len(counts) == 1 else 8)
        head_dim = q_rows // heads
    if use_moe:
        ffn = shape("mlp.experts.0.gate_proj.weight")[0]
        shared_pattern = re.compile(r"model\.layers\.0\.mlp\.shared_experts\.(\d+)\.")
        shared = {m[1] for k in state_dict if (m := shared_pattern.match(k))}
        moe_kwargs = {
            "n_routed_experts": shape("mlp.gate.weight")[0],
            "n_shared_experts": len(shared),
            "moe_intermediate_size": ffn,
        }
    else:
        ffn = shape("mlp.gate_proj.weight")[0]
        moe_kwargs = {}
    return MiniMindConfig(
        family="minimind3" if qk_norm else "minimind2",
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=q_rows // head_dim,
        num_key_value_heads=k_rows // head_dim,
        head_dim=head_dim,
        intermediate_size=ffn,
        qk_norm=qk_norm,
        tie_word_embeddings=tied,
        use_moe=use_moe,
        **moe_kwargs,
    )


def describe_config(config: MiniMindConfig) -> str:
    """One line naming the family, size and layout, e.g. for error messages and the dashboard."""
    upstream = _upstream_model(config)
    label = f"{config.matching_family() or 'custom'} {config.hidden_size}/{config.num_hidden_layers}"
    if upstream:
        label += f" ({upstream[0]})"
    ffn = f"ffn {config.intermediate_size}"
    if config.use_moe:
        ffn = (
            f"MoE {config.n_routed_experts} experts x {config.moe_intermediate_size}"
            f" + {config.n_shared_experts} shared"
        )
    qk = "q/k norm" if config.qk_norm else "no q/k norm"
    return (
        f"{label}: {config.num_attention_heads} heads x {config.head_dim}, "
        f"{config.num_key_value_heads} kv heads, {ffn}, {qk}, vocab {config.vocab_size}"
    )


def _fill_tied_key(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Supply the missing one of the two embedding keys (safetensors saves a tied pair once)."""
    state_dict = dict(state_dict)
    if EMBED_KEY in state_dict and LM_HEAD_KEY not in state_dict:
        state_dict[LM_HEAD_KEY] = state_dict[EMBED_KEY]
    elif LM_HEAD_KEY in state_dict and EMBED_KEY not in state_dict:
        state_dict[EMBED_KEY] = state_dict[LM_HEAD_KEY]
    return state_dict


def _build_hint(file_config: MiniMindConfig) -> str:
    """How to build a model that fits the file: the shape, the head split (a setting users
    often change, which shapes alone cannot always tell apart), and every other layout field
    the family would not supply."""
    kwargs = {
        "family": file_config.family,
        "hidden_size": file_config.hidden_size,
        "num_hidden_layers": file_config.num_hidden_layers,
        "num_attention_heads": file_config.num_attention_heads,
        "num_key_value_heads": file_config.num_key_value_heads,
        "use_moe": file_config.use_moe,
    }
    default = MiniMindConfig(**kwargs)
    fields = LAYOUT_FIELDS + (MOE_LAYOUT_FIELDS if file_config.use_moe else ())
    kwargs.update({f: getattr(file_config, f) for f in fields
                   if f not in kwargs and getattr(file_config, f) != getattr(default, f)})
    build = "build the model with " + ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    upstream = _upstream_model(file_config)
    if upstream:
        return f"the file looks like {upstream[0]}: use preset {upstream[1]} or {build}"
    return build


def _mismatch_error(model, state_dict, missing, unexpected, mismatched, untied,
                    recorded: tuple[MiniMindConfig, str] | None) -> WeightsMismatchError:
    expected = model.state_dict()
    lines = ["weights file does not fit the model"]
    if recorded is not None:
        file_config = recorded[0]
        lines.append(f"  file:  {describe_config(file_config)} (as recorded in {recorded[1]})")
    else:
        try:
            file_config = _likely_config(state_dict, model.config.num_attention_heads)
            lines.append(f"  file:  {describe_config(file_config)}")
        except (ValueError, IndexError, ZeroDivisionError):  # too broken to describe
            file_config = None
            lines.append("  file:  not recognisable as a MiniMind checkpoint")
    lines.append(f"  model: {describe_config(model.config)}")

    def listing(title, keys, fmt):
        # One line per key pattern: the same tensor of every layer/expert differs in the same way.
        patterns: dict[str, str] = {}
        for key in keys:
            patterns.setdefault(re.sub(r"\.\d+\.", ".*.", key), key)
        if patterns:
            first = list(patterns.items())[:MAX_LISTED_KEYS]
            shown = [f"{pattern} {fmt(key)}" for pattern, key in first]
            if len(patterns) > MAX_LISTED_KEYS:
                shown.append(f"... ({len(patterns) - MAX_LISTED_KEYS} more)")
            count = f"{len(keys)} tensor{'s' if len(keys) != 1 else ''}"
            lines.append(f"  {title} ({count}): " + "; ".join(shown))

    differences = lines.copy()
    listing("shape mismatch", mismatched,
            lambda k: f"file {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}")
    listing("missing from file", missing, lambda k: str(tuple(expected[k].shape)))
    listing("unexpected in file", unexpected, lambda k: str(tuple(state_dict[k].shape)))
    if untied:
        lines.append(f"  the file has different {EMBED_KEY} and {LM_HEAD_KEY}, the model ties them")
        differences.append(lines[-1])

    if file_config is not None:
        lines.append(f"hint: {_build_hint(file_config)}")
        if not file_config.qk_norm and recorded is None:
            lines += _head_split_note(state_dict, file_config)
    return WeightsMismatchError("\n".join(lines), differences)


def _likely_config(state_dict: dict[str, torch.Tensor], heads: int) -> MiniMindConfig:
    """The file's config for a mismatch report: with the model's head count where the shapes
    allow it, else upstream's 8, else the most heads (`_head_split_note` says it is a guess)."""
    try:
        return infer_config(state_dict, heads)
    except HeadSplitError as e:
        return infer_config(state_dict, 8 if 8 in e.choices else max(e.choices, default=1))


def _head_split_note(state_dict: dict[str, torch.Tensor], file_config: MiniMindConfig
                     ) -> list[str]:
    """A MiniMind2 file fits several head splits and loads into any of them, but computes the
    function it was trained for only with its own: say that the hint's split is a guess."""
    q_rows = state_dict["model.layers.0.self_attn.q_proj.weight"].shape[0]
    k_rows = state_dict["model.layers.0.self_attn.k_proj.weight"].shape[0]
    others = [h for h in _head_counts(q_rows, k_rows) if h != file_config.num_attention_heads]
    if not others:
        return []
    splits = _splits_text(others, q_rows, k_rows)
    return [f"note: the file does not record its head split; its shapes also fit "
            f"num_attention_heads/num_key_value_heads {splits}: use the split it was trained "
            "with (its run's config.toml has it)"]


def load_into(model: MiniMindForCausalLM, state_dict: dict[str, torch.Tensor],
              recorded: tuple[MiniMindConfig, str] | None = None) -> None:
    """Copy ``state_dict`` into ``model`` with strict checking and a readable error.

    Tensors are converted to each parameter's dtype and device (upstream files are fp16).
    `recorded`: the file's config as written down with it, and where; a mismatch then describes
    the file by its record instead of by a guess from its shapes.
    """
    state_dict = _fill_tied_key({strip_wrapper_prefixes(k): v for k, v in state_dict.items()})
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [k for k in expected if k in state_dict and state_dict[k].shape != expected[k].shape]
    untied = (
        model.config.tie_word_embeddings
        and EMBED_KEY in state_dict
        and not mismatched
        and state_dict[EMBED_KEY] is not state_dict[LM_HEAD_KEY]
        and not torch.equal(state_dict[EMBED_KEY], state_dict[LM_HEAD_KEY])
    )
    if missing or unexpected or mismatched or untied:
        raise _mismatch_error(model, state_dict, missing, unexpected, mismatched, untied,
                              recorded)
    with torch.no_grad():
        for name, tensor in expected.items():
            tensor.copy_(state_dict[name])  # copy_ converts dtype and device


def export_upstream_state_dict(model: torch.nn.Module | dict[str, torch.Tensor]
                               ) -> dict[str, torch.Tensor]:
    """What upstream's ``pretrain_{h}.pth`` holds: every state_dict key (both tied) as fp16 on
    CPU, from a model or its state_dict."""
    state = model.state_dict() if isinstance(model, torch.nn.Module) else model
    return {strip_wrapper_prefixes(k): v.detach().half().cpu() for k, v in state.items()}

