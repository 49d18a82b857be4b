"""How much a trained vision decoder uses its NCP context: losses of one patch with and without it.

    python benchmarks/context_use.py                 # the shipped model
    python benchmarks/context_use.py --model DIR     # a model folder (model + vqgan safetensors)

Fresh landscapes (train split) are rendered and encoded with the model's codec; the teacher-forced
loss (nats per token, unconditional) of one patch is printed:
- the bottom-left patch of a still image with its upper neighbour as context, labelled with the
  right offset ("up") and with the opposite one ("down"): equal losses mean the model cannot tell
  above from below;
- the top-left patch in frame 1 of a still-camera clip (most tokens equal frame 0's) without context,
  with frame 0's patch at the same place, and with all four patches of frame 0 (as in generation, where
  the model must also pick the right one): a model that copies drives the last two towards 0.

- per-frame loss of 4-frame clips (still, pan left, pan right at one token per frame, as in
  training) run through the Nearby Context Pool as in training and generation (every patch, omega
  order): frames 1-3 well below frame 0 mean the model copies (shifted, for pans). ``--captions``
  lets the model read each clip's caption, which names the motion.

Models trained with ``edges`` are told each patch's canvas borders, as in generation; models trained
with ``prev_frame`` get the previous frame's tokens as inputs where generation gives them (through the
NCP), 'none' for single patches unless a line says otherwise.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from streamgen.adc import Plan, edges, rel_index
from streamgen.ncp import NearbyContextPool
from streamgen.bundle import SHIPPED, load_engine
from streamgen.data import landscapes as L


def patch_loss(model, target, context, memory, edges, prev=None) -> float:
    """Loss of one patch; ``prev`` its previous-frame inputs (`prev_frame` models), 'none' if not given."""
    if prev is None:
        prev = model.prev_index(None, 0, 0, batch=len(target))
    logits, _ = model.patch_forward(target, context, memory, edges=edges, prev=prev)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1)).item()


@torch.inference_mode()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    ap.add_argument("--scenes", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--captions", action="store_true", help="per-frame losses read each clip's caption")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    eng = load_engine(args.model or SHIPPED)
    model, codec, ext = eng.model, eng.codec, eng.model.extent
    ph, pw = model.cfg.patch_h, model.cfg.patch_w
    size = 2 * ph * codec.factor  # two patch rows, two patch columns
    clips = []
    for i in range(args.scenes):
        s = L.sample_scene(10_000 + i, split="train")
        s = L.Scene(s.sky, s.terrain, s.lake, "still", s.seed)
        clips.append(codec.encode(torch.from_numpy(L.render(s, size, size, frames=2))))
    tok = torch.stack(clips)  # (n, 2, h, w)
    n = len(tok)
    memory = model.text_memory(None, batch=n)

    def patch(f, y, x):
        return tok[:, f, y * ph:(y + 1) * ph, x * pw:(x + 1) * pw].reshape(n, -1)

    top, bottom = patch(0, 0, 0), patch(0, 1, 0)
    at_top, at_bottom = edges(0, 0, 2, 2), edges(1, 0, 2, 2)
    frame0 = []  # frame 0's four patches, each as a context payload with its offset from (1, 0, 0)
    for y in range(2):
        for x in range(2):
            _, cache = model.patch_forward(patch(0, y, x), [], memory, edges=edges(y, x, 2, 2),
                                           prev=model.prev_index(None, y, x, batch=n))
            frame0.append((cache, rel_index(ext, (0, y, x), (1, 0, 0))))
    top_cache = frame0[0][0]
    up = rel_index(ext, (0, 0, 0), (0, 1, 0))
    down = rel_index(ext, (0, 2, 0), (0, 1, 0))
    print(f"# context use, {args.model or 'shipped model'}, {n} scenes, {size}x{size} px, nats per token")
    print(f"bottom patch: no context {patch_loss(model, bottom, [], memory, at_bottom):.3f} | upper neighbour "
          f"labelled 'up' {patch_loss(model, bottom, [(top_cache, up)], memory, at_bottom):.3f} | labelled 'down' "
          f"{patch_loss(model, bottom, [(top_cache, down)], memory, at_bottom):.3f}")
    now = patch(1, 0, 0)
    same = (now == top).float().mean().item()
    prev = rel_index(ext, (0, 0, 0), (1, 0, 0))
    print(f"still clip, frame 1 top-left patch ({100 * same:.0f}% of its tokens equal frame 0's): no context "
          f"{patch_loss(model, now, [], memory, at_top):.3f} | frame 0's patch as context "
          f"{patch_loss(model, now, [(top_cache, prev)], memory, at_top):.3f} | all of frame 0 "
          f"{patch_loss(model, now, frame0, memory, at_top):.3f}")
    if model.cfg.prev_frame:
        print(f"  the same patch with frame 0's tokens as its previous-frame inputs (prev_frame): no context "
              f"{patch_loss(model, now, [], memory, at_top, model.prev_index(tok[:, 0], 0, 0)):.3f} | "
              f"all of frame 0 {patch_loss(model, now, frame0, memory, at_top, model.prev_index(tok[:, 0], 0, 0)):.3f}")
    for motion in L.ATTRIBUTES["motion"]:
        losses = frame_losses(eng, args.scenes, size, motion, captions=args.captions)
        print(f"{motion} clips, 4 frames through the NCP, omega order, loss per frame: "
              f"{' | '.join(f'{v:.3f}' for v in losses)}")


def frame_losses(eng, scenes: int, size: int, motion: str = "still", captions: bool = False) -> list[float]:
    """Teacher-forced loss per frame of clips whose camera does ``motion`` (at the training speed of one
    token per frame), every patch with its NCP context; with ``captions`` the model reads the clip's
    caption (which names the motion), else none."""
    model, codec = eng.model, eng.codec
    ph, pw = model.cfg.patch_h, model.cfg.patch_w
    clips, texts = [], []
    for i in range(scenes):
        s = L.sample_scene(30_000 + i, split="train")
        s = L.Scene(s.sky, s.terrain, s.lake, motion, s.seed)
        clips.append(codec.encode(torch.from_numpy(L.render(s, size, size, frames=4, speed=codec.factor))))
        texts.append(L.caption(s, variant=i, video=True))
    tok = torch.stack(clips)  # (n, 4, h, w)
    n, frames, h, w = tok.shape
    plan = Plan.basic("omega", h // ph, w // pw, frames, model.extent)
    pool = NearbyContextPool(plan.extent, model.extent)
    if captions:
        states, mask = eng.text_encoder.encode(texts)
        memory = model.text_memory(states, mask)
    else:
        memory = model.text_memory(None, batch=n)
    per = [[] for _ in range(frames)]
    for item in plan:
        f, y, x = item.pos
        target = tok[:, f, y * ph:(y + 1) * ph, x * pw:(x + 1) * pw].reshape(n, -1)
        prev = model.prev_index(tok[:, f - 1] if f else None, y, x, batch=n)
        logits, payload = model.patch_forward(target, [(p, o) for _, p, o in pool.select(item.pos)], memory, prev=prev,
                                              edges=edges(y, x, plan.rows, plan.cols))
        per[f].append(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1)).item())
        pool.add(item.pos, payload, plan.expiry(item.pos))
        pool.remove(item.step)
    return [sum(v) / len(v) for v in per]


if __name__ == "__main__":
    main()
