"""`minimind-tui --no-ui`: the engine with upstream-style lines on stdout, and signal handling
that never loses a run's last steps.

The first SIGINT, SIGTERM or SIGHUP (Ctrl+C, `kill`, a closed SSH terminal) asks the engine to
finish its step and write a checkpoint: exit 130. A second one aborts at once, without a new
checkpoint (the previous one is intact): exit 3. After a hang-up the terminal is gone, so
messages that cannot be printed are dropped instead of ending the run. A signal this process
was started ignoring stays ignored: `nohup` ignores SIGHUP so that the run outlives the terminal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from minimind.event_text import with_hint
from minimind.parent_death import signal_on_parent_death
from minimind.run_folder import RunBusy, RunFolder
from minimind.settings import RunSettings
from minimind_tui.cli import exit_codes
from minimind_tui.cli.exit_codes import STOP_SIGNALS

if TYPE_CHECKING:
    from minimind_tui.run.launch import ChildProcess

LAUNCHER_GONE = signal.SIGUSR2
# How long --detach waits for the run to begin, so that bad data or a from_weight that does not
# fit is reported where the run was asked for; a longer preparation is left to run on.
DETACH_WAIT_SECONDS = 60


class Aborted(BaseException):
    """A second stop signal: leave now. A BaseException, so the engine's error handling (which
    turns exceptions into a failed run) lets it through to the command line."""


def say(text: str) -> None:
    """A line on stderr, unless the terminal is gone (after SIGHUP writes fail with EIO)."""
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def run_headless(settings: RunSettings) -> int:
    code = _run(settings)
    if (file := os.environ.get(exit_codes.RANK_CODE_FILE)) and os.environ.get("LOCAL_RANK") == "0":
        try:
            Path(file).write_text(str(code))
        except OSError:  # the launcher then says it does not know how the ranks ended
            pass
    return code


def _run(settings: RunSettings) -> int:
    from minimind.engine import Trainer
    from minimind.sinks import ConsoleSink

    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        import tomli_w

        try:
            print("# resolved settings\n" + tomli_w.dumps(settings.to_toml_dict()), flush=True)
        except OSError:
            pass
    stop = threading.Event()
    received: list[int] = []
    trainer = Trainer(settings, [ConsoleSink()], stop)

    def on_signal(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        received.append(signum)
        # The run has said how it ended; the process only exits (a second signal aborted the
        # teardown: exit 3, under a log that said the checkpoint was written).
        if trainer.finished is not None:
            return
        if stop.is_set():
            if rank == 0:  # under torchrun every rank hears it; one line says it
                # Whether an earlier checkpoint exists, the run's last line says.
                say(f"\nminimind-tui: {name} again: aborting now, without a new checkpoint")
            raise Aborted
        stop.set()
        if rank == 0:
            say(f"\nminimind-tui: {name} received: finishing the current step and writing a "
                "checkpoint (send it again to abort without one)")

    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, on_signal)
    def on_launcher_gone(signum: int, _frame: object) -> None:
        received.append(signum)
        if not stop.is_set() and rank == 0:
            say("\nminimind-tui: torchrun, which started this run, has gone: finishing the "
                "current step and writing a checkpoint")
        stop.set()

    stop_with_the_launcher(on_launcher_gone)
    try:
        result = trainer.run()
    except Aborted:
        return exit_codes.ABORTED
    code = exit_codes.of_run(result)  # an abort here is another rank's
    if code == exit_codes.SIGNALLED and not received:  # a stop no signal asked for
        return exit_codes.OK
    if told_already():
        return code
    if code == exit_codes.INVALID and rank == 0:  # every rank stopped on it; one line says it
        say(f"minimind-tui: error: {with_hint(result.reason, result.hint)}")
    if code == exit_codes.FAILED:
        where = f" (details: {result.details_path})" if result.details_path else ""
        say(f"minimind-tui: run failed: {result.reason}{where}")
    return code


def told_already() -> bool:
    """Whether stderr is the file stdout is (a terminal, `> log 2>&1`), where the console's
    `[failed]` line has just said what the error line on stderr would say again."""
    try:
        return os.path.samestat(os.fstat(sys.stdout.fileno()), os.fstat(sys.stderr.fileno()))
    except (OSError, ValueError, AttributeError):  # a stream without a file (a test's capture)
        return False


def stop_with_the_launcher(handler: Callable[[int, object], None]) -> None:
    """Under torchrun, the kernel tells a rank its launcher's death (LAUNCHER_GONE), and the
    run stops as on a stop signal: a torchrun killed alone (`kill -9`) left its ranks training
    on, unseen, holding the folder. A signal of its own, as it may come more than once (once
    for each of the dying launcher's threads the rank passes to), and more than once must not
    abort without a checkpoint as a second SIGTERM does."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return
    signal.signal(LAUNCHER_GONE, handler)
    signal_on_parent_death(LAUNCHER_GONE)


def wait_for_start(child: ChildProcess, folder: RunFolder) -> bool | None:
    """Whether the detached run began (True: its status is in the folder) or its process ended
    first (False), watched for up to DETACH_WAIT_SECONDS; None: still preparing by then."""
    deadline = time.monotonic() + DETACH_WAIT_SECONDS
    while time.monotonic() < deadline:
        if child.poll() is not None:
            return False
        status = folder.status()
        if status is not None and status.started >= child.started - 1:
            return True
        time.sleep(0.2)
    return None


@contextmanager
def _stop_signals_interrupt() -> Iterator[Callable[[], None]]:
    """Ctrl+C and SIGTERM as KeyboardInterrupt while the launcher works: either cancels the
    launch. Held while the launch is under way, and raised by the `released` this yields once
    the child is known: one that came between the child's start and its return left the run
    training on, unseen. A hang-up does not cancel: the terminal is gone, and a run that
    outlives it is what --detach asked for. A signal this process ignores stays ignored."""
    held: list[int] = []

    def hold(signum: int, frame: object) -> None:
        held.append(signum)

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    def released() -> None:
        for sig in before:
            signal.signal(sig, interrupt)
        if held:
            raise KeyboardInterrupt

    before = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)
              if signal.getsignal(sig) is not signal.SIG_IGN}
    try:
        yield released
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _cancel(child: ChildProcess) -> int:
    """Ctrl+C before the detached run began: the launch is cancelled, so its run is stopped as
    `kill PID` stops it (a checkpoint if it had begun to train) rather than left training
    unseen; this says how it ended, or where it is when it does not end in time."""
    pid = child.popen.pid
    child.request_stop()
    try:
        code = child.popen.wait(DETACH_WAIT_SECONDS)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        say(f"minimind-tui: interrupted; the run in the background (pid {pid}) is still "
            f"stopping: {child.log_path} says how it ends; kill -9 {pid} ends it at once")
        return exit_codes.SIGNALLED
    how = (f"ended by {signal.Signals(-code).name} before it began" if code < 0
           else f"exit {code}")
    say(f"minimind-tui: interrupted; the run in the background was stopped (pid {pid}, {how}); "
        f"the end of {child.log_path}:\n{child.log_tail(3)}")
    return exit_codes.SIGNALLED


def start_detached(settings: RunSettings) -> int:
    """`--no-ui --detach`: the same run in a child of its own session (the app's detached
    launch), and where to find it; this process returns once the run has begun, or with the
    child's error when it ended before that."""
    from minimind_tui.run.launch import launch

    out_dir = Path(settings.train.out_dir).expanduser()
    child = None
    try:
        with _stop_signals_interrupt() as released:
            child = launch(settings, detached=True)
            released()
            began = wait_for_start(child, RunFolder(out_dir))
    except RunBusy as e:
        return exit_codes.invalid(f"train.out_dir: {e}")
    except OSError as e:  # a refusal to reuse the folder names no file; the system's do
        where = f"{e.filename}: {e.strerror}" if e.filename else f"train.out_dir: {e}"
        return exit_codes.invalid(where)
    except KeyboardInterrupt:
        if child is None:  # nothing was started
            raise
        return _cancel(child)
    pid = child.popen.pid
    if began is False and (code := child.poll()) != exit_codes.OK:
        # It ended before its run began (bad data, a from_weight that does not fit): the
        # folder still shows the run before it, if any, so say it here, where it was asked.
        say(f"minimind-tui: {child.what} ended before training began (exit {code}); "
            f"the end of {child.log_path}:\n{child.log_tail(3)}")
        return code if code in (exit_codes.INVALID, exit_codes.FAILED) else exit_codes.FAILED
    if began is None:
        say(f"minimind-tui: still preparing after {DETACH_WAIT_SECONDS} s: if it fails, "
            f"{child.log_path} says why")
    print(f"started {child.what} in the background: pid {pid}\n"
          f"  out_dir  {out_dir}\n"
          f"  output   {child.log_path}\n"
          f"  watch it with: minimind-tui watch {out_dir}\n"
          f"  list runs with: minimind-tui runs {out_dir.parent}\n"
          f"  stop it (with a checkpoint) with: kill {pid}")
    return exit_codes.OK
