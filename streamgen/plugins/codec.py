"""What the engine needs of a codec: frames to tokens and tokens to frames.

Frames are uint8 (B, Hpx, Wpx, 3); tokens are int64 (B, h, w) with Hpx = h * factor. ``decode`` may
take the previous frame's pixels (the Pixel-Guided VQGAN uses them; other codecs may ignore them).
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class Codec(Protocol):
    name: str
    factor: int  # pixels per token along each side
    vocab_size: int  # number of distinct tokens

    def encode(self, frames: Tensor) -> Tensor:
        """uint8 (B, Hpx, Wpx, 3) -> int64 (B, h, w)."""
        ...

    def decode(self, tokens: Tensor, prev: Tensor | None = None) -> Tensor:
        """int64 (B, h, w) [+ previous frame uint8 (B, Hpx, Wpx, 3)] -> uint8 (B, Hpx, Wpx, 3)."""
        ...
