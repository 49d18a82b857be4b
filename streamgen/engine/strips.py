"""Canvases strip by strip: an image's pixels handed out as soon as the tokens they need are final.

A canvas drawn column by column (the omega order) gives bands of columns from the left; row by row
(zeta), bands of rows from the top; any other plan (the other orders, outpainting) gives each band
once the patches from the canvas's start up to it are drawn; an endless canvas (`EndlessPlan`) gives
bands of columns for as long as they are read. The codec decodes band by band with
`streamgen.plugins.codec.StripDecoder`; a codec without a ``tiling`` gives one band, the whole
canvas, at its end. What this keeps is the band being cross-faded and the canvas's tokens (8 bytes
a token: 1 MB for a 262,144 x 128 px canvas at factor 16; of an endless canvas a window of them, at
least its last 4,096 px), never the canvas's pixels.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Iterator, NamedTuple

import numpy as np

from streamgen.engine.core import TokenPart, paste
from streamgen.errors import bad
from streamgen.plugins.codec import StripDecoder, Tiling

if TYPE_CHECKING:
    from streamgen.engine.core import Engine
    from streamgen.engine.stream import Steering
    from streamgen.plugins.task import Job


class Strip(NamedTuple):
    """A band of a canvas, final: ``pixels`` (h, w, 3) uint8 with its top left corner at canvas pixel
    (``top``, ``left``); ``canvas`` is the whole canvas's (height, width) in pixels, its width None for
    an endless canvas."""

    top: int
    left: int
    pixels: np.ndarray
    canvas: tuple[int, int | None]


def canvas_strips(engine: "Engine", job: "Job", seed: int, steering: "Steering") -> Iterator[Strip]:
    """The strips of ``job``'s one-frame canvas, each as soon as the tokens it needs are drawn; a codec
    that cannot decode an endless canvas is refused here, before any work."""
    plan, codec, cfg = job.plan, engine.codec, engine.model.cfg
    rows = plan.sweep == "row"
    axis, patch = (1, cfg.patch_h) if rows else (2, cfg.patch_w)
    f = codec.factor
    endless = plan.cols is None
    canvas = (plan.rows * cfg.patch_h * f, None if endless else plan.cols * cfg.patch_w * f)
    length = None if endless else canvas[axis - 1] // f
    tiling = getattr(codec, "tiling", None) or (None if endless else Tiling(tile=length))
    if endless and tiling is None:
        raise bad("codec", "must decode in windows (a `tiling`) to draw an endless canvas",
                  getattr(codec, "name", type(codec).__name__))
    decoder = StripDecoder(codec.decode, tiling, f, length, axis)
    return _strips(engine, job, seed, steering, decoder, canvas, patch)


def _strips(engine: "Engine", job: "Job", seed: int, steering: "Steering", decoder: StripDecoder,
            canvas: tuple[int, int | None], patch: int) -> Iterator[Strip]:
    """`canvas_strips`' generator: ``patch`` is a patch's tokens along the decoder's axis."""
    plan, rows = job.plan, decoder.axis == 1
    given = [g for g in job.given if g.frame == 0]
    text, mask = steering.text()
    known = (lambda pos: job.known[pos][None]) if job.known else None
    parts = engine.generate_tokens(plan, seed=seed, sampling=steering.sampling, text=text, text_mask=mask,
                                   known=known, wavefront=engine.wavefront, updates=steering, parts=True)
    lines = 0  # patch columns (rows) from the canvas's start that are drawn whole
    try:
        for part in parts:
            if not isinstance(part, TokenPart):
                continue
            made = part.made if rows else part.made.t()
            while lines - part.left < len(made) and bool(made[lines - part.left].all()):
                lines += 1
            while not decoder.done and decoder.needs() <= lines * patch:
                t0 = time.perf_counter()
                offset, pixels = decoder.next(part.tokens, start=part.left * patch)
                top, left = (offset, 0) if rows else (0, offset)
                for g in given:
                    pixels = paste(pixels, g, top, left, canvas)
                engine.stats.decode_seconds += time.perf_counter() - t0
                yield Strip(top, left, pixels[0].numpy(), canvas)
            if decoder.done:
                return
    finally:
        parts.close()
