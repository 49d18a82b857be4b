"""The seam score of wide unconditional canvases over more canvases than `streamgen eval` draws.

    python benchmarks/seams.py                                  # the shipped model, canvases of seeds 10-25
    python benchmarks/seams.py --model DIR --first-seed 0 --canvases 4    # the eval's own four
    python benchmarks/seams.py '{"top_k": 16}' '{"temperature": 0.8}'

Each canvas is the eval's: task `uig`, 128 px high, 32 patches wide, the model's preset without
guidance, one seed per canvas. Each argument is a JSON object of `SamplingConfig` fields laid over
that. It prints each setting's mean seam score, its standard error and the canvases' scores. Four
canvases' mean moves by about 0.1 between checkpoints of one model (docs/results.md, 2026-12-05): compare
decoders on 16 or more, on other seeds than the eval's 0-3.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from streamgen.bundle import load
from streamgen.evaluation import seam_score


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("settings", nargs="*", default=["{}"], help="JSON objects of sampling fields")
    ap.add_argument("--model", default=None, help="model folder; default: the shipped model")
    ap.add_argument("--first-seed", type=int, default=10)
    ap.add_argument("--canvases", type=int, default=16)
    ap.add_argument("--patches", type=int, default=32, help="canvas width in patches")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.canvases < 1 or args.patches < 2:
        ap.error(f"--canvases must be >= 1 and --patches >= 2, got {args.canvases} and {args.patches}")
    torch.set_num_threads(args.threads)
    engine = load(args.model)
    patch_px = engine.codec.factor * engine.model.cfg.patch_w
    for setting in args.settings:
        sampling = {**engine.preset, "guidance": 1.0, **json.loads(setting)}
        t0 = time.perf_counter()
        scores = [seam_score(next(engine.run("uig", height=128, width=args.patches * patch_px, seed=s,
                                             sampling=sampling)), patch_px)
                  for s in range(args.first_seed, args.first_seed + args.canvases)]
        err = np.std(scores, ddof=1) / np.sqrt(len(scores)) if len(scores) > 1 else float("nan")
        print(f"{json.dumps(sampling)}  seams {np.mean(scores):.3f} +- {err:.3f} over {len(scores)} canvases "
              f"(seeds {args.first_seed}-{args.first_seed + args.canvases - 1}; "
              f"{time.perf_counter() - t0:.0f} s): {' '.join(f'{x:.2f}' for x in scores)}", flush=True)


if __name__ == "__main__":
    main()
