"""The sft and lora stages in the engine: settings, file names, resume, the adapters' file."""

import gzip
import json
import threading
from pathlib import Path

import pytest
import torch

from minimind.checkpoint import resume_path
from minimind.engine import Trainer
from minimind.events import LogMessage, StepMetrics
from minimind.lora import load_lora
from minimind.settings import RunSettings, SettingsError
from minimind.checkpoint_reader import load_model, load_pretrained_weights
from minimind.config import MiniMindConfig
from minimind.model import MiniMindForCausalLM

QUESTIONS = [("What is the first letter?", "A."), ("Say hello.", "Hello!"),
             ("Name a play.", "Hamlet."), ("Count to three.", "One, two, three.")]


@pytest.fixture(scope="module")
def chat_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("chat") / "chat.jsonl"
    rows = [{"conversations": [{"role": "user", "content": q},
                               {"role": "assistant", "content": f"{a} ({i})"}]}
            for i in range(8) for q, a in QUESTIONS]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A few pretraining steps of the tiny model: the weights sft starts from."""
    from minimind_tui.form.presets import load_settings

    out = tmp_path_factory.mktemp("pretrain")
    settings = load_settings("tiny", {"train": {
        "out_dir": str(out), "max_steps": 2, "save_interval": 0, "eval_interval": 0,
        "val_data_path": "", "dtype": "float32", "max_seq_len": 64, "batch_size": 4}})
    assert Trainer(settings).run().status == "completed"
    return out / "pretrain_128.pth"


def stage_settings(tiny_settings, chat_file, pretrained, out, **train):
    return tiny_settings(out_dir=str(out), data_path=str(chat_file), packing=False,
                         from_weight=str(pretrained), **{"stage": "sft", **train})


def run(settings, stop_at=None, events=None):
    stop = threading.Event()

    class StopAt:
        def emit(self, event):
            if events is not None:
                events.append(event)
            if isinstance(event, StepMetrics) and event.step == stop_at:
                stop.set()

        def close(self):
            pass

    return Trainer(settings, [StopAt()], stop).run()


def test_stage_picks_the_file_name_and_refuses_packing():
    assert RunSettings.parse({"train": {"stage": "sft"}}).weights_name() == "full_sft_512.pth"
    assert RunSettings.parse({"train": {"stage": "sft", "save_weight": "mine"}}
                             ).weights_name() == "mine_512.pth"
    lora = RunSettings.parse({"train": {"stage": "lora", "lora_name": "lora_medical",
                                        "from_weight": "full_sft_512.pth"}})
    assert lora.weights_name() == "lora/lora_medical_512.pth"
    # Adapters need a base: without one they trained on a frozen random model, "completed".
    with pytest.raises(SettingsError, match="train.from_weight: is required for lora"):
        RunSettings.parse({"train": {"stage": "lora"}})
    assert RunSettings.parse({}).weights_name() == "pretrain_512.pth"
    with pytest.raises(SettingsError, match="train.packing: is for pretraining; sft pads"):
        RunSettings.parse({"train": {"stage": "sft", "packing": True}})
    with pytest.raises(SettingsError, match="train.stage: must be one of"):
        RunSettings.parse({"train": {"stage": "dpo"}})


def test_sft_trains_only_replies_and_resumes_bitwise(tiny_settings, chat_file, pretrained,
                                                     tmp_path):
    whole = stage_settings(tiny_settings, chat_file, pretrained, tmp_path / "whole",
                           max_steps=5, accumulation_steps=2)
    split = stage_settings(tiny_settings, chat_file, pretrained, tmp_path / "split",
                           max_steps=5, accumulation_steps=2)
    assert run(whole).status == "completed"
    assert (tmp_path / "whole" / "full_sft_128.pth").is_file()
    first = run(split, stop_at=2)
    assert first.status == "stopped" and first.step == 2
    resumed = split.model_copy(update={"train": split.train.model_copy(
        update={"from_resume": True})})
    assert run(resumed).status == "completed"
    ww, ws = (torch.load(resume_path(Path(s.train.out_dir) / s.weights_name()),
                         weights_only=True)["model"] for s in (whole, split))
    assert all(torch.equal(ww[k], ws[k]) for k in ww)
    model = load_model(tmp_path / "whole" / "full_sft_128.pth")  # a full, strict model file
    assert model.config.hidden_size == 128


def test_lora_run_writes_only_adapters_and_leaves_the_base(tiny_settings, chat_file,
                                                           pretrained, tmp_path):
    settings = stage_settings(tiny_settings, chat_file, pretrained, tmp_path / "lora",
                              stage="lora", lora_name="lora_test", lora_rank=4, max_steps=3,
                              learning_rate=1e-2)
    events = []
    assert run(settings, events=events).status == "completed"
    logs = [e.text for e in events if isinstance(e, LogMessage)]
    base_size = load_model(pretrained).num_parameters()  # the adapters are not the base's
    assert f"lora: 4,096 adapter parameters train, the {base_size:,} of the base are frozen" \
        in logs, logs
    assert any("count the supervised tokens (the replies) only" in text for text in logs)
    adapter = tmp_path / "lora" / "lora" / "lora_test_128.pth"
    saved = torch.load(adapter, weights_only=True)
    assert saved and all(".lora." in k for k in saved)
    assert any(v.abs().sum() > 0 for k, v in saved.items() if ".lora.B." in k)  # it trained
    state = torch.load(resume_path(adapter), weights_only=True)["model"]
    base = torch.load(pretrained, weights_only=True)
    assert all(torch.equal(state[k].half(), base[k]) for k in base)  # base frozen
    model = load_model(pretrained)
    assert load_lora(model, adapter) == 4


def test_sft_with_a_tokenizer_without_template_fails_in_one_line(tiny_settings, chat_file,
                                                                 pretrained, tmp_path):
    import shutil

    from minimind.tokenizer import BUNDLED_TOKENIZER_DIR

    folder = tmp_path / "tok"
    shutil.copytree(BUNDLED_TOKENIZER_DIR, folder, ignore=shutil.ignore_patterns("*.py", "__*"))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    del config["chat_template"]
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    settings = stage_settings(tiny_settings, chat_file, pretrained, tmp_path / "out",
                              tokenizer_path=str(folder))
    result = run(settings)
    assert result.status == "failed" and result.cause == "input"
    assert result.reason.startswith("train.tokenizer_path: the tokenizer has no chat template")


def test_pretraining_data_given_to_sft_names_the_line(tiny_settings, pretrained, tmp_path):
    data = tmp_path / "text.jsonl"
    data.write_text('{"text": "To be, or not to be"}\n')
    settings = stage_settings(tiny_settings, data, pretrained, tmp_path / "out")
    result = run(settings)
    assert result.status == "failed" and result.cause == "input"
    assert f"{data}:1: missing \"conversations\" field (this looks like pretraining" \
           in result.reason


def test_the_start_check_reads_the_first_line_as_the_stage_will(chat_file, tmp_path):
    """Text given to sft (or conversations to pretraining) is refused before the start, in the
    reader's own words and with the bundled set of the right kind named; the form said "ready"
    and the run failed at step 0. A stage with no data named reads the bundled conversations."""
    from minimind.environment import environment_problems

    def problems(**train):
        return [(p.loc, p.text) for p in environment_problems(RunSettings.parse({"train": train}))]

    sft = {"stage": "sft", "packing": False}
    assert problems(**sft, data_path="builtin:shakespeare") == [(
        "train.data_path", 'builtin:shakespeare:1: missing "conversations" field (this looks '
        'like pretraining data; use stage "pretrain"); for sft, use builtin:shakespeare-chat')]
    assert problems(data_path=str(chat_file)) == [(
        "train.data_path", f'{chat_file}:1: missing "text" field (this looks like conversation '
        'data, which stages "sft" and "lora" read)')]
    assert problems(val_data_path="builtin:shakespeare-chat-val") == [(
        "train.val_data_path", 'builtin:shakespeare-chat-val:1: missing "text" field (this looks '
        'like conversation data, which stages "sft" and "lora" read); for pretrain, use '
        'builtin:shakespeare-val')]
    assert RunSettings.parse({"train": sft}).train.data_path == "builtin:shakespeare-chat"
    assert problems(**sft) == problems(data_path=str(chat_file), **sft) == []
    # Skipped bad lines are the reader's to count; a first line past the limit, the reader's.
    assert problems(**sft, data_path="builtin:shakespeare", skip_bad_lines=True) == []
    long = tmp_path / "long.jsonl"
    long.write_bytes(b'{"text": "' + b"a" * (2 << 20) + b'"}\n')
    assert problems(**sft, data_path=str(long)) == []
    blank = tmp_path / "blank.jsonl"  # blank lines alone: the reader refuses it whatever else
    blank.write_text("\n \n" * 100)
    assert problems(data_path=str(blank), skip_bad_lines=True) == [
        ("train.data_path", f"{blank}: file has no lines with text")]
    gz = tmp_path / "blank-first.jsonl.gz"
    gz.write_bytes(gzip.compress(b"\n  \n" + chat_file.read_bytes()))
    assert problems(data_path=str(gz)) == [("train.data_path", f"{gz}:3: missing \"text\" field "
                                            '(this looks like conversation data, which stages '
                                            '"sft" and "lora" read)')]


def test_encode_chat_ends_with_the_assistant_header(tok):
    from minimind.generate import encode_chat

    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
               {"role": "user", "content": "Who are you?"}]
    text = tok.decode(encode_chat(tok, history))
    assert text == ("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n"
                    "<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n")


def test_generate_chat_speaks_in_turns(pretrained):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "minimind_tui", "generate", str(pretrained), "--chat",
         "--prompt", "Who says: \"To be\"", "--prompt", "And then?", "--temperature", "0",
         "--max_new_tokens", "6", "--device", "cpu"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('user: Who says: "To be"\nassistant: ')
    assert "\n\nuser: And then?\nassistant: " in result.stdout
    assert result.stderr.count("tokens in") == 2


def test_export_merges_an_adapter_into_its_base(pretrained, tmp_path):
    """A real `export --lora` subprocess; the merged upstream file's logits equal the base
    model's with the adapter applied (our loader, unmerged)."""
    import subprocess
    import sys

    from minimind.lora import adapter_tensors, apply_lora

    adapted = load_model(pretrained).float()
    apply_lora(adapted, 4)
    with torch.no_grad():
        for name, p in adapted.named_parameters():
            if ".lora.B." in name:
                p.normal_(std=0.5)
    adapter = tmp_path / "lora_x_128.pth"
    torch.save(adapter_tensors(adapted.state_dict()), adapter)
    out = tmp_path / "merged.pth"
    result = subprocess.run(
        [sys.executable, "-m", "minimind_tui", "export", str(pretrained), str(out), "--format",
         "upstream", "--lora", str(adapter)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "merged the rank-4 adapters" in result.stdout
    # upstream's file records no head split: the tiny preset's 4 heads say it
    merged = load_model(out, num_attention_heads=4).float().eval()
    assert not any(".lora." in k for k in torch.load(out, weights_only=True))
    ids = torch.randint(0, 6400, (2, 16))
    with torch.no_grad():
        expected = adapted.eval()(input_ids=ids).logits
        # the upstream file is float16: the merged weights are rounded once
        assert torch.allclose(merged(input_ids=ids).logits, expected, atol=2e-2)
        base = load_model(pretrained).float().eval()(input_ids=ids).logits
        assert (base - expected).abs().max() > 0.2  # the adapter matters at this tolerance
    bad = subprocess.run(
        [sys.executable, "-m", "minimind_tui", "export", str(pretrained), str(tmp_path / "b.pth"),
         "--format", "upstream", "--lora", str(pretrained)], capture_output=True, text=True,
        timeout=300)
    assert bad.returncode == 2 and "--lora: " in bad.stderr and "not an adapter file" in bad.stderr


def test_generate_chat_refuses_a_tokenizer_without_template(pretrained, tmp_path):
    import shutil
    import subprocess
    import sys

    from minimind.tokenizer import BUNDLED_TOKENIZER_DIR

    folder = tmp_path / "tok"
    shutil.copytree(BUNDLED_TOKENIZER_DIR, folder, ignore=shutil.ignore_patterns("*.py", "__*"))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    del config["chat_template"]
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    result = subprocess.run(
        [sys.executable, "-m", "minimind_tui", "generate", str(pretrained), "--chat",
         "--prompt", "Hi", "--tokenizer_path", str(folder), "--device", "cpu"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().endswith("--chat: the tokenizer has no chat template "
                                          "(tokenizer_config.json \"chat_template\"); "
                                          "conversations are rendered with it, so SFT needs one")


def test_the_tiny_chain_runs_the_bundled_sft_preset_headless(pretrained, tmp_path):
    """`--preset tiny-sft` in a real process, on the bundled conversations, from a tiny
    pretraining run: it writes full_sft_128.pth and its live samples answer in turns."""
    import subprocess
    import sys

    out = tmp_path / "tiny-sft"
    result = subprocess.run(
        [sys.executable, "-m", "minimind_tui", "--no-ui", "--preset", "tiny-sft",
         "--from_weight", str(pretrained), "--out_dir", str(out), "--max_steps", "2",
         "--batch_size", "4", "--eval_batches", "1", "--sample_tokens", "4",
         "--dtype", "float32"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "full_sft_128.pth").is_file()
    assert "sft: 6,464 conversations" in result.stdout + result.stderr
    samples = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
               if json.loads(line)["kind"] == "sample"]
    assert samples and samples[-1]["prompts"][0].startswith("Continue Romeo's speech")


def test_a_lora_run_is_read_only_on_the_base_it_trained_on(tiny_settings, chat_file,
                                                            pretrained, tmp_path):
    """The adapters mean nothing on another base: generate and export (`read_checkpoint`)
    check the base file against the base the run's resume file saved, and refuse one that was
    trained on since; a resume may not swap the base or the rank either (its state holds
    both), and is refused before the folder is touched."""
    import shutil

    from minimind.checkpoint_reader import BaseCheckError, read_checkpoint
    from minimind.run_files import CONFIG_FILE

    base = tmp_path / "base.pth"
    shutil.copy(pretrained, base)
    folder = tmp_path / "lora"
    settings = stage_settings(tiny_settings, chat_file, base, folder, stage="lora",
                              lora_rank=4, max_steps=2, learning_rate=1e-2)
    assert run(settings).status == "completed"
    assert "(base checked against lora_128_resume.pth)" in read_checkpoint(folder).built_from

    config = (folder / CONFIG_FILE).read_bytes()
    for change, expected in (({"lora_rank": 8}, "train.lora_rank (4 → 8)"),
                             ({"from_weight": str(pretrained)}, "train.from_weight")):
        refused = run(with_train_fields(settings, max_steps=3, from_resume=True, **change))
        assert refused.status == "failed" and refused.cause == "input", refused.reason
        assert expected in refused.reason
        assert (folder / CONFIG_FILE).read_bytes() == config

    weights = torch.load(base, weights_only=True)  # the base trained on since
    weights["model.norm.weight"] += 0.5
    torch.save(weights, base)
    with pytest.raises(BaseCheckError, match=r"not the one the lora run trained on: "
                                             r"model.norm.weight differs .*\. The file was "
                                             r"replaced or trained on since"):
        read_checkpoint(folder)
    (folder / "lora" / "lora_128_resume.pth").unlink()
    assert "base not checked: no lora_128_resume.pth" in read_checkpoint(folder).built_from


def with_train_fields(settings, **train):
    return settings.model_copy(update={"train": settings.train.model_copy(update=train)})


def test_a_batch_whose_reply_lies_past_max_seq_len_trains_nothing_and_says_so(
        tiny_settings, pretrained, tmp_path):
    """One long question pushes its reply past max_seq_len: at batch_size 1 that batch has no
    target. Its loss was 0/0 = NaN, which poisoned the weights and was reported as divergence
    (with a hint about the learning rate); now it trains nothing, stays out of the mean of a
    logged window (alone in one, it logs 0), and a warning names the cause. Its evaluation no
    longer turns val_loss into NaN."""
    import math

    from minimind.events import EvalResult

    rows = [{"conversations": [{"role": "user", "content": f"Say hello {i}."},
                               {"role": "assistant", "content": "Hello, friend."}]}
            for i in range(7)]
    rows.insert(3, {"conversations": [{"role": "user", "content": "the king is dead " * 30},
                                      {"role": "assistant", "content": "A saying."}]})
    data = tmp_path / "long.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    settings = stage_settings(tiny_settings, data, pretrained, tmp_path / "sft", batch_size=1,
                              max_seq_len=64, max_steps=8, log_interval=1, learning_rate=1e-3,
                              val_data_path=str(data), eval_interval=0, eval_batches=8)
    events = []
    finished = run(settings, events=events)
    assert finished.status == "completed", finished.reason
    steps = [e for e in events if isinstance(e, StepMetrics)]
    assert len(steps) == 8 and all(math.isfinite(e.loss) for e in steps)
    assert [e.loss for e in steps].count(0.0) == 1  # the empty batch, alone in its window
    warnings = [e.text for e in events if isinstance(e, LogMessage) and e.level == "warning"]
    assert any("1 micro-batch(es) up to step" in w and "held no target" in w for w in warnings)
    (val,) = [e for e in events if isinstance(e, EvalResult)]
    assert math.isfinite(val.val_loss)
    # A validation set of that conversation alone measures nothing: said, not skipped silently.
    alone = tmp_path / "alone.jsonl"
    alone.write_text(json.dumps(rows[3]) + "\n")
    events = []
    assert run(with_train_fields(settings, out_dir=str(tmp_path / "sft-2"), max_steps=1,
                                 val_data_path=str(alone)), events=events).status == "completed"
    assert not [e for e in events if isinstance(e, EvalResult)]
    assert [e.text for e in events if isinstance(e, LogMessage) and e.level == "warning"
            and e.text.startswith("validation")] == [
        "validation at step 1 measured nothing: its 1 micro-batch(es) held no target (with sft: "
        "every reply lies past max_seq_len), so val_loss stays unknown; raise max_seq_len or "
        "eval_batches"]
    # Training data whose replies all lie past max_seq_len: refused before a step (the run
    # trained, logged loss 0.0000 and said "completed").
    refused = run(with_train_fields(settings, out_dir=str(tmp_path / "sft-3"), max_steps=1,
                                    data_path=str(alone)))
    assert (refused.status, refused.cause) == ("failed", "input")
    assert refused.reason.startswith(
        f"train.max_seq_len: none of the 1 conversation(s) of {alone} keeps any of its "
        "reply within max_seq_len 64, so the run would learn nothing")
    assert not (tmp_path / "sft-3").exists()
    # Sorted by length, a file's replies fit only at its end: the first 256 it looked at (all
    # too long) made it refuse data that trains. A sample across the file finds them.
    sorted_by_length = tmp_path / "sorted.jsonl"
    sorted_by_length.write_text("".join(
        json.dumps(row) + "\n" for row in [rows[3]] * 300 + [rows[0]] * 10))
    assert run(with_train_fields(settings, out_dir=str(tmp_path / "sft-4"), max_steps=1,
                                 data_path=str(sorted_by_length))).status == "completed"
    only_long = tmp_path / "long.jsonl"
    only_long.write_text((json.dumps(rows[3]) + "\n") * 300)
    refused = run(with_train_fields(settings, out_dir=str(tmp_path / "sft-5"), max_steps=1,
                                    data_path=str(only_long)))
    assert refused.reason.startswith(
        f"train.max_seq_len: none of 256 conversations taken evenly across {only_long} keeps "
        "any of its reply within max_seq_len 64, so the run would learn little or nothing")


def test_an_sft_run_resumes_from_another_folder_after_its_base_and_data_moved(
        tiny_settings, chat_file, pretrained, tmp_path, monkeypatch):
    """A resume compared from_weight and data_path as text and read the base again, so a run
    started with relative paths could not resume from another folder, nor once its base file
    was gone, although the checkpoint holds every weight and the data are checked by their
    contents. It continues exactly as a run never interrupted."""
    import shutil

    from minimind.environment import validate_for_start

    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir(), elsewhere.mkdir()
    shutil.copy(pretrained, work / "base.pth")
    shutil.copy(chat_file, work / "chat.jsonl")
    whole = stage_settings(tiny_settings, chat_file, pretrained, tmp_path / "whole", max_steps=4)
    assert run(whole).status == "completed"
    monkeypatch.chdir(work)
    split = stage_settings(tiny_settings, "chat.jsonl", "base.pth", "out/sft", max_steps=4,
                           save_interval=2)
    assert run(split, stop_at=2).status == "stopped"

    (work / "base.pth").unlink()
    shutil.move(work / "chat.jsonl", elsewhere / "chat.jsonl")
    monkeypatch.chdir(tmp_path)
    resumed = with_train_fields(split, out_dir="work/out/sft", from_resume=True,
                                from_weight=str(work / "base.pth"),
                                data_path=str(elsewhere / "chat.jsonl"))
    assert validate_for_start(resumed.model_dump(mode="json"))[1] == []
    events = []
    assert run(resumed, events=events).status == "completed"
    notices = [e.text for e in events if isinstance(e, LogMessage)]
    assert any(f"train.data_path (chat.jsonl → {elsewhere / 'chat.jsonl'})" in text
               for text in notices), notices
    assert not any("from_weight" in text or "initialised from" in text for text in notices)
    ww, ws = (torch.load(resume_path(Path(folder) / "full_sft_128.pth"), weights_only=True)
              ["model"] for folder in (tmp_path / "whole", work / "out" / "sft"))
    assert all(torch.equal(ww[k], ws[k]) for k in ww)
    # Another base file is still a change the state cannot take in.
    other = with_train_fields(resumed, from_weight=str(pretrained), max_steps=5)
    assert f"train.from_weight ({work / 'base.pth'} → {pretrained})" in run(other).reason


def test_a_from_weight_trained_with_another_rope_theta_is_named(tiny_settings, chat_file,
                                                                 pretrained, tmp_path):
    """rope_theta, rms_norm_eps and kin leave no trace in the shapes, so the weights loaded in
    silence into a model that computes another function with them."""
    events = []
    settings = stage_settings(tiny_settings, chat_file, pretrained, tmp_path / "sft",
                              max_steps=1, model={"rope_theta": 5000.0})
    assert run(settings, events=events).status == "completed"
    warnings = [e.text for e in events if isinstance(e, LogMessage) and e.level == "warning"]
    assert [w for w in warnings if "rope_theta" in w] == [
        f"{pretrained}: the weights learned with other settings than this model's (the "
        f"settings saved in {resume_path(pretrained)}): rope_theta 1000000.0 there, 5000.0 "
        "here; they start from another function than they computed"], warnings
    events.clear()
    same = stage_settings(tiny_settings, chat_file, pretrained, tmp_path / "same", max_steps=1)
    assert run(same, events=events).status == "completed"
    assert not [e for e in events if isinstance(e, LogMessage) and "learned with" in e.text]
    # Routing settings change nothing in a dense model: a MiniMind-3 record's top-1 against
    # MiniMind2's top-2 was named as another function.
    config = MiniMindConfig(**same.model.to_config_kwargs())
    config.num_experts_per_tok = 1
    assert load_pretrained_weights(MiniMindForCausalLM(config), pretrained)[1] == ""
