"""Kill a long `--model tiny` stream at random points, with SIGTERM and SIGKILL, and count the frames
lost per kill, with and without snapshots, for file outputs (.mp4, .mkv, a pipe into a file, numbered
PNGs).

Each trial starts `streamgen generate --frames 100000` and kills it once it has handed a random
number of frames to its output (5-70; 25-70 with snapshots, so that the first snapshot exists). The
generator runs under a small wrapper that records, after each frame the sink took, how many it took
(a counter file): that is what the stream had made when it died.

- Without snapshots: lost = frames made - frames a reader gets from the output (ffprobe for video).
- With snapshots (`--snapshot-every 10`): the stream is resumed (`--resume`), the resumed stream is
  stopped with SIGTERM once the two hold 90 frames, the segments are joined (`streamgen.output.join`),
  and lost = frames of the first 90 of an uninterrupted run (lossless PNGs, same seed) that the
  joined output lacks or has out of place; made twice = frames made - the snapshot's frame.

The bound a killed stream keeps to without snapshots, in frames: G + D for .mp4 (a fragment per
keyframe; G the keyframe interval, D the encoder's delay), D + 1 for Matroska (the open cluster), D
for MPEG-TS, 0 for PNGs; the script measures D. SIGTERM loses nothing. The tiny model's frames are
noise, which x264 encodes as keyframes only, so the .mp4 figure here is D + 1: the GOP part of its
bound is checked by tests/test_crash_safe.py with frames an encoder predicts.

    python benchmarks/kill_resume.py                # 16 trials, about two minutes on 2 cores
    python benchmarks/kill_resume.py --trials 32 --seed 2
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamgen.engine import snapshot as snap  # noqa: E402
from streamgen.output.join import join  # noqa: E402

FPS, EVERY, REF = 8, 10, 90
ARGS = ["generate", "--model", "tiny", "--prompt", "day hills", "--seed", "5", "--size", "32x32",
        "--fps", str(FPS)]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# counts the frames the stream's sink took, after each one, into the file named by KR_COUNTER
WRAPPER = """
import os, sys
from streamgen.output import sinks
fd = os.open(os.environ["KR_COUNTER"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
opened = sinks.open_sink
def open_sink(*a, **k):
    sink = opened(*a, **k)
    write, n = sink.write, [0]
    def counted(frame):
        write(frame)
        n[0] += 1
        os.pwrite(fd, str(n[0]).encode().ljust(12), 0)
    sink.write = counted
    return sink
sinks.open_sink = open_sink
from streamgen.cli import main
sys.argv[0] = "streamgen"
sys.exit(main(sys.argv[1:]))
"""
FORMATS = {"mp4": ".mp4", "mkv": ".mkv", "pipe": ".ts", "png": "%04d.png"}


def counter(path: Path) -> int:
    try:
        return int(path.read_bytes().strip() or 0)
    except (OSError, ValueError):
        return 0


def start(args: list[str], counter_file: Path, stdout=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRAPPER, *args], stdout=stdout or subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                            env={**ENV, "KR_COUNTER": str(counter_file)})


def stop_at(proc: subprocess.Popen, counter_file: Path, frames: int, sig: int, timeout: float = 120) -> int:
    deadline = time.time() + timeout
    while counter(counter_file) < frames:
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"the stream ended or stalled before frame {frames}")
        time.sleep(0.005)
    proc.send_signal(sig)
    proc.wait(timeout=120)
    return counter(counter_file)


def decode(path: Path) -> list[np.ndarray]:
    out = []
    try:
        with av.open(str(path)) as c:
            for f in c.decode(video=0):
                out.append(f.to_ndarray(format="rgb24"))
    except (av.error.FFmpegError, OSError):
        pass  # a killed file ends in a partial packet
    return out


def pngs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix == ".png" and not p.name.startswith("."))


def readable(out: Path, fmt: str) -> int:
    return len(pngs(out.parent)) if fmt == "png" else len(decode(out))


def in_place(frames: list[np.ndarray], ref: list[np.ndarray]) -> int:
    """Frames of ``ref`` that ``frames`` holds at the same place (the nearest of ref's neighbours)."""
    ok = 0
    for i, r in enumerate(ref):
        if i >= len(frames):
            break
        near = range(max(0, i - 2), min(len(ref), i + 3))
        err = {j: float(((frames[i].astype(float) - ref[j]) ** 2).mean()) for j in near}
        ok += min(err, key=err.get) == i
    return ok


def encoder_delay() -> int:
    """The most frames libx264 holds with the file settings (D): its lookahead and frame threads."""
    from streamgen.output.sinks import open_sink

    delay = 0
    with tempfile.TemporaryDirectory() as d:
        sink = open_sink(str(Path(d) / "d.mkv"), fps=FPS, size=(32, 32))
        y, x = np.mgrid[0:32, 0:32]
        for i in range(60):  # frames an encoder predicts, as a video's are
            sink.write(np.stack([(x * 8 + i * 3) % 256, (y * 8 + i) % 256, (x + y) % 256], -1).astype(np.uint8))
            delay = max(delay, sink.frames - sink.muxed)
        sink.close()
    return delay


def trial(work: Path, fmt: str, sig: int, snapshots: bool, kill_at: int, ref: list[np.ndarray]) -> dict:
    work.mkdir()
    ext = FORMATS[fmt]
    out = work / ("frames" if fmt == "png" else "") / (ext if fmt == "png" else f"part{ext}")
    out.parent.mkdir(exist_ok=True)
    target = "-" if fmt == "pipe" else str(out)
    state = work / "s.snap"
    extra = ["--snapshot", str(state), "--snapshot-every", str(EVERY)] if snapshots else []
    with open(out if fmt == "pipe" else os.devnull, "wb") as fh:
        proc = start([*ARGS, "--frames", "100000", "-o", target, *extra], work / "count",
                     stdout=fh if fmt == "pipe" else None)
        made = stop_at(proc, work / "count", kill_at, sig)
    row = {"format": fmt, "signal": signal.Signals(sig).name, "snapshots": snapshots, "made": made,
           "exit": proc.returncode, "readable": readable(out, fmt)}
    if not snapshots:
        row["lost"] = made - row["readable"]
        return row
    saved = snap.load(state)[0].frames_done if state.exists() else None
    row["snapshot"] = saved
    if saved is None:  # killed before the first snapshot: a restart from frame 0
        row["lost"], row["twice"] = 0, made
        return row
    row["twice"] = made - saved
    resumed = out if fmt == "png" else work / f"part.from{saved:06d}{ext}"
    with open(resumed if fmt == "pipe" else os.devnull, "wb") as fh:
        proc = start(["generate", "--resume", str(state)], work / "count2", stdout=fh if fmt == "pipe" else None)
        stop_at(proc, work / "count2", REF - saved, signal.SIGTERM)
    if fmt == "png":
        got = [np.asarray(decode(p)[0]) for p in pngs(out.parent)[:REF]]
    else:
        join([str(out), str(resumed)], str(work / f"joined{ext}"))
        got = decode(work / f"joined{ext}")
    row["lost"] = REF - in_place(got, ref)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=16, help="kills; they cycle through format x signal x snapshots")
    ap.add_argument("--seed", type=int, default=1, help="where the kills fall")
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    combos = [(f, s, n) for n in (False, True) for s in (signal.SIGKILL, signal.SIGTERM) for f in FORMATS]
    t0 = time.time()
    delay = encoder_delay()
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        (d / "ref").mkdir()
        subprocess.run([sys.executable, "-m", "streamgen.cli", *ARGS, "--frames", str(REF), "-o",
                        str(d / "ref" / "%04d.png")], check=True, stderr=subprocess.DEVNULL, env=ENV)
        ref = [decode(p)[0] for p in pngs(d / "ref")]
        rows = []
        for k in range(args.trials):
            fmt, sig, snapshots = combos[k % len(combos)]
            # with snapshots, past the point where the first one (frame 10) is on disk in every format
            row = trial(d / f"t{k}", fmt, sig, snapshots, rnd.randint(25 if snapshots else 5, 70), ref)
            rows.append(row)
            print(" ".join(f"{key}={val}" for key, val in row.items()), flush=True)
    bound = {"mp4": FPS + delay, "mkv": delay + 1, "pipe": 0, "png": 0}  # pipes: zerolatency, D = 0
    print(f"\nkeyframe interval G = {FPS} (one second), libx264 file delay D = {delay} frames; "
          f"{len(rows)} kills in {time.time() - t0:.0f} s")
    print("| signal | snapshots | format | kills | frames lost per kill (mean / max) | bound | made twice (max) |")
    print("|---|---|---|---|---|---|---|")
    for snapshots in (False, True):
        for sig in ("SIGKILL", "SIGTERM"):
            for fmt in FORMATS:
                sel = [r for r in rows if (r["signal"], r["snapshots"], r["format"]) == (sig, snapshots, fmt)]
                if not sel:
                    continue
                lost = [r["lost"] for r in sel]
                b = 0 if snapshots or sig == "SIGTERM" else bound[fmt]
                twice = max((r.get("twice", 0) for r in sel), default=0)
                print(f"| {sig} | {'yes' if snapshots else 'no'} | {fmt} | {len(sel)} | "
                      f"{np.mean(lost):.1f} / {max(lost)} | {b} | {twice if snapshots else '-'} |")
    over = [r for r in rows if r["lost"] > (0 if r["snapshots"] or r["signal"] == "SIGTERM" else bound[r["format"]])]
    print(f"\nkills over their bound: {len(over)}")


if __name__ == "__main__":
    main()
