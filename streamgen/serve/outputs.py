"""A stream's outputs on a thread of their own: its file or RTMP sink, and its live view.

Encoding, a slow disk or an RTMP server that is reconnecting never hold up generation: frames go
through a queue, and the scheduler leaves out of a round a stream that already has ``room`` frames
waiting (that stream falls behind; the others do not). Nothing the scheduler hands over waits for
the writer: not a frame, a snapshot's job or the end. The first error of a sink stops the stream it
belongs to.

A snapshot is saved only once the outputs hold every frame it counts: its job waits until each
sink's ``durable`` frames reach it (a video file's next frame is made a keyframe, so that its
fragment closes one frame later), the sinks are synced, and then it runs. A process killed between
the two leaves the older snapshot, whose frames the files hold.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable

from streamgen.errors import one_line
from streamgen.serve.video import LiveView

_END = object()


class Outputs:
    """Writes each frame to ``sinks`` and ``view`` on a daemon thread, in order; ``on_closed()`` once
    every output is finished."""

    def __init__(self, sinks: list[Any], view: LiveView, *, name: str, on_closed: Callable[[], None],
                 room: int = 8, first: int = 0):
        self.sinks, self.view, self.on_closed = sinks, view, on_closed
        self.first = first  # the stream's frame number of the sinks' first frame
        self.error: str | None = None  # the first failure, one line
        self.written = 0
        self._pending: list[tuple[int, Callable[[], None]]] = []  # snapshot jobs waiting for their frames
        self._room = room
        self._queue: queue.Queue = queue.Queue()  # unbounded: `room` limits the frames put
        self._thread = threading.Thread(target=self._run, name=f"streamgen-out-{name}", daemon=True)
        self._thread.start()

    def room(self) -> bool:
        """Whether a frame can be handed over now without waiting."""
        return self._queue.qsize() < self._room and self._thread.is_alive()

    def put(self, pixels: Any, frame: int, made: float) -> None:
        self._queue.put((pixels, frame, made))

    def after_written(self, frames: int, job: Callable[[], None]) -> None:
        """Run ``job`` (a snapshot's save) once the sinks hold the stream's first ``frames`` frames
        where a crash leaves them, synced to the disk; never if a sink fails first."""
        self._queue.put((frames, job))

    def close(self, wait: bool = True, timeout: float = 60.0) -> None:
        """Write what is queued, then finish every output (a file is complete and readable after it)."""
        self._queue.put(_END)
        if wait:
            self._thread.join(timeout)

    def _run(self) -> None:
        failed = False
        while True:
            item = self._queue.get()
            if item is _END:
                break
            if failed:
                continue  # drained, so that a full queue never blocks the scheduler
            try:
                if len(item) == 2:  # a snapshot's job
                    self._pending.append(item)
                    for sink in self.sinks:
                        getattr(sink, "keyframe_next", lambda: None)()
                else:
                    pixels, frame, made = item
                    for sink in self.sinks:
                        sink.write(pixels)
                    self.view.write(pixels, frame, made)
                    self.written += 1
                self._save_ready()
            except Exception as exc:  # a sink's failure stops its own stream only
                self.error = one_line(exc)
                failed = True
        for out in (*self.sinks, self.view):
            try:
                out.close()
            except Exception as exc:
                self.error = self.error or one_line(exc)
        if self.error is None:  # closed whole: every frame is in the files
            try:
                self._save_ready()
            except Exception as exc:
                self.error = one_line(exc)
        self.on_closed()

    def _save_ready(self) -> None:
        """Sync the sinks and run the snapshot jobs whose frames they all hold now."""
        if not self._pending:
            return
        held = min((self.first + sink.durable for sink in self.sinks if hasattr(sink, "durable")), default=None)
        ready = [p for p in self._pending if held is None or p[0] <= held]
        if not ready:
            return
        for sink in self.sinks:
            getattr(sink, "sync", lambda: None)()
        self._pending = self._pending[len(ready):]
        for _, job in ready:
            job()
