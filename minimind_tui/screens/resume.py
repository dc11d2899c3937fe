"""Pick a run folder to continue: it must hold the run's config.toml and a resume checkpoint."""

from __future__ import annotations

from pathlib import Path

from textual.validation import ValidationResult

from minimind.run_files import CONFIG_FILE, RESUME_SUFFIX
from minimind.run_folder import RunFolder
from minimind_tui.screens.input_dialog import InputDialog
from minimind_tui.screens.watch_dialog import ExistingFolder


class ResumableFolder(ExistingFolder):
    """What the engine's resume needs: the run's config.toml and a resume checkpoint beside it."""

    def validate(self, value: str) -> ValidationResult:
        if not (found := super().validate(value)).is_valid:
            return found
        folder = Path(value.strip()).expanduser()
        if not (folder / CONFIG_FILE).is_file():
            return self.failure(f"no {CONFIG_FILE} here (not a run folder)")
        if not RunFolder(folder).resumable():
            return self.failure(f"no *{RESUME_SUFFIX} checkpoint here")
        return self.success()


class ResumeScreen(InputDialog[Path]):
    def __init__(self, folder: str) -> None:
        super().__init__(folder, title="Resume a run", input_id="run-folder",
                         validator=ResumableFolder(), ok_label="Load", ok_id="load",
                         prompt="Run folder (the out_dir of an earlier run):",
                         placeholder="out/tiny")

    def note(self, value: str) -> str:
        return "loads its config.toml and turns from_resume on"

    def result(self, value: str) -> Path:
        return Path(value.strip()).expanduser()
