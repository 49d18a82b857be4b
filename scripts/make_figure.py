"""Make the README's pictures with the shipped model: a strip of video frames above a panorama, and
the same prompts in a person's own words through an earlier model and this one.

    python scripts/make_figure.py [--out docs/strip.png]
    python scripts/make_figure.py --before OLD_MODEL_DIR --out docs/before_after.png

Eight frames of t2v "a sunset sky over desert dunes, the camera pans left" (seed 1) side by side,
and below them a uig canvas as wide as the strip (seed 2), both 128 pixels high. With ``--before``:
for each of `WORDED` (held-out sky and terrain combinations in words the training captions never use)
eight frames from the model in OLD_MODEL_DIR above eight from the shipped model, same seed.
"""
from __future__ import annotations

import argparse
import itertools

import numpy as np
import torch

import streamgen
from streamgen.output.sinks import open_sink

PROMPT = "a sunset sky over desert dunes, the camera pans left"
# held-out combinations (night over dunes, sunset over mountains) in `HELD_OUT_WORDS` phrases
WORDED = ("the kalahari by moonlight, trucking left", "a sierra at sundown, the camera crabs to the right")


def frames(engine, prompt: str, count: int, seed: int) -> np.ndarray:
    """``count`` frames of t2v side by side: (128, 128 * count, 3)."""
    return np.concatenate(list(itertools.islice(engine.run("t2v", prompt=prompt, frames=count, seed=seed), count)), 1)


def write(picture: np.ndarray, out: str) -> None:
    sink = open_sink(out, fps=1, size=(picture.shape[1], picture.shape[0]))
    sink.write(picture)
    sink.close()
    print(f"{out}: {picture.shape[1]}x{picture.shape[0]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/strip.png")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--before", default=None, help="an earlier model folder: the before/after picture")
    args = ap.parse_args()
    torch.set_num_threads(2)
    engine = streamgen.load()
    gap = lambda h: np.full((h, 128 * args.frames, 3), 255, dtype=np.uint8)  # noqa: E731
    if args.before is not None:
        old = streamgen.load(args.before)
        rows = []
        for i, prompt in enumerate(WORDED):
            rows += [frames(old, prompt, args.frames, seed=i), gap(2), frames(engine, prompt, args.frames, seed=i), gap(8)]
        write(np.concatenate(rows[:-1]), args.out)
        return
    strip = frames(engine, PROMPT, args.frames, seed=1)
    (pano,) = engine.run("uig", width=strip.shape[1], seed=2)
    write(np.concatenate([strip, gap(4), pano]), args.out)


if __name__ == "__main__":
    main()
