"""MiniMindConfig / MiniMindForCausalLM: upstream layouts and counts, losses, MoE, caching, I/O."""

import math

import pytest
import torch
import torch.nn.functional as F

from minimind import MiniMindConfig, MiniMindForCausalLM
from minimind.feed_forward import MoEFeedForward
from minimind.model import RotaryEmbedding

# ---------------------------------------------------------------------------------------------
# Expected upstream layouts, written from the upstream tables (not from our model).


def upstream_keys(hidden, layers, layer_table, vocab=6400):
    keys = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,),
            "lm_head.weight": (vocab, hidden)}
    for i in range(layers):
        keys.update({f"model.layers.{i}.{name}": shape for name, shape in layer_table.items()})
    return keys


def attention_table(hidden, kv_rows, qk_norm_dim=None):
    table = {
        "self_attn.q_proj.weight": (hidden, hidden),
        "self_attn.k_proj.weight": (kv_rows, hidden),
        "self_attn.v_proj.weight": (kv_rows, hidden),
        "self_attn.o_proj.weight": (hidden, hidden),
        "input_layernorm.weight": (hidden,),
        "post_attention_layernorm.weight": (hidden,),
    }
    if qk_norm_dim:
        table["self_attn.q_norm.weight"] = (qk_norm_dim,)
        table["self_attn.k_norm.weight"] = (qk_norm_dim,)
    return table


def ffn_table(prefix, hidden, ffn):
    return {f"{prefix}.gate_proj.weight": (ffn, hidden), f"{prefix}.down_proj.weight": (hidden, ffn),
            f"{prefix}.up_proj.weight": (ffn, hidden)}


MINIMIND2_512 = upstream_keys(512, 8, {**attention_table(512, 128), **ffn_table("mlp", 512, 1408)})
MINIMIND3_512 = upstream_keys(512, 8, {**attention_table(512, 256, 64), **ffn_table("mlp", 512, 1664)})
MINIMIND3_768 = upstream_keys(768, 8, {**attention_table(768, 384, 96), **ffn_table("mlp", 768, 2432)})
MINIMIND2_MOE_640 = upstream_keys(640, 8, {
    **attention_table(640, 160),
    "mlp.gate.weight": (4, 640),
    **{k: v for e in range(4) for k, v in ffn_table(f"mlp.experts.{e}", 640, 1728).items()},
    **ffn_table("mlp.shared_experts.0", 640, 1728),
})
MINIMIND3_MOE_768 = upstream_keys(768, 8, {
    **attention_table(768, 384, 96),
    "mlp.gate.weight": (4, 768),
    **{k: v for e in range(4) for k, v in ffn_table(f"mlp.experts.{e}", 768, 2432).items()},
})


def meta_model(**kwargs) -> MiniMindForCausalLM:
    with torch.device("meta"):
        return MiniMindForCausalLM(MiniMindConfig(**kwargs))


def small_model(seed=0, **kwargs) -> MiniMindForCausalLM:
    torch.manual_seed(seed)
    kwargs = {"hidden_size": 64, "num_hidden_layers": 2, **kwargs}
    return MiniMindForCausalLM(MiniMindConfig(**kwargs))


# ---------------------------------------------------------------------------------------------
# Config


def test_family_defaults_fill_only_unset_fields():
    v2_ffn = [MiniMindConfig(hidden_size=h).intermediate_size for h in (512, 640, 768)]
    v3_ffn = [MiniMindConfig(family="minimind3", hidden_size=h).intermediate_size for h in (512, 768)]
    assert v2_ffn == [1408, 1728, 2048] and v3_ffn == [1664, 2432]
    fields = ("num_key_value_heads", "rms_norm_eps", "qk_norm", "num_experts_per_tok",
              "n_shared_experts", "aux_loss_alpha", "seq_aux", "head_dim", "moe_intermediate_size")
    v2 = MiniMindConfig()
    v3 = MiniMindConfig(family="minimind3", num_key_value_heads=2)  # explicit value wins
    assert [getattr(v2, f) for f in fields] == [2, 1e-5, False, 2, 1, 0.1, True, 64, 1408]
    assert [getattr(v3, f) for f in fields] == [2, 1e-6, True, 1, 0, 5e-4, False, 64, 1664]


def test_config_round_trip_keeps_concrete_values(tmp_path):
    config = MiniMindConfig(family="minimind3", hidden_size=256, intermediate_size=512, use_moe=True)
    config.save_pretrained(tmp_path)
    again = MiniMindConfig.from_pretrained(tmp_path)
    assert again.to_dict() | {"_name_or_path": ""} == config.to_dict() | {"_name_or_path": ""}
    assert again.intermediate_size == again.moe_intermediate_size == 512


@pytest.mark.parametrize("kwargs, fields", [
    ({"hidden_size": 500}, ["hidden_size", "num_attention_heads"]),
    ({"num_key_value_heads": 3}, ["num_key_value_heads", "num_attention_heads"]),
    ({"num_experts_per_tok": 5}, ["num_experts_per_tok", "n_routed_experts"]),
    ({"hidden_size": 72, "num_attention_heads": 8}, ["head_dim"]),
    ({"num_hidden_layers": 0}, ["num_hidden_layers"]),
    ({"family": "minimind4"}, ["family"]),
    ({"hidden_act": "nope"}, ["hidden_act"]),
    ({"scoring_func": "sigmoid"}, ["scoring_func"]),
    ({"dropout": 1.0}, ["dropout"]),
])
def test_config_validation_names_the_fields(kwargs, fields):
    with pytest.raises(ValueError) as err:
        MiniMindConfig(**kwargs)
    assert all(field in str(err.value) for field in fields), str(err.value)


def test_explicit_head_dim_may_differ_from_hidden_over_heads():
    model = meta_model(hidden_size=64, num_hidden_layers=1, num_attention_heads=4, head_dim=32)
    assert model.model.layers[0].self_attn.q_proj.weight.shape == (128, 64)
    assert model.model.layers[0].self_attn.o_proj.weight.shape == (64, 128)


def test_matching_family():
    assert MiniMindConfig().matching_family() == "minimind2"
    assert MiniMindConfig(family="minimind3", use_moe=True).matching_family() == "minimind3"
    assert MiniMindConfig(hidden_size=768, num_key_value_heads=4, intermediate_size=2432,
                          qk_norm=True).matching_family() == "minimind3"
    assert MiniMindConfig(num_key_value_heads=4).matching_family() is None
    assert MiniMindConfig(use_moe=True, n_shared_experts=0).matching_family() is None


# ---------------------------------------------------------------------------------------------
# Layout and parameter counts


@pytest.mark.parametrize("kwargs, total, active", [
    ({"hidden_size": 512, "num_hidden_layers": 8}, 25_829_888, 25_829_888),
    ({"hidden_size": 768, "num_hidden_layers": 16}, 104_030_976, 104_030_976),
    ({"hidden_size": 640, "num_hidden_layers": 8, "use_moe": True}, 145_029_760, 91_945_600),
    ({"family": "minimind3", "hidden_size": 768}, 63_912_192, 63_912_192),
    ({"family": "minimind3", "hidden_size": 768, "use_moe": True}, 198_416_640, 63_936_768),
])
def test_parameter_counts(kwargs, total, active):
    model = meta_model(**kwargs)
    assert sum(p.numel() for p in model.parameters()) == total
    assert model.num_parameters() == total
    assert model.active_parameters() == active


@pytest.mark.parametrize("kwargs", [
    {"hidden_size": 512, "num_hidden_layers": 8},
    {"family": "minimind3", "hidden_size": 768, "use_moe": True},
    {"hidden_size": 640, "use_moe": True, "n_shared_experts": 2, "moe_intermediate_size": 512},
    {"family": "minimind3", "hidden_size": 256, "qk_norm": False, "num_key_value_heads": 2,
     "intermediate_size": 700, "tie_word_embeddings": False, "vocab_size": 1000},
    {"hidden_size": 128, "num_attention_heads": 4, "qk_norm": True, "use_moe": True,
     "n_routed_experts": 8, "num_experts_per_tok": 2},
])
def test_the_torch_free_parameter_count_matches_the_built_model(kwargs):
    from minimind.family import parameter_count

    layers = {"num_hidden_layers": 8, "num_attention_heads": 8, "vocab_size": 6400,
              "family": "minimind2"}
    assert parameter_count(**{**layers, **kwargs}) == meta_model(**kwargs).num_parameters()


def test_the_torch_free_parameter_count_matches_every_bundled_preset():
    from minimind.family import parameter_count
    from minimind_tui.form.presets import list_presets, load_settings

    for name in list_presets():
        kwargs = load_settings(name).model.to_config_kwargs()
        assert parameter_count(**kwargs) == meta_model(**kwargs).num_parameters(), name


@pytest.mark.parametrize("kwargs, expected", [
    ({}, MINIMIND2_512),
    ({"family": "minimind3", "hidden_size": 512}, MINIMIND3_512),
    ({"family": "minimind3", "hidden_size": 768}, MINIMIND3_768),
    ({"hidden_size": 640, "use_moe": True}, MINIMIND2_MOE_640),
    ({"family": "minimind3", "hidden_size": 768, "use_moe": True}, MINIMIND3_MOE_768),
])
def test_state_dict_matches_upstream_layout(kwargs, expected):
    model = meta_model(**kwargs)
    state = model.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied: one tensor, two keys


def test_untied_embeddings_are_separate():
    model = small_model(tie_word_embeddings=False)
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    assert model.num_parameters() == small_model().num_parameters() + 6400 * 64


# ---------------------------------------------------------------------------------------------
# Forward: losses


@pytest.mark.parametrize("family", ["minimind2", "minimind3"])
def test_initial_loss_is_log_vocab(family):
    model = small_model(family=family, hidden_size=512)
    ids = torch.randint(0, 6400, (2, 64))
    loss = model(ids, labels=ids).loss
    assert abs(loss.item() - math.log(6400)) < 0.3


def test_loss_ignores_minus_100_and_shifts():
    model = small_model()
    ids = torch.randint(0, 6400, (2, 10))
    labels = ids.clone()
    labels[0, 6:] = -100
    labels[1, :3] = -100
    out = model(ids, labels=labels)
    kept = [(b, t) for b in range(2) for t in range(9) if labels[b, t + 1] != -100]
    by_hand = torch.stack([F.cross_entropy(out.logits[b, t], labels[b, t + 1]) for b, t in kept]).mean()
    torch.testing.assert_close(out.loss, by_hand)


def test_dense_aux_loss_is_zero_tensor():
    out = small_model().train()(torch.randint(0, 6400, (2, 8)))
    assert isinstance(out.aux_loss, torch.Tensor) and out.aux_loss.item() == 0.0


def test_logits_to_keep():
    model = small_model().eval()
    ids = torch.randint(0, 6400, (2, 8))
    full, last = model(ids).logits, model(ids, logits_to_keep=1).logits
    assert last.shape == (2, 1, 6400)
    torch.testing.assert_close(last[:, 0], full[:, -1])


# ---------------------------------------------------------------------------------------------
# Mixture of experts


@pytest.mark.parametrize("family", ["minimind2", "minimind3"])
def test_moe_train_aux_loss_and_gradients(family):
    model = small_model(family=family, use_moe=True).train()
    ids = torch.randint(0, 6400, (2, 16))
    out = model(ids, labels=ids)
    assert out.aux_loss.item() > 0
    (out.loss + out.aux_loss).backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    assert model(ids).aux_loss.item() == 0.0


def reference_moe(moe: MoEFeedForward, x: torch.Tensor) -> torch.Tensor:
    """Token-by-token evaluation of the routing rule, to check the batched dispatch."""
    out = []
    for token in x.reshape(-1, x.shape[-1]):
        scores = moe.gate(token).softmax(-1)
        weights, idx = scores.topk(moe.top_k)
        if moe.norm_topk_prob:
            weights = weights / weights.sum()
        y = sum(w * moe.experts[int(e)](token) for w, e in zip(weights, idx))
        out.append(y + sum((shared(token) for shared in moe.shared_experts), torch.zeros_like(token)))
    return torch.stack(out).view_as(x)


@pytest.mark.parametrize("family", ["minimind2", "minimind3"])
def test_moe_dispatch_matches_per_token_reference(family):
    moe = small_model(family=family, use_moe=True).model.layers[0].mlp.eval()
    x = torch.randn(3, 7, 64)
    torch.testing.assert_close(moe(x)[0], reference_moe(moe, x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", ["minimind2", "minimind3"])
def test_a_top1_picks_weight_is_its_score_in_minimind2_and_1_in_minimind3(family):
    """Upstream MiniMind2 renormalises only k > 1 picks; ours made every top-1 weight 1."""
    moe = small_model(family=family, use_moe=True, num_experts_per_tok=1,
                      n_shared_experts=0).model.layers[0].mlp.eval()
    x = torch.randn(5, 64)
    score, pick = moe.gate(x).softmax(-1).max(-1)
    weight = score if family == "minimind2" else torch.ones_like(score)
    expected = torch.stack([w * moe.experts[int(e)](t) for w, e, t in zip(weight, pick, x)])
    torch.testing.assert_close(moe(x[None])[0][0], expected, atol=1e-5, rtol=1e-4)


def previous_moe_forward(moe: MoEFeedForward, x: torch.Tensor):
    """The dispatch this layer had before it went sync-free, kept as the reference: picks sorted
    by expert, split by host-side counts, one index_add_ per expert; and the aux loss written
    from its formulas."""
    batch, seq_len, hidden = x.shape
    flat = x.reshape(-1, hidden)
    scores = moe.gate(flat).float().softmax(dim=-1)
    weights, expert_idx = scores.topk(moe.top_k, dim=-1)
    if moe.norm_topk_prob:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    order = expert_idx.flatten().argsort(stable=True)
    counts = expert_idx.flatten().bincount(minlength=moe.num_experts).tolist()
    out = torch.zeros_like(flat)
    for expert, tokens, w in zip(moe.experts, (order // moe.top_k).split(counts),
                                 weights.flatten()[order].split(counts)):
        out.index_add_(0, tokens, (expert(flat[tokens]) * w[:, None]).to(out.dtype))
    for shared in moe.shared_experts:
        out = out + shared(flat)

    picks = F.one_hot(expert_idx, moe.num_experts).sum(dim=1).float()  # (tokens, E) of 0/1
    if moe.seq_aux:
        load = picks.view(batch, seq_len, -1).sum(1) * moe.num_experts / (seq_len * moe.top_k)
        prob = scores.view(batch, seq_len, -1).mean(1)
        aux = moe.aux_loss_alpha * (load * prob).sum(1).mean()
    else:
        load = picks.mean(0) * moe.num_experts / moe.top_k
        aux = moe.aux_loss_alpha * (load * scores.mean(0)).sum()
    return out.view_as(x), aux


def moe_outputs_and_grads(moe, forward, x, out_grad):
    """Output, aux loss and the gradients of (out . out_grad + aux) w.r.t. x and every weight."""
    x = x.clone().requires_grad_(True)
    out, aux = forward(x)
    params = list(moe.parameters())
    grads = torch.autograd.grad((out * out_grad).sum() + aux, [x, *params], allow_unused=True)
    return out.detach(), aux.detach(), grads


@pytest.mark.parametrize("path", ["grouped", "split"])
@pytest.mark.parametrize("idle_expert", [False, True])
@pytest.mark.parametrize("family", ["minimind2", "minimind3"])  # top-2 + shared / top-1
def test_moe_dispatch_matches_previous_dispatch(family, idle_expert, path, monkeypatch):
    moe = small_model(family=family, use_moe=True).model.layers[0].mlp.train()
    assert not moe.use_grouped_mm(torch.device("cpu"), torch.float32)  # eager CPU splits
    monkeypatch.setattr(moe, "use_grouped_mm", lambda device, dtype: path == "grouped")
    x = torch.randn(3, 7, 64)
    if idle_expert:  # positive inputs + this router: experts 0 (and 1) take every token
        x = x.abs()
        with torch.no_grad():
            moe.gate.weight.copy_(torch.tensor([1.0, 0.5, -1.0, -1.0])[:, None].expand(4, 64))
    out_grad = torch.randn_like(x)
    new = moe_outputs_and_grads(moe, moe, x, out_grad)
    old = moe_outputs_and_grads(moe, lambda t: previous_moe_forward(moe, t), x, out_grad)
    torch.testing.assert_close(new[0], old[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(new[1], old[1], atol=1e-6, rtol=1e-5)
    assert old[1] > 0
    names = ["x", *(name for name, _ in moe.named_parameters())]
    for name, a, b in zip(names, new[2], old[2]):
        assert a is not None, f"no gradient for {name}"
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=lambda m: f"{name}: {m}")
    if idle_expert:
        idle = [g for name, g in zip(names, new[2]) if name.startswith("experts.3.")]
        assert len(idle) == 3 and not any(g.any() for g in idle)


@pytest.mark.parametrize("path", ["grouped", "split"])
@pytest.mark.parametrize("family", ["minimind2", "minimind3"])
def test_moe_dispatch_matches_previous_dispatch_under_bf16_autocast(family, path, monkeypatch):
    moe = small_model(family=family, use_moe=True).model.layers[0].mlp.train()
    monkeypatch.setattr(moe, "use_grouped_mm", lambda device, dtype: path == "grouped")
    x = torch.randn(3, 7, 64)
    out_grad = torch.randn_like(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        new = moe_outputs_and_grads(moe, moe, x, out_grad)
        old = moe_outputs_and_grads(moe, lambda t: previous_moe_forward(moe, t), x, out_grad)
    assert new[0].dtype == torch.float32  # accumulated in the residual stream's dtype
    torch.testing.assert_close(new[0], old[0], atol=1e-5, rtol=1e-5)  # same bf16 products
    torch.testing.assert_close(new[1], old[1])
    for a, b in zip(new[2], old[2]):  # weight gradients sum bf16 products in another order
        torch.testing.assert_close(a, b, rtol=1.6e-2, atol=1e-2 * b.abs().max().item())


def test_moe_compiles_as_one_graph():
    """No host read in the grouped dispatch: under bf16 autocast the layer traces whole
    (fullgraph) and its forward and backward match eager, which runs the split path. aot_eager
    runs dynamo and AOT autograd without inductor's codegen."""
    moe = small_model(use_moe=True).model.layers[0].mlp.train()
    x, out_grad = torch.rand(2, 9, 64), torch.randn(2, 9, 64)
    compiled = torch.compile(moe, fullgraph=True, backend="aot_eager")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        results = [moe_outputs_and_grads(moe, f, x, out_grad) for f in (moe, compiled)]
    (eager_out, eager_aux, eager_grads), (out, aux, grads) = results
    torch.testing.assert_close(out, eager_out)
    torch.testing.assert_close(aux, eager_aux)
    for a, b in zip(grads, eager_grads):  # bf16 products summed in another order
        torch.testing.assert_close(a, b, rtol=1.6e-2, atol=1e-2 * b.abs().max().item())


@pytest.mark.parametrize("family", ["minimind2", "minimind3"])
def test_moe_aux_loss_is_alpha_when_routing_is_uniform(family):
    moe = small_model(family=family, use_moe=True).model.layers[0].mlp.train()
    with torch.no_grad():
        moe.gate.weight.zero_()  # every expert gets probability 1/E
    aux = moe(torch.randn(2, 9, 64))[1]
    torch.testing.assert_close(aux, torch.tensor(moe.aux_loss_alpha))


def test_minimind3_moe_balance_loss_keeps_each_picks_share():
    """Upstream MiniMind-3: coef * E * sum(one_hot(idx, E).mean(0) * s.mean(0)), the top-k
    dimension kept; ours was MiniMind2's, 1/k of it for k > 1."""
    for family, share_of in (("minimind3", 1), ("minimind2", 2)):  # MiniMind2: of N*k picks
        moe = small_model(family=family, use_moe=True, num_experts_per_tok=2,
                          n_routed_experts=4, seq_aux=False).model.layers[0].mlp.train()
        x = torch.randn(2, 9, 64)
        scores = moe.gate(x.reshape(-1, 64)).softmax(dim=-1)
        idx = scores.topk(2, dim=-1).indices
        head = moe.aux_loss_alpha * 4 * (F.one_hot(idx, 4).float().mean(0) * scores.mean(0)).sum()
        torch.testing.assert_close(moe(x)[1], head / share_of)


def test_moe_idle_experts_still_get_gradients():
    moe = small_model(family="minimind3", use_moe=True).model.layers[0].mlp.train()
    with torch.no_grad():  # positive inputs + this router send every token to expert 0
        moe.gate.weight.copy_(torch.tensor([1.0, -1.0, -1.0, -1.0])[:, None].expand(4, 64))
    out, aux = moe(torch.rand(2, 5, 64))
    (out.sum() + aux).backward()
    for expert in moe.experts[1:]:
        assert all(p.grad is not None and not p.grad.any() for p in expert.parameters())


def test_moe_under_bf16_autocast():
    model = small_model(use_moe=True).train()
    ids = torch.randint(0, 6400, (2, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, labels=ids)
    (out.loss + out.aux_loss).backward()
    assert torch.isfinite(out.loss) and out.aux_loss > 0


# ---------------------------------------------------------------------------------------------
# Attention paths, RoPE and generation


def test_rope_matches_upstream_table_formula():
    head_dim, theta = 64, 1e6
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))
    angles = torch.outer(torch.arange(32768).float(), inv)
    positions = torch.tensor([[0, 1, 7, 4095, 32767]])
    cos, sin = RotaryEmbedding(head_dim, theta)(positions)
    torch.testing.assert_close(cos[0], torch.cat([angles.cos(), angles.cos()], -1)[positions[0]])
    torch.testing.assert_close(sin[0], torch.cat([angles.sin(), angles.sin()], -1)[positions[0]])


@pytest.mark.parametrize("family", ["minimind2", "minimind3"])
def test_left_padding_matches_unpadded_sequences(family):
    model = small_model(family=family).eval()
    seqs = [torch.randint(3, 6400, (n,)) for n in (5, 9, 7)]
    ids = torch.zeros(3, 9, dtype=torch.long)
    mask = torch.zeros(3, 9, dtype=torch.long)
    for i, seq in enumerate(seqs):
        ids[i, 9 - len(seq):], mask[i, 9 - len(seq):] = seq, 1
    with torch.no_grad():
        padded = model(ids, attention_mask=mask).logits[:, -1]
        single = torch.stack([model(seq[None]).logits[0, -1] for seq in seqs])
    torch.testing.assert_close(padded, single, atol=1e-5, rtol=0)


def test_cached_chunks_match_full_forward():
    model = small_model(family="minimind3").eval()
    ids = torch.randint(0, 6400, (2, 12))
    with torch.no_grad():
        full = model(ids).logits
        first = model(ids[:, :5], use_cache=True)
        second = model(ids[:, 5:11], cache=first.cache, use_cache=True)  # T > 1 on top of a cache
        third = model(ids[:, 11:], cache=second.cache, use_cache=True)
    torch.testing.assert_close(torch.cat([first.logits, second.logits, third.logits], 1), full,
                               atol=1e-5, rtol=1e-4)


def test_explicit_mask_path_matches_fused_causal():
    fused = small_model().eval()
    masked = small_model(flash_attn=False).eval()
    ids = torch.randint(0, 6400, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(fused(ids).logits, masked(ids).logits, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", ["minimind2", "minimind3"])
def test_greedy_generation_same_with_and_without_cache(family):
    model = small_model(family=family).eval()
    prompt = torch.randint(3, 6400, (1, 6))
    cached = model.generate(prompt, max_new_tokens=20, do_sample=False, use_cache=True)
    uncached = model.generate(prompt, max_new_tokens=20, do_sample=False, use_cache=False)
    assert cached.shape == (1, 26)
    assert torch.equal(cached, uncached)


# ---------------------------------------------------------------------------------------------
# Saving, loading, checkpointing


@pytest.mark.parametrize("kwargs", [{"family": "minimind3", "use_moe": True},
                                    {"tie_word_embeddings": False}])
def test_save_pretrained_round_trip_is_bit_exact(tmp_path, kwargs):
    model = small_model(**kwargs).eval()
    model.save_pretrained(tmp_path)
    loaded = MiniMindForCausalLM.from_pretrained(tmp_path).eval()
    before, after = model.state_dict(), loaded.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    tied = loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    assert tied == model.config.tie_word_embeddings
    ids = torch.randint(0, 6400, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, atol=1e-6, rtol=0)
        # transformers memory-maps the safetensors file, so parameters can start at addresses that
        # are not 64-byte aligned and CPU BLAS may take a differently rounding path; in fresh
        # (aligned) memory the same weights give bit-identical logits.
        for p in loaded.parameters():
            p.data = p.data.clone()
        assert torch.equal(model(ids).logits, loaded(ids).logits)


@pytest.mark.filterwarnings("ignore:`gradient_checkpointing_enable` is deprecated:FutureWarning")
def test_gradient_checkpointing_matches():
    ids = torch.randint(0, 6400, (2, 12))
    losses, grads = [], []
    for checkpointing in (False, True):
        model = small_model(use_moe=True, dropout=0.1).train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        torch.manual_seed(1)  # same dropout masks in both runs
        out = model(ids, labels=ids)
        (out.loss + out.aux_loss).backward()
        losses.append(out.loss.detach())
        grads.append([p.grad for p in model.parameters()])
    assert model.model.layers[0].gradient_checkpointing
    torch.testing.assert_close(losses[0], losses[1])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
