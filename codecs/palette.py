"""A fixed colour-palette codec: each token is one flat colour block of ``factor`` x ``factor`` pixels.

Not a neural codec: no training, no weights. It exists so the engine, its tests and its benchmarks
can turn tokens into real frames on their own, and as the smallest example of the codec interface.
"""
from __future__ import annotations

import torch
from torch import Tensor

from streamgen.errors import bad
from streamgen.plugins.codec import Tiling


class PaletteCodec:
    name = "palette"
    tiling = Tiling(tile=64)  # each token decodes to its own block: windows need no context

    def __init__(self, vocab_size: int, factor: int = 8, seed: int = 0):
        if vocab_size < 2:
            raise bad("vocab_size", "must be at least 2", vocab_size)
        if factor < 1:
            raise bad("factor", "must be at least 1", factor)
        self.vocab_size, self.factor = vocab_size, factor
        g = torch.Generator().manual_seed(seed)
        self.palette = torch.randint(0, 256, (vocab_size, 3), generator=g, dtype=torch.uint8)

    def _check(self, frames: Tensor) -> None:
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise bad("frames", "must be uint8 of shape (B, H, W, 3)",
                      f"{frames.dtype} {tuple(frames.shape)}")
        H, W = frames.shape[1:3]
        if H % self.factor or W % self.factor:
            raise bad("frames", f"height and width must be multiples of {self.factor}", (H, W))

    def encode(self, frames: Tensor) -> Tensor:
        self._check(frames)
        B, H, W, _ = frames.shape
        f = self.factor
        means = frames.float().view(B, H // f, f, W // f, f, 3).mean((2, 4))  # (B, h, w, 3)
        d = torch.cdist(means.view(B, -1, 3), self.palette.float()[None].expand(B, -1, -1))
        return d.argmin(-1).view(B, H // f, W // f)

    def decode(self, tokens: Tensor, prev: Tensor | None = None) -> Tensor:
        f = self.factor
        rgb = self.palette[tokens.cpu()]  # (B, h, w, 3)
        return rgb.repeat_interleave(f, 1).repeat_interleave(f, 2)
