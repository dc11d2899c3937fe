"""`minimind-tui watch --plain OUT_DIR`: a run followed as log lines, like `tail -f` on its
console, for an SSH session, a log file or a script (the default without a terminal).

The lines are the console's own (`minimind.event_text`), rebuilt from the folder's
metrics.jsonl as it grows. It ends when the run does, with the run's outcome as exit code
(`exit_codes.of_run`), so `minimind-tui watch --plain out/x && next-step` waits for a run and goes
on only if it completed.

The run has ended when the last event read is its `finished` event and run.json no longer says
running (a resume that starts at once is followed on), or when run.json says running but the
process is gone: a crash, which wrote no `finished` event.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from minimind.event_text import describe
from minimind.events import Event, RunFinished
from minimind.follow import Follower, parse_event
from minimind.run_files import METRICS_FILE, STATUS_FILE
from minimind.run_folder import RunFolder
from minimind.runs import runs_below_text
from minimind.shown import printable_path
from minimind_tui.cli import exit_codes

POLL_SECONDS = 0.5
STATE_SECONDS = 2.0
# run.json and metrics.jsonl are written by two threads: a status that says the run ended may be
# on disk a moment before the metrics' last line. Wait this long for that line.
END_GRACE_SECONDS = 5.0


def follow(folder: Path) -> int:
    """Print the run in `folder` as it goes; return its exit code when it has ended."""
    run = RunFolder(folder)
    follower = Follower(folder / METRICS_FILE)
    last: Event | None = None
    skipped = 0
    state_checked = ended_seen = 0.0
    waiting_said = False
    while True:
        batch = follower.poll_lines()
        if batch.reset:
            say(f"[watch] {METRICS_FILE} started over: a new run replaced the one shown")
        bad = batch.oversized
        for line in batch.lines:
            event = parse_event(line)
            if event is None:
                bad += 1
                continue
            text = describe(event)
            if text is not None:
                print(text[0], flush=True)
            last = event
        if bad:
            skipped += bad
            say(f"[watch] {bad} line(s) of {METRICS_FILE} are no readable event: "
                f"skipped ({skipped} so far)")
        if not batch.caught_up:
            continue
        if time.monotonic() - state_checked >= STATE_SECONDS:
            state_checked = time.monotonic()
            state = run.state()
            if not state and not waiting_said:
                where = printable_path(str(folder))
                none = f"no run in {where}" if folder.is_dir() else f"no folder {where}"
                say(f"[watch] {none} yet: waiting for a run to start there (Ctrl+C to leave)")
                if below := runs_below_text(folder):
                    say(f"[watch] {below}")
                waiting_said = True
            if state not in ("", "running"):
                if isinstance(last, RunFinished):
                    return exit_codes.of_run(last)
                if state == "crashed":
                    print(crash_line(run, last), flush=True)
                    return exit_codes.FAILED
                # ended per run.json; its last metrics line may be a moment behind
                ended_seen = ended_seen or time.monotonic()
                if time.monotonic() - ended_seen >= END_GRACE_SECONDS:
                    status = run.status()
                    print(f"[{state}] at step {status.step if status else 0} (from "
                          f"{STATUS_FILE}; {METRICS_FILE} has no end event)", flush=True)
                    return exit_codes.OK if state == "completed" else exit_codes.FAILED
            else:
                ended_seen = 0.0
        time.sleep(POLL_SECONDS)


def crash_line(run: RunFolder, last: Event | None) -> str:
    status = run.status()
    step = status.step if status else getattr(last, "step", 0)
    where = f"pid {status.pid} on {status.host}" if status and status.pid else "its process"
    hint = ("continue it with --from_resume 1" if run.resumable() else
            "it saved no checkpoint: start it again with --overwrite 1")
    return (f"[crashed] at step {step} | {where} is gone without reporting an end (killed, "
            f"or the machine went down) | hint: {hint}")


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
