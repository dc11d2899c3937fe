"""Supervised fine-tuning samples: MiniMind conversation files, rendered and masked as upstream.

A line is `{"conversations": [{"role": ..., "content": ...}, ...]}` (MiniMind's `sft_*.jsonl`,
`lora_*.jsonl`). MiniMind-3's files may add a leading `system` turn (which may carry `tools`),
`reasoning_content` and `tool_calls` on assistant turns, and `tool` turns; they are passed to the
tokenizer's own chat template, which decides how they look.

The loss mask, upstream MiniMind2's rule (`dataset/lm_dataset.py`, SFTDataset), on token ids:
for each occurrence of the ids of `<|im_start|>assistant`, let `start` be the index just after
it (the header's newline) and `end` the index of the next `<|im_end|>`; positions
`start + 1 … end + 1` are supervised, capped at max_seq_len. So the trained targets are each
reply's content, its `<|im_end|>` (the model learns to stop) and the one token after it (the
template's newline); the header's own newline is not trained, nor any system, user or tool token.
MiniMind-3 states its rule as "from after `<|im_start|>assistant\\n` through `<|im_end|>\\n`":
on both upstream tokenizers and ours that newline is its own token, so the two rules pick the
same targets (tests check this on real ids). Two quirks are kept for exactness: a reply cut off
by truncation is supervised up to the cut, and one without `<|im_end|>` before padding would
supervise the padding (upstream does the same; a rendered conversation always closes its turns).

Samples are `(input_ids, labels)` of exactly max_seq_len ids: the rendered conversation cut at
max_seq_len (head kept, as upstream), right-padded with pad; labels are the ids at supervised
positions and -100 elsewhere. The model shifts, so labels[j] is the target after ids[j-1]:
exactly upstream's `Y = ids[1:]`, `loss_mask[1:]`, and its loss (mean over supervised targets).

Rendering is deterministic: MiniMind-3's random augmentations (a random system prompt 20% of
the time, dropping an empty think block 80% of the time) are not applied.
There is no packed path for SFT: padding keeps each conversation attending to itself alone and
gives every conversation upstream's loss, which packing without document masking would not.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from .conversation import TURN_END, TURN_START, ConversationParser
from .corpus import resolve_data_path
from .fast_encode import PrefixCut, backend_json, pieces
from .jsonl import JsonlIndex
from .pretrain import IGNORE_INDEX, pad_id

ASSISTANT_HEADER = f"{TURN_START}assistant"


class ChatTemplateError(ValueError):
    """The tokenizer cannot render conversations the way the loss mask needs."""


_PROBE = "minimind_probe_7f3a"


def unwritten_fields(tokenizer) -> list[str]:
    """The optional fields (tools, tool_calls, reasoning_content) the tokenizer's chat template
    leaves out of the text, found by rendering a marker in each."""
    user, reply = {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}
    tool = {"type": "function", "function": {"name": _PROBE, "description": _PROBE,
                                             "parameters": {"type": "object", "properties": {}}}}
    probes = {"tools": {"messages": [user, reply], "tools": [tool]},
              "tool_calls": {"messages": [user, {**reply, "tool_calls": [
                  {"name": _PROBE, "arguments": {}}]}], "tools": None},
              "reasoning_content": {"messages": [user, {**reply, "reasoning_content": _PROBE}],
                                    "tools": None}}
    unwritten = []
    for field, conversation in probes.items():
        try:
            text = render(tokenizer, conversation)
        except Exception:  # noqa: BLE001 -- a template failing on the probe fails on the data,
            continue  # and says so there
        if _PROBE not in text:
            unwritten.append(field)
    return unwritten


def chat_template_digest(tokenizer) -> str:
    """A hash of the tokenizer's chat template, which makes the text of every conversation."""
    return hashlib.blake2b(str(tokenizer.chat_template).encode(), digest_size=4).hexdigest()


def render(tokenizer, conversation: dict[str, Any]) -> str:
    """The conversation as the tokenizer's chat template writes it (no generation prompt)."""
    return tokenizer.apply_chat_template(conversation["messages"], tools=conversation["tools"],
                                         tokenize=False, add_generation_prompt=False)


def mask_markers(tokenizer) -> tuple[list[int], int]:
    """The ids of the assistant header and of the turn end, after checking that the tokenizer
    has a chat template that writes them; ChatTemplateError with one line otherwise."""
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError(
            "the tokenizer has no chat template (tokenizer_config.json \"chat_template\"); "
            "conversations are rendered with it, so SFT needs one")
    header = tokenizer(ASSISTANT_HEADER, add_special_tokens=False)["input_ids"]
    end = tokenizer(TURN_END, add_special_tokens=False)["input_ids"]
    probe = {"messages": [{"role": "user", "content": "hi"},
                          {"role": "assistant", "content": "hello"}], "tools": None}
    ids = tokenizer(render(tokenizer, probe), add_special_tokens=False)["input_ids"]
    if len(end) != 1 or _find(ids, header, 0) == len(ids) or end[0] not in ids:
        raise ChatTemplateError(
            f"the tokenizer's chat template does not write assistant turns as "
            f"{ASSISTANT_HEADER!r} … {TURN_END!r} (single special tokens), which the loss mask "
            "looks for")
    return header, end[0]


def _find(ids: list[int], pattern: list[int], start: int) -> int:
    """Index of the first occurrence of `pattern` in ids at or after `start`, else len(ids)."""
    n = len(pattern)
    first = pattern[0]
    i = start
    while i <= len(ids) - n:
        if ids[i] == first and ids[i:i + n] == pattern:
            return i
        i += 1
    return len(ids)


def supervised_positions(ids: list[int], header: list[int], end: int) -> list[bool]:
    """Upstream's loss mask over `ids` (already cut and padded to max_seq_len): see the module
    docstring for which positions count and why."""
    mask = [False] * len(ids)
    i = _find(ids, header, 0)
    while i < len(ids):
        start = i + len(header)
        try:
            close = ids.index(end, start)
        except ValueError:
            close = len(ids)
        for j in range(start + 1, min(close + 2, len(ids))):
            mask[j] = True
        i = _find(ids, header, close + 1) if close < len(ids) else len(ids)
    return mask


class SFTDataset(Dataset):
    """`(input_ids, labels)` LongTensors of length max_seq_len, one per conversation line."""

    def __init__(self, index_or_path: JsonlIndex | str | Path, tokenizer, max_seq_len: int,
                 skip_bad_lines: bool = False):
        self.header, self.end = mask_markers(tokenizer)
        if isinstance(index_or_path, JsonlIndex):
            self.index = index_or_path
        else:
            self.index = JsonlIndex(resolve_data_path(index_or_path), skip_bad_lines,
                                    parse=ConversationParser(unwritten_fields(tokenizer)))
        self.tokenizer = tokenizer
        self.max_seq_len = max_seq_len
        self.pad = pad_id(tokenizer)
        self.cut = PrefixCut(backend_json(tokenizer), max_seq_len)  # the text a sample needs

    def __len__(self) -> int:
        return len(self.index)

    def encode(self, conversation: dict[str, Any]) -> tuple[list[int], int]:
        """The conversation's ids cut to max_seq_len, and its length before the cut."""
        text = render(self.tokenizer, conversation)
        head = self.cut(text)
        ids = self._ids(head)
        if len(head) == len(text):
            return ids[:self.max_seq_len], len(ids)
        # A long conversation (a 60 MB line took 19 GB encoded at once) is counted piece by
        # piece: `cut` only shortens a text its pieces encode exactly.
        return ids[:self.max_seq_len], sum(len(self._ids(piece)) for piece in pieces(text))

    def _ids(self, text: str) -> list[int]:
        # verbose=False: a sample's ids are cut to max_seq_len, so transformers' "longer than
        # the model ... indexing errors" warning never comes true.
        return self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]

    def sample(self, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        padded = ids + [self.pad] * (self.max_seq_len - len(ids))
        mask = supervised_positions(padded, self.header, self.end)
        input_ids = torch.tensor(padded, dtype=torch.long)
        labels = torch.where(torch.tensor(mask), input_ids, IGNORE_INDEX)
        return input_ids, labels

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        # The head `cut` keeps is enough for max_seq_len ids: a sample needs no length.
        text = self.cut(render(self.tokenizer, self.index.text(i)))
        return self.sample(self._ids(text)[:self.max_seq_len])


def unfit_conversations(dataset: SFTDataset, most: int = 256) -> int:
    """How many conversations were looked at when none keeps any part of a reply within
    max_seq_len (a target to learn); 0 when one does. At most `most`, taken evenly across the
    file, since a file may hold GBs (and one sorted by length fits only at its end)."""
    total = len(dataset)
    probed = min(most, total)
    fits = any(bool((dataset[n * total // probed][1][1:] != IGNORE_INDEX).any())
               for n in range(probed))
    return 0 if fits else probed
