"""The exit codes of every `minimind-tui` command, in one place (the README lists them).

    0    done: the run completed, the export was written, ...
    1    a runtime failure (details in <out_dir>/error.log where there is one)
    2    invalid settings, flags or input files: one line per problem, no traceback
    3    aborted by a second signal: no new checkpoint (the previous one is intact)
    130  stopped by a signal (Ctrl+C, SIGTERM, SIGHUP): the checkpoint was written

`watch --plain` ends with the code of the run it followed: a stopped run (by a signal or the
dashboard's Stop) is 130, an aborted one 3, a crashed one 1.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from minimind.events import RunFinished

OK, FAILED, INVALID, ABORTED, SIGNALLED = 0, 1, 2, 3, 130
# What each code says of a run that ended (`of_run`), as help texts list them.
RUN_OUTCOMES = (f"{OK} completed, {SIGNALLED} stopped (checkpoint written), {ABORTED} aborted "
                f"by a second signal (no new checkpoint), {FAILED} failed or crashed, {INVALID} "
                "failed on its input")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# Where each node's local rank 0 leaves its exit code for our torchrun (minimind_tui.run.
# torchrun), which cannot learn it from torchrun after a stop signal.
RANK_CODE_FILE = "MINIMIND_RANK_CODE_FILE"


def invalid(*problems: object, prog: str = "minimind-tui") -> int:
    """Report user mistakes the way argparse does, one `prog: error: ...` line each, on stderr
    (a path's control characters written out: a file name may hold ESC or a newline); the exit
    code for them."""
    from minimind.shown import shown_line

    for problem in problems:
        print(f"{prog}: error: {shown_line(str(problem))}", file=sys.stderr)
    return INVALID


def of_run(finished: RunFinished) -> int:
    """The code for a run's end, as its process returns it and a watcher after it: a stop
    counts as one by signal (130) whoever asked for it, so that only a completed run reads as
    success; an abort (no new checkpoint) is 3."""
    if finished.status == "completed":
        return OK
    if finished.status == "stopped":
        return ABORTED if finished.cause == "signal" else SIGNALLED
    return INVALID if finished.cause == "input" else FAILED


def exit_with(main: Callable[[], int]) -> NoReturn:
    """A program's entry: `main`'s code as the exit code. The command has ended and said how;
    a stop signal from here on (a second Stop, torchrun's to every rank once one has left)
    would meet Python's default handler, which the interpreter puts back as it shuts down, and
    turn the code into a death by that signal (143)."""
    code = main()
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    sys.exit(code)
