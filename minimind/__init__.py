"""MiniMind language models: config, model and upstream weight helpers (no UI imports).

The names below load on first use: `import minimind.settings` (which the CLI needs to parse its
flags) must not pay for importing torch and transformers.
"""

import importlib

_EXPORTS = {
    "MiniMindConfig": "config",
    "MiniMindForCausalLM": "model",
    "WeightsMismatchError": "upstream",
    "export_upstream_state_dict": "upstream",
    "infer_config": "upstream",
    "load_into": "upstream",
    "load_model": "checkpoint_reader",
    "load_pretrained_weights": "checkpoint_reader",
    "read_checkpoint": "checkpoint_reader",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'minimind' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
