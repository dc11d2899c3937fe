"""Pick the run an sft or lora run starts from: the finished runs it can start from, one row
each; Enter puts the run's weights in from_weight, Escape leaves it as it was.

A run whose model has another shape than the form's is listed too, marked, with what differs
under the table: picking it is allowed, and the form then says why beside from_weight.
"""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from minimind.chain import STARTS_FROM, StartingPoint

MISMATCH_MARK = "✗"


class StartFromScreen(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel", id="start_from_cancel")]

    def __init__(self, stage: str, root: Path, points: list[StartingPoint]) -> None:
        super().__init__(classes="dialog-screen")
        self.stage, self.root, self.points = stage, root, points

    def compose(self) -> ComposeResult:
        kinds = " or ".join(STARTS_FROM[self.stage])
        with Vertical(classes="dialog -wide", id="start-from") as dialog:
            dialog.border_title = f"Start {self.stage} from"
            if not self.points:
                yield Static(f"No finished {kinds} run under {self.root}: train one first, or "
                             "type a weights file into from_weight (esc closes).", markup=False)
                return
            yield Static(f"Finished {kinds} runs under {self.root}; enter puts the run's "
                         "weights in from_weight, esc cancels.", classes="dialog-note",
                         markup=False)
            yield DataTable(id="start-from-table", cursor_type="row", zebra_stripes=True)
            yield Static("", id="start-from-why", classes="dialog-note", markup=False)

    def on_mount(self) -> None:
        if not self.points:
            return
        table = self.query_one(DataTable)
        table.add_column(" ", key="mark", width=1)
        table.add_columns("run", "stage", "steps", "val loss", "shape")
        for point in self.points:
            cells = point.run.cells()
            table.add_row(MISMATCH_MARK if point.mismatch else "", cells["name"],
                          cells["stage"], cells["step"], cells["val_loss"], cells["shape"],
                          key=str(point.weights))
        table.focus()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        point = self.points[event.cursor_row]
        why = self.query_one("#start-from-why", Static)
        why.set_class(bool(point.mismatch), "-error")
        why.update(f"{MISMATCH_MARK} another shape than the form's model: {point.mismatch}"
                   if point.mismatch else f"{point.weights}")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.dismiss(str(self.points[event.cursor_row].weights))
