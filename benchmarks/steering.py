"""How a running stream follows a new prompt: switch latency, continuity and cost, keep against recache.

    python benchmarks/steering.py                        # 60 switches, the shipped model, both modes
    python benchmarks/steering.py --switches 12 --after 8 --model DIR

Each switch runs a t2v stream of a train-split scene's caption, changes the prompt at a random frame
(4 to 11) with `Stream.set` to a scene with another sky and another terrain (every other switch to a
held-out combination, night over desert dunes or sunset over snowy mountains, the others to seen
ones; lake and camera motion kept), and reads every frame after it with the eval's attribute reader.
Printed per mode (`keep`: the pool's caches as they were made; `recache`: recomputed under the new
prompt), over the switches:

- latency: frames after the switch until the reader first reads both the new sky and terrain
  (median and 90th percentile; a switch never read within ``--after`` frames counts as later), and
  the share read within 8 frames, for all switches and for those to held-out combinations;
- continuity: the mean absolute pixel change from the last frame before the switch to the first
  after it, over that of the neighbouring frame pairs before the switch (1 is no cut); beside it the
  same ratio for the renderer's own switch through the codec, as a hard cut and as the 6-frame
  cross-fade the switch clips of training show;
- cost: the wall time of the first frame after the switch over the median frame before it.
Both modes draw with the same seeds, so they differ only in what the pool holds after the switch.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from streamgen.bundle import load
from streamgen.evaluation import AttributeClassifier
from streamgen.training.data import landscapes as L

WITHIN = 8  # the steering issue's goal: new sky and terrain read within this many frames


def pair(k: int) -> tuple[L.Scene, L.Scene]:
    """Switch ``k``: a train-split scene and the scene it switches to, with another sky and another
    terrain (lake and camera motion kept): a held-out combination for odd ``k``, a seen one for even."""
    rng = np.random.default_rng(k)
    held = [(c["sky"], c["terrain"]) for c in L.HELD_OUT]
    seen = [(s, t) for s in L.ATTRIBUTES["sky"] for t in L.ATTRIBUTES["terrain"] if (s, t) not in held]
    sky, terrain = held[k // 2 % 2] if k % 2 else seen[int(rng.integers(len(seen)))]
    n = 500 + 100 * k
    while True:
        scene = L.sample_scene(n, split="train")
        if scene.sky != sky and scene.terrain != terrain:
            return scene, L.Scene(sky, terrain, scene.lake, scene.motion, scene.seed + 1)
        n += 1


def reads(clf: AttributeClassifier, frame: np.ndarray, scene: L.Scene) -> bool:
    pred = clf.predict(frame[None])
    return all(int(pred[a][0]) == L.ATTRIBUTES[a].index(getattr(scene, a)) for a in ("sky", "terrain"))


def run_switch(engine, clf, k: int, recache: bool, after: int, boost: dict | None = None, hold: int = 0) -> dict:
    rng = np.random.default_rng(1000 + k)
    scene, new = pair(k)
    at = int(rng.integers(4, 12))  # frames drawn under the first prompt
    stream = engine.open("t2v", prompt=L.caption(scene, k, video=True), frames=at + after, seed=k,
                         recache=recache)
    frames, times = [], []
    t0 = time.perf_counter()
    for i, frame in enumerate(stream):
        frames.append(frame.astype(np.float32))
        now = time.perf_counter()
        times.append(now - t0)
        t0 = now
        if i == at - 1:
            stream.set(prompt=L.caption(new, k + 1, video=True), sampling=boost)
        if boost and i == at - 1 + hold:
            stream.set(sampling={key: engine.preset.get(key, getattr(stream.sampling.__class__(), key)) for key in boost})
            t0 = time.perf_counter()  # the change's own cost (text encoding, recache) counts in frame `at`
    stream.close()
    hit = next((i + 1 for i in range(after) if reads(clf, frames[at + i].astype(np.uint8), new)), None)
    steps = [np.abs(frames[i + 1] - frames[i]).mean() for i in range(at - 1)]
    jump = np.abs(frames[at] - frames[at - 1]).mean()
    return dict(latency=hit, held=bool(k % 2), continuity=jump / max(np.mean(steps), 1e-6),
                cost=times[at] / statistics.median(times[1:at]))


def reference_continuity(engine, k: int, blend: int, after: int) -> float:
    """The continuity ratio of switch ``k`` drawn by the renderer itself, through the codec: a cut
    (``blend`` 0) or a cross-fade over ``blend`` frames (as the switch clips of training)."""
    rng = np.random.default_rng(1000 + k)
    scene, new = pair(k)
    at = int(rng.integers(4, 12))
    clip = L.render_switch(scene, new, 128, 128, at + after, at, blend, speed=engine.codec.factor)
    frames = engine.codec.decode(engine.codec.encode(torch.from_numpy(clip))).float()
    steps = [(frames[i + 1] - frames[i]).abs().mean() for i in range(at - 1)]
    return float((frames[at] - frames[at - 1]).abs().mean() / max(float(np.mean(steps)), 1e-6))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder; default: the shipped model")
    ap.add_argument("--switches", type=int, default=60)
    ap.add_argument("--after", type=int, default=16, help="frames drawn after each switch")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--boost", default=None, help="JSON sampling fields set with the new prompt, for --hold frames")
    ap.add_argument("--hold", type=int, default=4)
    ap.add_argument("--modes", default="keep,recache")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    engine = load(args.model)
    clf = AttributeClassifier.fit(size=128)
    import json
    boost = json.loads(args.boost) if args.boost else None
    for blend in (0, 6):
        ref = [reference_continuity(engine, k, blend, args.after) for k in range(args.switches)]
        print(f"reference, the renderer's {'cut' if blend == 0 else f'{blend}-frame cross-fade'} through the "
              f"codec: continuity {statistics.median(ref):.2f} (median ratio)", flush=True)
    for recache in [m == "recache" for m in args.modes.split(",")]:
        rows = [run_switch(engine, clf, k, recache, args.after, boost, args.hold) for k in range(args.switches)]
        lat = [r["latency"] if r["latency"] is not None else args.after + 1 for r in rows]
        held = [x for x, r in zip(lat, rows) if r["held"]]
        within = lambda xs: sum(x <= WITHIN for x in xs) / len(xs)  # noqa: E731
        print(f"{'recache' if recache else 'keep'}: {len(rows)} switches; latency median "
              f"{statistics.median(lat):.1f}, 90th percentile {np.percentile(lat, 90):.1f} frames "
              f"({args.after + 1} = not read within {args.after}); read within {WITHIN}: "
              f"{within(lat):.1%} (held-out targets {within(held):.1%}, seen {within([x for x, r in zip(lat, rows) if not r['held']]):.1%}); "
              f"continuity {statistics.median(r['continuity'] for r in rows):.2f} (median ratio); "
              f"cost of the switch frame {statistics.median(r['cost'] for r in rows):.2f}x a frame", flush=True)


if __name__ == "__main__":
    main()
