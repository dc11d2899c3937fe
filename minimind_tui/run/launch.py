"""Training in a child process: torchrun for several processes, or one process detached from
the terminal so that closing it (an SSH session dropping) does not end the run.

The child is the headless CLI (`python -m minimind_tui --no-ui`) given the app's validated
settings as a preset file written into the run folder (`launch.toml`); its output goes to
`launch.log` there. The app follows the run through its folder like any other viewer
(`run_source.FolderSource`), so a detached run can be closed and reopened with `watch`.

Stopping sends SIGTERM to the child's own process only: torchrun forwards it to every worker,
each finishes its step and rank 0 writes the checkpoint. Signalling the whole group would hand
each worker a second signal, which aborts without a checkpoint.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from minimind.run_files import LAUNCH_LOG_FILE, LAUNCH_SETTINGS_FILE
from minimind.folder_lock import LOCK_FD_ENV
from minimind.run_folder import LAUNCHED_INTO_ENV, RunFolder
from minimind.settings import RunSettings, TrainSettings

TAIL_BYTES = 16 << 10
# torchrun waits this long (default 30 s) for its workers after forwarding a stop: a big model's
# step and checkpoint may take longer, and a worker killed mid-save loses the stop's checkpoint.
SHUTDOWN_SECONDS = "600"


def needs_torchrun(train: TrainSettings) -> bool:
    return train.nproc_per_node > 1 or train.nnodes > 1


def torchrun_command(train: TrainSettings) -> list[str]:
    """torchrun with the settings' process layout: its launcher, of this interpreter's torch,
    run by `minimind_tui.run.torchrun`, which ends with the workers' own exit code."""
    command = [sys.executable, "-m", "minimind_tui.run.torchrun",
               f"--nproc_per_node={train.nproc_per_node}"]
    if train.nnodes > 1:
        return command + [f"--nnodes={train.nnodes}", f"--node_rank={train.node_rank}",
                          f"--master_addr={train.master_addr}",
                          f"--master_port={train.master_port}"]
    return command + ["--standalone"]  # one machine: a free port, no rendezvous settings


def child_command(settings: RunSettings, settings_file: Path) -> list[str]:
    train = settings.train
    launcher = torchrun_command(train) if needs_torchrun(train) else [sys.executable]
    return [*launcher, "-m", "minimind_tui", "--no-ui", "--preset", str(settings_file)]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"  # launch.log follows the run line by line
    env.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", SHUTDOWN_SECONDS)
    return env


@dataclass
class ChildProcess:
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_offset: int
    """Where this launch's output starts in the log (an earlier launch's output comes first)."""
    detached: bool
    started: float
    what: str
    """"torchrun" or "the training process", for messages."""

    def poll(self) -> int | None:
        return self.popen.poll()

    def request_stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)

    def log_tail(self, lines: int = 15) -> str:
        """The last lines this launch wrote (stdout and stderr together)."""
        try:
            with open(self.log_path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(self.log_offset, size - TAIL_BYTES))
                text = f.read().decode("utf-8", errors="replace")
        except OSError as e:
            return f"({self.log_path}: {e.strerror})"
        return "\n".join(text.rstrip().splitlines()[-lines:]) or "(no output)"


def launch(settings: RunSettings, *, detached: bool = False) -> ChildProcess:
    """Start the run in a child process. Detached: in a session of its own, so neither the
    terminal's hang-up nor the app's exit reaches it. Otherwise in a process group of its own,
    so only the app signals it (a terminal's signal would reach it twice: directly and from
    the app).

    The folder is claimed (locked, consent checked) before anything is written into it, and a
    single training process inherits the lock: a second launch into the folder is refused
    before it can replace this one's launch.toml. (torchrun's workers cannot inherit it, so a
    multi-process launch hands it to torchrun's process, whose rank 0 takes it again.)
    Raises RunBusy or PermissionError when the folder may not be used, OSError if it or the
    log cannot be written."""
    train = settings.train
    out_dir = Path(train.out_dir).expanduser()
    folder = RunFolder(out_dir)
    folder.claim(resume=train.from_resume, overwrite=train.overwrite,
                 weights_name=settings.weights_name(), from_weight=train.from_weight)
    try:
        settings_file = settings.save_toml(out_dir / LAUNCH_SETTINGS_FILE, for_one_launch=True)
        command = child_command(settings, settings_file)
        env, inherited = child_env(), ()
        env[LAUNCHED_INTO_ENV] = str(out_dir.resolve())
        if not needs_torchrun(train):
            env[LOCK_FD_ENV] = str(folder.lock_fd)
            inherited = (folder.lock_fd,)
        log_path = out_dir / LAUNCH_LOG_FILE
        with open(log_path, "ab") as log:  # appended: a resumed run keeps its earlier output
            offset = log.tell()
            log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(command)}\n".encode())
            log.flush()
            popen = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, env=env, pass_fds=inherited,
                                     start_new_session=detached,
                                     process_group=None if detached else 0)
        if needs_torchrun(train):
            folder.hand_to(popen.pid)
    finally:
        folder.release()  # this process's copy; the child's keeps the folder locked
    what = "torchrun" if needs_torchrun(train) else "the training process"
    return ChildProcess(popen, log_path, offset, detached, time.time(), what)


def exec_torchrun(train: TrainSettings, argv: list[str]) -> None:
    """Replace this process with torchrun running the same command line (the headless CLI
    given nproc_per_node > 1 outside torchrun). Signals then go to torchrun directly."""
    command = [*torchrun_command(train), "-m", "minimind_tui", *argv]
    print(f"minimind-tui: launching {train.nproc_per_node} processes per node: "
          f"{shlex.join(command)}", file=sys.stderr, flush=True)
    if train.nnodes > 1:  # else the wait for the others said nothing for as long as it took
        print(f"minimind-tui: node {train.node_rank} of {train.nnodes}: waiting at "
              f"{train.master_addr}:{train.master_port} until every node has started this "
              "command with its own --node_rank", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os.execv(sys.executable, command)
