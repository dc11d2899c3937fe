"""Data pipeline: JSONL reading, the bundled corpus, padded and packed pretraining datasets.

The names below load on first use, so that the tokenizing worker processes (and the app's
readouts) can import the light modules here without paying for torch.
"""

import importlib

_EXPORTS = {
    "DataError": "jsonl",
    "JsonlIndex": "jsonl",
    "PackedDataset": "packed",
    "build_token_cache": "packed",
    "PretrainDataset": "pretrain",
    "resolve_data_path": "corpus",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'minimind.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
