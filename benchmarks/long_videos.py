"""Whether long videos keep their prompt's sky and terrain: the eval's drift row, on any scenes.

    python benchmarks/long_videos.py                                   # the eval's three drift videos
    python benchmarks/long_videos.py --scenes 203 204 211 220 '{"shown_top_p": 0.7}'
    python benchmarks/long_videos.py --lake-pans 4 --frames 200 --model DIR

Each video is `streamgen eval`'s drift video for a scene of the train split: the prompt is
`landscapes.caption(scene, k, video=True)` and the sampling seed ``seed + k``, with scene number
``seed + 99 + k`` (so scenes 99-101 with seeds 0-2 are the eval's own). ``--lake-pans N`` takes the
first N train-split scenes from 200 on with a lake and a moving camera, where the shipped decoder's
videos drift (docs/results.md, 2026-12-05). Each argument is a JSON object of `SamplingConfig` fields
laid over the model's preset (`Engine.preset`). For each video it prints the share of 8-frame
windows whose sky and terrain the eval's reader reads right, at the first frames and at every
``--every`` frames, then per setting the mean over videos of the last window (sky and terrain),
the figure the drift bar compares.
"""
from __future__ import annotations

import argparse
import json
import time
from collections import deque

import numpy as np
import torch

from streamgen.bundle import load
from streamgen.training.data import landscapes as L
from streamgen.evaluation import AttributeClassifier

WINDOW = 8  # frames a reading averages over, as the eval's drift row


def lake_pans(count: int, first: int = 200) -> list[int]:
    """The first ``count`` train-split scene numbers from ``first`` on with a lake and a moving camera."""
    out, n = [], first
    while len(out) < count:
        scene = L.sample_scene(n, split="train")
        if scene.lake and scene.motion != "still":
            out.append(n)
        n += 1
    return out


def read(clf: AttributeClassifier, frames: list[np.ndarray], scene: L.Scene) -> tuple[float, float]:
    pred = clf.predict(np.stack(frames))
    return tuple(float((pred[a] == L.ATTRIBUTES[a].index(getattr(scene, a))).float().mean())
                 for a in ("sky", "terrain"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("settings", nargs="*", default=["{}"], help="JSON objects of sampling fields")
    ap.add_argument("--model", default=None, help="model folder; default: the shipped model")
    ap.add_argument("--scenes", type=int, nargs="*", help="train-split scene numbers (>= 99)")
    ap.add_argument("--lake-pans", type=int, default=0, help="add this many lake scenes with a moving camera")
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--every", type=int, default=200, help="frames between readings")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.frames < WINDOW or args.every < WINDOW:
        ap.error(f"--frames and --every must be at least {WINDOW}, got {args.frames} and {args.every}")
    scenes = list(args.scenes or []) + lake_pans(args.lake_pans)
    if not scenes:
        scenes = [99, 100, 101]
    if min(scenes) < 99:
        ap.error(f"--scenes must be at least 99 (scene = seed + 99 + k), got {min(scenes)}")
    torch.set_num_threads(args.threads)
    engine = load(args.model)
    clf = AttributeClassifier.fit(size=128)
    for setting in args.settings:
        sampling = {**engine.preset, **json.loads(setting)}
        last = []
        for n in scenes:
            k = 0 if n > 101 else n - 99  # the eval's videos keep their caption variant and seed
            seed = n - 99 - k
            scene = L.sample_scene(n, split="train")
            t0 = time.perf_counter()
            # readings of the 8 frames up to frame WINDOW, every `every` frames, and the last frame
            ends = sorted({WINDOW, args.frames, *range(args.every, args.frames + 1, args.every)})
            window, readings = deque(maxlen=WINDOW), []  # the last 8 frames: memory stays flat
            stream = engine.run("t2v", prompt=L.caption(scene, k, video=True), height=128, width=128,
                                frames=args.frames, seed=seed + k, sampling=sampling)
            for i, frame in enumerate(stream):
                window.append(frame)
                if i + 1 in ends:
                    readings.append((i + 1, *read(clf, list(window), scene)))
            last.append(np.mean(readings[-1][1:]))
            marks = "  ".join(f"{f}: {s:.2f}/{t:.2f}" for f, s, t in readings)
            print(f"{json.dumps(sampling)} scene {n} ({scene.sky}, {scene.terrain}, lake {scene.lake}, "
                  f"{scene.motion}; seed {seed + k})  sky/terrain by frame  {marks}  "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
        print(f"{json.dumps(sampling)}  last {WINDOW} frames, sky and terrain right: {np.mean(last):.3f} "
              f"over {len(scenes)} videos", flush=True)


if __name__ == "__main__":
    main()
