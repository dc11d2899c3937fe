"""The playground's sampling parameters: one compact row per `SamplingParams` field."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Checkbox, Input, Label, Static

from minimind.generate import SamplingParams
from minimind_tui.widgets.ticks import TickBox

# (field, label, input type): the order of the rows.
_ROWS = (("temperature", "temperature", "number"), ("top_p", "top-p", "number"),
         ("top_k", "top-k", "integer"), ("repetition_penalty", "repeat pen.", "number"),
         ("max_new_tokens", "max tokens", "integer"))
_LABELS = {name: label for name, label, _ in _ROWS}
HELP = "temperature 0: greedy · top-k 0, top-p 1, repeat pen. 1: off"


class SamplingForm(Vertical):
    def __init__(self, params: SamplingParams | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self._initial = params or SamplingParams()

    def compose(self) -> ComposeResult:
        for name, label, kind in _ROWS:
            with Horizontal(classes="sampling-row"):
                yield Label(label, classes="sampling-label")
                # Free text, checked by `params`: a number Input drops the keys it refuses
                # without a word ("0,5" became 05, a temperature of 5).
                yield Input(f"{getattr(self._initial, name):g}", compact=True,
                            id=f"sampling-{name}", select_on_focus=True)
        yield TickBox("stop on eos", self._initial.stop_on_eos, id="sampling-stop_on_eos",
                       compact=True)
        yield Static(HELP, classes="dim", id="sampling-help")

    def params(self) -> SamplingParams:
        """The parameters as typed; a ValueError names the first field that is wrong."""
        values: dict[str, object] = {}
        for name, label, kind in _ROWS:
            text = self.query_one(f"#sampling-{name}", Input).value.strip()
            try:
                values[name] = int(text) if kind == "integer" else float(text)
            except ValueError:
                raise ValueError(f"{label} must be a {'whole ' if kind == 'integer' else ''}"
                                 f"number, got {text!r}") from None
        values["stop_on_eos"] = self.query_one("#sampling-stop_on_eos", Checkbox).value
        try:
            return SamplingParams(**values)
        except ValueError as e:  # its rule names the field: the row says it as its label does
            name, _, rule = str(e).partition(" ")
            raise ValueError(f"{_LABELS.get(name, name)} {rule}") from None
