"""How runs follow each other: an sft run starts from a finished pretraining run's weights, a
lora run from a finished pretraining or sft run's (upstream's pretrain -> full_sft -> lora).

`starting_points` lists the runs a stage can start from, found as the runs list finds them;
`from_weight_problem` is the rule that a run's weights only start a model of the shape they
were trained as, which the form shows beside an sft/lora run's from_weight (and a start
refuses) before a single tensor is read; the engine's load still checks every file's tensors
(and is all a pretraining run's from_weight meets, as before). Light on purpose (no torch): the
form checks it on every change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minimind.family import family_defaults
from minimind.run_files import CONFIG_FILE, resume_name
from minimind.runs import RunSummary, find_runs
from minimind.settings import ModelSettings, RunSettings, SettingsError
from minimind.settings_file import read_toml

STARTS_FROM = {"pretrain": (), "sft": ("pretrain",), "lora": ("pretrain", "sft")}
"""The stages whose finished runs each stage starts from."""


@dataclass(frozen=True)
class StartingPoint:
    run: RunSummary
    weights: Path
    mismatch: str
    """"" when the run's model has the shape asked for, else what differs."""


def starting_points(root: Path, stage: str, model: ModelSettings) -> list[StartingPoint]:
    """The completed runs under `root` (as `find_runs` finds them) whose weights a `stage` run
    starts from, each with how its model's shape differs from `model` ("" when it does not)."""
    points = []
    for run in find_runs(root) if root.is_dir() else []:
        if run.state != "completed" or run.stage not in STARTS_FROM.get(stage, ()):
            continue
        settings = _recorded(run.path / CONFIG_FILE)
        weights = run.path / settings.weights_name() if settings else None
        if settings and weights.is_file():
            points.append(StartingPoint(run, weights, layout_mismatch(settings.model, model)))
    return points


def from_weight_problem(from_weight: str, model: ModelSettings) -> str | None:
    """Why the weights `from_weight` names cannot start `model`, when a run folder recorded how
    they were trained (it is that run's folder, or its own weights or resume file); None
    otherwise: a file without a record is checked by its tensors when the run starts."""
    path = Path(from_weight).expanduser()
    toml = (path if path.is_dir() else path.parent) / CONFIG_FILE
    settings = _recorded(toml) if toml.is_file() else None
    if settings is None or not (path.is_dir() or path.is_file()
                                and path.name in _saved_names(settings)):
        return None
    if mismatch := layout_mismatch(settings.model, model):
        return f"{from_weight} was trained as another shape ({toml}): {mismatch}"
    return None


def layout_mismatch(trained: ModelSettings, wanted: ModelSettings) -> str:
    """"hidden_size 128 there, 64 here; ..." for every tensor-shaping field (family defaults
    resolved) that differs; "" when weights of `trained` load into `wanted`."""
    a, b = _layout(trained), _layout(wanted)
    return "; ".join(f"{name} {a.get(name, '–')} there, {b.get(name, '–')} here"
                     for name in dict.fromkeys([*a, *b]) if a.get(name) != b.get(name))


def _layout(m: ModelSettings) -> dict[str, Any]:
    """What decides the names and shapes of a model's tensors and its head split. Tied
    embeddings are left out: a tied file loads into an untied model too."""
    family = family_defaults(m.family, m.hidden_size)
    ffn = m.intermediate_size or family["intermediate_size"]
    layout = {"hidden_size": m.hidden_size, "num_hidden_layers": m.num_hidden_layers,
              "num_attention_heads": m.num_attention_heads,
              "num_key_value_heads": m.num_key_value_heads or family["num_key_value_heads"],
              "intermediate_size": ffn, "vocab_size": m.vocab_size,
              "qk_norm": family["qk_norm"] if m.qk_norm is None else m.qk_norm,
              "use_moe": m.use_moe}
    if m.use_moe:
        layout |= {"n_routed_experts": m.n_routed_experts,
                   "n_shared_experts": (family["n_shared_experts"] if m.n_shared_experts is None
                                        else m.n_shared_experts),
                   "moe_intermediate_size": m.moe_intermediate_size or ffn}
    return layout


def _saved_names(settings: RunSettings) -> tuple[str, str]:
    name = Path(settings.weights_name()).name
    return name, resume_name(name)


def _recorded(toml: Path) -> RunSettings | None:
    """A run's settings as its config.toml records them; None when it is not readable."""
    try:
        return RunSettings.parse(read_toml(toml))
    except SettingsError:
        return None
