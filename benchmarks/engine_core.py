"""Engine core benchmark: flat memory, linear time, and decode speed at the target shape.

    python benchmarks/engine_core.py            # full run (about two minutes)
    python benchmarks/engine_core.py --quick    # fewer frames, for a smoke test

Prints RSS after 100 and 1,000 frames of a tiny model, time(1,000 frames) / time(100 frames), and the
steady-state tokens per second of the "bench" preset (width 256, 4 layers, 8x8-token patches,
1,024 codes, fp32, batch 1) beside this machine's matmul bound for that model, measured in the same
run. Absolute figures vary on shared machines; the ratios are what to compare.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from _common import rss_mb, steady_keys, steady_rate
from streamgen import Engine, ModelConfig, PRESETS, VisionDecoder
from streamgen.codecs import PaletteCodec
from streamgen.testing import tiny_engine


def flat_memory(frames_short: int, frames_long: int) -> dict:
    """RSS at two lengths of one stream, and time(long) against time(short), drift-proof.

    The speed of a shared machine drifts by tens of percent within a minute, so the long stream and
    a chain of fresh short streams run interleaved, frame by frame: both see the same machine. The
    long stream's total is compared with the short streams' total divided by their count.
    """
    eng_long, eng_short = tiny_engine(), tiny_engine()
    for _ in eng_long.stream(height=16, width=16, frames=20, seed=1):  # warm the allocator
        pass
    long_gen = eng_long.stream(height=16, width=16, frames=frames_long, seed=0)
    shorts = (eng_short.stream(height=16, width=16, frames=frames_short, seed=k)
              for k in range(frames_long // frames_short))
    short_gen = next(shorts)
    t_long = t_short = 0.0
    rss = {}
    for i in range(1, frames_long + 1):
        t0 = time.perf_counter()
        next(long_gen)
        t1 = time.perf_counter()
        try:
            next(short_gen)
        except StopIteration:
            short_gen = next(shorts)
            t1 = time.perf_counter()
            next(short_gen)
        t_short += time.perf_counter() - t1
        t_long += t1 - t0
        if i in (frames_short, frames_long):
            rss[i] = rss_mb()
    return dict(rss_short=rss[frames_short], rss_long=rss[frames_long], t_short=t_short * frames_short /
                frames_long, t_long=t_long)


def matmul_bound(cfg: ModelConfig, reps: int = 300, keys: int = 0) -> float:
    """Tokens per second if a decode step did nothing but its matmuls (batch 1, fp32, warm caches).

    ``keys=0``: the weight matmuls only (projections, feed-forward, head). ``keys > 0`` adds each
    layer's two attention products over that many keys (scores q K^T and the mix p V per head, in the
    workspace's (H, T, hd) layout): every matmul a decode step does, at that context length.
    """
    D, Fw, V = cfg.width, cfg.mlp_ratio * cfg.width, cfg.vocab_size
    per_layer = [(3 * D, D), (D, D), (Fw, D), (D, Fw)] + ([(D, D), (D, D)] if cfg.text_dim else [])
    shapes = per_layer * cfg.layers + [(V, D)]  # text models: the cross-attention's query and output
    ws = [torch.randn(o, i) for o, i in shapes]
    xs = [torch.randn(1, i) for _, i in shapes]
    H, hd = cfg.heads, cfg.width // cfg.heads
    kv = [torch.randn(2, 1, H, keys, hd) for _ in range(cfg.layers if keys else 0)]
    q, p = torch.randn(1, H, 1, hd), torch.randn(1, H, 1, keys)

    def step():
        for w, x in zip(ws, xs):
            F.linear(x, w)
        for k, v in kv:
            torch.matmul(q, k.transpose(-1, -2))
            torch.matmul(p, v)

    for _ in range(20):
        step()
    t0 = time.perf_counter()
    for _ in range(reps):
        step()
    return reps / (time.perf_counter() - t0)


def decode_speed(windows: int, frames_per_window: int) -> list[float]:
    torch.manual_seed(0)
    cfg = ModelConfig(**PRESETS["bench"])
    eng = Engine(VisionDecoder(cfg), PaletteCodec(cfg.vocab_size, factor=8))
    gen = eng.stream(height=128, width=128, frames=None, seed=0)
    for _ in range(2):  # the first frames have less context; steady state starts after ef frames
        next(gen)
    rates = []
    for _ in range(windows):
        tok0, t0 = eng.stats.tokens, time.perf_counter()
        for _ in range(frames_per_window):
            next(gen)
        rates.append((eng.stats.tokens - tok0) / (time.perf_counter() - t0))
    gen.close()
    return rates


def batched_speed(streams: int, frames: int) -> float:
    """Tokens per second of ``streams`` independent streams decoded together (bench preset)."""
    from streamgen import Extent, Plan

    torch.manual_seed(0)
    cfg = ModelConfig(**PRESETS["bench"])
    eng = Engine(VisionDecoder(cfg), PaletteCodec(cfg.vocab_size, factor=8))
    plan = Plan.basic("omega", 2, 2, None, Extent(w=1, h=1, f=1))
    gen = eng.generate_tokens(plan, seed=list(range(streams)), batch=streams)
    return steady_rate(eng, gen, 2, frames)


def wavefront_speed(cols: int, rows: int) -> tuple[float, float]:
    """Tokens per second on one image ``cols`` x ``rows`` patches wide: one by one, then wavefront."""
    torch.manual_seed(0)
    cfg = ModelConfig(**PRESETS["bench"])
    eng = Engine(VisionDecoder(cfg), PaletteCodec(cfg.vocab_size, factor=8))
    out = []
    for wave in (False, True):
        eng.wavefront = wave
        t0 = time.perf_counter()
        for _ in eng.stream(height=64 * rows, width=64 * cols, frames=1, seed=0, extent=dict(w=1, h=1, f=0)):
            pass
        out.append(eng.stats.tokens / (time.perf_counter() - t0))
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    short, long = (20, 200) if args.quick else (100, 1000)
    print(f"# streamgen engine core benchmark, {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    mem = flat_memory(short, long)
    print("tiny model, 16x16 px video, extent (1,1,1):")
    print(f"  RSS after {short} frames: {mem['rss_short']:.1f} MB; after {long}: {mem['rss_long']:.1f} MB;"
          f" ratio {mem['rss_long'] / mem['rss_short']:.3f} (target within 5%)")
    print(f"  time({long}) / time({short}) = {mem['t_long'] / mem['t_short']:.2f} "
          f"(target {long / short:.0f} within 15%)")
    cfg = ModelConfig(**PRESETS["bench"])
    keys = round(steady_keys(Engine(VisionDecoder(cfg), PaletteCodec(cfg.vocab_size, factor=8)), 128))
    bound, full = matmul_bound(cfg), matmul_bound(cfg, keys=keys)
    rates = decode_speed(3 if args.quick else 5, 2 if args.quick else 4)
    bound_after, full_after = matmul_bound(cfg), matmul_bound(cfg, keys=keys)
    print(f"bench preset (width {cfg.width}, {cfg.layers} layers, {cfg.patch_h}x{cfg.patch_w}-token "
          f"patches, {cfg.vocab_size} codes), 128x128 px video, fp32, batch 1:")
    print(f"  steady-state tokens/s: median {statistics.median(rates):.0f}, best {max(rates):.0f}, "
          f"windows {[round(r) for r in rates]} (target 1000)")
    print(f"  matmul bound tokens/s, every matmul of the step incl. attention over {keys} keys (before, "
          f"after): {full:.0f}, {full_after:.0f}; median / bound = "
          f"{statistics.median(rates) / ((full + full_after) / 2):.2f}")
    print(f"  weight matmuls alone (before, after): {bound:.0f}, {bound_after:.0f}; "
          f"median / bound = {statistics.median(rates) / ((bound + bound_after) / 2):.2f}")
    batched = batched_speed(8, 1 if args.quick else 2)
    print(f"  8 streams in one batch: {batched:.0f} tokens/s in all, "
          f"{batched / statistics.median(rates):.1f}x batch 1")
    seq, wave = wavefront_speed(8, 8)
    print(f"  one image 8x8 patches (512x512 px), omega order: one by one {seq:.0f} tokens/s, "
          f"wavefront {wave:.0f} tokens/s ({wave / seq:.1f}x)")


if __name__ == "__main__":
    main()
