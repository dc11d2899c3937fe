"""Pick a run folder to continue: it must hold the run's config.toml and a resume checkpoint."""

from __future__ import annotations

from pathlib import Path

from textual.validation import ValidationResult, Validator

from minimind.checkpoint import RESUME_SUFFIX, find_resume_files
from minimind_tui.screens.input_dialog import InputDialog


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


class ResumeScreen(InputDialog[Path]):
    def __init__(self, folder: str) -> None:
        super().__init__(folder, title="Resume a run", input_id="run-folder",
                         validator=RunFolder(), ok_label="Load", ok_id="load",
                         prompt="Run folder (the out_dir of an earlier run):",
                         placeholder="out/tiny")

    def note(self, value: str) -> str:
        return "loads its config.toml and turns from_resume on"

    def result(self, value: str) -> Path:
        return Path(value.strip()).expanduser()
