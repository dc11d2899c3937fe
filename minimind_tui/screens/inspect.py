"""Inspect data: stream a data file through the tokenizer and show what it holds.

Opened from the form (F8 on data_path / val_data_path) or the command palette. The pass runs in
a thread worker (its tokenizing processes do the work); the screen polls its progress a few
times a second and shows the figures so far, so a mismatched tokenizer shows within seconds
even on a 10 GB file. Escape cancels: the pass stops and its processes end. Dismissed with the
finished inspection (or None), which the form's readouts then use.

For stage sft/lora the file holds conversations: the pass renders each with the chat template
at max_seq_len and counts turns and the tokens the loss trains on (supervised) against all.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, ProgressBar, Static
from textual.worker import Worker, WorkerState

from minimind.data.inspect import DataInspection
from minimind.data.progress import Throughput
from minimind.data.inspect_report import (bad_line_rows, conversation_rows,
                                         conversation_warnings, figure_rows, split_chars_text,
                                         warning_texts)
from minimind_tui.widgets.length_histogram import LengthHistogram
from minimind_tui.worker_end import worker_ended
from minimind_tui.screens.styled_once import StyledOnce

if TYPE_CHECKING:
    from minimind.data.sft_inspect import ConversationInspection

    Inspection = DataInspection | ConversationInspection

POLL_SECONDS = 0.2


class _Cancelled(Exception):
    pass


class InspectScreen(StyledOnce, Screen["Inspection | None"]):
    BINDINGS = [Binding("escape", "close", "Back", id="inspect_back",
                        tooltip="Back to the form (cancels a pass that is still running)")]

    def __init__(self, data_path: str, tokenizer_path: str, max_seq_len: int,
                 stage: str = "pretrain") -> None:
        super().__init__(id="inspect")
        self.data_path, self.tokenizer_path, self.max_seq_len = (data_path, tokenizer_path,
                                                                 max_seq_len)
        self.conversations = stage != "pretrain"
        self.result: Inspection | None = None
        self.ended = False
        """Whether the pass has ended (a result, an error or a cancel) and the screen shows it."""
        self._cancel = threading.Event()
        # Written by the worker thread, read by the poll: plain values, no locking needed.
        self._phase = "loading the tokenizer"
        self._done, self._total = 0, 0
        self._partial: Inspection | None = None
        self._shown: Inspection | None = None
        self._throughput = Throughput()

    def compose(self) -> ComposeResult:
        tokenizer = self.tokenizer_path or "bundled"
        with Vertical(id="inspect-body") as body:
            body.border_title = f"Inspect data: {Path(self.data_path).name}"
            as_conversations = " · as conversations (sft/lora)" if self.conversations else ""
            yield Static(Text(f"{self.data_path} · tokenizer {tokenizer} · max_seq_len "
                              f"{self.max_seq_len}{as_conversations}"), id="inspect-source",
                         classes="dim")
            with Horizontal(id="inspect-progress-row"):
                yield ProgressBar(total=None, show_eta=False, id="inspect-progress")
                yield Static("", id="inspect-status")
            with Horizontal(id="inspect-panels"):
                yield Static("", id="inspect-figures")
                yield LengthHistogram(id="inspect-histogram")
            with VerticalScroll(id="inspect-notes"):
                yield Static("", id="inspect-warnings")
                yield Static("", id="inspect-details")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#inspect-figures").border_title = "Figures"
        self.query_one("#inspect-histogram").border_title = (
            "Conversations by length in tokens" if self.conversations
            else "Documents by length in tokens")
        self.query_one("#inspect-notes").border_title = "Notes"
        self._poll = self.set_interval(POLL_SECONDS, self._show_progress)
        self.run_worker(self._inspect, name="inspect", group="inspect", thread=True,
                        exit_on_error=False)

    def _inspect(self) -> Inspection:
        from minimind.data.inspect import inspect_data
        from minimind.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(self.tokenizer_path or None)
        if self.conversations:
            from minimind.data.sft_inspect import inspect_conversations

            return inspect_conversations(self.data_path, tokenizer, self.max_seq_len,
                                         progress=self._progress, phase=self._set_phase,
                                         partial=self._set_partial)
        return inspect_data(self.data_path, tokenizer, progress=self._progress,
                            phase=self._set_phase, partial=self._set_partial)

    # -- called from the worker thread ---------------------------------------------------
    def _progress(self, done: int, total: int) -> None:
        if self._cancel.is_set():
            raise _Cancelled
        self._done, self._total = done, total
        self._throughput.update(done, total)

    def _set_phase(self, phase: str) -> None:
        self._phase = phase
        self._throughput = Throughput()

    def _set_partial(self, partial: Inspection) -> None:
        self._partial = partial

    # -- the UI ------------------------------------------------------------------------------
    def _show_progress(self) -> None:
        if self.ended:  # a tick queued before the end must not show "so far" over it
            return
        bar = self.query_one(ProgressBar)
        if self._total:
            bar.update(total=self._total, progress=self._done)
        rate = self._throughput.text() if self._total else "…"
        self._status(f"{self._phase}: {rate}")
        if self._partial is not None and self._partial is not self._shown:
            self._show(self._partial, final=False)

    def _status(self, text: str, style: str = "") -> None:
        self.query_one("#inspect-status", Static).update(Text(text, style=style))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if worker.group != "inspect" or not worker_ended(event):
            return
        self._poll.stop()
        self.ended = True
        if event.state == WorkerState.SUCCESS:
            self.result = worker.result
            bar = self.query_one(ProgressBar)
            bar.update(total=1, progress=1)
            done = (f"{self.result.documents:,} conversations" if self.conversations
                    else f"{self.result.size_bytes / 1e6:,.1f} MB")
            self._status(f"done: {done}" + (" (from the cache)" if self.result.cached else ""),
                         "bold")
            self._show(self.result, final=True)
        elif event.state == WorkerState.ERROR and not isinstance(worker.error, _Cancelled):
            # Nothing goes on: no bar that still moves, and the whole reason, over lines.
            self.query_one(ProgressBar).display = False
            self._status(f"cannot inspect: {worker.error}", "bold red")

    def _show(self, insp: Inspection, final: bool) -> None:
        self._shown = insp
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column()
        rows = (conversation_rows(insp) if self.conversations
                else figure_rows(insp, self.max_seq_len))
        for label, value in rows:
            grid.add_row(label, value)
        if not final:
            grid.add_row("", Text("so far", style="dim"))
        self.query_one("#inspect-figures", Static).update(grid)
        if self.conversations:
            self.query_one(LengthHistogram).show(insp.lengths, self.max_seq_len,
                                                 "tokens, chat template")
        else:
            self.query_one(LengthHistogram).show(insp.lengths, self.max_seq_len)
        warnings = Text()
        texts = (conversation_warnings(insp) if self.conversations
                 else warning_texts(insp, self.max_seq_len))
        for warning in texts:
            warnings.append("⚠ ", style="bold yellow").append(warning + "\n")
        if not warnings:
            warnings.append("Nothing to worry about: nearly every conversation fits max_seq_len "
                            "and every line parses."
                            if self.conversations else
                            "Nothing to worry about: the tokenizer suits the text.",
                            style="green")
        self.query_one("#inspect-warnings", Static).update(warnings)
        details = Text()
        if not self.conversations and (chars := split_chars_text(insp)):
            details.append("Characters without a token of their own: ", style="bold")
            details.append(chars + "\n")
        if bad := bad_line_rows(insp):
            details.append("First bad lines:\n", style="bold")
            details.append("\n".join(f"  {line}" for line in bad))
        self.query_one("#inspect-details", Static).update(details)

    def action_close(self) -> None:
        self._cancel.set()  # the pass raises at its next progress report and ends its processes
        self.dismiss(self.result)

    def on_unmount(self) -> None:
        self._cancel.set()
