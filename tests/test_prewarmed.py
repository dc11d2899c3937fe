"""The tests' CLI processes start from a prewarmed interpreter (prewarmed.py): each is still
the test's own child, started as `Popen` was asked, or else started by exec."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

import prewarmed

CLI = [sys.executable, "-m", "minimind_tui", "--no-ui"]


@pytest.fixture(autouse=True)
def _serving():
    if not prewarmed.serving():  # off, not Linux, or torch started threads (OMP_NUM_THREADS)
        pytest.skip("CLI processes start by exec here")


def command_line(pid: int) -> list[str]:
    """The process's command line once it has one: for a moment after `Popen` returns, an exec'd
    child's arguments are not yet in place (Linux sets them up after closing the exec's pipe)."""
    deadline = time.monotonic() + 60
    while not (args := psutil.Process(pid).cmdline()):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return args


def copied(proc: subprocess.Popen) -> bool:
    """Whether the process is a copy of the helper (not an exec), and the test's child."""
    assert psutil.Process(proc.pid).ppid() == os.getpid()
    return command_line(proc.pid)[1:2] == [prewarmed.__file__]


def test_a_copy_has_the_session_folder_stdio_and_environment_asked_for(tmp_path):
    reading = subprocess.Popen([*CLI, "--preset", "/dev/stdin"], cwd=tmp_path,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert copied(reading)
    assert os.getsid(reading.pid) == reading.pid
    deadline = time.monotonic() + 60
    while psutil.Process(reading.pid).cwd() != str(tmp_path):  # it reads stdin from there
        assert time.monotonic() < deadline
        time.sleep(0.05)
    _, err = reading.communicate("garbage [", timeout=120)
    assert reading.returncode == 2 and "/dev/stdin: not valid TOML" in err, err

    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "mine.toml").write_text("garbage [")
    told = subprocess.run([*CLI, "--preset", "mine"], capture_output=True, text=True,
                          env={**os.environ, "MINIMIND_TUI_PRESETS": str(presets)}, timeout=120)
    assert told.returncode == 2 and f"{presets / 'mine.toml'}: not valid TOML" in told.stderr


def test_a_copy_dies_of_the_signal_it_is_sent():
    proc = subprocess.Popen([*CLI, "--preset", "/dev/stdin"], stdin=subprocess.PIPE)
    assert copied(proc)
    proc.kill()
    assert proc.wait(timeout=60) == -signal.SIGKILL


def test_what_a_copy_cannot_reproduce_runs_by_exec():
    env = {**os.environ, "OMP_NUM_THREADS": "3"}  # read by torch's OpenMP as it loads
    proc = subprocess.Popen([*CLI, "--preset", "/dev/stdin"], stdin=subprocess.PIPE, env=env)
    try:
        assert not copied(proc)
        assert command_line(proc.pid)[1:3] == ["-m", "minimind_tui"]
    finally:
        proc.kill()
        proc.wait(timeout=60)


CODE = ("import sys, json\n"
        "print(json.dumps([__name__, sys.argv, sys.path[0], 'minimind' in sys.modules,\n"
        "                  sorted(k for k in globals() if not k.startswith('__'))]))\n"
        "sys.exit(3)\n")


@pytest.mark.parametrize("how", ["script", "code"])
def test_a_script_or_code_runs_in_a_copy_as_python_runs_it(tmp_path, how):
    script = tmp_path / "patch_then_run.py"
    script.write_text(CODE)
    main = [str(script)] if how == "script" else ["-c", CODE]
    told = {}
    for started, env in (("copy", os.environ), ("exec", {**os.environ, "MINIMIND_TEST_EXEC": "1"})):
        proc = subprocess.Popen([sys.executable, *main, "--a", "b"], env=env,
                                stdout=subprocess.PIPE, text=True)
        assert copied(proc) == (started == "copy")
        told[started] = (proc.communicate(timeout=120)[0], proc.returncode)
    first, path = (str(script), str(tmp_path)) if how == "script" else ("-c", "")
    assert told["copy"] == told["exec"] == (
        f'["__main__", ["{first}", "--a", "b"], "{path}", false, ["json", "sys"]]\n', 3)
