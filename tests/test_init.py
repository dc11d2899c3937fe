"""Initial weights: every tensor follows its family's upstream rule (statistical bounds).

MiniMind2 never calls post_init, so its weights are PyTorch's module defaults: each Linear (and
the embedding, which is the head's Linear weight) U(±1/sqrt(fan_in)), norms 1. MiniMind-3's HEAD
calls post_init: N(0, 0.02). The checks are tight enough that the other family's rule, or a
uniform/normal swap with the same spread, fails them.
"""

import math

import pytest
import torch
from torch import nn

from minimind import MiniMindConfig, MiniMindForCausalLM
from minimind.settings import RunSettings

SMALL = {"vocab_size": 6400, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 8}


def build(**kwargs) -> MiniMindForCausalLM:
    torch.manual_seed(0)
    return MiniMindForCausalLM(MiniMindConfig(**{**SMALL, **kwargs}))


def std_tolerance(n: int, kurtosis: float) -> float:
    """Five standard errors of a sample std, relative: sqrt((kurtosis - 1) / 4n)."""
    return 5 * math.sqrt((kurtosis - 1) / (4 * n))


def assert_uniform(name: str, w: torch.Tensor, bound: float) -> None:
    """U(±bound): nothing past the bound, std bound/sqrt(3) (a uniform's kurtosis is 1.8)."""
    w = w.detach().double().flatten()
    assert w.abs().max() <= bound, f"{name}: {w.abs().max():.4g} beyond ±{bound:.4g}"
    expected = bound / math.sqrt(3)
    assert abs(w.std() / expected - 1) < std_tolerance(w.numel(), 1.8), \
        f"{name}: std {w.std():.4g}, expected {expected:.4g}"
    assert abs(w.mean()) < 5 * expected / math.sqrt(w.numel()), f"{name}: mean {w.mean():.3g}"


def assert_normal(name: str, w: torch.Tensor, std: float) -> None:
    """N(0, std): spread within tolerance, and tails past 2 std, which a uniform of the same
    spread (max sqrt(3) std) never has."""
    w = w.detach().double().flatten()
    assert abs(w.std() / std - 1) < std_tolerance(w.numel(), 3.0), \
        f"{name}: std {w.std():.4g}, expected {std:.4g}"
    assert w.abs().max() > 2 * std, f"{name}: no tail beyond 2 std: not a normal"
    assert abs(w.mean()) < 5 * std / math.sqrt(w.numel()), f"{name}: mean {w.mean():.3g}"


def check_every_tensor(model: MiniMindForCausalLM, rule: str, embedding: str = "head") -> int:
    """Check each named tensor against `rule` ("pytorch" or "normal"); returns how many."""
    checked = 0
    for name, w in model.named_parameters():  # a tied tensor is listed once, as the embedding
        if w.dim() == 1:
            assert torch.equal(w, torch.ones_like(w)), f"{name}: norm weights must start at 1"
        elif rule == "normal":
            assert_normal(name, w, 0.02)
        elif name == "model.embed_tokens.weight" and embedding == "own":
            assert_normal(name, w, 1.0)  # nn.Embedding's default when nothing ties it
        else:  # fan_in is the input width: the second dimension of a Linear weight
            assert_uniform(name, w, 1 / math.sqrt(w.shape[1]))
        checked += 1
    return checked


@pytest.mark.parametrize("kwargs", [{}, {"use_moe": True}], ids=["dense", "moe"])
def test_minimind2_starts_from_pytorch_defaults(kwargs):
    model = build(**kwargs)
    assert model.config.weight_init == "pytorch"
    assert model.lm_head.weight is model.model.embed_tokens.weight
    checked = check_every_tensor(model, "pytorch")
    assert checked == len(list(model.parameters()))
    if kwargs:  # the router and the shared expert are covered too
        names = dict(model.named_parameters())
        assert "model.layers.0.mlp.gate.weight" in names
        assert "model.layers.0.mlp.shared_experts.0.up_proj.weight" in names


def test_minimind2_tied_embedding_takes_the_heads_rule_not_the_embeddings():
    # Checked directly: U(±1/sqrt(hidden)) has std 0.072 at hidden 64; nn.Embedding's N(0, 1) is
    # 14 times wider and N(0, 0.02) 3.6 times narrower.
    w = build().model.embed_tokens.weight
    assert_uniform("embedding", w, 1 / math.sqrt(64))


def test_minimind2_untied_embedding_is_nn_embedding_default():
    model = build(tie_word_embeddings=False)
    check_every_tensor(model, "pytorch", embedding="own")
    assert_uniform("lm_head", model.lm_head.weight, 1 / math.sqrt(64))


@pytest.mark.parametrize("kwargs", [{}, {"use_moe": True}], ids=["dense", "moe"])
def test_minimind3_starts_from_normal_0_02(kwargs):
    model = build(family="minimind3", **kwargs)
    assert model.config.weight_init == "normal"
    check_every_tensor(model, "normal")


@pytest.mark.parametrize("family, rule", [("minimind2", "normal"), ("minimind3", "pytorch")])
def test_weight_init_setting_overrides_the_family(family, rule):
    settings = RunSettings.parse({"model": {**SMALL, "family": family, "weight_init": rule}})
    torch.manual_seed(0)
    model = MiniMindForCausalLM(MiniMindConfig(**settings.model.to_config_kwargs()))
    check_every_tensor(model, rule)


def test_bias_follows_the_rule():
    # No Linear of the model has a bias; an adapter or a future layer that adds one gets the
    # rule PyTorch (pytorch) or transformers (normal: zeros) would give it.
    torch.manual_seed(0)
    layer = nn.Linear(256, 512, bias=True)
    build()._init_weights(layer)
    assert_uniform("bias", layer.bias, 1 / math.sqrt(256))
    layer = nn.Linear(256, 512, bias=True)
    build(family="minimind3")._init_weights(layer)
    assert torch.equal(layer.bias, torch.zeros(512))


def test_weight_init_is_checked_and_saved(tmp_path):
    with pytest.raises(ValueError, match="weight_init"):
        MiniMindConfig(weight_init="xavier")
    settings = RunSettings.parse({"model": {"weight_init": "normal"}})
    path = settings.save_toml(tmp_path / "config.toml")
    assert 'weight_init = "normal"' in path.read_text()
    assert RunSettings.from_toml(path).model.weight_init == "normal"
