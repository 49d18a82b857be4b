"""VQGAN and Pixel-Guided VQGAN (section 3.3.2, Fig. 9 of NUWA-Infinity), small enough for a CPU.

Shape letters: B batch, C channels, Hpx x Wpx pixels, h x w tokens (Hpx = h * factor), K codes,
d code width. Pixels inside the networks are float in [-1, 1], (B, 3, Hpx, Wpx).

* `VQGAN`: convolutional encoder -> l2-normalised vector quantizer (EMA codebook, dead codes
  restarted from the batch) -> convolutional decoder.
* `PixelGuidedDecoder`: the VQGAN decoder plus a guide encoder over the previous frame's pixels with
  one level per decoder level; each level's output is added element-wise to the matching decoder
  level. Its output convolutions start at zero, so before training it decodes exactly as the plain
  decoder does.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from streamgen.config import Strict
from streamgen.errors import bad


class CodecConfig(Strict):
    """Shape of a VQGAN (and of its pixel-guided decoder)."""

    factor: Literal[8, 16] = Field(8, description="pixels per token along each side")
    codebook_size: int = Field(512, ge=2, le=65536, description="K: number of codes")
    code_dim: int = Field(32, ge=2, le=1024, description="d: width of a code (l2-normalised)")
    channels: tuple[int, ...] = Field((32, 64, 64, 96), description="channels per level, finest first")
    mid_blocks: int = Field(1, ge=1, le=16, description="residual blocks at the token grid, in the encoder "
                            "and in the decoder: cheap (the grid is small) and they widen each token's view")
    ema_decay: float = Field(0.99, gt=0.0, lt=1.0, description="codebook EMA decay")
    dead_after: int = Field(200, ge=1, description="steps unused before a code is restarted")

    @model_validator(mode="after")
    def _levels(self) -> "CodecConfig":
        need = int(math.log2(self.factor)) + 1
        if len(self.channels) != need:
            raise bad("channels", f"needs {need} entries for factor {self.factor} (one per level, finest "
                      "first)", f"{len(self.channels)} entries")
        return self

    @property
    def levels(self) -> int:
        """Downsampling steps: 3 for factor 8, 4 for factor 16."""
        return len(self.channels) - 1


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, c), c)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.n1, self.c1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.n2, self.c2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.c1(F.silu(self.n1(x)))
        h = self.c2(F.silu(self.n2(h)))
        return self.skip(x) + h


class Encoder(nn.Module):
    """(B, 3, Hpx, Wpx) -> (B, d, h, w); also usable as the guide encoder (``features``)."""

    def __init__(self, cfg: CodecConfig, out_dim: int):
        super().__init__()
        ch = cfg.channels
        self.inp = nn.Conv2d(3, ch[0], 3, padding=1)
        self.blocks = nn.ModuleList(ResBlock(ch[i], ch[i]) for i in range(cfg.levels))
        self.downs = nn.ModuleList(nn.Conv2d(ch[i], ch[i + 1], 4, stride=2, padding=1)
                                   for i in range(cfg.levels))
        self.mid = ResBlock(ch[-1], ch[-1])
        self.mid_more = nn.Sequential(*(ResBlock(ch[-1], ch[-1]) for _ in range(cfg.mid_blocks - 1)))
        self.out = nn.Sequential(_norm(ch[-1]), nn.SiLU(), nn.Conv2d(ch[-1], out_dim, 1))

    def forward(self, x: Tensor) -> Tensor:
        x = self.inp(x)
        for blk, down in zip(self.blocks, self.downs):
            x = down(blk(x))
        return self.out(self.mid_more(self.mid(x)))


class Decoder(nn.Module):
    """(B, d, h, w) -> (B, 3, Hpx, Wpx); ``guide`` adds one feature map per level."""

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        ch = cfg.channels[::-1]  # coarsest first
        self.inp = nn.Conv2d(cfg.code_dim, ch[0], 3, padding=1)
        self.mid = ResBlock(ch[0], ch[0])
        self.mid_more = nn.Sequential(*(ResBlock(ch[0], ch[0]) for _ in range(cfg.mid_blocks - 1)))
        self.ups = nn.ModuleList(nn.Conv2d(ch[i], ch[i + 1], 3, padding=1) for i in range(cfg.levels))
        self.blocks = nn.ModuleList(ResBlock(ch[i + 1], ch[i + 1]) for i in range(cfg.levels))
        self.out = nn.Sequential(_norm(ch[-1]), nn.SiLU(), nn.Conv2d(ch[-1], 3, 3, padding=1))

    def forward(self, z: Tensor, guide: list[Tensor] | None = None) -> Tensor:
        x = self.mid_more(self.mid(self.inp(z)))
        if guide is not None:
            x = x + guide[0]
        for i, (up, blk) in enumerate(zip(self.ups, self.blocks)):
            x = blk(up(F.interpolate(x, scale_factor=2.0, mode="nearest")))
            if guide is not None:
                x = x + guide[i + 1]
        return self.out(x)


class GuideEncoder(nn.Module):
    """Previous frame (B, 3, Hpx, Wpx) -> one feature map per decoder level, coarsest first."""

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        ch = cfg.channels
        self.inp = nn.Conv2d(3, ch[0], 3, padding=1)
        self.blocks = nn.ModuleList(ResBlock(ch[i], ch[i]) for i in range(cfg.levels + 1))
        self.downs = nn.ModuleList(nn.Conv2d(ch[i], ch[i + 1], 4, stride=2, padding=1)
                                   for i in range(cfg.levels))
        # zero-initialised: an untrained guide adds nothing
        self.outs = nn.ModuleList(nn.Conv2d(c, c, 1) for c in ch)
        for o in self.outs:
            nn.init.zeros_(o.weight)
            nn.init.zeros_(o.bias)

    def forward(self, prev: Tensor) -> list[Tensor]:
        x = self.inp(prev)
        feats = []
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            feats.append(self.outs[i](x))
            if i < len(self.downs):
                x = self.downs[i](x)
        return feats[::-1]


class Quantizer(nn.Module):
    """Nearest l2-normalised code by cosine similarity, EMA codebook, restart of dead codes."""

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        self.cfg = cfg
        codes = F.normalize(torch.randn(cfg.codebook_size, cfg.code_dim), dim=-1)
        self.register_buffer("codebook", codes)  # (K, d)
        self.register_buffer("ema_sum", codes.clone())
        self.register_buffer("ema_count", torch.ones(cfg.codebook_size))
        self.register_buffer("unused_for", torch.zeros(cfg.codebook_size))

    def indices(self, z: Tensor) -> Tensor:
        """z (B, d, h, w) -> (B, h, w) int64."""
        zf = F.normalize(z.permute(0, 2, 3, 1), dim=-1)  # (B, h, w, d)
        return (zf @ self.codebook.t()).argmax(-1)

    def lookup(self, idx: Tensor) -> Tensor:
        """(B, h, w) int64 -> (B, d, h, w)."""
        return self.codebook[idx].permute(0, 3, 1, 2)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Straight-through quantization: (quantized (B, d, h, w), indices (B, h, w), commitment loss)."""
        zn = F.normalize(z, dim=1)
        idx = self.indices(z)
        q = self.lookup(idx)
        commit = F.mse_loss(zn, q.detach())
        if self.training:
            self._update(zn.detach(), idx)
        return zn + (q - zn).detach(), idx, commit

    @torch.no_grad()
    def _update(self, zn: Tensor, idx: Tensor) -> None:
        K, decay = self.cfg.codebook_size, self.cfg.ema_decay
        flat = zn.permute(0, 2, 3, 1).reshape(-1, zn.shape[1])  # (n, d)
        onehot = F.one_hot(idx.reshape(-1), K).type_as(flat)  # (n, K)
        count = onehot.sum(0)
        self.ema_count.mul_(decay).add_(count, alpha=1 - decay)
        self.ema_sum.mul_(decay).add_(onehot.t() @ flat, alpha=1 - decay)
        self.codebook.copy_(F.normalize(self.ema_sum, dim=-1))
        self.unused_for.add_(1).masked_fill_(count > 0, 0)
        dead = (self.unused_for >= self.cfg.dead_after).nonzero().flatten()
        if len(dead):
            pick = flat[torch.randint(0, flat.shape[0], (len(dead),), device=flat.device)]
            self.codebook[dead] = pick
            self.ema_sum[dead] = pick
            self.ema_count[dead] = 1.0
            self.unused_for[dead] = 0


def to_pixels(frames: Tensor) -> Tensor:
    """uint8 (B, Hpx, Wpx, 3) -> float (B, 3, Hpx, Wpx) in [-1, 1]."""
    return frames.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(x: Tensor) -> Tensor:
    """float (B, 3, Hpx, Wpx) in [-1, 1] -> uint8 (B, Hpx, Wpx, 3)."""
    return x.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).permute(0, 2, 3, 1)


class VQGAN(nn.Module):
    def __init__(self, cfg: CodecConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg, cfg.code_dim)
        self.quantizer = Quantizer(cfg)
        self.decoder = Decoder(cfg)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Pixels (B, 3, Hpx, Wpx) in [-1, 1] -> (reconstruction, indices (B, h, w), commitment loss)."""
        q, idx, commit = self.quantizer(self.encoder(x))
        return self.decoder(q), idx, commit

    def codes(self, x: Tensor) -> Tensor:
        """Pixels (B, 3, Hpx, Wpx) in [-1, 1] -> the codebook vectors (B, d, h, w) of their tokens: what
        a decoder reads (no straight-through gradient, no codebook update)."""
        return self.quantizer.lookup(self.quantizer.indices(self.encoder(x)))


class PixelGuidedDecoder(nn.Module):
    """Decoder of frame n guided, level by level, by frame n-1's pixels."""

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        self.cfg = cfg
        self.decoder = Decoder(cfg)
        self.guide = GuideEncoder(cfg)

    @classmethod
    def from_vqgan(cls, vq: VQGAN) -> "PixelGuidedDecoder":
        """Start from a trained VQGAN's decoder; the zero guide makes it decode identically at first."""
        pg = cls(vq.cfg)
        pg.decoder.load_state_dict(vq.decoder.state_dict())
        return pg

    def forward(self, q: Tensor, prev: Tensor) -> Tensor:
        """Codes (B, d, h, w), previous frame (B, 3, Hpx, Wpx) in [-1, 1] -> pixels in [-1, 1]."""
        return self.decoder(q, self.guide(prev))
