"""`NeuralCodec`: a trained VQGAN, optionally with its Pixel-Guided decoder, behind the codec interface."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from streamgen import checkpoint as ckpt
from streamgen.errors import bad
from streamgen.plugins.codec import Tiling, decode_tiled

from .vqgan import CodecConfig, PixelGuidedDecoder, VQGAN, to_pixels, to_uint8


class NeuralCodec:
    """Frames <-> tokens with a VQGAN; ``decode(tokens, prev)`` uses the PG decoder when it has one.

    A canvas wider or taller than ``tiling.span`` tokens (48: 768 px at factor 16) is decoded in
    windows of ``tiling.tile`` tokens (`streamgen.plugins.codec.Tiling`), so decoding takes the memory
    of one window whatever the canvas's size; ``tiling = None`` decodes it in one piece. ``context`` 6
    covers the receptive field of both decoders: with every GroupNorm's statistics held at the whole
    canvas's, windows give the one-piece decode bit for bit (5 tokens: 1 level off). What remains is
    that a window's GroupNorms normalise over the window rather than over the whole canvas;
    `benchmarks/tiled_canvas.py` measures that difference, and the windows cross-fade over 2 * 2
    tokens so that it never steps at a boundary.
    """

    name = "vqgan"

    def __init__(self, vq: VQGAN, pg: PixelGuidedDecoder | None = None):
        self.vq = vq.eval()
        self.pg = pg.eval() if pg is not None else None
        self.cfg: CodecConfig = vq.cfg
        self.factor = self.cfg.factor
        self.vocab_size = self.cfg.codebook_size
        self.tiling: Tiling | None = Tiling(tile=32, context=6, blend=2)

    @classmethod
    def load(cls, vqgan_path: str | Path, pg_path: str | Path | None = None) -> "NeuralCodec":
        """Load from safetensors checkpoints (each with its JSON config beside it)."""
        cfg, _ = ckpt.read_config(vqgan_path, CodecConfig)
        vq = VQGAN(cfg)
        ckpt.load_state(vq, ckpt.read(vqgan_path), vqgan_path)
        pg = None
        if pg_path is not None:
            pcfg, _ = ckpt.read_config(pg_path, CodecConfig)
            if pcfg != cfg:
                raise ckpt.CheckpointError(f"PG decoder `{pg_path}` was made for another codec config "
                                           f"than `{vqgan_path}`")
            pg = PixelGuidedDecoder(cfg)
            ckpt.load_state(pg, ckpt.read(pg_path), pg_path)
        return cls(vq, pg)

    def _check_frames(self, frames: Tensor, name: str = "frames") -> None:
        if not isinstance(frames, Tensor) or frames.dtype != torch.uint8 or frames.ndim != 4 \
                or frames.shape[-1] != 3:
            shown = f"{frames.dtype} {tuple(frames.shape)}" if isinstance(frames, Tensor) else type(frames)
            raise bad(name, "must be a uint8 tensor of shape (B, H, W, 3)", shown)
        H, W = frames.shape[1:3]
        if H % self.factor or W % self.factor or H == 0 or W == 0:
            raise bad(name, f"height and width must be positive multiples of the codec's factor "
                      f"{self.factor}; crop or resize to fit", (H, W))

    @torch.inference_mode()
    def encode(self, frames: Tensor) -> Tensor:
        """uint8 (B, H, W, 3) -> int64 (B, H/f, W/f)."""
        self._check_frames(frames)
        return self.vq.quantizer.indices(self.vq.encoder(to_pixels(frames)))

    @torch.inference_mode()
    def decode(self, tokens: Tensor, prev: Tensor | None = None) -> Tensor:
        """int64 (B, h, w) [+ previous frame uint8 (B, H, W, 3)] -> uint8 (B, H, W, 3)."""
        if tokens.dtype != torch.long or tokens.ndim != 3:
            raise bad("tokens", "must be an int64 tensor of shape (B, h, w)",
                      f"{tokens.dtype} {tuple(tokens.shape)}")
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
            raise bad("tokens", f"must lie in [0, {self.vocab_size})",
                      (int(tokens.min()), int(tokens.max())))
        if prev is not None and self.pg is not None:
            self._check_frames(prev, "prev")
            B, h, w = tokens.shape
            if tuple(prev.shape[:3]) != (B, h * self.factor, w * self.factor):
                raise bad("prev", f"must be the previous frame, shape ({B}, {h * self.factor}, "
                          f"{w * self.factor}, 3)", tuple(prev.shape))
        else:
            prev = None
        if self.tiling is None:
            return self._decode(tokens, prev)
        return decode_tiled(self._decode, tokens, prev, self.tiling, self.factor)

    def _decode(self, tokens: Tensor, prev: Tensor | None) -> Tensor:
        """One piece: checked tokens (B, h, w) [+ checked previous frame] -> uint8 (B, H, W, 3)."""
        q = self.vq.quantizer.lookup(tokens)
        if prev is None:
            return to_uint8(self.vq.decoder(q))
        return to_uint8(self.pg(q, to_pixels(prev)))
