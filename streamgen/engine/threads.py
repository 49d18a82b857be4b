"""Choosing torch's thread count while frames are made.

With two threads on two cores, one core taken by something else stalls every parallel region on the
thread that shares it: on this project's 2-core machine the default preset fell from 7 to 1.7
frames/s beside one busy process, where one thread runs at full speed. `tune_threads` watches how
long each frame takes and now and then tries the other thread count for a few frames, keeping the
faster one, so a stream follows the machine's load instead of collapsing under it.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, Iterator, TypeVar

import torch

T = TypeVar("T")


def tune_threads(frames: Iterator[T], threads: int, *, first: int = 4, every: int = 32, most: int = 256,
                 trial: int = 3, margin: float = 0.1,
                 set_threads: Callable[[int], None] = torch.set_num_threads,
                 clock: Callable[[], float] = time.perf_counter) -> Iterator[T]:
    """``frames``, made with ``threads`` or one torch thread, whichever is faster now.

    Each frame's making is timed (the time spent in ``next``, not the consumer's). After ``first``
    frames, and then ``every`` frames after the last trial, the other count makes ``trial`` frames;
    the count whose last ``trial`` frames took less (by more than ``margin``) makes the frames until
    the next trial. A trial the current count wins doubles the wait before the next (up to ``most``
    frames), so a count that keeps losing costs little; a switch starts again at ``every``. Thread
    counts change only between frames, on the thread that makes them. ``threads`` 1 changes nothing.
    """
    it = iter(frames)
    if threads <= 1:
        yield from it
        return
    current, active = threads, threads
    times: dict[int, list[float]] = {threads: [], 1: []}
    set_threads(active)
    made, next_trial, wait = 0, first, every
    try:
        while True:
            other = 1 if current == threads else threads
            in_trial = next_trial <= made < next_trial + trial
            count = other if in_trial else current
            if count != active:
                set_threads(count)
                active = count
            t0 = clock()
            try:
                frame = next(it)
            except StopIteration:
                return
            times[count].append(clock() - t0)
            del times[count][:-trial]
            made += 1
            if made == next_trial + trial:  # the trial's last frame: keep the faster count
                if times[current] and statistics.median(times[other]) < (1 - margin) * statistics.median(times[current]):
                    current, wait = other, every
                else:
                    wait = min(2 * wait, most)
                next_trial = made + wait
            yield frame
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()
