"""Run folders with real processes: one trainer per folder, no overwrite without consent, crash
detection, run.json, and following a live metrics.jsonl (partial lines, resume, crash)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from minimind.checkpoint import load_resume
from minimind.events import Event, RunStarted, StepMetrics
from minimind.follow import Follower
from minimind.run_folder import RunFolder, replaced_files_text
from minimind_tui.run.history import RunHistory
from minimind_tui.run.metrics_reader import parse_lines

CLI = [sys.executable, "-m", "minimind_tui", "--no-ui"]
QUICK = ["--preset", "tiny", "--max_seq_len", "64", "--batch_size", "4", "--dtype", "float32",
         "--val_data_path", "", "--eval_interval", "0", "--log_interval", "1", "--packing", "0"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


class Events(list):
    """A sink that keeps what the engine emits."""

    emit = list.append

    def close(self):
        pass


def read_events(path) -> list[Event]:
    """Every event of a finished metrics file."""
    items, skipped = parse_lines(path.read_bytes().splitlines())
    assert skipped == 0 and all(isinstance(item, Event) for item in items)
    return items


def poll(follower: Follower) -> tuple[list[Event], int, bool, bool]:
    """One poll's events, skipped lines, whether the file started over, and caught up."""
    chunk = follower.poll_lines()
    events, skipped = parse_lines(chunk.lines)
    return events, skipped + chunk.oversized, chunk.reset, chunk.caught_up


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *QUICK, *args], capture_output=True, text=True, env=ENV,
                          timeout=300)


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *QUICK, "--max_steps", "100000", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def wait_for(proc: subprocess.Popen, prefix: str) -> None:
    for line in proc.stdout:
        if line.startswith(prefix):
            return
    raise AssertionError(proc.communicate()[1][-2000:])


def test_a_second_trainer_is_refused_while_the_first_is_alive(tmp_path):
    first = start("--out_dir", str(tmp_path))
    try:
        wait_for(first, "Epoch:[1/1](1/")
        assert RunFolder(tmp_path).state() == "running"
        second = cli("--max_steps", "1", "--out_dir", str(tmp_path), "--overwrite", "1")
        assert second.returncode == 2
        assert f"{tmp_path} is in use by a running training" in second.stderr
        assert f"minimind-tui watch {tmp_path}" in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert RunFolder(tmp_path).state() == "stopped"


def test_a_finished_run_is_never_replaced_without_consent(tmp_path):
    assert cli("--max_steps", "2", "--out_dir", str(tmp_path)).returncode == 0
    refused = cli("--max_steps", "2", "--out_dir", str(tmp_path))
    assert refused.returncode == 2
    assert "already holds a run (completed at step 2" in refused.stderr
    # Resumed as it is, a completed run has nothing left to train: the advice says so.
    assert "continue the run with --from_resume 1 and more epochs or max_steps, " in \
        refused.stderr and "--overwrite 1" in refused.stderr
    resumed = cli("--max_steps", "3", "--out_dir", str(tmp_path), "--from_resume", "1")
    assert resumed.returncode == 0, resumed.stderr
    history = read_events(tmp_path / "metrics.jsonl")
    assert [e.start_step for e in history if isinstance(e, RunStarted)] == [0, 2]
    replaced = cli("--max_steps", "1", "--out_dir", str(tmp_path), "--overwrite", "1")
    assert replaced.returncode == 0, replaced.stderr
    history = read_events(tmp_path / "metrics.jsonl")
    assert [e.step for e in history if isinstance(e, StepMetrics)] == [1]
    status = RunFolder(tmp_path).status()
    assert status.state == "completed" and status.step == 1 and status.resumed_from == 0
    # The run's record keeps no answer of its launch: reused as a preset (to repeat the run),
    # it does not consent to replace the run it names, nor to resume it.
    assert "overwrite" not in (tmp_path / "config.toml").read_text()
    repeated = subprocess.run([*CLI, "--preset", str(tmp_path / "config.toml")],
                              capture_output=True, text=True, env=ENV, timeout=300)
    assert repeated.returncode == 2 and "already holds a run (completed at step 1" in \
        repeated.stderr, repeated.stderr
    # Nor does a record written before the answers were left out, which holds them.
    from minimind_tui.form.presets import load_settings

    old_record = tmp_path / "old" / "config.toml"
    old_record.parent.mkdir()
    old_record.write_text((tmp_path / "config.toml").read_text().replace(
        "[train]\n", "[train]\noverwrite = true\nfrom_resume = true\nallow_data_change = true\n"))
    assert "overwrite = true" in old_record.read_text()
    t = load_settings(str(old_record)).train
    assert (t.overwrite, t.from_resume, t.allow_data_change) == (False, False, False)


def test_a_run_whose_status_was_lost_is_told_by_its_metrics(tmp_path):
    """run.json deleted (or garbled): the run is what its metrics.jsonl says, never "crashed"
    for a run that ended, nor a process of pid 0."""
    assert cli("--max_steps", "2", "--out_dir", str(tmp_path)).returncode == 0
    (tmp_path / "run.json").unlink()
    folder = RunFolder(tmp_path)
    assert folder.state() == "completed" and folder.status().step == 2
    assert folder.describe().startswith("completed at step 2, last update ")
    assert folder.describe().endswith(", as its metrics.jsonl tells: there is no run.json")
    refused = cli("--max_steps", "2", "--out_dir", str(tmp_path))
    assert refused.returncode == 2 and "already holds a run (completed at step 2" in \
        refused.stderr and "and more epochs or max_steps" in refused.stderr, refused.stderr
    (tmp_path / "run.json").write_text("{not json")
    assert folder.state() == "unknown" and folder.status().state == "completed"
    # Cut off before its end: crashed, and no process is named.
    (tmp_path / "run.json").unlink()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "metrics.jsonl").write_text("".join(
        line for line in lines if not line.startswith('{"kind": "finished"')))
    assert folder.state() == "crashed" and folder.describe().startswith("crashed at step 2, ")
    from minimind_tui.cli.watch_plain import crash_line

    assert "| its process is gone" in crash_line(folder, None)
    # Nor an event to tell it: said so, not "no run.json yet".
    (tmp_path / "metrics.jsonl").write_text('{"kind": "step", "step": "five"}\n')
    assert folder.describe() == "crashed: no run.json, nor a readable event in its metrics.jsonl"


def test_a_killed_run_is_reported_as_crashed_and_can_be_resumed(tmp_path):
    proc = start("--out_dir", str(tmp_path), "--save_interval", "2")
    wait_for(proc, "[checkpoint] step 2")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    folder = RunFolder(tmp_path)
    assert folder.status().state == "running" and folder.state() == "crashed"
    assert folder.describe().startswith("crashed at step")
    refused = cli("--max_steps", "4", "--out_dir", str(tmp_path))
    assert refused.returncode == 2 and "already holds a run (crashed" in refused.stderr
    assert "continue the run with --from_resume 1" in refused.stderr
    resumed = cli("--max_steps", "4", "--out_dir", str(tmp_path), "--from_resume", "1")
    assert resumed.returncode == 0, resumed.stderr
    assert "the previous process crashed" in resumed.stdout
    assert folder.state() == "completed"


def test_a_crashed_runs_step_is_the_last_one_its_log_shows(tmp_path):
    """run.json is written every few seconds; a kill between two writes left `runs`, `watch`
    and the refusals naming an earlier step (and loss) than metrics.jsonl shows."""
    assert cli("--max_steps", "4", "--out_dir", str(tmp_path)).returncode == 0
    status_file = tmp_path / "run.json"
    record = json.loads(status_file.read_text())
    logged = [e for e in read_events(tmp_path / "metrics.jsonl") if isinstance(e, StepMetrics)]
    # As a kill leaves it: still "running", two steps behind, its process gone.
    record.update(state="running", step=2, loss=123.0, process_started=1.0)
    status_file.write_text(json.dumps(record))
    folder = RunFolder(tmp_path)
    assert folder.state() == "crashed"
    assert (folder.status().step, folder.status().loss) == (4, logged[-1].loss)
    assert folder.describe().startswith("crashed at step 4, last update ")


def test_a_run_killed_before_its_first_checkpoint_is_not_offered_a_resume(tmp_path):
    proc = start("--out_dir", str(tmp_path), "--save_interval", "0")
    wait_for(proc, "Epoch:[1/1](1/")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert RunFolder(tmp_path).state() == "crashed" and not RunFolder(tmp_path).resumable()
    refused = cli("--max_steps", "4", "--out_dir", str(tmp_path))
    assert refused.returncode == 2 and "already holds a run (crashed" in refused.stderr
    assert "from_resume" not in refused.stderr
    assert refused.stderr.rstrip().endswith("train into another --out_dir, or replace it with "
                                            "--overwrite 1")


def test_following_a_live_run_through_a_crash_and_a_resume(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    follower, history = Follower(metrics), RunHistory()

    def catch_up() -> None:
        while True:
            events, skipped, reset, caught_up = poll(follower)
            assert not reset and skipped == 0
            history.apply(events)
            if caught_up:
                return

    proc = start("--out_dir", str(tmp_path), "--save_interval", "3")
    try:
        wait_for(proc, "[checkpoint] step 3")
        wait_for(proc, "Epoch:[1/1](5/")
        deadline = time.monotonic() + 30
        while len(history.steps) < 5:  # mid-run: the file is written a moment after stdout
            assert time.monotonic() < deadline
            catch_up()
            time.sleep(0.05)
        assert history.started is not None
    finally:
        proc.send_signal(signal.SIGKILL)  # no final event: a crash
        proc.communicate(timeout=60)
    catch_up()
    crashed_at = int(history.steps[-1])
    # The last checkpoint before the kill: step 3, or 6 when a loaded machine let it get there.
    # The kill can land between a checkpoint's files and its event, so the files say which.
    saved = load_resume(tmp_path / "pretrain_128_resume.pth")["progress"]["step"]
    assert history.checkpoint.step in (saved, saved - 3)
    assert history.finished is None and RunFolder(tmp_path).state() == "crashed"
    assert cli("--max_steps", "8", "--out_dir", str(tmp_path), "--from_resume", "1",
               "--save_interval", "3").returncode == 0
    catch_up()
    assert history.resumed_at == [saved] and crashed_at >= saved
    assert list(history.steps) == list(range(1, 9))  # the lost steps replaced, not doubled
    assert history.finished.status == "completed"


def test_the_follower_keeps_a_partial_line_and_notices_a_new_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    follower = Follower(path, chunk=64)
    assert poll(follower)[0] == []  # no file yet
    line = json.dumps({"kind": "log", "time": 1.0, "level": "info", "text": "hello"}) + "\n"
    path.write_text(line + line[:20])  # the writer is mid-line
    events = []
    while True:
        got, _, _, caught_up = poll(follower)
        events += got
        if caught_up:
            break
    assert [e.text for e in events] == ["hello"]
    with path.open("a") as f:
        f.write(line[20:] + "not json\n")
    got, skipped, _, _ = poll(follower)
    assert [e.text for e in got] == ["hello"] and skipped == 1
    path.unlink()
    path.write_text(line)  # replaced by a new run
    got, _, reset, _ = poll(follower)
    assert reset and len(got) == 1


def test_run_json_has_a_heartbeat(tmp_path, monkeypatch):
    from minimind import status_sink

    monkeypatch.setattr(status_sink, "HEARTBEAT_SECONDS", 0.2)
    folder = RunFolder(tmp_path)
    sink = status_sink.StatusSink(folder)
    time.sleep(0.1)
    first = folder.status().updated
    time.sleep(0.6)
    assert folder.status().updated > first and folder.state() == "running"
    sink.close()


def test_weights_a_run_would_replace_need_the_same_consent_as_a_run(tmp_path):
    # The case: weights copied into a fresh folder, and fine-tuned from in place.
    assert cli("--max_steps", "1", "--out_dir", str(tmp_path / "base")).returncode == 0
    ft = tmp_path / "ft"
    ft.mkdir()
    source = ft / "pretrain_128.pth"
    source.write_bytes((tmp_path / "base" / "pretrain_128.pth").read_bytes())
    kept = source.read_bytes()
    refused = cli("--max_steps", "1", "--out_dir", str(ft), "--from_weight", str(source))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert (f"{ft} already holds pretrain_128.pth (the from_weight this run starts from), "
            "which this run would replace") in refused.stderr
    assert "overwrite" in refused.stderr and "from_resume" not in refused.stderr
    # Refused before anything is written into the folder (not even the lock file).
    assert source.read_bytes() == kept and sorted(p.name for p in ft.iterdir()) == [
        "pretrain_128.pth"]
    # Upstream's own out/: a pretrain_<hidden>.pth of a user's, no run of ours (a hostile
    # variant: a dangling symlink of that name, which a save would replace just the same).
    upstream = tmp_path / "out"
    upstream.mkdir()
    (upstream / "pretrain_128.pth").symlink_to(tmp_path / "gone.pth")
    refused = cli("--max_steps", "1", "--out_dir", str(upstream))
    assert refused.returncode == 2 and "already holds pretrain_128.pth, which" in refused.stderr
    assert (upstream / "pretrain_128.pth").is_symlink()
    # Consent given: the run starts from the file, then replaces it with its own weights.
    replaced = cli("--max_steps", "1", "--out_dir", str(ft), "--from_weight", str(source),
                   "--overwrite", "1")
    assert replaced.returncode == 0, replaced.stderr
    assert "this run replaces pretrain_128.pth (the from_weight this run starts from) once it " \
           "begins" in replaced.stdout
    assert f"initialised from {source}" in replaced.stdout
    assert source.read_bytes() != kept and RunFolder(ft).state() == "completed"
    # A lora run's adapters lie in lora/: the refusal said the folder itself held them.
    (tmp_path / "adapters" / "lora").mkdir(parents=True)
    (tmp_path / "adapters" / "lora" / "x_128.pth").write_bytes(b"someone's adapters")
    refusal = RunFolder(tmp_path / "adapters").refusal(
        resume=False, overwrite=False, weights_name="lora/x_128.pth", from_weight="")
    assert str(refusal).startswith(f"{tmp_path / 'adapters'} already holds lora/x_128.pth, "
                                   "which this run would replace")


def test_a_lora_run_may_not_overwrite_the_base_it_starts_from(tmp_path):
    """A lora run into its base's own folder with --overwrite 1 deleted the base with the old
    run, trained, said "completed", and left adapters nothing could open again."""
    base = tmp_path / "base"
    assert cli("--max_steps", "1", "--out_dir", str(base)).returncode == 0
    before = sorted(p.name for p in base.iterdir())
    refused = cli("--max_steps", "1", "--out_dir", str(base), "--stage", "lora", "--data_path",
                  "builtin:shakespeare-chat", "--from_weight", str(base / "pretrain_128.pth"),
                  "--overwrite", "1")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert (f"train.out_dir: {base / 'pretrain_128.pth'}, the base this lora run starts from "
            "(from_weight), is one of the files --overwrite would delete here") \
        in refused.stderr, refused.stderr
    assert sorted(p.name for p in base.iterdir()) == before and RunFolder(base).state() == \
        "completed"
    # Nor when from_weight names the run's folder, which stands for its weights.
    refusal = RunFolder(base).refusal(resume=False, overwrite=True, from_weight=str(base),
                                      weights_name="lora/lora_128.pth")
    assert str(refusal).startswith(f"{base}, the base this lora run starts from (from_weight), "
                                   "is one of the files --overwrite would delete here")
    assert "(the from_weight this run starts from)" in replaced_files_text(
        base, [base / "pretrain_128.pth"], str(base))


def test_an_overwrite_removes_every_file_of_the_run_it_replaces(tmp_path):
    folder = RunFolder(tmp_path)
    names = ["run.json", "metrics.jsonl", "config.toml", "error.log", "launch.toml",
             "launch.log", "pretrain_128.pth", "pretrain_128_resume.pth", ".run.json.x1.tmp"]
    for name in names + ["notes.txt", "pretrain_512.pth"]:  # the last two are the user's
        (tmp_path / name).write_text("{}")
    note = folder.claim(resume=False, overwrite=True, weights_name="pretrain_128.pth")
    try:
        assert note.startswith("this run replaces a run (")
        assert not (tmp_path / ".run.json.x1.tmp").exists()  # a killed status write, cleaned
        folder.start_fresh()
    finally:
        folder.release()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.lock", "notes.txt",
                                                          "pretrain_512.pth"]


def test_run_json_follows_each_step_within_the_interval_and_ends_with_the_run(tmp_path):
    from minimind.events import RunFinished
    from minimind.status_sink import StatusSink

    folder = RunFolder(tmp_path)
    sink = StatusSink(folder, min_interval=0.1)
    try:
        for n in (1, 2, 3):
            sink.emit(StepMetrics(step=n, total_steps=9, epoch=1, epochs=1, epoch_step=n,
                                  steps_per_epoch=9, loss=3.0, logits_loss=3.0, aux_loss=0.0,
                                  lr=1e-3, grad_norm=1.0, tokens_per_sec=1.0,
                                  tokens_seen=n * 64, elapsed=n * 0.5, eta_seconds=1.0,
                                  step_time=0.5))
            deadline = time.monotonic() + 5  # the heartbeat alone would take 30 s
            while (folder.status() is None or folder.status().step != n):
                assert time.monotonic() < deadline, folder.status()
                time.sleep(0.02)
        sink.emit(RunFinished(status="stopped", step=4))
    finally:
        sink.close()
    status = folder.status()
    assert (status.state, status.step, status.tokens_seen) == ("stopped", 4, 256)
    assert status.tokens_per_sec == 128.0


def test_a_resumed_runs_status_keeps_what_came_before_it(tmp_path):
    """run.json after a resume: the best validation loss of the earlier segment (a worse one
    after it does not replace it), and a resume with nothing left to train keeps the run's
    tokens, time, loss and checkpoint instead of blanking them. Running into max_steps below
    the checkpoint's step is refused before the folder is touched."""
    from minimind.engine import Trainer
    from minimind_tui.form.presets import load_settings

    def run(max_steps: int, **train):
        settings = load_settings("tiny", {"train": {
            "out_dir": str(tmp_path), "max_steps": max_steps, "max_seq_len": 64,
            "batch_size": 4, "dtype": "float32", "packing": False, "log_interval": 1,
            "val_data_path": "builtin:shakespeare-val", "eval_batches": 2,
            "sample_prompts": [], "eval_interval": 4, **train}})
        return Trainer(settings).run()

    assert run(8, save_interval=0).status == "completed"
    before = RunFolder(tmp_path).status()
    assert before.best_val_loss is not None and before.tokens_seen > 0
    # A completed run has nothing left to train: a resume would only evaluate again.
    again = run(8, from_resume=True)
    assert (again.status, again.cause) == ("failed", "input")
    assert again.reason == ("train.from_resume: the run completed at step 8, where these "
                            "settings end it too: nothing is left to train; raise max_steps "
                            "to train on")
    assert RunFolder(tmp_path).status() == before
    # One stopped at its last step, before its final evaluation, resumes to finish.
    RunFolder(tmp_path).write_status(before.model_copy(update={"state": "stopped"}))
    assert run(8, from_resume=True).status == "completed"
    after = RunFolder(tmp_path).status()
    assert (after.step, after.tokens_seen, after.loss, after.checkpoint_step) == \
        (8, before.tokens_seen, before.loss, 8)
    # The checkpoint's time also counts the evaluation after the last logged step.
    assert after.elapsed >= before.elapsed > 0 and after.tokens_per_sec > 0
    assert after.resumed_from == 8
    assert after.best_val_loss == before.best_val_loss

    assert run(10, from_resume=True, learning_rate=1.0, eval_interval=1).status == "completed"
    status = RunFolder(tmp_path).status()
    assert status.val_loss > before.best_val_loss == status.best_val_loss

    back = run(4, from_resume=True)
    assert back.status == "failed" and back.cause == "input"
    assert back.reason.startswith("train.max_steps: 4 is below step 10")
    assert RunFolder(tmp_path).status() == status  # refused before anything was written

    # run.json lost: the resume folds the best (and the loss it resumes at) from metrics.jsonl.
    (tmp_path / "run.json").unlink()
    assert run(11, from_resume=True, learning_rate=1.0, eval_interval=1).status == "completed"
    assert RunFolder(tmp_path).status().best_val_loss == before.best_val_loss


def test_a_resume_whose_epochs_end_before_its_checkpoint_is_refused(tmp_path):
    """Fewer epochs than the checkpoint has trained: refused naming epochs and how many it
    needs (it "completed" at a step beyond its own total, 6/4), before the folder is touched."""
    import json as json_module

    from minimind.engine import Trainer
    from minimind_tui.form.presets import load_settings

    data = tmp_path / "eight.jsonl"
    data.write_text("".join(json_module.dumps({"text": f"line {i} of the play"}) + "\n"
                            for i in range(8)))

    def run(epochs: int, **train):
        return Trainer(load_settings("tiny", {"train": {
            "out_dir": str(tmp_path / "run"), "data_path": str(data), "val_data_path": "",
            "epochs": epochs, "max_steps": 0, "batch_size": 4, "max_seq_len": 32,
            "eval_interval": 0,
            "packing": False, "dtype": "float32", "sample_prompts": [], **train}})).run()

    assert run(3).status == "completed"  # 2 steps an epoch
    status = RunFolder(tmp_path / "run").status()
    refused = run(2, from_resume=True)
    assert refused.cause == "input" and refused.reason == (
        "train.epochs: 2 epoch(s) of 2 steps end at step 4, before step 6, where the checkpoint "
        "stands: set epochs to at least 3")
    assert RunFolder(tmp_path / "run").status() == status
    assert run(4, from_resume=True).status == "completed"


def test_a_resume_from_a_status_whose_best_is_not_a_number_finds_a_new_best(tmp_path):
    """run.json is a file a user (or a sync) may have mangled: a NaN best validation loss read
    back from it must not stand forever, since no loss compares lower than NaN."""
    from minimind.events import EvalResult
    from minimind.run_status import RunStatus

    status = RunStatus.model_validate_json('{"best_val_loss": NaN, "val_loss": NaN}')
    status.apply(EvalResult(step=5, val_loss=6.5, tokens=10))
    assert status.best_val_loss == 6.5
    status.apply(EvalResult(step=6, val_loss=7.0, tokens=10))
    assert status.best_val_loss == 6.5


def test_a_resume_forgets_the_evaluations_of_the_steps_it_drops():
    """Killed at step 150 after a save at 100: the evaluation at 150 measured weights no file
    holds, and the resume trains 101-150 again. `runs` kept its 6.0645 as the best val loss
    of a run whose saved weights never reached it (and as its val loss until the next one)."""
    from minimind.events import CheckpointSaved, EvalResult
    from minimind.run_status import RunStatus

    def started(step: int) -> RunStarted:
        return RunStarted(settings={}, parameters=1, active_parameters=1, device="cpu",
                          device_name="cpu", world_size=1, tokens_per_step=8,
                          steps_per_epoch=1000, total_steps=1000, start_step=step,
                          flops_per_token=1.0, peak_flops=None, out_dir="out")

    status = RunStatus()
    status.apply(started(0))
    for event in (EvalResult(step=50, val_loss=6.3, tokens=10),
                  CheckpointSaved(step=100, weights_path="w", resume_path="r", save_id="a"),
                  EvalResult(step=100, val_loss=6.2, tokens=10),  # (written after its save)
                  EvalResult(step=150, val_loss=6.0645, tokens=10)):
        status.apply(event)
    status.step, status.loss = 160, 5.0  # (as a logged step after it leaves them)
    assert (status.val_loss, status.best_val_loss) == (6.0645, 6.0645)
    status.apply(started(100))
    assert (status.val_loss, status.best_val_loss, status.loss) == (6.2, 6.2, None)
    status.apply(EvalResult(step=150, val_loss=6.0953, tokens=10))
    assert status.best_val_loss == 6.0953
    # Stopped at its checkpoint, nothing is dropped; a run.json from before the record of the
    # checkpoint's evaluations keeps what it holds.
    status.apply(CheckpointSaved(step=150, weights_path="w", resume_path="r", save_id="b"))
    status.apply(started(150))
    assert (status.val_loss, status.best_val_loss) == (6.0953, 6.0953)
    old = RunStatus(step=160, checkpoint_step=100, val_loss=6.0, best_val_loss=6.0)
    old.apply(started(100))
    assert (old.val_loss, old.best_val_loss) == (6.0, 6.0)


def test_a_start_refused_after_it_took_the_folder_leaves_no_trace(tmp_path, tiny_settings):
    """A typo in data_path is found after the folder was made and locked: the folders made for
    the run go again (a lora run's lora/ too), and a folder of the user's keeps only what it
    held (it kept an empty out_dir, or a stray `.run.lock`)."""
    from minimind.engine import Trainer

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "To be"}\nnot json\n')
    kept = tmp_path / "mine"
    kept.mkdir()
    (kept / "notes.txt").write_text("the user's")
    for out_dir in (tmp_path / "new" / "a" / "b", kept):
        result = Trainer(tiny_settings(data_path=str(bad), out_dir=str(out_dir))).run()
        assert result.cause == "input" and "bad.jsonl:2" in result.reason
    weights = tmp_path / "weights.pth"
    assert Trainer(tiny_settings(out_dir=str(tmp_path / "base"), max_steps=1)).run().status \
        == "completed"
    (tmp_path / "base" / "pretrain_128.pth").rename(weights)
    lora = tiny_settings(stage="lora", packing=False, from_weight=str(weights), data_path=str(bad),
                         out_dir=str(tmp_path / "new" / "lora-run"))
    assert Trainer(lora).run().cause == "input"
    assert not (tmp_path / "new").exists()
    assert [p.name for p in kept.iterdir()] == ["notes.txt"]


def test_a_claim_whose_lock_file_was_removed_under_it_locks_the_folders_new_one(tmp_path,
                                                                                 monkeypatch):
    """A start that gives the folder up removes its lock file while holding it: another claim
    that opened that file just before must not keep a lock on a file no one else will see."""
    import fcntl

    real_flock, locked = fcntl.flock, []

    def flock(fd: int, operation: int) -> None:
        if not locked:
            (tmp_path / ".run.lock").unlink()  # the holder abandoned the folder meanwhile
        locked.append(fd)
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock)
    folder = RunFolder(tmp_path)
    folder.claim(resume=False, overwrite=False)
    try:
        assert len(locked) == 2
        assert os.fstat(folder.lock_fd).st_ino == os.stat(tmp_path / ".run.lock").st_ino
    finally:
        folder.release()


def test_a_resume_says_which_settings_changed_since_the_checkpoint(tiny_settings):
    """A resume may change the schedule, clipping, precision or length; it did so in silence
    (and config.toml then told the whole run that way): a resume run without a flag the run
    was started with is the usual way to get it."""
    from minimind.engine import Trainer
    from minimind.events import LogMessage

    def changes(**train) -> list[str]:
        events = Events()
        assert Trainer(tiny_settings(**train), [events]).run().status == "completed"
        return [e.text for e in events if isinstance(e, LogMessage)
                and e.text.startswith("resuming with settings")]

    assert changes(max_steps=2, lr_schedule="wsd") == []
    assert changes(max_steps=3, lr_schedule="wsd", from_resume=True) == [
        "resuming with settings the checkpoint's run did not use (from step 3 on): "
        "train.max_steps (2 → 3)"]
    assert changes(max_steps=4, from_resume=True, grad_clip=0.5) == [
        "resuming with settings the checkpoint's run did not use (from step 4 on): "
        "train.max_steps (3 → 4), train.lr_schedule (wsd → cosine), "
        "train.grad_clip (1.0 → 0.5)"]
    # The folder's record holds what the console said, in the part of the run it concerns
    # (said while preparing, before metrics.jsonl was open, it never reached the file).
    events = read_events(Path(tiny_settings().train.out_dir) / "metrics.jsonl")
    starts = [i for i, e in enumerate(events) if isinstance(e, RunStarted)]
    said = [i for i, e in enumerate(events) if isinstance(e, LogMessage)
            and e.text.startswith("resuming with settings")]
    assert len(starts) == 3 and said == [starts[1] + 1, starts[2] + 1]


def test_a_resume_whose_records_disagree_names_both(tiny_settings):
    """config.toml edited after the checkpoint: the start's check (config.toml) refused the
    checkpoint's batch_size and the engine's (the checkpoint) refused config.toml's, each
    naming its own record only, and the engine's said "[failed] at step 0"."""
    from minimind.engine import Trainer
    from minimind.environment import validate_for_start
    from minimind.event_text import describe

    assert Trainer(tiny_settings(max_steps=4, save_interval=2), []).run().status == "completed"
    folder = Path(tiny_settings().train.out_dir)
    config = folder / "config.toml"
    config.write_text(config.read_text().replace("batch_size = 4", "batch_size = 8"))
    settings = tiny_settings(max_steps=6, from_resume=True)
    assert [str(p) for p in validate_for_start(settings.model_dump(mode="json"))[1]] == [
        f"train.from_resume: the run in {folder} (config.toml) used different settings, so it "
        "cannot continue exactly: train.batch_size (8 → 4)"]
    events = Events()
    result = Trainer(tiny_settings(max_steps=6, from_resume=True, batch_size=8), [events]).run()
    assert result.status == "failed" and result.reason == (
        "train.from_resume: the checkpoint's run used different settings, so it cannot "
        f"continue exactly: train.batch_size (4 → 8); but {config} records these settings: "
        "the run's two records disagree, so one was changed after the checkpoint was written; "
        "resume with the checkpoint's values and restore config.toml to match")
    assert describe(events[-1])[0].startswith("[failed] before training | train.from_resume:")


def test_a_status_that_cannot_be_written_is_said_once(tiny_settings, monkeypatch):
    """run.json on a full disk: the run goes on, and says that runs and watch lag behind (it
    said nothing, and `runs` showed the run at its resume step for good)."""
    import errno

    from minimind.engine import Trainer
    from minimind.events import LogMessage

    def full_disk(self, status):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(RunFolder, "write_status", full_disk)
    settings, events = tiny_settings(), Events()
    assert Trainer(settings, [events]).run().status == "completed"
    assert [e.text for e in events if isinstance(e, LogMessage) and "run.json" in e.text] == [
        f"{settings.train.out_dir}/run.json could not be written (No space left on device): "
        "runs and watch show this run as it stood before"]


def test_a_run_folder_moved_while_its_run_trains_is_said(tiny_settings):
    """The run made a new folder at the old path for its run.json and checkpoints, while
    metrics.jsonl went on into the moved one, and said nothing of the split."""
    from minimind.engine import Trainer
    from minimind.events import LogMessage

    settings = tiny_settings(max_steps=4, save_interval=2)
    folder = Path(settings.train.out_dir)

    class MoveAtStepOne(Events):
        def emit(self, event):
            if isinstance(event, StepMetrics) and event.step == 1:
                folder.rename(folder.with_name("moved"))
            self.append(event)

    events = MoveAtStepOne()
    assert Trainer(settings, [events]).run().status == "completed"
    assert [e.text for e in events if isinstance(e, LogMessage) and "moved" in e.text] == [
        f"{folder} was moved or deleted while the run trained: run.json and the checkpoints "
        "from here on go to a new folder at that path; metrics.jsonl goes on in the folder moved "
        "(or is lost with it, deleted)"]
    assert (folder / "pretrain_128.pth").is_file()
    assert (folder.with_name("moved") / "metrics.jsonl").is_file()


def test_a_base_taken_beside_a_climbing_out_dir_is_found_from_any_folder(tmp_path,
                                                                          monkeypatch):
    """Upstream's habit: runs started in trainer/ write to ../out/sft and start from
    ../out/... . From any other folder, `runs` listed such a base as missing and generate and
    export called it gone."""
    from minimind.environment import as_the_run_took_it, start_unknown

    run = tmp_path / "out" / "sft"
    monkeypatch.chdir(tmp_path)  # not trainer/, where the run was started
    for out_dir in ("../out/sft", "./../out/sft"):
        assert as_the_run_took_it("../out/tiny/pretrain_128.pth", run, out_dir) == \
            tmp_path / "out" / "tiny" / "pretrain_128.pth"
        # In trainer/ itself, whose name nothing recorded: from the current folder, as before.
        assert as_the_run_took_it("base.pth", run, out_dir) == Path("base.pth")
    assert as_the_run_took_it("out/base.pth", run, "out/sft") == Path("out/base.pth")
    assert as_the_run_took_it("out/base.pth", tmp_path / "a" / "out" / "sft", "out/sft") == \
        tmp_path / "a" / "out" / "base.pth"
    # Trained into the folder it was started in: that folder (it was the current one).
    for out_dir in (".", "./"):
        assert as_the_run_took_it("base.pth", run, out_dir) == run / "base.pth"
        assert not start_unknown("base.pth", run, out_dir)
    # A folder renamed off its out_dir cannot tell it; an absolute path needs no start.
    assert start_unknown("out/base.pth", tmp_path / "out" / "sft-keep", "out/sft")
    assert not start_unknown(str(tmp_path / "base.pth"), tmp_path / "out" / "sft-keep", "out/sft")


def test_a_start_refuses_the_resume_the_run_folder_says_cannot_go_on(tiny_settings):
    """The form said "ready to start" for a resume the engine then refused while preparing:
    nothing left to train, no checkpoint, or a setting the run may not change. A start checks
    the folder's own record first (config.toml, run.json), as the form does on every change."""
    from minimind.engine import Trainer
    from minimind.environment import validate_for_start

    settings = tiny_settings(max_steps=2, save_interval=2)
    folder = Path(settings.train.out_dir)

    def problems(**train) -> list[str]:
        data = settings.model_dump(mode="json")
        data["train"].update(train)
        return [str(p) for p in validate_for_start(data)[1]]

    assert problems(from_resume=True) == [
        f"train.from_resume: no resume checkpoint at {folder / 'pretrain_128_resume.pth'}"]
    assert Trainer(settings).run().status == "completed"
    assert problems(from_resume=True) == [
        "train.from_resume: the run completed at step 2, where these settings end it too: "
        "nothing is left to train; raise max_steps to train on"]
    assert problems(from_resume=True, max_steps=1) == [
        "train.max_steps: 1 is below step 2, where the checkpoint stands: set max_steps to at "
        "least 2 (or 0 for the epochs' end)"]
    assert problems(from_resume=True, max_steps=3) == []
    assert problems(from_resume=True, max_steps=3, batch_size=8, seed=7) == [
        f"train.from_resume: the run in {folder} (config.toml) used different settings, so it "
        "cannot continue exactly: train.batch_size (4 → 8), train.seed (42 → 7)"]
    # The state holds AdamW's moments: the form offered this resume, and only the engine
    # refused it, after the run had started.
    assert problems(from_resume=True, max_steps=3, optimizer="muon") == [
        f"train.from_resume: the run in {folder} (config.toml) used different settings, so it "
        "cannot continue exactly: train.optimizer (adamw → muon)"]
    assert problems(from_resume=True, max_steps=3, save_weight="other") == [
        f"train.from_resume: no resume checkpoint at {folder / 'other_128_resume.pth'}; the "
        "folder holds pretrain_128_resume.pth: resume with the settings that name it "
        "(save_weight, hidden_size, use_moe, lora_name as its run had them)"]
    # Another stage looks for another checkpoint too; the stage is named, not the names.
    assert problems(from_resume=True, max_steps=3, stage="sft", packing=False,
                    data_path="builtin:shakespeare-chat") == [
        f"train.from_resume: the run in {folder} (config.toml) used different settings, so it "
        "cannot continue exactly: train.stage (pretrain → sft), train.packing (True → False)"]
    # A field invalid: the default standing in named a checkpoint nobody chose
    # (pretrain_512_resume.pth for an empty hidden_size); the resume waits for valid fields.
    data = settings.model_dump(mode="json")
    data["train"].update(from_resume=True, max_steps=3)
    data["model"]["hidden_size"] = "wide"
    assert [p.loc for p in validate_for_start(data)[1]] == ["model.hidden_size"]
    # An unreadable record leaves the decision to the checkpoint's own, when the run starts.
    (folder / "config.toml").unlink()
    os.mkfifo(folder / "config.toml")  # (never opened: a read would block)
    assert problems(from_resume=True, max_steps=3, batch_size=8) == []


def test_the_start_check_knows_whether_epochs_or_max_steps_end_the_resumed_run(tiny_settings,
                                                                              tmp_path):
    """A run its epochs ended, resumed with max_steps raised: the form said ready, the engine
    refused at step 0 and advised raising max_steps, which was already raised. The run folder
    keeps an epoch's steps (run.json), so the form knows the plan as the engine will."""
    from minimind.engine import Trainer
    from minimind.environment import validate_for_start

    data = tmp_path / "eight.jsonl"
    data.write_text("".join(json.dumps({"text": f"line {i} of the play"}) + "\n"
                            for i in range(8)))
    settings = tiny_settings(data_path=str(data), packing=False, max_steps=0, epochs=2,
                             save_interval=1)
    assert Trainer(settings).run().status == "completed"  # 2 steps an epoch: step 4
    assert RunFolder(Path(settings.train.out_dir)).status().steps_per_epoch == 2

    def problems(**train) -> tuple[list[str], list[str]]:
        data = settings.model_dump(mode="json")
        data["train"].update(train, from_resume=True)
        found = validate_for_start(data)[1]
        return [str(p) for p in found], [loc for p in found for loc in p.related]

    completed = ("train.from_resume: the run completed at step 4, where these settings end it "
                 "too: nothing is left to train; raise ")
    assert problems(max_steps=10) == ([completed + "epochs to train on"], ["train.epochs"])
    assert problems(max_steps=4) == ([completed + "epochs and max_steps to train on"],
                                     ["train.epochs", "train.max_steps"])
    assert problems(epochs=1) == (["train.epochs: 1 epoch(s) of 2 steps end at step 2, before "
                                   "step 4, where the checkpoint stands: set epochs to at least "
                                   "2"], [])
    assert problems(epochs=3) == problems(epochs=3, max_steps=5) == ([], [])
    # A run.json written before it kept an epoch's steps: the run's start in metrics.jsonl says.
    folder = RunFolder(Path(settings.train.out_dir))
    status = folder.status()
    folder.write_status(status.model_copy(update={"steps_per_epoch": 0}))
    assert problems(max_steps=10) == ([completed + "epochs to train on"], ["train.epochs"])
    # Trained in two processes: the Start question offered a resume in one, which the run
    # refused once launched.
    folder.write_status(status.model_copy(update={"world_size": 2}))
    assert problems(epochs=3) == ([f"train.from_resume: the run in {settings.train.out_dir} "
                                   "trained in 2 processes; resume it with as many "
                                   "(nproc_per_node × nnodes, now 1)"], [])
    assert problems(epochs=3, nproc_per_node=2) == ([], [])
    folder.write_status(status)
    # With data allowed to change, only the engine (which reads them) knows the plan.
    assert problems(allow_data_change=True) == ([], [])
    refused = Trainer(tiny_settings(data_path=str(data), packing=False, max_steps=10, epochs=2,
                                    from_resume=True)).run()
    assert refused.reason == completed + "epochs to train on"


def test_a_folder_handed_to_torchrun_is_kept_for_its_workers(tmp_path):
    """A torchrun launch released the folder's lock (its workers inherit no descriptor) until
    rank 0 took it again, seconds later: another launch could take the folder in between and
    replace the launch.toml the workers were about to read. The folder is now reserved for the
    torchrun process's own: refused to others while it lives, free once it is gone."""
    import pytest

    from minimind.run_folder import RunBusy

    folder_path = tmp_path / "run"
    claim = ("import sys; from minimind.run_folder import RunFolder; "
             f"RunFolder({str(folder_path)!r}).claim(resume=False, overwrite=False); "
             "print('claimed')")
    # The process the folder is handed to (as torchrun is) claims it; so would its children.
    child = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep(1.5); {claim}"],
                             stdout=subprocess.PIPE, text=True, env=ENV)
    launcher = RunFolder(folder_path)
    launcher.claim(resume=False, overwrite=False)
    launcher.hand_to(child.pid)
    with pytest.raises(RunBusy, match=f"is being started by another launch \\(process "
                                      f"{child.pid}, torchrun\\)"):
        RunFolder(folder_path).claim(resume=False, overwrite=False)
    assert child.communicate(timeout=60)[0] == "claimed\n" and child.returncode == 0
    # Gone, it holds nothing; nor does a lock file of garbage, nor one naming a reused pid.
    for text in (None, b"\xff\x00garbage", f"{os.getppid()} 12.5\n".encode(), b"1 nan\n"):
        if text is not None:
            (folder_path / ".run.lock").write_bytes(text)
        folder = RunFolder(folder_path)
        folder.claim(resume=False, overwrite=False)
        folder.release()


def test_a_replaced_or_deleted_run_takes_its_tensorboard_files_with_it(tmp_path):
    """TensorBoard reads every event file in the folder as one run: after an overwrite the old
    run's curve was drawn over the new one's steps. wandb's and swanlab's folders hold runs of
    their own (offline ones to sync), so they stay."""
    from minimind.run_files import remove_run_files, run_files

    (tmp_path / "run.json").write_text("{}")
    board, wandb = tmp_path / "tensorboard", tmp_path / "wandb" / "offline-run-1"
    for folder in (board, wandb):
        folder.mkdir(parents=True)
    events = board / "events.out.tfevents.1796598147.vm.16617.0"
    events.write_bytes(b"x")
    (wandb / "run-1.wandb").write_bytes(b"x")
    assert events in run_files(tmp_path) and not any("wandb" in str(p)
                                                     for p in run_files(tmp_path))
    remove_run_files(tmp_path)
    assert not board.exists() and (wandb / "run-1.wandb").exists()
    board.mkdir()
    (board / "notes.txt").write_text("mine")  # not an event file: kept, and its folder too
    remove_run_files(tmp_path)
    assert (board / "notes.txt").exists()


def test_what_a_launch_that_never_began_left_goes_when_a_run_starts(tmp_path, monkeypatch):
    """A detached run that failed on its data left launch.toml and launch.log; the next run
    into the folder trained beside them, as if they were its own launch's."""
    from minimind.run_folder import LAUNCHED_INTO_ENV

    for name in ("launch.toml", "launch.log"):
        (tmp_path / name).write_text("the failed launch's")
    (tmp_path / "notes.txt").write_text("the user's")
    folder = RunFolder(tmp_path)
    assert folder.refusal(resume=False, overwrite=False) is None
    # The launch's own child (its environment names the folder) keeps them: they are its own.
    monkeypatch.setenv(LAUNCHED_INTO_ENV, str(tmp_path.resolve()))
    assert folder.consent(resume=False, overwrite=False) == ""
    monkeypatch.delenv(LAUNCHED_INTO_ENV)
    assert folder.consent(resume=False, overwrite=False) == (
        "removing what a launch that never began left: launch.toml, launch.log")
    folder.start_fresh()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
