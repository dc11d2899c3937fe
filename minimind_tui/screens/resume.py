"""Pick a run folder to continue: it must hold the run's config.toml and a resume checkpoint."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.validation import ValidationResult, Validator
from textual.widgets import Button, Input, Static

from minimind.checkpoint import RESUME_SUFFIX, find_resume_files


class RunFolder(Validator):
    """What the engine's resume needs: `<dir>/config.toml` and a `*_resume.pth` beside it."""

    def validate(self, value: str) -> ValidationResult:
        folder = Path(value.strip()).expanduser()
        if not value.strip() or not folder.is_dir():
            return self.failure("not a folder")
        if not (folder / "config.toml").is_file():
            return self.failure("no config.toml here (not a run folder)")
        if not find_resume_files(folder):
            return self.failure(f"no *{RESUME_SUFFIX} checkpoint here")
        return self.success()


class ResumeScreen(ModalScreen[Path | None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel", id="resume_cancel")]

    def __init__(self, folder: str) -> None:
        super().__init__(classes="dialog-screen")
        self._folder = folder

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog") as dialog:
            dialog.border_title = "Resume a run"
            yield Static("Run folder (the out_dir of an earlier run):", markup=False)
            yield Input(self._folder, placeholder="out/tiny", id="run-folder",
                        validators=[RunFolder()])
            yield Static("", id="run-folder-note", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Load (enter)", id="load", variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self._check(self.query_one(Input).value)

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        self._check(event.value)

    def _check(self, value: str) -> None:
        result = self.query_one(Input).validate(value)
        valid = result is None or result.is_valid
        note = "loads its config.toml and turns from_resume on" if valid else \
            "; ".join(result.failure_descriptions)
        self.query_one("#run-folder-note", Static).update(note)
        self.query_one("#load", Button).disabled = not valid

    @on(Input.Submitted)
    @on(Button.Pressed, "#load")
    def _load(self) -> None:
        if not self.query_one("#load", Button).disabled:
            self.dismiss(Path(self.query_one(Input).value.strip()).expanduser())

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)
