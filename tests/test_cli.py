"""The headless CLI as a user runs it: a real subprocess, real exit codes."""

import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import tomllib
from pathlib import Path

import pytest
import torch

from minimind.run_folder import RunFolder

CLI = [sys.executable, "-m", "minimind_tui"]
FAST = ["--preset", "tiny", "--max_seq_len", "64", "--batch_size", "4", "--dtype", "float32",
        "--val_data_path", "", "--log_interval", "1", "--eval_interval", "0"]


def cli(*args, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=300,
                          **kwargs)


def test_help_lists_upstream_flags():
    out = cli("--help").stdout
    options = set(re.findall(r"^  (--[\w-]+)", out, re.MULTILINE))  # an option's own line
    assert {"--batch_size", "--hidden_size", "--use_moe", "--data_path", "--from_resume",
            "--no-ui", "--detach", "--preset"} <= options


def test_completed_run_exits_0(tmp_path):
    proc = cli("--no-ui", *FAST, "--max_steps", "3", "--out_dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("# resolved settings")
    assert "Epoch:[1/1](3/" in proc.stdout and "[completed] at step 3" in proc.stdout
    assert (tmp_path / "pretrain_128.pth").exists()


@pytest.mark.parametrize("args, message", [
    (["--batch_size", "0"], "train.batch_size: must be ≥ 1"),
    (["--num_key_value_heads", "3"], "model.num_key_value_heads: (3) must divide"),
    (["--preset", "nope"], "unknown preset 'nope'"),
    (["--data_path", "/nonexistent.jsonl"], "train.data_path: /nonexistent.jsonl"),
    (["--vocab_size", "120"],
     "model.vocab_size: (120) is smaller than the tokenizer's vocabulary (6400)"),
])
def test_invalid_settings_or_input_exit_2_without_traceback(tmp_path, args, message):
    proc = cli("--no-ui", *FAST, "--out_dir", str(tmp_path), *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_bad_jsonl_line_is_named(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "fine"}\n{"text": oops}\n')
    proc = cli("--no-ui", *FAST, "--packing", "0", "--data_path", str(data),
               "--out_dir", str(tmp_path / "run"))
    assert proc.returncode == 2
    assert f"{data}:2: line is not valid JSON" in proc.stderr


def test_unknown_flag_exits_2():
    proc = cli("--no-ui", "--batchsize", "3")
    assert proc.returncode == 2 and "unrecognized arguments: --batchsize" in proc.stderr


def test_runtime_failure_exits_1_with_details(tmp_path):
    # Inject a fault the user cannot cause: the model's forward breaks mid-run.
    code = textwrap.dedent(f"""
        import sys
        from minimind.model import MiniMindForCausalLM
        from minimind_tui.cli.main import main
        def broken(self, *a, **k):
            raise RuntimeError("simulated kernel failure")
        MiniMindForCausalLM.forward = broken
        sys.exit(main({["--no-ui", *FAST, "--out_dir", str(tmp_path)]!r}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1
    assert "run failed: RuntimeError: simulated kernel failure" in proc.stderr
    assert f"details: {tmp_path / 'error.log'}" in proc.stderr
    assert "simulated kernel failure" in (tmp_path / "error.log").read_text()


def test_a_failure_is_said_once_where_stderr_is_stdout(tmp_path):
    """In a terminal (or `> log 2>&1`) the `[failed]` line has said it: the error line on
    stderr, for scripts that read stderr alone, would say it again under it."""
    (tmp_path / "w.pth").write_text("not a checkpoint")
    args = ("--no-ui", *FAST, "--from_weight", str(tmp_path / "w.pth"), "--out_dir",
            str(tmp_path / "run"))
    reason = "w.pth: not a readable PyTorch checkpoint"
    apart = cli(*args)
    assert apart.returncode == 2 and reason in apart.stdout and reason in apart.stderr
    together = subprocess.run([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=300)
    assert together.returncode == 2 and together.stdout.count(reason) == 1, together.stdout
    assert "[failed] before training | train.from_weight: " in together.stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_gracefully_with_checkpoint_and_exit_130(tmp_path, sig):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([*CLI, "--no-ui", *FAST, "--max_steps", "100000",
                             "--out_dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stdout:
        if line.startswith("Epoch:[1/1](2/"):
            break
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "[stopped]" in out
    state = torch.load(tmp_path / "pretrain_128_resume.pth", weights_only=False)
    assert state["progress"]["step"] >= 2

    resumed = cli("--no-ui", *FAST, "--max_steps", str(state["progress"]["step"] + 2),
                  "--out_dir", str(tmp_path), "--from_resume", "1")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming at step {state['progress']['step']}" in resumed.stdout


def test_every_invalid_flag_is_reported_at_once_naming_the_changed_field(tmp_path):
    proc = cli("--no-ui", "--batch_size", "0", "--hidden_size", "100", "--out_dir", str(tmp_path))
    assert proc.returncode == 2
    errors = proc.stderr.strip().splitlines()
    assert errors == ["minimind-tui: error: train.batch_size: must be ≥ 1",
                      "minimind-tui: error: model.hidden_size: num_attention_heads (8) must "
                      "divide hidden_size (100)"]


def test_presets_lists_parameter_counts_smallest_first_and_a_broken_one(tmp_path):
    (tmp_path / "bad.toml").write_text("[model]\nhidden_size = \"big\"\n")
    # A misspelt train setting, the model's table fine: listed as a preset of 1.21M once.
    (tmp_path / "typo.toml").write_text("[model]\nhidden_size = 128\nnum_hidden_layers = 2\n"
                                        "[train]\nlearnig_rate = 0.01\n")
    # Every table checked as `--preset` checks it: this one was listed as 1.21M too.
    (tmp_path / "word.toml").write_text("[train]\nlearning_rate = \"fast\"\n")
    proc = subprocess.run([*CLI, "presets"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MINIMIND_TUI_PRESETS": str(tmp_path)})
    rows = [line.split() for line in proc.stdout.splitlines()]
    assert proc.returncode == 0 and rows[0][:3] == ["tiny", "1.21M", "params"], proc.stdout
    bundled = [float(row[1].rstrip("M")) for row in rows if "bundled" in row]
    assert len(bundled) >= 6 and bundled == sorted(bundled)
    assert [row[:3] for row in rows[-3:]] == [["bad", "invalid", "user"],
                                              ["typo", "invalid", "user"],
                                              ["word", "invalid", "user"]]


def test_help_and_flag_errors_import_neither_torch_nor_transformers():
    code = textwrap.dedent("""
        import sys
        from minimind_tui.cli.main import main
        for argv in (["--help"], ["presets"], ["--no-ui", "--batch_size", "0"]):
            try:
                main(argv)
            except SystemExit:
                pass
        heavy = sorted({"torch", "transformers", "textual"} & set(sys.modules))
        print("heavy:", heavy, file=sys.stderr)
    """)
    fresh = {**os.environ, "MINIMIND_TEST_EXEC": "1"}  # not a prewarmed copy: torch is in it
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=fresh, timeout=120)
    assert "heavy: []" in proc.stderr, proc.stderr


def test_tokenizer_subcommand_speaks_like_the_main_cli(tmp_path):
    usage = cli("tokenizer", "train", "--help").stdout
    assert usage.startswith("usage: minimind-tui tokenizer train")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": oops}\n')
    proc = cli("tokenizer", "train", "--data", str(bad), "--out", str(tmp_path / "tok"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"minimind-tui tokenizer: error: {bad}:2: line is not valid "
                                   "JSON at column 10: expected a value (a string, number, "
                                   "object, ...)")
    good = tmp_path / "good.jsonl"
    good.write_text("".join(f'{{"text": "line {i} of some text"}}\n' for i in range(50)))
    proc = cli("tokenizer", "train", "--data", str(good), "--out", str(tmp_path / "tok"),
               "--vocab_size", "300")
    assert proc.returncode == 0, proc.stderr
    assert "\n\n" not in proc.stderr + proc.stdout and proc.stderr == ""  # no progress bar


def test_missing_files_are_reported_at_once_before_anything_runs(tmp_path):
    proc = cli("--no-ui", *FAST, "--out_dir", str(tmp_path / "run"),
               "--data_path", str(tmp_path / "train.jsonl"),
               "--tokenizer_path", str(tmp_path / "tokenizer"))
    assert proc.returncode == 2 and proc.stdout == ""
    missing = "no such file or folder"
    assert proc.stderr.splitlines() == [
        f"minimind-tui: error: train.data_path: {tmp_path / 'train.jsonl'}: {missing}",
        f"minimind-tui: error: train.tokenizer_path: {tmp_path / 'tokenizer'}: {missing}"]
    assert not (tmp_path / "run").exists()


def test_a_folder_holding_a_run_is_refused_in_one_line_naming_the_flags(tmp_path):
    assert cli("--no-ui", *FAST, "--max_steps", "1", "--out_dir", str(tmp_path)).returncode == 0
    proc = cli("--no-ui", *FAST, "--max_steps", "1", "--out_dir", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stdout == ""  # no settings dump burying the refusal
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"minimind-tui: error: train.out_dir: {tmp_path} already holds a run")
    assert "--from_resume 1" in line and "--overwrite 1" in line


def wait_until_finished(folder, seconds=240):
    deadline = time.monotonic() + seconds
    while RunFolder(folder).state() in ("", "running"):
        assert time.monotonic() < deadline, (folder / "launch.log").read_text()
        time.sleep(0.5)
    return RunFolder(folder).state()


def test_detach_starts_the_run_in_a_session_of_its_own_and_says_where(tmp_path):
    out = tmp_path / "run"
    proc = cli("--no-ui", "--detach", *FAST, "--max_steps", "3", "--out_dir", str(out))
    assert proc.returncode == 0, proc.stderr
    pid = int(re.search(r"pid (\d+)", proc.stdout)[1])
    assert os.getsid(pid) == pid  # setsid: the terminal's hang-up cannot reach it
    for text in (str(out), str(out / "launch.log"), f"minimind-tui watch {out}",
                 f"minimind-tui runs {tmp_path}"):
        assert text in proc.stdout
    assert wait_until_finished(out) == "completed"
    assert "[completed] at step 3" in (out / "launch.log").read_text()
    # Again over it: the overwrite replaces the old run, not the files launched for the new
    # one (its output went to a launch.log the child deleted, and launch.toml went too).
    proc = cli("--no-ui", "--detach", *FAST, "--max_steps", "2", "--out_dir", str(out),
               "--overwrite", "1")
    assert proc.returncode == 0, proc.stderr
    assert wait_until_finished(out) == "completed"
    assert "[completed] at step 2" in (out / "launch.log").read_text()
    assert (out / "launch.toml").is_file() and RunFolder(out).status().step == 2


def test_detach_reports_a_run_that_fails_before_it_begins(tmp_path):
    """Bad data end the child before its run begins: the folder still shows the run before it
    (or nothing), so --detach itself must say so, with the child's error and exit code."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "hello"}\n{"text": 5}\n')
    out = tmp_path / "run"
    proc = cli("--no-ui", "--detach", *FAST, "--max_steps", "3", "--out_dir", str(out),
               "--data_path", str(bad), "--packing", "0")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "ended before training began (exit 2)" in proc.stderr
    assert f"{bad}:2" in proc.stderr and "started" not in proc.stdout
    assert RunFolder(out).status() is None


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_detach_interrupted_before_its_run_began_stops_the_run(tmp_path, sig):
    """Ctrl+C while --detach waited said "interrupted" and exited 130, while the run it had
    started trained on, unseen, in a session of its own."""
    import psutil

    out = tmp_path / "run"
    launcher = subprocess.Popen([*CLI, "--no-ui", "--detach", *FAST, "--max_steps", "100000",
                                 "--out_dir", str(out)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not (children := psutil.Process(launcher.pid).children()):
        assert time.monotonic() < deadline and launcher.poll() is None, launcher.communicate()
        time.sleep(0.05)
    child = children[0]
    try:
        launcher.send_signal(sig)  # the child is still importing: its run has not begun
        _, err = launcher.communicate(timeout=120)
        assert launcher.returncode == 130, err
        assert f"the run in the background was stopped (pid {child.pid}" in err
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
        assert "started" not in err and RunFolder(out).state() != "running"
    finally:  # a failure here must not leave a run training for the rest of the suite
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


def test_a_master_port_in_use_is_one_line_not_torchruns_traceback(tmp_path):
    """Node 0 of a multi-node job could not listen on its port: torch's 45-line traceback and
    exit 1. It also says what it waits for (it waited silently for the other nodes)."""
    import socket

    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = cli("--no-ui", *FAST, "--max_steps", "2", "--out_dir", str(tmp_path / "run"),
                   "--nproc_per_node", "2", "--nnodes", "2", "--master_port", str(port))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines()[-2:] == [
        f"minimind-tui: node 0 of 2: waiting at 127.0.0.1:{port} until every node has started "
        "this command with its own --node_rank",
        f"minimind-tui: error: train.master_port: {port} is in use on this machine: choose "
        "another"]


def test_two_detached_launches_into_one_folder_train_the_survivors_settings(tmp_path):
    """Started together: one takes the folder's lock before writing anything, the other is
    refused, and the run trains with the settings of the launch that was not refused."""
    out, rates = tmp_path / "run", ("0.001", "0.002")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launches = [subprocess.Popen([*CLI, "--no-ui", "--detach", *FAST, "--max_steps", "3",
                                  "--learning_rate", rate, "--out_dir", str(out)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=env) for rate in rates]
    results = [(p.wait(timeout=300), *p.communicate()) for p in launches]
    started = [i for i, (code, _, _) in enumerate(results) if code == 0]
    assert len(started) == 1, results
    code, _, err = results[1 - started[0]]
    assert code == 2 and "is in use by a running training" in err, err
    assert wait_until_finished(out) == "completed"
    for name in ("config.toml", "launch.toml"):
        saved = tomllib.loads((out / name).read_text())
        assert saved["train"]["learning_rate"] == float(rates[started[0]]), name


def test_a_nohup_run_keeps_ignoring_the_hang_up(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(["nohup", *CLI, "--no-ui", *FAST, "--max_steps", "100000",
                             "--out_dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    steps = (line for line in proc.stdout if line.startswith("Epoch:[1/1]"))
    next(steps)
    proc.send_signal(signal.SIGHUP)
    for _ in range(3):  # trains on after the hang-up
        next(steps)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "SIGHUP" not in err and "SIGTERM received" in err


@pytest.mark.parametrize("argv", [["runs", "{root}"], ["presets"], ["--help"]])
def test_a_reader_that_leaves_early_gets_no_traceback(tmp_path, argv):
    read, write = os.pipe()
    os.close(read)  # `| head` that has already exited: every write fails with EPIPE
    proc = subprocess.run([*CLI, *(a.format(root=tmp_path) for a in argv)], stdout=write,
                          stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(write)
    assert proc.returncode == 0 and proc.stderr == ""


def test_generate_refuses_a_seed_torch_cannot_take(tmp_path):
    proc = cli("generate", str(tmp_path), "--prompt", "hi", "--seed", str(10**23))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "argument --seed: must be from 0 to 2**64 - 1" in proc.stderr


def test_generate_refuses_a_prompt_that_is_not_utf8(tmp_path):
    """The terminal's bytes reached the tokenizer as lone surrogates: a TypeError traceback."""
    proc = subprocess.run([*CLI, "generate", str(tmp_path), "--prompt", b"ab\xffcd"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.rstrip().endswith(
        "argument --prompt: not valid UTF-8 (byte 0xff at character 3)")


def test_runs_calls_a_link_loop_one(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    proc = cli("runs", str(tmp_path / "a"))
    assert proc.returncode == 2 and proc.stderr.rstrip().endswith(
        f"{tmp_path / 'a'}: a link to nothing (its target is missing, or the links loop)")


def test_max_steps_beyond_the_data_says_the_data_ends_first_and_how_to_get_more(tmp_path):
    data = tmp_path / "small.jsonl"
    data.write_text("".join(f'{{"text": "line {i} of a small file"}}\n' for i in range(8)))
    proc = cli("--no-ui", *FAST, "--packing", "0", "--data_path", str(data), "--max_steps", "20",
               "--out_dir", str(tmp_path / "run"))  # 8 samples, 4 per step: 2 steps an epoch
    assert proc.returncode == 0, proc.stderr
    assert ("[warning] the data ends before max_steps (20): 1 epoch(s) of 2 steps end the run "
            "at step 2; for 20 steps set epochs to 10 (--epochs 10)") in proc.stdout
    assert "[completed] at step 2" in proc.stdout


def test_a_piped_preset_is_refused_before_torchrun_reads_it_twice(capsys):
    """`--preset <(...)`: read by this process, then named to each worker, where it was gone
    ("unknown preset '/dev/fd/63'")."""
    from minimind_tui.cli.main import main

    read, write = os.pipe()
    os.write(write, (Path(__file__).parents[1] / "presets" / "tiny.toml").read_bytes())
    os.close(write)
    try:
        assert main(["--no-ui", "--preset", f"/dev/fd/{read}", "--nproc_per_node", "2"]) == 2
    finally:
        os.close(read)
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"minimind-tui: error: --preset /dev/fd/{read}: not a regular file, and each of the 2 "
        "processes torchrun starts reads it again; save it to a file")


def test_a_bad_line_met_while_packing_is_one_error_line_with_its_hint(tmp_path, capsys):
    """The run's last line named the bad line and how to train without it; the error line
    after it (stderr) named the line alone."""
    from minimind_tui.cli.main import main

    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "To be, or not to be"}\n' * 20 + '{"txt": "a"}\n')
    assert main(["--no-ui", "--preset", "tiny", "--out_dir", str(tmp_path / "run"),
                 "--data_path", str(data), "--val_data_path", "", "--eval_interval", "0"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f'minimind-tui: error: train.data_path: {data}:21: missing "text" field | hint: set '
        "skip_bad_lines to train without such lines (they are counted, the first few named)")


def test_ctrl_c_before_a_command_handles_it_is_a_line_not_a_traceback():
    """Ctrl+C in the seconds a command spends importing torch printed a 30-frame
    KeyboardInterrupt traceback. A real SIGINT, sent while the export command is loading."""
    script = textwrap.dedent("""
        import os, signal, sys
        import minimind_tui.cli.export as export
        export.main = lambda argv: os.kill(os.getpid(), signal.SIGINT) or 0
        from minimind_tui.cli.main import main
        sys.exit(main(["export", "out/run", "out/hf"]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (130, "", "\nminimind-tui: interrupted\n")


def test_control_characters_in_a_path_are_written_out_in_the_error_line(tmp_path, capsys):
    """A file name can hold ESC or a newline: printed raw, `\\x1b[2J` cleared the terminal
    under the error, and a newline split the one-line error in two."""
    from minimind.event_text import describe
    from minimind.events import RunFinished
    from minimind_tui.cli.main import main

    path = f"{tmp_path}/x\x1b[2J\ny.jsonl"
    assert main(["--no-ui", "--preset", "tiny", "--data_path", path]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\x1b" not in err
    assert f"{tmp_path}/x\\x1b[2J\\ny.jsonl" in err, err
    line, _ = describe(RunFinished(status="failed", step=0, cause="input",
                                   reason=f"train.data_path: {path}: no such file"))
    assert line == f"[failed] before training | train.data_path: {tmp_path}/x\\x1b[2J\\ny.jsonl: " \
                   "no such file"
    # The dashboard's checkpoint row, the same path's twin.
    from types import SimpleNamespace

    from minimind_tui.widgets.stats_panel import _in_the_run_folder

    run = SimpleNamespace(checkpoint=SimpleNamespace(weights_path="/elsewhere/r\x1b[2J/w.pth"),
                          started=None)
    assert _in_the_run_folder(run) == "/elsewhere/r\\x1b[2J/w.pth"
