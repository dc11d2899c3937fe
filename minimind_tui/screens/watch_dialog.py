"""Pick a run folder to follow read-only (the app's *Watch run…*)."""

from __future__ import annotations

from pathlib import Path

from textual.validation import ValidationResult, Validator

from minimind.environment import unusable_path
from minimind.run_folder import RunFolder
from minimind_tui.screens.input_dialog import InputDialog


class ExistingFolder(Validator):
    """A usable path to a folder that is there."""

    def validate(self, value: str) -> ValidationResult:
        if why := unusable_path(value.strip()):
            return self.failure(why)
        folder = Path(value.strip()).expanduser()
        if not value.strip() or not folder.is_dir():
            return self.failure("not a folder")
        return self.success()


class WatchDialog(InputDialog[Path]):
    def __init__(self, folder: str) -> None:
        super().__init__(folder, title="Watch a run", input_id="watch-folder",
                         validator=ExistingFolder(), ok_label="Watch", ok_id="watch",
                         prompt="Run folder (an out_dir, here or synced from another machine):",
                         placeholder="out/tiny")

    def note(self, value: str) -> str:
        folder = RunFolder(Path(value.strip()).expanduser())
        found = folder.describe() if folder.holds_a_run() else "no run here yet"
        return f"{found}; read-only, followed live"

    def result(self, value: str) -> Path:
        return Path(value.strip()).expanduser()
