"""Make the README's picture with the shipped model: a strip of video frames above a panorama.

    python scripts/make_figure.py [--out docs/strip.png]

Eight frames of t2v "a sunset sky over desert dunes, the camera pans left" (seed 1) side by side,
and below them a uig canvas as wide as the strip (seed 2), both 128 pixels high.
"""
from __future__ import annotations

import argparse
import itertools

import numpy as np
import torch

import streamgen
from streamgen.output.sinks import open_sink

PROMPT = "a sunset sky over desert dunes, the camera pans left"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/strip.png")
    ap.add_argument("--frames", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(2)
    engine = streamgen.load()
    video = list(itertools.islice(engine.run("t2v", prompt=PROMPT, frames=args.frames, seed=1), args.frames))
    strip = np.concatenate(video, axis=1)  # (128, 128 * frames, 3)
    (pano,) = engine.run("uig", width=strip.shape[1], seed=2)
    gap = np.full((4, strip.shape[1], 3), 255, dtype=np.uint8)
    picture = np.concatenate([strip, gap, pano])
    sink = open_sink(args.out, fps=1, size=(picture.shape[1], picture.shape[0]))
    sink.write(picture)
    sink.close()
    print(f"{args.out}: {picture.shape[1]}x{picture.shape[0]}")


if __name__ == "__main__":
    main()
