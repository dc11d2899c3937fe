"""Data pipeline: JSONL reading, the bundled corpus, padded and packed pretraining datasets."""

from .corpus import resolve_data_path
from .jsonl import DataError, JsonlIndex
from .packed import PackedDataset, build_token_cache
from .pretrain import PretrainDataset

__all__ = ["DataError", "JsonlIndex", "PackedDataset", "PretrainDataset", "build_token_cache", "resolve_data_path"]
