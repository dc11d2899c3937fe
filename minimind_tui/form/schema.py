"""The settings form, described by the pydantic models themselves (no Textual here).

Every `ModelSettings`/`TrainSettings` field becomes a `FieldSpec`: its group and help come from
the field's `json_schema_extra`/`description`, its widget kind from its annotation, so a field
added to `minimind.settings` appears in the form without touching the UI. Raw widget values
(strings, booleans, None) are handed to the same pydantic rules the CLI and presets use.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from minimind.environment import PATH_FIELDS
from minimind.settings import GROUPS, SECTIONS, RunSettings, with_stage_defaults

Kind = Literal["int", "float", "choice", "bool", "tribool", "device", "path", "text", "lines",
               "choices"]

TRIBOOL_CHOICES = {"auto": None, "on": True, "off": False}


@dataclass(frozen=True)
class FieldSpec:
    section: str
    name: str
    group: str
    kind: Kind
    help: str
    default: Any
    optional: bool
    choices: tuple[str, ...] = ()

    @property
    def loc(self) -> str:
        """The `Problem.loc` spelling: "train.batch_size"."""
        return f"{self.section}.{self.name}"

    @property
    def is_list(self) -> bool:
        return self.kind in ("lines", "choices")

    def display(self, value: Any) -> Any:
        """A settings value as its widget holds it: text for inputs and text boxes (a list item
        per line), None/bool for switches, a list of names for a multiple choice."""
        if self.kind in ("bool", "tribool"):
            return value
        if self.kind == "lines":
            return "\n".join(value or [])
        if self.kind == "choices":
            return list(value or [])
        if value is None:
            return ""
        if self.kind == "float":  # short, unless that would change the value
            short = format(float(value), ".12g")
            return short if float(short) == float(value) else repr(float(value))
        return str(value)

    def parse(self, raw: Any) -> tuple[bool, Any]:
        """(present, value) for the settings data; an empty optional field means "default"."""
        if isinstance(raw, str):
            raw = raw.strip()
        if raw is None or (self.optional and raw == ""):
            return False, None
        return True, raw

    def differs(self, raw: Any, baseline: Any) -> bool:
        """Whether the widget's value differs from a baseline settings value (1e-3 == 0.001),
        as `parse` reads it: spaces around a text are none of its value (a space typed into an
        empty field marked it changed, while it still meant the default)."""
        shown = self.display(baseline)
        if isinstance(raw, str) and isinstance(shown, str):
            raw, shown = raw.strip(), shown.strip()
        if self.kind in ("int", "float") and raw and shown:
            try:
                return float(raw) != float(shown)
            except ValueError:
                return True
        return raw != shown


def _kind_of(name: str, annotation: Any) -> tuple[Kind, bool, tuple[str, ...]]:
    if get_origin(annotation) is Annotated:  # a list setting's item parser
        annotation = get_args(annotation)[0]
    if get_origin(annotation) is list:
        (item,) = get_args(annotation)
        if get_origin(item) is Literal:
            return "choices", False, tuple(str(a) for a in get_args(item))
        return "lines", False, ()
    args = get_args(annotation)
    optional = get_origin(annotation) in (Union, types.UnionType) and type(None) in args
    base = next(a for a in args if a is not type(None)) if optional else annotation
    if get_origin(base) is Literal:
        return "choice", optional, tuple(str(a) for a in get_args(base))
    if base is bool:
        return ("tribool" if optional else "bool"), optional, ()
    if base is int:
        return "int", optional, ()
    if base is float:
        return "float", optional, ()
    if name == "device":
        return "device", optional, ()
    return ("path" if name in PATH_FIELDS else "text"), optional, ()


def field_specs() -> list[FieldSpec]:
    """Every settings field, ordered by `GROUPS` and then by declaration."""
    specs = []
    for section, model_cls in SECTIONS.items():
        for name, info in model_cls.model_fields.items():
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            kind, optional, choices = _kind_of(name, info.annotation)
            specs.append(FieldSpec(section, name, str(extra.get("group", "Other")), kind,
                                   info.description or "", info.default, optional, choices))
    order = {group: i for i, group in enumerate(GROUPS)}
    return sorted(specs, key=lambda s: order.get(s.group, len(order)))


def settings_values(settings: RunSettings | dict[str, Any]) -> dict[str, Any]:
    """`{loc: value}` of settings, or of raw preset tables laid over the defaults."""
    if isinstance(settings, RunSettings):
        data = settings.model_dump()
    else:
        tables = {**settings, "train": with_stage_defaults(settings.get("train", {}))}
        data = {section: {**model_cls().model_dump(), **tables.get(section, {})}
                for section, model_cls in SECTIONS.items()}
    return {f"{section}.{name}": value
            for section, values in data.items() for name, value in values.items()}


def form_data(specs: list[FieldSpec], raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Nested settings data from `{loc: raw widget value}`, ready for pydantic."""
    data: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    for spec in specs:
        present, value = spec.parse(raw[spec.loc])
        if present:
            data[spec.section][spec.name] = value
    return data
