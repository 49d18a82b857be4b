"""Canvases of any width: peak memory and time through the tile folder, the tiled decode against the
whole-canvas decode, the tile size that costs nothing, seams, the time to the first strip, and an
endless canvas's memory and speed along it.

    python benchmarks/tiled_canvas.py                  # the shipped model, 1 thread (40 minutes beside a trainer)
    python benchmarks/tiled_canvas.py --parts memory --widths 4096 32768    # only peak memory, two widths
    python benchmarks/tiled_canvas.py --parts endless --endless 262144      # an endless canvas's memory along it

Peak RSS is measured by /usr/bin/time around `streamgen generate --task uig --size Wx128 -o DIR/`
(a fresh process per width, OMP_NUM_THREADS=1), beside the generation time that command reports.
Whether time is linear in width is measured in this process, drift-proof: the widest canvas and a
chain of narrow ones are made strip by strip in turns. The rest runs here too, on 1 thread. Compare
the ratios, each measured within one run: absolute times on a shared machine drift.
"""
from __future__ import annotations

import argparse
import itertools
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from _common import rss_mb

from streamgen import Plan, SamplingConfig
from streamgen.bundle import load
from streamgen.evaluation import seam_score
from streamgen.plugins.codec import Tiling

HEIGHT = 128
PARTS = ["decode", "first", "linear", "memory", "endless"]


def generate(width: int, output: str) -> tuple[float, float]:
    """Peak RSS (MB) and generation seconds of one `streamgen generate` process."""
    cmd = ["/usr/bin/time", "-f", "peak-kb %M", sys.executable, "-m", "streamgen.cli", "generate",
           "--task", "uig", "--size", f"{width}x{HEIGHT}", "-o", output]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    err = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stderr
    peak = int(re.search(r"peak-kb (\d+)", err).group(1)) / 1024
    seconds = float(re.search(r"tokens in ([\d.]+) s", err).group(1))
    return peak, seconds


def tokens_of(engine, width: int, seed: int) -> torch.Tensor:
    """The tokens (1, 8, width / 16) of a `uig` canvas with the model's preset."""
    plan = Plan.basic("omega", *engine.grid(HEIGHT, width), 1, engine.model.extent)
    frames = engine.generate_tokens(plan, seed=seed, sampling=engine.sampling_for(SamplingConfig()),
                                    wavefront=engine.wavefront)
    return next(frames).tokens


def whole_and_tiled(codec, tokens: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    tiling = codec.tiling
    tiled = codec.decode(tokens)[0].numpy()
    codec.tiling = None
    whole = codec.decode(tokens)[0].numpy()
    codec.tiling = tiling
    return whole, tiled


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255 ** 2 / np.mean((a.astype(float) - b.astype(float)) ** 2)))


def differences(engine, seeds: list[int]) -> None:
    """Largest and mean |tiled - whole| (levels of 255) on the same tokens, and what each reconstructs
    of real landscapes: one scene 2,048 px wide, and eight different scenes side by side."""
    from streamgen.training.data import landscapes as L

    codec = engine.codec
    for seed in seeds:
        whole, tiled = whole_and_tiled(codec, tokens_of(engine, 4096, seed))
        d = np.abs(whole.astype(int) - tiled.astype(int))
        print(f"generated 4,096 px canvas, seed {seed}: |tiled - whole| max {d.max()}, mean {d.mean():.2f}, "
              f"99.9% of values within {np.quantile(d, 0.999):.0f} levels", flush=True)
    scenes = {"one scene, 2,048 px": L.render(L.sample_scene(5), HEIGHT, 2048)[0],
              "8 scenes side by side, 4,096 px": np.concatenate(
                  [L.render(L.sample_scene(s), HEIGHT, 512)[0] for s in range(8)], 1)}
    for name, image in scenes.items():
        whole, tiled = whole_and_tiled(codec, codec.encode(torch.from_numpy(image)[None]))
        d = np.abs(whole.astype(int) - tiled.astype(int))
        print(f"rendered landscape, {name}: |tiled - whole| max {d.max()}, mean {d.mean():.2f}; "
              f"PSNR against the picture: tiled {psnr(tiled, image):.2f} dB, whole {psnr(whole, image):.2f} dB",
              flush=True)


def tile_speed(engine, width: int, tiles: list[int], repeats: int = 3) -> None:
    """Decode time of a ``width`` px canvas in windows of each tile size against one piece, interleaved."""
    codec = engine.codec
    tokens = tokens_of(engine, 4096, 0).repeat(1, 1, width // 4096)
    kept = codec.tiling
    settings = [None] + [Tiling(tile=t, context=kept.context, blend=kept.blend) for t in tiles]
    best = {s: float("inf") for s in settings}
    for _ in range(repeats):
        for s in settings:
            codec.tiling = s
            t0 = time.perf_counter()
            codec.decode(tokens)
            best[s] = min(best[s], time.perf_counter() - t0)
    codec.tiling = kept
    print(f"decode of a {width:,} px canvas, best of {repeats}: one piece {best[None]:.2f} s; "
          + ", ".join(f"tiles of {s.tile} tokens {best[s] / best[None]:.2f}x" for s in settings[1:]), flush=True)


def seams(engine, canvases: int, patches: int = 32) -> None:
    """The seam score (`streamgen.evaluation.seam_score`, the eval's canvases: 32 patches wide, no
    guidance, seeds 10 on) of the same tokens decoded whole and tiled, at patch borders and at the
    tiles' boundaries alone."""
    patch_px = engine.codec.factor * engine.model.cfg.patch_w
    tile_px = engine.codec.tiling.tile * engine.codec.factor
    engine.preset = {**engine.preset, "guidance": 1.0}
    rows = []
    for seed in range(10, 10 + canvases):
        whole, tiled = whole_and_tiled(engine.codec, tokens_of(engine, patches * patch_px, seed))
        rows.append([seam_score(whole, patch_px), seam_score(tiled, patch_px),
                     seam_score(whole, tile_px), seam_score(tiled, tile_px)])
    m = np.mean(rows, 0)
    print(f"seam score over {canvases} canvases of {patches * patch_px} px: at patch borders whole {m[0]:.3f}, "
          f"tiled {m[1]:.3f}; at the tiles' boundaries ({tile_px} px apart) whole {m[2]:.3f}, tiled {m[3]:.3f}",
          flush=True)


def linear_time(engine, long: int, short: int) -> None:
    """Time per column of one ``long`` px canvas against a chain of ``short`` px canvases, strip by
    strip in turns, so that both see the same machine (a shared machine's speed drifts by tens of
    percent within minutes: separate runs of 4,096 and 32,768 px differed by 23% per column)."""
    long_strips = engine.strips("uig", height=HEIGHT, width=long, seed=1)
    shorts = (engine.strips("uig", height=HEIGHT, width=short, seed=2 + k) for k in itertools.count())
    short_strips, spent_long, spent_short, this_short, done_short = next(shorts), 0.0, 0.0, 0.0, 0
    while True:
        t0 = time.perf_counter()
        if next(long_strips, None) is None:
            break
        t1 = time.perf_counter()
        got = next(short_strips, None)
        this_short += time.perf_counter() - t1
        spent_long += t1 - t0
        if got is None:  # a short canvas done: it counts whole
            spent_short, this_short, done_short = spent_short + this_short, 0.0, done_short + 1
            short_strips = next(shorts)
    ratio = (spent_long / long) / (spent_short / (done_short * short))
    print(f"time per column of a {long:,} px canvas against {done_short} canvases of {short:,} px made in turns: "
          f"{ratio:.3f} ({spent_long:.0f} s and {spent_short:.0f} s)", flush=True)


def first_strip(engine, width: int) -> None:
    t0 = time.perf_counter()
    first = None
    for strip in engine.strips("uig", height=HEIGHT, width=width, seed=1):
        first = first or time.perf_counter() - t0
    total = time.perf_counter() - t0
    print(f"{width:,} px canvas strip by strip: first strip after {first:.2f} s, the whole canvas after "
          f"{total:.1f} s ({first / total:.4f} of it)", flush=True)


def endless(engine, width: int, every: int = 16384) -> None:
    """An endless canvas strip by strip up to ``width`` px: this process's RSS and the time per column
    at each ``every`` px (nothing is kept but the strip in hand and a window of tokens)."""
    print(f"endless canvas, {HEIGHT} px high, strip by strip: px, RSS (MB), ms per px column since the last row")
    t0, mark = time.perf_counter(), every
    for strip in engine.strips("uig", height=HEIGHT, endless=True, seed=1):
        end = strip.left + strip.pixels.shape[1]
        if end >= mark:
            t1 = time.perf_counter()
            print(f"  {end:>9,} px  {rss_mb():6.0f}  {(t1 - t0) / every * 1e3:.3f}", flush=True)
            t0, mark = t1, mark + every
        if end >= width:
            break


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--widths", type=int, nargs="+", default=[4096, 32768, 262144])
    ap.add_argument("--png-widths", type=int, nargs="*", default=[4096, 32768],
                    help="the same canvases as one PNG: the whole image in memory")
    ap.add_argument("--first-strip", type=int, default=65536)
    ap.add_argument("--seams", type=int, default=8, help="canvases for the seam score")
    ap.add_argument("--linear", type=int, nargs=2, default=[262144, 4096], metavar=("LONG", "SHORT"),
                    help="widths of the canvases whose time per column is compared, made in turns")
    ap.add_argument("--endless", type=int, default=262144, help="px of the endless canvas to draw")
    ap.add_argument("--parts", nargs="+", default=PARTS, choices=PARTS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    engine = load()
    if "decode" in args.parts:
        differences(engine, seeds=[1, 2, 3])
        tile_speed(engine, 16384, tiles=[8, 16, 32, 64])
        seams(engine, args.seams)
    if "first" in args.parts:
        first_strip(engine, args.first_strip)
    if "linear" in args.parts:
        linear_time(engine, *args.linear)
    if "endless" in args.parts:
        endless(engine, args.endless)
    if "memory" not in args.parts:
        return
    with tempfile.TemporaryDirectory() as d:
        runs = {}
        for w in args.widths:
            runs[w] = generate(w, f"{d}/w{w}/")
            print(f"{w:,} x {HEIGHT} px into a tile folder: peak RSS {runs[w][0]:.0f} MB, generation "
                  f"{runs[w][1]:.1f} s, {runs[w][1] / w * 1e3:.3f} ms per column", flush=True)
        for w in args.png_widths:
            peak, seconds = generate(w, f"{d}/w{w}.png")
            print(f"{w:,} x {HEIGHT} px into one PNG (the whole image in memory): peak RSS {peak:.0f} MB, "
                  f"generation {seconds:.1f} s", flush=True)
    peaks = [runs[w][0] for w in args.widths]
    per_px = [runs[w][1] / w for w in args.widths]
    print(f"tile folder: peak RSS spread {(max(peaks) - min(peaks)) / min(peaks):.1%} from "
          f"{args.widths[0]:,} to {args.widths[-1]:,} px; generation time per column at the widest against "
          f"the narrowest, in separate processes {per_px[-1] / per_px[0]:.3f}")


if __name__ == "__main__":
    main()
