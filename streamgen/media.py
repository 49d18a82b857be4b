"""Reading pictures and videos the user gives: images and videos alike are decoded with PyAV."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from streamgen.errors import ConfigError


def read_frames(path: str | Path, limit: int | None = None) -> np.ndarray:
    """Decode up to ``limit`` frames of an image or video file: uint8 (F, H, W, 3)."""
    frames = []
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                frames.append(frame.to_ndarray(format="rgb24"))
                if limit is not None and len(frames) >= limit:
                    break
    except (av.error.FFmpegError, IndexError, StopIteration) as exc:
        raise ConfigError(f"`{path}` is not a readable image or video ({exc})") from None
    if not frames:
        raise ConfigError(f"`{path}` holds no video frames")
    return np.stack(frames)
