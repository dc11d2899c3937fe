"""Typed, serialisable training events: the only contract between the engine and any viewer.

They replace wandb: the engine emits them, sinks deliver them (dashboard queue, console,
`<out_dir>/metrics.jsonl`), and `event_from_dict` rebuilds them from a JSONL line, so a viewer of
a live metrics file sees exactly what the dashboard sees.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal


@dataclass
class Event:
    kind: ClassVar[str] = "event"
    time: float = field(default_factory=time.time, kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def line_prefix(cls) -> bytes:
        """How each line `to_json` writes for this kind begins: readers pass over the other
        kinds' lines without parsing them."""
        return json.dumps({"kind": cls.kind})[:-1].encode() + b", "


@dataclass
class RunStarted(Event):
    kind: ClassVar[str] = "run_started"
    settings: dict[str, Any]
    parameters: int
    active_parameters: int
    device: str
    device_name: str
    world_size: int
    tokens_per_step: int
    steps_per_epoch: int
    total_steps: int
    start_step: int
    flops_per_token: float
    peak_flops: float | None
    out_dir: str
    tokens_seen: int = 0
    """Tokens trained on by `start_step` (a resume's, from its checkpoint)."""
    elapsed: float = 0.0
    """Training time by `start_step`, likewise."""
    origin_save: str = ""
    """The `save_id` of the run checkpoint `from_weight` was when this run started from it; ""
    for a file that is no run's checkpoint, and for a resume (which keeps its start's)."""


@dataclass
class StepMetrics(Event):
    kind: ClassVar[str] = "step"
    step: int
    total_steps: int
    epoch: int  # 1-based
    epochs: int
    epoch_step: int  # 1-based, within the epoch
    steps_per_epoch: int
    loss: float
    logits_loss: float
    aux_loss: float
    lr: float
    grad_norm: float
    tokens_per_sec: float
    tokens_seen: int
    elapsed: float
    eta_seconds: float
    step_time: float  # mean seconds a step since this process began training: the ETA's rate
    mfu: float | None = None
    mem_allocated: int | None = None
    mem_reserved: int | None = None
    mem_peak: int | None = None
    mem_total: int | None = None
    rss: int | None = None


@dataclass
class EvalResult(Event):
    kind: ClassVar[str] = "eval"
    step: int
    val_loss: float
    tokens: int


@dataclass
class CheckpointSaved(Event):
    kind: ClassVar[str] = "checkpoint"
    step: int
    weights_path: str
    resume_path: str
    # The run's own count and clock at the save (None in logs from before they were kept):
    # a stop between two logged steps is told exactly, not estimated.
    tokens_seen: int | None = None
    elapsed: float | None = None
    save_id: str = ""
    """A name for this save alone: a run started from these weights keeps it, so the runs
    list can tell when the file has changed since ("" in logs from before it was kept)."""


@dataclass
class Sample(Event):
    """Continuations of the run's sample prompts at `step`: `greedy[i]` and `sampled[i]` (drawn
    with a fixed seed) continue `prompts[i]`, which they do not repeat."""

    kind: ClassVar[str] = "sample"
    step: int
    prompts: list[str]
    greedy: list[str]
    sampled: list[str]


@dataclass
class LogMessage(Event):
    kind: ClassVar[str] = "log"
    level: Literal["info", "warning", "error"]
    text: str


@dataclass
class RunFinished(Event):
    kind: ClassVar[str] = "finished"
    status: Literal["completed", "stopped", "failed"]
    step: int
    reason: str = ""
    cause: Literal["", "input", "runtime", "signal"] = ""
    hint: str = ""
    details_path: str = ""
    # At the end, the last evaluation and save included; None for a run that failed (its
    # figures are its last logged step's or checkpoint's) and in logs from before.
    tokens_seen: int | None = None
    elapsed: float | None = None


EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls for cls in (RunStarted, StepMetrics, EvalResult, CheckpointSaved, Sample,
                              LogMessage, RunFinished)
}


def event_from_dict(data: dict[str, Any]) -> Event:
    """The event a dict describes; TypeError/KeyError if it is not one (a corrupt or hand-made
    line must not reach a viewer as an event whose numbers are text)."""
    data = dict(data)
    cls = EVENT_TYPES[data.pop("kind")]
    event = cls(**data)
    for f in dataclasses.fields(cls):
        value = getattr(event, f.name)
        if not any(_is(value, kind) for kind in str(f.type).split(" | ")):
            raise TypeError(f"{cls.kind}.{f.name} is {type(value).__name__}, not {f.type}")
    # Its readers take each section (model, train) as a table: `{"train": 3}` crashed `watch`.
    if isinstance(event, RunStarted) and not all(isinstance(table, dict)
                                                 for table in event.settings.values()):
        raise TypeError(f"{cls.kind}.settings holds a section that is not a table")
    return event


def _is(value: Any, kind: str) -> bool:
    """Whether `value` fits one alternative of a field's annotation (as written above)."""
    if kind == "None":
        return value is None
    if kind == "bool":
        return isinstance(value, bool)
    if kind in ("int", "float"):
        return isinstance(value, int if kind == "int" else (int, float)) and \
            not isinstance(value, bool)
    if kind == "str" or kind.startswith("Literal"):
        return isinstance(value, str)
    origin = kind.partition("[")[0]
    return isinstance(value, {"dict": dict, "list": list}.get(origin, object))


def event_from_json(line: str) -> Event:
    return event_from_dict(json.loads(line))
