"""`minimind-tui watch --plain` (the default without a terminal) with real processes: the lines
of a finished run, a live run followed until it is stopped, a killed run reported as crashed,
and a folder where no run has started yet; each ends with the run's outcome as exit code."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading

import pytest

from test_run_folder import ENV, cli, start, wait_for

WATCH = [sys.executable, "-m", "minimind_tui", "watch"]


def watch(folder, *args: str) -> subprocess.Popen:
    """`watch` as a script or a log pipe runs it: no terminal on stdin, stdout or stderr."""
    return subprocess.Popen([*WATCH, str(folder), *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def test_a_finished_run_prints_the_console_lines_and_exits_0(tmp_path):
    trained = cli("--max_steps", "3", "--save_interval", "2", "--out_dir", str(tmp_path))
    assert trained.returncode == 0, trained.stderr
    # A corrupt line and a half-written one in the middle must cost nothing but a warning.
    metrics = tmp_path / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    metrics.write_text("".join(lines[:2]) + "not json\n" + '{"kind": "step", "step": 9}\n'
                       + "".join(lines[2:]))
    watcher = watch(tmp_path)  # no --plain: no terminal is enough
    out, err = watcher.communicate(timeout=120)
    assert watcher.returncode == 0, err
    # The console printed the same lines, after its resolved settings.
    console = trained.stdout.splitlines()
    first = next(i for i, line in enumerate(console) if line.startswith("Model params"))
    assert out.splitlines() == console[first:]
    assert sum(line.startswith("Epoch:[1/1]") for line in out.splitlines()) == 3
    assert out.splitlines()[-1].startswith("[completed] at step 3")
    assert "2 line(s) of metrics.jsonl are no readable event" in err


def test_an_aborted_run_exits_3_as_its_process_did(tmp_path):
    """An abort (a second signal: no new checkpoint) read as 130, "stopped, its checkpoint
    written", to a script waiting on watch."""
    trained = cli("--max_steps", "2", "--out_dir", str(tmp_path))
    assert trained.returncode == 0, trained.stderr
    metrics = tmp_path / "metrics.jsonl"
    *lines, end = metrics.read_text().splitlines(keepends=True)
    aborted = {**json.loads(end), "status": "stopped", "cause": "signal",
               "reason": "aborted at step 2 without a new checkpoint (none was written)"}
    metrics.write_text("".join(lines) + json.dumps(aborted) + "\n")
    status = json.loads((tmp_path / "run.json").read_text())
    (tmp_path / "run.json").write_text(json.dumps({**status, "state": "stopped"}))
    watcher = watch(tmp_path)
    out, err = watcher.communicate(timeout=120)
    assert out.splitlines()[-1].startswith("[stopped] at step 2 | aborted at step 2")
    assert watcher.returncode == 3, err


def test_a_live_run_is_followed_until_it_is_stopped_exit_130(tmp_path):
    trainer = start("--out_dir", str(tmp_path))
    try:
        wait_for(trainer, "Epoch:[1/1](2/")
        watcher = watch(tmp_path, "--plain")
        assert watcher.stdout.readline().startswith("Model params")
        # The run's own warning (its max_steps outlasts the data), as the console printed it.
        assert watcher.stdout.readline().startswith("[warning] the data ends before max_steps")
        assert watcher.stdout.readline().startswith("Epoch:[1/1](1/")
    finally:
        trainer.send_signal(signal.SIGTERM)
        trainer.communicate(timeout=120)
    out, err = watcher.communicate(timeout=120)
    assert watcher.returncode == 130, err
    last = out.splitlines()[-1]
    assert last.startswith("[stopped] at step ") and "checkpoint written" in last
    step = int(last.split()[3])
    assert f"({step}/" in out.splitlines()[-3]  # the last step line, then its checkpoint


@pytest.mark.parametrize("saved", [False, True])
def test_a_killed_run_is_reported_as_crashed_exit_1(tmp_path, saved):
    trainer = start("--out_dir", str(tmp_path), "--save_interval", "2" if saved else "0")
    try:
        wait_for(trainer, "[checkpoint] step 2" if saved else "Epoch:[1/1](2/")
        watcher = watch(tmp_path)
        assert watcher.stdout.readline().startswith("Model params")
    finally:
        trainer.send_signal(signal.SIGKILL)
        trainer.communicate(timeout=60)
    out, err = watcher.communicate(timeout=120)
    assert watcher.returncode == 1, err
    last = out.splitlines()[-1]
    assert last.startswith("[crashed] at step ") and f"pid {trainer.pid}" in last
    # The hint follows what the folder holds: a resume checkpoint, or none to resume from.
    assert last.endswith("hint: continue it with --from_resume 1" if saved else
                         "hint: it saved no checkpoint: start it again with --overwrite 1")


def test_a_folder_without_a_run_waits_for_one_until_ctrl_c(tmp_path):
    """...and names the runs below it, where those are: `watch out` on out/a, out/b waited
    for a run in out itself, and said only that there was none."""
    for name in ("a", "b", "c", "d/e"):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "metrics.jsonl").write_text("")
    watcher = watch(tmp_path)
    assert "no run in" in watcher.stderr.readline()
    second: list[str] = []  # read aside: without the line, a readline here waited for ever
    reader = threading.Thread(target=lambda: second.append(watcher.stderr.readline()),
                              daemon=True)
    reader.start()
    reader.join(60)
    assert second == [
        f"[watch] {tmp_path} holds 4 run(s) below it, none of its own: {tmp_path}/a, "
        f"{tmp_path}/b, {tmp_path}/c, ...: watch one of those (minimind-tui watch {tmp_path}/a); "
        f"minimind-tui runs {tmp_path} lists them\n"]
    watcher.send_signal(signal.SIGINT)
    out, err = watcher.communicate(timeout=60)
    assert watcher.returncode == 130 and out == "" and "Traceback" not in err
    # Said, as a stopped run's 130 is said: a Ctrl+C that left the run training read as none.
    assert err.splitlines()[-1] == "minimind-tui watch: stopped watching; watching never stops " \
                                   "the run"


def test_a_folder_not_made_yet_is_waited_for(tmp_path):
    """`train & watch out/x` raced the run to its folder: "no such folder", exit 2."""
    later = tmp_path / "later"
    watcher = watch(later)
    assert watcher.stderr.readline() == (f"[watch] no folder {later} yet: waiting for a run to "
                                         "start there (Ctrl+C to leave)\n")
    assert cli("--max_steps", "2", "--out_dir", str(later)).returncode == 0
    out, err = watcher.communicate(timeout=120)
    assert watcher.returncode == 0, err
    assert out.splitlines()[-1].startswith("[completed] at step 2")


def test_the_help_names_every_code_a_run_can_end_with(capsys):
    from minimind.events import RunFinished
    from minimind_tui.cli import exit_codes
    from minimind_tui.cli.watch import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    ends = [RunFinished(status=status, step=1, cause=cause) for status, cause in [
        ("completed", ""), ("stopped", ""), ("stopped", "signal"), ("failed", "input"),
        ("failed", "")]]
    assert {exit_codes.of_run(end) for end in ends} == {0, 130, 3, 2, 1}
    for end in ends:
        assert f" {exit_codes.of_run(end)} " in f" {text.split('outcome: ')[1]}"
