"""Command-line flags generated from the settings models, spelled as upstream spells them.

`--batch_size 16 --hidden_size 768 --use_moe 1 --data_path ...` keep working for MiniMind users.
Each flag's text is typed here, once, by its field's own pydantic type (`--use_moe 0` is False,
`--qk_norm 1` True), so the dashboard and `--no-ui` receive the same values and the rules that
follow never see a raw string. The flags come from the same `FieldSpec`s as the form's fields.
"""

from __future__ import annotations

import argparse
from typing import Any

from minimind.settings import SECTIONS, Problem
from minimind.settings_rules import type_values
from minimind_tui.form.schema import FieldSpec, field_specs

_METAVARS = {"bool": "0|1", "tribool": "0|1", "int": "N", "float": "X"}


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    specs = field_specs()
    for section in SECTIONS:
        group = parser.add_argument_group(f"{section} settings")
        for spec in (s for s in specs if s.section == section):
            default = "family default" if spec.default is None else spec.default
            if spec.is_list:  # --report_to tensorboard wandb; no values: the empty list
                default = " ".join(map(repr, default)) or "none"
            group.add_argument(f"--{spec.name}", dest=spec.loc, metavar=_metavar(spec),
                               default=argparse.SUPPRESS, nargs="*" if spec.is_list else None,
                               help=f"{spec.help} (default: {default})")


def overrides_from_args(ns: argparse.Namespace
                        ) -> tuple[dict[str, dict[str, Any]], list[Problem]]:
    """`{"model": {...}, "train": {...}}` of exactly the flags given on the command line, each
    as its field's type, and a problem for each flag whose text has no such value
    (`--use_moe maybe`). That text stays in the overrides as given, so validating them reports
    it with every other problem; a dashboard, which can only show values, must refuse it.
    Limits (`--batch_size 0`) are the settings' rules, not a typing problem."""
    given: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    for key, value in vars(ns).items():
        section, _, name = key.partition(".")
        if section in given and name:
            given[section][name] = value
    problems: list[Problem] = []
    for section, values in given.items():
        typed, untyped = type_values(section, values)
        values.update(typed)
        problems += untyped
    return given, problems


def _metavar(spec: FieldSpec) -> str:
    if spec.kind in ("choice", "choices"):
        return "{" + "|".join(spec.choices) + "}"
    return _METAVARS.get(spec.kind, "TEXT")


def path_arg(value: str) -> str:
    """argparse's `type` for a path argument: the value as given, or argparse's one-line error
    when this machine cannot take it as a path at all (an unknown ~user, a name too long)."""
    from minimind.environment import unusable_path

    if why := unusable_path(value):
        raise argparse.ArgumentTypeError(why)
    return value
