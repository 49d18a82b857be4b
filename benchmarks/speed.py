"""streamgen's decoder against two reference decoders built from the same weights, in one run.

    python benchmarks/speed.py            # bench preset, 128x128 px video (4 patches a frame)

- recompute: no cache; every token re-runs the model over the whole sequence so far (as the open
  NUWA implementation and taming-transformers' sampler do), with the same NCP mask.
- full KV cache: keys and values of every generated patch are kept and attended to (offsets outside
  the extent clamped to its edge); nothing is ever evicted.
- streamgen: the Nearby Context Pool with eviction.
Prints tokens per second of each at a given video length, streamgen's speed as a multiple of each,
and the cache memory of each as the video grows.
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

from streamgen import Engine, ModelConfig, PRESETS, Plan, VisionDecoder
from streamgen.codecs import PaletteCodec
from streamgen.config import SamplingConfig
from streamgen.sampling import sample


def history(model, plan, frames):
    """Tokens (1, N, M) and positions of a plan's first ``frames`` frames, sampled by streamgen."""
    eng = Engine(model, PaletteCodec(model.cfg.vocab_size, 8))
    toks, pos = [], []
    for tf in eng.generate_tokens(plan, seed=0):
        for it in list(plan.iter_from(tf.index))[: plan.rows * plan.cols]:
            f, y, x = it.pos
            toks.append(tf.tokens[0, y * 8:(y + 1) * 8, x * 8:(x + 1) * 8].reshape(-1))
            pos.append(it.pos)
        if tf.index + 1 == frames:
            break
    return torch.stack(toks)[None], pos


@torch.inference_mode()
def recompute_rate(model, toks, pos, tokens: int) -> float:
    """Tokens/s decoding the last patch's first ``tokens`` tokens by re-running the whole sequence."""
    t0 = time.perf_counter()
    for m in range(tokens):
        model(toks, pos)[:, -1, m]  # the whole sequence, every token
    return tokens / (time.perf_counter() - t0)


@torch.inference_mode()
def full_cache_rate(model, toks, pos, tokens: int) -> tuple[float, int]:
    """Tokens/s of decoding the last patch against every earlier patch, and the cache bytes."""
    ext = model.extent
    ws = model.new_workspace(1, len(pos))
    ctx = []
    for i in range(len(pos) - 1):  # build every patch's cache once (prefill), never evict
        model.load_context(ws, [])
        model.prefill(ws, toks[:, i])
        ctx.append((model.patch_payload(ws), pos[i]))
    cur = pos[-1]

    def clamp(p):
        return (max(p[0], cur[0] - ext.f), min(max(p[1], cur[1] - ext.h), cur[1] + ext.h),
                min(max(p[2], cur[2] - ext.w), cur[2] + ext.w))

    from streamgen.adc import rel_index

    loaded = [(pay, rel_index(ext, clamp(p), cur)) for pay, p in ctx]
    nbytes = sum(p.numel() * p.element_size() for p, _ in loaded)
    u = torch.rand(tokens, dtype=torch.float64)
    cfg = SamplingConfig()
    t0 = time.perf_counter()
    model.load_context(ws, loaded)
    tok = torch.full((1,), model.bos)
    for m in range(tokens):  # sampling included, as in streamgen's loop; the history's token is fed
        sample(model.decode_step(ws, tok, m), u[m:m + 1], cfg)
        tok = toks[:, -1, m]
    return tokens / (time.perf_counter() - t0), nbytes


def streamgen_rate(model, frames: int) -> tuple[float, int]:
    eng = Engine(model, PaletteCodec(model.cfg.vocab_size, 8))
    gen = eng.generate_tokens(Plan.basic("omega", 2, 2, None, model.extent), seed=0)
    for _ in range(frames - 1):
        tf = next(gen)
    nbytes = sum(e.payload.numel() * e.payload.element_size() for e in tf.pool.values())
    tok0, t0 = eng.stats.tokens, time.perf_counter()
    next(gen)
    rate = (eng.stats.tokens - tok0) / (time.perf_counter() - t0)
    gen.close()
    return rate, nbytes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", default="2,8,32")
    ap.add_argument("--tokens", type=int, default=8, help="tokens timed per reference measurement")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = VisionDecoder(ModelConfig(**PRESETS["bench"])).eval()
    print(f"# decoders, {time.strftime('%Y-%m-%d')}, {platform.machine()}, bench preset, 128x128 px video")
    print("| frames | streamgen tok/s | recompute tok/s | full KV tok/s | x recompute | x full KV | "
          "NCP cache MB | full KV cache MB |")
    print("|---|---|---|---|---|---|---|---|")
    for frames in (int(v) for v in args.lengths.split(",")):
        plan = Plan.basic("omega", 2, 2, frames, model.extent)
        toks, pos = history(model, plan, frames)
        ours, ours_bytes = streamgen_rate(model, frames)
        rec = recompute_rate(model, toks, pos, args.tokens)
        full, full_bytes = full_cache_rate(model, toks, pos, model.M)
        print(f"| {frames} | {ours:.0f} | {rec:.1f} | {full:.0f} | {ours / rec:.0f}x | {ours / full:.1f}x | "
              f"{ours_bytes / 1e6:.1f} | {full_bytes / 1e6:.1f} |")


if __name__ == "__main__":
    main()
