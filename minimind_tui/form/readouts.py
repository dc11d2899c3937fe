"""Numbers derived from the settings before a run starts (no Textual here).

The configure screen shows them live: the model's size, which upstream checkpoints fit its
shape, tokens per optimizer step, steps per epoch, for sft/lora the tokens the loss trains on,
and a memory estimate. The slow parts (importing the model code, scanning a data file) run in
background workers and are cached.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from minimind.settings import ModelSettings, Problem, RunSettings, epoch_steps

if TYPE_CHECKING:
    from minimind.data.inspect import DataInspection
    from minimind_tui.run.history import RunHistory
    from minimind.data.sft_inspect import ConversationInspection

# The fields each readout is computed from ("model" stands for the whole section). A readout is
# shown while its fields are valid, whatever else is wrong: an upstream preset whose data is
# elsewhere still shows its model's size.
MODEL_FIELDS = ("model",)
TOKENS_FIELDS = ("train.batch_size", "train.max_seq_len", "train.accumulation_steps",
                 "train.nproc_per_node", "train.nnodes")
MEMORY_FIELDS = ("model", "train.batch_size", "train.max_seq_len", "train.dtype",
                 "train.grad_checkpointing", "train.nproc_per_node")
STEPS_FIELDS = ("train.stage", "train.data_path", "train.packing", "train.epochs",
                "train.max_steps", *TOKENS_FIELDS)
# A JSONL file's bytes per token of text, roughly, before it is tokenized: 3.5 for the bundled
# English (JSON and all) with its tokenizer; Chinese in UTF-8 takes 3 bytes a character and a
# token holds about 1.5 of them.
GUESSED_BYTES_PER_TOKEN = 4
# What a run's tokens/s depends on: the ETA takes the last run's rate only where these agree.
SPEED_FIELDS = (*MEMORY_FIELDS, "train.nnodes", "train.device", "train.packing",
                "train.use_compile")


@dataclass(frozen=True)
class ModelSummary:
    parameters: int
    active_parameters: int
    family_match: str | None
    family_defaults: dict[str, object]
    """The values empty optional fields get, e.g. {"num_key_value_heads": 2, ...}."""
    adapter_widths: int = 0
    """in + out features summed over the layers lora adapts: a rank-r run trains r times this."""


@dataclass(frozen=True)
class DataSummary:
    """How much a data file holds: always its line count, tokens once a token cache exists,
    and every figure once it was inspected with the form's tokenizer (for sft/lora: as
    conversations, at the form's max_seq_len)."""

    lines: int
    tokens: int | None
    inspection: DataInspection | ConversationInspection | None = None
    size: int = 0
    """The file's bytes (decompressed), for a guess of its tokens before it is tokenized."""


def blocking_problem(problems: list[Problem], fields: tuple[str, ...]) -> Problem | None:
    """The first problem with a field (or section, or the whole settings) a readout needs."""
    for problem in problems:
        loc = problem.loc
        if not loc or any(loc == f or loc.startswith(f + ".") or f.startswith(loc + ".")
                          for f in fields):
            return problem
    return None


def model_summary(model: ModelSettings) -> ModelSummary:
    """Parameter counts from a model built on the meta device: exact, instant, no memory."""
    return _model_summary(json.dumps(model.model_dump(), sort_keys=True))


@functools.lru_cache(maxsize=64)
def _model_summary(key: str) -> ModelSummary:
    import torch

    from minimind.config import family_defaults
    from minimind.lora import adapted_layers
    from minimind.model import MiniMindForCausalLM

    model = ModelSettings.model_validate_json(key)
    config = model.to_config()
    with torch.device("meta"):
        net = MiniMindForCausalLM(config)
    defaults = family_defaults(model.family, model.hidden_size)
    defaults["moe_intermediate_size"] = config.intermediate_size
    widths = sum(m.in_features + m.out_features for m in adapted_layers(net).values())
    return ModelSummary(net.num_parameters(), net.active_parameters(), config.matching_family(),
                        defaults, widths)


def scan_data(data_path: str, tokenizer_path: str = "", stage: str = "pretrain",
              max_seq_len: int = 0) -> DataSummary:
    """Line count of a JSONL file (`builtin:` names included) and, if this tokenizer's packed
    token cache of its current bytes exists, its token count; the inspection of these bytes
    with this tokenizer, if there is one (for sft/lora the conversation inspection at
    max_seq_len).
    Reads the file once; callers cache per `data_key`."""
    from minimind.data.corpus import default_cache_dir, file_digest, resolve_data_path
    from minimind.data.inspect import cached_inspection, inspections_of
    from minimind.data.packed import cached_token_files

    path = resolve_data_path(data_path)
    lines = size = 0
    with open(path, "rb") as f:
        last = b"\n"
        while chunk := f.read(1 << 22):
            lines += chunk.count(b"\n")
            size += len(chunk)
            last = chunk[-1:]
    lines += last != b"\n"  # a last line without a newline still counts
    # The tokenizer is part of the cache name too; any tokenizer's cache is close enough here.
    digest = file_digest(path)
    if stage != "pretrain":  # conversations are never packed: no token cache to look for
        return DataSummary(lines, None, _conversation_inspection(path, digest, tokenizer_path,
                                                                 max_seq_len), size)
    # Loading the tokenizer (its key names the caches) takes seconds: only when it pays.
    cache_dir = default_cache_dir() / "tokens"
    keys = (_tokenizer_keys(tokenizer_path)
            if inspections_of(path, digest) or cached_token_files(cache_dir, path, digest)
            else None)
    caches = cached_token_files(cache_dir, path, digest, keys[0]) if keys else []
    inspection = cached_inspection(path, digest, keys[0]) if keys else None
    return DataSummary(lines, caches[0].stat().st_size // 2 if caches else None, inspection,
                       size)


@functools.lru_cache(maxsize=8)
def _tokenizer_keys(tokenizer_path: str) -> tuple[str, str] | None:
    """The keys a tokenizer's inspections are cached under: (its ids, for documents; its ids
    and chat template, for conversations); None when it cannot be loaded."""
    from minimind.data.packed import tokenizer_digest
    from minimind.data.sft_inspect import tokenizer_key
    from minimind.tokenizer import TokenizerError, load_tokenizer

    try:
        tokenizer = load_tokenizer(tokenizer_path or None)
    except TokenizerError:
        return None
    return tokenizer_digest(tokenizer), tokenizer_key(tokenizer)


def _conversation_inspection(path: Path, digest: str, tokenizer_path: str, max_seq_len: int
                             ) -> ConversationInspection | None:
    from minimind.data.sft_inspect import (cached_conversation_inspection,
                                           conversation_inspections_of)

    if not conversation_inspections_of(path, digest, max_seq_len):
        return None  # loading a tokenizer takes seconds: only when it pays
    keys = _tokenizer_keys(tokenizer_path)
    return cached_conversation_inspection(path, digest, keys[1], max_seq_len) if keys else None


def steps_per_epoch(settings: RunSettings, data: DataSummary) -> tuple[int, str]:
    """Optimizer steps in one epoch and what the count is based on (the engine's rule,
    `epoch_steps`: each process takes its share of the samples). sft/lora samples are
    conversations, one each: never packed."""
    t = settings.train
    inspected = data.inspection
    if t.stage != "pretrain":
        samples, basis = ((inspected.documents, f"{inspected.documents:,} conversations "
                                                "(inspected)") if inspected is not None
                          else (data.lines, f"{data.lines:,} lines"))
    elif t.packing and inspected is not None:
        samples = inspected.tokens // t.max_seq_len
        basis = f"{inspected.tokens:,} tokens (inspected)"
    elif inspected is not None:
        samples, basis = inspected.documents, f"{inspected.documents:,} documents (inspected)"
    elif t.packing and data.tokens is not None:
        samples, basis = data.tokens // t.max_seq_len, f"{data.tokens:,} cached tokens"
    elif t.packing:
        # Packing makes windows of tokens, not of lines: short documents share a window, long
        # ones fill several. The file's size guesses better than its lines (tiny's 4,901 lines
        # read as 307 steps where the run took 699; its bytes read as 611).
        samples = data.size // GUESSED_BYTES_PER_TOKEN // t.max_seq_len
        basis = (f"{data.size:,} bytes at ~{GUESSED_BYTES_PER_TOKEN} a token: a guess until "
                 "tokenized")
    else:
        samples, basis = data.lines, f"{data.lines:,} lines"
    return epoch_steps(samples, t.batch_size, t.accumulation_steps, settings.world_size()), basis


def tokens_per_epoch(settings: RunSettings, data: DataSummary) -> int | None:
    """Tokens the model learns from in one epoch (labels that count), once inspected: packed,
    every position of the full windows; padded, each document up to max_seq_len; sft/lora,
    the supervised tokens of the replies."""
    if data.inspection is None:
        return None
    if settings.train.stage != "pretrain":
        return data.inspection.supervised_tokens
    fit = data.inspection.fit(settings.train.max_seq_len)
    if settings.train.packing:
        return fit.packed_samples * fit.max_seq_len
    return round(fit.padded_samples * fit.max_seq_len * (1 - fit.padding_share))


@dataclass(frozen=True)
class Supervision:
    """What the loss of an sft/lora step trains on, estimated from an inspection."""

    per_step: float
    """Supervised tokens per optimizer step over every process: the mean per conversation x
    conversations."""
    share: float
    """Of the conversations' tokens (cut at max_seq_len, no padding), the share supervised."""
    position_share: float
    """Of the positions a step computes (padding included), the share supervised."""
    conversations: int
    """How many conversations the estimate comes from."""


def supervision(settings: RunSettings, data: DataSummary) -> Supervision | None:
    """Supervised tokens per step for a conversation stage once the data was inspected at this
    max_seq_len, else None (a guess would read as a measurement)."""
    inspected = data.inspection
    if settings.train.stage == "pretrain" or inspected is None or not inspected.documents:
        return None
    per_step = (inspected.supervised_tokens / inspected.documents * settings.train.batch_size
                * settings.train.accumulation_steps * settings.world_size())
    return Supervision(per_step, inspected.supervised_share,
                       per_step / settings.tokens_per_step(), inspected.documents)


def data_key(data_path: str, tokenizer_path: str = "", stage: str = "pretrain",
             max_seq_len: int = 0) -> str:
    """The cache key of a data scan: the spellings plus, for files, their size and mtime, so
    an edited file is scanned again while a keystroke elsewhere reuses the last scan. A
    conversation stage's scan also depends on max_seq_len (its inspection cuts at it); a
    pretraining inspection serves every max_seq_len."""
    key = f"{data_path}|{tokenizer_path}"
    if stage != "pretrain":
        key = f"{key}|{stage}@{max_seq_len}"
    if data_path.startswith("builtin"):
        return key
    try:
        stat = Path(data_path).expanduser().stat()
    except OSError:
        return key
    return f"{key}|{stat.st_size}|{stat.st_mtime_ns}"


def last_run_rate(history: RunHistory, settings: RunSettings) -> float | None:
    """The app's last run's average tokens/s, for an ETA, if it trained the same model the
    same way (its rate says nothing of another shape, batch or dtype) and counted the same
    kind of tokens: every token for pretraining, only the replies for sft/lora."""
    summary, started = history.summary, history.started
    if started is None or summary.tokens_per_sec <= 0:
        return None
    ran, now = started.settings, settings.model_dump(mode="json")
    if any(_at(ran, loc) != _at(now, loc) for loc in SPEED_FIELDS):
        return None
    last_stage = ran["train"].get("stage", "pretrain")
    same_kind = (last_stage == "pretrain") == (settings.train.stage == "pretrain")
    # Its tokens over its time, the last save and evaluation too, as run.json's rate: the
    # last log interval's (5.68k against 3.61k tokens/s in a 60-step run) was 40% short.
    return summary.tokens_per_sec if same_kind else None


def _at(settings: dict[str, Any], loc: str) -> Any:
    """A value of settings as JSON by its loc ("model" for the whole section)."""
    section, _, name = loc.partition(".")
    table = settings.get(section, {})
    return table.get(name) if name else table
