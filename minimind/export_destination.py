"""Where an export may go, and what --overwrite may replace there: only an earlier export this
tool wrote (its mark says so), never a run folder, the model being exported, a stranger's model
of the same name, or the user's own files beside an export.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from collections.abc import Collection
from pathlib import Path

import torch

from .atomic import file_in_the_way, in_the_way
from .checkpoint import weights_metadata
from .checkpoint_reader import Checkpoint
from .hf_architectures import REMOTE_CODE_FILES
from .run_files import run_files
from .run_folder import RunFolder
from .safe_read import read_small
from .torchfile import CheckpointError, safe_torch_load
from .upstream import EMBED_KEY
from .weight_records import EXPORT_MARK, EXPORTER

# Files a Hugging Face tokenizer folder may consist of; whichever exist are copied verbatim, so
# the export loads with the same tokenizer class the source names.
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja", "chat_template.json",
)  # fmt: skip
EXPORT_FILES = frozenset({"config.json", "model.safetensors", "generation_config.json",
                          *TOKENIZER_FILES, *REMOTE_CODE_FILES})
"""Every name an export may write (`export._write_folder`)."""


class ExportError(ValueError):
    """The source or destination is unusable; the message is one line naming the path and why."""


class ExportWriteError(ExportError):
    """The destination passed its checks, then refused the files (a full disk, a read-only
    mount): a failure at run time, as a checkpoint's is, not a mistake in the command."""


def check_destination(out: str | Path, overwrite: bool = False, *, upstream: bool = False
                      ) -> None:
    """Refuse an ``out`` that ``export_hf`` (``export_upstream`` with ``upstream``) could not
    fill or must not write to; callers may ask before loading."""
    out = Path(out).expanduser()
    folder = out.parent if upstream and out.suffix == ".pth" else out
    blocking = file_in_the_way(folder)
    what = in_the_way(blocking) if blocking else ""
    if blocking and blocking != out:
        raise ExportError(f"{out}: cannot write there: {blocking} is {what}, not a folder")
    if blocking and upstream:
        raise ExportError(f"{out}: is {what}; name the folder for upstream's weights file, or "
                          "the .pth file itself")
    if upstream:  # the file's name depends on the model: export_upstream checks it
        _check_not_a_run(folder)
        return
    _check_not_a_run(out)  # before a refusal that suggests --overwrite
    if blocking:
        raise ExportError(f"{out}: is {what}; the export is a folder")
    if out.suffix == ".pth":  # it would become a folder named like upstream's file
        raise ExportError(f"{out}: a name for upstream's weights file, and this export is a "
                          "folder: choose the upstream format (--format upstream) for that file, "
                          "or name a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ExportError(f"{out}: folder is not empty (pass --overwrite to replace it)")
        # --overwrite deletes the folder: only an export this tool wrote.
        _check_an_earlier_hf_export(out)
        check_only_an_export(out, exported=EXPORT_FILES)


def _check_an_earlier_hf_export(out: Path) -> None:
    """--overwrite replaces a folder this tool exported (its config.json says so), never
    another model's: a MiniMind folder of `save_pretrained`, upstream's or a downloaded model
    has the same file names."""
    config = out / "config.json"
    why = f'its config.json has no "{EXPORT_MARK}": "{EXPORTER}"'
    try:
        if json.loads(read_small(config)).get(EXPORT_MARK) == EXPORTER:
            return
    except OSError as e:  # none, a FIFO, a folder, too large to be an export's
        why = f"its config.json cannot be read: {e.strerror or e}"
    except (ValueError, AttributeError):
        why = "its config.json is not a JSON object"
    raise ExportError(f"{out}: not an export of {EXPORTER} ({why}); refusing to replace it "
                      "even with --overwrite: delete it yourself if it is an earlier export")


def check_not_the_source(out: Path, source: Checkpoint) -> None:
    """The model being exported is read from its files: an OUT that is one of them, or holds
    one, would replace it (with --overwrite) or mix the export into it."""
    target = out.resolve()
    for path in (source.weights_path, source.adapter_path):
        read = Path(path).resolve() if path is not None else None
        if read is not None and (target == read or target in read.parents):
            raise ExportError(f"{out}: holds the model being exported ({path}); choose "
                              "another OUT")


def check_only_an_export(out: Path, exported: Collection[str]) -> None:
    """Refuse to replace a folder holding more than an export writes: the user's notes or
    evaluation results beside an earlier export are not ours to delete. ``exported``: the
    names this export writes (before it is written, `EXPORT_FILES`: checking subfolders alone
    then, a second refusal named the notes after the whole export had run again)."""
    if foreign := _not_an_exports(out, {*exported, *REMOTE_CODE_FILES}):
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5
                                          else "")
        raise ExportError(f"{out}: holds files an export does not write ({shown}); --overwrite "
                          "replaces an earlier export, never other files: move them, or choose "
                          "another OUT")


def _not_an_exports(folder: Path, ours: Collection[str]) -> list[str]:
    """What `folder` holds that no export writes: subfolders (named with a `/`) and any file
    not in `ours`."""
    return sorted(f"{p.name}/" if p.is_dir() else p.name for p in folder.iterdir()
                  if p.is_dir() or p.name not in ours)


def _check_not_a_run(folder: Path) -> None:
    """Refuse to write an export into ``folder`` when it holds a run, or a lora run's own files
    (its ``lora/``), even with --overwrite, which replaces an earlier export, never a run: a
    Hugging Face export would delete the run's files, and an upstream file would replace the
    run's weights (leaving its config.toml and resume file describing another model) or put a
    stranger's weights among them."""
    # The parent first: a lora run's lora/, with resume files in it, would pass for a run.
    for run in (folder.parent, folder):
        ours = run == folder or any(p.parent.resolve() == folder.resolve()
                                    for p in run_files(run))
        if ours and RunFolder(run).holds_a_run():
            whose = "a training run" if run == folder else f"files of the training run in {run}"
            raise ExportError(f"{folder}: holds {whose}, {RunFolder(run).describe()}; an export "
                              "never goes into a run folder, even with --overwrite: choose "
                              "another OUT")


def check_an_earlier_export(target: Path) -> None:
    """--overwrite replaces a weights file this tool exported (its metadata says so), never
    another file OUT names: the user's notes, another project's checkpoint, or a MiniMind
    model of the same name that was not exported here (upstream's own pretrain_512.pth)."""
    why = "not a PyTorch checkpoint"  # every export is a zip file, and mmap reads only those
    if not target.is_file():  # a FIFO would hang the read
        why = "not a regular file"
    elif zipfile.is_zipfile(target):
        try:
            state = safe_torch_load(target, mmap=True)  # tensors stay on disk
        except CheckpointError as e:
            why = str(e).removeprefix(f"{target}: ")
        else:
            if not (isinstance(state, dict) and isinstance(state.get(EMBED_KEY), torch.Tensor)):
                why = f"no {EMBED_KEY}"
            elif weights_metadata(state).get(EXPORT_MARK) == EXPORTER:
                return
            else:
                raise ExportError(f"{target}: a MiniMind weights file, but not an export of "
                                  f"{EXPORTER} (its metadata has no {EXPORT_MARK} mark: "
                                  "upstream's, a run's, or an export of an earlier version); "
                                  "refusing to replace it even with --overwrite: delete it "
                                  "yourself if it is an earlier export")
    raise ExportError(f"{target}: not a MiniMind weights file ({why}); refusing to replace it "
                      "even with --overwrite")


def replaced_folder(out: Path) -> Path:
    """Where --overwrite moves an earlier export for the moment the new one takes its place."""
    return out.with_name(f"{out.name}.replaced")


def finish_an_interrupted_replace(out: Path) -> bool:
    """An export killed while it replaced an earlier one (between its two renames, or while the
    earlier one was being removed) left that one in `replaced_folder(out)`: it goes back in
    place where `out` is gone (True), and is removed where the new export took its place. A
    folder of that name holding what no export writes is the user's: refused, untouched."""
    replaced = replaced_folder(out)
    if not (replaced.exists() or replaced.is_symlink()):
        return False
    if (not replaced.is_dir() or replaced.is_symlink()
            or _not_an_exports(replaced, EXPORT_FILES)):
        raise ExportError(f"{replaced}: in the way: an export replacing {out.name} moves the "
                          "earlier one to a folder of that name for a moment; move it away")
    if out.exists() or out.is_symlink():
        shutil.rmtree(replaced)
        return False
    os.rename(replaced, out)
    return True
