"""Named presets: the bundled `presets/*.toml` and the user's own folder.

A preset argument is a file path if one exists there (or it ends in `.toml`), otherwise a name
looked up in the user's folder first, then in the bundled ones.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from minimind.settings import Problem, RunSettings, SettingsError, merge, read_toml


def bundled_preset_dir() -> Path:
    installed = Path(__file__).parent / "presets"  # where the wheel puts them
    return installed if installed.is_dir() else Path(__file__).parent.parent / "presets"


def user_preset_dir() -> Path:
    configured = os.environ.get("MINIMIND_TUI_PRESETS")
    if configured:
        return Path(configured).expanduser()
    config_home = Path(os.environ.get("XDG_CONFIG_HOME", "~/.config")).expanduser()
    return config_home / "minimind-tui" / "presets"


def list_presets() -> dict[str, Path]:
    """Preset name → file; a user preset hides a bundled one of the same name."""
    found: dict[str, Path] = {}
    for folder in (bundled_preset_dir(), user_preset_dir()):
        if folder.is_dir():
            found.update({p.stem: p for p in sorted(folder.glob("*.toml"))})
    return found


def resolve_preset(name_or_path: str) -> Path:
    path = Path(name_or_path).expanduser()
    if path.is_file() or name_or_path.endswith(".toml"):
        return path
    presets = list_presets()
    if name_or_path in presets:
        return presets[name_or_path]
    raise SettingsError([Problem("", f"unknown preset {name_or_path!r}; choose one of "
                                     f"{', '.join(sorted(presets))} or give a .toml path")])


def preset_data(name_or_path: str | None) -> dict[str, Any]:
    """The raw `{"model": ..., "train": ...}` tables of a preset (empty for None)."""
    return read_toml(resolve_preset(name_or_path)) if name_or_path else {}


def load_settings(name_or_path: str | None,
                  overrides: dict[str, dict[str, Any]] | None = None) -> RunSettings:
    return RunSettings.parse(merge(preset_data(name_or_path), overrides or {}))


def save_user_preset(settings: RunSettings, name: str) -> Path:
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise SettingsError([Problem("", f"invalid preset name {name!r}")])
    return settings.save_toml(user_preset_dir() / f"{name}.toml")
