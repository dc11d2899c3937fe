"""The playground: open any trained model, type a prompt, watch the continuation stream in.
With "chat" on, each prompt is the user's next turn of a conversation (the tokenizer's chat
template; the reply ends at <|im_end|>), for models fine-tuned with stage sft or lora.

Generation runs in a thread worker (`generation_worker.GenerationJob`); the screen drains its
events ten times a second, so the UI never waits on the model and a long generation can be
stopped between two tokens. The opened model is kept for the next prompt until the model path
or the device changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Footer, Input, Label, Select, Static, TextArea
from textual.worker import Worker

from minimind.data.conversation import TURN_END  # MiniMind's eos, which closes every turn
from minimind.shown import shown_text
from minimind.open_model import OpenedModel
from minimind_tui.run.generation_worker import (GenerationEnded, GenerationEvent,
                                            GenerationFailed, GenerationJob,
                                            GenerationStarted, ModelKey, ModelLoaded,
                                            TextPiece)
from minimind_tui.widgets.sampling_form import SamplingForm
from minimind_tui.widgets.ticks import TickBox
from minimind_tui.worker_end import worker_ended
from minimind_tui.screens.styled_once import StyledOnce

if TYPE_CHECKING:
    from minimind_tui.app import MiniMindApp

DRAIN_SECONDS = 0.1  # ten times a second: text appears smoothly, the UI stays idle otherwise
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_PROMPT = "ROMEO:"
DEFAULT_CHAT_PROMPT = "Who are you?"  # a chat model's first turn
_ENDINGS = {"eos": "ended at eos", "length": "reached max tokens",
            "context": "reached the model's context (max_position_embeddings)",
            "stopped": "stopped"}


class PlaygroundScreen(StyledOnce, ModalScreen[None]):
    """Modal so that the form's keys (F5 start, ...) stay with the form and the dashboard;
    it covers the whole terminal all the same."""

    app: MiniMindApp

    BINDINGS = [
        Binding("ctrl+g", "generate", "Generate", id="generate",
                tooltip="Continue the prompt with the model (opens it first if needed)"),
        Binding("escape", "stop_or_close", "Stop/Back", id="playground_back",
                tooltip="Stop the generation; when none is running, leave the playground"),
    ]

    def __init__(self) -> None:
        super().__init__(id="playground")
        self.job: GenerationJob | None = None
        self.opened: OpenedModel | None = None  # the model opened for `self.opened_key`
        self.opened_key: ModelKey | None = None
        self._prompt = ""
        self._generated = ""
        self._model_line = ""  # what is open, for the status line
        self.chat: list[dict[str, str]] = []  # the finished turns of the conversation
        self._chatting = False  # whether the generation shown answers a chat turn
        self._turns_before = 0  # how many turns of `chat` came before it
        self._chat_source = ""  # the model the chat is held with: another starts a new one
        self.pending_source = ""  # a model path to put in the field when the screen shows
        self.pending_chat = False  # ...and whether it answers in turns (an sft/lora model)

    def compose(self) -> ComposeResult:
        with Horizontal(id="playground-toolbar"):
            yield Label("model", id="playground-model-label")
            yield Input(placeholder="run folder, .pth, resume file or Hugging Face folder",
                        id="playground-source", compact=True)
            yield Select([(d, d) for d in DEVICES], value="auto", allow_blank=False,
                         id="playground-device", compact=True)
            yield TickBox("chat", id="playground-chat", compact=True,
                           tooltip="Each prompt is your next turn; the model answers in turns "
                                   "(for sft/lora models). Toggling starts a new chat.")
            yield Button("Generate ^g", id="generate-button", variant="success",
                         action="screen.generate", compact=True)
        yield Static("No model open yet: ^g opens the one named above.",
                     id="playground-status", markup=False)
        with Horizontal(id="playground-body"):
            with Vertical(id="playground-text"):
                yield TextArea(DEFAULT_PROMPT, id="playground-prompt", soft_wrap=True,
                               show_line_numbers=False)
                with VerticalScroll(id="playground-output"):
                    yield Static(id="playground-output-text", markup=False)
            yield SamplingForm(id="sampling-form")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#playground-prompt").border_title = "Prompt"
        self.query_one("#playground-output").border_title = "Output"
        self.query_one("#sampling-form").border_title = "Sampling"
        self._drain_timer = self.set_interval(DRAIN_SECONDS, self._drain, pause=True)

    def on_unmount(self) -> None:
        if self.job is not None:
            self.job.request_stop()

    def on_screen_resume(self) -> None:
        if self.pending_source:  # the dashboard's Try it: its checkpoint, ready for a prompt
            self.query_one("#playground-source", Input).value = self.pending_source
            self._status(f"^g opens {self.pending_source}")  # (not what an earlier one said)
            self.pending_source = ""
            prompt = self.query_one("#playground-prompt", TextArea)
            self.query_one("#playground-chat", Checkbox).value = self.pending_chat
            if prompt.text in (DEFAULT_PROMPT, DEFAULT_CHAT_PROMPT):  # the user's own stays
                prompt.text = DEFAULT_CHAT_PROMPT if self.pending_chat else DEFAULT_PROMPT
            prompt.focus()

    @property
    def generating(self) -> bool:
        return self.job is not None and self.job.worker is not None \
            and not self.job.worker.is_finished

    # -- actions ----------------------------------------------------------------------------
    def action_generate(self) -> None:
        if self.generating:
            return
        source = self.query_one("#playground-source", Input).value.strip()
        if not source:
            self._status("Enter the model's path first: a run folder, a weights file or a "
                         "Hugging Face folder.", error=True)
            self.query_one("#playground-source", Input).focus()
            return
        try:
            params = self.query_one(SamplingForm).params()
        except ValueError as e:
            self._status(str(e), error=True)
            return
        if source != self._chat_source:  # its turns were another model's
            self._new_chat()
            self._chat_source = source
        key = ModelKey.of(source, str(self.query_one("#playground-device", Select).value))
        if key != self.opened_key:
            self.opened, self.opened_key = None, key
            self._status(f"Opening {source}…")
        else:
            self._status(f"generating… │ {self._model_line}")
        prompt = self.query_one("#playground-prompt", TextArea).text
        self._chatting = self.query_one("#playground-chat", Checkbox).value
        self.job = GenerationJob(key, prompt, params, self.opened,
                                 history=list(self.chat) if self._chatting else None)
        self.job.start(self)
        self._drain_timer.resume()
        self.query_one("#generate-button", Button).disabled = True

    def action_stop_or_close(self) -> None:
        if self.generating:
            self.job.request_stop()
        else:
            self.dismiss(None)

    @on(Checkbox.Changed, "#playground-chat")
    def _new_chat(self) -> None:
        self.chat, self._prompt, self._generated, self._turns_before = [], "", "", 0
        self._chatting = False  # until the next generation says otherwise
        self._show_output()

    @on(Input.Submitted, "#playground-source")
    def _source_submitted(self) -> None:
        self.action_generate()

    # -- events from the worker -------------------------------------------------------------
    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        job = self.job
        if job is None or event.worker is not job.worker or not worker_ended(event):
            return
        self._drain_timer.pause()
        self._drain()
        if job.opened is not None and job.key == self.opened_key:
            self.opened = job.opened
        self.query_one("#generate-button", Button).disabled = False

    def _drain(self) -> None:
        if self.job is not None:
            self.apply(self.job.drain())

    def apply(self, events: list[GenerationEvent]) -> None:
        """Show worker events (also used to show a fixed stream in snapshots and screenshots)."""
        grew = False
        for event in events:
            if isinstance(event, ModelLoaded):
                self._model_line = f"{event.description} · {event.device}"
                self._status(self._model_line)
            elif isinstance(event, GenerationStarted):
                self._prompt, self._generated, grew = event.prompt, "", True
                self._turns_before = len(self.chat)
            elif isinstance(event, TextPiece):
                self._generated += event.text
                grew = True
                self._status(f"{_speed(event.tokens, event.seconds)} │ {self._model_line}")
            elif isinstance(event, GenerationEnded):
                if self._chatting:
                    reply = self._generated.removesuffix(TURN_END)  # the template adds it
                    self.chat += [{"role": "user", "content": self._prompt},
                                  {"role": "assistant", "content": reply}]
                self._status(f"{_speed(event.tokens, event.seconds)} · "
                             f"{_ENDINGS[event.reason]} │ {self._model_line}")
            elif isinstance(event, GenerationFailed):
                self.opened, self.opened_key, self._model_line = None, None, ""
                self._status(event.message, error=True)
        if grew:
            self._show_output()

    def _show_output(self) -> None:
        text = Text()
        if self._chatting:
            for turn in self.chat[:self._turns_before]:
                text.append(f"{turn['role']}: ", style="bold")
                text.append(shown_text(turn["content"]) + "\n")
            text.append("user: ", style="bold")
            text.append(shown_text(self._prompt) + "\n")
            text.append("assistant: ", style="bold")
            # The turn's end shows in the status line ("ended at eos"), as for earlier turns.
            text.append(shown_text(self._generated.removesuffix(TURN_END)))
        else:
            text.append(shown_text(self._prompt), style="bold")
            text.append(shown_text(self._generated))
        self.query_one("#playground-output-text", Static).update(text)
        self.query_one("#playground-output", VerticalScroll).scroll_end(animate=False)

    def _status(self, text: str, error: bool = False) -> None:
        status = self.query_one("#playground-status", Static)
        status.update(text)
        status.set_class(error, "-error")


def _speed(tokens: int, seconds: float) -> str:
    rate = f"{tokens / seconds:,.1f} tokens/s" if seconds > 0 else "… tokens/s"
    return f"{tokens} token{'' if tokens == 1 else 's'} · {rate}"
