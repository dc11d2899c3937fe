"""The rules of `minimind.settings`: per-field messages, the rules that tie fields together, and
the typing of raw values (command-line flags) before any rule runs.

Every rule here is pure: it looks at the settings only, never at the machine, so a config.toml
written on a GPU server validates the same on a laptop. What the machine must provide (devices,
trackers, files) is checked once, at start, by `minimind.environment`.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import Any

from pydantic import BaseModel, ValidationError

from minimind.family import family_defaults, shape_problems
from minimind.settings import (LORA_FIELDS, MOE_FIELDS, SECTIONS, ModelSettings, Problem,
                               RunSettings, TrainSettings, field_type, with_stage_defaults)


def validate(data: dict[str, Any], changed: Collection[str] = (),
             altered: Collection[str] | None = None) -> tuple[RunSettings, list[Problem]]:
    """Settings and every problem in `data`, each rule run once: per-field errors, then the
    cross-field rules whose fields are all valid (so an invalid field does not hide an unrelated
    rule, and does not trigger a false one). The settings are only meaningful without problems.
    `changed`: the fields the user set, which a rule over several fields is reported against;
    `altered` (by default `changed`): those set to another value than the preset's, which are
    refused where they do nothing (`idle_given`), as the form marks them."""
    problems: list[Problem] = []
    sections: dict[str, BaseModel] = {}
    for name, model_cls in SECTIONS.items():
        raw = data.get(name, {})
        if not isinstance(raw, dict):
            problems.append(Problem(name, f"must be a table of settings, not {raw!r}"))
            raw = {}
        if name == "train":
            raw = with_stage_defaults(raw)
        try:
            sections[name] = model_cls.model_validate(raw)
        except ValidationError as e:
            errors = [_field_problem(name, err) for err in e.errors()]
            problems += errors
            bad = {p.loc.split(".")[1] for p in errors if "." in p.loc}
            # Defaults stand in for the invalid fields, so the other rules can still run.
            sections[name] = model_cls.model_validate(
                {k: v for k, v in raw.items() if k not in bad and k in model_cls.model_fields})
    settings = RunSettings.model_construct(**sections)
    invalid = {p.loc for p in problems}
    idle = idle_given(settings, changed if altered is None else altered)
    for problem in [*cross_field_problems(settings), *idle]:
        involved = (problem.loc, *problem.related)
        if invalid.isdisjoint(involved):
            problems.append(_blame_changed(problem, changed))
    return settings, problems


# Fields that act only where another setting lets them: (field, whether it acts, when it does).
# A preset may carry them idle (tiny's eval_batches under --val_data_path ""); a value the user
# gives there would be recorded and never used (`idle_given`).
ACTS_ONLY = (
    ("train.eval_batches", lambda t: bool(t.val_data_path.strip()), "val_data_path is set"),
    ("train.sample_tokens", lambda t: bool(t.sample_prompts), "there are sample_prompts"),
    ("train.sample_interval", lambda t: bool(t.sample_prompts), "there are sample_prompts"),
    ("train.allow_data_change", lambda t: t.from_resume, "from_resume is on"),
    ("train.node_rank", lambda t: t.nnodes > 1, "nnodes is more than 1"),
    ("train.master_addr", lambda t: t.nnodes > 1, "nnodes is more than 1"),
    ("train.master_port", lambda t: t.nnodes > 1, "nnodes is more than 1"),
)


def idle_given(s: RunSettings, altered: Collection[str]) -> list[Problem]:
    """The fields the user set to a value of their own (`altered`) where they do nothing:
    `--sample_tokens 9` without prompts, `--allow_data_change 1` without `--from_resume 1`
    (most likely forgotten) ran as if not given, and recorded the value."""
    out = []
    for loc, acts, when in ACTS_ONLY:
        if loc in altered and not acts(s.train):
            out.append(Problem(loc, f"only applies when {when}"))
    return out


def type_values(section: str, values: dict[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
    """Raw values (a flag's text: "0", "1e-3", ["wandb"]) as the types of their fields, without
    the fields' limits: `--batch_size 0` types to 0, which the rules then reject, so a form can
    show it beside its field; `--use_moe maybe` has no value to show and is a problem here."""
    model_cls = SECTIONS[section]
    typed: dict[str, Any] = {}
    problems: list[Problem] = []
    for name, raw in values.items():
        try:
            typed[name] = field_type(model_cls, name).validate_python(raw)
        except ValidationError as e:
            problems += [_field_problem(section, {**err, "loc": (name, *err["loc"])})
                         for err in e.errors()]
    return typed, problems


def _field_problem(section: str, err: dict[str, Any]) -> Problem:
    field, *within = map(str, err["loc"])
    message = _short_message(err)
    if within and within[0].isdigit():  # one item of a list setting
        message = f"item {int(within[0]) + 1}: {message}"
    return Problem(f"{section}.{field}", message)


def _blame_changed(problem: Problem, changed: Collection[str]) -> Problem:
    if not problem.related or problem.loc in changed:
        return problem
    for i, loc in enumerate(problem.related):
        if loc in changed:
            others = (problem.loc, *problem.related[:i], *problem.related[i + 1:])
            # The message spoke of its own field ("must be ≤ max_position_embeddings (64)"):
            # beside another one it names its subject, or it would read as about that field.
            # A message that starts with a subject of its own (a field, or a derived setting
            # such as head_dim: names have underscores; predicates do not) keeps it.
            subject = problem.loc.split(".")[-1]
            first = problem.message.split(" ", 1)[0]
            named = "_" in first or first in {f.split(".")[-1] for f in (loc, *others)}
            return Problem(loc, problem.message if named else f"{subject} {problem.message}",
                           others)
    return problem


def _short_message(err: dict[str, Any]) -> str:
    ctx = err.get("ctx", {})
    kind = err["type"]
    simple = {
        "greater_than_equal": lambda: f"must be ≥ {ctx['ge']}",
        "greater_than": lambda: f"must be > {ctx['gt']}",
        "less_than_equal": lambda: f"must be ≤ {ctx['le']}",
        "less_than": lambda: f"must be < {ctx['lt']}",
        "int_parsing": lambda: "must be a whole number",
        "int_parsing_size": lambda: "is far too large",
        "int_from_float": lambda: "must be a whole number",
        "int_type": lambda: "must be a whole number",
        "float_parsing": lambda: "must be a number",
        "float_type": lambda: "must be a number",
        "finite_number": lambda: "must be a finite number",
        "bool_parsing": lambda: "must be true or false (1 or 0)",
        "bool_type": lambda: "must be true or false (1 or 0)",
        "literal_error": lambda: f"must be one of {ctx['expected']}",
        "string_pattern_mismatch": lambda: f"has an invalid form (expected {ctx['pattern']})",
        "extra_forbidden": lambda: "unknown setting",
        "string_type": lambda: "must be text",
        # A file name in another encoding reaches Python with its bytes as surrogates.
        "string_unicode": lambda: (
            f"{os.fsencode(str(err.get('input'))).decode('utf-8', 'backslashreplace')}: not "
            "UTF-8 text (a name in another encoding?): rename it, or name it in UTF-8"),
        "model_type": lambda: "must be a table of settings",
    }
    if kind in ("int_parsing", "float_parsing") and not str(err.get("input")).strip():
        return "is empty: " + ("enter a whole number" if kind == "int_parsing" else
                               "enter a number")
    return simple[kind]() if kind in simple else err["msg"]


def cross_field_problems(s: RunSettings) -> list[Problem]:
    """Rules that involve more than one field, each reported against the field to change."""
    m, t = s.model, s.train
    out: list[Problem] = []

    def bad(loc: str, message: str, *related: str) -> None:
        out.append(Problem(loc, message, related))

    if not t.out_dir.strip():  # it would scatter the run's files over the current folder
        bad("train.out_dir", "is empty: give a folder (. for the current one)")
    family = family_defaults(m.family, m.hidden_size)
    for shape in shape_problems(
            m.hidden_size, m.num_attention_heads,
            m.num_key_value_heads or family["num_key_value_heads"],
            n_routed_experts=m.n_routed_experts,
            num_experts_per_tok=m.num_experts_per_tok or family["num_experts_per_tok"]):
        loc, *related = (f"model.{name}" for name in shape.fields)
        bad(loc, shape.message, *related)
    if not m.use_moe:
        defaults = ModelSettings()
        for name in MOE_FIELDS:
            if getattr(m, name) != getattr(defaults, name):
                bad(f"model.{name}", "only applies when use_moe is on", "model.use_moe")
    if t.max_seq_len > m.max_position_embeddings:
        bad("train.max_seq_len",
            f"must be ≤ max_position_embeddings ({m.max_position_embeddings})",
            "model.max_position_embeddings")
    if t.packing and t.stage != "pretrain":
        bad("train.packing", f"is for pretraining; {t.stage} pads each conversation (packing "
                             "would let conversations attend to each other)", "train.stage")
    if t.packing and m.vocab_size > 65535:
        bad("train.packing", "needs vocab_size ≤ 65535 (tokens are stored as uint16)",
            "model.vocab_size")
    if t.stage == "lora" and not t.from_weight.strip():  # adapters on a frozen random model
        bad("train.from_weight", "is required for lora: the weights (an sft or pretrain run's) "
                                 "the adapters train on, frozen", "train.stage")
    if t.stage != "lora":  # set for another stage, they would be recorded and never used
        for name in LORA_FIELDS:
            if getattr(t, name) != TrainSettings.model_fields[name].default:
                bad(f"train.{name}", "only applies when stage is lora", "train.stage")
    if t.stage == "lora" and t.lora_rank > m.hidden_size:  # the adapters are hidden x hidden
        bad("train.lora_rank", f"must be ≤ hidden_size ({m.hidden_size}): a higher rank holds "
                               "more than the layer it adapts, and adds nothing",
            "model.hidden_size")
    if t.overwrite and t.from_resume:  # one continues the run, the other deletes it
        bad("train.overwrite", "is on, and so is from_resume: resume continues the run in "
                               "out_dir, overwrite replaces it; turn one off", "train.from_resume")
    if t.node_rank >= t.nnodes:  # torchrun would wait for a master that never comes
        bad("train.node_rank", f"must be < nnodes ({t.nnodes}): nodes count from 0",
            "train.nnodes")
    if t.stage == "lora" and t.optimizer == "muon":  # it failed at step 0, AdamW left empty
        bad("train.optimizer", "muon does not apply to lora: Muon orthogonalises whole weight "
                               "matrices, lora trains low-rank adapters; use adamw",
            "train.stage")
    if t.muon_lr and t.optimizer != "muon":
        bad("train.muon_lr", "only applies when optimizer is muon (set it to 0, or optimizer "
                             "to muon)", "train.optimizer")
    if t.lr_schedule != "wsd" and t.decay_fraction != TrainSettings.model_fields[
            "decay_fraction"].default:  # cosine and minimind2 decay over the whole run
        bad("train.decay_fraction", "only applies when lr_schedule is wsd", "train.lr_schedule")
    if not t.data_path.strip():
        bad("train.data_path", "is required")
    if t.eval_interval and not t.val_data_path.strip():
        bad("train.eval_interval", "needs validation data: set val_data_path (or set "
                                   "eval_interval to 0)", "train.val_data_path")
    if t.dtype == "float16" and t.device == "cpu":
        bad("train.dtype", "float16 needs a CUDA device; use bfloat16 or float32 on CPU",
            "train.device")
    return out
