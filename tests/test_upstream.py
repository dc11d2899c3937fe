"""Upstream-format weights: reading .pth/.safetensors, inferring the config, strict loading."""

from minimind.checkpoint_reader import read_checkpoint
from minimind.torchfile import CheckpointError
from minimind.upstream import HeadSplitError

import pytest
import torch
from safetensors.torch import save_file

from minimind import (
    MiniMindConfig,
    MiniMindForCausalLM,
    WeightsMismatchError,
    export_upstream_state_dict,
    infer_config,
    load_into,
    load_model,
    load_pretrained_weights,
)

SMALL = {"hidden_size": 64, "num_hidden_layers": 2}
SHAPES = {
    "minimind2": {"family": "minimind2", **SMALL},
    "minimind3": {"family": "minimind3", **SMALL},
    "minimind2-moe": {"family": "minimind2", "use_moe": True, **SMALL},
    "minimind3-moe": {"family": "minimind3", "use_moe": True, **SMALL},
}
LAYOUT = ("family", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
          "num_key_value_heads", "head_dim", "intermediate_size", "qk_norm", "use_moe",
          "n_routed_experts", "n_shared_experts", "moe_intermediate_size", "tie_word_embeddings",
          "num_experts_per_tok", "rms_norm_eps")


def build(seed=0, **kwargs) -> MiniMindForCausalLM:
    torch.manual_seed(seed)
    return MiniMindForCausalLM(MiniMindConfig(**kwargs)).eval()


def assert_same_layout(inferred: MiniMindConfig, config: MiniMindConfig):
    assert {f: getattr(inferred, f) for f in LAYOUT} == {f: getattr(config, f) for f in LAYOUT}


@pytest.mark.parametrize("name", SHAPES)
def test_upstream_pth_round_trip(tmp_path, name):
    source = build(**SHAPES[name])
    exported = export_upstream_state_dict(source)
    assert exported.keys() == source.state_dict().keys()  # both tied keys, like upstream
    assert all(v.dtype == torch.float16 and v.device.type == "cpu" for v in exported.values())
    torch.save(exported, tmp_path / "pretrain_64.pth")

    # A MiniMind2 file of this shape fits several head splits: its own is given.
    heads = None if source.config.qk_norm else source.config.num_attention_heads
    inferred = read_checkpoint(tmp_path / "pretrain_64.pth", "", heads).model.config
    assert_same_layout(inferred, source.config)
    assert inferred.matching_family() == source.config.family

    target = build(seed=1, **SHAPES[name])
    load_pretrained_weights(target, tmp_path / "pretrain_64.pth")
    for key, tensor in target.state_dict().items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, exported[key].float()), key
    assert target.lm_head.weight is target.model.embed_tokens.weight


@pytest.mark.parametrize("kwargs, family", [
    ({"hidden_size": 512, "num_hidden_layers": 8}, "minimind2"),
    ({"hidden_size": 768, "num_hidden_layers": 16}, "minimind2"),
    ({"hidden_size": 640, "num_hidden_layers": 8, "use_moe": True}, "minimind2"),
    ({"family": "minimind3", "hidden_size": 768, "num_hidden_layers": 8}, "minimind3"),
    ({"family": "minimind3", "hidden_size": 768, "num_hidden_layers": 8, "use_moe": True}, "minimind3"),
])
def test_infer_config_for_published_shapes(kwargs, family):
    with torch.device("meta"):
        model = MiniMindForCausalLM(MiniMindConfig(**kwargs))
    state = dict(model.state_dict())
    del state["lm_head.weight"]  # one tied key is enough (meta tensors cannot be compared)
    inferred = infer_config(state)
    assert inferred.family == family
    assert_same_layout(inferred, model.config)


def test_resume_dict_and_wrapper_prefixes(tmp_path):
    source = build(**SHAPES["minimind3"])
    weights = {f"_orig_mod.{k}": v for k, v in export_upstream_state_dict(source).items()}
    resume = {"model": weights, "optimizer": {"state": {}, "param_groups": []}, "epoch": 0,
              "step": 8, "world_size": 1, "wandb_id": None}
    torch.save(resume, tmp_path / "pretrain_64_resume.pth")
    loaded = read_checkpoint(tmp_path / "pretrain_64_resume.pth").model
    assert loaded.state_dict().keys() == source.state_dict().keys()
    assert torch.equal(loaded.lm_head.weight, source.lm_head.weight.half().float())


def test_safetensors_with_a_single_tied_key(tmp_path):
    source = build(**SHAPES["minimind2"])
    state = {k: v.contiguous() for k, v in source.state_dict().items() if k != "lm_head.weight"}
    save_file(state, tmp_path / "model.safetensors")
    model = load_model(tmp_path / "model.safetensors", num_attention_heads=8)
    assert model.config.tie_word_embeddings
    assert model.lm_head.weight is model.model.embed_tokens.weight
    ids = torch.randint(0, 6400, (1, 8))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, source(ids).logits, atol=1e-6, rtol=0)


def test_tied_file_into_untied_model_fills_lm_head():
    source = build(**SHAPES["minimind2"])
    target = build(tie_word_embeddings=False, **SHAPES["minimind2"])
    load_into(target, export_upstream_state_dict(source))
    assert torch.equal(target.lm_head.weight, target.model.embed_tokens.weight)
    assert target.lm_head.weight.data_ptr() != target.model.embed_tokens.weight.data_ptr()


def test_untied_file_into_tied_model_is_refused():
    source = build(tie_word_embeddings=False, **SHAPES["minimind2"])
    assert infer_config(source.state_dict(), 8).tie_word_embeddings is False
    with pytest.raises(WeightsMismatchError, match="lm_head.weight"):
        load_into(build(**SHAPES["minimind2"]), source.state_dict())


def test_minimind2_file_into_minimind3_model_explains_the_mismatch(tmp_path):
    source = build(hidden_size=512, num_hidden_layers=1)
    torch.save(export_upstream_state_dict(source), tmp_path / "v2.pth")
    target = build(family="minimind3", hidden_size=512, num_hidden_layers=1)
    with pytest.raises(WeightsMismatchError) as err:
        load_pretrained_weights(target, tmp_path / "v2.pth")
    message = str(err.value)
    assert isinstance(err.value, ValueError)
    assert "minimind2 512/1" in message and "minimind3 512/1" in message
    assert "self_attn.k_proj.weight file (128, 512) vs model (256, 512)" in message
    assert "self_attn.q_norm.weight" in message  # missing from the file
    assert "family='minimind2'" in message  # the hint
    assert len(message.splitlines()) < 10


def test_a_mismatch_counts_its_tensors_and_says_what_differs_without_the_listings():
    model = build(**SHAPES["minimind2"])
    state = dict(export_upstream_state_dict(model))
    state["model.extra.weight"] = torch.zeros(2)
    with pytest.raises(WeightsMismatchError) as err:
        load_into(model, state)
    assert "  unexpected in file (1 tensor): model.extra.weight (2,)" in str(err.value)
    del state["model.extra.weight"], state["model.norm.weight"]
    del state["model.layers.0.mlp.up_proj.weight"]
    state["lm_head.weight"] = torch.zeros_like(state["model.embed_tokens.weight"])
    with pytest.raises(WeightsMismatchError) as err:
        load_into(model, state)
    assert "  missing from file (2 tensors): " in str(err.value)
    # Said in one line elsewhere (a lora run's base that does not fit): the shapes and how.
    assert [line.split(":")[0] for line in err.value.differences] == [
        "weights file does not fit the model", "  file", "  model",
        "  the file has different model.embed_tokens.weight and lm_head.weight, the model ties "
        "them"]


def test_published_shape_hint_names_the_preset():
    with torch.device("meta"):
        published = MiniMindForCausalLM(MiniMindConfig(hidden_size=512, num_hidden_layers=8))
    state = dict(published.state_dict())
    del state["lm_head.weight"]
    target = build(family="minimind3", hidden_size=64, num_hidden_layers=1)
    with pytest.raises(WeightsMismatchError, match="MiniMind2-Small: use preset minimind2-small"):
        load_into(target, state)


def test_not_a_state_dict(tmp_path):
    torch.save([1, 2, 3], tmp_path / "junk.pth")
    with pytest.raises(CheckpointError, match="state_dict"):
        read_checkpoint(tmp_path / "junk.pth")
    with pytest.raises(ValueError, match="embed_tokens"):
        infer_config({"foo.weight": torch.zeros(2)})


def test_an_unrecorded_head_split_is_never_guessed():
    """A MiniMind2 file of a shape nobody published fits several head splits; naming one that
    fits settles it, one that does not fit is refused with the ones that do."""
    state = build(**SHAPES["minimind2"]).state_dict()
    with pytest.raises(HeadSplitError, match="4/1, 8/2, 16/4") as err:
        infer_config(state)
    assert err.value.choices == [4, 8, 16, 32]
    assert infer_config(state, 4).num_key_value_heads == 1
    with pytest.raises(HeadSplitError, match="num_attention_heads 3 does not fit"):
        infer_config(state, 3)
