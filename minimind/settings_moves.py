"""What a change of settings brings to the fields it did not name: the overrides of a preset
(flags, a form's edits) merged field by field, a new stage's defaults, and switches that take
the fields only their old value used back to their defaults.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from minimind.settings import (DATA_FIELDS, LORA_FIELDS, MOE_FIELDS, SECTIONS, STAGE_DEFAULTS,
                               STAGES, TrainSettings, field_type, stage_default)

# A switch, the value its fields apply at, and those fields (the rules refuse them set at any
# other value): (section, switch, value, fields).
SWITCHES = (("train", "lr_schedule", "wsd", ("decay_fraction",)),
            ("train", "optimizer", "muon", ("muon_lr",)),
            ("model", "use_moe", True, MOE_FIELDS))


def merge(base: dict[str, dict[str, Any]], overrides: dict[str, dict[str, Any]]
          ) -> dict[str, dict[str, Any]]:
    """Field-by-field override of a nested settings dict (neither input is modified). A stage
    the overrides change brings its defaults to the base's fields that held the old stage's
    (`stage_moves`), and a switch the overrides move takes the fields only its old value had
    back to their defaults (`switch_moves`), unless the overrides set those too: `--preset
    out/tiny/config.toml --stage sft` wrote pretrain_128.pth, the record's save_weight."""
    merged = {section: dict(base.get(section, {})) for section in SECTIONS}
    for section, values in overrides.items():
        merged.setdefault(section, {}).update(values)
    before, after = (table.get("stage", "pretrain") for table in (base.get("train", {}),
                                                                  merged["train"]))
    given = overrides.get("train", {})
    merged["train"].update({name: value for name, value
                            in stage_moves(base.get("train", {}), before, after).items()
                            if name not in given})
    for section, values in switch_moves(base, merged).items():
        merged[section].update({name: value for name, value in values.items()
                                if name not in overrides.get(section, {})})
    return merged


def stage_moves(train: dict[str, Any], before: Any, after: Any) -> dict[str, Any]:
    """What a change of stage brings to a raw train table: the new stage's defaults (full_sft
    for sft's save_weight) and its kind of bundled data, in each field holding the old
    stage's; a value chosen otherwise stays, but for one the new stage cannot take, which goes
    back to its default: a pretraining preset's packing, a lora run's name and rank. Nothing
    for a stage that is no stage."""
    if before == after or before not in STAGES or after not in STAGES:
        return {}
    from minimind.data.corpus import builtin_for_stage  # reads no file; numpy, not torch

    moved = {name: to for name in DATA_FIELDS
             if isinstance(train.get(name), str) and (to := builtin_for_stage(train[name], after))}
    for name in {*STAGE_DEFAULTS.get(before, {}), *STAGE_DEFAULTS.get(after, {})}:
        old, new = stage_default(before, name), stage_default(after, name)
        if old != new and train.get(name) == old:
            moved[name] = new
    cannot = (("packing",) if after != "pretrain" else ()) + (LORA_FIELDS if after != "lora"
                                                              else ())
    for name in cannot:
        default = stage_default(after, name)
        if name in train and _set_otherwise(TrainSettings, name, train[name], default):
            moved[name] = default
    return moved


def switch_moves(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]
                 ) -> dict[str, dict[str, Any]]:
    """What moving a switch (`SWITCHES`) off the value its fields need brings to raw settings
    (sections of raw values): those fields back to their defaults, which the rules would
    refuse otherwise. `--lr_schedule cosine` over a record of a wsd run with its own
    decay_fraction was refused ("decay_fraction only applies when lr_schedule is wsd"), though
    a resume is where a schedule may change."""
    moved: dict[str, dict[str, Any]] = {}
    for section, switch, on, fields in SWITCHES:
        cls, old, new = SECTIONS[section], before.get(section, {}), after.get(section, {})
        if _value(cls, switch, old) != on or _value(cls, switch, new) == on:
            continue
        for name in fields:
            default = cls.model_fields[name].default
            if name in new and _set_otherwise(cls, name, new[name], default):
                moved.setdefault(section, {})[name] = default
    return moved


def _value(cls: type[BaseModel], name: str, table: dict[str, Any]) -> Any:
    """A raw field's value as its section parses it (its default where the table has none);
    None for a value of no valid value, which the rules name."""
    if name not in table:
        return cls.model_fields[name].default
    try:
        return field_type(cls, name).validate_python(table[name])
    except ValidationError:
        return None


def _set_otherwise(cls: type[BaseModel], name: str, raw: Any, default: Any) -> bool:
    """Whether a raw value (a form's "8", a flag's "0") is another valid value than `default`;
    one of no valid value stays, for the rules to name."""
    value = _value(cls, name, {name: raw})
    return value is not None and value != default
