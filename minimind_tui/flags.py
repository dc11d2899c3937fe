"""Command-line flags generated from the settings models, spelled as upstream spells them.

`--batch_size 16 --hidden_size 768 --use_moe 1 --data_path ...` keep working for MiniMind users;
values stay strings here and pydantic parses them, so the CLI, presets and the form share one
set of rules and messages.
"""

from __future__ import annotations

import argparse
from typing import Any

from pydantic import BaseModel

from minimind.settings import ModelSettings, TrainSettings


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    for title, model_cls in (("model settings", ModelSettings), ("train settings", TrainSettings)):
        group = parser.add_argument_group(title)
        for name, field in model_cls.model_fields.items():
            default = "family default" if field.default is None else field.default
            group.add_argument(f"--{name}", dest=f"{_section(model_cls)}.{name}",
                               metavar=_metavar(field.annotation), default=argparse.SUPPRESS,
                               help=f"{field.description} (default: {default})")


def overrides_from_args(ns: argparse.Namespace) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {"model": {}, "train": {}}
    for key, value in vars(ns).items():
        section, _, name = key.partition(".")
        if section in out and name:
            out[section][name] = value
    return out


def _section(model_cls: type[BaseModel]) -> str:
    return "model" if model_cls is ModelSettings else "train"


def _metavar(annotation: Any) -> str:
    text = str(annotation)
    if "bool" in text:
        return "0|1"
    if "Literal" in text:
        return "{" + "|".join(a for a in annotation.__args__) + "}"
    if "int" in text:
        return "N"
    if "float" in text:
        return "X"
    return "TEXT"
