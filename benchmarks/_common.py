"""Helpers shared by the benchmark scripts."""
from __future__ import annotations

from contextlib import contextmanager


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size of a process (by default this one) in MB (Linux)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS line in /proc/{pid}/status")


def _spin(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


@contextmanager
def busy_core(on: bool = True):
    """While the block runs, a process keeps one core busy (``on``), as something else on the machine would."""
    if not on:
        yield
        return
    import multiprocessing as mp

    stop = mp.Event()
    hog = mp.Process(target=_spin, args=(stop,), daemon=True)
    hog.start()
    try:
        yield
    finally:
        stop.set()
        hog.join()


def steady_rate(eng, gen, warm: int, frames: int) -> float:
    """Tokens/s of ``frames`` frames of a token generator of ``eng``, after ``warm`` frames; closes it."""
    import time

    for _ in range(warm):
        next(gen)
    tok0, t0 = eng.stats.tokens, time.perf_counter()
    for _ in range(frames):
        next(gen)
    rate = (eng.stats.tokens - tok0) / (time.perf_counter() - t0)
    gen.close()
    return rate


def steady_keys(eng, size: int) -> float:
    """Keys a decoded token attends to on average in a size x size video once it is past its first
    frames: the context tokens of its patch plus its own earlier positions."""
    from streamgen import NearbyContextPool, Plan

    model = eng.model
    plan = Plan.basic("omega", *eng.grid(size, size), 3, model.extent)
    pool = NearbyContextPool(plan.extent, model.extent)
    context = []
    for item in plan:
        if item.pos[0] == 2:
            context.append(len(pool.select(item.pos)) * model.M)
        pool.add(item.pos, None, plan.expiry(item.pos))
        pool.remove(item.step)
    return sum(context) / len(context) + (model.M + 1) / 2


def still_clips(codec, count: int, first_seed: int, size: int, frames: int = 2):
    """Tokens (count, frames, h, w) of still-camera landscape clips (train split) at size x size px."""
    import torch

    from streamgen.training.data import landscapes as L

    clips = []
    for i in range(count):
        s = L.sample_scene(first_seed + i, split="train")
        s = L.Scene(s.sky, s.terrain, s.lake, "still", s.seed)
        clips.append(codec.encode(torch.from_numpy(L.render(s, size, size, frames=frames))))
    return torch.stack(clips)


def add_probe_args(ap, steps: int, every: int) -> None:
    """The training options the copy probes share: steps, report interval, clips, lr, threads."""
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--every", type=int, default=every)
    ap.add_argument("--clips", type=int, default=500, help="training clips (100 more are held out)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1)
