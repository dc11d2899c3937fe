"""Ask for a name to save the current settings under as a user preset; a name that is taken
(one of the user's presets, or a bundled one the new file would hide) is confirmed first."""

from __future__ import annotations

from functools import partial

from textual.validation import ValidationResult, Validator

from minimind_tui.form.presets import preset_name_problem, user_preset_dir
from minimind_tui.screens.confirm import ConfirmScreen
from minimind_tui.screens.input_dialog import InputDialog


class PresetName(Validator):
    """The names `save_user_preset` accepts: a file name, not a path or a hidden file."""

    def validate(self, value: str) -> ValidationResult:
        problem = preset_name_problem(value.strip())
        return self.failure(problem) if problem else self.success()


class SavePresetScreen(InputDialog[str]):
    def __init__(self, suggestion: str, bundled: set[str], user: set[str]) -> None:
        super().__init__(suggestion, title="Save as preset", input_id="preset-name",
                         validator=PresetName(), ok_label="Save", ok_id="save",
                         placeholder="preset name")
        self._bundled, self._user = bundled, user

    def note(self, value: str) -> str:
        name = value.strip()
        if name in self._user:
            return f"replaces your preset {name!r}"
        if name in self._bundled:
            return f"your preset {name!r} will hide the bundled one"
        return ""

    def result(self, value: str) -> str:
        return value.strip()

    def submit(self, value: str) -> None:
        name = self.result(value)
        if name in self._user:
            question = ConfirmScreen(
                f"Replace preset {name}?",
                f"Your preset {name!r} already exists; saving overwrites it with the form's "
                "settings.", yes="Replace")
        elif name in self._bundled:
            question = ConfirmScreen(
                f"Hide the bundled preset {name}?",
                f"Your preset {name!r} will hide the bundled one of that name (delete "
                f"{user_preset_dir() / name}.toml to get it back).", yes="Save anyway")
        else:
            self.dismiss(name)
            return
        self.app.push_screen(question, partial(self._confirmed, name))

    def _confirmed(self, name: str, yes: bool | None) -> None:
        if yes:
            self.dismiss(name)
        # Otherwise the dialog stays, so another name can be typed.
