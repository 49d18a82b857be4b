"""A quick probe of video sampling settings on a text-conditioned model (a few minutes a setting).

    python benchmarks/video_sampling.py '{"guidance_shown": 6}' '{"shown_top_p": null}'

Each argument is a JSON object of `SamplingConfig` fields laid over the default sampling
(`DEFAULT_SAMPLING`). For each it prints one line: camera-motion accuracy on `streamgen eval`'s
motion clips (same prompts and seeds), sky and terrain accuracy on held-out t2i prompts, whether one
still-camera video still shows its prompt's sky and terrain at frames 292-299, and the confusion of
camera motions. Thirty samples a row: one standard error is about 9 points; `streamgen eval` is the
measurement of record.
"""
from __future__ import annotations

import argparse
import json
import time
from collections import Counter

import numpy as np
import torch

from streamgen.bundle import load_engine
from streamgen.config import DEFAULT_SAMPLING
from streamgen.data import landscapes as L
from streamgen.evaluate import AttributeClassifier, camera_motion


def probe(engine, clf: AttributeClassifier, sampling: dict, n: int, still_frames: int) -> str:
    t0 = time.perf_counter()
    motions = Counter()
    for i in range(n):  # the motion row of `streamgen eval` (seed 0)
        scene = L.sample_scene(i, split="all")
        clip = np.stack(list(engine.run("t2v", prompt=L.caption(scene, variant=i, video=True), height=128,
                                        width=128, frames=8, seed=i, sampling=sampling)))
        motions[(scene.motion, camera_motion(clip))] += 1
    motion = sum(v for (want, got), v in motions.items() if want == got) / n
    sky = terrain = 0
    for i in range(n):
        scene = L.sample_scene(i, split="heldout")
        img = next(engine.run("t2i", prompt=L.caption(scene, variant=i, video=False), height=128, width=128,
                              seed=i, sampling=sampling))
        pred = clf.predict(img[None])
        sky += int(pred["sky"][0]) == L.ATTRIBUTES["sky"].index(scene.sky)
        terrain += int(pred["terrain"][0]) == L.ATTRIBUTES["terrain"].index(scene.terrain)
    scene = L.sample_scene(100, split="train")  # a still camera over sunset grassy hills
    hits = []
    for i, f in enumerate(engine.run("t2v", prompt=L.caption(scene, 1, video=True), height=128, width=128,
                                     frames=still_frames, seed=1, sampling=sampling)):
        if i >= still_frames - 8:
            pred = clf.predict(f[None])
            hits += [int(pred[a][0]) == L.ATTRIBUTES[a].index(getattr(scene, a)) for a in ("sky", "terrain")]
    return (f"motion {motion:.3f}  held-out sky {sky / n:.3f} terrain {terrain / n:.3f}  still video at "
            f"frames {still_frames - 8}-{still_frames - 1} {np.mean(hits):.2f}  "
            f"({time.perf_counter() - t0:.0f} s)  {sorted(motions.items())}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("settings", nargs="*", default=["{}"], help="JSON objects of sampling fields")
    ap.add_argument("--model", default=None, help="model folder; default: the shipped model")
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--still-frames", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    engine = load_engine(args.model)
    clf = AttributeClassifier.fit(size=128)
    for setting in args.settings:
        sampling = {**DEFAULT_SAMPLING, **json.loads(setting)}
        print(json.dumps(sampling), probe(engine, clf, sampling, args.samples, args.still_frames), flush=True)


if __name__ == "__main__":
    main()
