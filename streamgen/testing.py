"""Helpers for testing with streamgen: tiny random models that run on a CPU in milliseconds.

No trained weights and no GPU are needed: plugin authors use these to exercise their tasks.
"""
from __future__ import annotations

from typing import Any

import torch

from .config import PRESETS, ModelConfig
from .engine import Engine
from .model import VisionDecoder


def tiny_config(**over: Any) -> ModelConfig:
    """The ``tiny`` preset (2 layers, width 32, 4x4-token patches, 64 codes) with overrides."""
    data = dict(PRESETS["tiny"])
    data.update(over)
    return ModelConfig(**data)


def tiny_engine(seed: int = 0, factor: int = 2, **over: Any) -> Engine:
    """An `Engine` with a random tiny model and a palette codec of ``factor`` pixels per token."""
    from streamgen.codecs import PaletteCodec

    torch.manual_seed(seed)
    cfg = tiny_config(**over)
    return Engine(VisionDecoder(cfg), PaletteCodec(cfg.vocab_size, factor=factor))
