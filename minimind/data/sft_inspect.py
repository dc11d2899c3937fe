"""What a conversation file holds for the sft/lora stages: conversations, turns, tokens, and how
many of them the loss trains on (upstream's mask, via `SFTDataset`, so the count is the one
training uses), at a given max_seq_len.

One pass in this process: every conversation goes through the chat template (Jinja, in
Python), so this takes about a minute per 100 MB. Bad lines are counted, never fatal.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .corpus import resolve_data_path
from .jsonl import JsonlIndex, ProgressFn
from .sft import SFTDataset, parse_conversation


@dataclass
class ConversationInspection:
    path: str
    max_seq_len: int
    documents: int
    """Conversations (good lines)."""
    turns: int
    tokens: int
    """Tokens of the rendered conversations as trained: each cut at max_seq_len, no padding."""
    tokens_before_truncation: int
    supervised_tokens: int
    """Targets the loss counts: the assistants' replies, each <|im_end|> and the newline after."""
    truncated_documents: int
    bad_lines: int
    first_bad: list[tuple[int, str]] = field(default_factory=list)

    @property
    def supervised_share(self) -> float:
        return self.supervised_tokens / max(self.tokens, 1)

    def to_dict(self) -> dict:
        return {**asdict(self), "supervised_share": self.supervised_share}


def inspect_conversations(spec: str, tokenizer, max_seq_len: int,
                          progress: ProgressFn | None = None) -> ConversationInspection:
    index = JsonlIndex(resolve_data_path(spec), skip_bad_lines=True, progress=progress,
                       parse=parse_conversation)
    data = SFTDataset(index, tokenizer, max_seq_len)
    turns = tokens = before = supervised = truncated = 0
    for i in range(len(index)):
        conversation = index.text(i)
        ids, length = data.encode(conversation)
        turns += len(conversation["messages"])
        tokens += len(ids)
        before += length
        supervised += int((data.sample(ids)[1] != -100).sum())
        truncated += length > max_seq_len
    return ConversationInspection(
        path=str(index.path), max_seq_len=max_seq_len, documents=len(index), turns=turns,
        tokens=tokens, tokens_before_truncation=before, supervised_tokens=supervised,
        truncated_documents=truncated, bad_lines=index.bad_lines,
        first_bad=list(index.first_bad))
