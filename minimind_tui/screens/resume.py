"""Pick a run folder to continue: it must hold the run's config.toml and a resume checkpoint."""

from __future__ import annotations

from pathlib import Path

from textual.validation import ValidationResult, Validator

from minimind.environment import unusable_path
from minimind.run_files import CONFIG_FILE, RESUME_SUFFIX, resume_files
from minimind_tui.screens.input_dialog import InputDialog


class ResumableFolder(Validator):
    """What the engine's resume needs: the run's config.toml and a resume checkpoint beside it."""

    def validate(self, value: str) -> ValidationResult:
        if why := unusable_path(value.strip()):
            return self.failure(why)
        folder = Path(value.strip()).expanduser()
        if not value.strip() or not folder.is_dir():
            return self.failure("not a folder")
        if not (folder / CONFIG_FILE).is_file():
            return self.failure(f"no {CONFIG_FILE} here (not a run folder)")
        if not resume_files(folder):
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
