"""Named presets: the bundled `presets/*.toml` and the user's own folder.

A preset argument is a name if a preset of that name is listed (the user's first, then the
bundled ones), otherwise a file path. No listed name ends in `.toml` or holds a `/`, so such an
argument is always a path; `./NAME` reaches a file that shares a preset's name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from minimind.atomic import file_in_the_way, in_the_way
from minimind.environment import validate_for_start
from minimind.family import parameter_count
from minimind.run_files import CONFIG_FILE, LAUNCH_SETTINGS_FILE
from minimind.settings import (CONSENT_FIELDS, SECTIONS, Problem, RunSettings, SettingsError,
                               TrainSettings, field_type, without_consent)
from minimind.settings_file import read_tables
from minimind.settings_moves import merge
from minimind.settings_rules import type_values, validate
from minimind.shown import printable_path
from minimind_tui.form.schema import settings_values

DEFAULT_PRESET = "tiny"  # what the dashboard opens without --preset: trains anywhere in minutes


def bundled_preset_dir() -> Path:
    package = Path(__file__).resolve().parent.parent  # minimind_tui/
    installed = package / "presets"  # where the wheel puts them
    return installed if installed.is_dir() else package.parent / "presets"


def user_preset_dir() -> Path:
    configured = os.environ.get("MINIMIND_TUI_PRESETS")
    if configured:
        return Path(configured).expanduser()
    config_home = Path(os.environ.get("XDG_CONFIG_HOME", "~/.config")).expanduser()
    return config_home / "minimind-tui" / "presets"


def list_presets() -> dict[str, Path]:
    """Preset name → file: the bundled ones from the smallest model up, then the user's by name.
    A user preset hides a bundled one of the same name (it is listed with the user's)."""
    folder = user_preset_dir()
    # A file whose name could not be saved (say, my.toml.toml from an older version) is left
    # out: it could not be asked for by that name.
    files = sorted(folder.glob("*.toml")) if folder.is_dir() else []
    user = {p.stem: p for p in files if preset_name_problem(p.stem) is None}
    bundled = sorted(bundled_preset_dir().glob("*.toml"), key=_model_size)
    return {**{p.stem: p for p in bundled if p.stem not in user}, **user}


def is_user_preset(path: Path) -> bool:
    return path.parent == user_preset_dir()


def preset_label(name: str, path: Path) -> str:
    """A preset as the pickers list it: the user's own are marked."""
    return f"{name} (yours)" if is_user_preset(path) else name


def preset_parameters(path: Path) -> int | None:
    """The parameter count of a preset's model, or None if the preset is not valid: any of
    its settings, as `--preset` reads them (one with `learning_rate = "fast"` was listed with
    its model's size, and refused when used). The machine is not asked (no torch)."""
    try:
        model = RunSettings.parse(preset_tables(path)).model
    except (SettingsError, ValidationError):
        return None
    return parameter_count(**model.to_config_kwargs())


def _model_size(path: Path) -> tuple[int, str]:
    return preset_parameters(path) or 0, path.stem


def resolve_preset(name_or_path: str) -> Path:
    # A name before a path: the picker offers names, and a file or folder of the same name in
    # the current folder (the app's own out/) must not stand in for the preset saved under it.
    presets = list_presets()
    if name_or_path in presets:
        return presets[name_or_path]
    path = Path(name_or_path).expanduser()
    if path.exists() or path.is_symlink() or name_or_path.endswith(".toml"):
        return path  # read_tables names what is wrong with it (a link to nothing too)
    raise SettingsError([Problem("", f"unknown preset {name_or_path!r}; choose one of "
                                     f"{', '.join(presets)} or give a .toml path")])


def preset_data(name_or_path: str | None) -> dict[str, Any]:
    """The raw `{"model": ..., "train": ...}` tables of a preset (empty for None). A run's
    config.toml is its record: the answers its launch was given (records written before they
    were left out hold them) are no consent for a new launch, which asks again."""
    if not name_or_path:
        return {}
    path = resolve_preset(name_or_path)
    data = preset_tables(path)
    train = data.get("train")
    if not isinstance(train, dict) or path.name == LAUNCH_SETTINGS_FILE:  # for its one launch
        return data
    if path.name == CONFIG_FILE:
        data["train"] = without_consent(train)
        return data
    # A preset is a template: one holding a yes to "replace the run in out_dir" gave it to
    # every launch, unasked (a saved preset leaves these out; a hand-written one had them).
    if given := [name for name in CONSENT_FIELDS if _says_yes(train.get(name, False), name)]:
        raise SettingsError([
            Problem(f"train.{name}", f"in {path}: answers for one launch, so no preset holds "
                                     f"it: give --{name} 1 with the command (the dashboard asks "
                                     "at Start)") for name in given])
    return data


def _says_yes(raw: Any, name: str) -> bool:
    """Whether a preset's raw consent value means yes (`0` and "false" are a no; a value of no
    meaning is left to the rules to name)."""
    try:
        return field_type(TrainSettings, name).validate_python(raw) is True
    except ValidationError:
        return False


def preset_tables(path: Path) -> dict[str, Any]:
    """A preset file's tables, each key a setting: the dashboard's form has no field for any
    other, so a misspelt one would be dropped there in silence and its default trained. A file
    with such keys or tables is refused with every problem it holds, its values' too: one at a
    time, each fix met the next."""
    data, problems = read_tables(path)
    tables = {section: data[section] for section in SECTIONS
              if isinstance(data.get(section), dict)}
    problems += [Problem(f"{section}.{key}", f"unknown setting in {path}")
                 for section, table in tables.items()
                 for key in table if key not in SECTIONS[section].model_fields]
    if problems:
        known = {section: {key: value for key, value in table.items()
                           if key in SECTIONS[section].model_fields}
                 for section, table in tables.items()}
        try:
            RunSettings.parse(known)
        except SettingsError as e:
            problems += [p for p in e.problems if p not in problems]
        raise SettingsError(problems)
    return data


def load_settings(name_or_path: str | None,
                  overrides: dict[str, dict[str, Any]] | None = None) -> RunSettings:
    """A preset with the user's overrides laid over it; a rule broken by a preset value and an
    override together is reported against the override."""
    overrides, base = overrides or {}, preset_data(name_or_path)
    try:
        return RunSettings.parse(merge(base, overrides), _given(overrides),
                                 _altered(base, overrides))
    except SettingsError as e:
        raise SettingsError(_in_the_preset(e.problems, name_or_path, base, overrides)) from None


def load_start_settings(name_or_path: str | None,
                        overrides: dict[str, dict[str, Any]] | None = None) -> RunSettings:
    """`load_settings` for a run about to start here: also every problem this machine has with
    it (missing files, trackers, devices), all in one SettingsError."""
    overrides, base = overrides or {}, preset_data(name_or_path)
    settings, problems = validate_for_start(merge(base, overrides), _given(overrides),
                                            _altered(base, overrides))
    if problems:
        raise SettingsError(_in_the_preset(problems, name_or_path, base, overrides))
    return settings


def _in_the_preset(problems: list[Problem], name_or_path: str | None,
                   base: dict[str, dict[str, Any]], overrides: dict[str, dict[str, Any]]
                   ) -> list[Problem]:
    """A bad value the preset itself holds (no override replaced it) names the file: beside
    a dozen flags, `train.batch_size: must be a whole number` left the user to guess which of
    them, or the file, said "four"."""
    if not name_or_path:
        return problems
    own = set()
    for section, model_cls in SECTIONS.items():
        table = {name: value for name, value in base.get(section, {}).items()
                 if name not in overrides.get(section, {})}
        try:
            model_cls.model_validate(table)
        except ValidationError as e:
            own |= {f"{section}.{err['loc'][0]}" for err in e.errors() if err["loc"]}
    path = resolve_preset(name_or_path)
    return [Problem(p.loc, f"{p.message} (in {path})", p.related) if p.loc in own else p
            for p in problems]


def _given(overrides: dict[str, dict[str, Any]]) -> set[str]:
    return {f"{section}.{name}" for section, values in overrides.items() for name in values}


def _altered(base: dict[str, dict[str, Any]], overrides: dict[str, dict[str, Any]]
             ) -> set[str]:
    """The fields the overrides set to another value than the preset's, as the form marks
    them against it: a flag that repeats the preset's value alters nothing ("8" is 8)."""
    baseline = settings_values(base)
    changed = set()
    for section, values in overrides.items():
        typed, _ = type_values(section, {name: value for name, value in values.items()
                                         if name in SECTIONS[section].model_fields})
        for name in values:
            loc = f"{section}.{name}"
            try:
                same = typed[name] == field_type(SECTIONS[section], name).validate_python(
                    baseline[loc])
            except (KeyError, ValidationError):  # unknown, or no value: the rules say why
                same = False
            if not same:
                changed.add(loc)
    return changed


MAX_NAME_BYTES = 200  # of 255: room for ".toml" and an atomic save's ".<name>.toml.<id>.tmp"


def preset_name_problem(name: str) -> str | None:
    """Why `name` cannot name a user preset file, or None."""
    if not name.strip():
        return "give the preset a name"
    if any(c in name for c in "/\\") or name.startswith("."):
        return "a name, not a path (no / or \\, no leading dot)"
    if name.endswith(".toml"):  # such an argument is a path (see the module's docstring)
        return "a name without .toml (the file gets that ending)"
    if len(name.encode()) > MAX_NAME_BYTES:  # the save said "[Errno 36]" of a temporary file
        return (f"at most {MAX_NAME_BYTES} bytes (a file name's limit, with .toml and the "
                f"save's temporary name), got {len(name.encode())}")
    return None


def preset_settings(data: dict[str, Any]) -> tuple[RunSettings, list[Problem]]:
    """The form's `data` as a preset: its settings and the problems that keep it from being
    one. Only the settings' own rules count: a preset is a template that a start checks again
    on the machine it runs on (the bundled ones name upstream's data, absent here), and it
    leaves out the consent fields, with what they say about the run folder."""
    train = without_consent(data.get("train", {}))
    return validate({**data, "train": train})


def user_preset_dir_problem() -> str | None:
    """Why the user's presets cannot live where they are looked for (`user_preset_dir`): a
    file in the way (MINIMIND_TUI_PRESETS=/dev/null); None when it can be their folder."""
    if blocking := file_in_the_way(user_preset_dir()):
        return (f"{printable_path(str(blocking))} is {in_the_way(blocking)}, not a folder: no "
                "presets of yours are read or saved (MINIMIND_TUI_PRESETS names their folder)")
    return None


def save_user_preset(settings: RunSettings, name: str) -> Path:
    problem = preset_name_problem(name)
    if problem:
        raise SettingsError([Problem("", f"invalid preset name {name!r}: {problem}")])
    if problem := user_preset_dir_problem():  # it said "[Errno 17] File exists: '/dev/null'"
        raise SettingsError([Problem("", f"cannot save the preset: {problem}")])
    return settings.save_toml(user_preset_dir() / f"{name}.toml")
