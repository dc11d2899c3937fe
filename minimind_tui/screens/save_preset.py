"""Ask for a name to save the current settings under as a user preset."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.validation import ValidationResult, Validator
from textual.widgets import Button, Input, Static

from minimind_tui.presets import preset_name_problem


class PresetName(Validator):
    """The names `save_user_preset` accepts: a file name, not a path or a hidden file."""

    def validate(self, value: str) -> ValidationResult:
        problem = preset_name_problem(value.strip())
        return self.failure(problem) if problem else self.success()


class SavePresetScreen(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel", id="save_cancel")]

    def __init__(self, suggestion: str, bundled: set[str], user: set[str]) -> None:
        super().__init__(classes="dialog-screen")
        self._suggestion, self._bundled, self._user = suggestion, bundled, user

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog") as dialog:
            dialog.border_title = "Save as preset"
            yield Input(self._suggestion, placeholder="preset name", id="preset-name",
                        validators=[PresetName()])
            yield Static("", id="preset-name-note", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save (enter)", id="save", variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self._check(self.query_one(Input).value)

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        self._check(event.value)

    def _check(self, value: str) -> None:
        result = self.query_one(Input).validate(value)
        name = value.strip()
        if result and not result.is_valid:
            note = "; ".join(result.failure_descriptions)
        elif name in self._user:
            note = f"replaces your preset {name!r}"
        elif name in self._bundled:
            note = f"your preset {name!r} will hide the bundled one"
        else:
            note = ""
        self.query_one("#preset-name-note", Static).update(note)
        self.query_one("#save", Button).disabled = bool(result and not result.is_valid)

    @on(Input.Submitted)
    @on(Button.Pressed, "#save")
    def _save(self) -> None:
        if not self.query_one("#save", Button).disabled:
            self.dismiss(self.query_one(Input).value.strip())

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)
