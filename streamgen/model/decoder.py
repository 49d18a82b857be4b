"""The vision decoder of NUWA-Infinity (Eqs. 9 to 13) with two ways to run it.

Shape letters: B batch, N patches in a sequence, M tokens per patch, S = M + 1 positions per patch
(a start token, then the M tokens), C context tokens, L layers, H heads, hd head width, D width,
V codebook size, T text tokens, O relative offsets in the extent window.

* `VisionDecoder.forward` is teacher forcing over a whole planned sequence in one pass: a patch
  attends causally to itself and fully to the tokens of earlier patches within the extent, with the
  relative-offset embedding of each (query patch, key patch) pair added to the keys. Training uses it.
* `new_workspace` / `load_context` / `decode_step` / `prefill` / `patch_payload` run one patch at a
  time against context taken from the Nearby Context Pool, with a preallocated key/value workspace.
  Generation uses it. Both compute the same function (tests/test_equivalence.py).

Each patch's sequence starts with a start token, so position m (0 <= m < M) predicts token m, and
the last token is fed once more to complete the patch's cache (positions 1..M are what the NCP keeps).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from streamgen.engine import adc
from streamgen.engine.adc import Pos
from streamgen.config import Extent, ModelConfig


# --- the decode step's parts ----------------------------------------------------------------------------
# A decode step runs one position per row: a normed projection, an output projection added to the
# residual, the feed-forward, each as one addmm on a transposed weight view (Workspace.weights_t).

def _step_qkv(x: Tensor, g: Tensor, b: Tensor, w_t: Tensor, bias: Tensor) -> Tensor:
    """LayerNorm(x) @ w_t + bias: the step's query/key/value (or cross-attention query) projection."""
    return torch.addmm(bias, F.layer_norm(x, (x.shape[-1],), g, b), w_t)


def _step_out(x: Tensor, a: Tensor, w_t: Tensor, bias: Tensor) -> Tensor:
    """x + a @ w_t + bias: an attention's output projection onto the residual stream."""
    return torch.addmm(bias, a, w_t).add_(x)


def _step_mlp(x: Tensor, g: Tensor, b: Tensor, w1_t: Tensor, b1: Tensor, w2_t: Tensor, b2: Tensor) -> Tensor:
    """x + the feed-forward of LayerNorm(x)."""
    h = F.gelu(torch.addmm(b1, F.layer_norm(x, (x.shape[-1],), g, b), w1_t), approximate="tanh")
    return torch.addmm(b2, h, w2_t).add_(x)


@dataclass
class TextMemory:
    """Per-layer cross-attention keys and values of the text, computed once per request."""

    k: Tensor  # (L, B, H, T, hd)
    v: Tensor  # (L, B, H, T, hd)
    mask: Tensor  # (B, 1, 1, T) bool, True where a token takes part
    # (B, D) the prompt's sentence embedding, projected: added to every input position (`text_pooled`)
    pooled: Tensor | None = None

    def add_to(self, x: Tensor) -> Tensor:
        """x (B, ..., D) plus the sentence embedding at every position, for models with one."""
        if self.pooled is None:
            return x
        return x + self.pooled.view(self.pooled.shape[0], *([1] * (x.dim() - 2)), -1)


@dataclass
class Workspace:
    """Preallocated attention buffers for decoding one patch at a time (one per stream)."""

    kv: Tensor  # (L, 2, B, H, Cmax + S, hd) keys (relative-offset embedding added) and values
    qkv_bias: Tensor  # (L, 3D) the qkv bias with the offset-(0,0,0) embeddings folded into keys and values
    e_center: Tensor  # (2, L, 1, H, 1, hd) key and value embeddings of offset (0, 0, 0)
    ctx_len: int = 0  # C: context tokens loaded for the current patch
    # Per-layer views and weights for the token loop, looked up once instead of every step.
    layers: list[Tensor] = field(default_factory=list)  # (2, B, H, Tmax, hd) views of kv
    keys: list[Tensor] = field(default_factory=list)  # (B, H, Tmax, hd) views of kv
    values: list[Tensor] = field(default_factory=list)
    weights: list[tuple[Tensor, ...]] = field(default_factory=list)
    # (B, 1, 1, Tmax) additive mask when rows hold contexts of different lengths (wavefront decoding),
    # None when they all have the same
    pad_mask: Tensor | None = None
    # bfloat16 copies of the matmul weights for passes over a whole patch (mixed precision), or None
    weights_lp: list[tuple[Tensor, ...]] | None = None
    head_lp: Tensor | None = None
    # the same weights with the matmul ones as transposed views, for addmm in the decode step
    weights_t: list[tuple[Tensor, ...]] = field(default_factory=list)
    head_t: Tensor | None = None
    cross_t: list[tuple[Tensor, ...]] = field(default_factory=list)  # the cross-attention's, likewise
    # the attention kernel of the token loop: F.scaled_dot_product_attention's signature
    attend: Callable[..., Tensor] = F.scaled_dot_product_attention
    # (B or 1, D) added to the current patch's start position: its canvas borders (`edges` models)
    start: Tensor | None = None
    # (B or 1, M, D) added to the input that predicts each token: its hints (`hint_index`), the
    # previous frame's tokens around its place (`prev_frame` models) and the tokens across made
    # borders (`neighbours` models)
    prev: Tensor | None = None
    # (L, B or 1, H, S, Tmax) additive attention bias of the current patch (`rel_bias` models): token
    # displacements, and -inf over the padding of rows with shorter contexts; the P-NAR pass's in `bias_nar`
    bias: Tensor | None = None
    bias_nar: Tensor | None = None
    # the decode step's layers in C++ (`streamgen.model.native.NativeStep`), or None for the Python loop
    native: Callable[..., Tensor] | None = None

    @property
    def batch(self) -> int:
        return self.kv.shape[2]


# Indices of the matmul weights and biases in a Workspace.weights entry (the rest are layer norms).
_MATMUL = (2, 3, 4, 5, 8, 9, 10, 11)
# Passes of at least this many positions per row use the bfloat16 matmuls of a mixed workspace.
LP_MIN_POSITIONS = 16


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.width
        self.heads = cfg.heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.has_text = cfg.text_dim is not None
        if self.has_text:
            self.ln_x = nn.LayerNorm(d)
            self.xq = nn.Linear(d, d)
            self.xkv = nn.Linear(d, 2 * d)
            self.xproj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, cfg.mlp_ratio * d)
        self.fc2 = nn.Linear(cfg.mlp_ratio * d, d)

    def cross(self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        """Eq. 10: cross-attention of (B, T', D) queries to the text; returns the residual update."""
        B, T, D = x.shape
        q = self.xq(self.ln_x(x)).view(B, T, self.heads, D // self.heads).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, T', hd)
        return self.xproj(a.transpose(1, 2).reshape(B, T, D))

    def mlp(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="tanh"))


class VisionDecoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d, L = cfg.width, cfg.layers
        self.M = cfg.tokens_per_patch
        self.S = self.M + 1
        self.bos = cfg.vocab_size  # the start token's id: one row past the codebook
        self.tok_emb = nn.Embedding(cfg.vocab_size + 1, d)
        self.pos_emb = nn.Parameter(torch.randn(self.S, d) * 0.02)  # positions inside a patch
        # ADC.Emb: one learned vector per relative offset and layer, added to the keys (Eq. 9).
        self.rel_emb = nn.Parameter(torch.randn(L, cfg.extent.num_offsets, d) * 0.02)
        # The same offsets added to the values (streamgen's addition to Eq. 9): a key offset only
        # changes how much a context patch is attended to, so with one context patch the model
        # cannot tell above from below; an offset in the value carries the direction into the
        # result. Zero at init: a model starts as the paper's.
        self.rel_emb_v = nn.Parameter(torch.zeros(L, cfg.extent.num_offsets, d))
        if cfg.pnar:  # P-NAR: row 0 stands for a masked token, row 1 starts a mask-predict pass
            self.nar_emb = nn.Parameter(torch.randn(2, d) * 0.02)
        if cfg.rel_bias:  # one number per layer, head and token displacement; zero at init
            self.rel_bias = nn.Parameter(torch.zeros(L, cfg.heads, _bias_size(cfg)))
            for name, nar in (("bias_index", False), ("bias_index_nar", True)):
                self.register_buffer(name, _bias_index(_bias_key(cfg), nar), persistent=False)
        if cfg.edges:  # one vector per set of canvas borders a patch touches (adc.edges); zero at init
            self.edge_emb = nn.Parameter(torch.zeros(adc.EDGE_KINDS, d))
        if cfg.prev_frame:  # previous frame's token left of / at / right of each token's place; zero at init
            self.prev_emb = nn.Parameter(torch.zeros(3, cfg.vocab_size + 1, d))
        if cfg.neighbours:  # the token across the left / right / top / bottom border; zero at init
            self.nbr_emb = nn.Parameter(torch.zeros(4, cfg.vocab_size + 1, d))
        if cfg.text_dim is not None:
            self.text_proj = nn.Linear(cfg.text_dim, d)
            self.text_ln = nn.LayerNorm(d)
            # Always present in the text memory: unconditional rows attend only to it.
            self.null_text = nn.Parameter(torch.randn(1, d) * 0.02)
            if cfg.text_pooled:  # the sentence embedding, at every input position; zero at init
                self.pool_proj = nn.Linear(cfg.text_dim, d)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(L))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, cfg.vocab_size, bias=False)
        self.apply(self._init)
        if cfg.text_pooled:  # zero: a model starts as it was without it, and `init=` of one without it too
            nn.init.zeros_(self.pool_proj.weight)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    @property
    def extent(self) -> Extent:
        return self.cfg.extent

    def _heads(self, t: Tensor) -> Tensor:
        """(B, T, D) -> (B, H, T, hd)"""
        B, T, D = t.shape
        return t.view(B, T, self.cfg.heads, D // self.cfg.heads).transpose(1, 2)

    # --- text --------------------------------------------------------------------------------------
    def text_memory(self, states: Tensor | None, mask: Tensor | None = None,
                    batch: int = 1) -> TextMemory | None:
        """Cross-attention memory from text token states (B, T, text_dim) and mask (B, T) bool.

        ``states=None`` (or a row whose mask is all False) is the unconditional input used for
        unconditional tasks, text dropout in training and classifier-free guidance.
        """
        if self.cfg.text_dim is None:
            if states is not None:
                raise ValueError("this model has no cross-attention (text_dim is None) but got text")
            return None
        null = self.null_text.expand(batch if states is None else states.shape[0], 1, -1)
        if states is None:
            mem, keep = null, torch.ones(null.shape[:2], dtype=torch.bool, device=null.device)
        else:
            if mask is None:
                mask = torch.ones(states.shape[:2], dtype=torch.bool, device=states.device)
            mem = torch.cat([null, self.text_proj(states)], 1)  # (B, 1 + T, D)
            keep = torch.cat([torch.ones_like(mask[:, :1]), mask.bool()], 1)
        mem = self.text_ln(mem)
        ks, vs = [], []
        for blk in self.blocks:
            k, v = blk.xkv(mem).chunk(2, dim=-1)
            ks.append(self._heads(k))
            vs.append(self._heads(v))
        pooled = None
        if self.cfg.text_pooled:  # mean over the prompt's tokens, l2-normalised: MiniLM's sentence embedding
            if states is None:
                sentence = torch.zeros(null.shape[0], self.cfg.text_dim, device=null.device)
            else:
                m = mask.to(states.dtype)[..., None]
                sentence = F.normalize((states * m).sum(1) / m.sum(1).clamp(min=1), dim=-1)  # 0 without tokens
            pooled = self.pool_proj(sentence)
        return TextMemory(torch.stack(ks), torch.stack(vs), keep[:, None, None, :], pooled)

    # --- teacher forcing over a whole plan (training) -----------------------------------------------
    def forward(self, tokens: Tensor, positions: Sequence[Pos],
                text: TextMemory | None = None, edges: Sequence[int] | None = None,
                prev: Tensor | None = None) -> Tensor:
        """Logits (B, N, M, V) for tokens (B, N, M) of patches processed in order ``positions``
        (``edges``: each patch's `adc.edges`, for models with ``cfg.edges``; ``prev`` (B, N, K, M):
        each patch's `hint_index`, for models with ``cfg.prev_frame`` or ``cfg.neighbours``)."""
        B, N, M = tokens.shape
        S, H = self.S, self.cfg.heads
        if len(positions) != N or M != self.M:
            raise ValueError(f"tokens {tuple(tokens.shape)} do not match {len(positions)} positions "
                             f"of {self.M} tokens")
        mask, offs = _structure(tuple(positions), self.extent, M)
        mask, offs = mask.to(tokens.device), offs.to(tokens.device)
        bos = torch.full((B, N, 1), self.bos, dtype=tokens.dtype, device=tokens.device)
        inp = torch.cat([bos, tokens], -1)  # (B, N, S)
        x = self.tok_emb(inp) + self.pos_emb  # (B, N, S, D)
        if text is not None:
            x = text.add_to(x)
        if edges is not None and self.cfg.edges:
            x[:, :, 0] += self.edge_emb[torch.as_tensor(edges, device=x.device)]
        pv = None if prev is None else self.prev_vectors(prev.reshape(B * N, -1, M))
        if pv is not None:
            x = x + self._prev_at_inputs(pv, nar=False).view(B, N, S, -1)
        x = x.reshape(B, N * S, -1)
        neg = torch.zeros(mask.shape, device=x.device).masked_fill(~mask, float("-inf"))
        if self.cfg.rel_bias:  # (L, H, NS, NS): each pair's displacement, from its patches' offset
            slot = torch.arange(N * S, device=x.device) % S  # position inside its patch
            tok_bias = self._bias_table()[:, :, self.bias_index[offs[0, 0], slot[:, None], slot[None, :]]]
        hd = self.cfg.width // H
        scale = 1.0 / math.sqrt(hd)
        for l, blk in enumerate(self.blocks):
            q, k, v = (self._heads(t) for t in blk.qkv(blk.ln1(x)).chunk(3, dim=-1))
            e = self.rel_emb[l].view(-1, H, hd)  # (O, H, hd)
            qe = torch.einsum("bhqd,ohd->bhqo", q, e)  # (B, H, NS, O)
            scores = torch.matmul(q, k.transpose(-1, -2)) * scale + qe.gather(-1, offs.expand(B, H, -1, -1)) * scale
            if self.cfg.rel_bias:
                scores = scores + tok_bias[l]
            probs = (scores + neg).softmax(-1)  # (B, H, NS, NS)
            # each key's value gets the (query patch, key patch) offset's embedding: sum the
            # probabilities per offset, then mix the value embeddings
            per_offset = torch.zeros(*probs.shape[:3], e.shape[0], dtype=probs.dtype, device=probs.device)
            per_offset.scatter_add_(-1, offs.expand(B, H, -1, -1), probs)
            a = torch.matmul(probs, v) + torch.einsum("bhqo,ohd->bhqd", per_offset,
                                                       self.rel_emb_v[l].view(-1, H, hd))
            x = x + blk.proj(a.transpose(1, 2).reshape(B, N * S, -1))
            if text is not None:
                x = x + blk.cross(x, text.k[l], text.v[l], text.mask)
            x = x + blk.mlp(x)
        logits = self.head(self.ln_f(x)).view(B, N, S, -1)
        return logits[:, :, :M]

    def context_kv(self, context: Sequence[tuple[Tensor, int]]) -> Tensor:
        """Keys (offset embedding added, ADC.Emb) and values of NCP-selected context patches.

        ``context`` holds ``(payload, offset index)`` pairs; payloads are (L, 2, R, H, M, hd).
        Returns (L, 2, R, H, Nc * M, hd), a new tensor (the cached payloads are never modified).
        """
        L, H = self.cfg.layers, self.cfg.heads
        hd = self.cfg.width // H
        pay = torch.stack([p for p, _ in context], 4)  # (L, 2, R, H, Nc, M, hd)
        offs = torch.tensor([o for _, o in context], device=pay.device)
        e = self.rel_emb[:, offs].view(L, len(context), H, hd).transpose(1, 2)  # (L, H, Nc, hd)
        ev = self.rel_emb_v[:, offs].view(L, len(context), H, hd).transpose(1, 2)
        keys = pay[:, 0] + e[:, None, :, :, None, :]
        values = pay[:, 1] + ev[:, None, :, :, None, :]
        out = torch.stack([keys, values], 1)
        return out.reshape(*out.shape[:4], -1, hd)

    # --- one patch at a time with gradients (Algorithm 1's patch loss) ------------------------------
    def patch_forward(self, tokens: Tensor, context: Sequence[tuple[Tensor, int]],
                      text: TextMemory | None = None, masked: Tensor | None = None,
                      edges: int | Tensor | None = None, prev: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Teacher-forced logits (B, M, V) of one patch and its cache (L, 2, B, H, M, hd), detached.

        ``context`` holds ``(payload, offset index)`` pairs as NCP.Select returns them. Gradients
        flow into this patch's computation (and the offset embeddings), not into the cached context:
        the paper optimises each patch's loss as soon as the patch is predicted.
        ``masked`` (B, M) bool switches to the P-NAR pass (`pnar_input`): logit m predicts token m
        from the unmasked tokens, attention inside the patch is bidirectional, and the returned cache
        is not a context payload (the pool keeps the autoregressive pass's).
        ``edges`` (an int or (B,) long): the patch's `adc.edges`, for models with ``cfg.edges``.
        ``prev`` (B or 1, K, M): the patch's `hint_index`, for models with ``cfg.prev_frame`` or
        ``cfg.neighbours``.
        """
        B, M = tokens.shape
        H, D = self.cfg.heads, self.cfg.width
        hd = D // H
        if masked is None:
            bos = torch.full_like(tokens[:, :1], self.bos)
            x = self.tok_emb(torch.cat([bos, tokens], 1)) + self.pos_emb  # (B, S, D)
        else:
            x = self.pnar_input(tokens, masked)
        if text is not None:
            x = text.add_to(x)
        start = self.start_vector(edges)
        if start is not None:
            x = torch.cat([x[:, :1] + start[:, None], x[:, 1:]], 1)
        pv = self.prev_vectors(prev)
        if pv is not None:
            x = x + self._prev_at_inputs(pv, nar=masked is not None)
        S, C = self.S, len(context) * M
        mask = torch.ones(S, C + S, dtype=torch.bool, device=x.device)
        if masked is None:
            mask = mask.tril(C)
        bias = self.attn_bias([o for _, o in context], nar=masked is not None)  # (L, H, S, C + S) or None
        center = adc.center_index(self.extent)
        ctx = self.context_kv(context) if context else None  # (L, 2, B, H, C, hd)
        keep = []
        for l, blk in enumerate(self.blocks):
            q, k, v = (self._heads(t) for t in blk.qkv(blk.ln1(x)).chunk(3, dim=-1))
            keep.append(torch.stack([k[:, :, 1:], v[:, :, 1:]]))
            k = k + self.rel_emb[l, center].view(1, H, 1, hd)
            v = v + self.rel_emb_v[l, center].view(1, H, 1, hd)
            if ctx is not None:
                k, v = torch.cat([ctx[l, 0], k], 2), torch.cat([ctx[l, 1], v], 2)
            m = mask if bias is None else bias[l].masked_fill(~mask, float("-inf"))
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=m)
            x = x + blk.proj(a.transpose(1, 2).reshape(B, S, D))
            if text is not None:
                x = x + blk.cross(x, text.k[l], text.v[l], text.mask)
            x = x + blk.mlp(x)
        x = x[:, :M] if masked is None else x[:, 1:]
        return self.head(self.ln_f(x)), torch.stack(keep).detach()

    def _bias_table(self) -> Tensor:
        """(L, H, R + 1): the learned displacement biases and a constant 0 for "no displacement"
        (start positions, which stand for no token)."""
        return F.pad(self.rel_bias, (0, 1))

    def attn_bias(self, offsets: Sequence[int], nar: bool = False) -> Tensor | None:
        """(L, H, S, C + S) additive attention bias of a patch whose context patches have these offset
        indices (NCP.Select's order), its own positions last; None for models without ``rel_bias``."""
        if not self.cfg.rel_bias:
            return None
        idx = self.bias_index_nar if nar else self.bias_index  # (O, S, S)
        cols = [idx[o, :, 1:] for o in offsets] + [idx[adc.center_index(self.extent)]]
        return self._bias_table()[:, :, torch.cat(cols, -1)]

    def start_vector(self, edges: int | Sequence[int] | Tensor | None) -> Tensor | None:
        """What a patch's start position gets added for its canvas borders: (1 or B, D), or None for
        models without ``cfg.edges`` (and when ``edges`` is None)."""
        if edges is None or not self.cfg.edges:
            return None
        idx = torch.as_tensor(edges, dtype=torch.long, device=self.edge_emb.device).reshape(-1)
        return self.edge_emb[idx]

    def prev_index(self, frame: Tensor | None, y: int, x: int, batch: int = 1) -> Tensor | None:
        """(B, 3, M) ids of the previous frame's tokens one column left of, at and one column right of
        each token of patch (y, x), 'none' (``vocab_size``) past the frame's sides; ``frame`` (B, h, w)
        is the previous frame's tokens, None for a first frame or an image (all 'none', ``batch``
        rows). None for models without ``cfg.prev_frame``."""
        if not self.cfg.prev_frame:
            return None
        ph, pw, none = self.cfg.patch_h, self.cfg.patch_w, self.cfg.vocab_size
        if frame is None:
            return torch.full((batch, 3, self.M), none, dtype=torch.long, device=self.prev_emb.device)
        rows = F.pad(frame[:, y * ph:(y + 1) * ph].long(), (1, 1), value=none)  # (B, ph, w + 2)
        return torch.stack([rows[:, :, x * pw + d:x * pw + d + pw].reshape(len(frame), -1)
                            for d in range(3)], 1).to(self.prev_emb.device)

    def neighbour_index(self, frame: Tensor, made: Tensor, y: int, x: int) -> Tensor | None:
        """(B, 4, M) ids of the tokens across patch (y, x)'s left, right, top and bottom borders in the
        same frame, on the border tokens whose neighbouring patch is already made; 'none'
        (``vocab_size``) elsewhere. ``frame`` (B, h, w) holds the frame's tokens so far, ``made``
        (rows, cols) bool its patches already made. None for models without ``cfg.neighbours``."""
        if not self.cfg.neighbours:
            return None
        ph, pw, none = self.cfg.patch_h, self.cfg.patch_w, self.cfg.vocab_size
        B = frame.shape[0]
        out = torch.full((B, 4, ph, pw), none, dtype=torch.long)
        y0, x0 = y * ph, x * pw
        if x > 0 and made[y, x - 1]:
            out[:, 0, :, 0] = frame[:, y0:y0 + ph, x0 - 1]
        if x + 1 < made.shape[1] and made[y, x + 1]:
            out[:, 1, :, pw - 1] = frame[:, y0:y0 + ph, x0 + pw]
        if y > 0 and made[y - 1, x]:
            out[:, 2, 0, :] = frame[:, y0 - 1, x0:x0 + pw]
        if y + 1 < made.shape[0] and made[y + 1, x]:
            out[:, 3, ph - 1, :] = frame[:, y0 + ph, x0:x0 + pw]
        return out.view(B, 4, self.M).to(self.nbr_emb.device)

    def hint_index(self, last: Tensor | None, frame: Tensor, made: Tensor, y: int, x: int,
                   batch: int = 1) -> Tensor | None:
        """Patch (y, x)'s token hints (B, K, M): its `prev_index` from ``last`` (the previous frame's
        tokens, or None), then its `neighbour_index` from ``frame`` and ``made``, for the models that
        have each; None for models with neither."""
        parts = [t for t in (self.prev_index(last, y, x, batch=batch), self.neighbour_index(frame, made, y, x))
                 if t is not None]
        return torch.cat(parts, 1) if parts else None

    def prev_vectors(self, index: Tensor | None) -> Tensor | None:
        """What the inputs predicting a patch's tokens get added for its hints ``index`` (B, K, M), as
        `hint_index` gives them: (B, M, D); None for models with neither kind."""
        tables = ([self.prev_emb[d] for d in range(3)] if self.cfg.prev_frame else []) + \
                 ([self.nbr_emb[d] for d in range(4)] if self.cfg.neighbours else [])
        if index is None or not tables:
            return None
        if index.shape[1] != len(tables):  # the 'none' rows are trained: dropping some shifts every input
            raise ValueError(f"this model takes {len(tables)} rows of token hints (`hint_index`), "
                             f"not {index.shape[1]}")
        return sum(t[index[:, d]] for d, t in enumerate(tables))

    def _prev_at_inputs(self, vectors: Tensor, nar: bool) -> Tensor:
        """(B, M, D) per token -> (B, S, D) per input position: the autoregressive pass predicts token m
        at position m (the last position predicts nothing), the P-NAR pass at position m + 1."""
        return F.pad(vectors, (0, 0, 1, 0) if nar else (0, 0, 0, 1))

    def pnar_input(self, tokens: Tensor, masked: Tensor) -> Tensor:
        """Input states (B, S, D) of a P-NAR pass: the P-NAR start, then tokens (B, M) with the
        ``masked`` (B, M) ones replaced by the mask embedding, at the same positions as in the
        autoregressive pass (token m at position m + 1)."""
        if not self.cfg.pnar:
            raise ValueError("this model has no P-NAR embeddings (its config's pnar is false)")
        x = torch.where(masked[..., None], self.nar_emb[0], self.tok_emb(tokens))
        start = self.nar_emb[1].expand(tokens.shape[0], 1, -1)
        return torch.cat([start, x], 1) + self.pos_emb

    # --- one patch at a time against the NCP (generation) ------------------------------------------
    def new_workspace(self, batch: int, max_context: int, mixed: bool = False) -> Workspace:
        """Buffers for ``batch`` rows and up to ``max_context`` context patches, allocated once.

        ``mixed`` chooses bfloat16 per operation where this CPU runs it faster (benchmarks/speed.py
        measures both): the cached keys and values and the attention over them (half the bytes to
        read), and the matmuls of passes over a whole patch (prefill, P-NAR), which bfloat16 matrix
        units run several times faster. Single-token steps keep fp32 matmuls, which are faster for a
        few rows; layer norms, softmax of the logits and the residual stream stay fp32.
        """
        cfg, p = self.cfg, self.pos_emb
        L, H, D = cfg.layers, cfg.heads, cfg.width
        T = max_context * self.M + self.S
        center = adc.center_index(self.extent)
        with torch.no_grad():
            e = self.rel_emb[:, center].detach()  # (L, D)
            ev = self.rel_emb_v[:, center].detach()
            bias = torch.stack([blk.qkv.bias.detach() for blk in self.blocks]).clone()  # (L, 3D)
            bias[:, D:2 * D] += e  # K + e = LN(h) Wk + (bk + e): Eq. 9's pre-feeding, fused
            bias[:, 2 * D:] += ev  # likewise the values' offset embedding
        kv = torch.zeros(L, 2, batch, H, T, D // H, dtype=torch.bfloat16 if mixed else p.dtype, device=p.device)
        weights = [(b.ln1.weight, b.ln1.bias, b.qkv.weight, bias[l], b.proj.weight, b.proj.bias,
                    b.ln2.weight, b.ln2.bias, b.fc1.weight, b.fc1.bias, b.fc2.weight, b.fc2.bias)
                   for l, b in enumerate(self.blocks)]
        ws = Workspace(weights_t=[tuple(t.t() if i in (2, 4, 8, 10) else t for i, t in enumerate(w)) for w in weights],
                       head_t=self.head.weight.t(),
                       cross_t=[(b.ln_x.weight, b.ln_x.bias, b.xq.weight.t(), b.xq.bias, b.xproj.weight.t(),
                                 b.xproj.bias) for b in self.blocks] if cfg.text_dim is not None else [],
                       kv=kv, qkv_bias=bias, e_center=torch.stack([e, ev]).view(2, L, 1, H, 1, D // H).clone(),
                       layers=list(kv), keys=list(kv[:, 0]), values=list(kv[:, 1]), weights=weights)
        if cfg.rel_bias:
            ws.bias = torch.zeros(L, batch, H, self.S, T, dtype=kv.dtype, device=p.device)
            ws.bias_nar = torch.zeros_like(ws.bias) if cfg.pnar else None
        if mixed:
            with torch.no_grad():
                ws.weights_lp = [tuple(t.detach().to(torch.bfloat16) if i in _MATMUL else t for i, t in enumerate(w))
                                 for w in weights]
                ws.head_lp = self.head.weight.detach().to(torch.bfloat16)
        return ws

    def load_context(self, ws: Workspace, contexts: Sequence[Sequence[tuple[Tensor, int]]],
                     edges: Sequence[int] | None = None, hints: Sequence[Tensor | None] | None = None) -> None:
        """Fill the workspace with the keys and values of G patches' contexts, decoded together.

        ``contexts[i]`` is patch i's NCP selection, ``(payload, offset index)`` pairs whose payloads
        (L, 2, R, H, M, hd) have R = ws.batch // G rows (streams, doubled with classifier-free
        guidance); row k of patch i goes to workspace row k * G + i. One patch is G = 1; a wavefront
        group of independent patches is G > 1, and shorter contexts are padded and masked out. The
        offset embeddings are added here, once per patch. ``edges[i]`` is patch i's `adc.edges`
        (models with ``cfg.edges``), ``hints[i]`` its `hint_index` with R rows (models with
        ``cfg.prev_frame`` or ``cfg.neighbours``).
        """
        B = ws.kv.shape[2]
        G = len(contexts)
        lengths = [len(ctx) * self.M for ctx in contexts]
        C = max(lengths)
        for i, (ctx, c) in enumerate(zip(contexts, lengths)):
            if ctx:
                ws.kv[:, :, slice(i, B, G), :, :c] = self.context_kv(ctx)
        ws.ctx_len = C
        ws.pad_mask = None
        if min(lengths) < C and ws.bias is None:  # rows with shorter contexts: their padding is masked
            ws.pad_mask = torch.zeros(B, 1, 1, ws.kv.shape[4], dtype=ws.kv.dtype, device=ws.kv.device)
            for i, c in enumerate(lengths):
                ws.pad_mask[i::G, :, :, c:C] = float("-inf")
        start = self.start_vector(edges)
        ws.start = None if start is None else start.repeat(B // G, 1)
        ws.prev = None
        if hints is not None and hints[0] is not None:
            pv = torch.stack([self.prev_vectors(h) for h in hints], 1)  # (R, G, M, D)
            ws.prev = pv.reshape(B, self.M, -1)
        if self.cfg.rel_bias:  # each row's own displacements, and its padding masked
            for buf, nar in ((ws.bias, False), (ws.bias_nar, True)):
                if buf is None:
                    continue
                for i, (ctx, c) in enumerate(zip(contexts, lengths)):
                    b = self.attn_bias([o for _, o in ctx], nar)  # (L, H, S, c + S)
                    rows = buf[:, i::G]
                    rows[..., :c] = b[:, None, ..., :c]
                    rows[..., c:C] = float("-inf")
                    rows[..., C:C + self.S] = b[:, None, ..., c:]

    def _extend(self, ws: Workspace, x: Tensor, m: int, text: TextMemory | None,
                causal: bool = True) -> Tensor:
        """Run positions m .. m+T-1 of the current patch, x (B, T, D); returns final states.

        This is the token loop's hot path: it calls the functional ops on the weights directly
        (no module dispatch), and writes into the preallocated workspace instead of concatenating.
        """
        B, T, D = x.shape
        H = self.cfg.heads
        t0 = ws.ctx_len + m
        t1 = t0 + T
        if T == 1:
            return self._extend_one(ws, x.view(B, D), t0, text).view(B, 1, D)
        mask = None
        if causal:  # causal among the new positions, everything before them visible
            mask = torch.ones(T, t1, dtype=torch.bool, device=x.device).tril(t0)
        bias = (ws.bias if causal else ws.bias_nar) if ws.bias is not None else None
        if bias is not None:  # per layer: (L, B, H, T, t1), the rows' padding already in it
            bias = bias[..., m:m + T, :t1]
            mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
        elif ws.pad_mask is not None:  # rows whose contexts are shorter than the longest one
            pad = ws.pad_mask[..., :t1]
            mask = pad if mask is None else pad.masked_fill(~mask, float("-inf"))
        weights, mm = ws.weights, F.linear
        if ws.weights_lp is not None and T >= LP_MIN_POSITIONS:
            weights, mm = ws.weights_lp, _linear_lp
        for l, (w, kv, k_all, v_all) in enumerate(zip(weights, ws.layers, ws.keys, ws.values)):
            h = F.layer_norm(x, (D,), w[0], w[1])
            qkv = mm(h, w[2], w[3]).view(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)
            kv.narrow(3, t0, T).copy_(qkv.narrow(0, 1, 2))
            q = qkv[0] if kv.dtype == qkv.dtype else qkv[0].to(kv.dtype)
            a = ws.attend(q, k_all.narrow(2, 0, t1), v_all.narrow(2, 0, t1),
                          attn_mask=mask if bias is None else mask[l])  # (B, H, T, hd)
            a = a.transpose(1, 2).reshape(B, T, D)
            x = x + mm(a if mm is _linear_lp else a.to(x.dtype), w[4], w[5])
            if text is not None:
                x = x + self.blocks[l].cross(x, text.k[l], text.v[l], text.mask)
            h = F.gelu(mm(F.layer_norm(x, (D,), w[6], w[7]), w[8], w[9]), approximate="tanh")
            x = x + mm(h, w[10], w[11])
        return x

    def _logits(self, ws: Workspace, x: Tensor) -> Tensor:
        """The head over final states x (B, T, D) -> (B, T, V) fp32, bfloat16 matmul for long passes."""
        h = F.layer_norm(x, (x.shape[-1],), self.ln_f.weight, self.ln_f.bias)
        if ws.head_lp is not None and x.shape[1] >= LP_MIN_POSITIONS:
            return _linear_lp(h, ws.head_lp, None)
        return F.linear(h, self.head.weight)

    def _extend_one(self, ws: Workspace, x: Tensor, t0: int, text: TextMemory | None) -> Tensor:
        """`_extend` for one position, x (B, D): the decode step, with the fewest dispatches.

        addmm on transposed weight views with the residual added in place does what F.linear and
        a separate add do, bit for bit, with a third fewer operator calls.
        """
        B, D = x.shape
        H = self.cfg.heads
        t1 = t0 + 1
        mask = ws.pad_mask[..., :t1] if ws.pad_mask is not None else None
        if ws.bias is not None:  # (L, B, H, 1, t1): this position's displacement biases (and padding)
            mask = ws.bias[..., t0 - ws.ctx_len:t1 - ws.ctx_len, :t1]
        if ws.native is not None:  # the loop below in C++
            return ws.native(x, t0, mask, ws.bias is not None, text)
        mixed = ws.kv.dtype != x.dtype  # bfloat16 keys and values: attention in bfloat16
        for l, (w, kv, k_all, v_all) in enumerate(zip(ws.weights_t, ws.layers, ws.keys, ws.values)):
            qkv = _step_qkv(x, w[0], w[1], w[2], w[3]).view(B, 3, H, 1, D // H)
            kv.narrow(3, t0, 1).copy_(qkv[:, 1:].transpose(0, 1))
            q = qkv[:, 0].to(kv.dtype) if mixed else qkv[:, 0]
            a = ws.attend(q, k_all.narrow(2, 0, t1), v_all.narrow(2, 0, t1),
                          attn_mask=mask if ws.bias is None else mask[l])  # (B, H, 1, hd)
            x = _step_out(x, a.view(B, D).to(x.dtype) if mixed else a.view(B, D), w[4], w[5])
            if text is not None:  # Eq. 10, the same ops as Block.cross
                c = ws.cross_t[l]
                q = _step_qkv(x, c[0], c[1], c[2], c[3]).view(B, H, 1, D // H)
                a = F.scaled_dot_product_attention(q, text.k[l], text.v[l], attn_mask=text.mask)
                x = _step_out(x, a.view(B, D), c[4], c[5])
            x = _step_mlp(x, w[6], w[7], w[8], w[9], w[10], w[11])
        return x

    def decode_step(self, ws: Workspace, token: Tensor, m: int,
                    text: TextMemory | None = None) -> Tensor:
        """Feed position ``m`` (token (B,), the previous token or the start token) -> logits (B, V)."""
        x = F.embedding(token, self.tok_emb.weight) + self.pos_emb[m]  # (B, D)
        if text is not None:
            x = text.add_to(x)
        if m == 0 and ws.start is not None:
            x = x + ws.start
        if ws.prev is not None:
            x = x + ws.prev[:, m]
        x = self._extend_one(ws, x, ws.ctx_len + m, text)
        return torch.mm(F.layer_norm(x, (x.shape[-1],), self.ln_f.weight, self.ln_f.bias), ws.head_t)

    def complete(self, ws: Workspace, token: Tensor, text: TextMemory | None = None) -> None:
        """Feed the patch's last token (B,) at position M so its cache is whole; no logits."""
        x = self.tok_emb(token)[:, None] + self.pos_emb[self.M]
        if text is not None:
            x = text.add_to(x)
        self._extend(ws, x, self.M, text)

    def pnar_logits(self, ws: Workspace, tokens: Tensor, masked: Tensor,
                    text: TextMemory | None = None) -> Tensor:
        """One P-NAR pass over the current patch: tokens (B, M), masked (B, M) bool -> logits (B, M, V).

        Writes the workspace's patch positions, which the closing `prefill` of the finished tokens
        overwrites with the autoregressive cache that the NCP keeps.
        """
        x = self._patch_inputs(ws, self.pnar_input(tokens, masked), text, nar=True)
        x = self._extend(ws, x, 0, text, causal=False)
        return self._logits(ws, x[:, 1:])

    def prefill(self, ws: Workspace, tokens: Tensor, text: TextMemory | None = None) -> Tensor:
        """Run a whole patch of known tokens (B, M) at once -> logits (B, M, V)."""
        bos = torch.full_like(tokens[:, :1], self.bos)
        x = self.tok_emb(torch.cat([bos, tokens], 1)) + self.pos_emb  # (B, S, D)
        x = self._patch_inputs(ws, x, text, nar=False)
        return self._logits(ws, self._extend(ws, x, 0, text)[:, :self.M])

    def _patch_inputs(self, ws: Workspace, x: Tensor, text: TextMemory | None, nar: bool) -> Tensor:
        """A whole patch's input states x (B, S, D) with the sentence embedding, the start position's
        edges and the token hints of the loaded patch added (the P-NAR pass predicts token m at
        position m + 1, the autoregressive one at position m)."""
        if text is not None:
            x = text.add_to(x)
        if ws.start is not None:
            x = torch.cat([x[:, :1] + ws.start[:, None], x[:, 1:]], 1)
        if ws.prev is not None:
            x = x + self._prev_at_inputs(ws.prev, nar=nar)
        return x

    def patch_payload(self, ws: Workspace) -> Tensor:
        """The finished patch's cache for NCP.Add: (L, 2, B, H, M, hd), a fresh tensor.

        Keys and values are stored without the offset embeddings, which `load_context` adds per
        selection.
        """
        c = ws.ctx_len
        out = ws.kv[:, :, :, :, c + 1:c + self.S].clone()
        out -= ws.e_center.transpose(0, 1).to(out.dtype)
        return out


def xformers_attention(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None) -> Tensor:
    """`F.scaled_dot_product_attention`'s contract ((B, H, T, hd) tensors, a bool or additive mask)
    through xformers' memory-efficient kernel, which takes (B, T, H, hd) and an additive bias.

    For CUDA devices with the optional ``xformers`` package (``pip install streamgen[cuda]``). Not run
    on a GPU by this project: its machines have none; the tests check the layout with a stand-in.
    """
    import xformers.ops as xops

    bias = None
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_mask = torch.zeros(attn_mask.shape, dtype=q.dtype, device=q.device).masked_fill(
                ~attn_mask, float("-inf"))
        bias = attn_mask.to(q.dtype).expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                          attn_bias=bias)
    return out.transpose(1, 2)


def _linear_lp(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    """A bfloat16 matmul (w, b already bfloat16) of fp32 inputs, returning fp32."""
    return F.linear(x.to(torch.bfloat16), w, b).float()


@lru_cache(maxsize=64)
def _structure(positions: tuple[Pos, ...], extent: Extent, M: int) -> tuple[Tensor, Tensor]:
    """Attention mask (NS, NS) bool and offset index (1, 1, NS, NS) long of a planned sequence.

    Query patch n sees its own positions causally and positions 1..M (the tokens) of every earlier
    patch inside its extent window: exactly what NCP.Select returns when it is generated.
    """
    N, S = len(positions), M + 1
    if len(set(positions)) != N:
        raise ValueError("positions must be distinct")
    patch_mask = torch.zeros(N, N, dtype=torch.bool)
    patch_off = torch.zeros(N, N, dtype=torch.long)
    center = adc.center_index(extent)
    for n, cur in enumerate(positions):
        patch_off[n, n] = center
        for k in range(n):
            try:
                patch_off[n, k] = adc.rel_index(extent, positions[k], cur)
            except ValueError:
                continue
            patch_mask[n, k] = True
    mask = patch_mask.repeat_interleave(S, 0).repeat_interleave(S, 1)
    mask.view(N, S, N, S)[:, :, :, 0] = False  # a context patch's start position is not kept
    causal = torch.ones(S, S, dtype=torch.bool).tril()
    for n in range(N):
        mask[n * S:(n + 1) * S, n * S:(n + 1) * S] = causal
    offs = patch_off.repeat_interleave(S, 0).repeat_interleave(S, 1)
    return mask, offs[None, None]


def _bias_key(cfg: ModelConfig) -> tuple[int, int, int, int, int]:
    return cfg.extent.f, cfg.extent.h, cfg.extent.w, cfg.patch_h, cfg.patch_w


def _bias_size(cfg: ModelConfig) -> int:
    """R: token displacements (frames, rows, columns) inside the extent window."""
    ef, eh, ew, ph, pw = _bias_key(cfg)
    return (ef + 1) * (2 * (eh + 1) * ph - 1) * (2 * (ew + 1) * pw - 1)


@lru_cache(maxsize=16)
def _bias_index(key: tuple[int, int, int, int, int], nar: bool) -> Tensor:
    """(O, S, S) long: for context offset o, query position q and key position k, the index of their
    token displacement in the bias table, or R ("none", a constant 0) where a position holds no token.

    A key position k >= 1 holds token k - 1 of its patch. A query holds the token it predicts: token q
    in the autoregressive pass (position M predicts nothing), token q - 1 in the P-NAR pass.
    """
    ef, eh, ew, ph, pw = key
    M, S = ph * pw, ph * pw + 1
    ry, rx = (eh + 1) * ph - 1, (ew + 1) * pw - 1
    R = (ef + 1) * (2 * ry + 1) * (2 * rx + 1)
    ext = Extent(f=ef, h=eh, w=ew)
    idx = torch.full((ext.num_offsets, S, S), R, dtype=torch.long)
    pos = torch.arange(S)
    qtok = pos - 1 if nar else pos
    qok = (qtok >= 0) & (qtok < M)
    qy, qx = qtok.clamp(0, M - 1) // pw, qtok.clamp(0, M - 1) % pw
    ky, kx = (pos - 1).clamp(0) // pw, (pos - 1).clamp(0) % pw
    ok = qok[:, None] & (pos >= 1)[None, :]
    for df in range(ef + 1):
        for dy in range(-eh, eh + 1):
            for dx in range(-ew, ew + 1):
                o = adc.rel_index(ext, (-df, dy, dx), (0, 0, 0))
                ty = dy * ph + ky[None, :] - qy[:, None] + ry
                tx = dx * pw + kx[None, :] - qx[:, None] + rx
                idx[o] = torch.where(ok, (df * (2 * ry + 1) + ty) * (2 * rx + 1) + tx, R)
    return idx
