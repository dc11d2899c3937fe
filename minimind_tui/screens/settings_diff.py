"""The settings two runs differ in, side by side (from their config.toml), and what a resume
of either changed (its config.toml holds its last start's settings alone)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static


class SettingsDiffScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,enter,q", "dismiss", "Close", id="diff_close")]

    def __init__(self, a: str, b: str, rows: list[tuple[str, str, str]],
                 resumed: dict[str, list[str]]) -> None:
        """`resumed`: a run's name, and each change a resume of it made (`resumed_changes`)."""
        super().__init__(classes="dialog-screen")
        self.a, self.b, self.rows, self.resumed = a, b, rows, resumed

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog -wide") as dialog:
            dialog.border_title = f"Settings: {self.a} vs {self.b}"
            if self.rows:
                count = ("1 setting differs" if len(self.rows) == 1
                         else f"{len(self.rows)} settings differ")
                yield Static(f"{count} (esc closes)",
                             classes="dialog-note", markup=False)
                yield DataTable(id="diff-table", cursor_type="row", zebra_stripes=True)
            else:
                yield Static("The two runs have the same settings.", markup=False)
            for name, changes in self.resumed.items():
                if changes:
                    yield Static(f"{name} was resumed with other settings (these are its last "
                                 f"start's): {'; '.join(changes)}", classes="dialog-note",
                                 markup=False)

    def on_mount(self) -> None:
        if self.rows:
            table = self.query_one(DataTable)
            table.add_columns("setting", self.a, self.b)
            table.add_rows(self.rows)
