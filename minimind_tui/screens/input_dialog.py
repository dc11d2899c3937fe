"""A dialog that asks for one value: a title, an input with a validator, a note under it and
OK/Cancel buttons. Subclasses say what the note reads for a valid value and what OK returns."""

from __future__ import annotations

from typing import TypeVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.validation import Validator
from textual.widgets import Button, Input, Static

ResultT = TypeVar("ResultT")


class InputDialog(ModalScreen[ResultT | None]):
    """Dismissed with `result(value)` on OK (enter) and None on Cancel (escape). OK is
    disabled while the validator refuses the value; the note then says why."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel", id="input_dialog_cancel")]

    def __init__(self, value: str, *, title: str, input_id: str, validator: Validator,
                 ok_label: str, ok_id: str, prompt: str = "", placeholder: str = "") -> None:
        super().__init__(classes="dialog-screen")
        self._value, self._title, self._prompt = value, title, prompt
        self._input_id, self._validator, self._placeholder = input_id, validator, placeholder
        self._ok_label, self._ok_id = ok_label, ok_id

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog") as dialog:
            dialog.border_title = self._title
            if self._prompt:
                yield Static(self._prompt, markup=False)
            yield Input(self._value, placeholder=self._placeholder, id=self._input_id,
                        validators=[self._validator])
            yield Static("", id=f"{self._input_id}-note", classes="dialog-note", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self._ok_label} (enter)", id=self._ok_id, variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    # -- what subclasses say -------------------------------------------------------------
    def note(self, value: str) -> str:
        """The note under the input while `value` is valid."""
        return ""

    def result(self, value: str) -> ResultT:
        raise NotImplementedError

    def submit(self, value: str) -> None:
        """OK with a valid value; a subclass may ask something first."""
        self.dismiss(self.result(value))

    # -- the dialog ------------------------------------------------------------------------
    @property
    def _input(self) -> Input:
        return self.query_one(f"#{self._input_id}", Input)

    @property
    def _ok(self) -> Button:
        return self.query_one(f"#{self._ok_id}", Button)

    def on_mount(self) -> None:
        self._check(self._input.value)

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        self._check(event.value)

    def _check(self, value: str) -> None:
        check = self._validator.validate(value)
        note = self.note(value) if check.is_valid else "; ".join(check.failure_descriptions)
        self.query_one(f"#{self._input_id}-note", Static).update(note)
        self._ok.disabled = not check.is_valid

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self._press_ok()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == self._ok_id:
            self._press_ok()
        elif event.button.id == "cancel":
            self.dismiss(None)

    def _press_ok(self) -> None:
        if not self._ok.disabled:
            self.submit(self._input.value)
