"""Export: Hugging Face folders that standard classes load with our exact function, our own
modeling code where none fits, upstream .pth files, source resolution and clear refusals."""

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path, PurePosixPath

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from minimind import MiniMindConfig, MiniMindForCausalLM, load_model
from minimind.checkpoint import capture_rng, save_checkpoint
from minimind.checkpoint_reader import Checkpoint, read_checkpoint
from minimind.export import PROBE_SHAPE, export_hf, export_upstream
from minimind.export_destination import ExportError, check_destination
from minimind.generate import SamplingParams, encode_prompt, generate_tokens
from minimind.hf_architectures import standard_architecture
from minimind.settings import RunSettings
from minimind.tokenizer import BUNDLED_TOKENIZER_DIR, load_tokenizer
from minimind.torchfile import CheckpointError
from minimind_tui.cli.export import main as export_main

REPO = Path(__file__).resolve().parents[1]
SMALL = {"hidden_size": 64, "num_hidden_layers": 2}
STANDARD = {
    "minimind2": ({"family": "minimind2"}, "LlamaForCausalLM"),
    "minimind3": ({"family": "minimind3"}, "Qwen3ForCausalLM"),
    "minimind3-moe": ({"family": "minimind3", "use_moe": True}, "Qwen3MoeForCausalLM"),
    "minimind2-moe": ({"family": "minimind2", "use_moe": True}, "Ernie4_5_MoeForCausalLM"),
    # Two shared experts become one of twice the width; top-2 of 4 routed experts.
    "minimind2-moe-2shared": ({"family": "minimind2", "use_moe": True, "n_shared_experts": 2},
                              "Ernie4_5_MoeForCausalLM"),
    "minimind2-moe-unshared": ({"family": "minimind2", "use_moe": True, "n_shared_experts": 0},
                               "Ernie4_5_MoeForCausalLM"),
    "minimind3-untied": ({"family": "minimind3", "tie_word_embeddings": False},
                         "Qwen3ForCausalLM"),
}
# No standard class: shared experts next to Qwen3's q/k norms.
CUSTOM_MOE = {"family": "minimind3", "use_moe": True, "n_shared_experts": 1}
PROMPTS = ["To be, or not to be", "Now is the winter"]


def build(seed=0, **kwargs) -> MiniMindForCausalLM:
    """Random weights with norms away from 1 (so a misplaced norm shows) and a router with
    decisive scores (so both sides pick the same experts for a reason, not by a near tie)."""
    torch.manual_seed(seed)
    model = MiniMindForCausalLM(MiniMindConfig(**SMALL, **kwargs)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.uniform_(0.5, 1.5)
            elif name.endswith("mlp.gate.weight"):
                param.normal_(0.0, 0.5)
    return model


def source(model, tokenizer_dir=BUNDLED_TOKENIZER_DIR) -> Checkpoint:
    return Checkpoint(model, Path("memory"), "test", tokenizer_dir)


def padded_batch():
    tokenizer = load_tokenizer(None)
    tokenizer.padding_side = "left"
    return tokenizer(PROMPTS, return_tensors="pt", padding=True)


def assert_same_function(ours, theirs):
    ids = torch.randint(3, 6400, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (ours(ids).logits - theirs(ids).logits).abs().max().item() <= 1e-5
    batch = padded_batch()
    kwargs = dict(max_new_tokens=10, do_sample=False, pad_token_id=0)
    assert torch.equal(ours.generate(**batch, **kwargs), theirs.generate(**batch, **kwargs))


@pytest.mark.parametrize("name", STANDARD)
def test_standard_class_computes_our_function(tmp_path, name):
    kwargs, architecture = STANDARD[name]
    model = build(**kwargs)
    result = export_hf(source(model), tmp_path / "hf")
    assert result.architecture == architecture and not result.remote_code
    assert result.max_logit_diff <= 1e-5
    assert not list(result.path.glob("*.py"))
    assert "auto_map" not in json.loads((result.path / "config.json").read_text())

    loaded = AutoModelForCausalLM.from_pretrained(result.path, dtype=torch.float32).eval()
    assert type(loaded).__name__ == architecture
    assert_same_function(model, loaded)


def test_every_preset_shape_has_a_standard_class():
    for preset in ("minimind2-small", "minimind2", "minimind2-moe", "minimind3", "minimind3-moe"):
        settings = RunSettings.from_toml(REPO / "presets" / f"{preset}.toml")
        assert standard_architecture(MiniMindConfig(**settings.model.to_config_kwargs())), preset
    assert standard_architecture(MiniMindConfig(**SMALL, **CUSTOM_MOE)) is None
    moe2 = MiniMindConfig(**SMALL, family="minimind2", use_moe=True, norm_topk_prob=False)
    assert standard_architecture(moe2) is None


def test_bfloat16_export_is_verified_against_rounded_weights(tmp_path):
    model = build(family="minimind3")
    result = export_hf(source(model), tmp_path / "hf", dtype=torch.bfloat16)
    assert result.max_logit_diff <= 1e-5
    assert json.loads((result.path / "config.json").read_text())["dtype"] == "bfloat16"
    loaded = AutoModelForCausalLM.from_pretrained(result.path)
    assert loaded.dtype == torch.bfloat16
    # What the rounding costs is measured against the float32 model, not the rounded copy: the
    # folder, loaded on its own, is that far from it on the check's probe.
    probe = torch.randint(0, model.config.vocab_size, PROBE_SHAPE,
                          generator=torch.Generator().manual_seed(0))
    loaded = AutoModelForCausalLM.from_pretrained(result.path, dtype=torch.float32)
    with torch.no_grad():
        apart = (loaded(probe).logits - model(probe).logits).abs().max().item()
    assert result.rounding_logit_diff > 1e-3
    assert abs(result.rounding_logit_diff - apart) <= 1e-5
    assert export_hf(source(model), tmp_path / "f32").rounding_logit_diff is None


REMOTE_CHECK = """
import sys
sys.modules["minimind"] = sys.modules["minimind_tui"] = None  # our package must not be needed
import torch
from transformers import AutoModelForCausalLM
expected = torch.load(sys.argv[1], weights_only=True)
for folder, (ids, logits, prompt, generated) in expected.items():
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True,
                                                 dtype=torch.float32)
    assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
    with torch.no_grad():
        diff = (model(ids).logits - logits).abs().max().item()
    assert diff <= 1e-5, (folder, diff)
    out = model.generate(prompt, max_new_tokens=10, do_sample=False)
    assert torch.equal(out, generated), folder
print("ok", len(expected))
"""


def test_remote_code_folder_loads_without_our_package(tmp_path):
    models = {"custom": build(**CUSTOM_MOE),
              "forced": build(family="minimind2", use_moe=True)}
    expected = {}
    for name, model in models.items():
        result = export_hf(source(model), tmp_path / name, remote_code=name == "forced",
                           verify=False)  # in-process loading would touch ~/.cache
        assert result.remote_code
        assert {"configuration_minimind.py", "modeling_minimind.py"} <= {
            p.name for p in result.path.iterdir()}
        ids = torch.randint(3, 6400, (2, 20), generator=torch.Generator().manual_seed(2))
        prompt = padded_batch().input_ids[:1]
        with torch.no_grad():
            generated = model.generate(prompt, max_new_tokens=10, do_sample=False)
            expected[str(result.path)] = (ids, model(ids).logits, prompt, generated)
    torch.save(expected, tmp_path / "expected.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, "-c", REMOTE_CHECK, str(tmp_path / "expected.pt")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ok 2" in done.stdout


def test_tokenizer_and_generation_config_round_trip(tmp_path):
    tokenizer_dir = tmp_path / "tok"
    tokenizer_dir.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tokenizer_dir / name).write_bytes((BUNDLED_TOKENIZER_DIR / name).read_bytes())
    result = export_hf(source(build(family="minimind2"), tokenizer_dir), tmp_path / "hf",
                       verify=False)
    ours, theirs = load_tokenizer(str(tokenizer_dir)), AutoTokenizer.from_pretrained(result.path)
    texts = ["Hello, world!", "  spaces\tand\nnewlines ", "<|im_start|>user\nhi<|im_end|>",
             "中文 😀 naïve", ""]
    for text in texts:
        ids = ours(text).input_ids
        assert theirs(text, add_special_tokens=False).input_ids == ids
        assert theirs.decode(ids) == ours.decode(ids) == text
        if text and not text.startswith("<|im_start|>"):  # a plain call starts with bos
            assert theirs(text).input_ids == encode_prompt(ours, text) == [1, *ids]
    assert (theirs.bos_token_id, theirs.eos_token_id, theirs.pad_token_id) == (1, 2, 0)
    assert theirs.chat_template == ours.chat_template
    generation = GenerationConfig.from_pretrained(result.path)
    assert (generation.bos_token_id, generation.eos_token_id, generation.pad_token_id) == (1, 2, 0)


def test_exported_folder_generates_what_generate_does(tmp_path):
    """A plain AutoTokenizer + AutoModelForCausalLM on the export continue a prompt exactly as
    `minimind-tui generate` does (bos first), and every file is readable like the others."""
    model = build(family="minimind2")
    out = export_hf(source(model), tmp_path / "hf").path
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert set(modes.values()) == {0o666 & ~_umask()}, modes

    tokenizer = AutoTokenizer.from_pretrained(out)
    hf_model = AutoModelForCausalLM.from_pretrained(out)
    ours = load_tokenizer(None)
    for prompt in PROMPTS:
        batch = tokenizer(prompt, return_tensors="pt")
        theirs = hf_model.generate(**batch, max_new_tokens=12, do_sample=False)
        greedy = SamplingParams(max_new_tokens=12, temperature=0.0, top_p=1.0)
        expected = list(generate_tokens(model, encode_prompt(ours, prompt), greedy,
                                        eos_token_id=ours.eos_token_id))
        assert theirs[0, batch.input_ids.shape[1]:].tolist() == expected


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_run(folder: Path, tokenizer_path="", **model) -> tuple[RunSettings, MiniMindForCausalLM]:
    train = {"out_dir": str(folder), "tokenizer_path": tokenizer_path}
    settings = RunSettings.parse({"model": {**SMALL, **model}, "train": train})
    torch.manual_seed(0)
    trained = MiniMindForCausalLM(MiniMindConfig(**settings.model.to_config_kwargs()))
    folder.mkdir(parents=True)
    settings.save_toml(folder / "config.toml")
    export_upstream(source(trained), folder / settings.weights_name())
    return settings, trained


def test_run_folder_settings_reach_the_export(tmp_path):
    settings, _ = make_run(tmp_path / "run", family="minimind2", rope_theta=5e4, rms_norm_eps=1e-6)
    src = read_checkpoint(tmp_path / "run")
    assert src.weights_path == tmp_path / "run" / "pretrain_64.pth"
    assert (src.model.config.rope_theta, src.model.config.rms_norm_eps) == (5e4, 1e-6)
    result = export_hf(src, tmp_path / "hf")
    config = json.loads((result.path / "config.json").read_text())
    assert config["rope_parameters"]["rope_theta"] == config["rope_theta"] == 5e4
    assert config["rms_norm_eps"] == 1e-6

    # The weights file given alone still uses the run's config.toml beside it.
    alone = read_checkpoint(tmp_path / "run" / "pretrain_64.pth")
    assert alone.model.config.rope_theta == 5e4 and "config.toml" in alone.config_origin
    # Without it, a bare upstream file gets the family's defaults.
    bare = tmp_path / "pretrain_64.pth"
    bare.write_bytes(src.weights_path.read_bytes())
    with pytest.raises(CheckpointError, match="does not record its head split.*--num_attention_"
                                              "heads of minimind-tui generate or export"):
        read_checkpoint(bare)  # its shapes fit 4/1, 8/2, 16/4 and 32/8
    assert read_checkpoint(bare, num_attention_heads=8).model.config.rope_theta == 1e6


def test_resume_file_is_read_safely_with_its_settings(tmp_path):
    settings, trained = make_run(tmp_path / "run", family="minimind3", use_moe=True, rope_theta=2e4)
    weights = tmp_path / "run" / settings.weights_name()
    optimizer = torch.optim.AdamW(trained.parameters())
    trained(torch.tensor([[1, 5, 9]]), labels=torch.tensor([[1, 5, 9]])).loss.backward()
    optimizer.step()
    weights.unlink()  # save_checkpoint writes both files of the pair
    _, resume = save_checkpoint(weights, model=trained, optimizer=optimizer, scaler=None,
                                progress={"step": 1}, rng=[capture_rng(torch.device("cpu"))],
                                settings=settings.model_dump(mode="json"), world_size=1, data={})
    (resume.parent / "config.toml").unlink()  # the settings must come from inside the file
    src = read_checkpoint(resume)
    assert src.model.config.rope_theta == 2e4 and "settings saved in" in src.config_origin
    for key, tensor in trained.state_dict().items():  # full precision, not the fp16 .pth
        assert torch.equal(src.model.state_dict()[key], tensor), key

    weights.unlink()
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"model": trained.state_dict(), "extra": PurePosixPath("x")}, unsafe)
    with pytest.raises(CheckpointError, match="refused: it asks to import pathlib.PurePosixPath"):
        read_checkpoint(unsafe)


def test_saved_pretrained_folder_is_a_source(tmp_path):
    model = build(family="minimind3")
    model.save_pretrained(tmp_path / "saved")
    src = read_checkpoint(tmp_path / "saved")
    for key, tensor in model.state_dict().items():
        assert torch.equal(src.model.state_dict()[key], tensor), key


def test_upstream_format_round_trip(tmp_path):
    model = build(family="minimind2", use_moe=True)
    path = export_upstream(source(model), tmp_path / "up")
    assert path == tmp_path / "up" / "pretrain_64_moe.pth"
    saved = torch.load(path, weights_only=True)
    assert saved.keys() == model.state_dict().keys()  # both tied keys, as upstream saves
    assert all(v.dtype == torch.float16 for v in saved.values())
    reloaded = load_model(path, num_attention_heads=8).eval()
    rounded = MiniMindForCausalLM(model.config).eval()
    rounded.load_state_dict({k: v.float() for k, v in saved.items()})
    ids = torch.randint(3, 6400, (2, 12))
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, rounded(ids).logits)
    with pytest.raises(ExportError, match="already exists"):
        export_upstream(source(model), tmp_path / "up")
    assert export_upstream(source(model), tmp_path / "named.pth") == tmp_path / "named.pth"
    # A shape neither family has: written, and said to be upstream's, it loaded nowhere.
    mixed = build(family="minimind3", use_moe=True, n_shared_experts=1)
    with pytest.raises(ExportError, match="no upstream model has both q/k norms"):
        export_upstream(source(mixed), tmp_path / "mixed")
    assert not (tmp_path / "mixed").exists()
    # Untied: MiniMind-3 has a flag for it, but upstream's scripts build tied models, which
    # load the two matrices into one without an error.
    untied = build(family="minimind3", tie_word_embeddings=False)
    with pytest.raises(ExportError, match=r"upstream's scripts build a tied model .* without an "
                                          r"error; export it with --format hf instead"):
        export_upstream(source(untied), tmp_path / "untied")
    assert not (tmp_path / "untied").exists()


def _random_bytes(path):
    path.write_bytes(os.urandom(4096))


def _text(path):
    path.write_text("hello, this is not a checkpoint\n")


def _foreign_state_dict(path):
    torch.save({"encoder.weight": torch.zeros(3, 3)}, path)


@pytest.mark.parametrize("write, name, reason", [
    (_random_bytes, "random.pth", "not a readable PyTorch checkpoint"),
    (_random_bytes, "random.safetensors", "not a readable safetensors file"),
    (_text, "notes.txt", "not a readable PyTorch checkpoint"),
    (_foreign_state_dict, "other.pth", "not a MiniMind checkpoint"),
    (lambda path: path.mkdir(), "empty", "neither a run folder"),
    (None, "missing.pth", "no such file"),
])  # fmt: skip
def test_refuses_what_is_not_a_minimind_checkpoint(tmp_path, write, name, reason):
    path = tmp_path / name
    if write:
        write(path)
    with pytest.raises(CheckpointError, match=reason) as error:
        read_checkpoint(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_refuses_run_without_weights_and_foreign_hf_folder(tmp_path):
    settings, _ = make_run(tmp_path / "run", family="minimind2")
    (tmp_path / "run" / settings.weights_name()).unlink()
    with pytest.raises(CheckpointError, match="has not saved a checkpoint"):
        read_checkpoint(tmp_path / "run")
    # Weights of another shape than config.toml describes: one line naming both.
    settings, _ = make_run(tmp_path / "other", family="minimind2")
    toml = tmp_path / "other" / "config.toml"
    toml.write_text(toml.read_text().replace("[model]\n", "[model]\nnum_key_value_heads = 4\n"))
    with pytest.raises(CheckpointError, match="does not fit the model.*file:.*model:") as error:
        read_checkpoint(tmp_path / "other")
    assert "\n" not in str(error.value)
    exported = export_hf(source(build(family="minimind2")), tmp_path / "hf", verify=False).path
    # A config.toml that is no TOML: named once (it was "x/config.toml: x/config.toml: ...").
    settings, _ = make_run(tmp_path / "garbled", family="minimind2")
    (tmp_path / "garbled" / "config.toml").write_text("garbage [[[\n")
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(tmp_path / "garbled")
    assert str(error.value).startswith(f"{tmp_path / 'garbled' / 'config.toml'}: not valid TOML")
    assert str(error.value).count("config.toml") == 1
    # The reader's own export: said so, and what to do (generate reads it, through transformers).
    with pytest.raises(CheckpointError, match=r"'llama' model, not a MiniMind one: an export "
                                              r"of this tool, in llama's names; use the run it "
                                              r"came from \(its folder or its weights file\)$"):
        read_checkpoint(exported)
    config = json.loads((exported / "config.json").read_text())
    del config["exported_by"]  # another tool's llama
    (exported / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="'llama' model, not a MiniMind one$"):
        read_checkpoint(exported)


def test_a_file_above_the_destination_is_named_as_the_cause(tmp_path):
    """`export RUN notes.log/hf` said "cannot write the export there (File exists)"."""
    (tmp_path / "notes.log").write_text("the user's")
    for out, upstream in ((tmp_path / "notes.log" / "hf", False),
                          (tmp_path / "notes.log" / "x" / "pretrain_128.pth", True)):
        with pytest.raises(ExportError, match=f"{out}: cannot write there: "
                                              f"{tmp_path / 'notes.log'} is a file, not a folder"):
            check_destination(out, upstream=upstream)
    with pytest.raises(ExportError, match="is a file; name the folder for upstream's weights"):
        check_destination(tmp_path / "notes.log", upstream=True)
    # Links in a loop: the export's own checks met a traceback (RuntimeError, exit 1).
    (tmp_path / "loop").symlink_to("loop")
    for out in (tmp_path / "loop", tmp_path / "loop" / "hf"):
        with pytest.raises(ExportError, match=r"is a link to nothing \(its target is missing, "
                                              r"or the links loop\)"):
            check_destination(out)
    assert (tmp_path / "notes.log").read_text() == "the user's"


def test_destination_rules(tmp_path):
    src = source(build(family="minimind2"))
    out = export_hf(src, tmp_path / "hf", verify=False).path
    with pytest.raises(ExportError, match="not empty"):
        export_hf(src, out, verify=False)
    # --overwrite replaces an earlier export (its remote code included), never the user's
    # files beside it: those are named, and nothing is deleted.
    export_hf(src, out, verify=False, overwrite=True, remote_code=True)
    assert (out / "modeling_minimind.py").is_file()
    (out / "notes.txt").write_text("the user's")
    (out / "eval").mkdir()
    # Both named at once, before the model is read (it named eval/, exported, then notes.txt).
    for attempt in (lambda: check_destination(out, overwrite=True),
                    lambda: export_hf(src, out, verify=False, overwrite=True)):
        with pytest.raises(ExportError, match=r"holds files an export does not write \(eval/, "
                                              r"notes.txt\)"):
            attempt()
        assert (out / "notes.txt").read_text() == "the user's"
    (out / "eval").rmdir()
    (out / "notes.txt").unlink()
    export_hf(src, out, verify=False, overwrite=True)
    assert not (out / "modeling_minimind.py").exists() and (out / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # no staging folder left behind
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="refusing to replace"):
        export_hf(src, tmp_path / "mine", verify=False, overwrite=True)


def test_the_staging_folder_beside_the_destination_is_never_the_users(tmp_path):
    """The export is built in <out>.partial, which it emptied first: a folder of the user's of
    that name went, notes and all; a file there was reported as the destination's; and two
    exports to one destination deleted each other's (a traceback)."""
    from minimind.folder_lock import lock_folder

    src = source(build(family="minimind2"))
    (tmp_path / "mine.partial").mkdir()
    (tmp_path / "mine.partial" / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match=r"mine.partial: holds notes.txt, which no export "
                                          r"wrote; .* beside mine: move it away"):
        export_hf(src, tmp_path / "mine", verify=False)
    assert (tmp_path / "mine.partial" / "notes.txt").read_text() == "keep me"
    (tmp_path / "file.partial").write_text("keep me")
    with pytest.raises(ExportError, match=r"file.partial: in the way"):
        export_hf(src, tmp_path / "file", verify=False)
    assert (tmp_path / "file.partial").read_text() == "keep me"
    # An interrupted export's leftovers (a temporary file included) are cleared.
    leftover = tmp_path / "hf.partial"
    leftover.mkdir()
    (leftover / "config.json").write_text("{")
    (leftover / ".model.safetensors.x1.tmp").write_text("")
    export_hf(src, tmp_path / "hf", verify=False)
    assert not leftover.exists() and sorted(p.name for p in (tmp_path / "hf").iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
        "tokenizer_config.json"]
    # Another export building the same destination holds the staging folder.
    held = lock_folder(tmp_path / "busy.partial")
    try:
        with pytest.raises(ExportError, match=r"busy: another export to it is running"):
            export_hf(src, tmp_path / "busy", verify=False)
    finally:
        os.close(held)


def test_an_export_interrupted_while_it_replaced_another_loses_neither(tmp_path, monkeypatch):
    """Ctrl+C between the two renames of --overwrite deleted the new export and left the
    earlier one in a folder of a random name beside it (<out>.old-*/<out>), so <out> was gone;
    a kill there, or while the earlier one was removed, left that folder for good."""
    src, other = source(build(family="minimind2")), source(build(seed=1, family="minimind2"))
    out = export_hf(src, tmp_path / "hf", verify=False).path
    before = (out / "model.safetensors").read_bytes()
    rename = os.rename

    def interrupted(a, b):  # Ctrl+C once the earlier export has moved aside
        if Path(a).name == "hf.partial":
            raise KeyboardInterrupt
        rename(a, b)

    monkeypatch.setattr(os, "rename", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_hf(other, out, verify=False, overwrite=True)
    monkeypatch.undo()
    assert (out / "model.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]
    # Killed between the two: the next export puts the earlier one back, and asks again.
    replaced = tmp_path / "hf.replaced"
    os.rename(out, replaced)
    with pytest.raises(ExportError, match=r"hf: an export killed while it replaced this folder "
                                          r"had left the earlier export in hf.replaced; it is "
                                          r"back in place \(pass --overwrite to replace it\)"):
        export_hf(other, out, verify=False)
    assert (out / "model.safetensors").read_bytes() == before and not replaced.exists()
    # Killed while the earlier one was being removed: the next export removes the rest.
    shutil.copytree(out, replaced)
    (replaced / "model.safetensors").unlink()
    export_hf(other, out, verify=False, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]
    assert (out / "model.safetensors").read_bytes() != before
    # A folder of the user's of that name is theirs.
    replaced.mkdir()
    (replaced / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match=r"hf.replaced: in the way"):
        export_hf(src, out, verify=False, overwrite=True)
    assert (replaced / "notes.txt").read_text() == "keep me"


def test_overwrite_replaces_only_what_this_tool_exported(tmp_path, capsys):
    """A MiniMind folder of `save_pretrained` has an export's file names: `export SP SP
    --overwrite` replaced the model it read with a Llama export, and so did an OUT that was a
    copy of it, or any other model's folder (a downloaded one)."""
    model = build(family="minimind2")
    model.save_pretrained(tmp_path / "sp")
    shutil.copytree(tmp_path / "sp", tmp_path / "copy")
    before = {p.name: p.read_bytes() for p in (tmp_path / "sp").iterdir()}
    capsys.readouterr()
    assert export_main([str(tmp_path / "sp"), str(tmp_path / "sp"), "--overwrite"]) == 2
    assert "sp: not an export of minimind-tui" in capsys.readouterr().err
    assert export_main([str(tmp_path / "sp"), str(tmp_path / "copy"), "--overwrite"]) == 2
    assert capsys.readouterr().err == (
        f"minimind-tui export: error: {tmp_path / 'copy'}: not an export of minimind-tui (its "
        'config.json has no "exported_by": "minimind-tui"); refusing to replace it even with '
        "--overwrite: delete it yourself if it is an earlier export\n")
    # Nor is an export of its own (remote code: readable as MiniMind) replaced by itself.
    assert export_main([str(tmp_path / "sp"), str(tmp_path / "rc"), "--remote_code"]) == 0
    assert export_main([str(tmp_path / "rc"), str(tmp_path / "rc"), "--overwrite"]) == 2
    assert "rc: holds the model being exported" in capsys.readouterr().err

    for folder in ("sp", "copy"):
        assert {p.name: p.read_bytes() for p in (tmp_path / folder).iterdir()} == before
    # A folder whose config.json is a FIFO is refused at once (a read would wait forever).
    os.remove(tmp_path / "copy" / "config.json")
    os.mkfifo(tmp_path / "copy" / "config.json")
    with pytest.raises(ExportError, match="not an export of minimind-tui"):
        export_hf(source(model), tmp_path / "copy", verify=False, overwrite=True)
    # One too large to be an export's is refused as that, not as a file without the mark.
    os.remove(tmp_path / "copy" / "config.json")
    marked = json.dumps({"exported_by": "minimind-tui", "pad": " " * (50 << 20)})
    (tmp_path / "copy" / "config.json").write_text(marked)
    with pytest.raises(ExportError, match=r"config.json cannot be read: over 1 MiB"):
        export_hf(source(model), tmp_path / "copy", verify=False, overwrite=True)
    # Its own export is what --overwrite replaces; an upstream file is no folder's name.
    assert export_main([str(tmp_path / "sp"), str(tmp_path / "hf")]) == 0
    assert export_main([str(tmp_path / "sp"), str(tmp_path / "hf"), "--overwrite"]) == 0
    assert export_main([str(tmp_path / "sp"), str(tmp_path / "x.pth")]) == 2
    assert "choose the upstream format (--format upstream) for" in capsys.readouterr().err
    assert not (tmp_path / "x.pth").exists()


@pytest.mark.parametrize("format", ["hf", "upstream"])
def test_a_destination_that_refuses_the_files_is_a_failure_not_a_user_error(
        tmp_path, capsys, monkeypatch, format):
    """A full disk at OUT exited 2, "invalid input", where a full disk under a run is 1; and
    the folders made for the export stayed, empty."""
    import errno

    build(family="minimind2").save_pretrained(tmp_path / "sp")
    capsys.readouterr()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("minimind.export._write_folder", full)
    monkeypatch.setattr(os, "fsync", full)  # where a full disk refuses the upstream file
    out = tmp_path / "out" / "deeper"
    assert export_main([str(tmp_path / "sp"), str(out), "--format", format]) == 1
    monkeypatch.undo()
    target = out / "pretrain_64.pth" if format == "upstream" else out
    assert capsys.readouterr().err == (
        f"minimind-tui export: failed: {target}: cannot write "
        f"{'there' if format == 'upstream' else 'the export there'} (No space left on device)\n")
    assert [p.name for p in tmp_path.iterdir()] == ["sp"]


@pytest.fixture
def trained_run(tiny_settings) -> Path:
    """A run folder as training leaves it: config.toml, run.json, metrics, a checkpoint pair."""
    from minimind.engine import Trainer

    settings = tiny_settings(max_steps=2)
    assert Trainer(settings, []).run().status == "completed"
    return Path(settings.train.out_dir)


def test_no_export_goes_into_a_run_folder(tmp_path, trained_run, capsys):
    """--overwrite replaced the run's own pretrain_128.pth with another model's, under the run's
    config.toml and beside a resume file of other weights: a run is never an export to
    replace, whatever the format or however OUT names it."""
    make_run(tmp_path / "src", family="minimind2")  # hidden 64: its file would be pretrain_64
    before = {p: p.read_bytes() for p in trained_run.rglob("*") if p.is_file()}
    assert trained_run / "pretrain_128.pth" in before
    for out, *flags in ([trained_run, "--format", "upstream", "--overwrite"],
                        [trained_run / "pretrain_128.pth", "--format", "upstream", "--overwrite"],
                        [trained_run / "mine.pth", "--format", "upstream"],
                        [trained_run, "--overwrite"]):
        assert export_main([str(tmp_path / "src"), str(out), *flags]) == 2, out
        err = capsys.readouterr().err
        assert err.startswith(f"minimind-tui export: error: {trained_run}: holds a training "
                              "run, completed at step 2, last update ") and err.count("\n") == 1, err
        assert "an export never goes into a run folder, even with --overwrite" in err
    assert {p: p.read_bytes() for p in trained_run.rglob("*") if p.is_file()} == before

    # A lora run keeps its weights and resume file in lora/: those are the run's too.
    lora = trained_run / "lora"
    lora.mkdir()
    for name in ("lora_x_64.pth", "lora_x_64_resume.pth"):
        (lora / name).write_bytes(b"the run's")
    with pytest.raises(ExportError, match=f"{lora}: holds files of the training run in "):
        export_upstream(source(build(family="minimind2")), lora / "lora_x_64.pth", overwrite=True)
    assert (lora / "lora_x_64.pth").read_bytes() == b"the run's"

    # An earlier export is still what --overwrite replaces.
    up = [str(tmp_path / "src"), str(tmp_path / "up"), "--format", "upstream"]
    assert export_main(up) == 0 and export_main(up) == 2
    assert "already exists (pass --overwrite" in capsys.readouterr().err
    assert export_main([*up, "--overwrite"]) == 0
    # ...and only that: upstream's own model of that name was replaced, and so was a run's
    # weights file copied out of its folder. Neither holds the mark an export writes.
    exported = tmp_path / "up" / "pretrain_64.pth"
    for state in (torch.load(exported, weights_only=True),
                  torch.load(trained_run / "pretrain_128.pth", weights_only=True)):
        torch.save(dict(state), exported)  # as upstream's scripts save a state_dict
        before = exported.read_bytes()
        assert export_main([*up, "--overwrite"]) == 2
        assert capsys.readouterr().err == (
            f"minimind-tui export: error: {exported}: a MiniMind weights file, but not an export "
            "of minimind-tui (its metadata has no exported_by mark: upstream's, a run's, or an "
            "export of an earlier version); refusing to replace it even with --overwrite: "
            "delete it yourself if it is an earlier export\n")
        assert exported.read_bytes() == before
    # The mark is invisible to upstream's load: the file loads strictly into the model.
    exported.unlink()
    assert export_main(up) == 0
    build(family="minimind2").load_state_dict(torch.load(exported, weights_only=True), strict=True)
    # ...and only that: another file a mistyped OUT names is the user's (it was replaced).
    notes, foreign, fifo = tmp_path / "notes.pth", tmp_path / "other.pth", tmp_path / "fifo.pth"
    notes.write_text("my important notes")
    torch.save({"encoder.weight": torch.zeros(2)}, foreign)
    os.mkfifo(fifo)  # read, it hung the export for good
    for path, why in ((notes, "not a PyTorch checkpoint"),
                      (foreign, "no model.embed_tokens.weight"), (fifo, "not a regular file")):
        before = b"" if path == fifo else path.read_bytes()
        assert export_main([*up[:1], str(path), "--format", "upstream", "--overwrite"]) == 2
        assert capsys.readouterr().err == (
            f"minimind-tui export: error: {path}: not a MiniMind weights file ({why}); "
            "refusing to replace it even with --overwrite\n")
        assert (path.is_fifo() if path == fifo else path.read_bytes() == before)


def test_cli_says_what_a_bfloat16_export_was_checked_against(tmp_path, capsys):
    """The folder matches our model rounded to bfloat16 exactly; against the float32 model it
    is further off, and the line says by how much instead of claiming a match."""
    make_run(tmp_path / "run", family="minimind2")
    assert export_main([str(tmp_path / "run"), str(tmp_path / "hf"), "--dtype", "bfloat16"]) == 0
    out = capsys.readouterr().out
    assert "its logits match our model rounded to bfloat16 within " in out
    rounding = re.search(r"the rounding itself moves logits by up to (\S+) against the model as "
                         r"read\)", out)
    assert rounding and float(rounding[1]) > 0, out
    assert "match our model's within" not in out


def test_a_resume_file_exports_the_float32_weights_the_run_trained(tiny_settings, tmp_path):
    """A run folder's weights file is float16, as upstream writes it; "float32: lossless" said
    more than that. Its resume file, given as SRC, exports the float32 weights themselves."""
    from transformers import AutoModelForCausalLM

    from minimind.engine import Trainer

    settings = tiny_settings(max_steps=1)
    assert Trainer(settings).run().status == "completed"
    run = Path(settings.train.out_dir)
    trained = torch.load(run / "pretrain_128_resume.pth", weights_only=True)["model"]
    half = torch.load(run / "pretrain_128.pth", weights_only=True)
    name = "model.embed_tokens.weight"
    assert half[name].dtype == torch.float16 and not torch.equal(half[name].float(), trained[name])
    assert export_main([str(run / "pretrain_128_resume.pth"), str(tmp_path / "hf")]) == 0
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").state_dict()
    assert torch.equal(exported[name], trained[name])


def test_cli_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "junk.pth").write_bytes(b"\x00junk")
    assert export_main([str(tmp_path / "junk.pth"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("minimind-tui export: error:") and err.count("\n") == 1
    assert export_main([str(tmp_path / "junk.pth"), str(tmp_path / "o"), "--format", "upstream",
                        "--dtype", "bfloat16"]) == 2


def test_cli_exports_a_run_folder(tmp_path):
    make_run(tmp_path / "run", family="minimind3")
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_MODULES_CACHE": str(tmp_path / "modules")}
    done = subprocess.run(
        [sys.executable, "-m", "minimind_tui", "export", str(tmp_path / "run"),
         str(tmp_path / "hf")], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "config from " + str(tmp_path / "run" / "config.toml") in done.stdout
    assert "as Qwen3ForCausalLM (loaded back: its logits match our model's within" in done.stdout
    assert (tmp_path / "hf" / "model.safetensors").is_file()


async def test_export_dialog_writes_a_standard_folder(tmp_path):
    from textual.widgets import Button, Input, Static

    from minimind_tui.app import MiniMindApp
    from minimind_tui.screens.export import ExportScreen
    from pilot_waits import wait_until

    make_run(tmp_path / "run", family="minimind2")
    app = MiniMindApp("tiny", {"train": {"out_dir": str(tmp_path / "run")}})
    async with app.run_test(size=(100, 36)) as pilot:
        app.action_export()
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ExportScreen)
        source = screen.query_one("#export-source", Input)
        destination = screen.query_one("#export-destination", Input)
        assert source.value == str(tmp_path / "run")
        assert destination.value == str(tmp_path / "run-hf")
        # The proposed destination follows the source (it kept run-hf for another run's model),
        # until the user types one.
        source.value = str(tmp_path / "other")
        await pilot.pause()
        assert destination.value == str(tmp_path / "other-hf")
        destination.value = str(tmp_path / "hf")
        source.value = str(tmp_path / "run")
        await pilot.pause()
        assert destination.value == str(tmp_path / "hf")
        destination.value = ""  # not the current folder, which pathlib makes of it
        await pilot.click("#export")
        assert str(screen.query_one("#export-result", Static).render()) == \
            "name the folder to export to"
        destination.value = str(tmp_path / "hf")
        screen.query_one("#export", Button).focus()
        await wait_until(pilot, lambda: not screen.query_one("#export").has_class("-active"))
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        # The button has the focus again: Enter exports again, rather than close the dialog.
        assert app.focused is screen.query_one("#export", Button)
        message = str(screen.query_one("#export-result", Static).render())
        assert f"wrote {tmp_path / 'hf'} as LlamaForCausalLM (loaded back: its logits match " \
               "our model's within " in message, message
        # As the command line says it: which files the model was built from.
        assert (f"\nfrom {tmp_path / 'run' / 'pretrain_64.pth'}; config from "
                f"{tmp_path / 'run' / 'config.toml'}") in message, message
        await pilot.click("#export")  # again: the folder exists now, refused in words
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert "folder is not empty" in str(screen.query_one("#export-result", Static).render())
        # The refusal's --overwrite is the dialog's own switch (it named a flag it lacked).
        screen.query_one("#export-overwrite").value = True
        # A button ignores clicks for 0.2 s after a press (its "-active" effect), and the
        # refusal came sooner than that.
        await wait_until(pilot, lambda: not screen.query_one("#export").has_class("-active"))
        await pilot.click("#export")
        await app.workers.wait_for_complete()
        await pilot.pause()
        message = str(screen.query_one("#export-result", Static).render())
        assert f"wrote {tmp_path / 'hf'} as LlamaForCausalLM" in message, message
        screen.query_one("#export-overwrite").value = False
        # Esc while it works keeps the dialog, so its outcome is seen (it closed, and the
        # export finished unseen); then Esc closes it.
        import minimind.export

        release, export_hf = threading.Event(), minimind.export.export_hf
        minimind.export.export_hf = lambda *a, **kw: release.wait(60) and export_hf(*a, **kw)
        try:
            destination.value = str(tmp_path / "hf2")
            destination.focus()
            await pilot.press("enter", "escape")
            assert app.screen is screen
            release.set()
            await app.workers.wait_for_complete()
        finally:
            minimind.export.export_hf = export_hf
        await pilot.pause()
        message = str(screen.query_one("#export-result", Static).render())
        assert f"wrote {tmp_path / 'hf2'} as LlamaForCausalLM" in message
        await pilot.press("escape")
        assert not isinstance(app.screen, ExportScreen)
    assert (tmp_path / "hf" / "config.json").is_file()


def other_tokenizer(tmp_path: Path) -> Path:
    """The bundled tokenizer with two ids swapped: the same size, other ids."""
    other = tmp_path / "other-tokenizer"
    shutil.copytree(BUNDLED_TOKENIZER_DIR, other)
    spec = json.loads((other / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    vocab["a"], vocab["b"] = vocab["b"], vocab["a"]
    (other / "tokenizer.json").write_text(json.dumps(spec))
    return other


def test_a_tokenizer_path_with_other_ids_than_the_runs_is_said(tmp_path, capsys):
    """--tokenizer_path replaced the run's tokenizer without a word: a model shipped with ids it
    never learned. The same tokenizer from another folder, or one whose record is not here to
    compare (the override's reason to be), passes without a note."""
    other = other_tokenizer(tmp_path)
    make_run(tmp_path / "run")
    copy = tmp_path / "bundled-copy"
    shutil.copytree(BUNDLED_TOKENIZER_DIR, copy)
    assert read_checkpoint(tmp_path / "run", str(copy)).tokenizer_note == ""
    assert export_main([str(tmp_path / "run"), str(tmp_path / "hf"), "--tokenizer_path",
                        str(other)]) == 0
    assert capsys.readouterr().err.splitlines() == [
        f"minimind-tui export: warning: --tokenizer_path ({other}) gives other ids than the "
        "tokenizer the weights learned: the bundled tokenizer (train.tokenizer_path in "
        f"{tmp_path / 'run' / 'config.toml'})"]
    make_run(tmp_path / "moved", tokenizer_path=str(tmp_path / "gone"))
    assert read_checkpoint(tmp_path / "moved", str(other)).tokenizer_note == ""


def test_a_start_from_weights_that_learned_other_ids_is_said(tiny_settings, tmp_path):
    """from_weight checked shapes only: a pretrain -> sft chain with another tokenizer trained
    on ids the weights never learned, without a word."""
    from minimind.engine import Trainer
    from minimind.events import LogMessage
    from minimind.sinks import QueueSink

    other = other_tokenizer(tmp_path)
    first = tiny_settings(out_dir=str(tmp_path / "first"), tokenizer_path=str(other),
                          max_steps=1)
    assert Trainer(first).run().status == "completed"
    weights = tmp_path / "first" / "pretrain_128.pth"

    def warnings(tokenizer_path: str) -> list[str]:
        sink = QueueSink()
        settings = tiny_settings(out_dir=str(tmp_path / f"from-{len(tokenizer_path)}"),
                                 from_weight=str(weights), tokenizer_path=tokenizer_path,
                                 max_steps=1, warmup_iters=0)
        assert Trainer(settings, [sink]).run().status == "completed"
        return [e.text for e in sink.drain() if isinstance(e, LogMessage) and e.level == "warning"]

    assert warnings("") == [
        f"{weights}: train.tokenizer_path (the bundled tokenizer) gives other ids than the "
        f"tokenizer the weights learned: {other} (train.tokenizer_path in the settings saved in "
        f"{tmp_path / 'first' / 'pretrain_128_resume.pth'})"]
    assert warnings(str(other)) == []


def test_a_runs_relative_tokenizer_path_counts_from_where_it_was_started(tiny_settings,
                                                                          tmp_path, monkeypatch):
    """Opened from another folder that holds a tokenizer of the same relative name, a run
    (and a lora run on it) read that one: export shipped it and said its logits matched;
    with a resume file beside, the run's own tokenizer was called "retrained since". A lora
    run never compared its tokenizer with the fingerprint its resume file holds."""
    from minimind.engine import Trainer
    from minimind.tokenizer import train_tokenizer

    started, elsewhere = tmp_path / "started", tmp_path / "elsewhere"
    shutil.copytree(BUNDLED_TOKENIZER_DIR, started / "tok")
    other_tokenizer(elsewhere).rename(elsewhere / "tok")
    monkeypatch.chdir(started)
    pretrain = tiny_settings(max_steps=1, tokenizer_path="tok", out_dir="out/run")
    assert Trainer(pretrain).run().status == "completed"
    lora = tiny_settings(max_steps=1, tokenizer_path="tok", out_dir="out/lora", stage="lora",
                         from_weight="out/run/pretrain_128.pth", packing=False,
                         data_path="builtin:shakespeare-chat")
    assert Trainer(lora).run().status == "completed"
    monkeypatch.chdir(elsewhere)
    for run in (started / "out" / "run", started / "out" / "lora"):
        checkpoint = read_checkpoint(run)
        assert checkpoint.tokenizer_dir == started / "tok", run
    assert read_checkpoint(started / "out" / "run" / "pretrain_128.pth").tokenizer_dir == \
        started / "tok"
    # The lora run's tokenizer retrained in place is refused, as a pretraining run's is.
    data = tmp_path / "text.jsonl"
    data.write_text("".join(json.dumps({"text": f"line {i} of a small corpus"}) + "\n"
                            for i in range(40)))
    train_tokenizer(data, started / "tok", vocab_size=300, progress=False, overwrite=True)
    with pytest.raises(CheckpointError, match=r"tok is not the tokenizer the weights learned "
                                              r"\(its ids differ from the fingerprint in .*"
                                              r"lora_128_resume.pth\)"):
        read_checkpoint(started / "out" / "lora")


def test_a_tokenizer_replaced_since_the_run_is_refused(tiny_settings, tmp_path):
    """generate printed other text and export shipped (and "verified") a tokenizer retrained
    in place since the run, though the resume file records the one the weights learned and a
    resume refused the change."""
    from minimind.engine import Trainer
    from minimind.tokenizer import train_tokenizer

    tok = tmp_path / "tok"
    shutil.copytree(BUNDLED_TOKENIZER_DIR, tok)
    settings = tiny_settings(max_steps=1, tokenizer_path=str(tok))
    assert Trainer(settings).run().status == "completed"
    run = Path(settings.train.out_dir)
    assert read_checkpoint(run).tokenizer_dir == tok
    data = tmp_path / "text.jsonl"
    data.write_text("".join(json.dumps({"text": f"line {i} of a small corpus"}) + "\n"
                            for i in range(40)))
    train_tokenizer(data, tok, vocab_size=300, progress=False, overwrite=True)
    for src in (run, run / "pretrain_128.pth", run / "pretrain_128_resume.pth"):
        with pytest.raises(CheckpointError, match=r"tok is not the tokenizer the weights learned "
                                                  r"\(its ids differ from the fingerprint in "):
            read_checkpoint(src)
    assert export_main([str(run), str(tmp_path / "hf")]) == 2
    assert not (tmp_path / "hf").exists()
    # The run's own tokenizer given by hand is the remedy; another one is named as such.
    assert read_checkpoint(run, str(BUNDLED_TOKENIZER_DIR)).tokenizer_note == ""
    assert read_checkpoint(run, str(tok)).tokenizer_note.startswith(
        f"--tokenizer_path ({tok}) gives other ids than the tokenizer the weights learned: as ")
