"""What Start does before a run begins: look at the run folder, ask when it is not free, and
pick the source the run comes from.

* The folder's run is alive (any launcher, any machine whose status is fresh): offer to watch
  it instead. The engine's lock refuses a second trainer anyway; this says so before starting.
* The folder holds a finished, stopped, failed or crashed run (or a weights file the run would
  save over) and the form does not say resume: Resume it, start in a New run folder beside it
  (out/tiny-2), or Overwrite it (asked twice, naming what is deleted). Resume and the new
  folder are set on the form as well, so the form shows what runs; overwrite is given to this
  start only, never left on the form, where the next Start would silently delete the run this
  one writes. The form's own overwrite switch (or `--overwrite 1`) goes straight to that
  confirmation: it is never taken without one.
* Then: one process on one device trains in this process's worker thread; several processes
  (nproc_per_node, nnodes) or a detached start launch a child and follow its folder.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from minimind.follow import Follower
from minimind.run_files import METRICS_FILE, run_files
from minimind.run_folder import NeedsConsent, RunBusy, RunFolder, named_in, replaced_files_text
from minimind.settings import RunSettings
from minimind_tui.run.launch import launch, needs_torchrun
from minimind_tui.run.source import CHUNK_BYTES, FolderSource, RunSource
from minimind_tui.run.worker import TrainingRun
from minimind.resume_check import resume_problems
from minimind.runs import next_free_folder, started_from
from minimind_tui.screens.choice import Choice, ChoiceScreen
from minimind_tui.screens.confirm import ConfirmScreen

if TYPE_CHECKING:
    from minimind_tui.app import MiniMindApp


def with_train(settings: RunSettings, **changes: Any) -> RunSettings:
    return settings.model_copy(update={"train": settings.train.model_copy(update=changes)})


def make_source(settings: RunSettings, *, detached: bool = False) -> RunSource:
    """The run as a source for the dashboard. Raises OSError if a child cannot be launched."""
    train = settings.train
    metrics = Path(train.out_dir).expanduser() / METRICS_FILE
    if not (detached or needs_torchrun(train)):
        return TrainingRun(settings, history=metrics if train.from_resume else None)
    follower = Follower(metrics, chunk=CHUNK_BYTES)
    if not train.from_resume:  # placed before the child starts: its new file is all there is
        follower.skip_to_end()
    return FolderSource(train.out_dir, launch(settings, detached=detached), follower=follower)


class StartFlow:
    def __init__(self, app: MiniMindApp) -> None:
        self.app = app

    def start(self, settings: RunSettings, *, detached: bool = False) -> None:
        train = settings.train
        folder = RunFolder(Path(train.out_dir).expanduser())
        try:  # the engine's own rule, asked before it is refused
            folder.consent(resume=train.from_resume, overwrite=False,
                           weights_name=settings.weights_name(), from_weight=train.from_weight)
        except RunBusy:
            self.app.push_screen(ChoiceScreen(
                f"{folder.path} is in use",
                f"Another training is writing to this folder: {folder.describe()}. "
                "Only one trainer may use a run folder at a time.",
                [Choice("watch", "Watch it", "w", "primary")],
                note="Watching is read-only; to train as well, choose another out_dir."),
                partial(self._busy_answered, folder.path))
        except NeedsConsent as e:
            new = next_free_folder(folder.path)
            if train.overwrite:  # the form's switch (or --overwrite 1) said so: confirm it
                self._reuse_answered(settings, detached, new, e.files, "overwrite")
                return
            # What a resume would meet, as the form and the engine see it.
            blocked = resume_problems(with_train(settings, from_resume=True, overwrite=False))
            files = replaced_files_text(folder.path, e.files, train.from_weight)
            choose = f"; choose what to do (a new folder is {new.name}, beside it)."
            if e.run:
                title = f"{folder.path} already holds a run"
                text = f"Its run: {e.run}. Start would replace it" + (
                    f" and {files}" if files else "") + choose
            else:
                title = (f"{folder.path} already holds "
                         f"{', '.join(named_in(folder.path, p) for p in e.files)}")
                text = f"Start would replace {files}" + choose
            self.app.push_screen(ChoiceScreen(
                title, text,
                # Short labels: four buttons fit the dialog in one row at 80 columns.
                [Choice("resume", "Resume", "r", "primary", disabled=bool(blocked)),
                 Choice("new", "New folder", "n", "success"),
                 Choice("overwrite", "Overwrite…", "o", "error")],
                note=(f"Resume cannot: {blocked[0].message}" if blocked
                      else resume_note(folder))),
                partial(self._reuse_answered, settings, detached, new, e.files))
        else:
            self.launch(settings, detached=detached)

    def _busy_answered(self, path: Path, answer: str | None) -> None:
        if answer == "watch":
            self.app.watch_folder(path)

    def _reuse_answered(self, settings: RunSettings, detached: bool, new: Path,
                        in_the_way: list[Path], answer: str | None) -> None:
        if answer == "resume":
            self.app.configure_screen.set_fields({"train.from_resume": True})
            self.launch(with_train(settings, from_resume=True), detached=detached)
        elif answer == "new":  # a fresh run there: nothing to resume
            self.app.configure_screen.set_fields({"train.out_dir": str(new),
                                                  "train.from_resume": False})
            self.launch(with_train(settings, out_dir=str(new), from_resume=False),
                        detached=detached)
        elif answer == "overwrite":
            folder = Path(settings.train.out_dir).expanduser()
            files = len(run_files(folder))
            what = f"the run there, its checkpoints included ({files} files)" if files else ""
            if in_the_way:
                names = replaced_files_text(folder, in_the_way, settings.train.from_weight)
                what = f"{what} and {names}" if what else names
            lost = started_from(folder)
            self.app.push_screen(ConfirmScreen(
                f"Overwrite {settings.train.out_dir}?",
                f"This deletes {what}, once the new run has started. It cannot be undone."
                + (f" Runs started from its weights: {lost}." if lost else ""),
                yes="Delete and start"),
                partial(self._overwrite_confirmed, settings, detached))

    def _overwrite_confirmed(self, settings: RunSettings, detached: bool,
                             confirmed: bool | None) -> None:
        if confirmed:  # a new run in place of the old one: nothing to resume
            self.app.configure_screen.set_fields({"train.from_resume": False})
            self.launch(with_train(settings, overwrite=True, from_resume=False),
                        detached=detached)

    def launch(self, settings: RunSettings, *, detached: bool = False) -> None:
        try:
            source = make_source(settings, detached=detached)
        except RunBusy as e:  # another launch took the folder since the question above
            self.app.notify(str(e), title="Cannot launch the run", severity="error",
                            markup=False)
            return
        except OSError as e:
            self.app.notify(f"{e.filename or settings.train.out_dir}: {e.strerror or e}",
                            title="Cannot launch the run", severity="error", markup=False)
            return
        self.app.begin_run(source)


def resume_note(folder: RunFolder) -> str:
    """Where a resume goes on from, and the steps it trains again (a crash loses those after
    the last save)."""
    status = folder.status()
    saved = status.checkpoint_step if status else None
    if not saved:
        return "Resume continues from its last checkpoint"
    again = (f": steps {saved + 1:,}–{status.step:,} were never saved and train again"
             if status.step > saved else "")
    return f"Resume continues from its checkpoint at step {saved:,}{again}"
