"""A quick probe of video sampling settings on a text-conditioned model (a few minutes a setting).

    python benchmarks/video_sampling.py '{"guidance_shown": 6}' '{"shown_top_p": null}'
    python benchmarks/video_sampling.py --still-frames 0 --offset 500 '{"order": "zeta"}' \
        '{"extent": {"w": 1, "h": 0, "f": 1}}'

Each argument is a JSON object of `SamplingConfig` fields laid over the model's preset
(`Engine.preset`), and optionally the task request's `order` and `extent`. For each it prints:
camera-motion accuracy on `streamgen eval`'s motion clips (same prompts and seeds unless `--offset`
moves both rows to other scenes) and the frames/s of those clips, sky and terrain accuracy on held-out
t2i prompts, whether one still-camera video (always scene 100, seed 1) still shows its prompt's sky and
terrain over its last 8 frames (292-299 by default; `--still-frames 0` skips it), then the confusion
of camera motions and of held-out (sky, terrain) as (asked, read) pairs. With the default 90 samples
(as `streamgen eval`) a row near 85% has a standard error of about 4 points (6.5 at 30 samples);
`streamgen eval` is the measurement of record.
"""
from __future__ import annotations

import argparse
import json
import time
from collections import Counter

import numpy as np
import torch

from streamgen.bundle import load
from streamgen.training.data import landscapes as L
from streamgen.evaluation import EVAL_SAMPLES, AttributeClassifier, camera_motion


REQUEST_KEYS = ("order", "extent")  # setting keys that go to the task request, not to the sampling
CLIP_FRAMES = 8  # frames of each motion clip, as in `streamgen eval`


def probe(engine, clf: AttributeClassifier, sampling: dict, n: int, still_frames: int, offset: int = 0,
          request: dict | None = None) -> str:
    request = request or {}
    t0 = time.perf_counter()
    motions = Counter()
    for i in range(offset, offset + n):  # the motion row of `streamgen eval` (seed 0) at offset 0
        scene = L.sample_scene(i, split="all")
        clip = np.stack(list(engine.run("t2v", prompt=L.caption(scene, variant=i, video=True), height=128,
                                        width=128, frames=CLIP_FRAMES, seed=i, sampling=sampling, **request)))
        motions[(scene.motion, camera_motion(clip))] += 1
    fps = CLIP_FRAMES * n / (time.perf_counter() - t0)
    motion = sum(v for (want, got), v in motions.items() if want == got) / n
    sky = terrain = 0
    combos = Counter()
    for i in range(offset, offset + n):
        scene = L.sample_scene(i, split="heldout")
        img = next(engine.run("t2i", prompt=L.caption(scene, variant=i, video=False), height=128, width=128,
                              seed=i, sampling=sampling, **request))
        pred = clf.predict(img[None])
        got = tuple(L.ATTRIBUTES[a][int(pred[a][0])] for a in ("sky", "terrain"))
        combos[((scene.sky, scene.terrain), got)] += 1
        sky += got[0] == scene.sky
        terrain += got[1] == scene.terrain
    still = ""
    if still_frames:
        scene = L.sample_scene(100, split="train")  # a still camera over sunset grassy hills
        hits = []
        for i, f in enumerate(engine.run("t2v", prompt=L.caption(scene, 1, video=True), height=128, width=128,
                                         frames=still_frames, seed=1, sampling=sampling, **request)):
            if i >= still_frames - 8:
                pred = clf.predict(f[None])
                hits += [int(pred[a][0]) == L.ATTRIBUTES[a].index(getattr(scene, a)) for a in ("sky", "terrain")]
        still = f"  still video at frames {still_frames - 8}-{still_frames - 1} {np.mean(hits):.2f}"
    return (f"motion {motion:.3f} ({fps:.2f} frames/s)  held-out sky {sky / n:.3f} terrain {terrain / n:.3f}"
            f"{still}  ({time.perf_counter() - t0:.0f} s)\n    motions {sorted(motions.items())}"
            f"\n    held-out {sorted(combos.items())}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("settings", nargs="*", default=["{}"],
                    help="JSON objects of sampling fields, and optionally order and extent")
    ap.add_argument("--model", default=None, help="model folder; default: the shipped model")
    ap.add_argument("--samples", type=int, default=EVAL_SAMPLES)
    ap.add_argument("--still-frames", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--offset", type=int, default=0, help="first scene and seed: 0 is the eval's own samples")
    args = ap.parse_args()
    if args.still_frames and args.still_frames < 8:
        ap.error(f"--still-frames must be 0 (skip) or at least 8, got {args.still_frames}")
    if args.offset < 0:
        ap.error(f"--offset must be >= 0, got {args.offset}")
    torch.set_num_threads(args.threads)
    engine = load(args.model)
    clf = AttributeClassifier.fit(size=128)
    for setting in args.settings:
        fields = json.loads(setting)
        request = {k: fields.pop(k) for k in REQUEST_KEYS if k in fields}
        sampling = {**engine.preset, **fields}
        print(json.dumps({**sampling, **request}),
              probe(engine, clf, sampling, args.samples, args.still_frames, args.offset, request), flush=True)


if __name__ == "__main__":
    main()
