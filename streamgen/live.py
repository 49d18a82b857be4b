"""Moving frames from the engine to a sink: optionally paced to the wall clock, with progress.

With ``realtime``, a producer thread generates ahead into a bounded buffer while the writer releases
frame i at start + i / fps. When generation falls behind, the writer says by how much (frames keep
their nominal timestamps; nothing is silently stretched).
"""
from __future__ import annotations

import queue
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TextIO

import numpy as np

_END = object()


@dataclass
class PumpStats:
    frames: int = 0
    seconds: float = 0.0
    max_lag: float = 0.0  # seconds behind the wall clock, at worst (realtime only)


def _ahead(frames: Iterator[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Iterate ``frames`` in a background thread, at most ``size`` frames ahead of the consumer."""
    buf: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()

    def produce() -> None:
        try:
            for f in frames:
                while not stop.is_set():
                    try:
                        buf.put(f, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buf.put(_END)
        except BaseException as exc:  # handed to the consumer, raised there
            buf.put(exc)

    t = threading.Thread(target=produce, name="streamgen-generate", daemon=True)
    t.start()
    try:
        while True:
            item = buf.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        t.join(timeout=5)
        close = getattr(frames, "close", None)
        if close is not None and not t.is_alive():
            close()


def pump(frames: Iterator[Any], sink: Any, *, fps: float, realtime: bool = False,
         buffer: int = 8, report: Callable[[PumpStats], None] | None = None,
         written: Callable[[Any], None] | None = None, warn: TextIO | None = None) -> PumpStats:
    """Write every frame (an array, or an object with ``pixels``) to ``sink``; then ``written(frame)``.

    Returns counts. The sink is not closed here.
    """
    warn = warn or sys.stderr
    stats = PumpStats()
    start = time.perf_counter()
    source = _ahead(frames, buffer) if realtime else frames
    last_warn = 0.0
    try:
        for i, frame in enumerate(source):
            if realtime:
                due = start + i / fps
                now = time.perf_counter()
                if now < due:
                    time.sleep(due - now)
                elif now - due > 1.0 / fps:
                    lag = now - due
                    stats.max_lag = max(stats.max_lag, lag)
                    if now - last_warn > 2.0:
                        warn.write(f"streamgen: generation is {lag:.2f} s behind real time at frame {i}\n")
                        warn.flush()
                        last_warn = now
            sink.write(getattr(frame, "pixels", frame))
            if written:
                written(frame)
            stats.frames += 1
            stats.seconds = time.perf_counter() - start
            if report:
                report(stats)
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()
    return stats
