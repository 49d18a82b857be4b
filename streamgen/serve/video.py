"""The server's own live view of a stream: H.264 in fragmented MP4, one fragment a frame, for browsers.

A browser plays it with Media Source Extensions: it appends the init segment (``ftyp`` + ``moov``),
then each fragment (``moof`` + ``mdat``). The encoder is x264's constrained baseline with zero-latency
tuning (no B-frames, no lookahead), so a frame's packet leaves the encoder with the frame; the MP4
muxer writes a frame's fragment when the next frame's packet arrives. A viewer who joins late gets the
init segment and the fragments since the newest keyframe (one every second of frames).
"""
from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from streamgen.output.sinks import VideoSink

MOVFLAGS = "+frag_every_frame+empty_moov+default_base_moof"


@dataclass
class Fragment:
    """One frame's media segment and what the page needs to know of it."""

    data: bytes
    index: int  # the fragment's number in this live view (its timestamp is index / fps)
    frame: int  # the stream's frame number
    made: float  # wall-clock time (s since the epoch) the frame was generated
    key: bool  # starts with a keyframe: a viewer may start here

    def message(self) -> bytes:
        return message({"i": self.index, "frame": self.frame, "made": round(self.made * 1000, 1),
                        "key": self.key}, self.data)


def message(header: dict[str, Any], payload: bytes = b"") -> bytes:
    """A WebSocket message of the live view: 4 bytes of header length, the JSON header, the payload."""
    head = json.dumps(header).encode()
    return len(head).to_bytes(4, "big") + head + payload


def codec_string(init: bytes) -> str:
    """The RFC 6381 codec of an H.264 init segment (``avc1.PPCCLL`` from its avcC box), for
    ``MediaSource.addSourceBuffer``."""
    at = init.find(b"avcC")
    if at < 0:
        return "avc1.42E01E"
    profile, compat, level = init[at + 5:at + 8]
    return f"avc1.{profile:02X}{compat:02X}{level:02X}"


class Boxes:
    """A write-only file for PyAV's MP4 muxer that cuts what it is given into top-level boxes: the
    init segment goes to ``on_init`` once the ``moov`` is complete, each ``moof`` + ``mdat`` to
    ``on_fragment``. Nothing else is kept."""

    def __init__(self, on_init: Callable[[bytes], None], on_fragment: Callable[[bytes], None]):
        self.on_init, self.on_fragment = on_init, on_fragment
        self.buf = bytearray()
        self.init = b""
        self.moof = b""

    def write(self, data: bytes) -> int:
        self.buf += data
        while len(self.buf) >= 8:
            size = int.from_bytes(self.buf[:4], "big")
            if size < 8 or len(self.buf) < size:  # a box in progress (sizes 0 and 1 are never used here)
                break
            kind, box = bytes(self.buf[4:8]), bytes(self.buf[:size])
            del self.buf[:size]
            if kind == b"ftyp":
                self.init = box
            elif kind == b"moov":
                self.init += box
                self.on_init(self.init)
            elif kind == b"moof":
                self.moof = box
            elif kind == b"mdat":
                self.on_fragment(self.moof + box)
        return len(data)

    def flush(self) -> None:
        pass


class LiveView:
    """Encodes a stream's frames into fragments; ``publish`` gets the init segment (bytes) first,
    then each `Fragment`. Runs on the stream's output thread."""

    def __init__(self, *, fps: float, size: tuple[int, int], publish: Callable[[Any], None]):
        self.publish, self.fps, self.size = publish, fps, size
        self.gop = max(1, round(fps))
        self.count = 0
        self.waiting: deque[tuple[int, float]] = deque()  # (frame, made) of frames whose fragment is due
        options = {"profile": "baseline", "preset": "ultrafast", "tune": "zerolatency", "g": str(self.gop),
                   "bf": "0"}
        self.sink = VideoSink(Boxes(self._init, self._fragment), fmt="mp4", codec="libx264", fps=fps,
                              options=options, container_options={"movflags": MOVFLAGS, "flush_packets": "1"},
                              label="the live view", size=size, keyframe_every=self.gop)

    def _init(self, init: bytes) -> None:
        w, h = self.size
        self.publish(message({"init": True, "codec": codec_string(init), "fps": self.fps, "width": w,
                              "height": h}, init))

    def _fragment(self, data: bytes) -> None:
        frame, made = self.waiting.popleft()
        self.publish(Fragment(data, self.count, frame, made, self.count % self.gop == 0))
        self.count += 1

    def write(self, pixels: np.ndarray, frame: int, made: float) -> None:
        self.waiting.append((frame, made))
        self.sink.write(pixels)

    def close(self) -> None:
        self.sink.close()  # the last frame's fragment


class Viewer:
    """One browser's queue of messages; one that falls too far behind is let go (it reconnects)."""

    LIMIT = 256

    def __init__(self) -> None:
        self.items: deque[bytes | None] = deque()
        self.ready = asyncio.Event()
        self.gone = False

    def put(self, item: bytes | None) -> None:
        if len(self.items) >= self.LIMIT:
            self.gone = True
            self.items.clear()
        self.items.append(item)
        self.ready.set()

    async def get(self) -> bytes | None:
        """The next message; None at the end of the stream or once this viewer was let go."""
        while not self.items:
            self.ready.clear()
            await self.ready.wait()
        item = self.items.popleft()
        return None if self.gone else item


class Channel:
    """A stream's live view fanned out to its viewers, on the event loop. `publish` may be called
    from any thread; a viewer that joins gets the init segment and the fragments since the newest
    keyframe, then every new one."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.init: bytes | None = None
        self.since_key: list[bytes] = []
        self.viewers: set[Viewer] = set()
        self.ended: dict[str, Any] | None = None

    def publish(self, item: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self._publish, item)
        except RuntimeError:  # the loop has closed: nobody is watching
            pass

    def end(self, status: dict[str, Any]) -> None:
        self.publish({"end": True, **status})

    def _publish(self, item: Any) -> None:
        if isinstance(item, dict):
            self.ended = item
            out: bytes | None = message(item)
            self.since_key = []
        elif isinstance(item, Fragment):
            out = item.message()
            self.since_key = [out] if item.key else [*self.since_key, out]
        else:
            self.init, self.since_key = item, []
            out = item
        for viewer in self.viewers:
            viewer.put(out)
            if self.ended is not None:
                viewer.put(None)

    def join(self) -> Viewer:
        viewer = Viewer()
        for item in ([self.init] if self.init else []) + self.since_key:
            viewer.put(item)
        if self.ended is not None:
            viewer.put(message(self.ended))
            viewer.put(None)
        self.viewers.add(viewer)
        return viewer

    def leave(self, viewer: Viewer) -> None:
        self.viewers.discard(viewer)
