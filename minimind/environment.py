"""What a run needs from this machine, checked once when it starts (the app's Start, `--no-ui`,
`--detach`): the files it reads, the trackers it logs to, the device it trains on.

The settings' own rules (`minimind.settings_rules`) never look at the machine, so a run folder's
config.toml reads the same everywhere; this is the one place that does. Every problem comes back
at once, each against its field, like the settings' own.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

from minimind.atomic import file_in_the_way, in_the_way
from minimind.safe_read import missing
from minimind.shown import printable_path
from minimind.settings import DATA_FIELDS, Problem, RunSettings, TrainSettings
from minimind.settings_rules import validate

# Fields that name something on disk that must already exist; other strings (out_dir,
# save_weight) name things the run creates. Types cannot say this, so it is listed here.
PATH_FIELDS = ("data_path", "val_data_path", "tokenizer_path", "from_weight")
# A DataLoader worker hands each batch's shared memory over through an AF_UNIX socket that
# multiprocessing makes in the temporary folder, as <tmp>/pymp-XXXXXXXX/listener-XXXXXXXX (32
# characters more). Past the socket path limit that fails in a background thread, and the run
# waits for its first batch forever.
SOCKET_PATH_MAX, SOCKET_NAME_LENGTH = 107, 32


def path_problem(name: str, value: str) -> str | None:
    """Why a path field's value does not point at anything, or None if it does (or is empty).

    In a data field `builtin:<name>` names a bundled set; in tokenizer_path a bare "builtin"
    names the bundled tokenizer. Relative paths are checked against the current directory, as
    the engine resolves them.
    """
    if not value:
        return None
    if name in DATA_FIELDS and value.startswith("builtin:"):
        from minimind.data.corpus import BUILTIN_PREFIX, BUILTINS

        if value.removeprefix(BUILTIN_PREFIX) in BUILTINS:
            return None
        return "unknown built-in; known: " + ", ".join(BUILTIN_PREFIX + n for n in BUILTINS)
    if name == "tokenizer_path" and value == "builtin":
        return None
    if why := unusable_path(value):
        return why
    path = Path(value).expanduser()
    return None if path.exists() else f"{value}: {missing(path, 'file or folder')}"


def data_file_problem(value: str, stage: str, skip_bad_lines: bool) -> str | None:
    """Why a data field's path, which `path_problem` passed, is no data file (a folder, a FIFO,
    /dev/zero, an empty file) or, unless bad lines are skipped, no data for `stage` (text lines
    given to sft): what the engine's reader would say at the start, said before it."""
    from minimind.data.conversation import parse_conversation
    from minimind.data.corpus import BUILTIN_PREFIX, builtin_for_stage, first_line
    from minimind.data.jsonl import DataError, check_file, parse_line

    if not value:
        return None
    try:
        if not value.startswith(BUILTIN_PREFIX):
            check_file(Path(value).expanduser())
        line = first_line(value)
    except DataError as e:
        return f"{value}: {e.message}"
    if skip_bad_lines or line is None:
        return None
    try:
        (parse_line if stage == "pretrain" else parse_conversation)(line[1])
    except ValueError as e:
        bundled = builtin_for_stage(value, stage)
        return f"{value}:{line[0]}: {e}" + (f"; for {stage}, use {bundled}" if bundled else "")
    return None


def unusable_path(value: str) -> str | None:
    """Why this machine cannot take `value` as a path at all (a `~user` it does not know, a
    name longer than its file system allows, a NUL byte), or None."""
    if "\x00" in value:  # pathlib answers "not there" for it, as for a file that is missing
        return f"{_shown(value)}: not a usable path here (it holds a NUL byte)"
    try:
        Path(value).expanduser().exists()
    except RuntimeError:  # what expanduser raises for an unknown ~user
        return f"{_shown(value)}: no home folder for {value.split('/')[0]!r} on this machine"
    except OSError as e:  # ENAMETOOLONG and kin: exists() only swallows "not there"
        return f"{_shown(value)}: not a usable path here ({e.strerror})"
    return None


def not_a_folder(value: str) -> str | None:
    """Why a run cannot make `value` its folder: it, or a folder above it, is a file."""
    if blocking := file_in_the_way(Path(value).expanduser()):
        return (f"{blocking} is {in_the_way(blocking)}, not a folder; move it away, or train "
                "into another --out_dir")
    return None


def as_the_run_took_it(value: str, run_folder: Path, out_dir: str) -> Path:
    """A path a run recorded (its from_weight), as the run took it: a relative one counts from
    the folder the run was started in, which its recorded relative out_dir and the place its
    folder is in now tell (out/sft in /work/out/sft: /work; "." the folder itself), so `runs`
    and the readers find it from any folder (as given when that is the current folder). An
    out_dir that climbs first (upstream's `../out/sft`, from trainer/) tells the folder that
    many levels above the start instead, which a path climbing as far needs
    (`../out/base.pth`). Without that record (`start_unknown`), from the current folder.
    Raises what `Path.expanduser` raises."""
    path = Path(value).expanduser()
    start = None if path.is_absolute() else _start_record(run_folder, out_dir)
    if start is None:
        return path
    above, up = start  # `up` levels above the start folder
    if up:
        steps = [part for part in path.parts if part != "."]
        return above.joinpath(*steps[up:]) if steps[:up] == [".."] * up else path
    return path if above == Path.cwd() else above / path


def start_unknown(value: str, run_folder: Path, out_dir: str) -> bool:
    """Whether the relative path `value` a run recorded is read from the current folder for
    want of a record of where the run was started: an absolute out_dir, one that climbs out of
    the folder it names, or a run folder moved or renamed off its out_dir (out/lr now in
    out/lr-keep)."""
    return (not Path(value).expanduser().is_absolute()
            and _start_record(run_folder, out_dir) is None)


def _start_record(run_folder: Path, out_dir: str) -> tuple[Path, int] | None:
    """(the folder `up` levels above the one a run was started in, `up`), as its recorded
    out_dir and the place its folder is in now tell it; None where they cannot."""
    parts = [part for part in Path(out_dir).parts if part != "."]
    if not parts:  # trained into the folder it was started in
        return run_folder.absolute(), 0
    up = next((i for i, part in enumerate(parts) if part != ".."), len(parts))
    below, here = parts[up:], run_folder.absolute().parts
    if not below or Path(out_dir).is_absolute() or ".." in below \
            or tuple(here[-len(below):]) != tuple(below):
        return None
    return Path(*here[:-len(below)]), up


def _shown(value: str) -> str:
    """A path as an error shows it: printable, a long one cut in the middle with its length."""
    value = printable_path(value)
    return value if len(value) <= 80 else f"{value[:40]}…{value[-20:]} ({len(value)} characters)"


def _path_field_problem(name: str, value: str, t: TrainSettings) -> str | None:
    if why := path_problem(name, value):
        return why
    if name in DATA_FIELDS:
        return data_file_problem(value, t.stage, t.skip_bad_lines)
    if name == "tokenizer_path":  # a folder without one said "ready", and the start failed
        from minimind.tokenizer import BUNDLED_NAMES, tokenizer_folder_problem

        return None if value in BUNDLED_NAMES else tokenizer_folder_problem(
            Path(value).expanduser())
    return None


def vocab_problem(vocab_size: int, tokenizer_size: int | None) -> Problem | None:
    """An embedding with fewer rows than the tokenizer has ids: its last ids have none."""
    if tokenizer_size is None or tokenizer_size <= vocab_size:
        return None
    return Problem("model.vocab_size", f"({vocab_size}) is smaller than the tokenizer's "
                   f"vocabulary ({tokenizer_size})", ("train.tokenizer_path",))


def environment_problems(settings: RunSettings, resume: bool = True) -> list[Problem]:
    """Everything this machine lacks for `settings`: missing files, trackers, devices; and,
    unless `resume` is False, whether the folder's checkpoint can go on under them."""
    t = settings.train
    # A resume's state holds every weight: its from_weight is only compared with its record.
    read = [name for name in PATH_FIELDS if not (t.from_resume and name == "from_weight")]
    out = [Problem(f"train.{name}", why) for name in read
           if (why := _path_field_problem(name, getattr(t, name).strip(), t))]
    if out_dir_problem := unusable_path(t.out_dir.strip()) or not_a_folder(t.out_dir.strip()):
        out.append(Problem("train.out_dir", out_dir_problem))
    if not any(p.loc == "train.tokenizer_path" for p in out):
        from minimind.tokenizer import tokenizer_vocab_size

        if problem := vocab_problem(settings.model.vocab_size,
                                    tokenizer_vocab_size(t.tokenizer_path)):
            out.append(problem)
    if t.from_resume:
        from minimind.resume_check import resume_problems

        out += [] if out_dir_problem or not resume else resume_problems(settings)
    elif (t.stage != "pretrain" and t.from_weight.strip()
            and not any(p.loc == "train.from_weight" for p in out)):
        from minimind.chain import from_weight_problem  # (pretraining: the engine's check)

        if why := from_weight_problem(t.from_weight.strip(), settings.model):
            out.append(Problem("train.from_weight", why))
    if t.num_workers and (why := worker_socket_problem()):
        out.append(Problem("train.num_workers", why))
    if t.report_to:
        from minimind.trackers import install_command, missing_trackers

        out += [Problem("train.report_to", f"{name} is not installed; {install_command(name)}")
                for name in missing_trackers(t.report_to)]
    if t.device.startswith("cuda"):
        from minimind.device import device_problem

        if why := device_problem(t.device):
            out.append(Problem("train.device", why))
    elif t.device == "auto" and t.dtype == "float16":
        import torch

        if not torch.cuda.is_available():
            out.append(Problem("train.dtype", "float16 needs a CUDA device and this machine has "
                                              "none; use bfloat16 or float32 on CPU",
                               ("train.device",)))
    return out


def worker_socket_problem() -> str | None:
    """Why DataLoader workers could not hand batches over here (see SOCKET_PATH_MAX), or None."""
    folder = tempfile.gettempdir()
    room = SOCKET_PATH_MAX - SOCKET_NAME_LENGTH
    if len(os.fsencode(folder)) <= room:
        return None
    return (f"workers hand batches over through a socket in the temporary folder, and {folder} "
            f"is too long a path for one ({len(os.fsencode(folder))} bytes, at most {room}): "
            "set TMPDIR to a shorter folder (such as /tmp), or num_workers to 0")


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def processes_launched(settings: RunSettings) -> int:
    """The processes a run trains in: torchrun's count where torchrun launched this process (a
    plain `torchrun --nproc_per_node 2 -m minimind_tui` leaves the setting at 1), else the
    settings' (`nproc_per_node × nnodes`)."""
    if launched_by_torchrun() and os.environ["WORLD_SIZE"].isdigit():
        return int(os.environ["WORLD_SIZE"])
    return settings.world_size()


def validate_for_start(data: dict[str, Any], changed: Collection[str] = (),
                       altered: Collection[str] | None = None
                       ) -> tuple[RunSettings, list[Problem]]:
    """`validate`, then what this machine lacks: every problem a start would meet, at once.
    A field's own error hides what the machine would say about the default standing in; and
    as a resume is checked against every field, any error hides that check (it blamed a
    checkpoint named after a default: pretrain_512_resume.pth for an empty hidden_size)."""
    settings, problems = validate(data, changed, altered)
    invalid = {p.loc for p in problems}
    # A data file is read as the stage's kind: with the stage's default standing in for a bad
    # one, `--stage LoRA` told the user to switch to pretraining data.
    if invalid & {"train.stage", "train.skip_bad_lines"}:
        invalid |= {f"train.{name}" for name in DATA_FIELDS}
    return settings, problems + [p for p in environment_problems(settings, resume=not problems)
                                 if p.loc not in invalid]
