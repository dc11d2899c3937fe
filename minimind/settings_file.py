"""Reading a preset or a run's config.toml: every way the file can be unreadable, or not a
settings file, is a `SettingsError` that names it. Validating what it holds is `RunSettings`'s.
"""

from __future__ import annotations

import errno
import tomllib
from pathlib import Path
from typing import Any

from minimind.run_files import CONFIG_FILE
from minimind.safe_read import missing, read_small
from minimind.settings import SECTIONS, Problem, SettingsError


def read_toml(path: str | Path) -> dict[str, Any]:
    """The tables of a preset or config.toml file; every way it can be unreadable, or not laid
    out as settings, is a SettingsError that names the file."""
    data, problems = read_tables(path)
    if problems:
        raise SettingsError(problems)
    return data


def read_tables(path: str | Path) -> tuple[dict[str, Any], list[Problem]]:
    """What a preset or config.toml file holds, and how it is not laid out as settings (tables
    it has no business holding): a caller may name those with what else is wrong in it. A file
    that cannot be read is a SettingsError that names it."""
    path = Path(path).expanduser()
    try:
        data = tomllib.loads(read_small(path).decode("utf-8"))
    except FileNotFoundError:
        raise SettingsError([Problem("", f"{path}: {missing(path, 'preset file')}")]) from None
    except IsADirectoryError:
        hint = (f"; its run's settings are {path / CONFIG_FILE}"
                if (path / CONFIG_FILE).is_file() else "")
        why = f"{path}: is a folder, not a preset file{hint}"
        raise SettingsError([Problem("", why)]) from None
    except UnicodeDecodeError as e:
        raise SettingsError([Problem("", f"{path}: not a text file (byte {e.start} is not "
                                         "UTF-8)")]) from None
    except tomllib.TOMLDecodeError as e:
        raise SettingsError([Problem("", f"{path}: not valid TOML ({e})")]) from None
    except RecursionError:  # tomllib recurses once per level of "[[[[..." or "{a={a=..."
        raise SettingsError([Problem("", f"{path}: not valid TOML (nested too deeply)")]) from None
    except OSError as e:
        why = missing(path) if errno.ELOOP == e.errno else f"cannot read ({e.strerror or e})"
        raise SettingsError([Problem("", f"{path}: {why}")]) from None
    tables = " and ".join(f"[{name}]" for name in SECTIONS)
    problems = [Problem(k, f"unknown table in {path.name}; expected {tables}"
                        if isinstance(data[k], dict) else
                        f"a setting outside the tables in {path.name}; settings go in {tables}")
                for k in sorted(set(data) - set(SECTIONS))]
    problems += [Problem(k, f"in {path.name} must be a table ([{k}]), not a "
                            f"{type(data[k]).__name__}")
                 for k in SECTIONS if k in data and not isinstance(data[k], dict)]
    if "model" not in data and not problems:
        problems.append(Problem("", f"{path}: has no [model] table, so the model would silently "
                                    "be the 25.8M default; add [model] (an empty table keeps "
                                    "the defaults)"))
    return data, problems
