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

    def __init__(self, finished: RunFinished, *, refused: bool = False) -> None:
        """`refused`: the run was refused while it was prepared, before any step."""
        super().__init__(classes="dialog-screen")
        self.finished = finished
        self.refused = refused

    def compose(self) -> ComposeResult:
        f = self.finished
        with Vertical(classes="dialog -error") as dialog:
            dialog.border_title = ("Cannot start" if self.refused else "Run failed"
                                   + (" (input)" if f.cause == "input" else ""))
            yield Static(Text(f.reason or "the run stopped with an error"), id="failed-reason")
            if f.hint:
                yield Static(Text(f"Try: {f.hint}"), id="failed-hint")
            if f.details_path:
                yield Static(Text(f"Details: {f.details_path}"), id="failed-details")
            yield Static(Text("Nothing was trained; the run folder is as it was."
                              if self.refused else
                              f"Stopped at step {f.step}; the settings are unchanged."),
                         classes="dim")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Back to the settings (enter)", id="back", variant="primary")

    def on_button_pressed(self) -> None:
        self.dismiss()
