"""Can a fresh vision decoder learn to copy the previous frame? A probe of the architecture.

    python benchmarks/copy_probe.py                  # default shape with rel_bias, 600 steps
    python benchmarks/copy_probe.py --no-rel-bias    # the paper's attention (offset embeddings only)
    python benchmarks/copy_probe.py --context one    # only frame 0's patch at the same place

Still-camera landscape clips (train split) are rendered at 128x128 px and encoded with the shipped
codec; 95% of a frame-1 patch's tokens equal frame 0's. A fresh model of the default shape (no text)
learns only one thing: the top-left patch of frame 1, with frame 0's patches as NCP context (caches
detached, as in training). Every `--every` steps it prints the loss on clips it never trained on:
a model that copies goes towards 0 there, one that memorises its training clips does not (their
training loss falls either way, which is why the held-out figure is the one to read).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from _common import add_probe_args, still_clips
from streamgen.adc import rel_index
from streamgen.bundle import SHIPPED, load_engine
from streamgen.config import ModelConfig
from streamgen.model import VisionDecoder

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "model.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--context", choices=("all", "one"), default="all")
    ap.add_argument("--no-rel-bias", action="store_true")
    add_probe_args(ap, steps=600, every=200)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    codec = load_engine(SHIPPED).codec
    shape = {**json.loads(CONFIG.read_text())["model"], "text_dim": None, "rel_bias": not args.no_rel_bias}
    torch.manual_seed(0)
    model = VisionDecoder(ModelConfig(**shape))
    ph, pw, ext = model.cfg.patch_h, model.cfg.patch_w, model.extent
    size = 2 * ph * codec.factor  # two patch rows and columns
    tok = still_clips(codec, args.clips + 100, 20_000, size)  # (n, 2, h, w)
    held_out = torch.arange(args.clips, args.clips + 100)

    def patch(idx, f, y, x):
        return tok[idx, f, y * ph:(y + 1) * ph, x * pw:(x + 1) * pw].reshape(len(idx), -1)

    def loss_of(idx):
        with torch.no_grad():  # the context: frame 0's patches, cached and detached
            ctx = [(model.patch_forward(patch(idx, 0, y, x), [])[1], rel_index(ext, (0, y, x), (1, 0, 0)))
                   for y in range(2) for x in range(2) if args.context == "all" or (y, x) == (0, 0)]
        target = patch(idx, 1, 0, 0)
        logits, _ = model.patch_forward(target, ctx)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    print(f"# copy probe: context {args.context}, rel_bias {not args.no_rel_bias}, {args.clips} training "
          f"clips, lr {args.lr}, batch 16; held-out loss in nats per token")
    t0 = time.perf_counter()
    for step in range(args.steps + 1):
        if step % args.every == 0:
            with torch.no_grad():
                held = loss_of(held_out).item()
            print(f"step {step}: held-out {held:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        if step == args.steps:
            break
        loss = loss_of(torch.randint(0, args.clips, (16,)))
        opt.zero_grad()
        loss.backward()
        opt.step()


if __name__ == "__main__":
    main()
