"""Shown between "stop and quit" and the end of the run, which may take a step or two."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import LoadingIndicator, Static


class StoppingScreen(ModalScreen[None]):
    """No bindings and no buttons: the app dismisses it by exiting when the worker is done."""

    def __init__(self) -> None:
        super().__init__(classes="dialog-screen")

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog") as dialog:
            dialog.border_title = "Stopping…"
            yield Static("Finishing the current step and writing a checkpoint, then quitting.",
                         markup=False)
            yield LoadingIndicator()
