"""Readers that trust nothing they read: metrics.jsonl and run.json written by a diverged run, a
corrupt sync, another machine or an attacker, read by `watch`, the dashboard and `runs`.

Each test injects the file for real (on disk, a FIFO, a folder no one may list, a full disk) and
checks the reader keeps what it can, says what it skipped, and never hangs or tracebacks."""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minimind.events import (CheckpointSaved, EvalResult, LogMessage, RunFinished, RunStarted,
                             StepMetrics)
from minimind.follow import MAX_LINE_BYTES, Follower
from minimind.run_folder import RunFolder
from minimind.run_status import RunStatus, read_status
from minimind_tui.app import MiniMindApp
from minimind_tui.run.history import downsample_minmax
from minimind_tui.run.metrics_reader import parse_lines, read_history
from minimind.runs import find_runs
from minimind_tui.widgets.metric_plot import MetricPlot

from test_training_faults import tmpfs

CLI = [sys.executable, "-m", "minimind_tui"]
TRAIN = [*CLI, "--no-ui", "--preset", "tiny", "--max_seq_len", "64", "--batch_size", "4",
         "--dtype", "float32", "--val_data_path", "", "--eval_interval", "0", "--packing", "0"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def step(n: int, loss: float = 3.0, tokens_per_step: int = 256, rate: float = 2_000.0
         ) -> StepMetrics:
    return StepMetrics(step=n, total_steps=600, epoch=1, epochs=1, epoch_step=n,
                       steps_per_epoch=600, loss=loss, logits_loss=loss, aux_loss=0.0, lr=1e-3,
                       grad_norm=0.5, tokens_per_sec=12_010.0, tokens_seen=n * tokens_per_step,
                       elapsed=n * tokens_per_step / rate, eta_seconds=1.0, step_time=0.1,
                       time=1_000.0 + n)


def started(start_step: int = 0) -> RunStarted:
    return RunStarted(settings={"model": {"hidden_size": 128}, "train": {}}, parameters=1,
                      active_parameters=1, device="cpu", device_name="CPU", world_size=1,
                      tokens_per_step=256, steps_per_epoch=600, total_steps=600,
                      start_step=start_step, flops_per_token=1.0, peak_flops=None,
                      out_dir="run", time=1_000.0)


def write_metrics(path: Path, lines: list[str | bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for line in lines:
            f.write((line if isinstance(line, bytes) else line.encode()) + b"\n")


def screen_text(app: MiniMindApp) -> str:
    """What the terminal shows, as plain text."""
    svg = app.export_screenshot()
    return html.unescape(re.sub(r"<[^>]+>", "", svg)).replace("\xa0", " ")


def runs_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "runs", *args], capture_output=True, text=True, env=ENV,
                          timeout=120, **kwargs)


# -- metrics.jsonl ------------------------------------------------------------------------------
async def test_watch_plots_what_is_finite_and_marks_what_is_not(tmp_path):
    """The engine itself writes NaN (a diverged run's val_loss); inf crashed the chart too."""
    losses = [3.0, 2.9, float("nan"), float("inf"), 2.7, float("-inf"), 2.6] * 12
    events = [started(), *[step(i + 1, loss) for i, loss in enumerate(losses)],
              EvalResult(step=40, val_loss=float("nan"), tokens=0),
              EvalResult(step=50, val_loss=2.8, tokens=0)]
    write_metrics(tmp_path / "metrics.jsonl", [e.to_json() for e in events])
    assert "NaN" in (tmp_path / "metrics.jsonl").read_text()  # as json.dumps writes them
    app = MiniMindApp(watch=tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        deadline = time.monotonic() + 30
        while len(app.history.steps) < len(losses):
            assert time.monotonic() < deadline
            await pilot.pause(0.1)
        await pilot.pause(1.0)
        shown = screen_text(app)
        assert app.screen.query_one("#loss-plot", MetricPlot).region.area  # drawn
        assert "loss: 36 not finite, first at 3" in shown  # NaN and ±inf, marked where
    assert app.return_code in (None, 0)
    assert app.history.summary.best_val_loss == 2.8  # NaN is no "best"


def test_a_huge_line_costs_bounded_memory_and_is_skipped_with_a_note(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    huge = b'{"kind": "log", "level": "info", "text": "' + b"x" * (24 << 20) + b'"}'
    write_metrics(metrics, [started().to_json(), step(1).to_json(), huge, step(2).to_json()])
    tracemalloc.start()
    try:
        history = read_history(metrics)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert list(history.steps) == [1, 2]  # the history on both sides is kept
    assert peak < 4 * MAX_LINE_BYTES + (8 << 20), f"{peak / 2 ** 20:.0f} MiB"  # not 24 MiB+
    notes = [e.text for _, e in history.log if isinstance(e, LogMessage)]
    assert notes == [f"{metrics}: skipped 1 line(s): 1 longer than 1 MiB"]


def test_a_huge_line_cut_across_polls_is_dropped_as_it_streams(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    follower = Follower(metrics, chunk=256 << 10)
    write_metrics(metrics, [step(1).to_json()])
    with open(metrics, "ab") as f:
        f.write(b'{"kind": "log", "text": "' + b"y" * (3 << 20))  # still being written
    seen, oversized = [], 0
    for _ in range(40):
        chunk = follower.poll_lines()
        seen += parse_lines(chunk.lines)[0]
        oversized += chunk.oversized
        assert len(follower._partial) <= MAX_LINE_BYTES
    with open(metrics, "ab") as f:
        f.write(b'"}\n' + step(2).to_json().encode() + b"\n")
    chunk = follower.poll_lines()
    seen += parse_lines(chunk.lines)[0]
    assert [e.step for e in seen] == [1, 2] and oversized + chunk.oversized == 1


def test_a_line_nested_100000_deep_hides_nothing(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    deep = "[" * 100_000 + "]" * 100_000
    deep_dict = '{"kind": "log", "a": ' + '{"a": ' * 50_000 + "1" + "}" * 50_001
    write_metrics(metrics, [started().to_json(), step(1).to_json(), deep, deep_dict,
                            step(2).to_json()])
    history = read_history(metrics)
    assert list(history.steps) == [1, 2] and history.started is not None
    notes = [e.text for _, e in history.log if isinstance(e, LogMessage)]
    assert notes == [f"{metrics}: skipped 2 line(s): 2 not a readable event"]


def test_runs_never_blocks_on_a_fifo_and_shows_every_folder(tmp_path):
    fifo_run = tmp_path / "fifo"
    fifo_run.mkdir()
    os.mkfifo(fifo_run / "metrics.jsonl")  # nobody will ever write to it
    good = tmp_path / "good"
    write_metrics(good / "metrics.jsonl", [step(5).to_json()])  # one line, read whole
    # A config.toml that is a pipe (it blocked the list), in a run folder inside another.
    fifo_config = good / "inner"
    write_metrics(fifo_config / "metrics.jsonl", [step(2).to_json()])
    os.mkfifo(fifo_config / "config.toml")
    listed = runs_cli(str(tmp_path), "--json")
    assert listed.returncode == 0, listed.stderr
    runs = {Path(r["path"]).name: r for r in json.loads(listed.stdout)}
    assert set(runs) == {"fifo", "good", "inner"} and runs["good"]["step"] == 5


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root to run the reader as another user")
def test_a_folder_runs_cannot_read_is_listed_as_unreadable():
    root = Path(tempfile.mkdtemp())
    try:
        root.chmod(0o755)
        write_metrics(root / "open" / "metrics.jsonl", [started().to_json(), step(3).to_json()])
        write_metrics(root / "private" / "run" / "metrics.jsonl", [step(9).to_json()])
        for folder in (root / "open", root / "open" / "metrics.jsonl"):
            folder.chmod(0o755 if folder.is_dir() else 0o644)
        (root / "private").chmod(0o700)  # root's: user nobody may not list it
        listed = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                 *CLI, "runs", str(root)],
                                capture_output=True, text=True, env=ENV, timeout=120)
        assert listed.returncode == 0, listed.stderr
        rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
        assert set(rows) == {"open", "private"}
        assert "unreadable" in rows["private"] and "completed" not in rows["private"]
    finally:
        shutil.rmtree(root)


# -- run.json -----------------------------------------------------------------------------------
BAD_STATUS = {
    "a list": b"[]",
    "wrong types": json.dumps({"state": "running", "pid": "me", "step": [1]}).encode(),
    "an unknown state": json.dumps({"state": "exploded"}).encode(),
    "deep nesting": b'{"extra": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "too big": json.dumps({"state": "completed", "reason": "x" * (1 << 20)}).encode(),
    "not JSON": b"\x00\xff{",
}


@pytest.mark.parametrize("kind", list(BAD_STATUS))
def test_a_bad_run_json_is_unknown_and_listed(tmp_path, kind):
    run = tmp_path / "run"
    write_metrics(run / "metrics.jsonl", [started().to_json(), step(4).to_json()])
    (run / "run.json").write_bytes(BAD_STATUS[kind])
    assert read_status(run / "run.json") == "unknown"
    folder = RunFolder(run)
    assert folder.state() == "unknown" and folder.holds_a_run()
    assert folder.describe() == "unknown: its run.json is not a run status"
    [summary] = find_runs(tmp_path)
    assert summary.state == "unknown" and summary.step == 4  # the metrics still tell


async def test_watching_a_folder_with_a_bad_run_json_shows_its_history(tmp_path):
    write_metrics(tmp_path / "metrics.jsonl", [started().to_json(), step(1).to_json(),
                                               step(2).to_json()])
    (tmp_path / "run.json").write_bytes(b"[]")
    app = MiniMindApp(watch=tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        deadline = time.monotonic() + 30
        while len(app.history.steps) < 2:
            assert time.monotonic() < deadline
            await pilot.pause(0.1)
        await pilot.pause(2.5)  # past the reader's first look at run.json
        assert app.training.state == "" and app.run_phase == "idle"
    assert app.return_code in (None, 0)


def test_a_bad_run_json_is_refused_cleanly_by_the_trainer(tmp_path):
    (tmp_path / "run.json").write_bytes(b"[]")
    listed = runs_cli(str(tmp_path))
    assert listed.returncode == 0 and "unknown" in listed.stdout, listed.stderr
    resumed = subprocess.run([*TRAIN, "--out_dir", str(tmp_path), "--from_resume", "1",
                              "--max_steps", "1"],
                             capture_output=True, text=True, env=ENV, timeout=300)
    assert resumed.returncode == 2 and "Traceback" not in resumed.stderr
    assert "AttributeError" not in resumed.stderr and "resume" in resumed.stderr
    fresh = subprocess.run([*TRAIN, "--out_dir", str(tmp_path), "--max_steps", "1"],
                           capture_output=True, text=True, env=ENV, timeout=300)
    assert fresh.returncode == 2
    assert "already holds a run (unknown: its run.json is not a run status)" in fresh.stderr


def test_a_status_from_the_far_future_does_not_lock_the_folder(tmp_path):
    year_2100 = 4_102_444_800.0
    RunFolder(tmp_path).write_status(RunStatus(state="running", pid=1, host="elsewhere",
                                               started=year_2100, updated=year_2100, step=7))
    folder = RunFolder(tmp_path)
    assert folder.state() == "crashed"
    note = folder.claim(resume=False, overwrite=True)
    folder.release()
    assert note.startswith("this run replaces a run (crashed at step 7, last update ")
    # A fresh heartbeat from another host still holds it, overwrite or not.
    RunFolder(tmp_path).write_status(RunStatus(state="running", pid=1, host="elsewhere",
                                               updated=time.time()))
    assert RunFolder(tmp_path).state() == "running"


def test_a_killed_status_write_leaves_no_temporary_file_for_long(tmp_path):
    (tmp_path / "run.json").write_text(RunStatus(state="completed").model_dump_json())
    leftover = tmp_path / ".run.json.k1ll3d.tmp"
    leftover.write_text('{"state": "runn')
    folder = RunFolder(tmp_path)
    folder.claim(resume=True, overwrite=False)
    folder.release()
    assert not leftover.exists()


# -- the run's figures --------------------------------------------------------------------------
def test_one_step_count_and_the_runs_own_rate_everywhere():
    """A stop at step 27 with steps logged every 5: every view says 27, with 27 steps' tokens,
    and the rate is the run's (tokens over training time), not the last interval's."""
    status = RunStatus()
    events = [started(), *[step(n) for n in range(5, 26, 5)],
              EvalResult(step=20, val_loss=3.5, tokens=0),
              CheckpointSaved(step=27, weights_path="w", resume_path="r"),
              RunFinished(status="stopped", step=27)]
    for event in events:
        status.apply(event)
    assert (status.step, status.tokens_seen, status.checkpoint_step) == (27, 27 * 256, 27)
    assert status.tokens_per_sec == pytest.approx(2_000.0)  # not the 12,010 of the last line
    assert status.state == "stopped" and status.best_val_loss == 3.5
    from minimind_tui.run.history import RunHistory

    history = RunHistory()
    history.apply(events)
    assert history.summary == status


def test_real_run_reports_the_same_step_in_runs_and_its_status(tmp_path):
    done = subprocess.run([*TRAIN, "--out_dir", str(tmp_path / "r"), "--max_steps", "7",
                           "--log_interval", "5"],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr
    listed = runs_cli(str(tmp_path), "--json")
    [run] = json.loads(listed.stdout)
    logged = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").open()]
    last = [e for e in logged if e["kind"] == "step"][-1]
    finished = logged[-1]
    assert run["step"] == 7 and run["state"] == "completed"
    # The end's own figures: the last save and evaluation came after the last log line.
    assert run["tokens"] == finished["tokens_seen"] == last["tokens_seen"]
    assert finished["elapsed"] > last["elapsed"]
    assert run["tokens_per_sec"] == pytest.approx(finished["tokens_seen"] / finished["elapsed"])


def test_downsampling_keeps_the_extremes_of_the_newest_points():
    n = 1_050  # 49 buckets of 21 would leave 21 points at the live edge to the last one alone
    ys = [1.0] * n
    ys[1_040], ys[1_045] = 9.0, -9.0
    xs, kept = downsample_minmax(list(range(n)), ys, 100)
    assert 1_040 in xs and 1_045 in xs and len(xs) <= 100 and xs[-1] == n - 1


# -- properties ---------------------------------------------------------------------------------
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=4), max_leaves=12)
STEP_FIELDS = step(1).to_dict()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(garbage=st.lists(st.one_of(
    st.binary(max_size=64),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(sorted(STEP_FIELDS)), JSON_VALUES).map(
        lambda d: json.dumps({**STEP_FIELDS, **d}).encode())), max_size=6))
def test_any_metrics_lines_leave_the_good_ones_readable(tmp_path, garbage):
    lines = [started().to_json().encode(), step(1).to_json().encode(),
             *[g.replace(b"\n", b" ") for g in garbage], step(2).to_json().encode()]
    metrics = tmp_path / "metrics.jsonl"
    write_metrics(metrics, lines)
    history = read_history(metrics)
    assert history.steps[0] == 1 and history.steps[-1] == 2 and history.started is not None
    summary = find_runs(tmp_path)[0]  # the runs list reads the same file: it never raises
    assert summary.step >= 0 and summary.state


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(content=st.one_of(
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(sorted(RunStatus.model_fields)), JSON_VALUES).map(
        lambda d: json.dumps(d).encode()),
    st.binary(max_size=64)))
def test_any_run_json_reads_as_a_status_or_unknown(tmp_path, content):
    (tmp_path / "run.json").write_bytes(content)
    status = read_status(tmp_path / "run.json")
    assert status == "unknown" or isinstance(status, RunStatus)
    folder = RunFolder(tmp_path)
    assert folder.state() in {"running", "completed", "stopped", "failed", "crashed", "unknown"}
    assert folder.describe()
    [summary] = find_runs(tmp_path)
    assert summary.state == folder.state()


# -- the disk -----------------------------------------------------------------------------------
def test_a_full_disk_before_the_first_step_names_the_file_and_tells_the_truth(tmp_path):
    with tmpfs(tmp_path / "disk", "1m") as disk:
        out = disk / "run"
        out.mkdir()
        with contextlib.suppress(OSError), open(disk / "filler", "wb", buffering=0) as f:
            while True:  # another process takes every byte
                f.write(b"\0" * 4096)
        proc = subprocess.run([*TRAIN, "--out_dir", str(out), "--max_steps", "2"],
                              capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr + proc.stdout
    assert f"{out / 'config.toml'}: no space left on device" in proc.stderr
    assert "unaffected" not in proc.stdout + proc.stderr
