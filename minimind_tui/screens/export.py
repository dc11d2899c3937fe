"""Export a trained model from the app: `minimind-tui export` with a form.

The source is a run folder or a weights file (the form's out_dir to start with), the destination
a folder for a Hugging Face export or for upstream's `.pth`. The export (loading, writing, and
the logit check of an hf folder) runs in a thread worker; the dialog says what it wrote, or why
it could not.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, LoadingIndicator, Select, Static

from minimind_tui.cli.export import checked
from minimind_tui.widgets.ticks import TickBox

FORMATS = [("Hugging Face folder (standard class)", "hf"),
           ("upstream MiniMind .pth", "upstream")]


class ExportScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape", "close", "Close", id="export_close")]
    _refocus = False

    def __init__(self, source: str) -> None:
        super().__init__(classes="dialog-screen")
        self._source = source
        self._suggested = _default_destination(source)
        """The destination the dialog proposed: it follows the source until the user edits it."""

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog") as dialog:
            dialog.border_title = "Export a model"
            yield Static("Run folder or weights file (.pth, resume checkpoint, .safetensors):",
                         markup=False)
            yield Input(self._source, id="export-source")
            yield Static("Destination:", markup=False)
            yield Input(self._suggested, id="export-destination")
            yield Select(FORMATS, value="hf", allow_blank=False, id="export-format",
                         compact=True)
            # What the refusals call --overwrite: an earlier export's, never a run's or others'.
            yield TickBox("Replace an earlier export there (--overwrite)", id="export-overwrite",
                           compact=True)
            yield LoadingIndicator(id="export-busy")
            yield Static("", id="export-result", classes="dialog-note")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Export", id="export", variant="primary")
                yield Button("Close (esc)", id="close")

    def on_mount(self) -> None:
        self.query_one("#export-busy").display = False

    def action_close(self) -> None:
        if self.query_one("#export", Button).disabled:  # closed, it would finish unseen
            self.notify("The export is still being written; its outcome shows here.",
                        title="Exporting", severity="warning")
            return
        self.dismiss()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "close":
            self.action_close()
        elif event.button.id == "export":
            self.start_export()

    def on_input_submitted(self) -> None:
        self.start_export()

    @on(Input.Changed, "#export-source")
    def _follow_the_source(self, event: Input.Changed) -> None:
        destination = self.query_one("#export-destination", Input)
        if destination.value == self._suggested:  # else the user chose it: leave it be
            self._suggested = _default_destination(event.value.strip())
            destination.value = self._suggested

    def start_export(self) -> None:
        button = self.query_one("#export", Button)
        if button.disabled:
            return
        source = self.query_one("#export-source", Input).value.strip()
        destination = self.query_one("#export-destination", Input).value.strip()
        if not (source and destination):  # an empty path is the current folder to pathlib
            self._show("name the model to export (a run folder or a weights file)"
                       if not source else "name the folder to export to", error=True)
            return
        # Disabled, the button loses the focus to Close: Enter after it closed the dialog.
        self._refocus = self.focused is button
        button.disabled = True
        self.query_one("#export-busy").display = True
        self._show("exporting…", error=False)
        self._export(source, destination, str(self.query_one("#export-format", Select).value),
                     self.query_one("#export-overwrite", Checkbox).value)

    @work(thread=True, exclusive=True, group="export", exit_on_error=False)
    def _export(self, source: str, destination: str, format: str, overwrite: bool) -> None:
        # Imported here: torch and transformers load in the worker, not on the UI thread.
        from minimind.checkpoint_reader import read_checkpoint
        from minimind.export import ExportVerificationError, export_hf, export_upstream
        from minimind.export_destination import ExportError, check_destination
        from minimind.torchfile import CheckpointError

        try:
            if format == "hf":
                check_destination(destination, overwrite)
            loaded = read_checkpoint(source)
            if format == "upstream":
                path = export_upstream(loaded, destination, overwrite=overwrite)
                wrote = f"wrote {path} (upstream MiniMind layout, float16)"
            else:
                result = export_hf(loaded, destination, overwrite=overwrite)
                how = ("load with trust_remote_code=True" if result.remote_code
                       else "AutoModelForCausalLM.from_pretrained loads it as is")
                wrote = (f"wrote {result.path} as {result.architecture} "
                         f"({checked(result, None)}): {how}")
            # What the model was built from, as the command line says it: which base, which
            # adapters merged in, which record gave the config.
            message = (f"{wrote}\nfrom {loaded.built_from}; config from "
                       f"{loaded.config_origin}")
            self.app.call_from_thread(self._done, message, False)
        except (CheckpointError, ExportError, ExportVerificationError) as e:
            self.app.call_from_thread(self._done, str(e), True)

    def _done(self, message: str, error: bool) -> None:
        self.query_one("#export-busy").display = False
        button = self.query_one("#export", Button)
        button.disabled = False
        if self._refocus:
            button.focus()
        self._show(message, error)

    def _show(self, message: str, error: bool) -> None:
        result = self.query_one("#export-result", Static)
        result.set_class(error, "-error")
        result.update(Text(message))


def _default_destination(source: str) -> str:
    path = Path(source.rstrip("/")) if source else Path("out")
    return str(path.parent / f"{path.stem}-hf")
