"""Drawing tokens from logits, reproducibly and independently of batching.

Every patch gets its own random numbers, derived from ``(seed, f, y, x)``: one uniform per token,
drawn when the patch starts. A token is then the inverse CDF of the filtered distribution at that
uniform. So the same seed gives the same frames whatever else runs in the same batch, and a stream's
random state is nothing but its seed and plan position (which a snapshot can store).
"""
from __future__ import annotations

import hashlib
import struct

import torch
from torch import Tensor

from .adc import Pos
from .config import SamplingConfig


def patch_seed(seed: int, row: int, pos: Pos) -> int:
    """A 63-bit seed for one patch of one batch row, mixing every coordinate."""
    raw = struct.pack("<qqqqq", seed, row, *pos)
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "little") >> 1


def patch_uniforms(seeds: list[int], pos: Pos, tokens: int, device: torch.device | str = "cpu"
                   ) -> Tensor:
    """Uniforms (len(seeds), tokens) float64 in [0, 1) for the patch at ``pos``, one row per stream.

    A row depends only on its own stream's seed, so a stream gives the same tokens alone or batched.
    """
    out = torch.empty(len(seeds), tokens, dtype=torch.float64)
    for r, seed in enumerate(seeds):
        g = torch.Generator().manual_seed(patch_seed(seed, 0, pos))
        out[r] = torch.rand(tokens, generator=g, dtype=torch.float64)
    return out.to(device)


def filter_logits(logits: Tensor, cfg: SamplingConfig) -> Tensor:
    """Temperature, top-k and top-p applied to logits (B, V); removed tokens get -inf."""
    logits = logits / cfg.temperature
    if cfg.top_k is not None and cfg.top_k < logits.shape[-1]:
        kth = torch.topk(logits, cfg.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p is not None and cfg.top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop a token when the tokens before it already reach p; the most likely always stays
        drop = probs.cumsum(-1) - probs >= cfg.top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, idx, sorted_logits)
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


def guide(logits: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance: logits (2B, V) stacked [cond; uncond] -> (B, V)."""
    cond, uncond = logits.chunk(2, 0)
    return uncond + scale * (cond - uncond)
