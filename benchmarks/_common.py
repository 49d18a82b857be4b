"""Helpers shared by the benchmark scripts."""
from __future__ import annotations


def rss_mb() -> float:
    """Resident set size of this process in MB (Linux)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS line in /proc/self/status")


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
