"""A question with a few answers, each a button with its own key; escape cancels (None)."""

from __future__ import annotations

from dataclasses import dataclass

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


@dataclass(frozen=True)
class Choice:
    answer: str
    """What the screen is dismissed with; also the button's id."""
    label: str
    key: str
    variant: str = "default"
    disabled: bool = False


class ChoiceScreen(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel", id="choice_cancel")]

    def __init__(self, title: str, text: str, choices: list[Choice], *,
                 note: str = "") -> None:
        super().__init__(classes="dialog-screen")
        self._title, self._text, self._choices, self._note = title, text, choices, note

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog") as dialog:
            dialog.border_title = self._title
            yield Static(self._text, markup=False)
            if self._note:
                yield Static(self._note, classes="dialog-note", markup=False)
            with Horizontal(classes="dialog-buttons"):
                for c in self._choices:
                    yield Button(f"{c.label} ({c.key})", id=c.answer, variant=c.variant,
                                 disabled=c.disabled)
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        # The harmless answer has focus: a stray Enter must not replace anything.
        self.query_one("#cancel", Button).focus()

    def on_key(self, event: events.Key) -> None:
        for c in self._choices:
            if event.key == c.key and not c.disabled:
                event.stop()
                self.dismiss(c.answer)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None if event.button.id == "cancel" else event.button.id)
