"""`streamgen serve` against separate `streamgen generate` processes, and under a load of API calls.

    python benchmarks/serve.py                                   # N = 1 2 3 4 6 8, shipped model, 128x128 at 8 frames/s
    python benchmarks/serve.py --streams 1 2 --seconds 10 --model tiny
    python benchmarks/serve.py --load --seconds 60               # 100 mixed API calls/s while 3 streams run
    python benchmarks/serve.py --soak 60 --fps 2                 # an hour of streams joining and leaving
    python benchmarks/serve.py --streams 1 3 --busy              # beside a process keeping one core busy
    python benchmarks/serve.py --one-batch                       # also a server drawing every round as one batch
    python benchmarks/serve.py --native-step                     # the decode step in C++, servers and processes

The server and the processes tune their torch threads (the faster of --threads and one, tried now
and then) unless --fixed-threads; --busy runs the streams table beside a busy core. A server splits a
round of several streams into one batch a thread (its lanes, one per --threads); --one-batch adds a
column of a server with ``--lanes 1``, every round one batch on all the threads.

Streams: for each N, one server runs N t2v streams (128x128 at --fps, endless, each its own seed), then
N separate ``streamgen generate --realtime`` processes run the same streams into Matroska files (a
cluster a frame: readable while written). After --warmup seconds the frames each stream has made
are counted twice, --seconds apart (the server's ``GET /streams``; ffprobe on each file). Printed
per N and side: the frames/s of all streams together, and how far the slowest and the mean stream
fell behind real time over the window (window - frames / fps; 0 when it kept up).

Load: a server with 3 streams takes --rate calls a second for --seconds from 4 client threads: 50%
``GET /streams/{id}``, 20% ``GET /streams``, 20% ``PATCH`` with a new prompt, 10% a bad ``PATCH``
(its intended 400). First the streams run --warmup seconds, then up to 20 s without calls. Printed:
the streams' frames/s and the server's CPU (cores) without and with the calls, the CPU of this
client's own threads (on the same machine), calls made, answers by status, call latency (median, 95th
percentile), and each stream's frames/s and fall-behind over the loaded run.

Soak: a server holds --soak-streams streams for --soak minutes; every --churn seconds its oldest
stream is deleted and a new one (a new seed and prompt) created. The server's resident memory
(/proc/PID/status) is sampled every 10 s. Printed: the memory with no stream (after one stream has
come and gone) and with the streams running, so the memory a stream adds; then the median of each
tenth of the run, and the change from the first tenth to the last. Every address is 127.0.0.1.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Sequence

import httpx
from _common import busy_core, rss_mb

PROMPTS = ["a day sky over grassy hills, the camera pans right", "a sunset sky over desert dunes, the camera pans left",
           "a night sky over snowy mountains", "a day sky over a lake with hills"]
FFPROBE = shutil.which("ffprobe")


def start_server(model: str | None, max_streams: int, extra: Sequence[str] = ()) -> tuple[subprocess.Popen, httpx.Client]:
    """A `streamgen serve` on a free port of 127.0.0.1 and a client holding its token."""
    args = [sys.executable, "-m", "streamgen.cli", "serve", "--port", "0", "--max-streams", str(max_streams), *extra]
    proc = subprocess.Popen(args + (["--model", model] if model else []), stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    if "serving on" not in line:
        raise SystemExit(f"the server did not start: {line}{proc.stderr.read()}")
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # drained
    base, token = line.split("http://")[1].split()[0], line.split("token ")[1].split(";")[0]
    return proc, httpx.Client(base_url=f"http://{base}", timeout=120, headers={"Authorization": f"Bearer {token}"})


def request(i: int, size: int) -> dict:
    return {"prompt": PROMPTS[i % len(PROMPTS)], "width": size, "height": size, "frames": None, "seed": i}


def server_frames(client: httpx.Client) -> dict[str, int]:
    return {s["id"]: s["frames"] for s in client.get("/streams").json()["streams"]}


def file_frames(path: Path) -> int:
    out = subprocess.run([FFPROBE, "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                          "stream=nb_read_frames", "-of", "csv=p=0", str(path)], capture_output=True, text=True)
    return int((out.stdout.split() or ["0"])[0])


def window(count, seconds: float, warmup: float) -> tuple[dict, float]:
    """Frames made by each stream over ``seconds``, after ``warmup``; and the window's length."""
    time.sleep(warmup)
    t0, a = time.monotonic(), count()
    time.sleep(seconds)
    b, t1 = count(), time.monotonic()
    return {k: b[k] - a.get(k, 0) for k in b}, t1 - t0


def summary(made: dict, span: float, fps: float) -> tuple[float, float, float]:
    behind = [max(0.0, span - n / fps) for n in made.values()]
    return sum(made.values()) / span, max(behind), statistics.mean(behind)


def flags(args) -> list[str]:
    """The options the servers and the processes both get."""
    return ["--fixed-threads"] * args.fixed_threads + ["--native-step"] * args.native_step


def in_one_server(n: int, args, extra: Sequence[str] = ()) -> tuple[float, float, float]:
    proc, client = start_server(args.model, n, [*flags(args), *extra])
    try:
        for i in range(n):
            client.post("/streams", json={"request": request(i, args.size), "fps": args.fps}).raise_for_status()
        made, span = window(lambda: server_frames(client), args.seconds, args.warmup)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
    return summary(made, span, args.fps)


def in_processes(n: int, args, folder: Path) -> tuple[float, float, float]:
    procs, files = [], [folder / f"p{n}_{i}.mkv" for i in range(n)]
    for i, path in enumerate(files):
        r = request(i, args.size)
        cmd = [sys.executable, "-m", "streamgen.cli", "generate", "--task", "t2v", "--prompt", r["prompt"],
               "--size", f"{args.size}x{args.size}", "--seed", str(i), "--fps", str(args.fps), "--frames", "inf",
               "--realtime", "-o", str(path)] + (["--model", args.model] if args.model else []) + flags(args)
        procs.append(subprocess.Popen(cmd, stderr=subprocess.DEVNULL))
    try:
        deadline = time.monotonic() + 600
        while not all(p.exists() and file_frames(p) for p in files):  # loaded and making frames
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise SystemExit("the generate processes did not start making frames")
            time.sleep(0.5)
        made, span = window(lambda: {str(p): file_frames(p) for p in files}, args.seconds, args.warmup)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(120)
    return summary(made, span, args.fps)


def unpaced(args, folder: Path, frames: int = 48) -> float:
    """Frames/s of one `streamgen generate` stream as fast as it goes: what this machine does today."""
    cmd = [sys.executable, "-m", "streamgen.cli", "generate", "--task", "t2v", "--prompt", PROMPTS[0], "--size",
           f"{args.size}x{args.size}", "--frames", str(frames), "-o", str(folder / "unpaced.mkv")]
    t0 = time.monotonic()
    subprocess.run(cmd + (["--model", args.model] if args.model else []), check=True, capture_output=True)
    return frames / (time.monotonic() - t0)


def streams(args) -> None:
    print(f"{args.size}x{args.size} at {args.fps:g} frames/s, model {args.model or 'shipped'}, "
          f"window {args.seconds:g} s after {args.warmup:g} s")
    with tempfile.TemporaryDirectory() as tmp:
        print(f"one stream unpaced (`streamgen generate`, model loading included): "
              f"{unpaced(args, Path(tmp)):.2f} frames/s")
    one = " server, one batch: frames/s | worst / mean behind (s) |" if args.one_batch else ""
    print(f"| streams | server frames/s | server behind: worst / mean (s) | processes frames/s | "
          f"processes behind: worst / mean (s) |{one}\n|---|---|---|---|---|{'---|---|' if one else ''}")
    with busy_core(args.busy), tempfile.TemporaryDirectory() as tmp:
        for n in args.streams:
            s, p = in_one_server(n, args), in_processes(n, args, Path(tmp))
            row = f"| {n} | {s[0]:.2f} | {s[1]:.2f} / {s[2]:.2f} | {p[0]:.2f} | {p[1]:.2f} / {p[2]:.2f} |"
            if args.one_batch:
                b = in_one_server(n, args, ["--lanes", "1"])
                row += f" {b[0]:.2f} | {b[1]:.2f} / {b[2]:.2f} |"
            print(row, flush=True)


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds a process has used (Linux /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(args) -> None:
    proc, client = start_server(args.model, 3, flags(args))
    codes: dict[int, int] = {}
    took: list[float] = []
    try:
        ids = [client.post("/streams", json={"request": request(i, args.size), "fps": args.fps}).json()["id"]
               for i in range(3)]
        time.sleep(args.warmup)
        quiet = min(args.seconds, 20.0)  # the same streams without calls, for the server's own CPU
        before, cpu, t0 = server_frames(client), cpu_seconds(proc.pid), time.monotonic()
        time.sleep(quiet)
        after, quiet_cpu, quiet = server_frames(client), cpu_seconds(proc.pid) - cpu, time.monotonic() - t0
        quiet_fps = sum(after[i] - before[i] for i in ids) / quiet
        before, cpu, own_cpu, t0 = after, cpu_seconds(proc.pid), sum(os.times()[:2]), time.monotonic()
        end, lock = t0 + args.seconds, threading.Lock()

        def worker(k: int) -> None:
            rng, calls = random.Random(k), 0
            with httpx.Client(base_url=client.base_url, headers=client.headers, timeout=30) as own:
                while (now := time.monotonic()) < end:
                    due = t0 + calls * 4 / args.rate
                    if due > now:
                        time.sleep(due - now)
                    x, id = rng.random(), rng.choice(ids)
                    t = time.perf_counter()
                    if x < 0.5:
                        r = own.get(f"/streams/{id}")
                    elif x < 0.7:
                        r = own.get("/streams")
                    elif x < 0.9:
                        r = own.patch(f"/streams/{id}", json={"prompt": rng.choice(PROMPTS)})
                    else:
                        r = own.patch(f"/streams/{id}", json={"sampling": {"temperature": -1}})
                    with lock:
                        took.append(time.perf_counter() - t)
                        codes[r.status_code] = codes.get(r.status_code, 0) + 1
                    calls += 1

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        span = time.monotonic() - t0
        after, load_cpu, own_cpu = server_frames(client), cpu_seconds(proc.pid) - cpu, sum(os.times()[:2]) - own_cpu
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
    q = statistics.quantiles(took, n=20)
    print(f"without calls ({quiet:.0f} s): the 3 streams {quiet_fps:.2f} frames/s together, the server using "
          f"{quiet_cpu / quiet:.2f} cores")
    print(f"with calls: the 3 streams {sum(after[i] - before[i] for i in ids) / span:.2f} frames/s together, the "
          f"server using {load_cpu / span:.2f} cores, this client {own_cpu / span:.2f} cores")
    print(f"{len(took)} calls in {span:.1f} s ({len(took) / span:.1f}/s); answers {dict(sorted(codes.items()))} "
          f"(the 400s are the bad PATCHes); latency median {statistics.median(took) * 1000:.1f} ms, "
          f"95th percentile {q[18] * 1000:.1f} ms")
    for id in ids:
        n = after[id] - before[id]
        print(f"stream {id}: {n / span:.2f} frames/s, {max(0.0, span - n / args.fps):.2f} s behind real time")


def soak(args) -> None:
    n, made = args.soak_streams, 0
    proc, client = start_server(args.model, n + 1)

    def new_stream(i: int) -> str:
        r = client.post("/streams", json={"request": request(i, args.size), "fps": args.fps})
        r.raise_for_status()
        return r.json()["id"]

    try:
        first = new_stream(0)  # one stream come and gone: the engine's buffers exist
        while server_frames(client).get(first, 0) < 8:
            time.sleep(0.5)
        client.delete(f"/streams/{first}").raise_for_status()
        time.sleep(5)
        idle = rss_mb(proc.pid)
        live = [new_stream(i) for i in range(1, n + 1)]
        made, t0 = n + 1, time.monotonic()
        samples: list[tuple[float, float]] = []
        frames, running = 0, None
        end, churn = t0 + args.soak * 60, t0 + args.churn
        while (now := time.monotonic()) < end:
            samples.append((now - t0, rss_mb(proc.pid)))
            if running is None and now - t0 >= min(60, args.churn - 5):  # the first streams, warm
                running = samples[-1][1]
            if now >= churn:
                gone = live.pop(0)
                frames += server_frames(client).get(gone, 0)
                client.delete(f"/streams/{gone}").raise_for_status()
                live.append(new_stream(made))
                made, churn = made + 1, churn + args.churn
            time.sleep(10)
        frames += sum(server_frames(client).get(i, 0) for i in live)
        running = running if running is not None else samples[-1][1]  # a run shorter than the warm-up
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
    print(f"{n} streams at {args.fps:g} frames/s, {args.size}x{args.size}, model {args.model or 'shipped'}, "
          f"{args.soak:g} min; a stream replaced every {args.churn:g} s ({made - 1} streams in all, {frames} frames)")
    print(f"server RSS: {idle:.0f} MB with no stream, {running:.0f} MB with {n}: "
          f"{(running - idle) / n:.1f} MB a stream")
    tenth = args.soak * 6  # seconds in a tenth of the run
    tenths = [[m for t, m in samples if k * tenth <= t < (k + 1) * tenth] for k in range(10)]
    medians = [statistics.median(b) for b in tenths if b]
    print("median RSS by tenth of the run (MB): " + " ".join(f"{m:.0f}" for m in medians))
    print(f"last tenth against the first: {medians[-1] - medians[0]:+.1f} MB ({(medians[-1] / medians[0] - 1) * 100:+.1f}%); "
          f"max {max(m for _, m in samples):.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 2, 3, 4, 6, 8])
    ap.add_argument("--model", default=None, help="model folder or 'tiny'; default the shipped model")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--fps", type=float, default=8.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads of the server and of each "
                    "process (OMP_NUM_THREADS); default torch's own")
    ap.add_argument("--fixed-threads", action="store_true", help="servers and processes keep --threads")
    ap.add_argument("--native-step", action="store_true", help="servers and processes run the decode step "
                    "in C++ (--native-step)")
    ap.add_argument("--one-batch", action="store_true", help="also a server with --lanes 1 (one batch a round)")
    ap.add_argument("--busy", action="store_true", help="the streams table beside a process keeping a core busy")
    ap.add_argument("--load", action="store_true", help="the load test instead")
    ap.add_argument("--rate", type=float, default=100.0, help="API calls a second in the load test")
    ap.add_argument("--soak", type=float, default=None, help="minutes of the soak instead (more than 0)")
    ap.add_argument("--soak-streams", type=int, default=3)
    ap.add_argument("--churn", type=float, default=60.0, help="seconds between stream replacements in the soak")
    args = ap.parse_args()
    if args.soak is not None and args.soak <= 0:
        ap.error(f"--soak must be more than 0 minutes, but got {args.soak:g}")
    if args.threads:  # inherited by the server and the processes
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    if args.soak is not None:
        soak(args)
    elif args.load:
        load(args)
    else:
        streams(args)


if __name__ == "__main__":
    main()
