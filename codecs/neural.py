"""`NeuralCodec`: a trained VQGAN, optionally with its Pixel-Guided decoder, behind the codec interface."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from streamgen import checkpoint as ckpt
from streamgen.errors import bad

from .vqgan import CodecConfig, PixelGuidedDecoder, VQGAN, to_pixels, to_uint8


class NeuralCodec:
    """Frames <-> tokens with a VQGAN; ``decode(tokens, prev)`` uses the PG decoder when it has one."""

    name = "vqgan"

    def __init__(self, vq: VQGAN, pg: PixelGuidedDecoder | None = None):
        self.vq = vq.eval()
        self.pg = pg.eval() if pg is not None else None
        self.cfg: CodecConfig = vq.cfg
        self.factor = self.cfg.factor
        self.vocab_size = self.cfg.codebook_size

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
        q = self.vq.quantizer.lookup(tokens)
        if prev is None or self.pg is None:
            return to_uint8(self.vq.decoder(q))
        self._check_frames(prev, "prev")
        B, h, w = tokens.shape
        if tuple(prev.shape[:3]) != (B, h * self.factor, w * self.factor):
            raise bad("prev", f"must be the previous frame, shape ({B}, {h * self.factor}, "
                      f"{w * self.factor}, 3)", tuple(prev.shape))
        return to_uint8(self.pg(q, to_pixels(prev)))
