"""Soak: a tiny model streams many frames through a real sink; memory, file descriptors and pts.

    python benchmarks/soak.py                 # 10,000 frames (about ten minutes on two cores)
    python benchmarks/soak.py --frames 2000

Prints RSS over frames 1,000-2,000 and over the last 1,000 frames (target: within 5%), the number of
open file descriptors at the start and at the end, and whether the pts read back from the written file
are strictly increasing. tests/test_soak.py runs the same check with a short count.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

import av
import torch

from _common import rss_mb
from streamgen.output.sinks import open_sink
from streamgen.testing import tiny_engine


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def soak(frames: int, out: str, size: int = 16) -> dict:
    eng = tiny_engine()
    sink = open_sink(out, fps=25, size=(size, size))
    fds0 = open_fds()
    rss = []
    t0 = time.perf_counter()
    for i, frame in enumerate(eng.stream(height=size, width=size, frames=frames, seed=0), 1):
        sink.write(frame)
        if i % 10 == 0:
            rss.append((i, rss_mb()))
    sink.close()
    seconds = time.perf_counter() - t0
    fds1 = open_fds()
    pts = []
    with av.open(out) as c:
        for packet in c.demux(video=0):
            if packet.pts is not None:
                pts.append(packet.pts)
    pts.sort()  # decode order may differ from presentation order; every pts must still be unique
    increasing = all(b > a for a, b in zip(pts, pts[1:])) and len(pts) == frames
    window = max(1, frames // 10)
    early = [r for i, r in rss if window < i <= 2 * window]
    late = [r for i, r in rss if i > frames - window]
    return dict(seconds=seconds, fds0=fds0, fds1=fds1, pts_ok=increasing, packets=len(pts),
                rss_early=statistics.mean(early), rss_late=statistics.mean(late), window=window)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = os.path.join(tempfile.mkdtemp(), "soak.mkv")
    r = soak(args.frames, out)
    w = r["window"]
    print(f"# soak, {time.strftime('%Y-%m-%d')}, {platform.machine()}, tiny model, 16x16 px, "
          f"{args.frames} frames into {out} in {r['seconds']:.0f} s")
    print(f"RSS frames {w}-{2 * w}: {r['rss_early']:.1f} MB; last {w}: {r['rss_late']:.1f} MB; "
          f"ratio {r['rss_late'] / r['rss_early']:.3f} (target within 5%)")
    print(f"open file descriptors: {r['fds0']} at the start, {r['fds1']} at the end")
    print(f"pts read back: {r['packets']} packets, strictly increasing and complete: {r['pts_ok']}")


if __name__ == "__main__":
    main()
