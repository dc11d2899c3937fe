import os
import re
import sys
from pathlib import Path

import pytest
import torch

from minimind.environment import environment_problems
from minimind.model import MiniMindForCausalLM
from minimind.settings import WIDEST_FEED_FORWARD, RunSettings, SettingsError
from minimind.settings_rules import validate
from minimind_tui.form.presets import (list_presets, load_settings, load_start_settings,
                                       preset_name_problem, resolve_preset, save_user_preset)


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
    # A typo no run means: 10^20 epochs passed, and the dashboard planned 7e23 steps.
    found = problems({"train": {"epochs": 10**20, "max_steps": 10**12, "batch_size": 1 << 40,
                                "accumulation_steps": 1 << 40, "warmup_iters": 10**12},
                      "model": {"max_position_embeddings": 1 << 40}})
    assert found == {"train.epochs": "must be ≤ 100000", "train.max_steps": "must be ≤ 1000000000",
                     "train.batch_size": "must be ≤ 1048576",
                     "train.accumulation_steps": "must be ≤ 1048576",
                     "train.warmup_iters": "must be ≤ 1000000000",
                     "model.max_position_embeddings": "must be ≤ 4194304"}
    # An emptied field in the form: what to do, not a type error.
    found = problems({"train": {"epochs": "", "learning_rate": " "}})
    assert (found["train.epochs"], found["train.learning_rate"]) == (
        "is empty: enter a whole number", "is empty: enter a number")


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
    lora = {"stage": "lora", "from_weight": "base.pth", "lora_rank": 129}
    assert problems({"train": lora, "model": {"hidden_size": 128}})["train.lora_rank"] == (
        "must be ≤ hidden_size (128): a higher rank holds more than the layer it adapts, and "
        "adds nothing")
    assert "train.lora_rank" not in problems({"train": {**lora, "lora_rank": 128},
                                              "model": {"hidden_size": 128}})
    # Every adapter went to Muon and AdamW, left with none, failed the run at step 0.
    assert problems({"train": {**lora, "lora_rank": 8, "optimizer": "muon"}})[
        "train.optimizer"].startswith("muon does not apply to lora")
    # Set for another stage they were recorded in config.toml and never used.
    for stage in ("pretrain", "sft"):
        assert problems({"train": {"stage": stage, "lora_rank": 4, "lora_name": "x"}}) == {
            "train.lora_rank": "only applies when stage is lora",
            "train.lora_name": "only applies when stage is lora"}
    assert problems({"train": {"nnodes": 2, "node_rank": 2}})["train.node_rank"] == (
        "must be < nnodes (2): nodes count from 0")


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


def test_a_saved_preset_name_loads_back_beside_a_folder_or_file_of_that_name(tmp_path, monkeypatch):
    # The app creates out/ where it is launched; the picker and --preset ask by name.
    presets = tmp_path / "presets"
    monkeypatch.setenv("MINIMIND_TUI_PRESETS", str(presets))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "mine").write_text("not a preset")
    s = load_settings("tiny", {"train": {"batch_size": 3}})
    for name in ("out", "mine"):
        save_user_preset(s, name)
        assert resolve_preset(name) == presets / f"{name}.toml"
        assert load_settings(name) == s
    with pytest.raises(SettingsError, match="is a folder, not a preset file$"):
        load_settings("./out")  # the folder itself, asked for as a path
    s.save_toml(tmp_path / "out" / "config.toml")  # a run folder: its config.toml is meant
    with pytest.raises(SettingsError, match=r"out: is a folder, not a preset file; its run's "
                                            r"settings are out/config.toml$"):
        load_settings("./out")


def test_a_file_path_is_still_a_preset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load_settings("tiny", {"train": {"batch_size": 5}})
    s.save_toml(tmp_path / "plain")
    assert resolve_preset("plain") == Path("plain") and load_settings("plain") == s
    assert resolve_preset("run.toml") == Path("run.toml")  # missing: read_toml says so


def test_a_preset_name_may_not_end_in_toml(tmp_path, monkeypatch):
    presets = tmp_path / "presets"
    monkeypatch.setenv("MINIMIND_TUI_PRESETS", str(presets))
    monkeypatch.chdir(tmp_path)
    assert ".toml" in preset_name_problem("my.toml")
    # A name too long for a file: refused in the dialog, which stays open (the save said
    # "[Errno 36] File name too long" of its temporary file, and the name was lost).
    assert preset_name_problem("a" * 300).startswith("at most 200 bytes")
    assert preset_name_problem("模" * 67).endswith("got 201")  # bytes, as the file system counts
    assert preset_name_problem("a" * 200) is None
    with pytest.raises(SettingsError, match="at most 200 bytes"):
        save_user_preset(load_settings("tiny"), "a" * 300)
    with pytest.raises(SettingsError, match="invalid preset name 'my.toml'"):
        save_user_preset(load_settings("tiny"), "my.toml")
    assert not presets.exists()
    # One an older version saved is not listed: asked for by name it would be read as a path.
    load_settings("tiny").save_toml(presets / "my.toml.toml")
    assert "my.toml" not in list_presets()
    load_settings("tiny", {"train": {"batch_size": 7}}).save_toml(tmp_path / "my.toml")
    assert load_settings("my.toml").train.batch_size == 7


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


def test_every_problem_is_reported_at_once():
    found = problems({"train": {"batch_size": 0, "learning_rate": 0, "dtype": "float16",
                                "device": "cpu"},
                      "model": {"hidden_size": 100}})
    assert set(found) == {"train.batch_size", "train.learning_rate", "train.dtype",
                          "model.num_attention_heads"}


def test_an_invalid_field_neither_hides_nor_fakes_a_cross_field_rule():
    # hidden_size is invalid, so the heads rule (which needs it) is not judged on a stand-in...
    assert set(problems({"model": {"hidden_size": "wide", "num_attention_heads": 6}})) == \
        {"model.hidden_size"}
    # ...while a rule over valid fields is still reported beside it.
    assert set(problems({"model": {"hidden_size": "wide", "num_key_value_heads": 3}})) == \
        {"model.hidden_size", "model.num_key_value_heads"}


def test_a_rule_over_several_fields_names_the_one_the_user_changed():
    with pytest.raises(SettingsError) as info:
        load_settings(None, {"model": {"hidden_size": "100"}, "train": {"batch_size": "0"}})
    by_loc = {p.loc: p for p in info.value.problems}
    assert set(by_loc) == {"model.hidden_size", "train.batch_size"}
    assert by_loc["model.hidden_size"].related == ("model.num_attention_heads",)
    assert str(by_loc["model.hidden_size"]) == \
        "model.hidden_size: num_attention_heads (8) must divide hidden_size (100)"
    # Moved beside the changed field, a message about its own field names that field.
    for changed, expected in [
            ({"model": {"max_position_embeddings": "64"}},
             "model.max_position_embeddings: max_seq_len must be ≤ max_position_embeddings (64)"),
            ({"train": {"stage": "sft", "packing": "1", "data_path": "builtin:shakespeare"}},
             "train.packing: is for pretraining; sft pads each conversation")]:
        with pytest.raises(SettingsError) as info:
            load_settings("tiny", changed)
        assert str(info.value.problems[0]).startswith(expected), info.value.problems
    with pytest.raises(SettingsError) as info:  # it resumed, and dropped overwrite unsaid
        load_settings("tiny", {"train": {"from_resume": "1", "overwrite": "1"}})
    assert str(info.value.problems[0]).startswith("train.overwrite: is on, and so is from_resume")
    # A message with a subject of its own keeps it (it read "num_attention_heads head_dim").
    with pytest.raises(SettingsError) as info:
        load_settings("tiny", {"model": {"hidden_size": "100"}})
    assert str(info.value.problems[0]) == (
        "model.hidden_size: head_dim = hidden_size / num_attention_heads = 25 must be even: "
        "RoPE rotates pairs of dimensions")
    with pytest.raises(SettingsError) as info:  # a preset's own shape keeps the usual field
        load_settings(None, {"model": {"num_attention_heads": "7"}})
    assert info.value.problems[0].loc == "model.num_attention_heads"


def test_the_model_shape_rules_are_the_configs_own():
    from minimind.config import MiniMindConfig

    for model in ({"num_key_value_heads": 3}, {"hidden_size": 500},
                  {"use_moe": True, "num_experts_per_tok": 5}):
        with pytest.raises(ValueError) as err:
            MiniMindConfig(**model)
        message = next(iter(problems({"model": model}).values()))
        assert message in str(err.value)


def test_sizes_have_a_ceiling_the_model_builds_at():
    """intermediate_size 2^52 passed the form and crashed the model's build; a million shared
    experts built for minutes. Refused by name; the ceilings themselves build."""
    moe = {"use_moe": True}
    for model in ({"intermediate_size": 2**52}, {**moe, "moe_intermediate_size": 2**52},
                  {**moe, "n_shared_experts": 10**6}, {**moe, "num_experts_per_tok": 10**6},
                  {"num_key_value_heads": 10**6}):
        assert f"model.{next(iter(model.keys() - moe.keys()))}" in problems({"model": model})
    widest = load_settings(None, {"model": {
        **moe, "num_hidden_layers": 1, "intermediate_size": WIDEST_FEED_FORWARD,
        "moe_intermediate_size": WIDEST_FEED_FORWARD, "n_shared_experts": 256,
        "n_routed_experts": 256, "num_experts_per_tok": 256, "num_attention_heads": 256,
        "num_key_value_heads": 256, "hidden_size": 16384}})
    with torch.device("meta"):
        MiniMindForCausalLM(widest.model.to_config())


@pytest.mark.parametrize("train, loc", [
    ({"seed": 99999999999999999999999}, "train.seed"),
    ({"seed": 2**32}, "train.seed"),
    ({"eval_interval": 10, "val_data_path": ""}, "train.eval_interval"),
])
def test_values_that_would_crash_later_are_refused(train, loc):
    assert loc in problems({"train": train})
    assert "model.vocab_size" in problems({"model": {"vocab_size": 1_000_000_000}})


def test_file_name_prefixes_leave_room_for_every_file_a_run_writes(tmp_path):
    """A 250-character save_weight passed the form and failed at step 0: File name too long."""
    from minimind.atomic import atomic_write_bytes
    from minimind.run_files import NAME_PREFIX_MAX, resume_name, weights_name

    assert set(problems({"train": {"save_weight": "w" * (NAME_PREFIX_MAX + 1),
                                   "lora_name": "l" * 250}})) == {"train.save_weight",
                                                                   "train.lora_name"}
    longest = weights_name("w" * NAME_PREFIX_MAX, 16384, use_moe=True)
    assert not problems({"train": {"save_weight": "w" * NAME_PREFIX_MAX},
                         "model": {"hidden_size": 16384}})
    atomic_write_bytes(tmp_path / resume_name(longest), b"fits")  # through its temporary name
    assert (tmp_path / resume_name(longest)).read_bytes() == b"fits"


@pytest.mark.parametrize("content, message", [
    (b"[train]\nbatch_size = 4\n", "has no [model] table"),
    (b"model = 3\n[train]\n", "must be a table ([model]), not a int"),
    (b"train = 'x'\n[model]\n", "must be a table ([train]), not a str"),
    (b"[model]\nhidden_size = 64\n# \xff\xfe\n", "not a text file"),
])
def test_malformed_presets_are_refused_by_name(tmp_path, content, message):
    path = tmp_path / "p.toml"
    path.write_bytes(content)
    with pytest.raises(SettingsError, match=re.escape(message)):
        load_settings(str(path))


def test_a_folder_is_not_a_preset(tmp_path):
    (tmp_path / "dir.toml").mkdir()
    with pytest.raises(SettingsError, match="is a folder, not a preset file"):
        load_settings(str(tmp_path / "dir.toml"))


def test_presets_are_listed_smallest_first_then_the_users(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIMIND_TUI_PRESETS", str(tmp_path))
    save_user_preset(load_settings("tiny"), "aaa")
    names = list(list_presets())
    assert names[0] == "tiny" and names[-1] == "aaa"
    assert names.index("minimind2-small") < names.index("minimind2")


def test_the_rules_never_look_at_the_machine(monkeypatch, tmp_path):
    """A config.toml written on a GPU server parses anywhere (export, runs, resume read it);
    what this machine lacks is the start's check, every problem at once."""
    monkeypatch.setitem(sys.modules, "wandb", None)  # not installed, whatever this machine has
    gone = str(tmp_path / "gone.jsonl")
    settings = RunSettings.parse({"train": {"device": "cuda:7", "report_to": ["wandb"],
                                            "data_path": gone, "tokenizer_path": gone}})
    assert settings.train.device == "cuda:7"
    found = [(p.loc, p.text) for p in environment_problems(settings)]
    assert found[:3] == [("train.data_path", f"{gone}: no such file or folder"),
                         ("train.tokenizer_path", f"{gone}: no such file or folder"),
                         ("train.report_to",
                          'wandb is not installed; pip install "minimind-tui[wandb]"')]
    if torch.cuda.device_count() <= 7:
        assert found[3][0] == "train.device"


def test_values_read_back_the_same_from_the_form():
    """Spaces around a text, blank or multi-line prompts, inf and nan: one canonical value."""
    settings = RunSettings.parse({"train": {"out_dir": " runs/a ",
                                            "sample_prompts": [" ROMEO: ", "", "a\nb"]}})
    assert settings.train.out_dir == "runs/a"
    assert settings.train.sample_prompts == ["ROMEO:", "a", "b"]
    with pytest.raises(SettingsError, match="model.rope_theta: must be a finite number"):
        RunSettings.parse({"model": {"rope_theta": float("inf")}})


def test_an_empty_out_dir_is_refused_not_the_current_folder():
    with pytest.raises(SettingsError, match=r"train.out_dir: is empty: give a folder \(\. for"):
        RunSettings.parse({"train": {"out_dir": " "}})
    assert RunSettings.parse({"train": {"out_dir": "."}}).train.out_dir == "."


def test_true_or_false_is_no_number():
    """pydantic's lax mode read a preset's `learning_rate = true` as 1.0, and trained at it."""
    found = problems({"train": {"learning_rate": True, "max_steps": False, "packing": 1},
                      "model": {"hidden_size": True, "rope_theta": False, "qk_norm": True}})
    assert found == {
        "train.learning_rate": "must be a number", "train.max_steps": "must be a whole number",
        "model.hidden_size": "must be a whole number", "model.rope_theta": "must be a number"}


def test_a_stage_given_over_a_preset_brings_its_defaults(tmp_path):
    """`--preset out/tiny/config.toml --stage sft` trained an sft model into pretrain_128.pth
    (the record holds save_weight = "pretrain") and read the text corpus; the form moved
    both when its stage changed. What the flags set themselves stays."""
    record = load_settings("tiny").save_toml(tmp_path / "config.toml")
    for preset in ("tiny", str(record)):
        sft = load_settings(preset, {"train": {"stage": "sft", "packing": False}}).train
        assert (sft.save_weight, sft.data_path, sft.val_data_path) == (
            "full_sft", "builtin:shakespeare-chat", "builtin:shakespeare-chat-val"), preset
    chosen = load_settings(str(record), {"train": {"stage": "sft", "packing": False,
                                                   "save_weight": "pretrain"}}).train
    assert (chosen.save_weight, chosen.data_path) == ("pretrain", "builtin:shakespeare-chat")
    back = load_settings("tiny-sft", {"train": {"stage": "pretrain"}}).train
    assert (back.save_weight, back.data_path) == ("pretrain", "builtin:shakespeare")
    # What the new stage cannot take goes back to its default, unless given with it: tiny's
    # packing (refused, "packing is for pretraining", with no word of what to do), a lora
    # run's adapter name and rank ("only applies when stage is lora").
    for preset in ("tiny", str(record)):
        assert load_settings(preset, {"train": {"stage": "sft"}}).train.packing is False
    with pytest.raises(SettingsError, match="train.packing: is for pretraining"):
        load_settings("tiny", {"train": {"stage": "sft", "packing": "1"}})
    lora = load_settings("tiny", {"train": {"stage": "lora", "from_weight": "w.pth",
                                            "lora_name": "mine", "lora_rank": 4}})
    lora_record = lora.save_toml(tmp_path / "lora.toml")
    sft = load_settings(str(lora_record), {"train": {"stage": "sft"}}).train
    assert (sft.lora_name, sft.lora_rank, sft.save_weight) == ("lora", 8, "full_sft")
    with pytest.raises(SettingsError, match="train.lora_rank: only applies when stage is lora"):
        load_settings(str(lora_record), {"train": {"stage": "sft", "lora_rank": "4"}})


def test_a_switch_moved_over_a_preset_takes_back_what_only_its_old_value_used(tmp_path):
    """`--preset <a wsd run>/config.toml --from_resume 1 --lr_schedule cosine` was refused,
    "decay_fraction only applies when lr_schedule is wsd": the record's own decay_fraction,
    which no flag had set. A value given with the switch is still refused."""
    record = load_settings("tiny", {
        "train": {"lr_schedule": "wsd", "decay_fraction": 0.3, "optimizer": "muon",
                  "muon_lr": 0.02},
        "model": {"use_moe": True, "n_routed_experts": 8, "aux_loss_alpha": 0.05}}
    ).save_toml(tmp_path / "config.toml")
    moved = load_settings(str(record), {"train": {"lr_schedule": "cosine", "optimizer": "adamw"},
                                        "model": {"use_moe": "0"}})
    defaults = load_settings("tiny")
    assert (moved.train.decay_fraction, moved.train.muon_lr) == (
        defaults.train.decay_fraction, defaults.train.muon_lr)
    assert (moved.model.n_routed_experts, moved.model.aux_loss_alpha) == (
        defaults.model.n_routed_experts, defaults.model.aux_loss_alpha)
    kept = load_settings(str(record), {"train": {"lr_schedule": "wsd"}}).train  # not moved
    assert (kept.decay_fraction, kept.muon_lr) == (0.3, 0.02)
    with pytest.raises(SettingsError, match="train.decay_fraction: only applies when "
                                            "lr_schedule is wsd"):
        load_settings(str(record), {"train": {"lr_schedule": "cosine", "decay_fraction": "0.3"}})


def test_a_value_given_where_it_does_nothing_is_refused_by_name():
    """`--sample_tokens 9` without prompts, `--eval_batches 3` without validation data,
    `--allow_data_change 1` without `--from_resume 1`, `--master_port` on one machine: each ran
    as if not given, and was recorded. A preset's own value there is no mistake of the user's
    (tiny's eval_batches under `--val_data_path ""`), nor a flag repeating it."""
    with pytest.raises(SettingsError) as refused:
        load_settings("tiny", {"train": {
            "sample_prompts": [], "sample_tokens": "9", "sample_interval": "1",
            "val_data_path": "", "eval_interval": "0", "eval_batches": "3",
            "allow_data_change": "1", "master_port": "1234", "master_addr": "10.0.0.1",
            "node_rank": "0"}})
    assert {(p.loc, p.message) for p in refused.value.problems} == {
        ("train.sample_tokens", "only applies when there are sample_prompts"),
        ("train.sample_interval", "only applies when there are sample_prompts"),
        ("train.eval_batches", "only applies when val_data_path is set"),
        ("train.allow_data_change", "only applies when from_resume is on"),
        ("train.master_port", "only applies when nnodes is more than 1"),
        ("train.master_addr", "only applies when nnodes is more than 1")}  # node_rank 0: none
    quiet = load_settings("tiny", {"train": {"val_data_path": "", "eval_interval": "0",
                                             "eval_batches": "8"}}).train  # tiny's own
    assert quiet.eval_batches == 8
    given = load_settings("tiny", {"train": {"nnodes": "2", "master_port": "1234",
                                             "from_resume": "1", "allow_data_change": "1"}})
    assert (given.train.master_port, given.train.allow_data_change) == (1234, True)


def test_a_presets_own_bad_value_names_the_file(tmp_path):
    """`--preset wtype.toml` with `batch_size = "four"` said `train.batch_size: must be a whole
    number`, naming neither the file nor a line, beside flags that might have said it."""
    preset = tmp_path / "wtype.toml"
    preset.write_text('[model]\nhidden_size = 64\n[train]\nbatch_size = "four"\n'
                      'learning_rate = 3\n')
    for load in (load_settings, load_start_settings):
        with pytest.raises(SettingsError) as refused:
            load(str(preset), {"train": {"max_steps": "x"}})
        assert sorted(map(str, refused.value.problems))[:3] == [
            f"train.batch_size: must be a whole number (in {preset})",
            f"train.learning_rate: must be ≤ 1.0 (in {preset})",
            "train.max_steps: must be a whole number"]  # the flag's own: no file
    assert load_settings(str(preset), {"train": {"batch_size": "4", "learning_rate": "1e-3"}})


def test_a_preset_holds_no_answer_for_one_launch(tmp_path):
    """A hand-written preset with `overwrite = true` replaced the run in out_dir at every
    launch, unasked; a saved preset and a run's config.toml leave these out."""
    preset = tmp_path / "mine.toml"
    preset.write_text("[model]\n[train]\noverwrite = true\nfrom_resume = false\n")
    with pytest.raises(SettingsError, match=r"train.overwrite: in .*mine.toml: answers for one "
                                            r"launch, so no preset holds it: give --overwrite 1"):
        load_settings(str(preset))
    preset.write_text("[model]\n[train]\nfrom_resume = false\noverwrite = 0\n")  # a no is none
    assert load_settings(str(preset)).train.from_resume is False
    launch = tmp_path / "launch.toml"  # what a launcher hands its child, for that launch
    load_settings("tiny", {"train": {"overwrite": "1"}}).save_toml(launch, for_one_launch=True)
    assert load_settings(str(launch)).train.overwrite is True


def test_a_bad_stage_hides_what_the_data_would_be_for_another(tmp_path):
    """With the default stage standing in, `--stage LoRA` also said the chat data was no
    pretraining data, and to use builtin:shakespeare."""
    with pytest.raises(SettingsError) as refused:
        load_start_settings("tiny-sft", {"train": {"stage": "LoRA", "from_weight": ""}})
    assert [p.loc for p in refused.value.problems] == ["train.stage"]


def test_a_preset_path_that_is_a_link_to_nothing_is_named_so(tmp_path, monkeypatch, capsys):
    """A dangling link, or links in a loop, given as --preset: it said "unknown preset 'x';
    choose one of tiny, ..." (or "cannot read (Too many levels ...)"); `watch` read a loop as
    a run "[unknown] at step 0" and exited 1."""
    from minimind_tui.cli.watch import main as watch_main

    monkeypatch.chdir(tmp_path)
    Path("dangling").symlink_to("nowhere.toml")
    Path("loop").symlink_to("loop")
    for name in ("dangling", "loop"):
        with pytest.raises(SettingsError, match=f"^{name}: a link to nothing "
                                                r"\(its target is missing, or the links loop\)$"):
            load_settings(name)
    assert watch_main(["--plain", "loop"]) == 2
    assert capsys.readouterr().err == ("minimind-tui watch: error: loop: a link to nothing (its "
                                       "target is missing, or the links loop), not a folder\n")


def test_a_path_in_another_encoding_is_named_with_its_byte():
    """A file name in Latin-1 reaches Python with its byte as a surrogate: pydantic's own
    "Input should be a valid string, unable to parse raw data as a unicode string" named
    neither the file nor the cause."""
    with pytest.raises(SettingsError) as info:
        load_settings("tiny", {"train": {"data_path": "数据/caf\udce9.jsonl"}})
    assert str(info.value.problems[0]) == (
        "train.data_path: 数据/caf\\xe9.jsonl: not UTF-8 text (a name in another encoding?): "
        "rename it, or name it in UTF-8")


def test_a_preset_says_every_problem_it_holds_at_once(tmp_path):
    """The README promises one line per problem, all at once: an unknown table hid the
    unknown key, which hid the wrong type; each fix met the next. A key outside the tables was
    called a table."""
    preset = tmp_path / "p.toml"
    preset.write_text('hidden_size = 64\n[model]\nbogus_key = 1\n[train]\nmax_steps = true\n'
                      "[extra]\na = 1\n")
    with pytest.raises(SettingsError) as info:
        load_settings(str(preset))
    assert [str(p) for p in info.value.problems] == [
        "extra: unknown table in p.toml; expected [model] and [train]",
        "hidden_size: a setting outside the tables in p.toml; settings go in [model] and [train]",
        f"model.bogus_key: unknown setting in {preset}",
        "train.max_steps: must be a whole number"]


def test_a_presets_folder_that_is_no_folder_is_said(monkeypatch, capsys):
    """MINIMIND_TUI_PRESETS=/dev/null: the user's presets were left out without a word, and a
    save said "[Errno 17] File exists: '/dev/null'"."""
    from minimind_tui.cli.main import presets_command

    monkeypatch.setenv("MINIMIND_TUI_PRESETS", os.devnull)
    why = ("/dev/null is a pipe or a device, not a folder: no presets of yours are read or saved "
           "(MINIMIND_TUI_PRESETS names their folder)")
    with pytest.raises(SettingsError, match=re.escape(f"cannot save the preset: {why}")):
        save_user_preset(load_settings("tiny"), "mine")
    assert presets_command([]) == 0
    out, err = capsys.readouterr()
    assert "tiny" in out and err == f"minimind-tui presets: warning: {why}\n"
