"""Faults while a run trains, injected for real: a disk filled by another process, kill -9 in
the middle of saving, NaN that reaches the optimizer state with a finite loss, a metrics file
nobody reads, data that change under a resumed run, a read-only output folder."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from minimind.engine import Trainer
from minimind.events import CheckpointSaved, LogMessage, StepMetrics
from minimind.sinks import JsonlSink, QueueSink

CLI = [sys.executable, "-m", "minimind_tui"]
QUICK = ["--preset", "tiny", "--max_seq_len", "64", "--batch_size", "4", "--dtype", "float32",
         "--val_data_path", "", "--eval_interval", "0", "--log_interval", "1", "--packing", "0"]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run(settings, timeout: float = 300):
    """The engine in a thread, so a hang fails the test instead of stalling the suite."""
    sink, result = QueueSink(), []
    thread = threading.Thread(target=lambda: result.append(Trainer(settings, [sink]).run()),
                              daemon=True)
    thread.start()
    thread.join(timeout)
    assert result, "the run hung"
    return result[0], sink.drain()


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True)
    if mounted.returncode:
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN); the full-disk fault is "
                    "injected where the machine allows it")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_a_full_disk_leaves_no_half_event_in_metrics_jsonl(tmp_path):
    """The disk filled mid-line: the writer gave up at the run's end with half an event in the
    file, which a resume then kept for good (`watch` skipped it as unreadable, each time),
    while the warning said the event was not written."""
    with tmpfs(tmp_path / "disk", "8k") as disk:
        warned: list[str] = []
        sink = JsonlSink(disk / "metrics.jsonl", warn=warned.append, close_timeout=1.0)
        for n in range(100):
            sink.emit(LogMessage(level="info", text=f"event {n} " + "x" * 100))
        sink.close()
        data = (disk / "metrics.jsonl").read_bytes()
    lines = data.decode().splitlines()
    assert data.endswith(b"\n") and [json.loads(line)["text"].split()[1] for line in lines] \
        == [str(n) for n in range(len(lines))]
    unwritten = int(warned[-1].split(": ")[1].split()[0])
    assert warned[-1].endswith("events could not be written (the file does not accept writes)")
    assert 0 < len(lines) and len(lines) + unwritten == 100


def test_disk_filled_mid_run_fails_cleanly_and_keeps_the_last_checkpoint(tmp_path):
    with tmpfs(tmp_path / "disk", "64m") as disk:
        out = disk / "run"
        proc = subprocess.Popen([*CLI, "--no-ui", *QUICK, "--max_steps", "100000",
                                 "--save_interval", "2", "--out_dir", str(out)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env())
        for line in proc.stdout:
            if line.startswith("[checkpoint] step 2"):
                break
        # Another process takes all the space but a few MB (less than a checkpoint pair).
        filler = disk / "filler"
        with open(filler, "wb") as f:
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * (1 << 20))
        # Shrinking in place needs no space; rewriting the file (as this test once did) freed
        # it all first, and a checkpoint written in that moment made the rewrite fail.
        os.truncate(filler, max(0, filler.stat().st_size - (3 << 20)))
        out_text, err = proc.communicate(timeout=300)
        assert proc.returncode == 1, err
        failure = err.strip().splitlines()[-1]
        assert failure.startswith("minimind-tui: run failed: no space left on device writing "
                                  f"{out}/pretrain_128")
        assert "intact" in failure and "Traceback" not in err
        state = torch.load(out / "pretrain_128_resume.pth", weights_only=True)
        assert state["progress"]["step"] >= 2 and state["progress"]["step"] % 2 == 0
        torch.load(out / "pretrain_128.pth", weights_only=True)
        assert not [p.name for p in out.iterdir() if p.suffix == ".tmp"]


def pair_agrees(folder: Path) -> bool:
    state = torch.load(folder / "pretrain_128_resume.pth", weights_only=True)
    weights = torch.load(folder / "pretrain_128.pth", weights_only=True)
    return all(torch.equal(weights[k], v.half()) for k, v in state["model"].items())


def test_kill_9_mid_save_never_breaks_the_checkpoint_and_the_run_resumes(tmp_path):
    """Checkpoints every step, killed at random moments (often mid-save): every time both
    files load, and the next start removes the dead writer's temp files and resumes."""
    rng = random.Random(0)
    for attempt in range(3):
        proc = subprocess.Popen([*CLI, "--no-ui", *QUICK, "--max_steps", "100000",
                                 "--save_interval", "1", "--out_dir", str(tmp_path),
                                 *(["--from_resume", "1"] if attempt else [])],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env())
        for line in proc.stdout:
            if line.startswith("[checkpoint]"):
                break
        time.sleep(rng.uniform(0.0, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        state = torch.load(tmp_path / "pretrain_128_resume.pth", weights_only=True)
        torch.load(tmp_path / "pretrain_128.pth", weights_only=True)
    # A kill mid-save leaves a checkpoint's temporary file, which the resume reports; one
    # mid-way through a run.json write leaves that file's, which the claim removes in silence.
    stale = [p for p in tmp_path.iterdir()
             if p.suffix == ".tmp" and not p.name.startswith(".run.json.")]
    resumed = subprocess.run([*CLI, "--no-ui", *QUICK, "--max_steps",
                              str(state["progress"]["step"] + 1), "--save_interval", "1",
                              "--out_dir", str(tmp_path), "--from_resume", "1"],
                             capture_output=True, text=True, env=env(), timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming at step {state['progress']['step']}" in resumed.stdout
    if stale:
        assert "unfinished temporary file(s)" in resumed.stdout
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]
    assert pair_agrees(tmp_path)


def test_a_kill_between_the_two_renames_is_repaired_on_resume(tmp_path):
    # The narrowest window there is: the weights file renamed, the resume file not yet.
    code = textwrap.dedent(f"""
        import os, sys
        from minimind_tui.cli.main import main
        real_replace, saves = os.replace, []
        def replace(src, dst):
            real_replace(src, dst)
            if str(dst).endswith("pretrain_128.pth"):
                saves.append(dst)
                if len(saves) == 2:
                    os._exit(9)  # the 2nd save: its weights are in place, its resume file not
        os.replace = replace
        sys.exit(main({["--no-ui", *QUICK, "--max_steps", "9", "--save_interval", "1",
                        "--out_dir", str(tmp_path)]!r}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env(), timeout=300)
    assert proc.returncode == 9, proc.stderr
    assert not pair_agrees(tmp_path)
    resumed = subprocess.run([*CLI, "--no-ui", *QUICK, "--max_steps", "1", "--save_interval", "1",
                              "--out_dir", str(tmp_path), "--from_resume", "1"],
                             capture_output=True, text=True, env=env(), timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "pretrain_128.pth did not match its resume checkpoint" in resumed.stdout
    assert pair_agrees(tmp_path)


def test_nan_in_the_optimizer_state_is_never_saved(tiny_settings, tmp_path, monkeypatch):
    """The loss stays finite at the step it happens; only the state is poisoned."""
    original = Trainer._optimizer_step

    def poisoned(self, micro_batches, lr, meter):
        original(self, micro_batches, lr, meter)
        if self.progress.step == 3:  # the 4th update: its checkpoint must not be written
            state = next(iter(self.optimizer.state.values()))
            state["exp_avg_sq"].fill_(float("nan"))

    monkeypatch.setattr(Trainer, "_optimizer_step", poisoned)
    result, events = run(tiny_settings(max_steps=8, save_interval=2, log_interval=4))
    assert result.status == "failed" and "NaN" in result.reason and "step 2" in result.reason
    assert [e.step for e in events if isinstance(e, CheckpointSaved)] == [2]
    state = torch.load(tmp_path / "run" / "pretrain_128_resume.pth", weights_only=True)
    assert state["progress"]["step"] == 2


def test_a_resume_that_fails_before_its_first_step_names_the_step_it_stands_at(
        tiny_settings, monkeypatch):
    """A full disk refused the resume's config.toml: "[failed] at step 0", for a run whose
    checkpoint stood at step 4."""
    import errno

    from minimind.settings import RunSettings

    first, _ = run(tiny_settings(max_steps=4, save_interval=4))
    assert first.status == "completed"

    def full(self, path, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(RunSettings, "save_toml", full)
    result, _ = run(tiny_settings(max_steps=6, save_interval=2, from_resume=True))
    assert (result.status, result.step) == ("failed", 4)
    assert result.reason.endswith("config.toml: no space left on device")


@pytest.mark.parametrize("earlier", [False, True])
def test_a_refused_save_says_how_to_go_on(tiny_settings, monkeypatch, earlier):
    """With no checkpoint saved before it, the failure said "then resume", which the folder
    then refused: there was nothing to resume."""
    import errno

    from minimind import engine

    save = engine.save_checkpoint

    def full_from_step_4(weights_path, **kwargs):
        if kwargs["progress"]["step"] >= 4:
            raise OSError(errno.ENOSPC, "No space left on device", str(weights_path))
        return save(weights_path, **kwargs)

    monkeypatch.setattr(engine, "save_checkpoint", full_from_step_4)
    result, _ = run(tiny_settings(max_steps=6, save_interval=2 if earlier else 4))
    assert (result.status, result.step) == ("failed", 4)
    assert result.hint == ("free some space (or fix the folder), then " + (
        "resume" if earlier else
        "start it again with --overwrite 1 (no checkpoint was saved to resume)"))


def test_a_metrics_pipe_nobody_reads_never_holds_the_run(tiny_settings, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    os.mkfifo(out / "metrics.jsonl")
    result, events = run(tiny_settings(max_steps=3, save_interval=3), timeout=120)
    assert result.status == "completed"
    warnings = [e.text for e in events if isinstance(e, LogMessage) and e.level == "warning"]
    assert any("a pipe nobody reads" in w for w in warnings), warnings
    assert (out / "pretrain_128_resume.pth").exists()


def test_sigterm_ends_a_run_whose_metrics_pipe_is_stuck(tmp_path):
    (tmp_path / "metrics.jsonl").parent.mkdir(exist_ok=True)
    os.mkfifo(tmp_path / "metrics.jsonl")
    proc = subprocess.Popen([*CLI, "--no-ui", *QUICK, "--max_steps", "100000",
                             "--save_interval", "0", "--out_dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    for line in proc.stdout:
        if line.startswith("Epoch:[1/1](2/"):
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert torch.load(tmp_path / "pretrain_128_resume.pth", weights_only=True)


def test_resuming_on_changed_data_is_refused_unless_allowed(tiny_settings, tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": f"document {i} " * 30}) + "\n" for i in range(60)))
    first = tiny_settings(data_path=str(data), packing=False, max_steps=2, save_interval=2)
    assert run(first)[0].status == "completed"
    with data.open("a") as f:  # another export of the corpus, with more documents
        f.write("".join(json.dumps({"text": f"new {i} " * 30}) + "\n" for i in range(40)))
    again = tiny_settings(data_path=str(data), packing=False, max_steps=4, from_resume=True)
    result, _ = run(again)
    assert result.status == "failed" and result.cause == "input"
    assert "the training data changed since the checkpoint" in result.reason
    assert "number of samples (60 → 100)" in result.reason
    # Data that shrank so far that its epoch ends before the checkpoint's step: the change is
    # what to fix, not epochs (the plan from the new data said "set epochs to at least 2").
    data.write_text("".join(json.dumps({"text": f"few {i} " * 30}) + "\n" for i in range(6)))
    result, _ = run(again)
    assert result.cause == "input", result.reason
    assert "number of samples (60 → 6)" in result.reason, result.reason
    data.write_text("".join(json.dumps({"text": f"document {i} " * 30}) + "\n"
                            for i in range(60)) + "".join(json.dumps({"text": f"new {i} " * 30})
                                                          + "\n" for i in range(40)))
    allowed = tiny_settings(data_path=str(data), packing=False, max_steps=4, from_resume=True,
                            allow_data_change=True)
    result, events = run(allowed)
    assert result.status == "completed"
    # Allowed, and said: a resume changed nothing in the log before.
    assert [e.text for e in events if isinstance(e, LogMessage) and "allow_data_change" in e.text
            ] == ["resuming as allow_data_change allows, though the training data changed since "
                  "the checkpoint (the data file's contents, the number of samples (60 → 100))"]


def test_a_resume_on_other_validation_data_says_so(tiny_settings, tmp_path):
    """It went unnoticed: val_loss then jumped with nothing in the log to say why."""
    val = tmp_path / "val.jsonl"
    val.write_text("".join(json.dumps({"text": f"held out {i} " * 30}) + "\n" for i in range(8)))
    kept = dict(val_data_path=str(val), eval_interval=2, packing=False)
    assert run(tiny_settings(**kept, max_steps=2, save_interval=2))[0].status == "completed"
    val.write_text("".join(json.dumps({"text": f"another {i} " * 30}) + "\n" for i in range(8)))
    result, events = run(tiny_settings(**kept, max_steps=4, from_resume=True))
    assert result.status == "completed", result  # what trains is the same
    assert [e.text for e in events if isinstance(e, LogMessage) and "validation" in e.text] == [
        "the validation data changed since the checkpoint: val_loss after step 2 is measured "
        "on other data than before"]


def test_another_chat_template_is_refused_by_a_resume_and_said_by_generate_and_export(
        tiny_settings, tmp_path):
    """The template writes each conversation's text; a new one went unnoticed on resume, and
    generate and export (which read a run with `read_checkpoint`) chatted in it unsaid."""
    from minimind.checkpoint_reader import read_checkpoint
    from minimind.tokenizer import BUNDLED_TOKENIZER_DIR

    tokenizer = tmp_path / "tokenizer"
    shutil.copytree(BUNDLED_TOKENIZER_DIR, tokenizer)
    sft = dict(stage="sft", data_path="builtin:shakespeare-chat", tokenizer_path=str(tokenizer),
               packing=False, sample_prompts=[])
    assert run(tiny_settings(**sft, max_steps=2, save_interval=2))[0].status == "completed"
    config = tokenizer / "tokenizer_config.json"
    fields = json.loads(config.read_text())
    original = fields["chat_template"]
    fields["chat_template"] = "{{- '<|im_start|>system\nBe brief.<|im_end|>\n' }}" + original
    config.write_text(json.dumps(fields))
    result, _ = run(tiny_settings(**sft, max_steps=4, from_resume=True))
    assert (result.status, result.cause) == ("failed", "input")
    assert "changed since the checkpoint (the tokenizer's chat template)" in result.reason
    said = ("the tokenizer's chat template is not the one the run trained with (as "
            f"{tmp_path / 'run' / 'full_sft_128_resume.pth'} records it): chats are written in "
            "another format than the model learned")
    for override in (None, str(tokenizer)):  # the recorded tokenizer, or the same one named
        assert read_checkpoint(tmp_path / "run", override).tokenizer_note == said
    config.write_text(json.dumps({**fields, "chat_template": original}))
    assert read_checkpoint(tmp_path / "run").tokenizer_note == ""


def test_a_strict_run_never_reuses_a_cache_built_with_bad_lines_skipped(tiny_settings, tmp_path):
    data = tmp_path / "data.jsonl"
    lines = [json.dumps({"text": f"line {i} " * 40}) for i in range(40)]
    lines[5] = '{"text": broken'
    data.write_text("\n".join(lines) + "\n")
    lenient = tiny_settings(data_path=str(data), packing=True, skip_bad_lines=True, max_steps=1)
    assert run(lenient)[0].status == "completed"
    strict, _ = run(tiny_settings(data_path=str(data), packing=True, max_steps=1, overwrite=True))
    assert strict.status == "failed" and strict.cause == "input"
    assert f"{data}:6: line is not valid JSON" in strict.reason


def test_a_read_only_output_folder_is_refused_before_training(tiny_settings, tmp_path):
    with tmpfs(tmp_path / "ro", "1m") as folder:
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        result, events = run(tiny_settings(out_dir=str(folder / "run")))
    assert result.status == "failed" and result.cause == "input"
    assert result.reason.startswith(f"train.out_dir: cannot write to {folder / 'run'}")
    assert not any(isinstance(e, StepMetrics) for e in events)
