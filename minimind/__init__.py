"""MiniMind language models: config, model and upstream weight helpers (no UI imports)."""

from transformers import AutoConfig, AutoModelForCausalLM

from .config import MiniMindConfig
from .model import MiniMindForCausalLM
from .upstream import (
    WeightsMismatchError,
    export_upstream_state_dict,
    infer_config,
    load_into,
    load_model,
    load_pretrained_weights,
    load_weights_file,
)

# Let transformers' Auto classes open a saved MiniMind folder (config.json model_type "minimind").
AutoConfig.register("minimind", MiniMindConfig)
AutoModelForCausalLM.register(MiniMindConfig, MiniMindForCausalLM)

__all__ = [
    "MiniMindConfig",
    "MiniMindForCausalLM",
    "WeightsMismatchError",
    "export_upstream_state_dict",
    "infer_config",
    "load_into",
    "load_model",
    "load_pretrained_weights",
    "load_weights_file",
]
