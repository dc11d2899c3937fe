"""The scrolling form of every settings field, grouped Model · MoE · Data · … ."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Input, Select, SelectionList, Static, Switch, TextArea

from minimind.settings import Problem
from minimind_tui.form.schema import FieldSpec
from minimind_tui.widgets.setting_field import SettingField


class SettingsForm(VerticalScroll):
    """Holds the raw values; the screen decides what they mean (validation, presets)."""

    class Changed(Message):
        """A value changed, typed by the user or loaded in one go."""

    def __init__(self, specs: list[FieldSpec], values: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.specs = specs
        self._initial = values
        self._fields: dict[str, SettingField] = {}

    def compose(self) -> ComposeResult:
        group = None
        for spec in self.specs:
            if spec.group != group:
                group = spec.group
                yield Static(group, classes="group-title")
            yield SettingField(spec, self._initial[spec.loc])

    def on_descendant_focus(self) -> None:
        self._mark_focus_within()

    def on_descendant_blur(self) -> None:
        self._mark_focus_within()

    def _mark_focus_within(self) -> None:
        """The form's border shows whether a field has the focus. A `:focus-within` rule here
        would restyle all ~400 of the form's widgets at every Tab (about 0.4 s on two
        cores); this class changes only when the focus enters or leaves the form, and only
        the form's own border depends on it (app.tcss), so only the form is restyled: a
        class change restyles every descendant, 0.5 s at each start and change of view."""
        if self.has_focus_within != self.has_class("-focus-within"):
            self.set_class(self.has_focus_within, "-focus-within", update=False)
            self.app.stylesheet.update_nodes([self])

    @property
    def fields(self) -> dict[str, SettingField]:
        if not self._fields:  # the fields never change after compose; query once
            self._fields = {f.spec.loc: f for f in self.query(SettingField)}
        return self._fields

    def raw_values(self) -> dict[str, Any]:
        return {loc: f.raw for loc, f in self.fields.items()}

    def load(self, values: dict[str, Any]) -> None:
        """Replace every value; one `Changed` follows instead of one per field."""
        with self.prevent(Input.Changed, Select.Changed, Switch.Changed, TextArea.Changed,
                          SelectionList.SelectedChanged):
            for loc, field in self.fields.items():
                field.set_value(values[loc])
        self.post_message(self.Changed())

    @on(Input.Changed)
    @on(Select.Changed)
    @on(Switch.Changed)
    @on(TextArea.Changed)
    @on(SelectionList.SelectedChanged)
    def _value_changed(self, event: Message) -> None:
        event.stop()
        self.post_message(self.Changed())

    def show_problems(self, problems: list[Problem]) -> None:
        by_loc: dict[str, list[str]] = defaultdict(list)
        for problem in problems:  # a rule that ties fields together shows beside each of them
            for loc in (problem.loc, *problem.related):
                by_loc[loc].append(problem.message)
        for loc, field in self.fields.items():
            field.show_problems(by_loc.get(loc, []))

    def mark_changed(self, baseline: dict[str, Any]) -> set[str]:
        """Mark the fields whose value differs from `baseline`; returns their locs."""
        changed = set()
        for loc, field in self.fields.items():
            differs = field.spec.differs(field.raw, baseline[loc])
            field.mark_changed(differs)
            if differs:
                changed.add(loc)
        return changed

    def show_family_defaults(self, defaults: dict[str, object] | None) -> None:
        """What each empty optional field resolves to; None: unknown (no model to ask)."""
        for field in self.fields.values():
            if field.spec.optional and (defaults is None or field.spec.name in defaults):
                field.set_family_default(None if defaults is None else defaults[field.spec.name])

    def focus_field(self, loc: str) -> bool:
        field = self.fields.get(loc)
        if field is None:
            return False
        field.control.focus()
        self.scroll_to_widget(field, animate=False)
        return True
