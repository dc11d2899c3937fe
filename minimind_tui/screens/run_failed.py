"""The reason a run failed and what to try, in words; dismissing it returns to the form."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from minimind.events import RunFinished


class RunFailedScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,enter", "dismiss", "Back to the settings", id="failed_back")]

    def __init__(self, finished: RunFinished) -> None:
        super().__init__(classes="dialog-screen")
        self.finished = finished

    def compose(self) -> ComposeResult:
        f = self.finished
        with Vertical(classes="dialog -error") as dialog:
            dialog.border_title = "Run failed" + (" (input)" if f.cause == "input" else "")
            yield Static(Text(f.reason or "the run stopped with an error"), id="failed-reason")
            if f.hint:
                yield Static(Text(f"Try: {f.hint}"), id="failed-hint")
            if f.details_path:
                yield Static(Text(f"Details: {f.details_path}"), id="failed-details")
            yield Static(Text(f"Stopped at step {f.step}; the settings are unchanged."),
                         classes="dim")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Back to the settings (enter)", id="back", variant="primary")

    def on_button_pressed(self) -> None:
        self.dismiss()
