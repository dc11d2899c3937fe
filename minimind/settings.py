"""Run settings: the one validated description of a pretraining run.

`ModelSettings` holds the user-facing `MiniMindConfig` fields, `TrainSettings` the seed's
`Arguments` (plus what a serious run needs), and `RunSettings` composes both. The same models
drive the preset files, the CLI flags, the dashboard form and `<out_dir>/config.toml`, so a new
field added here appears everywhere.

`RunSettings.parse` is the one way in: pydantic checks each field, `minimind.settings_rules` the
rules that tie fields together, and every problem comes back at once, each naming its field. The
rules are pure; what the machine must provide is `minimind.environment`'s to check, at start.

Relative paths are kept as written and resolved against the current working directory when the
run starts, like upstream's `../dataset/...` habits.
"""

from __future__ import annotations

import math
import types
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

import tomli_w
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter,
                      ValidationInfo, field_validator)
from pydantic_core import PydanticCustomError

from minimind.atomic import atomic_write_bytes
from minimind.run_files import NAME_PREFIX_MAX, lora_weights_name, weights_name

if TYPE_CHECKING:
    from minimind.config import MiniMindConfig

GROUPS = ("Model", "MoE", "Data", "Optimisation", "Runtime", "Output", "Insight")
TRACKERS = ("tensorboard", "wandb", "swanlab", "trackio")
STAGES = ("pretrain", "sft", "lora")
# What a stage changes when the settings leave it out: the file name upstream's script writes,
# and data of the kind the stage reads (the bundled conversations).
_CHAT_DATA = {"data_path": "builtin:shakespeare-chat"}
STAGE_DEFAULTS = {"sft": {"save_weight": "full_sft", **_CHAT_DATA}, "lora": _CHAT_DATA}
DATA_FIELDS = ("data_path", "val_data_path")  # the train fields that name a data file
LORA_FIELDS = ("lora_name", "lora_rank")  # the train fields only a lora run may set
# The model fields only an MoE model may set.
MOE_FIELDS = ("n_routed_experts", "num_experts_per_tok", "n_shared_experts",
              "moe_intermediate_size", "aux_loss_alpha", "seq_aux", "norm_topk_prob")
WIDEST_FEED_FORWARD = 1 << 18
"""16x the widest hidden_size. Sizes need a ceiling the model can be built at: an
intermediate_size of 2^52 overflowed torch's tensor sizes, and (for the experts' ceiling of
256) a million shared experts took minutes to build even on the meta device."""
# Continuations the bundled Shakespeare corpus makes easy to judge by eye.
DEFAULT_SAMPLE_PROMPTS = ("ROMEO:", "To be, or not to be", "First Citizen:")


def _lines(value: Any) -> Any:
    """A list of texts also accepts one string with an item per line (a text box's value).
    Either way an item is one non-blank line, so a list reads back the same from the form."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [line for item in value for line in item.splitlines() if line.strip()]
    return value


def _words(value: Any) -> Any:
    """A list of names also accepts one string of them separated by commas or spaces."""
    if isinstance(value, str):
        return value.replace(",", " ").split()
    return value


def _tracker_set(names: list[str]) -> list[str]:
    """Trackers are a set: each once, in `TRACKERS` order, however the list was written."""
    return [name for name in TRACKERS if name in names]


TextList = Annotated[list[str], BeforeValidator(_lines)]
# No run can use inf or nan, and spaces around a value are never meant (a form field cannot
# even show them): refused and stripped alike from flags, presets and the form.
SECTION_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False, str_strip_whitespace=True)


class _Section(BaseModel):
    """A settings table: unknown keys refused, and no true/false for a number."""

    model_config = SECTION_CONFIG

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic's lax mode reads true as 1: a preset's `learning_rate = true` trained at 1.0
        if isinstance(value, bool):
            kinds = _base_types(cls.model_fields[info.field_name].annotation)
            if bool not in kinds and int in kinds:
                raise PydanticCustomError("int_type", "must be a whole number")
            if bool not in kinds and float in kinds:
                raise PydanticCustomError("float_type", "must be a number")
        return value


def _base_types(annotation: Any) -> set[Any]:
    """`int | None` -> {int, NoneType}; Annotated and unions unwrapped."""
    if get_origin(annotation) is Annotated:
        return _base_types(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        return set().union(*map(_base_types, get_args(annotation)))
    return {annotation}


def _field(default: Any, group: str, help: str, **constraints: Any) -> Any:
    return Field(default, description=help, json_schema_extra={"group": group}, **constraints)


# What a device setting may say; `minimind.device` checks what this machine has.
DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"


class ModelSettings(_Section):
    """MiniMindConfig fields a user sets; `None` means "the family's default"."""

    family: Literal["minimind2", "minimind3"] = _field(
        "minimind2", "Model", "upstream architecture family that supplies the defaults left empty")
    hidden_size: int = _field(512, "Model", "width of the residual stream", ge=16, le=16384)
    num_hidden_layers: int = _field(8, "Model", "number of decoder blocks", ge=1, le=256)
    num_attention_heads: int = _field(8, "Model", "query heads", ge=1, le=256)
    num_key_value_heads: int | None = _field(
        None, "Model", "key/value heads for GQA (empty: 2 for minimind2, 4 for minimind3)",
        ge=1, le=256)
    intermediate_size: int | None = _field(
        None, "Model", "SwiGLU width (empty: the family's rule)", ge=1, le=WIDEST_FEED_FORWARD)
    vocab_size: int = _field(
        6400, "Model", "vocabulary size; must cover the tokenizer", ge=3, le=1 << 20)
    max_position_embeddings: int = _field(
        32768, "Model", "longest position the model is built for", ge=8, le=1 << 22)
    rope_theta: float = _field(1e6, "Model", "RoPE base frequency", gt=0)
    rms_norm_eps: float | None = _field(
        None, "Model", "RMSNorm epsilon (empty: 1e-5 minimind2, 1e-6 minimind3)", gt=0, lt=1)
    qk_norm: bool | None = _field(
        None, "Model", "per-head RMSNorm on q and k (empty: on for minimind3)")
    dropout: float = _field(0.0, "Model", "dropout probability", ge=0, lt=1)
    tie_word_embeddings: bool = _field(True, "Model", "share embedding and lm_head weights")
    weight_init: Literal["pytorch", "normal"] | None = _field(
        None, "Model", "initial weights (empty: the family's; pytorch: every Linear and a tied "
                       "embedding U(±1/√fan_in), minimind2; normal: N(0, 0.02), minimind3)")
    flash_attn: bool = _field(True, "Model", "use PyTorch's fused scaled-dot-product attention")
    use_moe: bool = _field(False, "MoE", "replace each feed-forward with a mixture of experts")
    n_routed_experts: int = _field(4, "MoE", "routed experts per layer", ge=1, le=256)
    num_experts_per_tok: int | None = _field(
        None, "MoE", "experts each token is routed to (empty: 2 minimind2, 1 minimind3)",
        ge=1, le=256)
    n_shared_experts: int | None = _field(
        None, "MoE", "always-on experts (empty: 1 minimind2, 0 minimind3)", ge=0, le=256)
    moe_intermediate_size: int | None = _field(
        None, "MoE", "expert width (empty: intermediate_size)", ge=1, le=WIDEST_FEED_FORWARD)
    aux_loss_alpha: float | None = _field(
        None, "MoE", "load-balance loss weight (empty: 0.1 minimind2, 5e-4 minimind3)", ge=0)
    seq_aux: bool | None = _field(
        None, "MoE", "sequence-level balance loss (empty: on for minimind2)")
    norm_topk_prob: bool = _field(
        True, "MoE", "renormalise the top-k routing weights (minimind2 at top-1, as upstream, "
        "keeps the pick's score either way)")

    def to_config_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `MiniMindConfig`; `None` lets the family decide."""
        return {k: v for k, v in self.model_dump().items() if v is not None}

    def to_config(self) -> MiniMindConfig:
        """The model's config; ValueError where the family's rules refuse the shape."""
        from minimind.config import MiniMindConfig  # transformers: only where a model is built

        return MiniMindConfig(**self.to_config_kwargs())


MOST_EPOCHS = 100_000
"""The ceiling on epochs; a benchmark that trains `max_steps` whatever the data sets this."""
ONE_PROCESS = {"nproc_per_node": 1, "nnodes": 1, "node_rank": 0}
"""A benchmark's runs train in its own process (a flag for more would be recorded, unused)."""


class TrainSettings(_Section):
    """The seed's `Arguments`, spelled as upstream's `train_pretrain.py` flags."""

    stage: Literal[STAGES] = _field(
        "pretrain", "Data", "pretrain on text; sft: fine-tune on conversations (loss on the "
        "replies); lora: the same, training rank-r adapters only")
    data_path: str = _field(
        "builtin:shakespeare", "Data",
        "JSONL of {\"text\": ...} lines (sft/lora: {\"conversations\": [...]}), or a builtin: set")
    val_data_path: str = _field(
        "", "Data", "held-out JSONL for validation loss (empty: none)")
    tokenizer_path: str = _field(
        "", "Data", "Hugging Face tokenizer folder (empty: the bundled one)")
    max_seq_len: int = _field(512, "Data", "tokens per sample", ge=8, le=1 << 20)
    packing: bool = _field(
        False, "Data", "pack documents into full windows from a cached uint16 token file")
    skip_bad_lines: bool = _field(
        False, "Data", "count and skip malformed JSONL lines instead of stopping")
    num_workers: int = _field(1, "Data", "data loader worker processes", ge=0, le=64)

    # The ceilings keep a typo from planning an absurd run: 10^20 epochs passed every check,
    # and the dashboard counted 698,999,999,999,999,999,993,010 steps.
    epochs: int = _field(1, "Optimisation", "passes over the data", ge=1, le=MOST_EPOCHS)
    max_steps: int = _field(0, "Optimisation", "stop after this many optimizer steps (0: no limit)",
                            ge=0, le=10**9)
    batch_size: int = _field(32, "Optimisation", "samples per micro-batch", ge=1, le=1 << 20)
    accumulation_steps: int = _field(8, "Optimisation", "micro-batches per optimizer step",
                                     ge=1, le=1 << 20)
    learning_rate: float = _field(5e-4, "Optimisation", "peak learning rate", gt=0, le=1)
    lr_schedule: Literal["cosine", "minimind2", "wsd"] = _field(
        "cosine", "Optimisation",
        "cosine: lr*(0.1+0.45*(1+cos)); minimind2: the seed's lr/10+0.5*lr*(1+cos); "
        "wsd: warmup, stable at lr, then linear decay to lr/10")
    warmup_iters: int = _field(0, "Optimisation", "linear warmup steps", ge=0, le=10**9)
    decay_fraction: float = _field(
        0.2, "Optimisation", "wsd: the share of the steps, at the end, spent decaying", gt=0, le=1)
    optimizer: Literal["adamw", "muon"] = _field(
        "adamw", "Optimisation", "adamw: upstream's; muon: torch.optim.Muon for the blocks' "
                                 "matrices, AdamW for embedding, norms and routers")
    muon_lr: float = _field(
        0.0, "Optimisation", "muon: its own peak lr with Keller Jordan's scaling (0.02 in "
                             "modded-nanogpt); 0: AdamW's lr, Muon's step matched to AdamW's "
                             "RMS (Moonshot)", ge=0, le=1)
    weight_decay: float = _field(0.01, "Optimisation", "AdamW (and Muon) weight decay", ge=0, le=1)
    grad_clip: float = _field(1.0, "Optimisation", "clip the gradient norm to this (0: off)", ge=0)

    device: str = _field(
        "auto", "Runtime", "auto, cpu, cuda or cuda:N", pattern=DEVICE_PATTERN)
    dtype: Literal["bfloat16", "float16", "float32"] = _field(
        "bfloat16", "Runtime", "autocast precision (float16 adds a GradScaler)")
    use_compile: bool = _field(False, "Runtime", "torch.compile the model")
    grad_checkpointing: bool = _field(
        False, "Runtime", "recompute activations in backward to save memory")
    seed: int = _field(42, "Runtime", "seed for init, shuffling and dropout", ge=0, le=2**32 - 1)
    nproc_per_node: int = _field(
        1, "Runtime", "processes (GPUs) per node; more than 1 launches torchrun", ge=1, le=64)
    nnodes: int = _field(1, "Runtime", "machines in a multi-node torchrun job", ge=1, le=1024)
    node_rank: int = _field(0, "Runtime", "this machine's rank in a multi-node job", ge=0)
    master_addr: str = _field(
        "127.0.0.1", "Runtime", "address of node 0 for a multi-node job",
        pattern=r"^[A-Za-z0-9_.:\-]+$")
    master_port: int = _field(29500, "Runtime", "port on node 0 for a multi-node job",
                              ge=1, le=65535)

    out_dir: str = _field("out", "Output", "folder for weights, resume state and metrics")
    save_weight: str = _field(
        "pretrain", "Output", "weights file prefix: <out_dir>/<save_weight>_<hidden>[_moe].pth",
        pattern=r"^[A-Za-z0-9_.-]+$", max_length=NAME_PREFIX_MAX)
    log_interval: int = _field(100, "Output", "optimizer steps between log lines", ge=1)
    save_interval: int = _field(
        100, "Output", "optimizer steps between checkpoints (0: only at the end)", ge=0)
    eval_interval: int = _field(
        0, "Output", "optimizer steps between validation passes (0: only at the end)", ge=0)
    eval_batches: int = _field(20, "Output", "micro-batches per validation pass", ge=1,
                               le=1 << 20)
    from_weight: str = _field("", "Output", "initialise from this weights file (ours or upstream's)")
    lora_name: str = _field(
        "lora", "Output", "lora stage: adapter file <out_dir>/lora/<lora_name>_<hidden>.pth",
        pattern=r"^[A-Za-z0-9_.-]+$", max_length=NAME_PREFIX_MAX)
    lora_rank: int = _field(8, "Optimisation", "lora stage: rank of each adapter", ge=1, le=1024)
    from_resume: bool = _field(False, "Output", "continue the run saved in out_dir")
    overwrite: bool = _field(
        False, "Output", "replace a finished or stopped run in out_dir (its files are deleted)")
    allow_data_change: bool = _field(
        False, "Output", "resume even if the training data changed since the checkpoint")

    sample_prompts: TextList = _field(
        list(DEFAULT_SAMPLE_PROMPTS), "Insight",
        "prompts the model continues during training (one per line; empty: no samples); "
        "sft/lora: user turns it answers")
    sample_tokens: int = _field(48, "Insight", "tokens generated per sample", ge=1, le=1024)
    sample_interval: int = _field(
        0, "Insight", "optimizer steps between samples (0: at each evaluation); also at the end",
        ge=0)
    report_to: Annotated[list[Literal[TRACKERS]], BeforeValidator(_words),
                         AfterValidator(_tracker_set)] = _field(
        [], "Insight", "also log to these trackers: " + ", ".join(TRACKERS))


CONSENT_FIELDS = ("from_resume", "overwrite", "allow_data_change")
"""The train fields that answer for one launch (continue the run in out_dir, replace it, take
changed data): a run's config.toml and a saved preset leave them out, so a file reused as a
preset never gives the user's consent for them."""


def without_consent(train: dict[str, Any]) -> dict[str, Any]:
    """A train table without the `CONSENT_FIELDS`."""
    return {k: v for k, v in train.items() if k not in CONSENT_FIELDS}


SECTIONS: dict[str, type[BaseModel]] = {"model": ModelSettings, "train": TrainSettings}
"""The tables of a preset / config.toml and the sections of the settings, in order."""


def epoch_steps(n_samples: int, batch_size: int, accumulation_steps: int, world_size: int = 1
                ) -> int:
    """Optimizer steps in an epoch of `n_samples`: each of `world_size` processes takes an equal
    share (the remainder is left out), in micro-batches of `batch_size` (the last may be short),
    `accumulation_steps` to a step (the last step of an epoch may take fewer)."""
    batches = math.ceil(n_samples // world_size / batch_size)
    return math.ceil(batches / accumulation_steps)


def planned_steps(steps_per_epoch: int, epochs: int, max_steps: int) -> int:
    """The steps a run trains: its epochs, or max_steps (0: none) where that ends it sooner."""
    return min(steps_per_epoch * epochs, max_steps) if max_steps else steps_per_epoch * epochs


def with_stage_defaults(train: dict[str, Any]) -> dict[str, Any]:
    """A raw train table with what its stage changes (`STAGE_DEFAULTS`) filled in where the
    table leaves it out."""
    stage = train.get("stage")
    return {**(STAGE_DEFAULTS.get(stage, {}) if isinstance(stage, str) else {}), **train}


def stage_default(stage: str, name: str) -> Any:
    """A train field's default when the run's stage is `stage`."""
    return STAGE_DEFAULTS.get(stage, {}).get(name, TrainSettings.model_fields[name].default)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the settings: `loc` is "train.batch_size" style ("" for the whole);
    a rule that ties several fields together also lists the others in `related`."""

    loc: str
    message: str
    related: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.loc}: {self.text}" if self.loc else self.message

    @property
    def text(self) -> str:
        """The message without a leading repeat of the field's own name, for "loc: text"."""
        name = self.loc.rpartition(".")[2]
        return self.message.removeprefix(f"{name} ") if name else self.message


class SettingsError(ValueError):
    """Invalid settings; carries every problem so a UI can show each beside its field."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class RunSettings(BaseModel):
    """Build it with `parse` (or `from_toml`): constructing it directly skips the rules that tie
    fields together."""

    model_config = ConfigDict(extra="forbid")

    model: ModelSettings = Field(default_factory=ModelSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)

    # -- construction -------------------------------------------------------------------
    @classmethod
    def parse(cls, data: dict[str, Any], changed: Collection[str] = (),
              altered: Collection[str] | None = None) -> RunSettings:
        """Validate nested `{"model": {...}, "train": {...}}` data or raise SettingsError with
        every problem. `changed` ("model.hidden_size", ...) are the fields the user set: a rule
        broken by several fields is reported against the one they changed; `altered`, those
        set to another value than the preset's (`settings_rules.validate`)."""
        from minimind.settings_rules import validate  # the rules need these models first

        settings, problems = validate(data, changed, altered)
        if problems:
            raise SettingsError(problems)
        return settings

    @classmethod
    def from_toml(cls, path: str | Path, overrides: dict[str, dict[str, Any]] | None = None
                  ) -> RunSettings:
        from minimind.settings_file import read_toml
        from minimind.settings_moves import merge

        return cls.parse(merge(read_toml(path), overrides or {}))

    def to_toml_dict(self) -> dict[str, dict[str, Any]]:
        """Plain data for a preset file; TOML has no null, so "family default" fields are left out."""
        return {section: {k: v for k, v in values.items() if v is not None}
                for section, values in self.model_dump(mode="json").items()}

    def save_toml(self, path: str | Path, *, for_one_launch: bool = False) -> Path:
        """The settings as a preset file, without the `CONSENT_FIELDS` unless the file is
        `for_one_launch` (what a launcher hands its child)."""
        data = self.to_toml_dict()
        if not for_one_launch:
            data["train"] = without_consent(data["train"])
        return atomic_write_bytes(Path(path), tomli_w.dumps(data).encode())

    # -- derived values -------------------------------------------------------------------
    def world_size(self) -> int:
        """The processes the run trains in: nproc_per_node on each of nnodes machines."""
        return self.train.nproc_per_node * self.train.nnodes

    def tokens_per_step(self, world_size: int | None = None) -> int:
        """Positions an optimizer step computes over every process (`world_size`: the processes
        the run was launched with; by default, those the settings ask for)."""
        t = self.train
        processes = self.world_size() if world_size is None else world_size
        return t.batch_size * t.max_seq_len * t.accumulation_steps * processes

    def weights_name(self) -> str:
        """The weights file, relative to out_dir; a lora run's holds only its adapters."""
        if self.train.stage == "lora":
            return lora_weights_name(self.train.lora_name, self.model.hidden_size)
        return weights_name(self.train.save_weight, self.model.hidden_size, self.model.use_moe)


def field_type(model_cls: type[BaseModel], name: str) -> TypeAdapter[Any]:
    """How one field of a settings section parses a raw value, as the section does (its type,
    its parsers and the section's config), alone."""
    info = model_cls.model_fields[name]
    parsers = [m for m in info.metadata if isinstance(m, (BeforeValidator, AfterValidator))]
    annotation = Annotated[(info.annotation, *parsers)] if parsers else info.annotation
    return TypeAdapter(annotation, config={k: v for k, v in model_cls.model_config.items()
                                           if k != "extra"})
