"""Output sinks: frames are encoded and written as they arrive, never collected first.

Built on PyAV (encode, mux, flush), with an explicit time base of 1/fps and pts counting frames:
- files chosen by extension: .mp4, .mkv, .webm, and .png for an image;
- ``-`` (standard output): MPEG-TS, which a reader can start on without seeking;
- ``rtmp://`` and ``rtmps://`` URLs: FLV with H.264, keyframe interval and low-latency tuning set.
Sinks register through the ``streamgen_register_sinks`` hook like every other plugin.

Files and pipes survive a killed process: MP4 is fragmented (a fragment per keyframe), Matroska ends a
cluster at every frame, MPEG-TS and every container flush each packet to the OS, numbered PNGs are
renamed into place whole. A sink's ``durable`` is how many of its frames are in the output so far
(what a reader gets if the process dies now); ``sync()`` pushes them to the disk, so a snapshot
written after it never counts a frame the output lacks.
"""
from __future__ import annotations

import io
import os
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit, urlunsplit

import av
import numpy as np

from streamgen.checkpoint import fsync
from streamgen.config import MIN_FPS
from streamgen.errors import ConfigError, StreamgenError, bad
from streamgen.output.canvas import TileFolder, is_tile_folder
from streamgen.plugins.hookspecs import hookimpl

PNG_MAX_SIDE = 65535  # the largest side libavcodec's PNG encoder writes


class SinkClosed(StreamgenError):
    """The receiver went away (a closed pipe, a stopped server)."""


def redact(url: str) -> str:
    """A URL safe for logs, error messages and listings: its user name and password, its stream key
    (the last part of a path below the application, as in rtmp://host/app/KEY) and its query replaced
    by ***. A file path is returned as it is."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    if not (parts.scheme and parts.netloc):
        return url
    host = (parts.hostname or "") + (f":{port}" if (port := _port(parts)) else "")
    if parts.username is not None or parts.password is not None:
        host = "***@" + host
    path = parts.path
    if _stream_key(parts):
        path = path.rsplit("/", 1)[0] + "/***"
    return urlunsplit((parts.scheme, host, path, "***" if parts.query else "", parts.fragment))


def _stream_key(parts) -> str | None:
    """A split URL's stream key: the last segment of a path of at least two (app/KEY)."""
    segments = parts.path.strip("/").split("/")
    return segments[-1] if len(segments) >= 2 and segments[-1] else None


def _port(parts) -> int | str | None:
    """A split URL's port; the text as written when it is no valid port."""
    try:
        return parts.port
    except ValueError:
        return parts.netloc.rpartition(":")[2]


def _scrub(text: str, url: str) -> str:
    """``text`` (a library's message that may quote ``url``) with the URL's secrets replaced by ***."""
    parts = urlsplit(url)
    if not (parts.scheme and parts.netloc):  # a file path holds no secrets
        return text
    text = text.replace(url, redact(url))
    for secret in (parts.password, parts.username, _stream_key(parts), parts.query):
        if secret:
            text = text.replace(secret, "***")
    return text


def _file_id(target: Any) -> tuple[int, int] | None:
    """(device, inode) of a file output, None for other targets or a file that is gone."""
    if not isinstance(target, str) or "://" in target:
        return None
    try:
        st = os.stat(target)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _held(fmt: str | None, copts: dict[str, str]) -> int | str | None:
    """What the muxer keeps in memory after a packet is muxed: a number of packets, "keyframe" (all
    since the newest keyframe: a fragmented MP4 writes a fragment when the next one starts), or None
    (unknown: nothing counts as written before the container is closed)."""
    if copts.get("flush_packets") != "1":
        return None
    if fmt == "mp4":
        return "keyframe" if "frag_keyframe" in copts.get("movflags", "") else None
    if fmt in ("matroska", "webm"):
        return 1 if copts.get("cluster_size_limit") == "1" else None  # the open cluster
    return 0 if fmt in ("mpegts", "flv") else None


class VideoSink:
    """Encodes uint8 (H, W, 3) frames with one PyAV video stream into a container.

    ``keyframe_every``: frames whose index in the stream (``first_frame`` + the sink's own count) is a
    multiple of it are encoded as keyframes, so a stream resumed there starts where a clean cut is.
    """

    def __init__(self, target: str | BinaryIO, *, fmt: str | None, codec: str, fps: float,
                 options: dict[str, str] | None = None, container_options: dict[str, str] | None = None,
                 label: str | None = None, size: tuple[int, int] | None = None,
                 keyframe_every: int | None = None, first_frame: int = 0):
        if not fps >= MIN_FPS:
            raise bad("fps", f"must be at least {MIN_FPS} (a frame every 100 s)", fps)
        if keyframe_every is not None and keyframe_every < 1:
            raise bad("keyframe_every", "must be 1 or more", keyframe_every)
        self.target, self.fmt, self.codec, self.fps = target, fmt, codec, fps
        self.options = options or {}
        self.container_options = container_options or {}
        self.label = label or str(target)
        self.keyframe_every, self.first_frame = keyframe_every, first_frame
        self._key_next = False
        self.held = _held(fmt, self.container_options)
        self.frames = 0
        self.muxed = 0  # packets handed to the muxer; without B-frames, packet k is frame k
        self._last_key = 0  # index of the newest keyframe muxed
        self._closed = False
        self._synced_dir = False
        self.container = None
        self.stream = None
        self.seconds = 0.0  # time spent encoding and writing
        self._open(size)

    def _open(self, size: tuple[int, int] | None) -> None:
        """Open the container; with ``size`` (W, H) also add the stream and write the header now."""
        try:
            self.container = av.open(self.target, mode="w", format=self.fmt,
                                     options=self.container_options)
            self._file_id: tuple[int, int] | None = None  # the file's identity once it exists (`_check_in_place`)
            self.stream = None
            if size is not None:
                self._add_stream(size[1], size[0])
                self.container.start_encoding()
                self._file_id = _file_id(self.target)
        except BaseException as exc:
            container, self.container, self.stream = self.container, None, None
            if container is not None:  # opened, then the stream or the header failed
                try:
                    container.close()
                except Exception:
                    pass
            if not isinstance(exc, (av.error.FFmpegError, OSError)):
                raise
            if isinstance(self.target, str) and "://" in self.target and size is not None:
                raise StreamgenError(f"cannot connect to {self.label}: nothing is listening there or it "
                                     f"refused the stream ({_scrub(str(exc), self.target)})") from None
            raise self._error("cannot open", exc) from None

    def _error(self, what: str, exc: BaseException) -> StreamgenError:
        msg = f"{what} output {self.label}: {exc}"
        if isinstance(self.target, str):
            msg = _scrub(msg, self.target)
        if isinstance(exc, (BrokenPipeError, ConnectionError)) or "Broken pipe" in str(exc) \
                or "Connection reset" in str(exc) or "End of file" in str(exc):
            return SinkClosed(f"the receiver of {self.label} went away ({type(exc).__name__})")
        return StreamgenError(msg)

    def _add_stream(self, h: int, w: int) -> None:
        if self.codec != "png" and (h % 2 or w % 2):
            raise bad("size", f"must have an even width and height for {self.codec}", f"{w}x{h}")
        rate = Fraction(self.fps).limit_denominator(1000)
        stream = self.container.add_stream(self.codec, rate=rate)
        stream.width, stream.height = w, h
        stream.pix_fmt = "rgb24" if self.codec == "png" else "yuv420p"
        # the muxer may change stream.time_base when it writes the header (Matroska uses 1/1000):
        # frames keep counting in 1/fps
        self.time_base = 1 / rate
        stream.time_base = self.time_base
        stream.codec_context.time_base = self.time_base
        stream.options = dict(self.options)
        self.stream = stream

    def write(self, frame: np.ndarray) -> None:
        t0 = time.perf_counter()
        h, w = frame.shape[:2]
        if self.container is None:
            raise StreamgenError(f"output {self.label} is closed: no frame can be written to it")
        if self.stream is None:
            self._add_stream(h, w)
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        vf.pts = self.frames
        vf.time_base = self.time_base
        if self._key_next or self.keyframe_every and (self.first_frame + self.frames) % self.keyframe_every == 0:
            vf.pict_type = av.video.frame.PictureType.I
            self._key_next = False
        try:
            for packet in self.stream.encode(vf):
                self._mux(packet)
            self._flush_file()
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise self._error("cannot write to", exc) from None
        self._check_in_place()
        self.frames += 1
        self.seconds += time.perf_counter() - t0

    def _mux(self, packet: av.Packet) -> None:
        key = packet.is_keyframe
        self.container.mux(packet)
        if key:
            self._last_key = self.muxed
        self.muxed += 1

    def _flush_file(self) -> None:
        # a Python file (standard output) has its own buffer behind the muxer's
        flush = getattr(self.target, "flush", None) if not isinstance(self.target, str) else None
        if flush is not None:
            flush()

    def keyframe_next(self) -> None:
        """Make the next frame written a keyframe: in a fragmented MP4 the frames before it then
        become `durable` as soon as it is muxed, not at the next regular keyframe."""
        self._key_next = True

    @property
    def durable(self) -> int:
        """Frames a reader of the output gets if this process dies now."""
        if self._closed:
            return self.frames
        if self.held == "keyframe":
            return self._last_key
        if self.held is None:
            return 0
        return max(0, self.muxed - self.held)

    def _check_in_place(self) -> None:
        """A file removed (or replaced) while it is written takes every later frame with it unseen:
        stop instead, before a snapshot counts frames that are nowhere."""
        now = _file_id(self.target)
        if self._file_id is None:  # the muxer creates the file with its header, at the first frame here
            self._file_id = now
            return
        if now != self._file_id:
            raise StreamgenError(f"output {self.label} was removed or replaced while it was being written "
                                 f"(after {self.frames} frames): the stream stops; with --snapshot, --resume "
                                 f"continues it into a new file")

    def sync(self) -> None:
        """Push what is written to the disk: after this, `durable` frames survive a crash of the
        machine too. A pipe or a network stream cannot be synced; what it was handed is all it has."""
        if isinstance(self.target, str):
            if "://" in self.target:
                return
            self._check_in_place()
            fsync(self.target)
            if not self._synced_dir:
                fsync(Path(self.target).resolve().parent)
                self._synced_dir = True
            return
        try:
            self._flush_file()
            os.fsync(self.target.fileno())
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            pass

    def close(self) -> None:
        if self.container is None:
            return
        try:
            if self.stream is not None:
                for packet in self.stream.encode():
                    self._mux(packet)
            self.container.close()
            self._flush_file()
            self._closed = True
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise self._error("cannot finish", exc) from None
        finally:
            self.container = self.stream = None


def check_png(size: tuple[int, int], path: str) -> None:
    """Raise ConfigError if a (W, H) canvas does not fit in one PNG: before any work, when the size is known."""
    w, h = size
    if max(w, h) > PNG_MAX_SIDE:
        stem = str(Path(path).with_suffix(""))
        raise bad("size", f"must be at most {PNG_MAX_SIDE} px a side for a PNG output ({path}); write a "
                  f"folder of tiles (-o {stem}/) or a scrolling video (-o {stem}.mp4 --scroll 8)", f"{w}x{h}")


class PngSink:
    """One image as a PNG file; a second frame or a canvas too wide for PNG is an error (with ``size``
    (W, H), when the sink opens)."""

    def __init__(self, path: str, size: tuple[int, int] | None = None, **_: Any):
        if size is not None:
            check_png(size, path)
        self.path, self.frames, self.seconds = path, 0, 0.0

    def write(self, frame: np.ndarray) -> None:
        check_png(frame.shape[1::-1], self.path)
        if self.frames:
            raise bad("output", "is a PNG and holds one image; use .mp4, .mkv or .webm for video",
                      self.path)
        t0 = time.perf_counter()
        # written beside it and renamed: a killed process leaves the whole image or none, never a
        # torn one. The name is fixed so that a resumed stream writing the same frame replaces it.
        path = Path(self.path)
        tmp = str(path.with_name(f".{path.name}.partial"))
        try:
            sink = VideoSink(tmp, fmt="image2", codec="png", fps=1,
                             container_options={"update": "1"}, label=self.path)
            sink.write(frame)
            sink.close()
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.frames += 1
        self.seconds += time.perf_counter() - t0

    @property
    def durable(self) -> int:
        return self.frames

    def sync(self) -> None:
        if self.frames:
            fsync(self.path)
            fsync(Path(self.path).resolve().parent)

    def close(self) -> None:
        pass


class SequenceSink:
    """Numbered PNG files from a printf pattern, e.g. ``frames/%06d.png``: lossless, and a resumed
    stream continues the numbering."""

    def __init__(self, pattern: str, *, start: int = 0, **_: Any):
        try:
            pattern % 0
        except (TypeError, ValueError):
            raise bad("output", "must hold one integer field such as %06d", pattern) from None
        parent = Path(pattern % 0).resolve().parent
        if not parent.is_dir():
            raise bad("output", "must be in an existing folder", pattern)
        self.pattern, self.frames, self.seconds = pattern, start, 0.0
        self.start, self._unsynced = start, []
        self.parent = parent

    def write(self, frame: np.ndarray) -> None:
        t0 = time.perf_counter()
        path = self.pattern % self.frames
        PngSink(path).write(frame)
        self._unsynced.append(path)
        self.frames += 1
        self.seconds += time.perf_counter() - t0

    @property
    def durable(self) -> int:
        return self.frames - self.start  # each file is renamed into place whole

    def sync(self) -> None:
        for path in self._unsynced:
            fsync(path)
        if self._unsynced:
            fsync(self.parent)
        self._unsynced = []

    def close(self) -> None:
        pass


def _x264(preset: str, tune: str, gop: str) -> dict[str, str]:
    opts = {"preset": preset, "g": gop, "bf": "0"}
    if tune != "none":
        opts["tune"] = tune
    return opts


FILE_FORMATS = {".mp4": ("mp4", "libx264"), ".mkv": ("matroska", "libx264"),
                ".webm": ("webm", "libvpx-vp9")}


def container_options(fmt: str) -> dict[str, str]:
    """Muxer options that keep a file readable when the process dies: every packet is handed to the
    OS at once; MP4 is fragmented at each keyframe (a fragment is written when the next one starts,
    so the moov index at the end that ``+faststart`` moves cannot exist); Matroska closes a cluster
    at every frame (it writes a cluster only once it is closed)."""
    copts = {"flush_packets": "1"}
    if fmt == "mp4":
        copts["movflags"] = "+frag_keyframe+empty_moov+default_base_moof"
    elif fmt in ("matroska", "webm"):
        copts["cluster_size_limit"] = "1"
    return copts


def file_sink(target: str, *, fps: float, size: tuple[int, int] | None = None, crf: int = 20,
              preset: str = "veryfast", gop: int | None = None, keyframe_every: int | None = None,
              first_frame: int = 0, **_: Any):
    ext = Path(target).suffix.lower()
    if ext == ".png" and "%" in target:
        return SequenceSink(target, **_)
    if ext == ".png":
        return PngSink(target, size)
    if ext not in FILE_FORMATS:
        raise bad("output", f"must end in one of {', '.join([*FILE_FORMATS, '.png'])} (or be a "
                  "numbered pattern like frames/%06d.png), be '-' "
                  "(standard output) or an rtmp:// or rtmps:// URL", target)
    parent = Path(target).resolve().parent
    if not parent.is_dir():
        raise bad("output", "must be in an existing folder", target)
    fmt, codec = FILE_FORMATS[ext]
    opts = {"crf": str(crf), "preset": preset, "bf": "0"} if codec == "libx264" else {"crf": str(crf + 10),
                                                                          "b": "0", "deadline": "realtime",
                                                                          "cpu-used": "8"}
    # a killed process loses at most the frames since the newest keyframe, plus the encoder's delay
    opts["g"] = str(gop or max(1, round(fps)))
    return VideoSink(target, fmt=fmt, codec=codec, fps=fps, options=opts,
                     container_options=container_options(fmt), size=size,
                     keyframe_every=keyframe_every, first_frame=first_frame)


def pipe_sink(target: str, *, fps: float, size: tuple[int, int] | None = None,
              stream: BinaryIO | None = None, gop: int | None = None, preset: str = "veryfast",
              tune: str = "zerolatency", keyframe_every: int | None = None, first_frame: int = 0,
              **_: Any):
    """MPEG-TS with H.264 to standard output: a reader can start without seeking."""
    out = stream if stream is not None else sys.stdout.buffer
    g = str(gop or max(1, round(fps)))
    return VideoSink(out, fmt="mpegts", codec="libx264", fps=fps, label="standard output",
                     options=_x264(preset, tune, g), size=size, container_options=container_options("mpegts"),
                     keyframe_every=keyframe_every, first_frame=first_frame)




class RTMPSink:
    """FLV + H.264 pushed to an RTMP(S) server; with ``reconnect`` retries, a dropped connection is
    reopened with backoff and the same stream continues (pts keep counting).

    Each connection has its own encoder, so the first frame a returning server gets is a keyframe
    with the codec headers. The frame whose write failed is sent again on the new connection; frames
    the old socket had taken but not delivered are lost. Every connect that fails counts as one of
    the ``reconnect`` attempts, and a write that succeeds gives the next outage all of them again.
    """

    def __init__(self, url: str, *, fps: float, size: tuple[int, int] | None = None,
                 gop: int | None = None, reconnect: int = 0, preset: str = "veryfast",
                 tune: str = "zerolatency", warn: Any = None, start: int = 0, **_: Any):
        self.host, self.port = _rtmp_address(url)
        if reconnect < 0:
            raise bad("reconnect", "must be 0 or more", reconnect)
        if start < 0:
            raise bad("start", "must be 0 or more", start)
        self.url, self.fps, self.reconnect = url, fps, reconnect
        self.label = redact(url)
        self.options = _x264(preset, tune, str(gop or max(1, round(fps))))
        self.frames = start  # a resumed stream's first frame keeps the timestamp it has in the stream
        self.seconds = 0.0
        self.reconnects = 0
        self.size, self.warn = size, warn
        # None between a lost connection and the next successful connect: a write then connects first
        self.sink: VideoSink | None = self._connect()

    def _connect(self) -> VideoSink:
        # with the size known, the connection and the FLV header happen now: a URL where nothing
        # listens fails at the start, not at the first frame
        sink = VideoSink(self.url, fmt="flv", codec="libx264", fps=self.fps, options=self.options,
                         label=self.label, size=self.size)
        sink.frames = self.frames  # a reconnected push continues the timeline, it does not restart at 0
        return sink

    def _drop(self, container: Any = None) -> None:
        """Let go of the connection; nothing said on a dead socket can fail the stream."""
        sink, self.sink = self.sink, None
        container = container if container is not None else getattr(sink, "container", None)
        if sink is not None:
            sink.container = None
        if container is None:
            return
        try:
            # closed now rather than by PyAV's finaliser whenever the collector runs: the socket is
            # released before the next connect, and a failure on the dead socket is expected, not
            # an error. Closing a closed container is a no-op in PyAV.
            container.close()
        except (av.error.FFmpegError, OSError, ValueError):
            pass

    def write(self, frame: np.ndarray) -> None:
        t0 = time.perf_counter()
        attempt = 0
        lost_at = None
        while True:
            try:
                if self.sink is None:
                    self.sink = self._connect()
                self.sink.write(frame)
                break
            except ConfigError:
                raise  # a frame the codec refuses is the caller's mistake, not a lost server
            except StreamgenError as exc:
                self._drop()
                lost_at = lost_at if lost_at is not None else time.monotonic()
                if attempt >= self.reconnect:
                    if not self.reconnect:
                        raise SinkClosed(f"the RTMP server at {self.label} went away after "
                                         f"{self.frames} frames ({type(exc).__name__})") from None
                    raise SinkClosed(f"the RTMP server at {self.label} went away after {self.frames} "
                                     f"frames and was not back after {attempt} reconnect attempts "
                                     f"over {time.monotonic() - lost_at:.1f} s") from None
                attempt += 1
                self.reconnects += 1
                what = (f"lost {self.label} after {self.frames} frames" if attempt == 1 else
                        f"{self.label} is still not answering")
                (self.warn or sys.stderr).write(f"streamgen: {what}; reconnecting ({attempt}/{self.reconnect})\n")
                time.sleep(min(8.0, 0.5 * 2 ** (attempt - 1)))
        self.frames += 1
        self.seconds += time.perf_counter() - t0

    def close(self) -> None:
        if self.sink is None:
            return
        container = self.sink.container
        try:
            self.sink.close()
        except StreamgenError:
            pass  # the server left with the last frames: what it got is all it gets
        finally:
            self._drop(container)


def check_output(target: Any, *, video: bool) -> None:
    """Raise ConfigError now for an output no sink can open, or a single PNG for a ``video``: before
    the model loads, instead of after the first frame. A plugin's own sink schemes are checked when
    they open."""
    from streamgen.plugins import manager

    if not isinstance(target, str) or not target:
        raise bad("output", "must be a file path, '-' or an rtmp:// URL", target)
    if target == "-" or is_tile_folder(target):
        return
    if "://" in target:
        scheme = target.split("://", 1)[0].lower()
        if scheme not in manager().sinks:
            raise bad("output", f"uses an unknown sink {scheme!r}; installed: "
                      f"{', '.join(manager().sinks.names())}", redact(target))
        if scheme in ("rtmp", "rtmps"):
            _rtmp_address(target)
        return
    check_file_name(target, video=video)
    if not Path(target).resolve().parent.is_dir():
        raise bad("output", "must be in an existing folder", target)


def check_file_name(target: str, *, video: bool) -> None:
    """Raise ConfigError for a file name no file sink writes, or a single PNG for a ``video``."""
    ext = Path(target).suffix.lower()
    if ext == ".png" and "%" not in target:
        if video:
            raise bad("output", "is one PNG, which holds one image; write a video (.mp4 .mkv .webm), "
                      "numbered frames (frames/%06d.png) or frames=1", target)
    elif ext not in FILE_FORMATS and ext != ".png":
        raise bad("output", f"must end in one of {', '.join([*FILE_FORMATS, '.png'])} (or be a "
                  "numbered pattern like frames/%06d.png), be '-' (standard output) or an rtmp:// or "
                  "rtmps:// URL", target)


def _rtmp_address(url: str) -> tuple[str, int]:
    """The (host, port) an rtmp:// or rtmps:// URL pushes to; ConfigError for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in ("rtmp", "rtmps") or not parts.hostname:
        raise bad("output", "must be an rtmp:// or rtmps:// URL with a host", redact(url))
    port = _port(parts)
    if isinstance(port, str):
        raise bad("output", "must have a port from 1 to 65535", redact(url))
    return parts.hostname, port or (443 if parts.scheme == "rtmps" else 1935)


def open_sink(target: str, *, fps: float, **options: Any):
    """A sink for ``target``: '-' (stdout), an rtmp(s):// URL, a folder of tiles (a path ending in /),
    or a file path by extension."""
    from streamgen.plugins import manager

    if not isinstance(target, str) or not target:
        raise bad("output", "must be a file path, '-' or an rtmp:// URL", target)
    if target == "-":
        kind = "pipe"
    elif is_tile_folder(target):
        kind = "tiles"
    elif "://" in target:
        scheme = target.split("://", 1)[0].lower()
        kind = scheme if scheme in manager().sinks else None
        if kind is None:
            raise bad("output", f"uses an unknown sink {scheme!r}; installed: "
                      f"{', '.join(manager().sinks.names())}", redact(target))
    else:
        kind = "file"
    return manager().sinks.get(kind)(target, fps=fps, **options)


@hookimpl
def streamgen_register_sinks(registry) -> None:
    registry.add("file", file_sink)
    registry.add("pipe", pipe_sink)
    registry.add("rtmp", RTMPSink)
    registry.add("rtmps", RTMPSink)
    registry.add("tiles", TileFolder)
