"""Padded pretraining samples, one document per sample, as in upstream MiniMind-3.

Sample layout for max_seq_len T:   bos, text tokens..., eos, pad, pad, ...   (exactly T ids)
labels equal input_ids except -100 at padding positions; the model shifts internally, so
bos is never a target and eos always is. A text longer than T-2 tokens keeps its head and
still ends with eos (the model learns that documents end, even when cut).

Unlike upstream, bos/eos are not doubled when a text already carries them: MiniMind's
`pretrain_hq.jsonl` lines start with `<|im_start|>` and end with `<|im_end|>`. The check is
on token ids, so it works for any tokenizer whose bos/eos are single special tokens.
"""

from itertools import chain
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .corpus import resolve_data_path
from .fast_encode import PrefixCut, backend_json
from .jsonl import JsonlIndex
from .stream import wrap_documents

IGNORE_INDEX = -100  # torch.nn.functional.cross_entropy skips these targets


def special_ids(tokenizer) -> tuple[int, int, int]:
    """(bos, eos, pad) ids (see `pad_id`)."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if bos is None or eos is None:
        raise ValueError("the tokenizer defines no bos/eos token; pretraining needs both")
    return bos, eos, pad_id(tokenizer)


def pad_id(tokenizer) -> int:
    """What fills a sample past its text; a tokenizer without pad pads with eos (padding is
    masked anyway)."""
    pad = tokenizer.pad_token_id
    return tokenizer.eos_token_id if pad is None else pad


def wrap_document(ids: list[int], bos: int, eos: int) -> list[int]:
    """bos + ids + eos, without doubling a bos/eos the text already starts/ends with."""
    start = 1 if ids[:1] == [bos] else 0
    end = len(ids) - 1 if len(ids) > start and ids[-1] == eos else len(ids)
    return [bos, *ids[start:end], eos]


class PretrainDataset(Dataset):
    """`(input_ids, labels)` LongTensors of length max_seq_len, one per JSONL line."""

    def __init__(self, index_or_path: JsonlIndex | str | Path, tokenizer, max_seq_len: int, skip_bad_lines: bool = False):
        if max_seq_len < 2:
            raise ValueError(f"max_seq_len must be at least 2 (room for bos and eos), got {max_seq_len}")
        if isinstance(index_or_path, JsonlIndex):
            self.index = index_or_path
        else:
            self.index = JsonlIndex(resolve_data_path(index_or_path), skip_bad_lines=skip_bad_lines)
        self.tokenizer = tokenizer
        self.max_seq_len = max_seq_len
        self.bos, self.eos, self.pad = special_ids(tokenizer)
        self.cut = PrefixCut(backend_json(tokenizer), max_seq_len)  # the text a sample needs

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        T = self.max_seq_len
        # Truncating at T tokens is enough: at most one leading bos is dropped, and a cut
        # text's last token is replaced by eos anyway. The cut text bounds the work on huge
        # lines (the tokenizer encodes all of a text before it truncates).
        ids = self.tokenizer(self.cut(self.index.text(i)), add_special_tokens=False,
                             truncation=True, max_length=T)["input_ids"]
        doc = wrap_document(ids, self.bos, self.eos)
        if len(doc) > T:
            doc = doc[: T - 1] + [self.eos]
        n = len(doc)
        input_ids = torch.full((T,), self.pad, dtype=torch.long)
        input_ids[:n] = torch.tensor(doc, dtype=torch.long)
        labels = input_ids.clone()
        labels[n:] = IGNORE_INDEX  # by position, so a literal pad token inside the text still counts
        return input_ids, labels

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A whole batch, which DataLoader asks for when this method exists: one tokenizer call
        for all its texts (the Rust batch path, on every core) and the wrapping, truncation and
        padding above as array operations. Sample by sample, tokenizing kept a GPU waiting."""
        T = self.max_seq_len
        texts = [self.cut(self.index.text(i)) for i in indices]
        encoded = self.tokenizer(texts, add_special_tokens=False, truncation=True,
                                 max_length=T)["input_ids"]
        counts = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        ids = np.fromiter(chain.from_iterable(encoded), dtype=np.int64, count=int(counts.sum()))
        stream, lengths = wrap_documents(ids, counts, self.bos, self.eos)
        kept = np.minimum(lengths, T)
        position = np.arange(T)
        valid = position < kept[:, None]
        starts = np.cumsum(lengths) - lengths
        window = np.minimum(starts[:, None] + position, max(len(stream) - 1, 0))
        input_ids = np.where(valid, stream[window].astype(np.int64), self.pad)
        input_ids[lengths > T, T - 1] = self.eos  # a cut text still ends with eos
        labels = np.where(valid, input_ids, IGNORE_INDEX)
        return list(zip(torch.from_numpy(input_ids).unbind(), torch.from_numpy(labels).unbind()))
