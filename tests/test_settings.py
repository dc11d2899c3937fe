import pytest

from minimind.settings import RunSettings, SettingsError, validate
from minimind_tui.presets import list_presets, load_settings, resolve_preset, save_user_preset


def problems(data):
    return {p.loc: p.message for p in validate(data)[1]}


def test_defaults_are_the_seed_arguments():
    s = RunSettings()
    t = s.train
    assert (t.epochs, t.batch_size, t.learning_rate, t.accumulation_steps, t.grad_clip) == \
        (1, 32, 5e-4, 8, 1.0)
    assert (s.model.hidden_size, s.model.num_hidden_layers, t.max_seq_len) == (512, 8, 512)
    assert s.tokens_per_step() == 32 * 512 * 8


def test_field_errors_name_field_and_rule():
    found = problems({"train": {"batch_size": 0, "learning_rate": "fast", "dtype": "fp8"}})
    assert found["train.batch_size"] == "must be ≥ 1"
    assert found["train.learning_rate"] == "must be a number"
    assert found["train.dtype"].startswith("must be one of")


def test_unknown_field_is_reported():
    assert problems({"train": {"batchsize": 4}}) == {"train.batchsize": "unknown setting"}


@pytest.mark.parametrize("model, loc, text", [
    ({"num_key_value_heads": 3}, "model.num_key_value_heads", "must divide num_attention_heads (8)"),
    ({"hidden_size": 500}, "model.num_attention_heads", "must divide hidden_size (500)"),
    ({"use_moe": True, "num_experts_per_tok": 5}, "model.num_experts_per_tok", "≤ n_routed_experts"),
    ({"n_shared_experts": 2}, "model.n_shared_experts", "only applies when use_moe is on"),
])
def test_cross_field_model_rules(model, loc, text):
    assert text in problems({"model": model})[loc]


def test_cross_field_train_rules():
    found = problems({"train": {"dtype": "float16", "device": "cpu", "max_seq_len": 64},
                      "model": {"max_position_embeddings": 32}})
    assert "float16 needs a CUDA device" in found["train.dtype"]
    assert found["train.max_seq_len"] == "must be ≤ max_position_embeddings (32)"


def test_parse_raises_with_every_problem():
    with pytest.raises(SettingsError) as info:
        RunSettings.parse({"train": {"batch_size": 0, "epochs": 0}})
    assert {p.loc for p in info.value.problems} == {"train.batch_size", "train.epochs"}
    assert "train.batch_size: must be ≥ 1" in str(info.value)


def test_every_bundled_preset_is_valid():
    names = set(list_presets())
    assert {"tiny", "minimind2-small", "minimind2", "minimind2-moe", "minimind3",
            "minimind3-moe"} <= names
    for name in names:
        load_settings(name)


def test_toml_round_trip_and_overrides(tmp_path):
    s = load_settings("minimind3-moe", {"train": {"batch_size": "16"}})
    assert s.train.batch_size == 16 and s.model.use_moe and s.model.family == "minimind3"
    path = s.save_toml(tmp_path / "run.toml")
    assert RunSettings.from_toml(path) == s


def test_user_presets(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIMIND_TUI_PRESETS", str(tmp_path))
    s = load_settings("tiny", {"model": {"hidden_size": 256}})
    save_user_preset(s, "mine")
    assert list_presets()["mine"] == tmp_path / "mine.toml"
    assert load_settings("mine") == s


def test_unknown_preset_and_bad_toml(tmp_path):
    with pytest.raises(SettingsError, match="unknown preset 'nope'.*tiny"):
        resolve_preset("nope")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nbatch_size = 1\n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(str(bad))
    extra = tmp_path / "extra.toml"
    extra.write_text("[optim]\nlr = 1\n")
    with pytest.raises(SettingsError, match="expected \\[model\\] and \\[train\\]"):
        load_settings(str(extra))
