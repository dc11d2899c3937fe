"""One settings field: its name, the widget its type calls for, its help and its errors."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual import events, on
from textual.app import ComposeResult, RenderResult
from textual.geometry import Size
from textual.widget import Widget
from textual.widgets import Input, Label, Select, SelectionList, Static, Switch, TextArea

from minimind_tui.form.schema import TRIBOOL_CHOICES, FieldSpec
from minimind_tui.widgets.ticks import TickList


def device_choices() -> list[str]:
    """auto, cpu and whichever CUDA devices this machine has."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return ["auto", "cpu"] + (["cuda"] + [f"cuda:{i}" for i in range(count)] if count else [])


class OnOffSwitch(Switch):
    """A switch that also says ON or OFF: its colour alone is lost on a monochrome terminal, to
    a screen reader and in a copy of the screen (tmux capture-pane)."""

    def render(self) -> RenderResult:
        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=4, no_wrap=True)  # the slider, as Switch draws it
        grid.add_column(no_wrap=True)
        grid.add_row(super().render(), "ON" if self.value else "OFF")
        return grid

    def get_content_width(self, container: Size, viewport: Size) -> int:
        return 8


class SettingField(Widget):
    """A label, a control and the lines under it; `-changed`/`-invalid` classes style them.

    The control's id is the field name (names are unique across sections), so `#batch_size`
    finds it from anywhere on the screen.
    """

    def __init__(self, spec: FieldSpec, value: Any) -> None:
        super().__init__(id=f"field-{spec.name}", classes="setting-field")
        self.spec = spec
        self._initial = spec.display(value)
        self._family_default: object = None
        self._choices: list[str] = []
        # What is shown now: every keystroke re-checks all fields, and only a real change
        # should cost a repaint.
        self._problems: list[str] = []
        self._changed = False

    @on(events.DescendantFocus)
    @on(events.DescendantBlur)
    def _help_wraps_or_not(self) -> None:
        # The help wraps only while the field has the focus (app.tcss); a change of text-wrap
        # repaints but lays nothing out again: the row kept its height (one line of a focused
        # field's help, three blank lines under one left).
        self.query_one(".field-help").refresh(layout=True)

    def compose(self) -> ComposeResult:
        # A grid (see app.tcss): the help sits under the control, or beside it when wide.
        yield Label(f"  {self.spec.name}", classes="field-name", markup=False)
        yield self._control()
        yield Static(self.spec.help, classes="field-help", markup=False)
        yield Static("", classes="field-error", markup=False)

    def _control(self) -> Widget:
        spec, value, name = self.spec, self._initial, self.spec.name
        if spec.kind == "bool":
            return OnOffSwitch(value=bool(value), id=name, animate=False)
        if spec.kind == "tribool":
            return Select(self._tribool_options(), value=_tribool_key(value), id=name,
                          allow_blank=False, compact=True)
        if spec.kind == "lines":  # one list item per line
            return TextArea(value, id=name, soft_wrap=True, show_line_numbers=True,
                            compact=True, classes="field-lines")
        if spec.kind == "choices":
            return TickList(*[(c, c, c in value) for c in spec.choices], id=name,
                            compact=True, classes="field-choices")
        if spec.kind in ("choice", "device"):
            self._choices = list(spec.choices) if spec.kind == "choice" else device_choices()
            if spec.optional:  # empty: the family decides, as an empty text field says
                self._choices.insert(0, "")
            if value not in self._choices:  # e.g. cuda:3 from a preset of a bigger machine
                self._choices.append(value)
            return Select(self._choice_options(), value=value, id=name, allow_blank=False,
                          compact=True)
        # Text for numbers too, and validate_on=() keeps Input's own validators quiet:
        # pydantic decides what is valid, and says why. A number Input dropped the keys it
        # refuses without a word: "1,5" typed as 15, "1.0" in an integer field as 10.
        return Input(value=value, id=name, compact=True, validate_on=(),
                     placeholder="auto" if spec.optional else "", select_on_focus=False)

    @property
    def control(self) -> Widget:
        return self.query_one(f"#{self.spec.name}")

    @property
    def raw(self) -> Any:
        """The control's value as `FieldSpec.parse` expects it."""
        control = self.control
        if isinstance(control, Switch):
            return control.value
        if isinstance(control, Select):
            value = control.value
            return TRIBOOL_CHOICES[str(value)] if self.spec.kind == "tribool" else value
        if isinstance(control, TextArea):
            return control.text
        if isinstance(control, SelectionList):  # in the order the choices are listed
            return [c for c in self.spec.choices if c in control.selected]
        assert isinstance(control, Input)
        return control.value

    def set_value(self, value: Any) -> None:
        shown = self.spec.display(value)
        control = self.control
        if isinstance(control, Switch):
            control.value = bool(shown)
        elif isinstance(control, Select):
            if self.spec.kind == "tribool":
                control.value = _tribool_key(shown)
            else:
                if shown not in self._choices:
                    self._choices.append(shown)
                    control.set_options(self._choice_options())
                control.value = shown
        elif isinstance(control, TextArea):
            control.load_text(shown)
        elif isinstance(control, SelectionList):
            control.deselect_all()
            for choice in shown:
                control.select(choice)
        else:
            assert isinstance(control, Input)
            control.value = shown

    def set_family_default(self, default: object) -> None:
        """Show what an empty optional field resolves to: "auto (2)"; "auto" while that is
        unknown (None: the model's fields do not make a model yet)."""
        if default == self._family_default:
            return
        self._family_default = default
        control = self.control
        if isinstance(control, Input):
            control.placeholder = ("auto" if default is None
                                   else f"auto ({self.spec.display(default)})")
        elif isinstance(control, Select) and self.spec.kind == "tribool":
            value = control.value
            control.set_options(self._tribool_options())
            control.value = value

    def _choice_options(self) -> list[tuple[str, str]]:
        return [(c or "auto", c) for c in self._choices]

    def _tribool_options(self) -> list[tuple[str, str]]:
        default = self._family_default
        auto = "auto" if default is None else f"auto ({'on' if default else 'off'})"
        return [(auto, "auto"), ("on", "on"), ("off", "off")]

    def show_problems(self, messages: list[str]) -> None:
        if messages == self._problems:
            return
        self._problems = messages
        self.set_class(bool(messages), "-invalid")
        self.control.set_class(bool(messages), "-invalid")
        self.query_one(".field-error", Static).update(Text("; ".join(messages)))

    def mark_changed(self, changed: bool) -> None:
        """Mark a value that differs from the loaded preset (a dot and the accent colour)."""
        if changed == self._changed:
            return
        self._changed = changed
        self.set_class(changed, "-changed")
        label = self.query_one(".field-name", Label)
        label.update(Text(f"{'•' if changed else ' '} {self.spec.name}"))


def _tribool_key(value: bool | None) -> str:
    return next(key for key, v in TRIBOOL_CHOICES.items() if v is value)
