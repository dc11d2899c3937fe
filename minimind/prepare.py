"""Everything a run needs before its first step, checked up front.

Each user mistake (unwritable out_dir, missing or malformed data, a tokenizer that cannot load,
a model too big for the machine, weights that do not fit, a resume checkpoint that is missing,
corrupt or from other data) becomes an `InputError` with one clear message, before any training
time is spent.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from minimind import distributed
from minimind.atomic import atomic_write_bytes, stale_temp_files
from minimind.checkpoint import load_resume, resume_path, weights_bytes
from minimind.checkpoint_reader import load_pretrained_weights
from minimind.data import (DataError, JsonlIndex, PackedDataset, PretrainDataset,
                           build_token_cache, resolve_data_path)
from minimind.data.corpus import cache_problem, default_cache_dir, file_digest
from minimind.data.jsonl import named_file
from minimind.data.packed import cache_report, tokenizer_digest
from minimind.data.progress import PreparationStopped, ReadingProgress
from minimind.data.sampler import plan_run
from minimind.environment import not_a_folder, vocab_problem
from minimind.generate import sample_room_problems
from minimind.data.conversation import ConversationParser
from minimind.data.sft import (ChatTemplateError, SFTDataset, chat_template_digest, mask_markers,
                               unfit_conversations, unwritten_fields)
from minimind.lora import adapter_tensors, apply_lora
from minimind.memory_estimate import states_problem
from minimind.model import MiniMindForCausalLM
from minimind.resume_check import (checkpoint_refusal, differences, fixed_changes,
                                   missing_checkpoint, plan_problem, processes, same_base)
from minimind.run_files import CONFIG_FILE, ERROR_FILE, METRICS_FILE, STATUS_FILE
from minimind.run_folder import RunBusy, RunFolder, save_of
from minimind.runs import started_from
from minimind.settings import CONSENT_FIELDS, RunSettings
from minimind.tokenizer import TokenizerError, load_tokenizer
from minimind.torchfile import CheckpointError, safe_torch_load
from minimind.upstream import WeightsMismatchError


Log = Callable[..., None]
"""log(text, level="info"): the engine's `Trainer.log`."""
# What may end one rank's reading alone: a refusal of its data, or a stop request it heard.
PREPARATION_ERRORS = (DataError, PreparationStopped)


class InputError(Exception):
    """A problem with the user's settings, files or folders (exit code 2, no traceback), and
    what to try where there is one thing to suggest."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


@dataclass
class Prepared:
    out_dir: Path
    folder: RunFolder
    """Claimed (locked) by rank 0 for this run; the engine releases it at the end."""
    weights_path: Path
    train_data: Dataset
    val_data: Dataset | None
    model: MiniMindForCausalLM
    resume: dict[str, Any] | None
    data_fingerprint: dict[str, Any]
    """What the training samples are (data bytes, tokenizer, sample count): a resumed run
    must see the same, or it would not continue the run it claims to."""
    tokenizer: Any  # the run's tokenizer, for the live samples
    origin_save: str = ""
    """`RunStarted.origin_save`: which save of its run the from_weight file was."""


def prepare(settings: RunSettings, dist: distributed.DistInfo, log: Log,
            stop: threading.Event | None = None) -> Prepared:
    """`stop` is checked while big files are read and tokenized (minutes for GBs), so a stop
    request does not have to wait for preparation to finish."""
    t = settings.train
    stop = stop or threading.Event()
    folder = RunFolder(Path(t.out_dir).expanduser())
    weights_path = folder.path / settings.weights_name()
    # Only rank 0 writes into the run folder; a lora run's adapters go to <out_dir>/lora/.
    created = _missing_folders(weights_path.parent) if dist.is_main else []
    try:
        _claim(folder, weights_path, settings, dist, log)
        return _prepare(settings, dist, log, stop, folder, weights_path)
    except BaseException:
        folder.abandon(created)  # a start refused here leaves no empty out_dir behind
        raise


def _claim(folder: RunFolder, weights_path: Path, settings: RunSettings,
           dist: distributed.DistInfo, log: Log) -> None:
    """Rank 0 makes the run folder, locks it and checks consent to reuse it; every rank gets
    the verdict, so all of them stop together when it is no."""
    problem, note = None, ""
    if dist.is_main:
        try:
            for path in dict.fromkeys((folder.path, weights_path.parent)):
                _writable_dir(path)
            _no_folder_named_as_a_file(folder.path, weights_path, settings.train.from_resume)
            note = folder.claim(resume=settings.train.from_resume,
                                overwrite=settings.train.overwrite,
                                weights_name=settings.weights_name(),
                                from_weight=settings.train.from_weight)
        except InputError as e:
            problem = str(e)
        except (RunBusy, PermissionError) as e:
            problem = f"train.out_dir: {e}"
    problem = distributed.from_main(problem, dist)
    if problem:
        raise InputError(problem)
    if note:
        log(note)
    if dist.is_main:
        _remove_unfinished_saves(weights_path, log)
        # A resume trains the same weights on: what started from them no longer matches.
        replacing, resuming = folder.replace_on_start, settings.train.from_resume
        if (replacing or resuming) and (lost := started_from(folder.path)):
            done = "replaced here" if replacing else "this resume trains on"
            log(f"runs started from the weights {done}: {lost}", "warning")


def _prepare(settings: RunSettings, dist: distributed.DistInfo, log: Log,
             stop: threading.Event, folder: RunFolder, weights_path: Path) -> Prepared:
    t = settings.train
    try:
        tokenizer = load_tokenizer(t.tokenizer_path or None)
    except TokenizerError as e:
        raise InputError(f"train.tokenizer_path: {e}") from None
    if problem := vocab_problem(settings.model.vocab_size, len(tokenizer)):
        raise InputError(str(problem))

    def dataset(spec: str, field: str) -> tuple[Dataset, str]:
        try:
            # Each rank reads its own copy (or finds rank 0's cache), and a stop request may
            # reach one rank alone: they leave together, or one waits in a collective for good.
            return distributed.together(lambda: _dataset(spec, tokenizer, settings, dist,
                                                         ReadingProgress(spec, log, stop)),
                                        PREPARATION_ERRORS, dist)
        except DataError as e:
            skip = e.line is not None and not t.skip_bad_lines  # a bad line, not a bad file
            raise InputError(f"train.{field}: {e}", "set skip_bad_lines to train without such "
                             "lines (they are counted, the first few named)" if skip else ""
                             ) from None
        except OSError as e:
            if why := cache_problem(e):
                raise InputError(f"train.{field}: {spec}: {why}") from None
            raise

    train_data, data_digest = dataset(t.data_path, "data_path")
    val_data, val_digest = dataset(t.val_data_path, "val_data_path") if t.val_data_path \
        else (None, "")
    if len(train_data) == 0:
        raise InputError(f"train.data_path: {t.data_path} holds no complete sample")
    if len(train_data) < dist.world_size:  # a rank without a sample has no step to take
        raise InputError(f"train.data_path: {t.data_path} holds {len(train_data)} sample(s) "
                         f"for {dist.world_size} processes, each of which needs one: use more "
                         "data, or fewer processes (nproc_per_node)")
    if t.stage != "pretrain" and (probed := unfit_conversations(train_data)):
        every = probed == len(train_data)  # or a sample of them, and then a guess
        which = (f"the {probed} conversation(s) of" if every
                 else f"{probed} conversations taken evenly across")
        raise InputError(f"train.max_seq_len: none of {which} {t.data_path} keeps any of its "
                         f"reply within max_seq_len {t.max_seq_len}, so the run would learn "
                         f"{'nothing' if every else 'little or nothing'}; raise max_seq_len "
                         f"(minimind-tui inspect DATA --stage {t.stage} --max_seq_len N counts "
                         "the replies that fit)")
    if t.stage != "pretrain":
        log(f"{t.stage}: {len(train_data):,} conversation{'s' * (len(train_data) != 1)}; loss, "
            "tokens and tokens/s count the supervised tokens (the replies) only; their share: "
            f"minimind-tui inspect DATA --stage {t.stage}")
    fingerprint = {"data": data_digest, "tokenizer": tokenizer_digest(tokenizer),
                   "samples": len(train_data)}
    if t.stage != "pretrain":  # the template writes every conversation's text
        fingerprint["chat_template"] = chat_template_digest(tokenizer)
    if val_digest:  # not what trains, but what val_loss is measured on
        fingerprint["val_data"] = val_digest

    model = _build_model(settings, dist.device)
    refusal, warnings = sample_room_problems(tokenizer, t.sample_prompts, t.stage != "pretrain",
                                             t.sample_tokens, model.config.max_position_embeddings)
    if refusal:
        raise InputError(refusal)
    for warning in warnings:
        log(warning, "warning")
    origin_save = ""
    if t.from_weight and not t.from_resume:  # (a resume's state holds every weight)
        try:
            checked, other_ids = load_pretrained_weights(model, Path(t.from_weight).expanduser(),
                                                         tokenizer, t.tokenizer_path)
        except (CheckpointError, WeightsMismatchError) as e:
            raise InputError(f"train.from_weight: {e}") from None
        log(f"initialised from {t.from_weight} ({checked})")
        origin_save = save_of(Path(t.from_weight).expanduser())
        if other_ids:
            log(f"{t.from_weight}: {other_ids}", "warning")
    elif t.stage == "sft" and not t.from_resume:  # lora is refused without one (settings)
        log("sft from random weights: from_weight is empty, so the run fine-tunes no "
            "pretrained model (upstream's sft starts from pretrain_<hidden>.pth)", "warning")
    if t.stage == "lora":
        base = model.num_parameters()
        adapters = apply_lora(model, t.lora_rank)
        log(f"lora: {sum(p.numel() for p in adapters):,} adapter parameters train, the "
            f"{base:,} of the base are frozen")

    resume = None
    if t.from_resume:
        resume = _resume_state(settings, resume_path(weights_path), dist, fingerprint, folder,
                               log)
        if dist.is_main:
            _match_weights_to_resume(weights_path, resume, log, t.stage == "lora")
        if changed := _changed_since(resume, settings):  # on purpose, or a flag left out
            log(f"resuming with settings the checkpoint's run did not use (from step "
                f"{resume['progress']['step'] + 1} on): " + ", ".join(changed), "warning")
    return Prepared(folder.path, folder, weights_path, train_data, val_data, model, resume,
                    fingerprint, tokenizer, origin_save)


def _changed_since(state: dict[str, Any], settings: RunSettings) -> list[str]:
    """The train settings a resume changes (those it may not change are refused by
    `_resume_state`); where the run is and the launch's answers aside."""
    saved = state["settings"].get("train", {})
    names = [k for k in type(settings.train).model_fields
             if k in saved and k not in (*CONSENT_FIELDS, "out_dir")]
    if same_base(state["settings"], settings):  # written another way, or not at all
        names.remove("from_weight")
    return differences(state["settings"], settings.model_dump(mode="json"),
                       [("train", k) for k in names])


def _no_folder_named_as_a_file(out_dir: Path, weights_path: Path, resuming: bool) -> None:
    """A folder where the run writes a file would fail it after the folder was claimed, and
    with the name of a temporary file; say it now, before anything is written (a resume
    reads its resume file first, and says what is wrong with it)."""
    files = [out_dir / name for name in (CONFIG_FILE, METRICS_FILE, STATUS_FILE, ERROR_FILE)]
    for path in (*files, weights_path, *([] if resuming else [resume_path(weights_path)])):
        if path.is_dir():
            raise InputError(f"train.out_dir: {path} is a folder, where the run writes a file "
                             "of that name; move it away, or train into another --out_dir")


def _missing_folders(path: Path) -> list[Path]:
    """The folders making `path` would create, deepest first."""
    return [p for p in (path, *path.parents) if not p.exists()]


def _writable_dir(path: Path) -> None:
    if why := not_a_folder(str(path)):
        raise InputError(f"train.out_dir: {why}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        # A uniquely named probe: another launch may check the same folder at once.
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise InputError(f"train.out_dir: cannot write to {path} ({e.strerror or e})") from None


def _remove_unfinished_saves(weights_path: Path, log: Log) -> None:
    """Temporary files a save killed mid-write left behind (MBs each): only this run's
    checkpoint names, which nothing else writes."""
    ours = (f".{weights_path.name}.", f".{resume_path(weights_path).name}.")
    stale = [p for p in stale_temp_files(weights_path.parent) if p.name.startswith(ours)]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        log(f"removed {len(stale)} unfinished temporary file(s) of an interrupted save")


def _match_weights_to_resume(weights_path: Path, state: dict[str, Any],
                             log: Log, adapters_only: bool) -> None:
    """The resume file is renamed into place last, so it is the pair's commit: a kill between
    the two renames leaves the weights file one save ahead. Resuming rewrites it from the resume
    state, so the pair agrees again (and the weights match the step the run goes on from)."""
    expected = (adapter_tensors(state["model"]) if adapters_only
                else {k: v.half() for k, v in state["model"].items()})
    try:
        saved = safe_torch_load(weights_path)
        if isinstance(saved, dict) and saved.keys() == expected.keys() and all(
                torch.equal(saved[k], v) for k, v in expected.items()):
            return
    except CheckpointError:
        pass
    atomic_write_bytes(weights_path, weights_bytes(state["model"], adapters_only))
    log(f"{weights_path.name} did not match its resume checkpoint (a save was interrupted): "
        f"rewritten from the checkpoint of step {state['progress']['step']}")


def _build_model(settings: RunSettings, device: torch.device) -> MiniMindForCausalLM:
    try:
        config = settings.model.to_config()
    except ValueError as e:
        raise InputError(f"model: {e}") from None
    with torch.device("meta"):  # counts the parameters without allocating them
        parameters = MiniMindForCausalLM(config).num_parameters()
    if problem := states_problem(settings, parameters, device):
        raise InputError(f"model: {problem}")
    torch.manual_seed(settings.train.seed)  # identical initial weights on every rank
    return MiniMindForCausalLM(config)


def _dataset(spec: str, tokenizer: Any, settings: RunSettings, dist: distributed.DistInfo,
             reporter: ReadingProgress) -> tuple[Dataset, str]:
    """The dataset for one data setting and the digest of the file's bytes."""
    t = settings.train
    path = resolve_data_path(spec)
    log = reporter.log
    if t.stage != "pretrain":  # conversations, padded (settings refuse packing for them)
        try:
            mask_markers(tokenizer)  # before reading what may be gigabytes
        except ChatTemplateError as e:
            raise InputError(f"train.tokenizer_path: {e}") from None
        parser = ConversationParser(unwritten := unwritten_fields(tokenizer))
        index = JsonlIndex(path, skip_bad_lines=t.skip_bad_lines, progress=reporter,
                           parse=parser)
        _report_bad_lines(path, index.bad_lines, index.first_bad, log)
        if dropped := [f for f in unwritten if parser.carrying[f]]:
            log(f"{spec}: " + ", ".join(f"{parser.carrying[f]:,} conversation(s) carry {f}"
                                        for f in dropped)
                + ", which the tokenizer's chat template does not write: training leaves them "
                  "out (MiniMind-3's tokenizer writes them)", "warning")
        return SFTDataset(index, tokenizer, t.max_seq_len), index.digest
    if not t.packing:
        index = JsonlIndex(path, skip_bad_lines=t.skip_bad_lines, progress=reporter)
        _report_bad_lines(path, index.bad_lines, index.first_bad, log)
        return PretrainDataset(index, tokenizer, t.max_seq_len), index.digest

    def build() -> tuple[Path, str]:
        # The digest names the token cache: a second pass, but a fast one (about 1 GB/s).
        digest = file_digest(path, reporter.again("hashing")) if path.is_file() else ""
        return build_token_cache(path, tokenizer, t.max_seq_len, default_cache_dir() / "tokens",
                                 skip_bad_lines=t.skip_bad_lines, progress=reporter,
                                 data_digest=digest or None, log=log), digest

    # Rank 0 tokenizes; the others wait, then find the cached file, or stop with its refusal or
    # its stop (rather than in a collective that rank 0 left).
    built = distributed.together(build if dist.is_main else lambda: None, PREPARATION_ERRORS,
                                 dist)
    token_file, digest = built or build()
    report = cache_report(token_file) or {}
    _report_bad_lines(path, report.get("bad_lines", 0), report.get("first_bad", []), log)
    return PackedDataset(token_file, t.max_seq_len), digest


def _report_bad_lines(path: Path, count: int, first: list, log: Log) -> None:
    if count:
        log(f"{named_file(path)}: skipped {count} bad lines, first: "
            + "; ".join(f"line {n}: {why}" for n, why in first))


def _resume_state(settings: RunSettings, path: Path, dist: distributed.DistInfo,
                  fingerprint: dict[str, Any], folder: RunFolder, log: Log) -> dict[str, Any]:
    if not path.exists():
        raise InputError("train.from_resume: " + missing_checkpoint(path, folder.path))
    try:
        state = load_resume(path)
    except CheckpointError as e:
        raise InputError(f"train.from_resume: {e}") from None
    saved = state["settings"]
    if changed := fixed_changes(saved, settings):
        raise InputError("train.from_resume: " + checkpoint_refusal(changed, settings))
    t, reached = settings.train, state["progress"]["step"]
    # The processes and the data first: a plan drawn from data that changed since would send
    # the user to change epochs or max_steps for nothing.
    if state["world_size"] != dist.world_size:
        raise InputError(f"train.from_resume: the checkpoint was written by "
                         f"{processes(state['world_size'])}; resume with the same number "
                         f"(now {dist.world_size})")
    saved_data = state.get("data") or {}
    differs = [k for k in fingerprint if k in saved_data and saved_data[k] != fingerprint[k]]
    if "val_data" in differs:  # the run goes on as it would; only its curve's meaning changes
        differs.remove("val_data")
        log(f"the validation data changed since the checkpoint: val_loss after step "
            f"{reached} is measured on other data than before", "warning")
    if differs:
        what = {"data": "the data file's contents", "tokenizer": "the tokenizer",
                "chat_template": "the tokenizer's chat template",
                "samples": f"the number of samples ({saved_data.get('samples')} → "
                           f"{fingerprint['samples']})"}
        changed = "the training data changed since the checkpoint (" + ", ".join(
            what[k] for k in differs) + ")"
        if not t.allow_data_change:
            raise InputError(f"train.from_resume: {changed}, so the run would not continue "
                             "where it stopped; restore the data, or set allow_data_change to "
                             "resume anyway")
        # Allowed, and said: the log keeps why the curve may jump here.
        log(f"resuming as allow_data_change allows, though {changed}", "warning")
    plan = plan_run(fingerprint["samples"], t.batch_size, t.accumulation_steps, t.epochs,
                    t.max_steps, dist.world_size)
    status = distributed.from_main(folder.status() if dist.is_main else None, dist)
    # A completed run would only evaluate again, and again at each resume.
    completed = status is not None and status.state == "completed"
    if problem := plan_problem(reached, plan.steps_per_epoch, t, completed):
        raise InputError(str(problem))
    if status is not None and status.step == reached:  # the clock goes on from the run's end,
        progress = state["progress"]                    # which counts its last evaluation
        progress["elapsed"] = max(progress["elapsed"], status.elapsed)
    return state
