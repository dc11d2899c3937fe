"""Signals and terminals, for real: a closed SSH session (SIGHUP), a double Ctrl+C, SIGTERM while
the data are tokenized, a dashboard whose terminal disappears, no terminal at all, a dead rank."""

from __future__ import annotations

import json
import os
import pty
import random
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from minimind.run_folder import RunFolder
from minimind.runs import summarise

CLI = [sys.executable, "-m", "minimind_tui"]
QUICK = ["--preset", "tiny", "--max_seq_len", "64", "--batch_size", "4", "--dtype", "float32",
         "--val_data_path", "", "--eval_interval", "0", "--log_interval", "1", "--packing", "0",
         "--save_interval", "0", "--max_steps", "100000"]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "--no-ui", *QUICK, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env())


def wait_for_step(proc: subprocess.Popen, step: int) -> None:
    for line in proc.stdout:
        if line.startswith(f"Epoch:[1/1]({step}/"):
            return
    raise AssertionError(f"the run ended before step {step}: {proc.communicate()[1][-2000:]}")


def resume_step(out_dir: Path) -> int:
    state = torch.load(out_dir / "pretrain_128_resume.pth", weights_only=True)
    return state["progress"]["step"]


def test_a_second_signal_before_any_checkpoint_claims_none(tmp_path):
    """The abort's notice speaks of no checkpoint it has not seen; the run's last line says
    none was written (it said "the last one written is intact" once)."""
    proc = start("--out_dir", str(tmp_path), "--save_interval", "0", "--batch_size", "64")
    wait_for_step(proc, 1)
    proc.send_signal(signal.SIGINT)
    proc.stderr.readline()
    assert "SIGINT received" in proc.stderr.readline()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    assert "intact" not in err and "without a new checkpoint (none was written)" in out, out
    assert not list(tmp_path.glob("*.pth"))
    # The runs list says so beside the steps trained: a resume has nothing to start from.
    assert summarise(tmp_path).cells()["step"].endswith(" (none saved)")


def test_signals_after_the_run_has_ended_change_nothing(tmp_path):
    """The process lives on for a moment after "[stopped]" (the run's teardown). A second
    SIGINT there aborted the teardown: exit 3, a second "[stopped] ... aborted" line and a
    warning that metrics.jsonl refused it, under a log that said the checkpoint was written."""
    script = (  # the teardown made long enough to hit
        "import sys, time\n"
        "import minimind.engine\n"
        "teardown = minimind.engine.distributed.teardown\n"
        "def slow(dist):\n"
        "    print('tearing down', flush=True); time.sleep(2); teardown(dist)\n"
        "minimind.engine.distributed.teardown = slow\n"
        "from minimind_tui.cli.main import main\n"
        "code = main(sys.argv[1:])\n"
        "print('exiting', flush=True)\n"
        "sys.exit(code)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, "--no-ui", *QUICK, "--out_dir",
                             str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env())
    wait_for_step(proc, 2)
    proc.send_signal(signal.SIGTERM)
    for line in proc.stdout:
        if line == "tearing down\n":
            break
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert out.endswith("exiting\n"), out
    assert proc.returncode == 130, err
    assert "again: aborting" not in err and "aborted" not in out
    assert "could not be written" not in out
    assert_stopped_with_a_checkpoint(tmp_path)


def test_signals_while_the_process_exits_change_nothing(tmp_path):
    """Python puts back the default handlers as the interpreter shuts down: a SIGTERM then (a
    second Stop, systemd's, torchrun's to a rank once another has left) killed the process,
    exit 143, after its run had ended "stopped" with a checkpoint."""
    proc = start("--out_dir", str(tmp_path))
    wait_for_step(proc, 2)
    proc.send_signal(signal.SIGTERM)
    for line in proc.stdout:
        if line.startswith("[stopped]"):
            break
    while proc.poll() is None:  # until it has gone, a signal every few milliseconds
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.003)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "again: aborting" not in err
    assert_stopped_with_a_checkpoint(tmp_path)


def test_sighup_stops_a_headless_run_with_a_checkpoint(tmp_path):
    proc = start("--out_dir", str(tmp_path))
    wait_for_step(proc, 2)
    proc.send_signal(signal.SIGHUP)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "SIGHUP received" in err and "[stopped]" in out
    assert resume_step(tmp_path) >= 2


def test_a_signal_to_the_whole_process_group_spares_the_loader_workers(tmp_path):
    """`timeout`, `kill -- -PGID`, scancel and Ctrl+C signal every process of the group: the
    data loader's worker (num_workers 1, most presets' setting) died of SIGTERM and took the
    run down with it ("DataLoader worker is killed by signal", no checkpoint); SIGINT made it
    print the stopping notice a second time."""
    for stop in (signal.SIGTERM, signal.SIGINT):
        out_dir = tmp_path / stop.name
        proc = subprocess.Popen([*CLI, "--no-ui", *QUICK, "--num_workers", "1", "--out_dir",
                                 str(out_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env(), start_new_session=True)
        wait_for_step(proc, 2)
        assert len(psutil.Process(proc.pid).children()) >= 1  # the worker is there to signal
        os.killpg(proc.pid, stop)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
        assert err.count(f"{stop.name} received") == 1 and "[stopped]" in out, err
        assert_stopped_with_a_checkpoint(out_dir)


def test_a_second_signal_aborts_clearly_and_keeps_the_last_checkpoint(tmp_path):
    # Checkpoints every step, so there is one to keep; the second signal arrives mid-run.
    proc = start("--out_dir", str(tmp_path), "--save_interval", "1")
    wait_for_step(proc, 3)
    proc.send_signal(signal.SIGINT)
    first = proc.stderr.readline() + proc.stderr.readline()  # a blank line, then the notice
    assert "SIGINT received" in first
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    err = first + err
    assert proc.returncode == 3, err
    assert "SIGINT again: aborting now, without a new checkpoint" in err
    assert "Traceback" not in err + out and "KeyboardInterrupt" not in err
    assert "without a new checkpoint (the one at step" in out and "is intact)" in out
    assert resume_step(tmp_path) >= 2  # loadable: the abort never leaves a torn file
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]
    # The folder says the run stopped (and where), not that it crashed.
    status = RunFolder(tmp_path).status()
    assert RunFolder(tmp_path).state() == "stopped"
    saved = resume_step(tmp_path)
    assert status.reason in (f"aborted at step {saved}, right after its checkpoint",
                             f"aborted at step {saved + 1} without a new checkpoint (the one at "
                             f"step {saved} is intact)")
    # The runs list names the step a resume starts from where it is not the last trained.
    unsaved = "" if status.step == saved else f" (saved {saved:,})"
    assert summarise(tmp_path).cells()["step"] == (
        f"{status.step:,}/{status.total_steps:,}{unsaved}")


def slow_to_tokenize(folder: Path) -> Path:
    """16 MB of random words: none repeats, so the tokenizer's chunk cache never hits and
    tokenizing the file for packing takes far longer than a test waits."""
    data = folder / "big.jsonl"
    rng = random.Random(0)
    text = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz     ", k=16_000_000))
    data.write_text("".join(json.dumps({"text": text[i:i + 1000]}) + "\n"
                            for i in range(0, len(text), 1000)))
    return data


@pytest.mark.parametrize("to_the_group", [False, True])
def test_sigterm_while_the_data_are_tokenized_stops_at_once(tmp_path, to_the_group):
    """To the group too, as torchrun sends it: the tokenizer's worker processes died of it,
    and the run failed with a traceback instead of stopping."""
    data, cache = slow_to_tokenize(tmp_path), tmp_path / "cache"
    proc = subprocess.Popen([*CLI, "--no-ui", *QUICK, "--packing", "1", "--data_path", str(data),
                             "--out_dir", str(tmp_path / "run")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**env(), "MINIMIND_CACHE": str(cache)},
                            start_new_session=True)
    for out_line in proc.stdout:
        if out_line.startswith("# resolved settings"):
            break
    time.sleep(3)  # torch is imported and the file is being read
    if to_the_group:
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "while preparing the data" in out
    tokens = cache / "tokens"
    assert not tokens.exists() or not [p for p in tokens.iterdir() if p.suffix == ".u16"]
    assert not tokens.exists() or not [p for p in tokens.iterdir() if p.suffix == ".tmp"]


def test_the_dashboard_needs_a_terminal():
    proc = subprocess.run([*CLI, "--preset", "tiny"], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, env=env(), timeout=60)
    assert proc.returncode == 2
    assert "no terminal" in proc.stderr and "use --no-ui" in proc.stderr


def read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    seen, deadline = b"", time.monotonic() + timeout
    while needle not in seen:
        if time.monotonic() > deadline:
            raise AssertionError(f"no {needle!r} on the terminal: {seen[-500:]!r}")
        if select.select([fd], [], [], 0.5)[0]:
            try:
                seen += os.read(fd, 65536)
            except OSError:
                break
    return seen


def start_dashboard_run(out_dir: Path) -> tuple[int, int]:
    """The app on a real pseudo-terminal, its run started (F5) and two steps in: (pid, fd)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child
        os.environ.update(env(), TERM="xterm-256color", COLUMNS="120", LINES="40")
        os.execv(sys.executable, [*CLI, *QUICK, "--out_dir", str(out_dir)])
    try:
        read_until(fd, b"Start", timeout=90)  # the form is drawn
        os.write(fd, b"\x1b[15~")  # F5
        metrics = out_dir / "metrics.jsonl"
        deadline = time.monotonic() + 120
        while not (metrics.exists() and metrics.read_text().count('"kind": "step"') >= 2):
            assert time.monotonic() < deadline, "the run did not start"
            drain(fd, 0.2)  # the app must never block on a full pty
    except BaseException:  # a failed start must not leave the app running after the test
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    return pid, fd


def drain(fd: int, wait: float) -> bytes:
    seen = b""
    try:
        while select.select([fd], [], [], wait)[0]:
            seen += os.read(fd, 65536)
    except OSError:  # the app has gone
        pass
    return seen


def wait_exit(pid: int, fd: int | None = None) -> tuple[int, bytes]:
    """The app's exit status, and (with `fd`) what it drew until then."""
    deadline, seen = time.monotonic() + 120, b""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), seen + (drain(fd, 0) if fd else b"")
        assert time.monotonic() < deadline, "the app did not exit after the signal"
        seen += drain(fd, 0.2) if fd is not None else (time.sleep(0.2) or b"")


def assert_stopped_with_a_checkpoint(out_dir: Path) -> None:
    events = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    assert events[-1]["kind"] == "finished" and events[-1]["status"] == "stopped"
    assert any(e["kind"] == "checkpoint" for e in events)
    assert resume_step(out_dir) == events[-1]["step"]


def test_closing_the_dashboards_terminal_stops_the_run_with_a_checkpoint(tmp_path):
    """Like `tmux kill-session` or a dropped SSH connection: the terminal's master side closes,
    the kernel sends SIGHUP, and the app must still finish the step, checkpoint and exit."""
    out_dir = tmp_path / "run"
    pid, fd = start_dashboard_run(out_dir)
    os.close(fd)  # hang up
    wait_exit(pid)
    assert_stopped_with_a_checkpoint(out_dir)


def test_sigterm_stops_the_dashboards_run_and_the_app_exits_cleanly(tmp_path):
    """`kill PID` on the app mid-run: the stopping notice is shown, the run ends with a
    checkpoint, and the app exits without a traceback (it raised NoActiveAppError once), with
    the code and the last line `--no-ui` gives: it exited 0 and said nothing, so `&& export`
    went on from a run that had not finished."""
    out_dir = tmp_path / "run"
    pid, fd = start_dashboard_run(out_dir)
    try:
        os.kill(pid, signal.SIGTERM)
        code, screen = wait_exit(pid, fd)
    finally:
        os.close(fd)
    assert code == 130, screen[-3000:]
    assert b"Traceback" not in screen and b"Error" not in screen, screen[-3000:]
    assert_stopped_with_a_checkpoint(out_dir)
    step = json.loads((out_dir / "metrics.jsonl").read_text().splitlines()[-1])["step"]
    said = rf"{out_dir}: \[stopped\] at step {step} \| [^\r\n]*checkpoint written\r\n"
    assert re.search(said.encode(), screen), screen[-3000:]  # (one line, for a log to grep)


def start_torchrun(out_dir: Path, *args: str, launcher: tuple[str, ...] = ()
                   ) -> tuple[subprocess.Popen, list[psutil.Process]]:
    """Two ranks through the torchrun our command line becomes, once they have trained 2 steps."""
    cmd = [sys.executable, "-m", "minimind_tui.run.torchrun", *launcher, "--standalone",
           "--nproc_per_node=2", "-m", "minimind_tui", "--no-ui", *QUICK, "--device", "cpu",
           "--num_workers", "0", "--out_dir", str(out_dir), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env(), start_new_session=True)
    wait_for_step(proc, 2)
    workers = [p for p in psutil.Process(proc.pid).children(recursive=True)
               if "minimind_tui" in " ".join(p.cmdline())]
    assert len(workers) == 2, workers
    return proc, workers


def test_a_dead_rank_ends_the_torchrun_job(tmp_path):
    """Through the torchrun our command line becomes, which names the rank that died (torchrun
    alone printed its own traceback and a ChildFailedError block)."""
    proc, workers = start_torchrun(tmp_path)
    workers[1].kill()
    started = time.monotonic()
    try:
        err = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            for worker in workers:
                worker.kill()
    assert proc.returncode == 1
    assert time.monotonic() - started < 90
    assert re.search(rf"minimind-tui: rank [01] \(pid {workers[1].pid}\) was killed by SIGKILL",
                     err), err
    assert "Traceback" not in err and "ChildFailedError" not in err


def test_ranks_whose_torchrun_was_killed_stop_with_a_checkpoint(tmp_path):
    """`kill -9` of torchrun alone left its ranks training on, unseen and holding the folder:
    each rank now hears its launcher's death as SIGTERM, and the job stops as a stop does."""
    proc, workers = start_torchrun(tmp_path)
    proc.kill()
    proc.wait(timeout=60)
    try:
        _, alive = psutil.wait_procs(workers, timeout=90)
    finally:
        for worker in workers:
            if worker.is_running():
                worker.kill()
    assert not alive, alive
    assert_stopped_with_a_checkpoint(tmp_path)
    said = "minimind-tui: torchrun, which started this run, has gone: finishing the current step"
    assert proc.stderr.read().count(said) == 1


def test_a_torchrun_job_stopped_while_rank_0_tokenizes_stops_every_rank(tmp_path):
    """Rank 0 left for its stop while rank 1 waited for its token file in a collective: rank 1
    failed with gloo's 'Connection closed by peer' and a traceback."""
    cmd = [sys.executable, "-m", "minimind_tui.run.torchrun", "--standalone", "--nproc_per_node=2",
           "-m", "minimind_tui", "--no-ui", *QUICK, "--packing", "1", "--device", "cpu",
           "--num_workers", "0", "--data_path", str(slow_to_tokenize(tmp_path)),
           "--out_dir", str(tmp_path / "run")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**env(), "MINIMIND_CACHE": str(tmp_path / "cache")},
                            start_new_session=True)
    for out_line in proc.stdout:
        if out_line.startswith("# resolved settings"):
            break
    time.sleep(3)  # torch is imported and rank 0 is reading the file
    proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "[stopped] at step 0 | stop requested while preparing the data" in out
    assert "Traceback" not in err and "run failed" not in err, err


@pytest.mark.parametrize("told, waits", [((), 600), (("--shutdown_timeout", "5"), 5)])
def test_our_torchrun_gives_a_stop_time_for_its_checkpoint(monkeypatch, told, waits):
    """torchrun's own 30 s killed a DDP stop still waiting for its poll step or writing the
    checkpoint; a timeout the user gives still counts."""
    from torch.distributed.run import config_from_args

    from minimind_tui.run import torchrun

    # A copy, as main() sets the ranks' variables in it.
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if k not in
                                        ("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "PET_SHUTDOWN_TIMEOUT")})
    given: list[int] = []
    monkeypatch.setattr(torchrun, "run",
                        lambda args: given.append(config_from_args(args)[0].shutdown_timeout))
    assert torchrun.main([*told, "--standalone", "-m", "minimind_tui", "--no-ui"]) == 0
    assert given == [waits]


def test_ranks_torchrun_kills_before_they_stop_are_no_stop_with_a_checkpoint(tmp_path):
    """torchrun kills the ranks still running its --shutdown_timeout after a stop signal; the
    job said 130 ("stopped, checkpoint written") all the same."""
    # Killed at once (a timeout of 0), in a step of ~1.5 s.
    proc, workers = start_torchrun(tmp_path, "--accumulation_steps", "25", "--hidden_size", "512",
                                   launcher=("--shutdown_timeout", "0"))
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        for worker in workers:
            if worker.is_running():
                worker.kill()
    assert proc.returncode == 1, err
    assert ("minimind-tui: the ranks did not end within torchrun's shutdown timeout and were "
            "killed: the stop's checkpoint may not have been written") in err
