"""One playground generation in a Textual thread worker, and the only bridge to the model.

Like the training run (`run_worker`), the thread never touches a widget: it opens the model
(unless the screen already holds it), generates, and appends small display events to a deque
that the screen drains on a timer. A stop is a `threading.Event` checked between tokens.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from textual.dom import DOMNode
from textual.worker import Worker

from minimind.generate import (PromptTooLong, SamplingParams, TextStream, encode_chat,
                               encode_prompt, generate_tokens)
from minimind.open_model import ModelOpenError, OpenedModel, open_model

GROUP = "playground"


@dataclass(frozen=True)
class ModelLoaded:
    description: str
    device: str


@dataclass(frozen=True)
class GenerationStarted:
    prompt: str


@dataclass(frozen=True)
class TextPiece:
    """New text, and the counts so far (tokens generated, seconds since generation began)."""

    text: str
    tokens: int
    seconds: float


@dataclass(frozen=True)
class GenerationEnded:
    tokens: int
    seconds: float
    reason: Literal["eos", "length", "context", "stopped"]


@dataclass(frozen=True)
class GenerationFailed:
    message: str


GenerationEvent = (ModelLoaded | GenerationStarted | TextPiece | GenerationEnded
                   | GenerationFailed)


@dataclass(frozen=True)
class ModelKey:
    """What the model was opened from: a different key (another path or device, or a file
    written since, like a run's checkpoint saved again) means opening it again."""

    source: str
    device: str
    modified: int | None

    @classmethod
    def of(cls, source: str, device: str) -> ModelKey:
        try:  # a run folder's time changes too when a save renames a new file into it
            modified = Path(source).expanduser().stat().st_mtime_ns
        except OSError:
            modified = None  # opening it will say what is wrong
        return cls(source, device, modified)


class GenerationJob:
    """`GenerationJob(key, prompt, params, opened).start(node)`; `opened` is the model the
    screen holds for `key`, or None to open it in the thread (then `self.opened` holds it).
    With `history` (a chat: earlier turns, maybe none) the prompt is the user's next turn,
    rendered with the chat template, and the model answers it."""

    def __init__(self, key: ModelKey, prompt: str, params: SamplingParams,
                 opened: OpenedModel | None = None,
                 history: list[dict[str, str]] | None = None) -> None:
        self.key, self.prompt, self.params = key, prompt, params
        self.opened = opened
        self.history = history
        self.stop_event = threading.Event()
        self._events: collections.deque[GenerationEvent] = collections.deque()
        self.worker: Worker[None] | None = None

    def start(self, node: DOMNode) -> Worker[None]:
        self.worker = node.run_worker(self._run, name="playground generation", group=GROUP,
                                      thread=True, exit_on_error=False)
        return self.worker

    def request_stop(self) -> None:
        self.stop_event.set()

    def drain(self) -> list[GenerationEvent]:
        out = []
        while self._events:
            out.append(self._events.popleft())
        return out

    def _run(self) -> None:
        try:
            self._generate()
        except (ModelOpenError, PromptTooLong) as e:  # the user's to change: said plainly
            self._events.append(GenerationFailed(str(e)))
        except Exception as e:  # e.g. CUDA out of memory: the screen says so and stays usable
            self._events.append(GenerationFailed(f"{type(e).__name__}: {e}"))

    def _generate(self) -> None:
        import torch

        if self.opened is None:
            self.opened = open_model(self.key.source, device=self.key.device)
            self._events.append(ModelLoaded(self.opened.description, str(self.opened.device)))
        model, tokenizer = self.opened.model, self.opened.tokenizer
        generator = torch.Generator()
        generator.seed()  # a new draw each time, as a user pressing Generate again expects
        self._events.append(GenerationStarted(self.prompt))
        stream, count, reason = TextStream(tokenizer), 0, "length"
        start = time.perf_counter()
        prompt_ids = (encode_prompt(tokenizer, self.prompt) if self.history is None else
                      encode_chat(tokenizer, [*self.history,
                                              {"role": "user", "content": self.prompt}]))
        for token in generate_tokens(model, prompt_ids, self.params,
                                     eos_token_id=tokenizer.eos_token_id, generator=generator):
            count += 1
            if token == tokenizer.eos_token_id and self.params.stop_on_eos:
                reason = "eos"
            self._events.append(TextPiece(stream.push(token), count,
                                          time.perf_counter() - start))
            if self.stop_event.is_set():
                reason = "stopped"
                break
        if reason == "length" and count < self.params.max_new_tokens:
            reason = "context"  # the model's max_position_embeddings ended it first
        seconds = time.perf_counter() - start
        self._events.append(TextPiece(stream.flush(), count, seconds))
        self._events.append(GenerationEnded(count, seconds, reason))
