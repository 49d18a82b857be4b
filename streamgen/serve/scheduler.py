"""One scheduler for every live stream of a server, on one worker thread and its lanes.

Each round advances every stream whose next frame is due (its start plus frames / fps on the wall
clock) by one frame through `advance`, then hands each frame to that stream's outputs. Streams join
and leave between rounds, so the others never stop; changes set from outside (`Stream.set`) are
applied by the engine before the next frame it draws. A stream that raises, ends, or whose outputs
fail leaves alone. Opening streams and everything else that touches the model outside a round runs
on the worker thread (torch's OpenMP workers spin-wait for the thread that started them): `call`
runs a function there between rounds.

A round of one stream runs on the worker thread with all of torch's threads. A round of several is
split into ``lanes`` batches, each drawn on a thread of its own with one torch thread, the worker
thread being the first lane: the decode step's small products gain little from a second torch
thread, so on two cores two one-thread batches made 3-9% more frames than one batch on two threads
at 2, 4 and 8 streams (the shipped model, 2026-12-07; docs/results.md). Each thread keeps its own
workspaces (`Engine.step`), and a stream's frames are the same in any batch, so the lanes change no
frame. With a `ThreadTuner`, each round is a unit it times (per frame drawn); its answer of one
thread runs the round as one batch on one thread. Rounds of different
numbers of streams are timed apart (a copy of the tuner for each number): a frame of a round of
one stream on two threads costs far more than a frame of a round of two in two lanes, and timing
them together once made the tuner leave the lanes for one thread while two streams were behind.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Protocol

import torch

from streamgen.engine.core import Frame
from streamgen.engine.stream import Stream
from streamgen.engine.threads import ThreadTuner
from streamgen.errors import StreamgenError, one_line


def advance(streams: list[Stream]) -> list[Frame | None | Exception]:
    """One frame of each stream, drawn together (`Engine.step`, continuous batching): its `Frame`,
    None once it has no more, or the exception it raised (it is then over). Each stream gets the
    frames it gets alone with its seed, whichever streams share the call. A task's own code (its
    steering, its known tokens) runs stream by stream inside `Engine.step`, so its raise ends only its
    stream; a raise of the batched draw itself is the engine's and ends the streams drawn in it."""
    if not streams:
        return []
    try:
        frames = streams[0].engine.step(streams)
    except Exception as exc:
        for s in streams:
            s.fail(exc)
        return [exc] * len(streams)
    return [s.error if f is None and s.error is not None else f for s, f in zip(streams, frames)]


class Stopping(StreamgenError):
    """The scheduler has stopped taking work."""


class Member(Protocol):
    """What the scheduler needs of a live stream (`streamgen.serve.streams.Live`)."""

    id: str
    stream: Stream

    def due(self) -> float: ...
    def ready(self) -> bool: ...
    def took(self, frame: Frame, done: float) -> None: ...
    def leave(self, state: str, error: str | None = None) -> None: ...
    def wants_to_leave(self) -> tuple[str, str | None] | None: ...


class Scheduler:
    """Advances its members together, each paced to its own frame rate."""

    IDLE = 0.05  # longest sleep: a full output queue frees up, or a member asks to leave

    def __init__(self, tuner: ThreadTuner | None = None,
                 set_threads: Callable[[int], None] | None = None, *, lanes: int = 1,
                 threads: int | None = None) -> None:
        self.members: list[Member] = []
        self.rounds = 0
        self.tuner = tuner  # the settings; each number of streams in a round gets a fresh copy
        self.tuners: dict[int, ThreadTuner] = {}
        self.budget = tuner.threads if tuner is not None else threads or torch.get_num_threads()
        self.threads: int | None = None  # the worker thread's torch threads in the last round
        self.lanes_used = 1  # the batches the last round was split into
        self._set_threads = set_threads or torch.set_num_threads
        self._lanes = ThreadPoolExecutor(lanes - 1, thread_name_prefix="streamgen-lane",
                                         initializer=self._set_threads, initargs=(1,)) if lanes > 1 else None
        self.lanes = lanes
        self._calls: list[tuple[Callable[[], Any], Future]] = []
        self._wake = threading.Condition()
        self._stopping = False
        self._finish: Callable[[list[Member]], None] | None = None
        self._thread = threading.Thread(target=self._run, name="streamgen-scheduler", daemon=True)

    def start(self) -> "Scheduler":
        self._thread.start()
        return self

    def call(self, fn: Callable[[], Any]) -> Future:
        """Run ``fn`` on the worker thread between rounds; its result or exception in the future."""
        fut: Future = Future()
        with self._wake:
            if self._stopping:
                fut.set_exception(Stopping("the server is stopping: it takes no new stream"))
                return fut
            self._calls.append((fn, fut))
            self._wake.notify()
        return fut

    def add(self, member: Member) -> None:
        """Join ``member`` at the next frame boundary (call from the worker thread, e.g. inside `call`)."""
        self.members.append(member)

    def wake(self) -> None:
        with self._wake:
            self._wake.notify()

    def stop(self, finish: Callable[[list[Member]], None] | None = None, timeout: float | None = None) -> None:
        """End the rounds after the one in progress, then ``finish(members)`` on the worker thread."""
        with self._wake:
            self._stopping = True
            self._finish = finish
            self._wake.notify()
        self._thread.join(timeout)

    def _run_calls(self) -> None:
        with self._wake:
            calls, self._calls = self._calls, []
        for fn, fut in calls:
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)

    def _leavers(self) -> None:
        for m in list(self.members):
            why = m.wants_to_leave()
            if why is not None:
                self.members.remove(m)
                m.leave(*why)

    def _use_threads(self, n: int) -> None:
        if n != self.threads:
            self._set_threads(n)
            self.threads = n

    def _draw(self, streams: list[Stream]) -> list[Frame | None | Exception]:
        """`advance` of ``streams``: one batch on the tuner's thread count, or one batch a lane."""
        tuner = self._tuner(len(streams))
        n = tuner.count() if tuner is not None else self.budget
        k = min(self.lanes, len(streams)) if n > 1 else 1
        self.lanes_used = k
        self._use_threads(1 if k > 1 else n)
        if k == 1:
            return advance(streams)
        parts = [streams[i::k] for i in range(k)]
        others = [self._lanes.submit(advance, p) for p in parts[1:]]
        out: list[Frame | None | Exception] = [None] * len(streams)
        for i, got in enumerate([advance(parts[0])] + [f.result() for f in others]):
            out[i::k] = got
        return out

    def _tuner(self, streams: int) -> ThreadTuner | None:
        if self.tuner is None:
            return None
        if streams not in self.tuners:
            self.tuners[streams] = self.tuner.fresh()
        return self.tuners[streams]

    def _run(self) -> None:
        while True:
            self._run_calls()
            self._leavers()
            with self._wake:
                if self._stopping:
                    break
            now = time.monotonic()
            due = [m for m in self.members if m.ready() and m.due() <= now]
            if not due:
                nxt = min((m.due() for m in self.members if m.ready()), default=now + self.IDLE)
                with self._wake:
                    if not self._calls and not self._stopping:
                        self._wake.wait(min(self.IDLE, max(0.0, nxt - now)))
                continue
            results = self._draw([m.stream for m in due])
            done = time.monotonic()
            if self.tuner is not None:
                self._tuner(len(due)).took(done - now, len(due))
            self.rounds += 1
            for m, got in zip(due, results):
                if isinstance(got, Frame):
                    try:
                        m.took(got, done)
                        continue
                    except Exception as exc:  # one stream's trouble is that stream's end, not the server's
                        got = exc
                self.members.remove(m)
                m.leave("ended" if got is None else "failed", None if got is None else one_line(got))
        self._run_calls()  # refused or done: nobody waits forever
        if self._lanes is not None:
            self._lanes.shutdown()
        if self._finish is not None:
            self._finish(self.members)
