"""Command-line flags generated from the settings models, spelled as upstream spells them.

`--batch_size 16 --hidden_size 768 --use_moe 1 --data_path ...` keep working for MiniMind users;
values stay strings here and pydantic parses them, so the CLI, presets and the form share one
set of rules and messages. The flags come from the same `FieldSpec`s as the form's fields.
"""

from __future__ import annotations

import argparse
from typing import Any

from minimind.settings import SECTIONS
from minimind_tui.form_schema import FieldSpec, field_specs

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


def overrides_from_args(ns: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """`{"model": {...}, "train": {...}}` of exactly the flags given on the command line."""
    out: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    for key, value in vars(ns).items():
        section, _, name = key.partition(".")
        if section in out and name:
            out[section][name] = value
    return out


def _metavar(spec: FieldSpec) -> str:
    if spec.kind in ("choice", "choices"):
        return "{" + "|".join(spec.choices) + "}"
    return _METAVARS.get(spec.kind, "TEXT")
