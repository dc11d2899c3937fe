"""Trackers (`report_to`): the real packages in their offline or local modes, read back from what
they wrote; and the promise that no tracker can stop or slow training."""

import dataclasses
import importlib.util
import json
import os
import sqlite3
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from minimind.engine import Trainer
from minimind.events import LogMessage, RunFinished, RunStarted, StepMetrics
from minimind.environment import environment_problems
from minimind.settings import TRACKERS, RunSettings
from minimind.sinks import QueueSink
from minimind.trackers import TrackerSink, sample_table, scalars
from minimind_tui.cli.main import main

INSTALLED = [name for name in TRACKERS if importlib.util.find_spec(name) is not None]
PROMPTS = ["ROMEO:", "To be | or not"]  # a pipe, which Markdown tables must escape

# One real training run that reports to every installed tracker. A samples event of known text
# (kind "sample", as the engine emits them) is added after each evaluation; the engine's own
# samples are switched off (--sample_prompts with no prompt).
RUN = textwrap.dedent("""
    import sys
    from dataclasses import dataclass
    from typing import ClassVar
    from minimind.engine import Trainer
    from minimind.events import Event
    from minimind_tui.cli.main import main

    @dataclass
    class Sample(Event):
        kind: ClassVar[str] = "sample"
        step: int
        prompts: list
        greedy: list

    evaluate = Trainer._evaluate
    def evaluate_and_sample(self):
        evaluate(self)
        self.emit(Sample(step=self.progress.step, prompts={prompts!r},
                         greedy=[f"text at step {{self.progress.step}} after " + p
                                 for p in {prompts!r}]))
    Trainer._evaluate = evaluate_and_sample
    sys.exit(main(sys.argv[1:]))
""").format(prompts=PROMPTS)


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """(out_dir, home, events of metrics.jsonl) of a 4-step run reporting to every installed
    tracker, offline: nothing leaves the machine and nothing is written outside tmp."""
    if not INSTALLED:
        pytest.skip("no tracker package is installed (pip install -e '.[trackers]')")
    tmp = tmp_path_factory.mktemp("tracked")
    out, home = tmp / "run", tmp / "home"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HOME": str(home),
           "WANDB_MODE": "offline", "SWANLAB_MODE": "offline",
           "TRACKIO_DIR": str(home / "trackio")}
    args = ["--no-ui", "--preset", "tiny", "--max_steps", "4", "--warmup_iters", "0",
            "--log_interval", "2", "--eval_interval", "2", "--eval_batches", "2",
            "--max_seq_len", "64", "--batch_size", "4", "--dtype", "float32", "--out_dir", str(out),
            "--sample_prompts", "--report_to", *INSTALLED]
    proc = subprocess.run([sys.executable, "-c", RUN, *args], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    warnings = [e["text"] for e in events if e["kind"] == "log" and e["level"] != "info"]
    assert warnings == [], warnings
    return out, home, events


def expected(events, kind, field):
    return {e["step"]: e[field] for e in events if e["kind"] == kind}


def needs(name):
    return pytest.mark.skipif(name not in INSTALLED, reason=f"{name} is not installed "
                                                          f"(pip install -e '.[{name}]')")


@needs("tensorboard")
def test_tensorboard_event_files_hold_the_run(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _, events = tracked_run
    board = EventAccumulator(str(out / "tensorboard"))
    board.Reload()
    loss = {e.step: e.value for e in board.Scalars("train/loss")}
    assert loss == pytest.approx(expected(events, "step", "loss"))
    assert {e.step: e.value for e in board.Scalars("eval/loss")} == pytest.approx(
        expected(events, "eval", "val_loss"))
    assert {"train/lr", "train/grad_norm", "perf/tokens_per_sec", "memory/rss_gib"} <= set(
        board.Tags()["scalars"])
    samples = {e.step: e.tensor_proto.string_val[0].decode()
               for e in board.Tensors("samples/text_summary")}
    assert set(samples) == {2, 4}
    assert "| ROMEO: | text at step 4 after ROMEO: |" in samples[4]
    assert "To be \\| or not" in samples[4]
    settings = board.Tensors("settings/text_summary")[0].tensor_proto.string_val[0].decode()
    assert '"hidden_size": 128' in settings


def wandb_records(path: Path):
    """The protobuf records of a .wandb file (LevelDB's log format: 32 KiB blocks of chunks,
    each with a 7-byte header), after wandb's own 7-byte file header."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, chunk = 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            yield record
            chunk = b""


@needs("wandb")
def test_wandb_offline_run_files_hold_the_run(tracked_run):
    out, _, events = tracked_run
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    (run_file,) = run_dir.glob("run-*.wandb")
    history, config, exit_code = {}, {}, None
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                   for item in record.history.item}
            history.setdefault(row["_step"], {}).update(row)
        elif kind == "run":
            config = {item.key: json.loads(item.value_json) for item in record.run.config.update}
        elif kind == "exit":
            exit_code = record.exit.exit_code
    assert {step: row["train/loss"] for step, row in history.items()} == pytest.approx(
        expected(events, "step", "loss"))
    assert {step: row["eval/loss"] for step, row in history.items()} == pytest.approx(
        expected(events, "eval", "val_loss"))
    assert config["model"]["hidden_size"] == 128 and config["run"]["total_steps"] == 4
    assert exit_code == 0
    table = json.loads((run_dir / "files" / history[4]["samples/path"]).read_text())
    assert table["columns"] == ["prompts", "greedy"]
    assert table["data"][0] == ["ROMEO:", "text at step 4 after ROMEO:"]


@needs("swanlab")
def test_swanlab_offline_run_files_hold_the_run(tracked_run):
    from swanlab.proto.swanlab.record.v1.record_pb2 import Record
    from swanlab.sdk.internal.core_python.store import DataStoreReader

    out, _, events = tracked_run
    (run_file,) = (out / "swanlab").glob("run-*/run-*.swanlab")
    reader = DataStoreReader()
    reader.open(run_file)
    scalars_by_key, texts, finish = {}, {}, None
    for data in reader:
        record = Record.FromString(data)
        if record.HasField("scalar"):
            s = record.scalar
            scalars_by_key.setdefault(s.key, {})[s.step] = s.value.number
        elif record.HasField("media"):
            texts[record.media.step] = [item.filename for item in record.media.value.items]
        elif record.HasField("finish"):
            finish = record.finish.state
    reader.close()
    assert scalars_by_key["train/loss"] == pytest.approx(expected(events, "step", "loss"))
    assert scalars_by_key["eval/loss"] == pytest.approx(expected(events, "eval", "val_loss"))
    assert finish == Record.DESCRIPTOR.fields_by_name["finish"].message_type.fields_by_name[
        "state"].enum_type.values_by_name["RUN_STATE_FINISHED"].number
    (text_file,) = run_file.parent.glob(f"media/text/{texts[4][0]}")
    assert text_file.read_text() == "prompts: ROMEO:\ngreedy: text at step 4 after ROMEO:"


@needs("trackio")
def test_trackio_local_database_holds_the_run(tracked_run):
    _, home, events = tracked_run
    db = sqlite3.connect(home / "trackio" / "minimind-tui.db")
    rows = [(step, json.loads(metrics)) for step, metrics in
            db.execute("SELECT step, metrics FROM metrics WHERE run_name = 'run'")]
    assert {s: m["train/loss"] for s, m in rows if "train/loss" in m} == pytest.approx(
        expected(events, "step", "loss"))
    assert {s: m["eval/loss"] for s, m in rows if "eval/loss" in m} == pytest.approx(
        expected(events, "eval", "val_loss"))
    samples = {s: m["samples"] for s, m in rows if "samples" in m}
    assert samples[4]["_value"][1] == {"prompts": PROMPTS[1],
                                       "greedy": f"text at step 4 after {PROMPTS[1]}"}
    (config,) = db.execute("SELECT config FROM configs WHERE run_name = 'run'").fetchone()
    assert json.loads(config)["train"]["report_to"] == INSTALLED


# -- what every tracker is given ------------------------------------------------------------
def test_step_figures_and_samples_are_named_once_for_every_tracker():
    step = StepMetrics(step=6, total_steps=10, epoch=2, epochs=2, epoch_step=1, steps_per_epoch=5,
                       loss=3.5, logits_loss=3.0, aux_loss=0.5, lr=1e-3, grad_norm=0.7,
                       tokens_per_sec=900.0, tokens_seen=1536, elapsed=3.0, eta_seconds=2.0,
                       step_time=0.2, mfu=0.25, mem_peak=3 << 29)
    assert scalars(step) == {
        "train/loss": 3.5, "train/logits_loss": 3.0, "train/aux_loss": 0.5, "train/lr": 1e-3,
        "train/grad_norm": 0.7, "train/epoch": 1.2, "train/tokens_seen": 1536.0,
        "perf/tokens_per_sec": 900.0, "perf/mean_step_time_s": 0.2, "perf/mfu": 0.25,
        "memory/peak_gib": 1.5}
    assert scalars(LogMessage(level="info", text="hello")) == {}
    assert sample_table(LogMessage(level="info", text="hello")) is None


# -- never stop or slow training ------------------------------------------------------------
class Recorder(TrackerSink):
    """A tracker that records its calls, and that can be told to raise or hang in one of them:
    `fail_on=("log", "raise")`."""

    name = "tensorboard"

    def __init__(self, out_dir, warn, fail_on=(None, None), **kwargs):
        self.calls, self.fail_on, self.release = [], fail_on, threading.Event()
        super().__init__(out_dir, warn, **{"stall_seconds": 0.5, "close_timeout": 1.0, **kwargs})

    def _act(self, call, detail):
        self.calls.append(f"{call} {detail}")
        if call == self.fail_on[0] and self.fail_on[1] == "hang":
            self.release.wait()
        elif call == self.fail_on[0] and self.fail_on[1] == "import":
            raise ImportError("No module named 'tensorboard'")
        elif call == self.fail_on[0]:
            raise RuntimeError("the tracker's server is on fire")

    def start(self, run):
        self._act("start", run.total_steps)

    def log(self, step, values):
        self._act("log", step)

    def log_samples(self, step, columns, rows):
        self._act("samples", step)

    def finish(self, status):
        self._act("finish", status)


@pytest.fixture
def train_with_recorder(tiny_settings, monkeypatch):
    """Train the tiny model reporting to `tensorboard`, here a Recorder (the install check is
    passed, so this runs where tensorboard is not installed too): (result, warnings, tracker)."""
    made = []
    monkeypatch.setattr("minimind.trackers.missing_trackers", lambda names: [])

    def train(fail_on=(None, None), steps=4):
        monkeypatch.setattr("minimind.trackers.TRACKER_SINKS", {
            "tensorboard": lambda out_dir, warn: made.append(Recorder(out_dir, warn, fail_on))
            or made[-1]})
        sink = QueueSink()
        settings = tiny_settings(max_steps=steps, report_to=["tensorboard"], sample_prompts=[],
                                 warmup_iters=0)
        result = Trainer(settings, [sink]).run()
        warnings = [e.text for e in sink.drain() if isinstance(e, LogMessage)
                    and e.level != "info"]
        return result, warnings, made[-1]

    yield train
    for tracker in made:
        tracker.release.set()  # let a hanging thread end


def test_a_tracker_sees_the_whole_run(train_with_recorder):
    result, warnings, tracker = train_with_recorder()
    assert result.status == "completed" and warnings == []
    assert tracker.calls == ["start 4", "log 1", "log 2", "log 3", "log 4", "finish completed"]


def test_a_tracker_that_raises_is_turned_off_and_training_goes_on(train_with_recorder):
    result, warnings, tracker = train_with_recorder(fail_on=("log", "raise"))
    assert result.status == "completed" and result.step == 4
    assert warnings == ["tensorboard: RuntimeError: the tracker's server is on fire; "
                        "tensorboard logging is off for the rest of this run (training goes on)"]
    assert tracker.calls == ["start 4", "log 1"]  # no call after the failure


def test_a_tracker_whose_package_fails_to_import_says_to_reinstall_it(train_with_recorder):
    """Installed (the check before the run passed) but broken: it said to log in to wandb."""
    result, warnings, _ = train_with_recorder(fail_on=("start", "import"))
    assert result.status == "completed"
    assert warnings == ["tensorboard: ImportError: No module named 'tensorboard' (reinstall it: "
                        'pip install "minimind-tui[tensorboard]"); tensorboard logging is off '
                        "for the rest of this run (training goes on)"]


def test_a_tracker_that_hangs_is_abandoned_and_training_goes_on(train_with_recorder):
    result, warnings, tracker = train_with_recorder(fail_on=("start", "hang"), steps=10)
    assert result.status == "completed" and result.step == 10
    # Abandoned during the run (no answer for 0.5 s) or, on a fast machine, when it closes.
    assert len(warnings) == 1 and warnings[0].startswith("tensorboard: ")
    assert "no answer for 0.5 s" in warnings[0] or "did not finish within 1 s" in warnings[0]
    assert tracker.off and tracker.calls == ["start 10"]


def run_started(tmp_path, total_steps=9, start_step=0):
    return RunStarted(settings={}, parameters=1, active_parameters=1, device="cpu",
                      device_name="CPU", world_size=1, tokens_per_step=1,
                      steps_per_epoch=total_steps, total_steps=total_steps, start_step=start_step,
                      flops_per_token=1.0, peak_flops=None, out_dir=str(tmp_path))


def step_metrics(step, total_steps=9):
    return StepMetrics(step=step, total_steps=total_steps, epoch=1, epochs=1, epoch_step=step,
                       steps_per_epoch=total_steps, loss=1.0, logits_loss=1.0, aux_loss=0.0,
                       lr=1e-3, grad_norm=1.0, tokens_per_sec=1.0, tokens_seen=step, elapsed=1.0,
                       eta_seconds=1.0, step_time=1.0)


@needs("tensorboard")
def test_tensorboard_shows_each_step_once_after_a_resume_from_behind_the_last_log(tmp_path):
    """A crash after step 8 with the checkpoint of step 5: the resume logs 6-8 again, and
    TensorBoard, which reads every event file in the folder, drew both (the chart stepped back
    from 8 to 6)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from minimind.trackers import TensorBoardSink

    for start, last, loss in ((0, 8, 9.0), (5, 10, 4.0)):
        sink = TensorBoardSink(tmp_path, warn=pytest.fail)
        sink.emit(run_started(tmp_path, 10, start))
        for step in range(start + 1, last + 1):
            sink.emit(dataclasses.replace(step_metrics(step, 10), loss=loss))
        sink.close()
    board = EventAccumulator(str(tmp_path / "tensorboard"))
    board.Reload()
    assert [(e.step, e.value) for e in board.Scalars("train/loss")] == [
        *((step, 9.0) for step in range(1, 6)), *((step, 4.0) for step in range(6, 11))]


@needs("trackio")
def test_trackio_steps_its_database_did_not_save_are_said_in_the_run(tmp_path):
    """Trackio writes its database from a thread of its own, and a failed write there was only a
    Python warning on stderr: the run's own record (metrics.jsonl, the dashboard) never said it.
    A TRACKIO_DIR under a file: each of its writes fails. (A process of its own: Trackio reads
    TRACKIO_DIR when it is first imported.)"""
    (tmp_path / "a-file").write_text("")
    events = [run_started(tmp_path, 3), *(step_metrics(s, 3) for s in (1, 2, 3)),
              RunFinished(status="completed", step=3)]
    script = textwrap.dedent("""
        import sys
        from minimind.events import event_from_json
        from minimind.trackers import TrackioSink
        sink = TrackioSink(sys.argv[1], warn=lambda text: print("WARNED", text))
        for line in sys.argv[2:]:
            sink.emit(event_from_json(line))
        sink.close()
    """)
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path),
                           *(e.to_json() for e in events)], capture_output=True, text=True,
                          env={**os.environ, "TRACKIO_DIR": str(tmp_path / "a-file" / "trackio")},
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    warned = [line for line in proc.stdout.splitlines() if line.startswith("WARNED")]
    assert warned == [f"WARNED trackio: its database {tmp_path}/a-file/trackio/minimind-tui.db "
                      "holds no step of this run, which logged up to step 3: the rest could not "
                      "be saved"]


def wait_for(condition):
    for _ in range(500):
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError("the tracker's thread did not get there in 5 s")


def test_a_slow_tracker_drops_its_oldest_events_not_the_runs_time(tmp_path):
    warnings = []
    tracker = Recorder(tmp_path, warnings.append, ("start", "hang"), maxlen=3, stall_seconds=60)
    tracker.emit(run_started(tmp_path))
    wait_for(lambda: tracker.calls == ["start 9"])
    for step in range(1, 10):  # the tracker is stuck in start: these queue, the oldest drop
        tracker.emit(step_metrics(step))
    tracker.release.set()
    tracker.close()
    assert tracker.calls == ["start 9", "log 7", "log 8", "log 9", "finish "]
    assert warnings == ["tensorboard: fell behind; 6 or more events were dropped (training is "
                        "not slowed)"]


def test_a_tracker_stuck_longer_than_stall_seconds_gets_no_more_events(tmp_path):
    warnings = []
    tracker = Recorder(tmp_path, warnings.append, ("log", "hang"), stall_seconds=0.2)
    tracker.emit(run_started(tmp_path))
    tracker.emit(step_metrics(1))
    wait_for(lambda: tracker.calls == ["start 9", "log 1"])
    time.sleep(0.3)
    tracker.emit(step_metrics(2))
    assert tracker.off
    assert warnings == ["tensorboard: no answer for 0.2 s; tensorboard logging is off for the "
                        "rest of this run (training goes on)"]
    tracker.emit(step_metrics(3))
    tracker.close()  # returns at once: the stuck thread is abandoned, not waited for
    tracker.release.set()
    assert tracker.calls == ["start 9", "log 1"] and len(warnings) == 1


# -- a tracker that is not installed --------------------------------------------------------
def test_a_missing_tracker_package_is_refused_before_the_run(monkeypatch, capsys, tmp_path):
    for name in ("wandb", "swanlab"):
        monkeypatch.setitem(sys.modules, name, None)  # find_spec then finds nothing
    code = main(["--no-ui", "--preset", "tiny", "--out_dir", str(tmp_path),
                 "--report_to", "wandb", "swanlab"])
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [
        'minimind-tui: error: train.report_to: wandb is not installed; '
        'pip install "minimind-tui[wandb]"',
        'minimind-tui: error: train.report_to: swanlab is not installed; '
        'pip install "minimind-tui[swanlab]"']
    problems = environment_problems(RunSettings.parse({"train": {"report_to": "wandb"}}))
    assert [(p.loc, p.text) for p in problems] == [
        ("train.report_to", 'wandb is not installed; pip install "minimind-tui[wandb]"')]
    assert not (tmp_path / "metrics.jsonl").exists()


async def test_the_form_shows_a_missing_tracker_beside_the_field(monkeypatch, tmp_path):
    from textual.widgets import Button, Static

    from minimind_tui.app import MiniMindApp

    monkeypatch.setitem(sys.modules, "wandb", None)
    app = MiniMindApp("tiny", {"train": {"report_to": ["wandb"], "out_dir": str(tmp_path)}})
    async with app.run_test(size=(120, 40)):
        error = app.screen.query_one("#field-report_to .field-error", Static).render()
        assert 'wandb is not installed; pip install "minimind-tui[wandb]"' in str(error)
        assert app.screen.query_one("#start-button", Button).disabled
