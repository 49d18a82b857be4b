"""What the engine needs of a codec: frames to tokens and tokens to frames, and optionally windows.

Frames are uint8 (B, Hpx, Wpx, 3); tokens are int64 (B, h, w) with Hpx = h * factor. ``decode`` may
take the previous frame's pixels (the Pixel-Guided VQGAN uses them; other codecs may ignore them).

A codec may also have a ``tiling`` attribute (a `Tiling`): then a window of its tokens, decoded with
``tiling.context`` tokens more on each side, gives the pixels of the window's middle that a decode of
the whole canvas gives (up to what the codec states), and the engine decodes wide canvases strip by
strip with `StripDecoder`, handing each strip out as soon as the tokens it needs are final. A codec
without it (``tiling`` missing or None, as in plugins written before tiling) is decoded whole, once
the canvas is done; nothing else changes for it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, runtime_checkable

import torch
from torch import Tensor

from streamgen.errors import bad


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


@dataclass(frozen=True)
class Tiling:
    """How a codec's decoding splits into windows, in tokens along a side.

    Window k gives out tokens [k * tile, (k + 1) * tile) and is decoded with ``blend + context`` tokens
    more on each side; the outer ``context`` tokens (the decoder's receptive field) are dropped, and
    across each boundary the two windows cross-fade linearly over ``2 * blend`` tokens."""

    tile: int = 32
    context: int = 0
    blend: int = 0

    def __post_init__(self) -> None:
        if self.context < 0 or self.blend < 0:
            raise bad("tiling", "must have context and blend of 0 or more tokens", self)
        if self.tile < max(1, 2 * self.blend):
            raise bad("tiling.tile", f"must be at least 1 and twice the blend ({2 * self.blend} tokens)", self.tile)

    @property
    def span(self) -> int:
        """The most tokens along a side decoded in one piece: a window with its margins."""
        return self.tile + 2 * (self.blend + self.context)


Decode = Callable[[Tensor, "Tensor | None"], Tensor]  # (tokens, prev pixels or None) -> uint8 pixels


class StripDecoder:
    """The pixels of a canvas strip by strip along ``axis`` of its (B, h, w) tokens (1: bands of rows
    from the top, 2: bands of columns from the left), one `Tiling` window at a time.

    ``needs()`` is how many tokens along the axis the next strip reads; once they are final, ``next``
    decodes that window and returns ``(offset, pixels)``: the strip's first pixel along the axis and
    uint8 (B, H, w, 3) (or (B, h, W, 3)). Strip k ends ``blend`` tokens before window k's end; the band
    after it waits for window k + 1 to cross-fade with. The strips tile the canvas exactly.
    ``length`` None: an endless canvas, whose windows go on for as long as strips are asked for."""

    def __init__(self, decode: Decode, tiling: Tiling, factor: int, length: int | None, axis: int = 2):
        if axis not in (1, 2):
            raise bad("axis", "must be 1 (rows) or 2 (columns)", axis)
        self.decode, self.tiling, self.factor, self.length, self.axis = decode, tiling, factor, length, axis
        self.windows: list[tuple[int, int]] | None = None
        if length is not None:
            starts = list(range(0, length, tiling.tile))
            if len(starts) > 1 and length - starts[-1] < 2 * tiling.blend:
                starts.pop()  # a rest shorter than a blend band joins the window before it
            self.windows = list(zip(starts, starts[1:] + [length]))
        self.k = 0
        self.band: Tensor | None = None  # the previous window's pixels over the band still to cross-fade

    @property
    def done(self) -> bool:
        return self.windows is not None and self.k == len(self.windows)

    def _window(self) -> tuple[int, int]:
        t = self.tiling.tile
        return self.windows[self.k] if self.windows is not None else (self.k * t, (self.k + 1) * t)

    def _end(self, e: int) -> int:
        return e if self.length is None else min(self.length, e)

    def needs(self) -> int:
        """Tokens along the axis, from the canvas's start, that the next strip is decoded from."""
        t = self.tiling
        return self._end(self._window()[1] + t.blend + t.context)

    def next(self, tokens: Tensor, prev: Tensor | None = None, start: int = 0) -> tuple[int, Tensor]:
        """The next strip, from ``tokens`` (B, h, w) (and the previous frame's pixels ``prev``) of
        which at least ``needs()`` along the axis are final; ``tokens`` start ``start`` tokens along
        the axis into the canvas (an endless canvas's window), and hold the strip's margins."""
        (s, e), t, f, ax = self._window(), self.tiling, self.factor, self.axis
        first = self.k == 0
        last = self.windows is not None and self.k == len(self.windows) - 1
        lo, hi = max(0, s - t.blend - t.context), self._end(e + t.blend + t.context)
        if lo < start or hi > start + tokens.shape[ax]:
            raise ValueError(f"strip {self.k} reads tokens {lo}..{hi}, but those given are {start}.."
                             f"{start + tokens.shape[ax]}")
        window = prev.narrow(ax, lo * f, (hi - lo) * f) if prev is not None else None
        px = self.decode(tokens.narrow(ax, lo - start, hi - lo), window)
        a, z = (s if first else s - t.blend), (self.length if last else e - t.blend)
        strip = px.narrow(ax, (a - lo) * f, (z - a) * f)
        if not first and t.blend:
            n = 2 * t.blend * f
            ramp = (torch.arange(n, dtype=torch.float32) + 0.5).div(n).view([1, n, 1, 1] if ax == 1 else [1, 1, n, 1])
            mixed = self.band.float().lerp(strip.narrow(ax, 0, n).float(), ramp)
            strip = torch.cat([_dithered(mixed, ax), strip.narrow(ax, n, strip.shape[ax] - n)], ax)
        if not last and t.blend:
            self.band = px.narrow(ax, (e - t.blend - lo) * f, 2 * t.blend * f).clone()
        self.k += 1
        return a * f, strip


def _dithered(x: Tensor, axis: int) -> Tensor:
    """float (B, h, w, 3) in [0, 255], a band across ``axis`` -> uint8, rounded up where the fraction
    passes a threshold that is fixed along the band's width and spread over its length (a golden-ratio
    sequence), so each line of pixels crosses a level once, each at its own place. Rounded at 0.5, a
    fade between windows a level apart steps by that level in the band's middle, all along it (two
    canvases of the shipped model: a seam score of 1.96 at the windows' boundaries against 1.14 for
    the one-piece decode); with a threshold per pixel the band is noisy instead (1.71); this gives 1.16."""
    along = torch.arange(x.shape[3 - axis], dtype=torch.float64).mul(0.6180339887).frac().float()
    threshold = along[:, None] if axis == 2 else along[None, :]
    return (x + threshold[None, :, :, None]).floor().clamp(0, 255).to(torch.uint8)


def decode_tiled(decode: Decode, tokens: Tensor, prev: Tensor | None, tiling: Tiling, factor: int) -> Tensor:
    """The whole canvas's pixels, decoded window by window along both sides with `StripDecoder`; a
    side no longer than ``tiling.span`` tokens is decoded in one piece."""
    def column(toks: Tensor, pix: Tensor | None) -> Tensor:
        return _joined(decode, toks, pix, tiling, factor, axis=1)

    return _joined(column, tokens, prev, tiling, factor, axis=2)


def _joined(decode: Decode, tokens: Tensor, prev: Tensor | None, tiling: Tiling, factor: int, axis: int) -> Tensor:
    if tokens.shape[axis] <= tiling.span:
        return decode(tokens, prev)
    strips = StripDecoder(decode, tiling, factor, tokens.shape[axis], axis)
    parts = []
    while not strips.done:
        parts.append(strips.next(tokens, prev)[1])
    return torch.cat(parts, axis)
