"""Text generation with the KV cache: one token at a time, as it is chosen.

`generate_tokens` is a generator of token ids, so a caller can print (the `generate` command),
stream into a screen (the playground) or collect (the engine's live samples) each token the
moment it exists, and stop early by simply not asking for the next one. It works with any
causal LM whose forward takes `cache=` / `use_cache=` and returns `.cache` (ours, and the
transformers classes an export maps to).

Each token is picked on the CPU from the last position's logits: repetition penalty, then
greedy (temperature 0) or temperature, top-k and top-p, drawn with the caller's own
`torch.Generator`. The global RNG, which training's dropout draws on, is never touched.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

# The engine's second sample of each prompt: a usual "creative but sane" setting.
SAMPLE_TEMPERATURE = 0.8
SAMPLE_TOP_P = 0.95


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is chosen. temperature 0 is greedy; top_k 0 and top_p 1 are off;
    repetition_penalty 1 is off (above 1 makes tokens already in the text less likely)."""

    max_new_tokens: int = 128
    temperature: float = SAMPLE_TEMPERATURE
    top_k: int = 0
    top_p: float = SAMPLE_TOP_P
    repetition_penalty: float = 1.0
    stop_on_eos: bool = True

    def __post_init__(self) -> None:
        rules = (("max_new_tokens", self.max_new_tokens >= 1, "must be ≥ 1"),
                 ("temperature", self.temperature >= 0, "must be ≥ 0 (0: greedy)"),
                 ("top_k", self.top_k >= 0, "must be ≥ 0 (0: off)"),
                 ("top_p", 0 < self.top_p <= 1, "must be > 0 and ≤ 1 (1: off)"),
                 ("repetition_penalty", self.repetition_penalty > 0, "must be > 0 (1: off)"))
        for name, ok, rule in rules:
            value = getattr(self, name)
            # inf passes "≥ 0" but is no temperature: every token equally likely, said nowhere
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}")
            if not ok:
                raise ValueError(f"{name} {rule}, got {value}")



def encode_prompt(tokenizer, text: str) -> list[int]:
    """The prompt's ids as a training document starts: with bos, which the datasets put before
    every text (not doubled when the text already begins with it, e.g. "<|im_start|>...")."""
    # verbose=False: the length check is `generate_batch`'s, against the model it runs on
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    bos = tokenizer.bos_token_id
    return ids if bos is None or ids[:1] == [bos] else [bos, *ids]


def encode_chat(tokenizer, messages: Sequence[dict[str, str]]) -> list[int]:
    """The ids of a conversation so far, rendered by the tokenizer's chat template and ending
    with its assistant header: what a fine-tuned model answers. Its reply ends with
    `<|im_end|>`, the eos of MiniMind's tokenizers, where generation stops."""
    text = tokenizer.apply_chat_template(list(messages), tokenize=False,
                                         add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]


class PromptTooLong(ValueError):
    """The prompt alone fills the model's context: no position is left for a new token."""


def context_room(model: torch.nn.Module, prompt_ids: Sequence[int]) -> int | float:
    """How many new tokens may follow `prompt_ids`: prompt and continuation together stay within
    the positions the model was built for (its config's max_position_embeddings; no limit
    where the config names none), since positions past them were never trained. Raises
    PromptTooLong when the prompt leaves none."""
    limit = getattr(model.config, "max_position_embeddings", None)
    if not limit:
        return float("inf")
    if len(prompt_ids) >= limit:
        raise PromptTooLong(f"the prompt is {len(prompt_ids)} tokens and the model's context is "
                            f"max_position_embeddings {limit}: no room for a new token")
    return limit - len(prompt_ids)


def generate_tokens(model: torch.nn.Module, prompt_ids: Sequence[int], params: SamplingParams,
                    *, eos_token_id: int | None = None,
                    generator: torch.Generator | None = None) -> Iterator[int]:
    """Yield each new token id as soon as it is chosen (eos included, then stop when
    `params.stop_on_eos`), at most `context_room` of them: PromptTooLong when that is none.
    The model should be in eval mode; autocast is the caller's."""
    context_room(model, prompt_ids)
    for tokens in generate_batch(model, [prompt_ids], [params], eos_token_id=eos_token_id,
                                 generators=[generator]):
        if tokens[0] is not None:
            yield tokens[0]


def generate_batch(model: torch.nn.Module, prompts: Sequence[Sequence[int]],
                   params: Sequence[SamplingParams], *, eos_token_id: int | None = None,
                   generators: Sequence[torch.Generator | None] | None = None
                   ) -> Iterator[list[int | None]]:
    """Continue several prompts at once, each with its own params and generator: one forward
    pass per token for all of them. Yields, per step, each row's new token (None once that row
    has stopped); stops when every row has, or when the longest prompt's `context_room` is
    used up (at once, yielding nothing, when it has none: the engine's live samples of a
    too long prompt come out empty rather than failing the run)."""
    if not prompts or not all(prompts):
        raise ValueError("a prompt has no tokens")
    device = next(model.parameters()).device
    rows, width = len(prompts), max(len(p) for p in prompts)
    try:
        room = context_room(model, max(prompts, key=len))
    except PromptTooLong:
        return
    generators = list(generators) if generators is not None else [None] * rows
    # Left padding: every row's next token lands in the last column. The mask hides the
    # padding and numbers each row's positions from its own first token.
    ids = torch.zeros(rows, width, dtype=torch.long)
    mask = torch.zeros(rows, width, dtype=torch.long)
    for i, prompt in enumerate(prompts):
        ids[i, width - len(prompt):] = torch.tensor(list(prompt))
        mask[i, width - len(prompt):] = 1
    seen: list[torch.Tensor] = []  # per row, which ids are in its text (for the penalty)
    stopped = [False] * rows
    cache = None
    for step in range(min(max(p.max_new_tokens for p in params), room)):
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1]:]
        # Grad mode is per thread: entered and left around each call, never held while the
        # generator is suspended (the caller's code runs between tokens).
        with torch.no_grad():
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                        position_ids=positions.to(device), cache=cache, use_cache=True,
                        logits_to_keep=1)
        cache = out.cache
        logits = out.logits[:, -1].float().cpu()
        if not seen:
            seen = [torch.zeros(logits.shape[-1], dtype=torch.bool).index_fill_(
                0, torch.tensor(list(prompt)), True) for prompt in prompts]
        tokens: list[int | None] = []
        for i in range(rows):
            if stopped[i]:
                tokens.append(None)
                continue
            token = next_token(logits[i], seen[i], params[i], generators[i])
            seen[i][token] = True
            tokens.append(token)
            stopped[i] = (step + 1 >= params[i].max_new_tokens
                          or (params[i].stop_on_eos and token == eos_token_id))
        yield tokens
        if all(stopped):
            return
        # A stopped row is fed a dummy token from here on; nothing reads its output.
        ids = torch.tensor([[0 if t is None else t] for t in tokens])
        mask = torch.cat([mask, torch.ones(rows, 1, dtype=torch.long)], dim=1)


class NonFiniteOutput(ValueError):
    """The model's logits hold NaN/inf: nothing sensible can be picked from them."""


def next_token(logits: torch.Tensor, seen: torch.Tensor, params: SamplingParams,
               generator: torch.Generator | None = None) -> int:
    """Pick one id from a vocabulary-sized float tensor of logits."""
    if not torch.isfinite(logits).all():
        # Greedy would pick token 0 forever and sampling fail deep in torch.multinomial.
        raise NonFiniteOutput("the model's output holds NaN/inf (its weights or activations "
                              "overflowed); try float32 or an earlier checkpoint")
    # In float64 and shifted to a maximum of 0 before the temperature divides: extreme but
    # valid settings (a temperature of 1e-39, a penalty of 1e-300) then give -inf for the
    # unlikely tokens, never inf - inf = NaN in the softmax.
    logits = logits.double()
    p = params.repetition_penalty
    if p != 1.0:
        # Dividing a positive logit and multiplying a negative one both lower it for p > 1.
        logits = torch.where(seen, torch.where(logits > 0, logits / p, logits * p), logits)
        logits = logits.clamp(max=torch.finfo(logits.dtype).max)
    if params.temperature == 0:
        return int(logits.argmax())
    logits = (logits - logits.max()) / params.temperature
    if params.top_k and params.top_k < logits.numel():
        kth_best = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = logits.sort(descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token once the more likely ones before it already hold top_p of the mass;
        # the most likely token is always kept.
        beyond = (probs.cumsum(-1) - probs) >= params.top_p
        logits = logits.clone()
        logits[order[beyond]] = float("-inf")
    return int(torch.multinomial(logits.softmax(-1), 1, generator=generator))


class TextStream:
    """Token ids in, printable text out, as the ids come.

    Byte-level BPE can split one character (most Chinese ones, emoji) across tokens; decoding
    such a prefix ends in U+FFFD, so that text is held back until the character is complete.
    Special tokens are kept: `<|im_end|>` shows where the model ended a document.
    """

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self._emitted = 0

    def push(self, token: int) -> str:
        """The text that `token` completes ("" while a character is still open)."""
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):
            return ""
        new, self._emitted = text[self._emitted:], len(text)
        return new

    def flush(self) -> str:
        """Whatever is still held back (an unfinished character shows as U+FFFD)."""
        text = self.tokenizer.decode(self.ids)
        new, self._emitted = text[self._emitted:], len(text)
        return new


@contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) for the block, then the mode the model was in."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def encode_prompts(tokenizer, prompts: Sequence[str], chat: bool) -> list[list[int]]:
    """The ids a run's sample prompts continue from: each a document's start, or with `chat`
    a user turn the assistant answers."""
    return [encode_chat(tokenizer, [{"role": "user", "content": prompt}]) if chat
            else encode_prompt(tokenizer, prompt) for prompt in prompts]


def sample_room_problems(tokenizer, prompts: Sequence[str], chat: bool, sample_tokens: int,
                         context: int) -> tuple[str, list[str]]:
    """What the model's context (`context` positions) leaves a run's samples: a refusal when a
    prompt fills it ("" for none), and a warning for each continuation it cuts short of
    `sample_tokens`. The samples were empty, or short, without a word."""
    warnings = []
    for i, ids in enumerate(encode_prompts(tokenizer, prompts, chat), 1):
        if len(ids) >= context:
            return (f"train.sample_prompts: prompt {i} is {len(ids)} tokens and the model's "
                    f"context is max_position_embeddings {context}: no room for a continuation; "
                    "shorten it", [])
        if len(ids) + sample_tokens > context:
            warnings.append(f"sample prompt {i}'s continuation stops at {context - len(ids)} "
                            f"tokens, where the model's context (max_position_embeddings "
                            f"{context}) ends, not at sample_tokens {sample_tokens}")
    return "", warnings


def continue_prompts(model: torch.nn.Module, tokenizer, prompts: Sequence[str],
                     max_new_tokens: int, seed: int, chat: bool = False
                     ) -> tuple[list[str], list[str]]:
    """(greedy, sampled) continuations of each prompt, the model left in the mode it was in;
    with `chat` each prompt is a user turn and the continuation the assistant's reply.

    The sampled continuation of prompt i draws from a generator seeded with `seed + i` at every
    call, so from one call to the next only the model differs: the text shows what it learned.
    All of them are decoded together, one forward pass per token.
    """
    greedy = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, top_p=1.0)
    sampled = SamplingParams(max_new_tokens=max_new_tokens)
    encoded = encode_prompts(tokenizer, prompts, chat)
    params = [greedy] * len(prompts) + [sampled] * len(prompts)
    generators = [None] * len(prompts) + [torch.Generator().manual_seed(seed + i)
                                           for i in range(len(prompts))]
    new_ids: list[list[int]] = [[] for _ in params]
    with evaluating(model):
        for tokens in generate_batch(model, encoded * 2, params, generators=generators,
                                     eos_token_id=tokenizer.eos_token_id):
            for row, token in zip(new_ids, tokens):
                if token is not None:
                    row.append(token)
    texts = [tokenizer.decode(row) for row in new_ids]
    return texts[:len(prompts)], texts[len(prompts):]
