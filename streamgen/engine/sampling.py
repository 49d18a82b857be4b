"""Drawing tokens from logits, reproducibly and independently of batching.

Every patch gets its own random numbers, derived from ``(seed, draw, f, y, x)`` (``draw`` numbers the
independent sets of one patch: its tokens, then its redrawn borders): one uniform per token, drawn
when the patch starts. A token is then the inverse CDF of the filtered distribution at that
uniform. So the same seed gives the same frames whatever else runs in the same batch, and a stream's
random state is nothing but its seed and plan position (which a snapshot can store).
"""
from __future__ import annotations

import hashlib
import struct

import torch
from torch import Tensor

from streamgen.engine.adc import Pos
from streamgen.config import SamplingConfig


def patch_seed(seed: int, draw: int, pos: Pos) -> int:
    """A 63-bit seed for one set of draws (`patch_uniforms`) of one patch of one stream, mixing every
    coordinate."""
    raw = struct.pack("<qqqqq", seed, draw, *pos)
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "little") >> 1


def patch_uniforms(seeds: list[int], pos: Pos, tokens: int, device: torch.device | str = "cpu",
                   draw: int = 0) -> Tensor:
    """Uniforms (len(seeds), tokens) float64 in [0, 1) for the patch at ``pos``, one row per stream.

    A row depends only on its own stream's seed, so a stream gives the same tokens alone or batched.
    ``draw`` numbers independent sets for one patch: 0 draws its tokens, 1 redraws its borders
    (`SamplingConfig.refine_borders`).
    """
    out = torch.empty(len(seeds), tokens, dtype=torch.float64)
    for r, seed in enumerate(seeds):
        g = torch.Generator().manual_seed(patch_seed(seed, draw, pos))
        out[r] = torch.rand(tokens, generator=g, dtype=torch.float64)
    return out.to(device)


def filter_logits(logits: Tensor, cfg: SamplingConfig) -> Tensor:
    """Temperature, top-k and top-p applied to logits (B, V); removed tokens get -inf."""
    logits = logits / cfg.temperature
    if cfg.top_k is not None and cfg.top_k < logits.shape[-1]:
        kth = torch.topk(logits, cfg.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p is not None and cfg.top_p < 1.0:
        logits = logits.masked_fill(~top_p_mask(logits, cfg.top_p), float("-inf"))
    return logits


def sample(logits: Tensor, u: Tensor, cfg: SamplingConfig) -> Tensor:
    """Tokens (B,) int64 from logits (B, V) and uniforms u (B,) in [0, 1)."""
    if cfg.temperature == 0:
        return logits.argmax(-1)
    if cfg.temperature != 1.0 or cfg.top_k is not None or cfg.top_p is not None:
        logits = filter_logits(logits.float(), cfg)
    cdf = torch.softmax(logits, -1, dtype=torch.float64).cumsum_(-1)  # (B, V)
    tok = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)[:, 0]
    return tok.clamp_(max=logits.shape[-1] - 1)


def guide(logits: Tensor, scale: float | Tensor) -> Tensor:
    """Classifier-free guidance: logits (2B, ..., V) stacked [cond; uncond] -> (B, ..., V).

    ``scale`` is a number or a tensor broadcasting against (B, ..., 1): one scale per row or token."""
    cond, uncond = logits.chunk(2, 0)
    return uncond + scale * (cond - uncond)


def draw_logits(logits: Tensor, cfg: SamplingConfig, guided: bool, shown: Tensor | None) -> Tensor:
    """The logits a token is drawn from: ``logits`` (2B, ..., V) stacked [cond; uncond] when ``guided``,
    else (B, ..., V); ``shown`` (B, ...) bool marks the tokens whose place the previous frame shows
    (None: none of them; the caller decides that once per patch, not per token).

    Guidance is ``cfg.guidance``. A shown token is drawn only among the conditional model's likeliest tokens reaching ``cfg.shown_top_p``: guidance may
    reorder them (it decides, say, whether the scene moves) but not bring in a token the model finds
    implausible there. Without that limit a previous-frame model's video falls apart within frames:
    each frame re-rolls the tail of every token, guidance amplifies it, and the errors compound.
    """
    cond = logits.chunk(2, 0)[0] if guided else logits
    out = logits
    if guided:
        out = guide(logits, cfg.guidance)
    if shown is not None and cfg.shown_top_p is not None:
        keep = top_p_mask(cond.float(), cfg.shown_top_p)
        out = out.masked_fill(shown[..., None] & ~keep, float("-inf"))
    return out


def top_p_mask(logits: Tensor, p: float) -> Tensor:
    """True for the smallest set of likeliest tokens whose probability reaches ``p`` (the likeliest
    always); logits (..., V)."""
    sorted_logits, idx = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    keep_sorted = probs.cumsum(-1) - probs < p
    return torch.zeros_like(keep_sorted).scatter(-1, idx, keep_sorted)
