"""Joining the segments of a resumed stream into one file: ``streamgen join out.mp4
out.from000040.mp4 -o whole.mp4``.

A resumed stream writes a new segment named after the frame it starts at (``NAME.fromNNNNNN.EXT``);
the segment before it may hold frames past that point (written after the snapshot, made again by
the resumed stream). Each segment gives its frames up to the start of the next one. When every cut
falls on a keyframe (streamgen encodes each frame a snapshot may name as one) and the segments share
their codec settings, the packets are copied as they are; otherwise the frames are decoded and
encoded again, and the report says so. A segment killed mid-write is read up to its last whole
packet.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Sequence

import av

from streamgen.errors import StreamgenError, bad
from streamgen.output.sinks import FILE_FORMATS, VideoSink, _x264, container_options, file_sink

START = re.compile(r"\.from(\d+)$")
FORMATS = {**{ext: fmt for ext, (fmt, _) in FILE_FORMATS.items()}, ".ts": "mpegts"}


@dataclass
class Joined:
    frames: int
    remuxed: bool  # packets copied, nothing encoded again
    parts: list[tuple[str, int, int]] = field(default_factory=list)  # (segment, first, end) frames
    why: str = ""  # why the frames were encoded again


def segment_start(path: str) -> int | None:
    """The frame a segment starts at, from its name (``out.from000040.mp4`` -> 40)."""
    m = START.search(Path(path).stem)
    return int(m.group(1)) if m else None


@dataclass
class _Segment:
    path: str
    start: int
    packets: list  # in frame order
    keys: list[bool]
    rate: Fraction
    codec: str
    size: tuple[int, int]
    extradata: bytes | None
    template: object
    container: object


def _read(path: str, start: int) -> _Segment:
    try:
        container = av.open(path)
    except (av.error.FFmpegError, OSError) as exc:
        raise StreamgenError(f"cannot read segment {path}: {exc}") from None
    if not container.streams.video:
        container.close()
        raise bad("segments", "must be video files", path)
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    packets = []
    try:
        for packet in container.demux(stream):
            if packet.size and packet.pts is not None:
                packets.append(packet)
    except av.error.FFmpegError:
        pass  # a segment whose writer was killed ends in a partial packet: what precedes it stands
    packets.sort(key=lambda p: p.pts)
    ctx = stream.codec_context
    return _Segment(path, start, packets, [p.is_keyframe for p in packets], Fraction(rate),
                    ctx.name, (ctx.width, ctx.height), bytes(ctx.extradata or b"") or None, stream, container)


def segment_name(output: str, frames_done: int) -> str:
    """Where a resumed stream writes: pipes, URLs and numbered patterns continue as they are; a
    container file gets a new segment beside it (``out.mp4`` -> ``out.from000120.mp4``)."""
    if output == "-" or "://" in output or "%" in output:
        return output
    p = Path(output)
    return str(p.with_name(f"{p.stem}.from{frames_done:06d}{p.suffix}"))


def join(segments: Sequence[str], output: str, *, log: Callable[[str], None] | None = None) -> Joined:
    """Write the frames of ``segments`` (the first, then each resumed one) to ``output`` once each."""
    if len(segments) < 1:
        raise bad("segments", "must name at least one file", list(segments))
    ext = Path(output).suffix.lower()
    if ext not in FORMATS:
        raise bad("output", f"must end in one of {', '.join(FORMATS)}", output)
    if not Path(output).resolve().parent.is_dir():
        raise bad("output", "must be in an existing folder", output)
    for path in segments:
        if "%" in path:
            raise bad("segments", "are container files: numbered PNG frames continue in place when a "
                      "stream is resumed and need no joining", path)
        if not Path(path).is_file():
            raise bad("segments", "must be existing files", path)
        if Path(path).resolve() == Path(output).resolve():
            raise bad("output", "must not be one of the segments (it would be overwritten)", output)
    starts = [segment_start(segments[0]) or 0]
    for path in segments[1:]:
        s = segment_start(path)
        if s is None:
            raise bad("segments", "after the first must be named NAME.fromNNNNNN.EXT with the frame they "
                      "start at, as `streamgen generate --resume` names them (for a pipe, name the "
                      "file so: the resumed stream prints its first frame)", path)
        if s <= starts[-1]:
            raise bad("segments", f"must start at increasing frames (given in order, this one after "
                      f"frame {starts[-1]})", path)
        starts.append(s)
    segs = [_read(p, s) for p, s in zip(segments, starts)]
    try:
        parts = []
        for i, seg in enumerate(segs):
            end = starts[i + 1] if i + 1 < len(segs) else seg.start + len(seg.packets)
            have = seg.start + len(seg.packets)
            if have < end:
                raise StreamgenError(f"frames {have}-{end - 1} are in no segment: {seg.path} holds frames "
                                     f"{seg.start}-{have - 1} and the next one starts at {end}; resume from "
                                     f"an earlier snapshot")
            parts.append((seg.path, seg.start, end))
        why = _why_not_remux(segs, parts, FORMATS[ext])
        tmp = str(Path(output).with_name(f".{Path(output).name}.partial{Path(output).suffix}"))
        try:
            if why:
                n = _encode(segs, parts, tmp, ext)
            else:
                n = _remux(segs, parts, tmp, FORMATS[ext])
            os.replace(tmp, output)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    finally:
        for seg in segs:
            seg.container.close()
    result = Joined(n, not why, parts, why)
    if log:
        spans = ", ".join(f"{a}-{b - 1} from {Path(p).name}" for p, a, b in parts)
        how = "packets copied" if not why else f"encoded again ({why})"
        log(f"streamgen: joined {n} frames into {output} ({spans}); {how}")
    return result


def _why_not_remux(segs: list[_Segment], parts: list, fmt: str) -> str:
    first = segs[0]
    for seg, (_, a, b) in zip(segs, parts):
        if (seg.codec, seg.size, seg.rate) != (first.codec, first.size, first.rate):
            return f"{seg.path} has other codec settings"
        if seg.extradata != first.extradata:
            return f"{seg.path} has other codec headers"
        cut = b - seg.start
        if cut < len(seg.packets) and not seg.keys[cut]:
            return f"frame {b} is not a keyframe of {seg.path}"
    if fmt == "webm" and first.codec != "vp9" or fmt != "webm" and first.codec != "h264":
        return f"{first.codec} does not go into {fmt} as it is"
    return ""


def _remux(segs: list[_Segment], parts: list, path: str, fmt: str) -> int:
    rate = segs[0].rate
    tb = 1 / rate
    out = av.open(path, "w", format=fmt, options=container_options(fmt))
    n = 0
    try:
        stream = out.add_stream_from_template(segs[0].template)
        stream.time_base = tb
        for seg, (_, a, b) in zip(segs, parts):
            for packet in seg.packets[:b - a]:
                packet.stream = stream
                packet.time_base = tb
                packet.pts = packet.dts = n
                packet.duration = 1
                out.mux(packet)
                n += 1
    finally:
        out.close()
    return n


def _encode(segs: list[_Segment], parts: list, path: str, ext: str) -> int:
    first = segs[0]
    if ext == ".ts":
        sink = VideoSink(path, fmt="mpegts", codec="libx264", fps=float(first.rate),
                         options=_x264("veryfast", "zerolatency", str(max(1, round(first.rate)))),
                         container_options=container_options("mpegts"), size=first.size)
    else:
        sink = file_sink(path, fps=float(first.rate), size=first.size)  # ``path`` ends in ``ext``
    n = 0
    try:
        for seg, (_, a, b) in zip(segs, parts):
            want = b - a
            got = 0
            with av.open(seg.path) as src:
                try:
                    for frame in src.decode(video=0):
                        if got >= want:
                            break
                        sink.write(frame.to_ndarray(format="rgb24"))
                        got += 1
                except av.error.FFmpegError:
                    pass  # the partial end of a killed segment
            if got < want:
                raise StreamgenError(f"{seg.path} decodes to {got} frames of the {want} it should give")
            n += got
        sink.close()
    except BaseException:
        try:
            sink.close()
        except StreamgenError:
            pass
        raise
    return n
