"""Reading a metrics.jsonl fast enough for a million-step history.

`json.loads` and building a `StepMetrics` cost most of the time of loading a long run, and a
run logs far more step lines than anything else. So runs of consecutive step lines are parsed
in bulk: one regular expression over the block picks the charted values (in the field order the
engine writes them, taken from the `StepMetrics` definition), numpy converts them, and only the
block's last line is parsed whole (the stats panel and the log show it). Any block that does not
match line for line (a corrupt line, a file from another version) falls back to parsing each
line, so the fast path can only be faster, never different. Other events are parsed one by one.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from minimind.events import Event, LogMessage, StepMetrics
from minimind.follow import MAX_LINE_BYTES, Follower, Lines, parse_event
from minimind_tui.run.history import BLOCK_COLUMNS, RunHistory, StepBlock

MIN_BLOCK = 64  # shorter runs of step lines (a live tail) are cheaper to parse one by one
STEP_PREFIX = StepMetrics.line_prefix()
# The line's fields whose values become BLOCK_COLUMNS (steps, tokens, loss, logits, aux, lr).
_CHARTED = {"step": "steps", "tokens_seen": "tokens", "loss": "loss",
            "logits_loss": "logits_loss", "aux_loss": "aux_loss", "lr": "lr"}


def _step_pattern() -> tuple[re.Pattern[bytes], list[int]]:
    """The regex of a step line from its `time` to its `tokens_seen`, capturing the charted
    values, and where each capture goes in BLOCK_COLUMNS."""
    names = [f.name for f in dataclasses.fields(StepMetrics)]
    names = names[: names.index("tokens_seen") + 1]
    value = rb"[^,\n]+"  # never across a line: every match lies within one line
    parts = [b'"%s": (%s)' % (n.encode(), value) if n in _CHARTED
             else b'"%s": %s' % (n.encode(), value) for n in names]
    captured = [_CHARTED[n] for n in names if n in _CHARTED]
    order = [captured.index(column) for column in BLOCK_COLUMNS]
    return re.compile(re.escape(STEP_PREFIX) + b", ".join(parts)), order


_STEP_LINE, _COLUMN_ORDER = _step_pattern()


def parse_lines(lines: list[bytes]) -> tuple[list[Event | StepBlock], int]:
    """The events of complete lines, in order (long runs of steps as `StepBlock`s), and how
    many non-empty lines were not a readable event."""
    items: list[Event | StepBlock] = []
    skipped = 0
    steps: list[bytes] = []

    def one_by_one(block: list[bytes]) -> None:
        nonlocal skipped
        for line in block:
            event = parse_event(line)
            if event is not None:
                items.append(event)
            elif line.strip():
                skipped += 1

    def flush_steps() -> None:
        block = step_block(steps) if len(steps) >= MIN_BLOCK else None
        if block is None:
            one_by_one(steps)
        else:
            items.append(block)
        steps.clear()

    for line in lines:
        if line.startswith(STEP_PREFIX):
            steps.append(line)
            continue
        if steps:
            flush_steps()
        one_by_one([line])
    if steps:
        flush_steps()
    return items, skipped


def parse_chunk(chunk: Lines, path: Path) -> tuple[list[Event | StepBlock], int]:
    """`parse_lines` of a poll, with a warning in the log when lines were skipped (so the
    viewer says why a history has gaps), and how many were."""
    items, skipped = parse_lines(chunk.lines)
    if skipped or chunk.oversized:
        parts = [f"{skipped:,} not a readable event"] if skipped else []
        if chunk.oversized:
            parts.append(f"{chunk.oversized:,} longer than {MAX_LINE_BYTES >> 20} MiB")
        items.append(LogMessage(level="warning", text=f"{path}: skipped "
                                f"{skipped + chunk.oversized:,} line(s): {', '.join(parts)}"))
    return items, skipped + chunk.oversized


def step_block(lines: list[bytes]) -> StepBlock | None:
    """Step lines as one block, or None if any of them is not exactly what the engine writes."""
    matches = _STEP_LINE.findall(b"\n".join(lines))
    last = parse_event(lines[-1])
    if len(matches) != len(lines) or not isinstance(last, StepMetrics):
        return None
    try:
        columns = np.array(matches).astype(np.float64)[:, _COLUMN_ORDER]
    except ValueError:  # a value that is no number
        return None
    return StepBlock(np.ascontiguousarray(columns), last)


def read_history(path: str | Path, history: RunHistory | None = None) -> RunHistory:
    """A whole metrics file (as it is now) in a `RunHistory`: for views of finished runs."""
    history = history or RunHistory()
    follower = Follower(path, chunk=4 << 20)
    while True:
        batch = follower.poll_lines()
        if batch.reset:
            history.reset()
        history.apply(parse_chunk(batch, follower.path)[0])
        if batch.caught_up:
            return history
