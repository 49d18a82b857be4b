"""Share of wall time spent encoding output, against generating, for the live sinks.

    python benchmarks/encode_share.py                    # the shipped model if present, else a random
                                                         # model of the default shape
    python benchmarks/encode_share.py --model runs/bundle --frames 48

Generates frames with the engine and writes them to an H.264 file, an MPEG-TS pipe (to /dev/null)
and, with --rtmp URL, a live server; prints encoding seconds / total seconds for each (target: 5% at
most). Both figures come from the same run.
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import torch

from streamgen import Engine, ModelConfig, VisionDecoder
from streamgen.bundle import SHIPPED, load
from streamgen.codecs import PaletteCodec
from streamgen.output.sinks import open_sink


def engine_for(spec: str | None) -> tuple[Engine, str]:
    if spec is None and not (SHIPPED / "model.safetensors").is_file():
        spec = "shape"
    if spec == "shape":  # the default model's shape, random weights, palette codec at factor 16
        cfg = ModelConfig(vocab_size=512, width=256, layers=4, heads=4, patch_h=4, patch_w=4)
        return Engine(VisionDecoder(cfg), PaletteCodec(512, factor=16)), "random model of the default shape"
    return load(spec), spec or "shipped model"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--size", default="128x128")
    ap.add_argument("--fps", type=float, default=8)
    ap.add_argument("--rtmp", default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    w, h = (int(v) for v in args.size.split("x"))
    eng, label = engine_for(args.model)
    print(f"# encode share, {time.strftime('%Y-%m-%d')}, {platform.machine()}, {label}, {w}x{h}, "
          f"{args.frames} frames")
    targets = {"file (.mp4, H.264)": os.path.join(tempfile.mkdtemp(), "a.mp4"), "pipe (MPEG-TS)": "-"}
    if args.rtmp:
        targets["rtmp"] = args.rtmp
    for name, target in targets.items():
        opts = {}
        if target == "-":
            opts["stream"] = open(os.devnull, "wb")
        sink = open_sink(target, fps=args.fps, size=(w, h), **opts)
        gen = eng.stream(height=h, width=w, frames=args.frames, seed=0)
        t0 = time.perf_counter()
        for frame in gen:
            sink.write(frame)
        sink.close()
        total = time.perf_counter() - t0
        print(f"{name:22s} total {total:6.2f} s, encoding {sink.seconds:5.2f} s, "
              f"share {100 * sink.seconds / total:4.1f}% (target at most 5%)")


if __name__ == "__main__":
    main()
