"""Numbers derived from the settings: model size, upstream fit, tokens, steps, memory."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from minimind.settings import RunSettings
from minimind.event_text import format_count
from minimind_tui.readouts import (DataSummary, ModelSummary, format_bytes,
                                   memory_estimate, steps_per_epoch)


class ReadoutsPanel(Static):
    """Redrawn on every valid change; `-stale` dims it while the settings are invalid."""

    def show(self, settings: RunSettings, model: ModelSummary | str | None,
             data: DataSummary | str | None) -> None:
        """`model` and `data` are summaries, error messages, or None while being computed."""
        t = settings.train
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column()
        if not isinstance(model, ModelSummary):
            grid.add_row("parameters", Text(model or "computing…", style="dim"))
        else:
            params = format_count(model.parameters)
            if model.active_parameters != model.parameters:
                params += f" ({format_count(model.active_parameters)} active)"
            grid.add_row("parameters", params)
            grid.add_row("upstream fit", Text(
                f"{model.family_match} checkpoints" if model.family_match
                else "none (custom shape)", style="" if model.family_match else "dim"))
        grid.add_row("tokens/step", f"{settings.tokens_per_step():,} "
                     f"({t.batch_size}×{t.max_seq_len}×{t.accumulation_steps})")
        if isinstance(data, DataSummary):
            steps, basis = steps_per_epoch(settings, data)
            total = steps * t.epochs
            capped = t.max_steps and t.max_steps < total
            grid.add_row("steps/epoch", f"≈ {steps:,}")
            grid.add_row("", Text(basis, style="dim"))
            grid.add_row("total steps", f"{t.max_steps:,} (max_steps)" if capped
                         else f"≈ {total:,}")
        else:
            grid.add_row("steps/epoch", Text(data or "reading data…", style="dim"))
        if isinstance(model, ModelSummary):
            memory = memory_estimate(settings, model.parameters)
            where = "GPU memory" if t.device.startswith("cuda") else "train memory"
            grid.add_row(where, f"≈ {format_bytes(memory.total)}")
            grid.add_row("", Text(f"states {format_bytes(memory.states)}, activations "
                                  f"{format_bytes(memory.activations)}, logits "
                                  f"{format_bytes(memory.logits)}", style="dim"))
        self.update(grid)
