"""Experiment trackers as sinks: TensorBoard, Weights & Biases, SwanLab and Trackio.

`report_to` names them. Each receives the events every other viewer receives and logs the same
figures under the same names (train/loss, train/lr, perf/tokens_per_sec, eval/loss, ...) at the
optimizer step, plus the generated samples as text. Their packages are optional extras
(`pip install "minimind-tui[wandb]"`), imported only when a run asks for them, and only on the
tracker's own thread.

A tracker must never stop or slow training. `emit` only appends to a bounded queue; a thread per
tracker makes the tracker's calls. A tracker that raises is turned off with a warning; one whose
call has not returned after `stall_seconds` is abandoned the same way (its thread is a daemon);
when a slow tracker's queue is full, its oldest events are dropped. Only rank 0 has trackers.
"""

from __future__ import annotations

import abc
import importlib.util
import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

from minimind.events import EvalResult, Event, RunFinished, RunStarted, StepMetrics
from minimind.run_files import TENSORBOARD_FOLDER
from minimind.sinks import BackgroundSink

PROJECT = "minimind-tui"
GIB = float(1 << 30)


def install_command(name: str) -> str:
    return f'pip install "minimind-tui[{name}]"'


def missing_trackers(names: Iterable[str]) -> list[str]:
    """The named trackers whose package is not installed (each imports under its own name).
    `find_spec` looks without importing, so validating settings stays fast."""
    return [name for name in names if importlib.util.find_spec(name) is None]


# -- what every tracker logs ------------------------------------------------------------------
def scalars(event: Event) -> dict[str, float]:
    """The figures of a step or an evaluation, named as every tracker shows them."""
    if isinstance(event, EvalResult):
        return {"eval/loss": event.val_loss}
    if not isinstance(event, StepMetrics):
        return {}
    out = {"train/loss": event.loss, "train/lr": event.lr, "train/grad_norm": event.grad_norm,
           "train/epoch": event.epoch - 1 + event.epoch_step / event.steps_per_epoch,
           "train/tokens_seen": float(event.tokens_seen),
           "perf/tokens_per_sec": event.tokens_per_sec, "perf/mean_step_time_s": event.step_time}
    if event.aux_loss:  # MoE: the load-balancing term apart from the language-model loss
        out |= {"train/logits_loss": event.logits_loss, "train/aux_loss": event.aux_loss}
    if event.mfu is not None:
        out["perf/mfu"] = event.mfu
    for field in ("mem_allocated", "mem_reserved", "mem_peak", "rss"):
        if (value := getattr(event, field)) is not None:
            out[f"memory/{field.removeprefix('mem_')}_gib"] = value / GIB
    return out


def sample_table(event: Event) -> tuple[list[str], list[list[str]]] | None:
    """A samples event as (columns, rows): one column per list of texts it carries (prompts,
    continuations), so a new kind of continuation needs no change here."""
    if event.kind != "sample":
        return None
    data = event.to_dict()
    columns = [key for key, value in data.items()
               if isinstance(value, list) and all(isinstance(item, str) for item in value)]
    return columns, [list(row) for row in zip(*(data[c] for c in columns))]


def markdown_table(columns: list[str], rows: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", "<br>")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(map(cell, row)) + " |" for row in rows])


def run_config(run: RunStarted) -> dict[str, Any]:
    """The settings as the tracker's run config, with what the run measured about itself."""
    return {**run.settings, "run": {
        "parameters": run.parameters, "active_parameters": run.active_parameters,
        "device": run.device_name, "world_size": run.world_size,
        "tokens_per_step": run.tokens_per_step, "total_steps": run.total_steps,
        "start_step": run.start_step, "out_dir": run.out_dir}}


def run_name(run: RunStarted) -> str:
    return Path(run.out_dir).name or PROJECT


# -- the common machinery ---------------------------------------------------------------------
class TrackerSink(BackgroundSink, abc.ABC):
    """One tracker behind a queue and a thread. A subclass implements `start` (open the run,
    import the package), `log`, `log_samples` and `finish`; they run on the thread only."""

    name: ClassVar[str]
    hint: ClassVar[str] = ""  # what to do when the tracker cannot start, e.g. log in

    def __init__(self, out_dir: str | Path, warn: Callable[[str], None], *,
                 maxlen: int = 10_000, stall_seconds: float = 120.0, close_timeout: float = 30.0):
        self.out_dir = Path(out_dir)
        self.stall_seconds = stall_seconds
        self.off = False  # once set, never cleared: the tracker gets no more calls
        self._busy_since: float | None = None  # when the tracker call in progress began
        self._started = self._finished = False
        super().__init__(f"{self.name} tracker", maxlen=maxlen, close_timeout=close_timeout,
                         warn=warn)
        self.start_thread()

    # -- the training side: never waits on the tracker ------------------------------------
    def emit(self, event: Event) -> None:
        if self.off:
            return
        busy_since = self._busy_since
        if busy_since is not None and time.monotonic() - busy_since > self.stall_seconds:
            self._turn_off(f"{self.name}: no answer for {self.stall_seconds:g} s; {self.name} "
                           "logging is off for the rest of this run (training goes on)")
            return
        super().emit(event)

    def close(self) -> None:
        """Let the tracker finish its run, waiting at most `close_timeout` seconds (an
        abandoned tracker is not waited for)."""
        if self.off:
            with self._wake:
                self._closed = True
                self._wake.notify_all()
            return
        super().close()

    def gave_up(self) -> None:
        if self._thread.is_alive():
            self._turn_off(f"{self.name}: did not finish within {self.close_timeout:g} s; its "
                           "record of this run may be incomplete")

    def _turn_off(self, message: str) -> None:
        with self._wake:
            if self.off:
                return
            self.off = True
        self.drop_queued()
        self._warn(message)

    # -- the tracker's thread ---------------------------------------------------------------
    def work(self) -> None:
        warned_dropped = False
        while True:
            event, dropped = self.next_item()
            if self.off:
                return
            if event is None:
                if self.closed:
                    break  # closed, and every event delivered
                continue
            if dropped and not warned_dropped:
                warned_dropped = True
                self._warn(f"{self.name}: fell behind; {dropped} or more events were dropped "
                           "(training is not slowed)")
            delivered = self._call(self._deliver, event)
            self.done()
            if not delivered:
                return
        if self._started and not self._finished:  # the run ended without a RunFinished
            self._call(self.finish, "")

    def _call(self, method: Callable[..., None], *args: Any) -> bool:
        """Run one tracker call; False once the tracker is off."""
        self._busy_since = time.monotonic()
        try:
            method(*args)
        # Anything, KeyboardInterrupt included: a login prompt that met a closed stdin raises it.
        except BaseException as e:
            # A package that cannot be imported (broken, or of another Python) needs the
            # install, not a login.
            hint = (f" (reinstall it: {install_command(self.name)})"
                    if isinstance(e, ImportError) else self.hint)
            self._turn_off(f"{self.name}: {type(e).__name__}: {e}{hint}; {self.name} "
                           "logging is off for the rest of this run (training goes on)")
        finally:
            self._busy_since = None
        return not self.off

    def _deliver(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.start(event)
            self._started = True
        elif not self._started:
            return  # messages from the preparation: there is no tracker run yet
        elif isinstance(event, RunFinished):
            self.finish(event.status)
            self._finished = True
        elif values := scalars(event):
            self.log(event.step, values)
        elif (table := sample_table(event)) and table[1]:
            self.log_samples(event.step, *table)

    # -- what a tracker implements ----------------------------------------------------------
    @abc.abstractmethod
    def start(self, run: RunStarted) -> None:
        """Import the package and open the tracker's run."""

    @abc.abstractmethod
    def log(self, step: int, values: dict[str, float]) -> None:
        """Scalars at an optimizer step (see `scalars`)."""

    @abc.abstractmethod
    def log_samples(self, step: int, columns: list[str], rows: list[list[str]]) -> None:
        """Generated texts at an optimizer step, as a table or as text."""

    @abc.abstractmethod
    def finish(self, status: str) -> None:
        """`status` is RunFinished's ("completed", "stopped", "failed"), or "" if none came."""


# -- the trackers -----------------------------------------------------------------------------
class TensorBoardSink(TrackerSink):
    """Event files in `<out_dir>/tensorboard/` (`tensorboard --logdir <out_dir>/tensorboard`)."""

    name = "tensorboard"

    def start(self, run: RunStarted) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # A resume goes on from its checkpoint, which may lie behind the last steps logged (a
        # crash): TensorBoard reads every event file in the folder, so it is told to drop what
        # earlier files hold from the first step logged again on, or those steps show twice.
        self.writer = SummaryWriter(log_dir=str(self.out_dir / TENSORBOARD_FOLDER),
                                    purge_step=run.start_step + 1 if run.start_step else None)
        # TensorBoard's text is Markdown: indented lines show as code.
        settings = json.dumps(run_config(run), indent=2, ensure_ascii=False)
        self.writer.add_text("settings", "    " + settings.replace("\n", "\n    "),
                             run.start_step)

    def log(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def log_samples(self, step: int, columns: list[str], rows: list[list[str]]) -> None:
        self.writer.add_text("samples", markdown_table(columns, rows), step)

    def finish(self, status: str) -> None:
        self.writer.close()


class WandbSink(TrackerSink):
    """A W&B run under `<out_dir>/wandb/`; WANDB_MODE=offline keeps it local (`wandb sync`)."""

    name = "wandb"
    hint = " (run `wandb login`, or set WANDB_MODE=offline)"

    def start(self, run: RunStarted) -> None:
        import wandb

        # Silent: without credentials wandb raises instead of prompting on the dashboard's
        # terminal, and prints nothing between the run's lines. console="off" leaves our
        # stdout alone.
        wandb.setup(wandb.Settings(silent=True))
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", PROJECT), name=run_name(run),
            dir=str(self.out_dir), config=run_config(run), reinit="create_new",
            settings=wandb.Settings(console="off", silent=True))

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def log_samples(self, step: int, columns: list[str], rows: list[list[str]]) -> None:
        import wandb

        self.run.log({"samples": wandb.Table(columns=columns, data=rows)}, step=step)

    def finish(self, status: str) -> None:
        self.run.summary["status"] = status or "ended"
        self.run.finish(exit_code=0 if status in ("completed", "stopped") else 1)


class SwanLabSink(TrackerSink):
    """A SwanLab run under `<out_dir>/swanlab/`; SWANLAB_MODE=local or offline keeps it local."""

    name = "swanlab"
    hint = " (run `swanlab login`, or set SWANLAB_MODE=local)"
    STATES = {"completed": "success", "stopped": "aborted", "failed": "crashed", "": "aborted"}

    def start(self, run: RunStarted) -> None:
        import swanlab

        # Not interactive: no login prompt on the dashboard's terminal. No terminal proxy: our
        # stdout stays ours. No hardware monitor: the run's own events carry memory figures.
        settings = swanlab.Settings(interactive=False,
                                    terminal=swanlab.Settings.Terminal(proxy_type="none"),
                                    probe=swanlab.Settings.Probe(monitor=False))
        self.run = swanlab.init(project=PROJECT, name=run_name(run), config=run_config(run),
                                logdir=str(self.out_dir / "swanlab"), settings=settings)

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def log_samples(self, step: int, columns: list[str], rows: list[list[str]]) -> None:
        import swanlab

        texts = [swanlab.Text("\n".join(f"{c}: {v}" for c, v in zip(columns, row)))
                 for row in rows]
        self.run.log({"samples": texts}, step=step)

    def finish(self, status: str) -> None:
        self.run.finish(state=self.STATES.get(status, "aborted"))


class TrackioSink(TrackerSink):
    """A Trackio run in Trackio's local database (TRACKIO_DIR; `trackio show`)."""

    name = "trackio"

    def start(self, run: RunStarted) -> None:
        import trackio

        self.run = trackio.init(project=PROJECT, name=run_name(run), config=run_config(run),
                                embed=False, auto_log_gpu=False, auto_log_cpu=False)
        self.last_step: int | None = None

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)
        self.last_step = step

    def log_samples(self, step: int, columns: list[str], rows: list[list[str]]) -> None:
        import trackio

        self.run.log({"samples": trackio.Table(columns=columns, data=rows)}, step=step)

    def finish(self, status: str) -> None:
        from trackio.sqlite_storage import SQLiteStorage

        self.run.finish()
        # Trackio writes its database from a thread of its own, and a write that fails there
        # is only a Python warning on stderr: read back what the database holds instead.
        saved = SQLiteStorage.get_last_step(PROJECT, run_id=self.run.id)
        if self.last_step is not None and (saved is None or saved < self.last_step):
            held = "no step" if saved is None else f"steps up to {saved}"
            where = SQLiteStorage.get_project_db_path(PROJECT)
            self._warn(f"{self.name}: its database {where} holds {held} of this run, which "
                       f"logged up to step {self.last_step}: the rest could not be saved")


TRACKER_SINKS: dict[str, type[TrackerSink]] = {
    cls.name: cls for cls in (TensorBoardSink, WandbSink, SwanLabSink, TrackioSink)}


def tracker_sinks(names: Iterable[str], out_dir: str | Path,
                  warn: Callable[[str], None]) -> list[TrackerSink]:
    """A started sink for each named tracker (the settings checked they are installed)."""
    return [TRACKER_SINKS[name](out_dir, warn) for name in dict.fromkeys(names)]
