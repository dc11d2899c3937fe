"""LoRA adapters: upstream MiniMind2's layout, training only them, save/load/merge."""

import pytest
import torch

from minimind.config import MiniMindConfig
from minimind.lora import LoRAError, adapter_tensors, apply_lora, load_lora, merge_lora
from minimind.model import MiniMindForCausalLM

SHAPE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


def model(**overrides):
    torch.manual_seed(0)
    return MiniMindForCausalLM(MiniMindConfig(**{**SHAPE, **overrides}))


def reference_keys(net: torch.nn.Module, rank: int) -> dict[str, tuple[int, ...]]:
    """From upstream's facts alone: every nn.Linear with a square weight gets A (r, in) and
    B (out, r), keyed "<module path>.lora.A.weight" / ".lora.B.weight"."""
    keys = {}
    for name, module in net.named_modules():
        if type(module) is torch.nn.Linear and module.weight.shape[0] == module.weight.shape[1]:
            out_features, in_features = module.weight.shape
            keys[f"{name}.lora.A.weight"] = (rank, in_features)
            keys[f"{name}.lora.B.weight"] = (out_features, rank)
    return keys


@pytest.mark.parametrize("overrides", [{}, {"use_moe": True}, {"family": "minimind3"}],
                         ids=["dense", "moe", "minimind3"])
def test_adapter_keys_and_shapes_are_upstreams(overrides):
    net = model(**overrides)
    expected = reference_keys(net, 8)
    apply_lora(net, 8)
    saved = adapter_tensors(net.state_dict())
    assert {k: tuple(v.shape) for k, v in saved.items()} == expected
    assert any(".q_proj." in k for k in expected) and not any("k_proj" in k for k in expected)


def test_fresh_adapters_change_nothing_and_are_all_that_train():
    net = model()
    ids = torch.randint(0, 6400, (2, 12))
    before = net(input_ids=ids).logits
    adapters = apply_lora(net, 8)
    assert torch.equal(net(input_ids=ids).logits, before)  # B = 0
    a = adapters[0]
    assert abs(a.std().item() - 0.02) < 0.004 and a.shape == (8, 64)
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable and all(".lora." in n for n in trainable)
    base = {n: p.detach().clone() for n, p in net.named_parameters() if ".lora." not in n}
    optimizer = torch.optim.AdamW(adapters, lr=1e-2)
    for _ in range(3):
        net(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert all(torch.equal(p, base[n]) for n, p in net.named_parameters() if n in base)
    assert not torch.equal(net(input_ids=ids).logits, before)


def trained_adapter(net):
    apply_lora(net, 8)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if ".lora.B." in name:
                p.normal_(std=0.05)
    return net


def test_save_load_round_trip_and_merge_gives_the_same_logits(tmp_path):
    ids = torch.randint(0, 6400, (2, 12))
    adapted = trained_adapter(model())
    expected = adapted(input_ids=ids).logits
    assert (expected - model()(input_ids=ids).logits).abs().max() > 1e-2
    path = tmp_path / "lora_test_64.pth"
    torch.save(adapter_tensors(adapted.state_dict()), path)

    loaded = model()
    assert load_lora(loaded, path) == 8
    assert torch.allclose(loaded(input_ids=ids).logits, expected, atol=1e-6)
    merge_lora(loaded)
    assert not any(".lora." in k for k in loaded.state_dict())
    assert set(loaded.state_dict()) == set(model().state_dict())
    assert torch.allclose(loaded(input_ids=ids).logits, expected, atol=1e-4)


def test_an_adapter_for_another_shape_is_refused(tmp_path):
    path = tmp_path / "wide.pth"
    torch.save(adapter_tensors(trained_adapter(model(hidden_size=128)).state_dict()), path)
    with pytest.raises(LoRAError, match="wide.pth: .*adapter has shapes"):
        load_lora(model(), path)
    torch.save({"model.layers.0.self_attn.q_proj.lora.A.weight": torch.zeros(8, 64)}, path)
    with pytest.raises(LoRAError, match="do not fit this model; missing"):
        load_lora(model(), path)
    torch.save(model().state_dict(), path)
    with pytest.raises(LoRAError, match="not an adapter file"):
        load_lora(model(), path)
