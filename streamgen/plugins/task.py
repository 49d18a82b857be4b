"""What a task plugin defines, and the services the engine offers it.

A task turns a validated request into a `Job`: the plan (which ADC order or composition, which
patches are known), the conditioning (a prompt for the engine's text encoder, the tokens of known
patches from images it asked the engine to encode), whether the output is an image or a video, and
which pixels of which frames the user gave (`Given`: the output keeps them as they are). Tasks never
touch the model, the caches or the codec directly: everything goes through `TaskEnv`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import Tensor

from streamgen.engine.adc import Plan, Pos
from streamgen.config import Extent, SamplingConfig, Strict
from streamgen.errors import ConfigError, bad

MAX_PROMPT_CHARS = 2000


class TaskRequest(Strict):
    """Fields every task takes. Sizes in pixels; ``frames=None`` means endless (video tasks)."""

    height: int = Field(128, gt=0, le=1 << 16, description="frame height in pixels")
    width: int = Field(128, gt=0, le=1 << 20, description="frame width in pixels")
    seed: int = Field(0, ge=0, lt=1 << 62, description="same seed, same output")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="the fields given are laid "
                                     "over the engine's preset (`Engine.preset`, the model's own settings)")
    extent: Extent | None = Field(None, description="NCP window; at most the model's")


def check_prompt(value: str) -> str:
    if not value.strip():
        raise bad("prompt", "must not be empty for a text task", value)
    if len(value) > MAX_PROMPT_CHARS:
        raise bad("prompt", f"must be at most {MAX_PROMPT_CHARS} characters", f"{len(value)} characters")
    return value


class PromptMixin(Strict):
    prompt: str = Field(description="what to draw")

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: str) -> str:
        return check_prompt(v)


class VideoMixin(Strict):
    frames: int | None = Field(16, ge=1, description="frames to generate; None is endless")


class ImageInputMixin(Strict):
    image: Any = Field(description="input image: a file path or a uint8 array (H, W, 3)")


@dataclass(frozen=True)
class Given:
    """Pixels the user gave, which frame ``frame`` shows as they are: ``image`` uint8 (h, w, 3) with
    its top left corner at pixel (``top``, ``left``). The engine pastes them over the decoded frame;
    along the box's edges that meet generated pixels, a band ``feather`` pixels wide blends from the
    decoded pixels at the edge to the given ones, so the seam does not show. A box covering the whole
    frame is not decoded at all."""

    frame: int
    image: np.ndarray
    top: int = 0
    left: int = 0
    feather: int = 0


@dataclass
class Job:
    """Everything the engine needs to run a request; made by `Task.job`."""

    plan: Plan
    output: Literal["image", "video"]
    prompt: str | None = None  # encoded by the engine's text encoder when set
    known: dict[Pos, Tensor] = field(default_factory=dict)  # tokens (patch_h, patch_w) per known patch
    given: list[Given] = field(default_factory=list)  # the user's pixels, kept in the output as they are
    # new prompts by frame: before frame f is drawn, the prompt becomes prompts[f] (the pool is kept)
    prompts: dict[int, str] = field(default_factory=dict)
    # called before each frame f >= 1 is drawn: {"prompt": str} and/or {"sampling": {fields}} to change
    # from that frame on, or None; for storyboards, loops and feedback. Deterministic in f, so a
    # resumed stream changes as the uninterrupted one did.
    steer: Callable[[int], dict[str, Any] | None] | None = None


class TaskEnv:
    """The services a task may use: sizes, and turning images into the tokens of known patches."""

    def __init__(self, engine: Any):
        self._engine = engine

    @property
    def factor(self) -> int:
        return self._engine.codec.factor

    @property
    def patch_tokens(self) -> tuple[int, int]:
        cfg = self._engine.model.cfg
        return cfg.patch_h, cfg.patch_w

    @property
    def patch_pixels(self) -> tuple[int, int]:
        ph, pw = self.patch_tokens
        return ph * self.factor, pw * self.factor

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Patch rows and columns for a frame; a `ConfigError` if the size does not fit."""
        return self._engine.grid(height, width)

    def extent(self, requested: Extent | None) -> Extent:
        return self._engine.check_extent(requested)

    def load_image(self, image: Any, param: str = "image") -> np.ndarray:
        """A path or an array -> uint8 (H, W, 3), or a `ConfigError` naming ``param``."""
        from streamgen.media import read_frames

        if isinstance(image, (str, Path)):
            path = self._engine.input_file(image, param)  # where this engine may read (a server's --input-dir)
            if not path.is_file():
                raise bad(param, "must be an existing image file", str(image))
            return read_frames(path, limit=1)[0]
        arr = np.asarray(image)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
            raise bad(param, "must be a uint8 array of shape (H, W, 3) or an image path",
                      f"{arr.dtype} {arr.shape}")
        return arr

    def encode(self, image: np.ndarray) -> Tensor:
        """uint8 (H, W, 3) -> tokens (H/f, W/f) int64 with the engine's codec."""
        return self._engine.codec.encode(torch.from_numpy(np.ascontiguousarray(image))[None])[0].cpu()

    def known_patches(self, tokens: Tensor, frame: int = 0, top: int = 0, left: int = 0
                      ) -> dict[Pos, Tensor]:
        """Split a token grid (h, w) into known patches placed at patch row ``top``, column ``left``."""
        ph, pw = self.patch_tokens
        h, w = tokens.shape
        if h % ph or w % pw:
            raise ConfigError(f"image tokens {h}x{w} are not whole patches of {ph}x{pw} tokens")
        return {(frame, top + y, left + x): tokens[y * ph:(y + 1) * ph, x * pw:(x + 1) * pw]
                for y in range(h // ph) for x in range(w // pw)}


class Task:
    """Base class of task plugins. Subclasses set ``name``, ``Request``, ``output`` and ``job``."""

    name: ClassVar[str]
    Request: ClassVar[type[TaskRequest]] = TaskRequest
    output: ClassVar[Literal["image", "video"]] = "image"
    needs_text: ClassVar[bool] = False
    summary: ClassVar[str] = ""

    def job(self, request: Any, env: TaskEnv) -> Job:
        raise NotImplementedError
