"""The Runs screen: every run under a folder, one row each, sortable; select runs to compare
their curves or diff their settings; delete a run (asked first; never a running one); watch one.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from rich.cells import cell_len
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from minimind.family import FAMILIES
from minimind.run_folder import RunBusy
from minimind.settings import SettingsError
from minimind.runs import (COLUMNS, MISSING_ORIGIN, UNPLACED_ORIGIN, RunSummary, delete_run,
                           find_runs, resumed_changes, settings_diff, sorted_runs, started_from)
from minimind_tui.screens.compare import ComparisonScreen
from minimind_tui.screens.confirm import ConfirmScreen
from minimind_tui.screens.settings_diff import SettingsDiffScreen
from minimind_tui.screens.styled_once import StyledOnce

if TYPE_CHECKING:
    from minimind_tui.app import MiniMindApp

MAX_COMPARED = 8  # one distinct theme colour each
MIN_NAME_WIDTH = 12  # names shorten (in the middle) to fit the table, never below this
ORIGIN_WIDTH = 16
# Narrower than `minimind-tui runs` prints them, so that every column fits 120 terminal
# columns: shorter headings, the time alone when it is today's and without its year when it is
# this year's, the shape without its family (the settings diff names it), the stage and what it
# started from in one column ("sft ← tiny"), and that column only where some run is not a
# pretraining from scratch (it would say "pretrain" on every row), and run names shortened in
# the middle to the room the other columns leave (the summary line shows the highlighted one
# whole).
_HEADINGS = {key: heading for key, heading in {
    **COLUMNS, "val_loss": "val", "best_val_loss": "best",
    "tokens_per_sec": "tok/s", "elapsed": "time"}.items() if key != "origin"}
_NUMERIC = {"step", "loss", "val_loss", "best_val_loss", "tokens", "tokens_per_sec", "elapsed"}
_STATE_COLORS = {"running": "primary", "completed": "success", "stopped": "warning",
                 "failed": "error", "crashed": "error", "unknown": "warning",
                 "unreadable": "error"}


class RunsScreen(StyledOnce, Screen[None]):
    app: MiniMindApp

    BINDINGS = [
        Binding("space", "select", "Select", id="runs_select",
                tooltip="Select the run under the cursor (for compare and diff)"),
        Binding("c", "compare", "Compare", id="runs_compare",
                tooltip="Overlay the selected runs' loss, validation loss and lr curves"),
        Binding("d", "diff", "Diff", id="runs_diff",
                tooltip="The settings two selected runs differ in"),
        Binding("w", "watch", "Watch", id="runs_watch",
                tooltip="Open the run under the cursor on the dashboard, read-only"),
        # Out of the footer, which has no room for them at 80 columns: the summary names them.
        Binding("s", "sort", "Sort", id="runs_sort", show=False,
                tooltip="Sort by the next column (a click on a heading sorts by it)"),
        Binding("S", "reverse_sort", "Reverse", id="runs_reverse", show=False,
                tooltip="Reverse the order (a second click on a heading does too)"),
        Binding("delete,x", "delete", "Delete", id="runs_delete",
                tooltip="Delete the run under the cursor (asks first; not a running run)"),
        Binding("r", "refresh", "Refresh", id="runs_refresh", show=False),
        Binding("escape,f4", "app.pop_screen", "Back", id="runs_back"),
    ]

    def __init__(self, root: Path) -> None:
        super().__init__(id="runs")
        self.root = root
        self.runs: dict[str, RunSummary] = {}
        self.selected: list[str] = []
        """Row keys (run paths) in the order they were selected: the first is "a" in a diff."""
        self.sort_column, self.sort_reverse = "name", False
        self._name_width = MIN_NAME_WIDTH

    def compose(self) -> ComposeResult:
        yield Static(id="runs-summary", markup=False)
        yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#runs-table").border_title = f"Runs under {self.root}"
        self.action_refresh()

    @property
    def table(self) -> DataTable:
        return self.query_one("#runs-table", DataTable)

    def action_refresh(self) -> None:
        runs = find_runs(self.root) if self.root.is_dir() else []
        self.runs = {str(run.path): run for run in runs}
        self.selected = [key for key in self.selected if key in self.runs]
        self._fill()

    def _fill(self) -> None:
        table = self.table
        cursor = self._cursor_key()
        table.clear(columns=True)
        table.add_column(" ", key="mark", width=1)
        for key, heading in self._headings().items():
            arrow = (" ▼" if self.sort_reverse else " ▲") if key == self.sort_column else ""
            table.add_column(Text(heading + arrow, justify="right" if key in _NUMERIC else "left"),
                             key=key)
        ordered = sorted_runs(self.runs.values(), self.sort_column, self.sort_reverse)
        short = {key: self._short_cells(run) for key, run in self.runs.items()}
        self._name_width = self._fitting_name_width(short.values())
        for run in ordered:
            table.add_row(*self._cells(run, short[str(run.path)]), key=str(run.path))
        if cursor in self.runs:
            table.move_cursor(row=table.get_row_index(cursor))
        self._summarise()

    def _headings(self) -> dict[str, str]:
        if any((run.stage, run.origin) != ("pretrain", "scratch") for run in self.runs.values()):
            return _HEADINGS
        return {key: heading for key, heading in _HEADINGS.items() if key != "stage"}

    def _fitting_name_width(self, rows: Iterable[dict[str, str]]) -> int:
        """The longest run name, or the room left once every other column is whole (`rows`:
        every run's `_short_cells`)."""
        rows = list(rows)
        longest = max((cell_len(run.name) for run in self.runs.values()), default=0)
        # Before the first layout, the table will span the screen inside its border.
        width = self.table.scrollable_content_region.width or self.app.size.width - 2
        shown = self._headings()
        # Each column is as wide as its heading (the sorted one with its arrow) or its widest
        # cell, plus a cell padding of 1 on each side; the mark column is 1 + 2.
        others = sum(max([len(heading) + 2 * (key == self.sort_column)]
                         + [cell_len(row[key]) for row in rows]) + 2
                     for key, heading in shown.items() if key != "name")
        room = width - others - 3 - 2
        return max(MIN_NAME_WIDTH, min(longest, room))

    def on_resize(self) -> None:
        rows = [self._short_cells(run) for run in self.runs.values()]
        if self._fitting_name_width(rows) != self._name_width:
            self._fill()

    def _cells(self, run: RunSummary, short: dict[str, str] | None = None) -> list[Text]:
        """The row's cells; `short`: its `_short_cells`, when already made."""
        mark = Text("✓", style="bold") if str(run.path) in self.selected else Text("")
        colors = self.app.theme_variables
        cells = [mark]
        shown = self._headings()
        for key, value in (short or self._short_cells(run)).items():
            if key not in shown:
                continue
            if key == "name":
                value = _shortened(value, self._name_width)
            style = colors.get(_STATE_COLORS.get(run.state, ""), "") if key == "state" else ""
            cells.append(Text(value, style=style, justify="right" if key in _NUMERIC else "left"))
        return cells

    @staticmethod
    def _short_cells(run: RunSummary) -> dict[str, str]:
        cells = run.cells()
        family, _, rest = cells["shape"].partition(" ")
        if family in FAMILIES and rest:
            cells["shape"] = rest
        del cells["origin"]
        if run.origin != "scratch":
            # "*": the origin's weights changed since (the summary line says so in words).
            origin = ("missing" if run.origin.startswith(MISSING_ORIGIN)
                      else "not here" if run.origin.startswith(UNPLACED_ORIGIN)
                      else _shortened(run.origin, ORIGIN_WIDTH) + "*" * run.origin_changed)
            cells["stage"] = f"{run.stage} ← {origin}"
        when, now = time.localtime(run.updated), time.localtime()
        if run.updated and when[:3] == now[:3]:
            cells["updated"] = time.strftime("%H:%M", when)
        elif run.updated and when.tm_year == now.tm_year:
            cells["updated"] = time.strftime("%m-%d %H:%M", when)
        return cells

    def _summarise(self) -> None:
        states: dict[str, int] = {}
        for run in self.runs.values():
            states[run.state] = states.get(run.state, 0) + 1
        counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
        runs = "1 run" if len(self.runs) == 1 else f"{len(self.runs)} runs"
        text = (f"{runs} ({counts}); {len(self.selected)} selected · s sorts, S reverses, "
                "r refreshes" if self.runs else f"no runs under {self.root}")
        run = self._cursor_run()  # what its row shows shortened, whole
        if run is not None and cell_len(run.name) > self._name_width:
            text += f" · {run.name}"
        if run is not None and run.origin.startswith(MISSING_ORIGIN):
            text += f" · its from_weight {run.origin.removeprefix(MISSING_ORIGIN)} is gone"
        elif run is not None and run.origin.startswith(UNPLACED_ORIGIN):
            text += (f" · its from_weight {run.origin.removeprefix(UNPLACED_ORIGIN)} is not "
                     "found from the current folder, and its folder no longer tells where it "
                     "was started (moved or renamed off its out_dir)")
        elif run is not None and run.origin_changed:
            text += (f" · from {run.origin}*, whose weights were saved again or replaced since "
                     "this run started from them")
        elif run is not None and cell_len(run.origin) > ORIGIN_WIDTH:
            text += f" · from {run.origin}"
        self.query_one("#runs-summary", Static).update(text)

    def on_data_table_row_highlighted(self) -> None:
        self._summarise()

    def _cursor_key(self) -> str | None:
        table = self.table
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def _cursor_run(self) -> RunSummary | None:
        key = self._cursor_key()
        return self.runs.get(key) if key else None

    def _selected_runs(self) -> list[RunSummary]:
        return [self.runs[key] for key in self.selected]

    # -- actions ---------------------------------------------------------------------------
    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        column = event.column_key.value
        if column not in COLUMNS:
            return
        self.sort_reverse = not self.sort_reverse if column == self.sort_column else False
        self.sort_column = column
        self._fill()

    def action_sort(self) -> None:
        keys = list(self._headings())
        self.sort_column = keys[(keys.index(self.sort_column) + 1) % len(keys)]
        self.sort_reverse = False
        self._fill()

    def action_reverse_sort(self) -> None:
        self.sort_reverse = not self.sort_reverse
        self._fill()

    def action_select(self) -> None:
        key = self._cursor_key()
        if key is None:
            return
        if key in self.selected:
            self.selected.remove(key)
        else:
            self.selected.append(key)
        self.table.update_cell(key, "mark", self._cells(self.runs[key])[0])
        self._summarise()

    def action_compare(self) -> None:
        runs = self._selected_runs() or [r for r in [self._cursor_run()] if r]
        if not runs:
            return
        if len(runs) > MAX_COMPARED:
            self.notify(f"Compare at most {MAX_COMPARED} runs at once.", severity="warning")
            return
        self.app.push_screen(ComparisonScreen(runs))

    def action_diff(self) -> None:
        runs = self._selected_runs()
        if len(runs) != 2:
            self.notify("Select two runs (space) to see the settings they differ in.",
                        title="Diff", severity="warning")
            return
        try:
            rows = settings_diff(runs[0].path, runs[1].path)
        except SettingsError as e:
            self.notify(str(e), title="Cannot diff", severity="error", markup=False)
            return
        self.app.push_screen(SettingsDiffScreen(
            runs[0].name, runs[1].name, rows,
            {run.name: resumed_changes(run.path) for run in runs}))

    def action_watch(self) -> None:
        run = self._cursor_run()
        if run is not None:
            self.app.pop_screen()
            self.app.watch_folder(run.path)

    def action_delete(self) -> None:
        run = self._cursor_run()
        if run is None:
            return
        if run.state == "running":
            self.notify(f"{run.name} is running; stop it before deleting it.",
                        title="Cannot delete", severity="error", markup=False)
            return
        lost = started_from(run.path)
        self.app.push_screen(ConfirmScreen(
            f"Delete run {run.name}?",
            f"Deletes the run's files in {run.path}: checkpoints, metrics, settings and "
            "status (other files in the folder are kept). It cannot be undone."
            + (f" Runs started from its weights: {lost}." if lost else ""),
            yes="Delete"), partial(self._delete_confirmed, run))

    def _delete_confirmed(self, run: RunSummary, confirmed: bool | None) -> None:
        if not confirmed:
            return
        try:
            removed = delete_run(run.path)
        except (RunBusy, OSError) as e:
            self.notify(str(e), title="Cannot delete", severity="error", markup=False)
            return
        self.notify(f"{len(removed)} files removed", title=f"Deleted {run.name}", markup=False)
        self.app.configure_screen.check_again_when_shown()
        self.action_refresh()


def _shortened(name: str, width: int) -> str:
    """`name` in at most `width` terminal cells (a CJK character takes two), keeping both ends:
    runs often differ at the end."""
    if cell_len(name) <= width:
        return name
    tail = ""
    for char in reversed(name):
        if cell_len(char + tail) > width // 3:
            break
        tail = char + tail
    head = ""
    for char in name:
        if cell_len(head + char) > width - 1 - cell_len(tail):
            break
        head += char
    return f"{head}…{tail}"
