"""Numbers derived from the settings: model size, upstream fit, tokens, steps, supervised
tokens (sft/lora), memory."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from minimind.device import DeviceError, resolve_device
from minimind.event_text import per_step_label
from minimind.memory_estimate import MemoryEstimate, memory_estimate, shortfall
from minimind.units import format_bytes, format_count, format_duration
from minimind.settings import Problem, RunSettings
from minimind_tui.form.readouts import (MEMORY_FIELDS, MODEL_FIELDS, STEPS_FIELDS, TOKENS_FIELDS,
                                   DataSummary, ModelSummary, blocking_problem, steps_per_epoch,
                                   supervision, tokens_per_epoch)


class ReadoutsPanel(Static):
    """Redrawn on every change. Each figure is shown while the fields it is computed from are
    valid; otherwise its row names the field to fix (the Problems panel says why)."""

    def show(self, settings: RunSettings, problems: list[Problem],
             model: ModelSummary | str | None, data: DataSummary | str | None,
             tokens_per_sec: float | None = None, start_step: int = 0,
             inspect_key: str = "") -> None:
        """`settings` may hold defaults for invalid fields (`problems` says which); `model`
        and `data` are summaries, error messages, or None while being computed;
        `tokens_per_sec`, the last run's speed, turns inspected data into an ETA for the steps
        from `start_step` (a resume's checkpoint) on; `inspect_key` is the key that inspects
        the data, for a readout that needs it."""
        t = settings.train
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column()
        if not _blocked(grid, "parameters", problems, MODEL_FIELDS):
            _model_rows(grid, model, t.lora_rank if t.stage == "lora" else 0)
        per_step = per_step_label(t.stage, t.packing)
        if not _blocked(grid, per_step, problems, TOKENS_FIELDS):
            processes = settings.world_size()
            grid.add_row(per_step, f"{settings.tokens_per_step():,} "
                         f"({t.batch_size}×{t.max_seq_len}×{t.accumulation_steps}"
                         f"{f'×{processes} processes' if processes > 1 else ''})")
        if not _blocked(grid, "steps/epoch", problems, STEPS_FIELDS):
            _data_rows(grid, settings, data, tokens_per_sec, start_step, inspect_key)
        where = "GPU memory" if t.device.startswith("cuda") else "train memory"
        if not _blocked(grid, where, problems, MEMORY_FIELDS) and isinstance(model, ModelSummary):
            memory = memory_estimate(settings, model.parameters)
            grid.add_row(where, self._against_the_device(memory, settings))
            grid.add_row("", Text(f"states {format_bytes(memory.states)}, activations "
                                  f"{format_bytes(memory.activations)}, logits "
                                  f"{format_bytes(memory.logits)}", style="dim"))
        self.update(grid)

    def _against_the_device(self, need: MemoryEstimate, settings: RunSettings) -> Text:
        """"≈ 1.2 GiB", and what the device holds when that is less (the engine warns too)."""
        text = Text(f"≈ {format_bytes(need.total)}"
                    f"{' per process' if settings.world_size() > 1 else ''}")
        try:
            device = resolve_device(settings.train.device)
        except DeviceError:  # the field says why
            return text
        if (have := shortfall(settings, need, device)) is not None:
            text.append(f": more than the {format_bytes(have)} "
                        f"{'this machine' if device.type == 'cpu' else device} holds",
                        style=f"bold {self.app.theme_variables['warning']}")
        return text


def _blocked(grid: Table, label: str, problems: list[Problem], fields: tuple[str, ...]) -> bool:
    """Whether a problem stops the readout; if so its row says which field to fix."""
    problem = blocking_problem(problems, fields)
    if problem is None:
        return False
    name = problem.loc.rpartition(".")[2] or "the settings"
    grid.add_row(label, Text(f"fix {name} first", style="dim"))
    return True


def _model_rows(grid: Table, model: ModelSummary | str | None, lora_rank: int) -> None:
    """The model's parameters; a lora run's (`lora_rank` > 0) adapters apart, the only ones it
    trains."""
    if not isinstance(model, ModelSummary):
        grid.add_row("parameters", Text(model or "computing…", style="dim"))
        return
    params = format_count(model.parameters)
    if model.active_parameters != model.parameters:
        params += f" ({format_count(model.active_parameters)} active)"
    grid.add_row("parameters", params)
    if lora_rank:
        adapters = lora_rank * model.adapter_widths
        grid.add_row("trained", f"{format_count(adapters)} in rank-{lora_rank} adapters "
                     f"({adapters / (model.parameters + adapters):.2%})")
    grid.add_row("upstream fit", Text(
        # The layout only: upstream's released checkpoints fit at their own sizes alone.
        f"{model.family_match} layout, at this size" if model.family_match
        else "none (custom shape)",
        style="" if model.family_match else "dim"))


def _data_rows(grid: Table, settings: RunSettings, data: DataSummary | str | None,
               tokens_per_sec: float | None, start_step: int, inspect_key: str) -> None:
    if not isinstance(data, DataSummary):
        grid.add_row("steps/epoch", Text(data or "reading data…", style="dim"))
        return
    t = settings.train
    steps, basis = steps_per_epoch(settings, data)
    total = steps * t.epochs
    capped = t.max_steps and t.max_steps < total
    exact = "" if data.inspection else "≈ "
    grid.add_row("steps/epoch", f"{exact}{steps:,}")
    grid.add_row("", Text(basis, style="dim"))
    grid.add_row("total steps", f"{t.max_steps:,} (max_steps)" if capped else f"{exact}{total:,}")
    if t.stage != "pretrain":
        _supervision_rows(grid, settings, data, inspect_key)
    epoch_tokens = tokens_per_epoch(settings, data)
    if epoch_tokens is None:
        return
    # What the loss counts: every token for pretraining, the replies for sft/lora.
    grid.add_row("tokens/epoch" if t.stage == "pretrain" else "supervised/epoch",
                 format_count(epoch_tokens))
    planned = t.max_steps if capped else total
    if tokens_per_sec and start_step < planned:
        # A resume trains the steps after its checkpoint only.
        run_tokens = epoch_tokens * t.epochs * (planned - start_step) / total
        grid.add_row("ETA", f"≈ {format_duration(run_tokens / tokens_per_sec)}")
        since = f", from step {start_step:,}" if start_step else ""
        grid.add_row("", Text(f"at the last run's {format_count(tokens_per_sec)} tokens/s"
                              f"{since}", style="dim"))


def _supervision_rows(grid: Table, settings: RunSettings, data: DataSummary,
                      inspect_key: str) -> None:
    """The tokens an sft/lora step trains on: the replies only, so far fewer than its positions."""
    figures = supervision(settings, data)
    if figures is None:
        key = f"{inspect_key} (inspect data)" if inspect_key else "inspect data"
        grid.add_row("supervised/step", Text(f"{key} counts them at max_seq_len "
                                             f"{settings.train.max_seq_len}", style="dim"))
        return
    grid.add_row("supervised/step", f"≈ {figures.per_step:,.0f}")
    grid.add_row("trained share", f"{figures.share:.1%} of the tokens")
    grid.add_row("", Text(f"{figures.position_share:.1%} of the positions, padding included",
                          style="dim"))
    grid.add_row("", Text(f"estimated from {figures.conversations:,} conversations inspected "
                          f"at max_seq_len {settings.train.max_seq_len}", style="dim"))
