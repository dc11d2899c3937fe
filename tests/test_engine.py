"""The engine on real CPU runs: loss falls, accumulation is exact, resume is bitwise, faults."""

import math
import os
import subprocess
import sys
import textwrap
import threading
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
import torch

from minimind.atomic import atomic_write_bytes
from minimind.checkpoint import resume_path, torch_bytes
from minimind.engine import Trainer
from minimind.event_text import describe
from minimind.events import (CheckpointSaved, EvalResult, LogMessage, RunStarted, StepMetrics,
                             event_from_json)
from minimind.flops import flops_per_token
from minimind.model import MiniMindForCausalLM
from minimind.run_status import read_status
from minimind.schedule import learning_rate
from minimind.sinks import QueueSink


def run(settings, stop_at=None, stop_when=None):
    """The run's result and events; stopped as a user would after the step `stop_at` logs,
    or after the event `stop_when` picks."""
    sink = QueueSink()
    stop = threading.Event()
    stop_when = stop_when or (lambda e: isinstance(e, StepMetrics) and e.step == stop_at)

    class StopAt:
        def emit(self, event):
            if stop_when(event):
                stop.set()

        def close(self):
            pass

    result = Trainer(settings, [sink, StopAt()], stop).run()
    return result, sink.drain()


def final_weights(settings):
    out = settings.train.out_dir
    path = resume_path(__import__("pathlib").Path(out) / settings.weights_name())
    return torch.load(path, weights_only=False)["model"]


def test_run_learns_and_writes_everything(tiny_settings, tmp_path):
    settings = tiny_settings(max_steps=30, log_interval=5, save_interval=15,
                             val_data_path="builtin:shakespeare-val", eval_interval=15,
                             learning_rate=3e-3, dtype="bfloat16")
    result, events = run(settings)
    assert result.status == "completed", result
    started = next(e for e in events if isinstance(e, RunStarted))
    assert started.parameters == started.active_parameters > 0
    assert started.tokens_per_step == 4 * 64
    steps = [e for e in events if isinstance(e, StepMetrics)]
    assert [e.step for e in steps] == [5, 10, 15, 20, 25, 30]
    assert steps[0].loss > steps[-1].loss + 1.0  # it learns
    assert all(e.tokens_per_sec > 0 and e.rss for e in steps)
    saved = [e.step for e in events if isinstance(e, CheckpointSaved)]
    assert saved == [15, 30]
    out = tmp_path / "run"
    weights = torch.load(out / "pretrain_128.pth", weights_only=True)
    assert {v.dtype for v in weights.values()} == {torch.float16}
    assert "lm_head.weight" in weights and "model.embed_tokens.weight" in weights
    logged = [event_from_json(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [type(e).__name__ for e in logged][0] == "RunStarted"
    assert logged[-1].status == "completed"
    assert (out / "config.toml").exists()


def test_evaluations_and_saves_are_no_part_of_the_logged_training_rate(tiny_settings,
                                                                        monkeypatch):
    """The interval after an evaluation counted its time as training: a run evaluating more
    often "trained" slower. The run's elapsed time, and so its average, keep it."""
    import time

    evaluate = Trainer._evaluate

    def slow_evaluate(self):
        time.sleep(2.0)
        evaluate(self)

    monkeypatch.setattr(Trainer, "_evaluate", slow_evaluate)
    settings = tiny_settings(max_steps=4, log_interval=1, eval_interval=2,
                             val_data_path="builtin:shakespeare-val", eval_batches=1)
    result, events = run(settings)
    assert result.status == "completed"
    steps = [e for e in events if isinstance(e, StepMetrics)]
    # Each interval is one step of 4 x 64 tokens: well under a second, not the 2 s evaluation.
    assert all(e.tokens_per_sec > 256 for e in steps), [e.tokens_per_sec for e in steps]
    assert steps[-1].elapsed > 2.0
    # The last evaluation comes after the last log line: the end tells the whole run, and the
    # runs list's duration and average (run.json) are the dashboard's elapsed and average.
    finished = events[-1]
    assert finished.tokens_seen == steps[-1].tokens_seen
    assert finished.elapsed > steps[-1].elapsed + 2.0
    status = read_status(Path(settings.train.out_dir) / "run.json")
    assert (status.elapsed, status.tokens_per_sec) == (
        finished.elapsed, finished.tokens_seen / finished.elapsed)


def test_a_stop_before_the_first_log_tells_the_tokens_the_run_counted(tiny_settings):
    """An sft run stopped before it logged a step reported its positions (prompts and padding
    included) as its tokens, ~9x the supervised tokens its checkpoint counted."""
    settings = tiny_settings(stage="sft", data_path="builtin:shakespeare-chat", packing=False,
                             max_steps=50, log_interval=1000, max_seq_len=128)
    result, events = run(settings, stop_when=lambda e: isinstance(e, RunStarted))
    assert result.status == "stopped" and not any(isinstance(e, StepMetrics) for e in events)
    out = Path(settings.train.out_dir)
    counted = torch.load(resume_path(out / settings.weights_name()),
                         weights_only=True)["progress"]["tokens_seen"]
    status = read_status(out / "run.json")
    assert 0 < status.tokens_seen == counted < status.step * settings.tokens_per_step()
    # Its start line calls a step's positions so: its tokens are the replies.
    started = next(e for e in events if isinstance(e, RunStarted))
    assert f"| positions/step: {4 * 128} |" in describe(started)[0]
    # As does padded pretraining's: only packed text fills every position with a token.
    for packing, says in ((False, "positions/step"), (True, "tokens/step")):
        pretraining = {"train": {"stage": "pretrain", "packing": packing}}
        assert f"| {says}: " in describe(replace(started, settings=pretraining))[0]


def test_a_stop_that_saves_nothing_says_so_and_counts_what_was_logged(tiny_settings):
    """A run that writes no weights (a benchmark) said "checkpoint written" when stopped, and
    its end told 0 tokens: the count a checkpoint keeps, never made."""
    from minimind.run_status import RunStatus

    sink, stop = QueueSink(), threading.Event()

    class StopAtTwo:
        def emit(self, event):
            if isinstance(event, StepMetrics) and event.step == 2:
                stop.set()

        def close(self):
            pass

    settings = tiny_settings(max_steps=20, log_interval=2)
    trainer = Trainer(settings, [sink, StopAtTwo()], stop, save_checkpoints=False)
    result = trainer.run()
    assert (result.status, result.reason) == ("stopped", "stop requested; nothing saved")
    assert result.tokens_seen is None and result.elapsed > 0
    status, events = RunStatus(), sink.drain()
    for event in events:
        status.apply(event)
    logged = [e for e in events if isinstance(e, StepMetrics)][-1]
    assert (status.step, status.tokens_seen) == (2, logged.tokens_seen) and logged.tokens_seen
    assert status.elapsed == result.elapsed
    assert not list(Path(settings.train.out_dir).glob("*.pth"))


def test_mfu_counts_each_position_of_text_and_a_frozen_weight_at_four_flops(tiny_settings,
                                                                            monkeypatch):
    """sft's MFU took the reply tokens for the model's work: prompts are computed too, and it
    read ~9x low. A lora run's frozen base gets no weight gradient: 4 FLOPs a token, not 6."""
    import minimind.engine as engine

    monkeypatch.setattr(engine, "peak_flops", lambda device: 1e12)  # a GPU's, on the CPU
    settings = tiny_settings(stage="sft", data_path="builtin:shakespeare-chat", packing=False,
                             max_steps=1, max_seq_len=128)
    _, events = run(settings)
    started = next(e for e in events if isinstance(e, RunStarted))
    [step] = [e for e in events if isinstance(e, StepMetrics)]
    # The same window times both rates: their ratio is the step's positions over its replies.
    computed = step.tokens_seen * step.mfu * 1e12 / (step.tokens_per_sec * started.flops_per_token)
    assert step.tokens_seen < round(computed) <= 4 * 128
    assert computed == pytest.approx(round(computed))
    assert flops_per_token(100, 10, 2, 4, 8, tied=True, frozen=90) == 6 * 100 - 2 * 90 + 12 * 64
    assert flops_per_token(100, 10, 2, 4, 8, tied=False, frozen=90) == 6 * 90 - 2 * 80 + 12 * 64


def test_accumulation_matches_one_big_batch(tiny_settings, tmp_path):
    # Packed samples all have the same token count, so 4 micro-batches of 2 average to
    # exactly the loss of one batch of 8 (up to float32 summation order).
    a = tiny_settings(out_dir=str(tmp_path / "a"), batch_size=2, accumulation_steps=4,
                      max_steps=3, save_interval=3)
    b = tiny_settings(out_dir=str(tmp_path / "b"), batch_size=8, accumulation_steps=1,
                      max_steps=3, save_interval=3)
    assert run(a)[0].status == run(b)[0].status == "completed"
    wa, wb = final_weights(a), final_weights(b)
    # Adam divides by sqrt(v): where a gradient is ~0, float32 summation-order noise can move
    # one update by a hair, so allow a small fraction of one step (lr 3e-3).
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype, recipe", [
    ("float32", {}), ("bfloat16", {}),
    ("float32", {"optimizer": "muon", "lr_schedule": "wsd", "decay_fraction": 0.5}),
    ("bfloat16", {"optimizer": "muon"}),
    ("float32", {"optimizer": "muon", "muon_lr": 0.02}),
])
def test_stop_and_resume_is_bitwise(tiny_settings, tmp_path, dtype, recipe):
    model = {"dropout": 0.1}  # dropout makes the RNG state part of what must be restored
    whole = tiny_settings(model, out_dir=str(tmp_path / "whole"), max_steps=7, dtype=dtype,
                          accumulation_steps=2, **recipe)
    split = tiny_settings(model, out_dir=str(tmp_path / "split"), max_steps=7, dtype=dtype,
                          accumulation_steps=2, **recipe)
    assert run(whole)[0].status == "completed"
    first, _ = run(split, stop_at=3)
    assert first.status == "stopped" and first.step == 3
    resumed = split.model_copy(update={"train": split.train.model_copy(
        update={"from_resume": True})})
    second, events = run(resumed)
    assert second.status == "completed" and second.step == 7
    assert next(e for e in events if isinstance(e, RunStarted)).start_step == 3
    ww, ws = final_weights(whole), final_weights(split)
    assert all(torch.equal(ww[k], ws[k]) for k in ww)


def test_a_completed_run_extended_by_a_resume_trains_as_one_run(tiny_settings, tmp_path):
    """With dropout, a run of 6 steps evaluated at its end and resumed to 12 trained on other
    dropout masks than one run of 12: starting the evaluation's DataLoader drew from the
    global RNG after the checkpoint had saved it. Evaluating no longer draws from it at all."""
    def settings(name, max_steps, **train):
        evaluated = {"eval_interval": 3, "eval_batches": 1,
                     "val_data_path": "builtin:shakespeare-val"}
        return tiny_settings({"dropout": 0.1}, out_dir=str(tmp_path / name), max_steps=max_steps,
                             save_interval=3, **{**evaluated, **train})

    assert run(settings("whole", 12))[0].status == "completed"
    assert run(settings("split", 6))[0].status == "completed"
    assert run(settings("split", 12, from_resume=True))[0].status == "completed"
    ww, ws = final_weights(settings("whole", 12)), final_weights(settings("split", 12))
    assert all(torch.equal(ww[k], ws[k]) for k in ww)
    unevaluated = tiny_settings({"dropout": 0.1}, out_dir=str(tmp_path / "unevaluated"),
                                max_steps=12, save_interval=3)
    assert run(unevaluated)[0].status == "completed"
    wu = final_weights(unevaluated)
    assert all(torch.equal(ww[k], wu[k]) for k in ww)


def test_a_resume_that_takes_the_learning_rate_back_up_says_so(tiny_settings):
    """A completed run extended by a resume schedules its rate over the new length: past its
    decay, the rate went back up (0.0003 to 0.003 under wsd) with a warning that named only
    the changed max_steps."""
    settings = partial(tiny_settings, max_steps=4, save_interval=4, warmup_iters=0)
    assert run(settings())[0].status == "completed"
    result, events = run(settings(max_steps=8, from_resume=True))
    assert result.status == "completed"
    lr = settings().train.learning_rate
    was, now = learning_rate(3, 4, lr), learning_rate(4, 8, lr)
    assert [e.text for e in events if isinstance(e, LogMessage) and "goes back up" in e.text] == [
        "the schedule now spans 8 steps (the checkpoint's run planned 4): the learning rate "
        f"goes back up from {was:.3g} at step 4 to {now:.3g} at step 5, as if the run had been "
        "planned this long from its start"]


def test_the_first_log_after_a_resume_averages_the_steps_it_would_have(tiny_settings,
                                                                       tmp_path):
    """A stop between two logged steps (at step 3, logging every 2) kept no loss sums: the log
    at step 4 averaged step 4 alone, and step 3's loss was logged nowhere."""
    def settings(name, **train):
        return tiny_settings(out_dir=str(tmp_path / name), max_steps=6, log_interval=2,
                             eval_interval=3, eval_batches=1,
                             val_data_path="builtin:shakespeare-val", **train)

    def losses(events):
        return {e.step: e.loss for e in events if isinstance(e, StepMetrics)}

    whole = losses(run(settings("whole"))[1])
    # The evaluation at step 3 comes before the stop is checked: the stop falls mid-window.
    first, before = run(settings("split"), stop_when=lambda e: isinstance(e, EvalResult)
                        and e.step == 3)
    assert first.status == "stopped" and first.step == 3 and set(losses(before)) == {2}
    after = losses(run(settings("split", from_resume=True))[1])
    assert after == {step: loss for step, loss in whole.items() if step > 3}
    assert sorted(whole) == [2, 4, 6]


def test_resume_refuses_another_optimizer(tiny_settings):
    s = tiny_settings(max_steps=2, save_interval=2)
    assert run(s)[0].status == "completed"
    other = s.model_copy(update={"train": s.train.model_copy(
        update={"from_resume": True, "max_steps": 4, "optimizer": "muon"})})
    result, _ = run(other)
    assert result.status == "failed" and result.cause == "input"
    assert "train.optimizer (adamw → muon)" in result.reason


def test_resume_refuses_changed_data_order(tiny_settings):
    s = tiny_settings(max_steps=2, save_interval=2)
    run(s)
    changed = tiny_settings(max_steps=4, batch_size=8, from_resume=True)
    result, _ = run(changed)
    assert result.status == "failed" and result.cause == "input"
    assert "train.batch_size (4 → 8)" in result.reason


def test_a_vocabulary_the_embedding_cannot_hold_is_refused_by_the_engine_too(tiny_settings):
    """The form and the CLI ask the tokenizer.json; the engine asks the tokenizer it loaded
    (one that has no tokenizer.json comes here)."""
    result, _ = run(tiny_settings(model={"vocab_size": 120}))
    assert result.status == "failed" and result.cause == "input"
    assert result.reason == "model.vocab_size: (120) is smaller than the tokenizer's vocabulary " \
                            "(6400)"


def test_a_bad_line_refused_at_the_start_says_how_to_train_without_it(tiny_settings, tmp_path):
    """The refusal named the file, the line and why, and the dialog offered only "Back": the
    setting that trains without such lines was found in the inspect screen alone."""
    from minimind.event_text import describe

    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "To be, or not to be"}\nnot json\n' * 20)
    result, events = run(tiny_settings(data_path=str(data), packing=False))
    assert result.status == "failed" and result.cause == "input" and result.reason.startswith(
        f"train.data_path: {data}:2: line is not valid JSON")
    assert result.hint == ("set skip_bad_lines to train without such lines (they are counted, "
                           "the first few named)")
    assert describe(events[-1])[0].endswith(f"| hint: {result.hint}")
    assert run(tiny_settings(data_path=str(data), packing=False, skip_bad_lines=True)
               )[0].status == "completed"
    data.write_text("")  # a bad file, not a bad line: nothing to skip
    assert run(tiny_settings(data_path=str(data), packing=False))[0].hint == ""


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_settings, tmp_path, monkeypatch):
    original = MiniMindForCausalLM.forward
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls["n"] += 1
        if self.training and calls["n"] > 5:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(MiniMindForCausalLM, "forward", poisoned)
    settings = tiny_settings(max_steps=20, log_interval=10, save_interval=4)
    result, events = run(settings)
    assert result.status == "failed" and result.cause == "runtime"
    assert "NaN" in result.reason and "step 4" in result.reason and result.hint
    assert [e.step for e in events if isinstance(e, CheckpointSaved)] == [4]
    state = torch.load(tmp_path / "run" / "pretrain_128_resume.pth", weights_only=False)
    assert state["progress"]["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values())


@pytest.mark.parametrize("train, text", [
    ({"data_path": "/nonexistent/data.jsonl"}, "train.data_path: /nonexistent/data.jsonl"),
    ({"tokenizer_path": "/nonexistent/tok"}, "train.tokenizer_path: /nonexistent/tok"),
    ({"from_weight": "/nonexistent/w.pth"}, "train.from_weight"),
    ({"from_resume": True}, "train.from_resume: no resume checkpoint"),
])
def test_input_errors_stop_before_training(tiny_settings, train, text):
    result, events = run(tiny_settings(**train))
    assert result.status == "failed" and result.cause == "input"
    assert text in result.reason
    assert not any(isinstance(e, StepMetrics) for e in events)


def test_unwritable_out_dir(tiny_settings, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result, _ = run(tiny_settings(out_dir=str(blocker / "run")))
    assert result.cause == "input" and result.reason == (
        f"train.out_dir: {blocker} is a file, not a folder; move it away, or train into "
        "another --out_dir")  # (it said "cannot write to ... (Not a directory)")
    # A link to nothing is in the way as much: it said "cannot write to ... (File exists)".
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    result, _ = run(tiny_settings(out_dir=str(tmp_path / "dangling")))
    assert result.cause == "input" and result.reason == (
        f"train.out_dir: {tmp_path / 'dangling'} is a link to nothing (its target is missing, "
        "or the links loop), not a folder; move it away, or train into another --out_dir")
    (tmp_path / "locked").mkdir(mode=0o500)
    if os.access(tmp_path / "locked", os.W_OK):
        return  # root writes anywhere
    result, _ = run(tiny_settings(out_dir=str(tmp_path / "locked" / "run")))
    assert result.cause == "input" and result.reason.startswith("train.out_dir: cannot write")


def test_atomic_save_survives_a_crash_mid_write(tmp_path):
    target = tmp_path / "ckpt.pth"
    atomic_write_bytes(target, torch_bytes({"step": 1, "w": torch.ones(3)}))
    # A real process dies after writing the temp file but before the rename.
    code = textwrap.dedent(f"""
        import os, torch
        from minimind.atomic import atomic_write_bytes
        from minimind.checkpoint import torch_bytes
        os.fsync = lambda fd: os._exit(9)
        atomic_write_bytes({str(target)!r}, torch_bytes({{"step": 2, "w": torch.zeros(10_000)}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code])
    assert proc.returncode == 9
    assert torch.load(target, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] != []  # the stale temp file may remain...
    atomic_write_bytes(target, torch_bytes({"step": 3}))  # ...and never blocks the next save
    assert torch.load(target, weights_only=True) == {"step": 3}


def test_log_lines_hold_finite_numbers(tiny_settings):
    _, events = run(tiny_settings(max_steps=2))
    for e in events:
        if isinstance(e, StepMetrics):
            assert math.isfinite(e.loss) and math.isfinite(e.grad_norm) and e.lr > 0


def test_cuda_oom_becomes_a_failed_event_with_a_hint(tiny_settings, monkeypatch):
    def out_of_memory(self, *args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(MiniMindForCausalLM, "forward", out_of_memory)
    result, _ = run(tiny_settings())
    assert result.status == "failed" and result.cause == "runtime"
    assert result.reason.startswith("CUDA out of memory")
    assert "batch_size" in result.hint and "accumulation_steps" in result.hint


def test_from_weight_starts_from_saved_weights(tiny_settings, tmp_path):
    first = tiny_settings(out_dir=str(tmp_path / "first"), max_steps=20, learning_rate=3e-3)
    _, events = run(first)
    trained_loss = [e for e in events if isinstance(e, StepMetrics)][-1].loss
    fresh_loss = [e for e in events if isinstance(e, StepMetrics)][0].loss
    weights = tmp_path / "first" / "pretrain_128.pth"  # fp16, upstream format
    second = tiny_settings(out_dir=str(tmp_path / "second"), max_steps=1,
                           from_weight=str(weights), learning_rate=1e-9)
    _, events = run(second)
    assert any(getattr(e, "text", "").startswith("initialised from") for e in events)
    loss = next(e for e in events if isinstance(e, StepMetrics)).loss
    assert abs(loss - trained_loss) < abs(loss - fresh_loss)


def test_activation_checkpointing_gives_the_same_run(tiny_settings, tmp_path):
    plain = tiny_settings(out_dir=str(tmp_path / "plain"), max_steps=2, save_interval=2)
    ckpt = tiny_settings(out_dir=str(tmp_path / "ckpt"), max_steps=2, save_interval=2,
                         grad_checkpointing=True)
    assert run(plain)[0].status == run(ckpt)[0].status == "completed"
    a, b = final_weights(plain), final_weights(ckpt)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_packed_run_reports_skipped_bad_lines_even_from_the_cache(tiny_settings, tmp_path):
    data = tmp_path / "data.jsonl"
    lines = [f'{{"text": "{"word " * 40}{i}"}}' for i in range(40)]
    lines[3], lines[17] = '{"text": oops}', '{"txt": "x"}'
    data.write_text("\n".join(lines) + "\n")
    for _ in range(2):  # the second run finds the token cache and still reports
        result, events = run(tiny_settings(data_path=str(data), packing=True, skip_bad_lines=True,
                                           max_steps=1, overwrite=True))
        assert result.status == "completed", result
        texts = [e.text for e in events if getattr(e, "kind", "") == "log"]
        assert any("skipped 2 bad lines, first: line 4:" in t for t in texts), texts


def test_checkpoint_and_config_files_get_the_usual_mode(tiny_settings, tmp_path):
    import os
    old = os.umask(0o022)
    try:
        run(tiny_settings(max_steps=1))
    finally:
        os.umask(old)
    out = tmp_path / "run"
    for name in ("pretrain_128.pth", "pretrain_128_resume.pth", "config.toml", "metrics.jsonl"):
        assert (out / name).stat().st_mode & 0o777 == 0o644, name


def test_resume_file_loads_with_weights_only(tiny_settings, tmp_path):
    run(tiny_settings(max_steps=2, save_interval=2))
    state = torch.load(tmp_path / "run" / "pretrain_128_resume.pth", weights_only=True)
    assert state["progress"]["step"] == 2 and state["data"]["samples"] > 0


def test_a_resume_whose_settings_name_another_file_names_the_one_there(tiny_settings):
    """The resume file's name comes from the settings: a resume with another hidden_size
    looked for pretrain_64_resume.pth and said only that it was missing."""
    assert run(tiny_settings(max_steps=1))[0].status == "completed"
    result, _ = run(tiny_settings(max_steps=2, from_resume=True, save_weight="mine"))
    assert result.cause == "input" and result.reason.endswith(
        "mine_128_resume.pth; the folder holds pretrain_128_resume.pth: resume with the "
        "settings that name it (save_weight, hidden_size, use_moe, lora_name as its run had "
        "them)")
    assert run(tiny_settings(max_steps=2, from_resume=True))[0].status == "completed"


def test_sample_prompts_the_models_context_cannot_continue_are_said(tiny_settings):
    """A prompt longer than max_position_embeddings gave empty samples, and a continuation
    the context cuts gave short ones, without a word (generate refuses the same prompt)."""
    model = {"max_position_embeddings": 64}
    result, events = run(tiny_settings(model, max_steps=1, sample_prompts=["word " * 70]))
    assert (result.status, result.cause) == ("failed", "input")
    assert result.reason == ("train.sample_prompts: prompt 1 is 72 tokens and the model's "
                             "context is max_position_embeddings 64: no room for a "
                             "continuation; shorten it")
    assert not any(isinstance(e, StepMetrics) for e in events)
    result, events = run(tiny_settings(model, max_steps=1, sample_prompts=["ROMEO:", "x"],
                                       sample_tokens=62, warmup_iters=0))
    assert result.status == "completed"
    assert [e.text for e in events if getattr(e, "level", "") == "warning"] == [
        "sample prompt 1's continuation stops at 61 tokens, where the model's context "
        "(max_position_embeddings 64) ends, not at sample_tokens 62"]
