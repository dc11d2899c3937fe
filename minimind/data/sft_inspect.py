"""What a conversation file holds for the sft/lora stages: conversations, turns, tokens, and how
many of them the loss trains on (upstream's mask, via `SFTDataset`, so the count is the one
training uses), at a given max_seq_len.

One pass in this process: every conversation goes through the chat template (Jinja, in
Python), so this takes about a minute per 100 MB. Bad lines are counted, never fatal. The
result is cached as JSON, keyed by the file's bytes, the tokenizer (its chat template included)
and max_seq_len, so the form's readouts find it again as they find a pretraining inspection.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from minimind.atomic import atomic_write_bytes

from .conversation import ConversationParser
from .corpus import default_cache_dir, file_digest, resolve_data_path
from .jsonl import JsonlIndex, ProgressFn, check_file, named_file
from .packed import tokenizer_digest
from .sft import SFTDataset, chat_template_digest, mask_markers, unwritten_fields

FORMAT = "v3"  # bump when the figures change meaning, so old inspections are not reused


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
    unsupervised_documents: int
    """Conversations with no target left after the cut (every reply past max_seq_len): they
    train nothing, and a batch of only such gives no loss at all."""
    bad_lines: int
    first_bad: list[tuple[int, str]] = field(default_factory=list)
    lengths: dict[int, int] = field(default_factory=dict)
    """Rendered length in tokens (before the cut) -> how many conversations have it."""
    cached: bool = field(default=False, compare=False)
    """Read from the cache rather than computed now (not saved)."""

    @property
    def supervised_share(self) -> float:
        return self.supervised_tokens / max(self.tokens, 1)

    def to_dict(self) -> dict:
        return {**asdict(self), "supervised_share": self.supervised_share}

    @classmethod
    def from_json(cls, text: str) -> ConversationInspection:
        data = json.loads(text)
        data["first_bad"] = [tuple(x) for x in data["first_bad"]]
        data["lengths"] = {int(k): v for k, v in data["lengths"].items()}
        return cls(**{**data, "cached": True})


def tokenizer_key(tokenizer) -> str:
    """The tokenizer's ids and its chat template: either changes what a conversation becomes."""
    return f"{tokenizer_digest(tokenizer)}{chat_template_digest(tokenizer)}"


def cache_path(path: Path, data_digest: str, key: str, max_seq_len: int,
               cache_dir: Path | None = None) -> Path:
    # A folder of their own: the pretraining inspections' glob never sees these.
    root = Path(cache_dir) if cache_dir else default_cache_dir() / "inspect-sft"
    return root / f"{path.stem}-{data_digest}-{key}-{max_seq_len}-{FORMAT}.json"


def conversation_inspections_of(path: Path, data_digest: str, max_seq_len: int,
                                cache_dir: Path | None = None) -> list[Path]:
    """Inspections of these data bytes at this max_seq_len, whatever the tokenizer."""
    pattern = cache_path(path, data_digest, "*", max_seq_len, cache_dir)
    return sorted(pattern.parent.glob(pattern.name))


def cached_conversation_inspection(path: Path, data_digest: str, key: str, max_seq_len: int,
                                   cache_dir: Path | None = None
                                   ) -> ConversationInspection | None:
    try:
        found = ConversationInspection.from_json(
            cache_path(path, data_digest, key, max_seq_len, cache_dir).read_text("utf-8"))
    except (OSError, ValueError, TypeError, KeyError):
        return None
    # These bytes may have been inspected elsewhere; the path is the one the user named.
    return replace(found, path=str(named_file(path)))


def inspect_conversations(spec: str, tokenizer, max_seq_len: int,
                          progress: ProgressFn | None = None, *,
                          phase: Callable[[str], None] | None = None,
                          partial: Callable[[ConversationInspection], None] | None = None,
                          cache_dir: Path | None = None, use_cache: bool = True
                          ) -> ConversationInspection:
    """Inspect a conversation file (or `builtin:` set), from the cache when these bytes were
    inspected with this tokenizer at this max_seq_len before. `phase("hashing" | "reading" |
    "rendering")` says what the `progress(done_bytes, total_bytes)` that follows counts;
    `partial(figures so far)` follows the rendering pass. Raises DataError for a missing, empty
    or unreadable file, ChatTemplateError for a tokenizer that cannot render conversations."""
    path = resolve_data_path(spec)
    size = check_file(path)
    mask_markers(tokenizer)  # a tokenizer without a usable template fails before any pass
    if phase:
        phase("hashing")
    digest = file_digest(path, progress)
    key = tokenizer_key(tokenizer)
    if use_cache and (found := cached_conversation_inspection(path, digest, key, max_seq_len,
                                                              cache_dir)):
        return found
    if phase:
        phase("reading")
    index = JsonlIndex(path, skip_bad_lines=True, progress=progress,
                       parse=ConversationParser(unwritten_fields(tokenizer)))
    if phase:
        phase("rendering")
    data = SFTDataset(index, tokenizer, max_seq_len)
    turns = tokens = before = supervised = truncated = unsupervised = 0
    lengths: Counter[int] = Counter()

    def figures(documents: int) -> ConversationInspection:
        return ConversationInspection(
            path=str(named_file(index.path)), max_seq_len=max_seq_len, documents=documents,
            turns=turns, tokens=tokens, tokens_before_truncation=before,
            supervised_tokens=supervised, truncated_documents=truncated,
            unsupervised_documents=unsupervised, bad_lines=index.bad_lines,
            first_bad=list(index.first_bad), lengths=dict(sorted(lengths.items())))

    # A hundred reports or more: a smooth bar, and a cancel (raised from `progress`) within
    # a thousand conversations, at no measurable cost.
    every = min(max(len(index) // 100, 1), 1000)
    for i in range(len(index)):
        conversation = index.text(i)
        ids, length = data.encode(conversation)
        turns += len(conversation["messages"])
        tokens += len(ids)
        before += length
        targets = int((data.sample(ids)[1] != -100).sum())
        supervised += targets
        unsupervised += targets == 0
        truncated += length > max_seq_len
        lengths[length] += 1
        if (i + 1) % every == 0:
            if progress:
                progress(int(index.offsets[i]), size)
            if partial:
                partial(figures(i + 1))
    if progress:
        progress(size, size)
    result = figures(len(index))
    saved = asdict(result)
    del saved["cached"]
    atomic_write_bytes(cache_path(path, digest, key, max_seq_len, cache_dir),
                       json.dumps(saved, ensure_ascii=False).encode())
    return result
