"""Does the full training loop teach a fresh decoder to copy a still frame? With and without `prev_frame`.

    python benchmarks/loop_copy.py                   # the paper's inputs: copying must be an attention pattern
    python benchmarks/loop_copy.py --prev-frame      # each token also gets the previous frame's tokens
    python benchmarks/loop_copy.py --loss later      # train only on patches of frame 1 (the copy probe's setting)
    python benchmarks/loop_copy.py --later-weight 4  # frame 1's patches count 4 times in the loss

Still-camera landscape clips (train split, 2 frames, 128x128 px) are rendered and encoded with the
shipped codec (97% of frame 1's tokens equal frame 0's). A fresh model of the shipped shape (with
`rel_bias`, no text) is trained as `streamgen train model` trains: every patch of a clip in plan order
(omega), each with its NCP context (caches detached), one optimizer step per clip batch. Every
`--every` steps it prints the per-frame loss of clips it never trained on, through the NCP as in
generation: a model that copies drives frame 1 towards 0 while frame 0 stays where it is.
`benchmarks/copy_probe.py` trains on frame 1's top-left patch alone; this is the whole loop.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from _common import add_probe_args, still_clips
from streamgen.adc import Plan
from streamgen.bundle import SHIPPED, load_engine
from streamgen.config import ModelConfig
from streamgen.model import VisionDecoder
from streamgen.ncp import NearbyContextPool

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "model_mix.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prev-frame", action="store_true", help="the model reads the previous frame's tokens")
    ap.add_argument("--loss", choices=("all", "later"), default="all",
                    help="train on every patch, or only on frame 1's")
    ap.add_argument("--later-weight", type=float, default=1.0, help="loss weight of frame 1's patches")
    add_probe_args(ap, steps=400, every=100)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    codec = load_engine(SHIPPED).codec
    shape = {**json.loads(CONFIG.read_text())["model"], "text_dim": None, "pnar": False, "edges": False,
             "prev_frame": args.prev_frame}
    torch.manual_seed(0)
    model = VisionDecoder(ModelConfig(**shape))
    ph, pw, ext = model.cfg.patch_h, model.cfg.patch_w, model.extent
    size = 2 * ph * codec.factor  # two patch rows and columns
    tok = still_clips(codec, args.clips + 100, 40_000, size)  # (n, 2, h, w)
    train, held = tok[:args.clips], tok[args.clips:]

    def run(batch: torch.Tensor, learn: bool) -> list[float]:
        """Every patch of ``batch`` (B, 2, h, w) through the NCP; backpropagates when ``learn``."""
        B, frames, h, w = batch.shape
        plan = Plan.basic("omega", h // ph, w // pw, frames, ext)
        pool = NearbyContextPool(plan.extent, ext)
        per: list[list[float]] = [[] for _ in range(frames)]
        trained = plan.rows * plan.cols * (frames if args.loss == "all" else frames - 1)  # the loss is their mean
        for item in plan:
            f, y, x = item.pos
            target = batch[:, f, y * ph:(y + 1) * ph, x * pw:(x + 1) * pw].reshape(B, -1)
            prev = model.prev_index(batch[:, f - 1] if f else None, y, x, batch=B)
            logits, payload = model.patch_forward(target, [(p, o) for _, p, o in pool.select(item.pos)],
                                                  prev=prev)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
            per[f].append(loss.item())
            if learn and (args.loss == "all" or f > 0):
                (loss * (args.later_weight if f > 0 else 1.0) / trained).backward()
            pool.add(item.pos, payload, plan.expiry(item.pos))
            pool.remove(item.step)
        return [sum(v) / len(v) for v in per]

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    print(f"# full-loop copy: prev_frame {args.prev_frame}, loss on {args.loss} patches, frame-1 weight "
          f"{args.later_weight}, {args.clips} training clips, lr {args.lr}, batch 16; held-out loss per frame "
          f"(frame 0 | frame 1), nats per token")
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(0)
    for step in range(args.steps + 1):
        if step % args.every == 0:
            with torch.no_grad():
                f0, f1 = run(held, learn=False)
            print(f"step {step}: held-out {f0:.3f} | {f1:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        if step == args.steps:
            break
        opt.zero_grad()
        run(train[torch.randint(0, args.clips, (16,), generator=gen)], learn=True)
        opt.step()


if __name__ == "__main__":
    main()
