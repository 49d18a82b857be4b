"""Where inside a patch a trained vision decoder finds its tokens hardest: the loss per token place.

    python benchmarks/border_loss.py                 # the shipped model
    python benchmarks/border_loss.py --model DIR     # a model folder (model + vqgan safetensors)

Fresh wide landscapes (train split, never the training renders' seeds) are encoded with the model's
codec and run through the Nearby Context Pool as in training and generation: omega order, patch by
patch, unconditional, teacher-forced. The script prints the mean loss (nats per token) at each of a
patch's token places, once for the patches of the first column (no patch to their left) and once for
the others. It also prints the loss of the first token column against the others. The seams of a wide
canvas are where a patch's first column meets the patch left of it. A first column that is harder than
the others, when a patch lies to its left, means the model does not read the token beside it well.
Models with ``neighbours`` get the tokens across made borders, as generation gives them.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from streamgen import NearbyContextPool, Plan, adc
from streamgen.bundle import load_engine
from streamgen.data import landscapes as L
from streamgen.train_model import patches, plan_hints


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="model folder; default: the shipped model")
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--width", type=int, default=512, help="image width in px (height 128)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    eng = load_engine(args.model)
    model = eng.model.eval()
    ph, pw = model.cfg.patch_h, model.cfg.patch_w
    imgs = np.stack([L.render(L.sample_scene(500 + k, split="train"), 128, args.width)[0]
                     for k in range(args.images)])
    toks = eng.codec.encode(torch.from_numpy(imgs)).long()[:, None]  # (B, 1, h, w)
    B, _, h, w = toks.shape
    plan = Plan.basic("omega", h // ph, w // pw, 1, model.extent)
    pool = NearbyContextPool(model.extent)
    text = model.text_memory(None, batch=B) if model.cfg.text_dim is not None else None
    loss: dict[bool, list[torch.Tensor]] = {False: [], True: []}  # by: has a patch to its left
    with torch.no_grad():
        for (pos, target), hints in zip(patches(toks, plan, ph, pw), plan_hints(model, plan, toks)):
            _, y, x = pos
            ctx = [(p, o) for _, p, o in pool.select(pos)]
            logits, payload = model.patch_forward(target, ctx, text, None, adc.edges(y, x, plan.rows, plan.cols),
                                                  hints)
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none")
            loss[x > 0].append(nll.view(B, ph, pw).mean(0))
            pool.add(pos, payload, plan.expiry(pos))
            pool.remove(plan.step_of(pos))
    print(f"# loss per token place (nats), {args.images} landscapes 128x{args.width}, omega order, "
          f"model {args.model or 'shipped'}")
    for left, label in ((False, "patches of the first column"), (True, "patches with a patch to their left")):
        grid = torch.stack(loss[left]).mean(0)
        print(f"{label}:")
        for row in grid.tolist():
            print("  " + "  ".join(f"{v:5.2f}" for v in row))
        print(f"  first token column {grid[:, 0].mean():.3f}, the others {grid[:, 1:].mean():.3f}")


if __name__ == "__main__":
    main()
