"""Any folder of images and videos as training data. Images and videos are both decoded with PyAV."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from streamgen.errors import ConfigError
from streamgen.media import read_frames

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_EXT = {".mp4", ".mkv", ".webm", ".mov", ".avi", ".ts", ".flv"}


class FolderClips:
    """Random crops of images and of consecutive video frames from the files under ``root``.

    Videos are decoded once (at most ``max_frames`` frames each) and kept in memory; this is meant
    for the small folders a CPU can train on.
    """

    def __init__(self, root: str | Path, max_frames: int = 240):
        root = Path(root)
        if root.is_file():
            files = [root]
        elif root.is_dir():
            files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXT | VIDEO_EXT)
        else:
            raise ConfigError(f"`data.folders` entry must be a folder or a file, but got {str(root)!r}")
        if not files:
            raise ConfigError(f"`data.folders` entry {str(root)!r} holds no images or videos "
                              f"({', '.join(sorted(IMAGE_EXT | VIDEO_EXT))})")
        self.items = [read_frames(p, max_frames) for p in files]

    @classmethod
    def from_arrays(cls, arrays: list[np.ndarray]) -> "FolderClips":
        """Clips from in-memory uint8 arrays (H, W, 3) or (F, H, W, 3)."""
        self = cls.__new__(cls)
        self.items = [a[None] if a.ndim == 3 else a for a in arrays]
        return self

    def sample(self, rng: random.Random, size: int, frames: int = 1) -> np.ndarray | None:
        """A random crop (frames, size, size, 3) of ``frames`` consecutive frames, or None if too small."""
        pool = [c for c in self.items if c.shape[0] >= frames and min(c.shape[1:3]) >= size]
        if not pool:
            return None
        clip = rng.choice(pool)
        f = rng.randrange(clip.shape[0] - frames + 1)
        y = rng.randrange(clip.shape[1] - size + 1)
        x = rng.randrange(clip.shape[2] - size + 1)
        return clip[f:f + frames, y:y + size, x:x + size]
