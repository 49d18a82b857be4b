"""Moving frames from the engine to a sink: optionally paced to the wall clock, with progress.

With ``realtime``, generation runs ahead into a bounded buffer while a writer thread releases frame
i at start + i / fps. When generation falls behind, the writer says by how much (frames keep their
nominal timestamps; nothing is silently stretched). Generation stays on the calling thread: torch's
OpenMP workers spin-wait for the thread that started them, and the same model ran 25-30% slower
from a second thread on this project's 2-core machine.
"""
from __future__ import annotations

import queue
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TextIO

_END = object()


@dataclass
class PumpStats:
    frames: int = 0
    seconds: float = 0.0
    max_lag: float = 0.0  # seconds behind the wall clock, at worst (realtime only)


def pump(frames: Iterator[Any], sink: Any, *, fps: float, realtime: bool = False,
         buffer: int = 8, report: Callable[[PumpStats], None] | None = None,
         written: Callable[[Any], None] | None = None, warn: TextIO | None = None,
         stop: Callable[[], bool] | None = None) -> PumpStats:
    """Write every frame (an array, or an object with ``pixels``) to ``sink``; then ``written(frame)``.

    ``stop()`` true (a signal came) ends generation before the next frame; frames already made are
    still written, without waiting for the clock. Returns counts. The sink is not closed here;
    ``frames`` is closed if it stops early.
    """
    stop = stop or (lambda: False)
    warn = warn or sys.stderr
    stats = PumpStats()
    start = time.perf_counter()

    def write(frame: Any) -> None:
        sink.write(getattr(frame, "pixels", frame))
        if written:
            written(frame)
        stats.frames += 1
        stats.seconds = time.perf_counter() - start
        if report:
            report(stats)

    try:
        if not realtime:
            if stop():
                return stats
            for frame in frames:
                write(frame)
                if stop():
                    break
            return stats
        _paced(frames, write, fps, buffer, stats, warn, stop)
        return stats
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()


def _offer(buf: queue.Queue, item: Any, give_up: Callable[[], bool]) -> bool:
    """Put ``item`` into ``buf``, waiting for room unless ``give_up()``; whether it went in."""
    while not give_up():
        try:
            buf.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _paced(frames: Iterator[Any], write: Callable[[Any], None], fps: float, buffer: int,
           stats: PumpStats, warn: TextIO, stop: Callable[[], bool]) -> None:
    """Generate on this thread, at most ``buffer`` frames ahead of a writer thread on the clock."""
    buf: queue.Queue = queue.Queue(maxsize=buffer)
    failed: list[BaseException] = []
    done = threading.Event()

    def writer() -> None:
        last_warn = 0.0
        start = None
        i = 0
        try:
            while True:
                frame = buf.get()
                if frame is _END:
                    return
                now = time.perf_counter()
                if start is None:  # the clock starts with the first frame
                    start = now
                due = start + i / fps
                if now < due and not stop():
                    time.sleep(due - now)
                elif now - due > 1.0 / fps:
                    lag = now - due
                    stats.max_lag = max(stats.max_lag, lag)
                    if now - last_warn > 2.0:
                        warn.write(f"streamgen: generation is {lag:.2f} s behind real time at frame {i}\n")
                        warn.flush()
                        last_warn = now
                write(frame)
                i += 1
        except BaseException as exc:  # handed to the generating thread, raised there
            failed.append(exc)
        finally:
            done.set()

    t = threading.Thread(target=writer, name="streamgen-writer", daemon=True)
    t.start()
    try:
        for frame in frames if not stop() else ():
            if not _offer(buf, frame, done.is_set) or done.is_set() or stop():
                break
        _offer(buf, _END, done.is_set)  # the end marker, once there is room
        t.join()
    finally:
        if t.is_alive():  # stopping early (an error or KeyboardInterrupt here): the writer writes
            deadline = time.perf_counter() + 5  # what is buffered, then stops
            _offer(buf, _END, lambda: not t.is_alive() or time.perf_counter() >= deadline)
            t.join(timeout=max(0.0, deadline - time.perf_counter()))
    if failed:
        raise failed[0]
