"""Canvases of any width, written as their strips come (`streamgen.engine.Engine.strips`).

- `TileFolder`: a folder of PNG tiles, one per strip, named by their offsets, with ``index.json``
  (the canvas's size and each tile's file and place) written when the canvas is done;
- `scroll`: the frames of a window moving along the canvas, for any video sink (a file, a pipe, an
  RTMP server): a panorama that is watched as it is generated.

Both hold one strip and what they still need of the one before, never the canvas.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from streamgen.checkpoint import fsync
from streamgen.errors import bad


def is_tile_folder(output: str) -> bool:
    """``-o pano/``: an output path ending in a slash is a folder of tiles."""
    return output.endswith(("/", os.sep)) and "://" not in output


class TileFolder:
    """A canvas (W, H) ``size`` as PNG tiles in the folder ``path`` (made if missing; its parent must
    exist). Strips come in order, bands of columns from the left or of rows from the top, and each is
    written as ``x{left:07d}_y{top:05d}.png`` at once (renamed into place whole); ``index.json`` lists
    them when the canvas is done, or when it is stopped (an endless canvas, W None, ends so): its
    ``width`` and ``height`` are those of the pixels drawn, ``complete`` says whether that is the
    whole canvas and ``canvas`` is its planned (W, H). A folder that already holds an index is
    refused, so tiles of two canvases never mix."""

    def __init__(self, path: str, *, size: tuple[int, int] | None = None, **_: Any):
        self.path = Path(path)
        if not self.path.resolve().parent.is_dir():
            raise bad("output", "must be a folder in an existing folder", path)
        if (self.path / "index.json").exists():
            raise bad("output", "must be a new or empty tile folder (this one holds a canvas's index.json)", path)
        if size is None:
            raise bad("size", "must be given for a tile folder", size)
        self.path.mkdir(exist_ok=True)
        self.width, self.height = size
        self.top = self.left = 0  # where the next strip goes
        self.tiles: list[dict[str, Any]] = []
        self.frames, self.seconds = 0, 0.0

    def write(self, pixels: np.ndarray) -> None:
        from streamgen.output.sinks import PngSink

        t0 = time.perf_counter()
        h, w = pixels.shape[:2]
        name = f"x{self.left:07d}_y{self.top:05d}.png"
        PngSink(str(self.path / name)).write(pixels)
        self.tiles.append({"file": name, "left": self.left, "top": self.top, "width": w, "height": h})
        if h == self.height:  # a band of columns
            self.left += w
        else:
            self.top += h
        self.frames += 1
        self.seconds += time.perf_counter() - t0

    @property
    def durable(self) -> int:
        return self.frames

    def sync(self) -> None:
        for tile in self.tiles:
            fsync(self.path / tile["file"])
        fsync(self.path)

    def close(self) -> None:
        if not self.tiles:
            return
        columns = self.tiles[0]["height"] == self.height  # bands of columns, or of rows
        complete = self.width is not None and (self.left >= self.width if columns else self.top >= self.height)
        # a canvas stopped before its end (an endless one always is) indexes what was drawn
        width = self.width if complete or not columns else self.left
        height = self.height if complete or columns else self.top
        index = {"width": width, "height": height, "complete": complete, "canvas": [self.width, self.height],
                 "tiles": self.tiles}
        tmp = self.path / ".index.json.partial"
        tmp.write_text(json.dumps(index, indent=1) + "\n")
        os.replace(tmp, self.path / "index.json")


def read_tiles(path: str | Path) -> np.ndarray:
    """The canvas of a tile folder, uint8 (H, W, 3), as far as it was drawn (its index's ``complete``
    says whether that is all of it): for canvases that fit in memory."""
    import av

    path = Path(path)
    try:
        index = json.loads((path / "index.json").read_text())
        canvas = np.zeros((index["height"], index["width"], 3), np.uint8)
        for t in index["tiles"]:
            with av.open(str(path / t["file"])) as f:
                tile = next(f.decode(video=0)).to_ndarray(format="rgb24")
            canvas[t["top"]:t["top"] + t["height"], t["left"]:t["left"] + t["width"]] = tile
    except (OSError, ValueError, KeyError, TypeError, StopIteration, av.error.FFmpegError) as exc:
        raise bad("path", f"must be a tile folder with a readable index.json and its tiles ({type(exc).__name__}: "
                  f"{exc})", str(path)) from None
    return canvas


def view_width(view: int | None, height: int, width: int | None) -> int:
    """A scrolling video's frame width: ``view``, by default twice the canvas's height, at most its width
    (None: an endless canvas)."""
    return min(view or 2 * height, width or view or 2 * height)


def scroll(strips: Iterable[Any], view: int | None, step: int) -> Iterator[np.ndarray]:
    """Frames (H, `view_width`, 3) of a window moving ``step`` pixels a frame from a canvas's left edge
    to its right, from its strips (`streamgen.engine.Strip`: bands of columns from the left): each
    frame as soon as the strips under it are there; the last frame shows the canvas's right edge (an
    endless canvas's go on while they are read)."""
    try:
        yield from _scroll(strips, view, step)
    finally:
        close = getattr(strips, "close", None)
        if close is not None:
            close()


def _scroll(strips: Iterable[Any], view: int | None, step: int) -> Iterator[np.ndarray]:
    held: np.ndarray | None = None  # the canvas's columns from `start` on that frames still show
    start = x = end = 0  # x: the next frame's left edge
    for strip in strips:
        view = view_width(view, *strip.canvas)
        held = strip.pixels if held is None else np.concatenate([held, strip.pixels], 1)
        end = start + held.shape[1]
        while x + view <= end:
            yield held[:, x - start:x - start + view]
            x += step
        keep = max(start, min(x, end - view))  # the next frame's columns, or the last frame's
        held, start = held[:, keep - start:], keep
    if held is not None and x - step + view < end:  # the right edge, where the steps did not land on it
        yield held[:, -view:]
