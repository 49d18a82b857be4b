"""Choosing torch's thread count while frames are made.

With two threads on two cores, one core taken by something else stalls every parallel region on the
thread that shares it: on this project's 2-core machine the default preset fell from 7 to 1.7
frames/s beside one busy process, where one thread runs at full speed. `tune_threads` watches how
long each frame takes and now and then tries the other thread count for a few frames, keeping the
faster one, so a stream follows the machine's load instead of collapsing under it.

Two tuned streams in two processes on two cores started together would try two threads at the same
moment, four threads on two cores: one such frame took 17 s where one thread takes 0.3 s. So the
waits between trials are spread at random (each process its own), and a trial unit that takes more
than ``abort`` times the current count's ends the trial at once.
"""
from __future__ import annotations

import random
import statistics
import time
from typing import Callable, Iterator, TypeVar

import torch

T = TypeVar("T")


class ThreadTuner:
    """The faster of ``threads`` and one torch thread, decided from timed units of work (frames, or a
    server's rounds of frames).

    Call `count` before a unit (the threads to run it with; the caller sets them) and `took` after
    it. After ``first`` units, and then ``every`` units after the last trial, the other count runs
    ``trial`` units; the count whose last ``trial`` units took less per frame (by more than
    ``margin``) runs the units until the next trial. A trial the current count wins doubles the wait
    before the next (up to ``most`` units), so a count that keeps losing costs little; a switch starts
    again at ``every``. Each wait is spread by up to ``spread`` of itself either way at random
    (``rng``), and a trial unit slower than ``abort`` times the current count's median loses the trial
    at once. ``threads`` 1 always answers 1.
    """

    def __init__(self, threads: int, *, first: int = 4, every: int = 32, most: int = 256, trial: int = 3,
                 margin: float = 0.1, abort: float = 2.0, spread: float = 0.25, rng: random.Random | None = None):
        self.threads, self.current = threads, threads
        self.first, self.every, self.most, self.trial, self.margin = first, every, most, trial, margin
        self.abort, self.spread, self.rng = abort, spread, rng or random.Random()
        self.times: dict[int, list[float]] = {threads: [], 1: []}
        self.units, self.next_trial, self.wait = 0, first, every

    def fresh(self) -> "ThreadTuner":
        """A new tuner with these settings and no times yet."""
        return type(self)(self.threads, first=self.first, every=self.every, most=self.most, trial=self.trial,
                          margin=self.margin, abort=self.abort, spread=self.spread, rng=self.rng)

    @property
    def other(self) -> int:
        return 1 if self.current == self.threads else self.threads

    def count(self) -> int:
        """The thread count to run the next unit with."""
        if self.threads <= 1:
            return self.threads
        in_trial = self.next_trial <= self.units < self.next_trial + self.trial
        return self.other if in_trial else self.current

    def took(self, seconds: float, frames: int = 1) -> None:
        """The unit just run with `count` threads took ``seconds`` for ``frames`` frames."""
        if self.threads <= 1 or frames <= 0:
            return
        ran = self.count()
        self.times[ran].append(seconds / frames)
        del self.times[ran][:-self.trial]
        self.units += 1
        current, other = self.times[self.current], self.times[self.other]
        if ran != self.current and current and other[-1] > self.abort * statistics.median(current):
            self._next(lost=True)  # far slower already: no more units of it
        elif self.units == self.next_trial + self.trial:  # the trial's last unit: keep the faster count
            lost = not current or statistics.median(other) >= (1 - self.margin) * statistics.median(current)
            if not lost:
                self.current = self.other
            self._next(lost)

    def _next(self, lost: bool) -> None:
        self.wait = min(2 * self.wait, self.most) if lost else self.every
        spread = round(self.wait * self.spread * self.rng.uniform(-1, 1))
        self.next_trial = self.units + max(1, self.wait + spread)


def tune_threads(frames: Iterator[T], threads: int, *, first: int = 4, every: int = 32, most: int = 256,
                 trial: int = 3, margin: float = 0.1, abort: float = 2.0, spread: float = 0.25,
                 rng: random.Random | None = None,
                 set_threads: Callable[[int], None] = torch.set_num_threads,
                 clock: Callable[[], float] = time.perf_counter) -> Iterator[T]:
    """``frames``, made with ``threads`` or one torch thread, whichever is faster now (`ThreadTuner`,
    a frame a unit).

    Each frame's making is timed (the time spent in ``next``, not the consumer's). Thread counts
    change only between frames, on the thread that makes them. ``threads`` 1 changes nothing.
    """
    it = iter(frames)
    if threads <= 1:
        yield from it
        return
    tuner = ThreadTuner(threads, first=first, every=every, most=most, trial=trial, margin=margin, abort=abort,
                        spread=spread, rng=rng)
    active = None
    try:
        while True:
            count = tuner.count()
            if count != active:
                set_threads(count)
                active = count
            t0 = clock()
            try:
                frame = next(it)
            except StopIteration:
                return
            tuner.took(clock() - t0)
            yield frame
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()
