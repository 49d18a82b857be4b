"""A stream's outputs on a thread of their own: its file or RTMP sink, and its live view.

Encoding, a slow disk or an RTMP server that is reconnecting never hold up generation: frames go
through a queue, and the scheduler leaves out of a round a stream that already has ``room`` frames
waiting (that stream falls behind; the others do not). Nothing the scheduler hands over waits for
the writer: not a frame, a snapshot's job or the end. The first error of a sink stops the stream it
belongs to.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable

from streamgen.serve.scheduler import one_line
from streamgen.serve.video import LiveView

_END = object()


class Outputs:
    """Writes each frame to ``sinks`` and ``view`` on a daemon thread, in order; ``on_closed()`` once
    every output is finished."""

    def __init__(self, sinks: list[Any], view: LiveView, *, name: str, on_closed: Callable[[], None],
                 room: int = 8):
        self.sinks, self.view, self.on_closed = sinks, view, on_closed
        self.error: str | None = None  # the first failure, one line
        self.written = 0
        self._room = room
        self._queue: queue.Queue = queue.Queue()  # unbounded: `room` limits the frames put
        self._thread = threading.Thread(target=self._run, name=f"streamgen-out-{name}", daemon=True)
        self._thread.start()

    def room(self) -> bool:
        """Whether a frame can be handed over now without waiting."""
        return self._queue.qsize() < self._room and self._thread.is_alive()

    def put(self, pixels: Any, frame: int, made: float) -> None:
        self._queue.put((pixels, frame, made))

    def after_written(self, job: Callable[[], None]) -> None:
        """Run ``job`` once every frame handed over so far is written and the sinks are synced (a
        snapshot then counts no frame the outputs lack)."""
        self._queue.put(job)

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
                if callable(item):
                    for sink in self.sinks:
                        getattr(sink, "sync", lambda: None)()
                    item()
                    continue
                pixels, frame, made = item
                for sink in self.sinks:
                    sink.write(pixels)
                self.view.write(pixels, frame, made)
                self.written += 1
            except Exception as exc:  # a sink's failure stops its own stream only
                self.error = one_line(exc)
                failed = True
        for out in (*self.sinks, self.view):
            try:
                out.close()
            except Exception as exc:
                self.error = self.error or one_line(exc)
        self.on_closed()
