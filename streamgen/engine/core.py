"""The engine: plans patches, keeps the Nearby Context Pool, samples tokens, decodes frames.

The ways in: `Engine.run` (a task's frames, a lazy iterator), `Engine.open` (a `Stream` to iterate and
steer), `Engine.step` (the next frame of several open streams together), `Engine.run_batch` (several
streams of one plan in one batch) and `Engine.strips` (an image's pixels strip by strip). Each frame
is given as soon as its last patch is drawn and decoded, and nothing is computed ahead of what the
consumer takes; closing frees the pool and the workspace. `Engine.generate_tokens` is the token loop
underneath (Algorithm 2).
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from streamgen.engine import adc
from streamgen.engine.adc import Plan, Pos
from streamgen.plugins.codec import Codec
from streamgen.plugins.task import Given
from streamgen.config import DEFAULT_SAMPLING, Extent, SamplingConfig, Strict, parse
from streamgen.errors import ConfigError, bad, inside
from streamgen.model import TextMemory, VisionDecoder, Workspace
from streamgen.engine.ncp import NearbyContextPool
from streamgen.engine.sampling import draw_logits, filter_logits, patch_uniforms, sample

if TYPE_CHECKING:
    from streamgen.engine.stream import Steering, Stream
    from streamgen.engine.strips import Strip
    from streamgen.plugins.task import Task

def paste(frame: Tensor, given: Given, top: int = 0, left: int = 0,
          canvas: tuple[int, int] | None = None) -> Tensor:
    """``frame`` (B, H, W, 3) uint8 with ``given.image`` ((B,) h, w, 3) pasted at its box. Along each box
    edge inside the canvas, ``given.feather`` pixels ramp from mostly decoded to the given pixels; the
    rest of the box is the given pixels exactly. ``frame`` may be a strip of a larger canvas (H, W)
    ``canvas`` that starts at its pixel (``top``, ``left``): the part of the box inside it is pasted."""
    image = torch.from_numpy(np.ascontiguousarray(given.image)).to(frame.device)
    h, w = image.shape[-3:-1]
    t, l = given.top, given.left
    H, W = canvas or frame.shape[1:3]
    k = given.feather
    ys, xs = torch.arange(h)[:, None], torch.arange(w)[None, :]
    dist = torch.full((h, w), k)  # pixels to the nearest box edge that meets generated pixels, up to k
    for meets, d in ((t > 0, ys), (t + h < H, h - 1 - ys), (l > 0, xs), (l + w < W, w - 1 - xs)):
        if meets:
            dist = torch.minimum(dist, d.expand(h, w))
    alpha = (dist + 1).float().div(k + 1).clamp(max=1.0)  # (h, w): 1 from k pixels in
    y0, y1 = max(t, top), min(t + h, top + frame.shape[1])  # the box inside the frame, canvas pixels
    x0, x1 = max(l, left), min(l + w, left + frame.shape[2])
    if y0 >= y1 or x0 >= x1:
        return frame
    out = frame.clone()
    box = out[:, y0 - top:y1 - top, x0 - left:x1 - left].float()
    a = alpha[y0 - t:y1 - t, x0 - l:x1 - l, None]
    # where alpha is 1 this is the given value exactly: small integers are exact in float32
    out[:, y0 - top:y1 - top, x0 - left:x1 - left] = \
        (box + a * (image[..., y0 - t:y1 - t, x0 - l:x1 - l, :].float() - box)).round().to(torch.uint8)
    return out


def _whole(job: Any) -> None:
    """Refuse a job whose canvas has no end where whole frames are asked for."""
    if job.plan.cols is None:
        raise bad("endless", "an endless canvas never has a whole frame: take it strip by strip "
                  "(Engine.strips, a tile folder, a --scroll video)", True)


def _interleave(memories: list[TextMemory | None]) -> TextMemory | None:
    """The text memories of G patches decoded together (R rows each) as one: row k*G + i is patch i's
    row k. Shorter prompts are padded with masked-out tokens."""
    first = memories[0]
    if first is None or len(memories) == 1:
        return first
    T = max(m.k.shape[3] for m in memories)
    pad = lambda t: F.pad(t, (0, 0, 0, T - t.shape[3]))  # noqa: E731  (L, R, H, T, hd)
    k = torch.stack([pad(m.k) for m in memories], 2).flatten(1, 2)
    v = torch.stack([pad(m.v) for m in memories], 2).flatten(1, 2)
    mask = torch.stack([F.pad(m.mask, (0, T - m.mask.shape[-1]), value=False) for m in memories], 1).flatten(0, 1)
    pooled = None if first.pooled is None else torch.stack([m.pooled for m in memories], 1).flatten(0, 1)
    return TextMemory(k, v, mask, pooled)


KnownTokens = Callable[[Pos], Tensor]  # (f, y, x) -> (B, patch_h, patch_w) int64
# Patch columns of an endless canvas's tokens held at once at least (`Tokens.reach`): 4,096 px at
# factor 16; a taller canvas's wavefronts and its codec's strips may need more (`Engine._endless_keep`).
ENDLESS_WINDOW = 64


class StreamRequest(Strict):
    """What `Engine.stream` is asked for; sizes in pixels."""

    height: int = Field(128, gt=0, le=1 << 16, description="frame height in pixels")
    width: int = Field(128, gt=0, le=1 << 20, description="frame width in pixels")
    frames: int | None = Field(1, ge=1, description="frames to generate; None runs forever")
    order: str = Field("omega", description="ADC order of the patches inside each frame")
    seed: int = Field(0, ge=0, lt=1 << 62, description="same seed, same frames")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="laid over `Engine.preset`")
    extent: Extent | None = Field(None, description="NCP window; at most the model's, which is the default")


class TokenFrame(NamedTuple):
    """One finished frame of tokens, and the pool as it stands after it (for snapshots)."""

    index: int
    tokens: Tensor  # (B, h, w) int64
    pool: dict  # position -> `ncp.Entry`; payloads are never modified after they are added


class TokenPart(NamedTuple):
    """A frame being drawn, after a group of its patches (`Engine.generate_tokens` with ``parts``)."""

    index: int
    tokens: Tensor  # (B, h, w) int64: the frame's tokens so far, live (the next patches write into it)
    made: Tensor  # (rows, cols) bool: its patches drawn so far, live
    left: int = 0  # the patch column ``tokens`` and ``made`` start at (an endless canvas's window,
    # which is a new tensor after each slide: read a part before asking for the next)


@dataclass(frozen=True)
class Update:
    """A change of a running stream's conditioning, from the frame it is applied at on.

    ``text`` (B, T, text_dim) and ``text_mask`` (B, T) are the new prompt's token states (None keeps
    the prompt); ``sampling`` the new sampling (None keeps it). ``recache`` recomputes the caches in
    the Nearby Context Pool under the new text, from their tokens, as if those patches had been drawn
    under it; without it the next frames read the caches as they were made."""

    text: Tensor | None = None
    text_mask: Tensor | None = None
    sampling: SamplingConfig | None = None
    recache: bool = False


@dataclass
class StreamState:
    """Where a stream stands after a frame: enough to continue it exactly (see `streamgen.engine.snapshot`)."""

    frames_done: int
    pool: dict
    prev: Tensor | None  # the last frame's pixels (1, H, W, 3) uint8: guides the next PG decoding
    tokens: Tensor | None = None  # the last frame's tokens (B, h, w): the next frame's `prev_frame` input
    conditioning: dict | None = None  # the prompt and sampling in effect (`stream.Steering.state`)
    # tokens (B, h, w) by frame of the frames the pool's caches came from (and the one before the
    # oldest, for its hints): what a recache under a new prompt recomputes the caches from
    history: dict[int, Tensor] | None = None


@dataclass
class Frame:
    pixels: np.ndarray  # (H, W, 3) uint8, the first (usually only) stream's frame
    state: StreamState
    batch: np.ndarray  # (B, H, W, 3) uint8, every stream's frame


PRECISIONS = ("fp32", "mixed")
_UNFILTERED = SamplingConfig()  # for logits already through filter_logits


def _is_cuda(device: torch.device) -> bool:
    return device.type == "cuda"


@dataclass
class StreamStats:
    """Counters of the engine's latest call (`run`, `open`, `generate_tokens`, ...), updated as it runs,
    for progress reports and benchmarks; each new call starts them again."""

    frames: int = 0
    tokens: int = 0  # sampled tokens (pre-cached known tokens not counted)
    patches: int = 0
    started: float = field(default_factory=time.perf_counter)
    decode_seconds: float = 0.0  # time spent in the codec

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started


@dataclass(eq=False)
class Tokens:
    """A stream's token side between frames (or several streams' as rows of one batch): what
    `Engine.generate_tokens` and `Engine.step` advance, patch group by patch group."""

    plan: Plan
    seeds: list[int]
    batch: int  # B rows (streams), each with an unconditional copy when `guided`
    sampling: SamplingConfig
    guided: bool
    conditioned: bool  # it has a prompt
    memory: TextMemory | None
    known: KnownTokens | None
    pool: NearbyContextPool
    frame: Tensor  # (B, h, w) the frame being drawn (an endless canvas: its columns from `left` on)
    made: Tensor  # (rows, cols) bool: its patches made so far (likewise)
    last: Tensor | None  # the previous frame's tokens (`prev_frame` models)
    history: dict[int, Tensor]  # frame tokens the pool's caches came from, for a recache
    f: int  # the frame being drawn
    next_step: int  # every plan step before this one is done: NCP.Remove up to it
    done: set[int] = field(default_factory=set)
    workspaces: dict = field(default_factory=dict)  # its own, by rows decoded together
    left: int = 0  # the first patch column `frame` and `made` hold
    keep: int = 0  # an endless canvas's: columns `reach` keeps before the column it makes room for

    @property
    def rows(self) -> int:
        return 2 * self.batch if self.guided else self.batch

    @property
    def finished(self) -> bool:
        return self.plan.frames is not None and self.f >= self.plan.frames

    def reach(self, x: int) -> None:
        """Make patch column ``x`` one that `frame` and `made` hold. An endless canvas holds a window
        of twice `keep` columns; when ``x`` passes its end it slides so that the `keep` columns before
        ``x`` stay: those the patches of a wavefront and the strip being decoded still read."""
        if x < self.left:
            raise ValueError(f"patch column {x} left the endless canvas's token window at {self.left}")
        cols = self.made.shape[1]
        if x - self.left >= cols:
            shift, pw = x - self.keep - self.left, self.frame.shape[2] // cols
            self.frame = torch.cat([self.frame[:, :, shift * pw:], torch.zeros_like(self.frame[:, :, :shift * pw])], 2)
            self.made = torch.cat([self.made[:, shift:], torch.zeros_like(self.made[:, :shift])], 1)
            self.left += shift

    def drop_done(self) -> None:
        """NCP.Remove: forget the caches no patch after the finished steps reads."""
        while self.next_step in self.done:
            self.done.discard(self.next_step)
            self.next_step += 1
        self.pool.remove(self.next_step - 1)

    def end_frame(self) -> TokenFrame:
        last = self.last = self.frame.clone()
        self.made.zero_()
        self.history[self.f] = last
        self.history.pop(self.f - self.plan.extent.f - 1, None)  # the pool reaches ef frames back; hints one more
        out = TokenFrame(self.f, last, self.pool.state())
        self.f += 1
        return out

    def close(self) -> None:
        self.pool.clear()
        self.workspaces.clear()


@dataclass(eq=False)
class Cursor:
    """A stream's place between frames: its tokens, the pixels given per frame, the frame before
    (which guides pixel-guided decoding) and its steering."""

    tokens: Tokens
    given: dict[int, list[Given]]
    prev: Tensor | None
    steering: "Steering | None" = None

    def close(self) -> None:
        self.tokens.close()


class Engine:
    """Generates images and videos patch by patch with a `VisionDecoder` and a `Codec`."""

    def __init__(self, model: VisionDecoder, codec: Codec, text_encoder: Any | None = None):
        if codec.vocab_size != model.cfg.vocab_size:
            raise bad("codec.vocab_size", f"must equal the model's vocab_size {model.cfg.vocab_size}",
                      codec.vocab_size)
        if text_encoder is not None and text_encoder.dim != model.cfg.text_dim:
            raise bad("text_encoder.dim", f"must equal the model's text_dim {model.cfg.text_dim}",
                      text_encoder.dim)
        self.model = model.eval()
        self.codec = codec
        self.text_encoder = text_encoder
        self.stats = StreamStats()
        # decode patches whose context is complete together (same tokens as one by one)
        self.wavefront = True
        # "fp32", or "mixed": bfloat16 where this CPU runs it faster (VisionDecoder.new_workspace)
        self.precision = "fp32"
        # "sdpa" (torch's kernels) or "xformers" (CUDA with the xformers package; untested here)
        self.attention = "sdpa"
        # the decode step's layers as one C++ call without Python's lock (streamgen.model.native):
        # the same frames; streams on several threads of one process stop waiting on each other
        self.native_step = False
        # how a stream samples where its request sets nothing: the project's preset with the model
        # folder's own fields over it (`streamgen.load`); a request's sampling fields are laid over it
        self.preset: dict[str, Any] = dict(DEFAULT_SAMPLING)
        # where tasks may read input files (`input_file`): anywhere (None), or only names inside this
        # folder; `reads_files` False reads none (a server without --input-dir)
        self.input_dir: Path | None = None
        self.reads_files = True
        # workspaces of streams drawn together (`step`), one set a thread: a server's lanes draw at once
        self._shared = threading.local()

    def input_file(self, name: str | Path, param: str = "image") -> Path:
        """The path of an input file a request names (request field ``param``), where this engine may
        read it; a `ConfigError` naming ``param`` if it may not."""
        if not self.reads_files:
            raise bad(param, "must not name a file: this server reads no files (start it with --input-dir DIR)",
                      str(name))
        return Path(name) if self.input_dir is None else inside(self.input_dir, name, param, "input")

    def identity(self) -> dict[str, str]:
        """Weight digests of the model and the codec: what a snapshot must match to be resumed."""
        from streamgen.checkpoint import digest

        if not hasattr(self, "_identity"):
            codec_parts = [m for m in (getattr(self.codec, "vq", None), getattr(self.codec, "pg", None))
                           if m is not None] or [getattr(self.codec, "palette", torch.zeros(1))]
            self._identity = {"model": digest(self.model), "codec": digest(*codec_parts)}
        return self._identity

    @property
    def device(self) -> torch.device:
        return self.model.pos_emb.device

    # --- validation ----------------------------------------------------------------------------------
    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Patch rows and columns of a frame, or a `ConfigError` naming the size that does not fit."""
        cfg, f = self.model.cfg, self.codec.factor
        for name, value, tokens in (("height", height, cfg.patch_h), ("width", width, cfg.patch_w)):
            unit = f * tokens
            if value <= 0 or value % unit:
                raise bad(name, f"must be a positive multiple of {unit} (codec factor {f} x patch "
                          f"{name} {tokens} tokens)", value)
        return height // (f * cfg.patch_h), width // (f * cfg.patch_w)

    def check_extent(self, extent: Extent | None) -> Extent:
        table = self.model.extent
        if extent is None:
            return table
        for axis in ("w", "h", "f"):
            if getattr(extent, axis) > getattr(table, axis):
                raise bad(f"extent.{axis}", f"must be at most the model's {getattr(table, axis)}",
                          getattr(extent, axis))
        return extent

    # --- frames ---------------------------------------------------------------------------------------
    def stream(self, **request) -> Iterator[np.ndarray]:
        """Frames uint8 (H, W, 3), lazily. Keywords are the fields of `StreamRequest`."""
        req = parse(StreamRequest, request)
        rows, cols = self.grid(req.height, req.width)
        adc.check_order(req.order)
        extent = self.check_extent(req.extent)
        plan = Plan.basic(req.order, rows, cols, req.frames, extent)
        sampling = self.sampling_for(req.sampling)
        self.check_settings(sampling)
        return (fr.pixels for fr in self._frames(plan, seed=req.seed, sampling=sampling))

    def run(self, task: "str | Task", request: Any = None, **fields: Any) -> Iterator[np.ndarray]:
        """Frames of a task plugin's output, lazily: ``engine.run("t2v", prompt=..., frames=8)``.

        The request (a dict, the task's request model, or keywords) is validated and turned into a
        job before this returns, so bad input raises here, before any work.
        """
        return (fr.pixels for fr in self.run_frames(task, request, **fields))

    def run_frames(self, task: "str | Task", request: Any = None, *, resume: StreamState | None = None,
                   **fields: Any) -> Iterator[Frame]:
        """Like `run`, yielding `Frame` objects with the stream's state after each frame; ``resume``
        continues a stream from a saved state, giving the frames an uninterrupted run gives."""
        return self.open(task, request, resume=resume, **fields).frames()

    def open(self, task: "str | Task", request: Any = None, *, resume: StreamState | None = None,
             recache: bool = False, **fields: Any) -> "Stream":
        """A `Stream` of a task's frames that can be steered while it runs: ``stream.set(prompt=...)``
        or ``stream.set(sampling={...})`` take effect from the next frame drawn. ``recache`` makes a
        new prompt recompute the pool's caches under it (`Update`). Validated like `run`."""
        from streamgen.engine.stream import Stream

        job, seed, steering = self._job(task, request, fields, resume, recache)
        _whole(job)
        text, mask = steering.text()
        known = (lambda pos: job.known[pos][None]) if job.known else None
        cur = self.cursor(job.plan, seed=seed, sampling=steering.sampling, text=text, text_mask=mask,
                          known=known, given=job.given, resume=resume, steering=steering)
        stream = Stream(self, cur)
        stream.state = resume  # a resumed stream stopped before its next frame is saved where it was
        return stream

    def strips(self, task: "str | Task", request: Any = None, **fields: Any) -> Iterator["Strip"]:
        """An image task's canvas strip by strip, lazily, each as soon as its pixels are final: `Strip`s
        of ``pixels`` (h, w, 3) uint8 whose top left corner is at canvas pixel (``top``, ``left``).
        Validated like `run`. Nothing the size of the canvas is kept but its tokens
        (`streamgen.engine.strips`), so a canvas of any width fits in the memory of one strip."""
        from streamgen.engine.strips import canvas_strips

        job, seed, steering = self._job(task, request, fields)
        if job.output != "image":
            raise bad("task", "must make an image to be taken strip by strip (a video's frames come "
                      "whole: use `run`)", getattr(task, "name", task))
        return canvas_strips(self, job, seed, steering)

    def _job(self, task: "str | Task", request: Any, fields: dict[str, Any], resume: StreamState | None = None,
             recache: bool = False) -> tuple[Any, int, "Steering"]:
        """A task request validated and made into its job, seed and steering: bad input raises here."""
        from streamgen.engine.stream import Steering
        from streamgen.plugins import manager
        from streamgen.plugins.registry import make_job, validate_request
        from streamgen.plugins.task import TaskEnv

        if isinstance(task, str):
            task = manager().tasks.get(task)
        req = validate_request(task, request if request is not None else fields)
        sampling = self.sampling_for(req.sampling)
        self.check_settings(sampling)
        job = make_job(task, req, TaskEnv(self))
        steering = Steering(self, job, sampling, state=resume.conditioning if resume is not None else None,
                            recache=recache)
        self.check_settings(steering.sampling)
        return job, req.seed, steering

    def run_batch(self, task: "str | Task", requests: list[Any]) -> Iterator[list[np.ndarray]]:
        """Several streams of one task in one batch: yields a list of frames (one per request) at a
        time. Each stream gives the frames it gives alone; the plans must have the same shape."""
        from streamgen.plugins import manager
        from streamgen.plugins.registry import make_job, validate_request
        from streamgen.plugins.task import TaskEnv

        if isinstance(task, str):
            task = manager().tasks.get(task)
        if not requests:
            raise bad("requests", "must hold at least one request", requests)
        reqs = [validate_request(task, r, prefix=f"requests[{i}]") for i, r in enumerate(requests)]
        sampling = [self.sampling_for(r.sampling) for r in reqs]
        self.check_settings(sampling[0])
        jobs = [make_job(task, r, TaskEnv(self)) for r in reqs]
        for j in jobs:
            _whole(j)
        shape = lambda j: (j.plan.rows, j.plan.cols, j.plan.frames, j.plan.extent,  # noqa: E731
                           list(j.plan.items(0)),
                           [(g.frame, g.top, g.left, g.image.shape, g.feather) for g in j.given])
        for i, j in enumerate(jobs[1:], 1):
            if sampling[i] != sampling[0]:
                raise bad(f"requests[{i}].sampling", "must equal requests[0].sampling to share a batch",
                          sampling[i].model_dump())
            if shape(j) != shape(jobs[0]):
                raise bad(f"requests[{i}]", "must plan the same size, frames, order and known patches "
                          "as requests[0] to share a batch", "a different plan")
        text = mask = None
        if jobs[0].prompt is not None:
            enc = [self.encode_text(j.prompt) for j in jobs]
            T = max(t.shape[1] for t, _ in enc)
            text = torch.cat([F.pad(t, (0, 0, 0, T - t.shape[1])) for t, _ in enc])
            mask = torch.cat([F.pad(m, (0, T - m.shape[1])) for _, m in enc])
        known = None
        if jobs[0].known:
            known = lambda pos: torch.stack([j.known[pos] for j in jobs])  # noqa: E731
        given = [replace(g, image=np.stack([j.given[i].image for j in jobs])) for i, g in enumerate(jobs[0].given)]
        frames = self._frames(jobs[0].plan, seed=[r.seed for r in reqs], sampling=sampling[0],
                              text=text, text_mask=mask, known=known, given=given, batch=len(jobs))
        return (list(fr.batch) for fr in frames)

    def sampling_for(self, given: SamplingConfig) -> SamplingConfig:
        """The sampling a stream runs: the fields ``given`` sets (``sampling={"temperature": 0.8}``)
        laid over the engine's `preset`, the way `streamgen generate` lays its ``sampling.*`` options."""
        return SamplingConfig(**{**self.preset, **given.model_dump(include=given.model_fields_set)})

    def encode_text(self, prompt: str) -> tuple[Tensor, Tensor]:
        """Token states (1, T, text_dim) and mask (1, T) of a prompt, with the engine's text encoder."""
        if self.model.cfg.text_dim is None:
            raise ConfigError("`prompt` cannot be used: this model has no text conditioning "
                              "(its config's text_dim is None); use an unconditional task")
        if self.text_encoder is None:
            raise ConfigError("`prompt` needs a text encoder, but the engine has none: pass "
                              "text_encoder= to Engine")
        states, mask = self.text_encoder.encode([prompt])
        return states, mask

    def _frames(self, plan: Plan, *, seed: int | list[int], sampling: SamplingConfig,
                text: Tensor | None = None, text_mask: Tensor | None = None,
                known: KnownTokens | None = None, given: list[Given] | None = None,
                resume: StreamState | None = None, batch: int = 1,
                steering: "Steering | None" = None) -> Iterator[Frame]:
        """Frames of a stream, lazily: `Frame` objects of pixels and the state after each."""
        cur = self.cursor(plan, seed=seed, sampling=sampling, text=text, text_mask=text_mask, known=known,
                          given=given, resume=resume, batch=batch, steering=steering)
        try:
            while not cur.tokens.finished:
                yield self._advance([cur])[0]
        finally:
            cur.close()

    def cursor(self, plan: Plan, *, seed: int | list[int], sampling: SamplingConfig,
               text: Tensor | None = None, text_mask: Tensor | None = None,
               known: KnownTokens | None = None, given: list[Given] | None = None,
               resume: StreamState | None = None, batch: int = 1,
               steering: "Steering | None" = None) -> "Cursor":
        """A stream's place between frames, for `step`; arguments as `_frames`."""
        tokens = self._start_tokens(plan, seed=seed, sampling=sampling, text=text, text_mask=text_mask,
                                    known=known, batch=batch, start=resume)
        by_frame: dict[int, list[Given]] = {}
        for g in given or []:
            by_frame.setdefault(g.frame, []).append(g)
        self.stats = StreamStats()
        return Cursor(tokens, by_frame, resume.prev if resume is not None else None, steering)

    def step(self, streams: "list[Stream]") -> "list[Frame | None]":
        """One frame of each of ``streams``, drawn together (continuous batching): the patches of
        streams with the same frame layout and sampling share every decoder pass, whatever their
        prompts, seeds and frame numbers, and each stream gives the frames it gives alone. Streams
        join and leave between calls. A stream that has ended gives None; so does one whose task
        raised (while steering it or giving its known tokens): it is closed with the exception in
        ``stream.error``, and the others go on."""
        out: dict[int, Frame | None] = {}
        ready = []
        for s in streams:
            if s.closed or s.cursor.tokens.finished:
                continue
            try:
                self._steer(s.cursor)
                ready.append(s)
            except Exception as exc:  # the task's own code: only its stream stops
                s.fail(exc)
        # streams with known patches call their task for the tokens: each alone, so a raise is its own
        together = [s for s in ready if s.cursor.tokens.known is None]
        for batch in ([together] if together else []) + [[s] for s in ready if s.cursor.tokens.known is not None]:
            try:
                frames = self._draw_frames([s.cursor for s in batch])
            except Exception as exc:
                if len(batch) > 1:
                    raise
                batch[0].fail(exc)
                continue
            for s, frame in zip(batch, frames):
                s.state = frame.state
                out[id(s)] = frame
        return [out.get(id(s)) for s in streams]

    def _advance(self, cursors: "list[Cursor]") -> list[Frame]:
        """The next frame of every cursor: steered, drawn, decoded, its given pixels pasted."""
        for c in cursors:
            self._steer(c)
        return self._draw_frames(cursors)

    def _steer(self, c: "Cursor") -> None:
        self._apply(c.tokens, c.steering(c.tokens.f) if c.steering is not None else None)

    def _draw_frames(self, cursors: "list[Cursor]") -> list[Frame]:
        out = []
        for c, (f, tokens, pool) in zip(cursors, self._step_tokens([c.tokens for c in cursors])):
            t0 = time.perf_counter()
            boxes = c.given.get(f, [])
            H, W = tokens.shape[1] * self.codec.factor, tokens.shape[2] * self.codec.factor
            whole = [g for g in boxes if g.top == g.left == 0 and g.image.shape[-3:-1] == (H, W)]
            if whole:
                pixels = np.ascontiguousarray(whole[-1].image)
                frame = torch.from_numpy(pixels if pixels.ndim == 4 else pixels[None])
            else:
                # each row alone: a convolution's sums differ in the last bit between batch sizes,
                # and a stream's pixels must be those it has alone
                frame = torch.cat([self.codec.decode(tokens[r:r + 1], None if c.prev is None else c.prev[r:r + 1])
                                   for r in range(tokens.shape[0])])  # (B, H, W, 3) uint8
                for g in boxes:
                    frame = paste(frame, g)
            self.stats.decode_seconds += time.perf_counter() - t0
            # the frame as shown guides the next pixel-guided decoding: the engine's own copy, so a
            # caller drawing on the frame it is given changes nothing that follows
            c.prev = frame.clone()
            self.stats.frames += 1
            conditioning = c.steering.state() if c.steering is not None else None
            state = StreamState(f + 1, pool, c.prev, tokens, conditioning, dict(c.tokens.history))
            out.append(Frame(frame[0].numpy(), state, frame.numpy()))
        return out

    # --- tokens ---------------------------------------------------------------------------------------
    def generate_tokens(self, plan: Plan, *, seed: int | list[int] = 0,
                        sampling: SamplingConfig | None = None, text: Tensor | None = None,
                        text_mask: Tensor | None = None, known: KnownTokens | None = None,
                        batch: int = 1, start: StreamState | None = None,
                        wavefront: bool = False,
                        updates: Callable[[int], Update | None] | None = None,
                        parts: bool = False) -> Iterator[TokenFrame | TokenPart]:
        """Algorithm 2: yields a `TokenFrame` ``(f, tokens (B, h, w), pool)`` as each frame completes.

        ``text`` (B, T, text_dim) conditions through cross-attention; with ``sampling.guidance != 1``
        an unconditional copy of every row runs beside it for classifier-free guidance. ``known``
        gives the tokens of the plan's known patches, which are pre-cached instead of sampled.
        ``start`` (a frame's `StreamState`) continues a stream at the first patch of the frame after it.
        Rows are independent streams: row r uses ``seed[r]`` (or ``seed + r`` for an int), and gives
        the same tokens as that stream alone. ``wavefront`` (one stream) decodes the patches whose
        NCP context is complete together, with the same tokens as one by one.
        ``updates(f)`` is asked before each frame ``f`` is drawn; an `Update` it returns changes the
        prompt or the sampling from that frame on, and the pool is kept, so the scene goes on.
        ``parts`` also yields a `TokenPart` after each group of patches, before the frame is done.
        """
        if plan.cols is None and not parts:
            raise bad("parts", "must be true for an endless canvas (it never ends a frame)", parts)
        cur = self._start_tokens(plan, seed=seed, sampling=sampling or SamplingConfig(), text=text,
                                 text_mask=text_mask, known=known, batch=batch, start=start)
        self.stats = StreamStats()
        try:
            while not cur.finished:
                self._apply(cur, updates(cur.f) if updates is not None else None)
                if not parts:
                    yield self._step_tokens([cur], wavefront)[0]
                    continue
                for items in plan.groups(cur.f, wavefront and cur.batch == 1):
                    self._draw([(cur, it) for it in items], cur.workspaces)
                    yield TokenPart(cur.f, cur.frame, cur.made, cur.left)
                yield cur.end_frame()
        finally:
            cur.close()

    @torch.inference_mode()
    def _start_tokens(self, plan: Plan, *, seed: int | list[int], sampling: SamplingConfig,
                      text: Tensor | None, text_mask: Tensor | None, known: KnownTokens | None,
                      batch: int, start: StreamState | None) -> "Tokens":
        cfg = self.model.cfg
        if text is not None:
            batch = text.shape[0]
        seeds = [seed + r for r in range(batch)] if isinstance(seed, int) else list(seed)
        if len(seeds) != batch:
            raise ValueError(f"{len(seeds)} seeds for {batch} rows")
        guided = text is not None and sampling.guidance != 1.0
        pool = NearbyContextPool(plan.extent, self.model.extent)
        keep = self._endless_keep(plan) if plan.cols is None else 0
        cols = plan.cols if plan.cols is not None else 2 * keep
        f, last, history = 0, None, {}  # the previous frame's tokens, for `prev_frame` models
        if start is not None:
            f, last = start.frames_done, start.tokens
            pool.restore(start.pool)
            history = dict(start.history or {})
            if not history and last is not None:  # a state saved without its history
                history = {f - 1: last}
        return Tokens(plan=plan, seeds=seeds, batch=batch, sampling=sampling, guided=guided,
                      conditioned=text is not None,
                      memory=self._text_memory(text, text_mask, batch, guided), known=known, pool=pool,
                      frame=torch.zeros(batch, plan.rows * cfg.patch_h, cols * cfg.patch_w, dtype=torch.long),
                      made=torch.zeros(plan.rows, cols, dtype=torch.bool), last=last,
                      history=history, f=f, next_step=plan.frame_start(f),
                      keep=keep)

    def _endless_keep(self, plan: Plan) -> int:
        """Patch columns an endless canvas keeps before the one being drawn: a wavefront's (its patches
        span (rows - 1) / (eh + 1) columns), a strip's decoding window (the codec's `tiling.span`
        tokens) and one more; at least half of `ENDLESS_WINDOW`."""
        tiling = getattr(self.codec, "tiling", None)
        strip = -(-tiling.span // self.model.cfg.patch_w) if tiling is not None else 0
        return max(ENDLESS_WINDOW // 2, -(-(plan.rows - 1) // (plan.extent.h + 1)) + strip + 2)

    @torch.inference_mode()
    def _apply(self, cur: "Tokens", change: Update | None) -> None:
        """A change of conditioning before ``cur``'s next frame: the pool is kept."""
        if change is None:
            return
        if change.sampling is not None:
            self.check_change(cur.sampling, change.sampling, cur.conditioned)
            cur.sampling = change.sampling
        if change.text is not None:
            cur.memory = self._text_memory(change.text, change.text_mask, cur.batch, cur.guided)
            if change.recache:
                self._recache(cur, self._workspace(cur.workspaces, cur.rows, cur.plan))

    @torch.inference_mode()
    def _step_tokens(self, curs: "list[Tokens]", wavefront: bool | None = None) -> list[TokenFrame]:
        """The next frame of each of ``curs``: cursors whose patches can share a decoder pass (same
        frame layout, sampling and context lengths; `_batch_key`) are drawn patch by patch together."""
        wavefront = self.wavefront if wavefront is None else wavefront
        groups: dict[Any, list[Tokens]] = {}
        for c in curs:
            groups.setdefault(self._batch_key(c) if len(curs) > 1 else 0, []).append(c)
        for group in groups.values():
            if len(group) == 1:
                c = group[0]
                for items in c.plan.groups(c.f, wavefront and c.batch == 1):
                    self._draw([(c, it) for it in items], c.workspaces)
                continue
            items = [[it for (it,) in c.plan.groups(c.f, False)] for c in group]
            shared = self._shared.__dict__.setdefault("workspaces", {})
            for i in range(len(items[0])):
                self._draw([(c, its[i]) for c, its in zip(group, items)], shared)
        return [c.end_frame() for c in curs]

    @staticmethod
    def _batch_key(c: "Tokens") -> Any:
        """Cursors with equal keys draw their next frame together: the same patches in the same order
        and the same sampling, one row each (and its guidance copy), and contexts of the same length
        (streams past their first ``extent.f`` frames; padding would change the sums)."""
        if c.batch != 1 or c.plan.cols is None:
            return id(c)
        items = tuple(c.plan.items(c.f))
        if any(known for _, _, known in items):
            return id(c)
        return (c.plan.rows, c.plan.cols, c.plan.extent, items, min(c.f, c.plan.extent.f), c.sampling,
                c.guided, c.memory is None)

    def _workspace(self, workspaces: dict, rows: int, plan: Plan) -> Workspace:
        key = (rows, plan.extent.num_offsets - 1)
        if key not in workspaces:
            workspaces[key] = self.model.new_workspace(rows, max_context=key[1], mixed=self._mixed())
            workspaces[key].attend = self._attend()
            if self._native():
                from streamgen.model.native import NativeStep

                workspaces[key].native = NativeStep(workspaces[key], self.model.cfg.heads)
        return workspaces[key]

    @torch.inference_mode()
    def _draw(self, group: "list[tuple[Tokens, adc.Item]]", workspaces: dict) -> None:
        """Draw one processing group: a patch of one cursor, a wavefront of one cursor's independent
        patches, or the same patch of several cursors; G patches decoded as one batch of rows."""
        model, cfg = self.model, self.model.cfg
        ph, pw, M = cfg.patch_h, cfg.patch_w, model.M
        G = len(group)
        c0, first = group[0]
        B, rows, sampling = c0.batch, c0.rows, c0.sampling
        ws = self._workspace(workspaces, rows * G, c0.plan)
        memory = _interleave([c.memory for c, _ in group])  # one row per patch's stream
        for c, it in group:
            c.reach(it.pos[2])
        at = [it.pos[2] - c.left for c, it in group]  # each patch's column in its cursor's `frame`
        hints = [model.hint_index(c.last if it.pos[0] else None, c.frame, c.made, it.pos[1], x, batch=B)
                 for (c, it), x in zip(group, at)]
        model.load_context(ws, [[(p, o) for _, p, o in c.pool.select(it.pos)] for c, it in group],
                           [adc.edges(*it.pos[1:], c.plan.rows, c.plan.cols) for c, it in group],
                           [None if h is None else h.repeat(rows // B, 1, 1) for h in hints])
        if first.known:  # known patches are pre-cached, never grouped (`Plan.groups`, `_batch_key`)
            if c0.known is None:
                raise ValueError(f"plan has known patch {first.pos} but no known tokens")
            toks = c0.known(first.pos).reshape(B, M).to(self.device)
            model.prefill(ws, toks.repeat(rows // B, 1), memory)
        else:
            u = torch.cat([patch_uniforms(c.seeds, it.pos, M * self._draws(sampling)) for c, it in group])
            shown = None
            if hints[0] is not None and cfg.prev_frame:  # (G * B, M): the previous frame shows it
                shown = torch.cat(hints)[:, 1] != cfg.vocab_size
                shown = shown if bool(shown.any()) else None
            toks = self._decode_patch(ws, memory, u, sampling, c0.guided, shown)
            redrawn = None
            if sampling.refine_borders is not None:
                redraw = sampling.model_copy(update={"temperature": sampling.refine_borders})
                redrawn = self._refine_borders(ws, memory, group, at, toks, redraw, c0.guided, shown)
            if redrawn is None:
                self._close_patch(ws, memory, toks, sampling.local)
            else:
                toks = redrawn
        payload = model.patch_payload(ws)
        for i, ((c, item), x) in enumerate(zip(group, at)):
            y = item.pos[1]
            c.pool.add(item.pos, payload if G == 1 else payload[:, :, i::G].clone(), c.plan.expiry(item.pos))
            c.frame[:, y * ph:(y + 1) * ph, x * pw:(x + 1) * pw] = toks[i * B:(i + 1) * B].view(B, ph, pw).cpu()
            c.made[y, x] = True
            c.done.add(item.step)
            self.stats.patches += 1
            if not item.known:
                self.stats.tokens += B * M
        for c in {id(c): c for c, _ in group}.values():
            c.drop_done()

    def check_change(self, old: SamplingConfig, new: SamplingConfig, conditioned: bool) -> None:
        """Raise ConfigError for a sampling a running stream cannot change to: one this engine cannot
        run, or one that turns classifier-free guidance on or off in a text-conditioned stream (its
        pool holds caches for the rows it had; the scale itself may change)."""
        self.check_settings(new)
        if conditioned and (old.guidance == 1.0) != (new.guidance == 1.0):
            raise bad("sampling.guidance", f"cannot turn classifier-free guidance {'on' if old.guidance == 1.0 else 'off'} "
                      f"in a running stream (it runs at {old.guidance}); change its scale, or start a new stream",
                      new.guidance)

    def _recache(self, cur: Tokens, ws: Workspace) -> None:
        """Recompute every cache in ``cur``'s pool under its text memory (a new prompt's), in plan order,
        from the tokens of its frame in ``cur.history``: each patch reads the recomputed caches of the
        patches drawn before it, as it did when it was drawn (caches already dropped from the pool stay
        dropped). The tokens do not change, only what the next frames read of them."""
        model, cfg = self.model, self.model.cfg
        ph, pw, M = cfg.patch_h, cfg.patch_w, model.M
        plan, pool, history, memory, batch, rows = cur.plan, cur.pool, cur.history, cur.memory, cur.batch, cur.rows
        old = pool.state()
        for pos in sorted(old, key=plan.step_of):
            f, y, x = pos
            step = plan.step_of(pos)
            tokens = history[f]  # (B, h, w)
            made = torch.tensor([[plan.step_of((f, r, c)) < step for c in range(plan.cols)]
                                 for r in range(plan.rows)])  # the frame's patches drawn before this one
            hints = model.hint_index(history.get(f - 1) if f else None, tokens, made, y, x, batch=batch)
            context = [(p, o) for q, p, o in pool.select(pos) if plan.step_of(q) < step]
            model.load_context(ws, [context], [adc.edges(y, x, plan.rows, plan.cols)],
                               [None if hints is None else hints.repeat(rows // batch, 1, 1)])
            toks = tokens[:, y * ph:(y + 1) * ph, x * pw:(x + 1) * pw].reshape(batch, M).to(self.device)
            model.prefill(ws, toks.repeat(rows // batch, 1), memory)
            pool.add(pos, model.patch_payload(ws), old[pos].expiry)

    def check_settings(self, sampling: SamplingConfig) -> None:
        """Raise ConfigError now for a sampling, precision, attention or native-step setting this engine
        cannot run; the streams call it before they return, so bad settings fail before any output
        is opened (the token generator itself would only find out at its first frame)."""
        self._draws(sampling)
        self._mixed()
        self._native()  # before the kernel's own checks: it names the setting that asks for sdpa
        self._attend()

    def _draws(self, sampling: SamplingConfig) -> int:
        if sampling.refine_borders is not None and not self.model.cfg.pnar:
            raise bad("sampling.refine_borders", "needs a model trained for P-NAR (its config's pnar is true)",
                      sampling.refine_borders)
        if sampling.local != "pnar":
            return 1
        if not self.model.cfg.pnar:
            raise bad("sampling.local", "'pnar' needs a model trained for P-NAR (its config's pnar is "
                      "true)", sampling.local)
        return sampling.pnar_steps

    def _mixed(self) -> bool:
        if self.precision not in PRECISIONS:
            raise bad("precision", f"must be one of {', '.join(PRECISIONS)}", self.precision)
        return self.precision == "mixed"

    def use_native_step(self, on: bool = True) -> None:
        """Run the decode step's layers in C++ (`native_step`), built now: ConfigError if it cannot be."""
        self.native_step = on
        self._native()

    def _native(self) -> bool:
        """Whether the decode step runs in C++; builds it on first use (ConfigError if it cannot)."""
        if not self.native_step:
            return False
        if self.attention != "sdpa":
            raise bad("native_step", "runs torch's attention kernels: it needs attention 'sdpa'", self.attention)
        from streamgen.model.native import module

        module()
        return True

    def _attend(self) -> Callable[..., Tensor]:
        if self.attention == "sdpa":
            return F.scaled_dot_product_attention
        if self.attention != "xformers":
            raise bad("attention", "must be 'sdpa' or 'xformers'", self.attention)
        try:
            import xformers.ops  # noqa: F401
        except ImportError:
            raise bad("attention", "'xformers' needs the xformers package (pip install streamgen[cuda])",
                      self.attention) from None
        if not _is_cuda(self.device):
            raise bad("attention", f"'xformers' needs a CUDA device; this engine runs on {self.device.type}",
                      self.attention)
        from streamgen.model import xformers_attention

        return xformers_attention

    def _text_memory(self, text: Tensor | None, mask: Tensor | None, batch: int,
                     guided: bool) -> TextMemory | None:
        model = self.model
        if model.cfg.text_dim is None:
            if text is not None:
                raise ConfigError("`text` is not accepted: this model has no text conditioning "
                                  "(its config's text_dim is None)")
            return None
        if text is None:
            return model.text_memory(None, batch=batch)
        text = text.to(self.device)
        if mask is None:
            mask = torch.ones(text.shape[:2], dtype=torch.bool, device=self.device)
        if guided:  # rows [cond; uncond]: the unconditional rows see only the null token
            text = torch.cat([text, text])
            mask = torch.cat([mask, torch.zeros_like(mask)])
        return model.text_memory(text, mask)

    def _decode_patch(self, ws: Workspace, memory: TextMemory | None, u: Tensor,
                      sampling: SamplingConfig, guided: bool, shown: Tensor | None = None) -> Tensor:
        """Tokens (B, M) int64 of one patch by the request's local decoder. The cache it leaves in
        ``ws`` is not whole until `_close_patch` (or the redraw, which rewrites it) finishes it.
        ``shown`` (B, M): the tokens whose place the previous frame shows (`draw_logits`)."""
        if sampling.local == "pnar":
            return self._decode_patch_pnar(ws, memory, u, sampling, guided, shown)
        model = self.model
        B, M = u.shape
        out = torch.empty(M, B, dtype=torch.long, device=self.device)
        tok = torch.full((ws.batch,), model.bos, dtype=torch.long, device=self.device)
        u = u.to(self.device).t().contiguous()  # (M, B): one row per step
        for m in range(M):
            logits = model.decode_step(ws, tok, m, memory)  # (rows, V)
            logits = draw_logits(logits, sampling, guided, None if shown is None else shown[:, m])
            nxt = sample(logits, u[m], sampling)  # (B,)
            out[m] = nxt
            tok = torch.cat([nxt, nxt]) if guided else nxt
        return out.t()

    def _close_patch(self, ws: Workspace, memory: TextMemory | None, toks: Tensor, local: str) -> None:
        """Finish the cache of a patch drawn as ``toks`` (B, M): the autoregressive decoder has fed all
        but the last token, the P-NAR decoder none of them."""
        rep = ws.batch // toks.shape[0]
        if local == "ar":
            self.model.complete(ws, toks[:, -1].repeat(rep), memory)
        else:
            self.model.prefill(ws, toks.repeat(rep, 1), memory)

    def _refine_borders(self, ws: Workspace, memory: TextMemory | None, group: list[tuple[Tokens, adc.Item]],
                        at: list[int], toks: Tensor, redraw: SamplingConfig, guided: bool,
                        shown: Tensor | None) -> Tensor | None:
        """Draw the tokens of the patches ``group`` just drew (``toks`` (G * B, M); ``at``: their columns
        in their cursors' `Tokens.made`) that lie along a border with a patch of their frame already
        made again, with ``redraw`` (the stream's sampling at the ``refine_borders`` temperature), in
        one P-NAR pass that sees the rest of the patch and its context; the workspace is left holding
        the whole cache of the final tokens. None when no token lies along such a border.

        The autoregressive decoder draws a patch's first column before the rest of the patch exists;
        this second draw sees both sides of the border (docs/experiments.md)."""
        model, cfg = self.model, self.model.cfg
        B, M = toks.shape
        border = torch.cat([adc.border_mask(c.made, it.pos[1], x, cfg.patch_h, cfg.patch_w)
                            .reshape(1, M).expand(c.batch, M) for (c, it), x in zip(group, at)]).to(self.device)
        if not border.any():
            return None
        rep = ws.batch // B
        u = torch.cat([patch_uniforms(c.seeds, it.pos, M, draw=1) for c, it in group])
        logits = model.pnar_logits(ws, toks.repeat(rep, 1), border.repeat(rep, 1), memory)
        logits = draw_logits(logits, redraw, guided, shown)
        cand = sample(logits.reshape(B * M, -1), u.reshape(-1).to(self.device), redraw).view(B, M)
        toks = torch.where(border, cand, toks)
        model.prefill(ws, toks.repeat(rep, 1), memory)
        return toks

    def _decode_patch_pnar(self, ws: Workspace, memory: TextMemory | None, u: Tensor,
                           sampling: SamplingConfig, guided: bool, shown: Tensor | None = None) -> Tensor:
        """P-NAR local decoding (MaskGIT's mask-predict): K passes over the whole patch.

        Pass k samples every still-masked token (uniforms u[:, k*M:(k+1)*M]) and keeps the most
        confident of them, so that M * cos(pi/2 * (k+1)/K) tokens stay masked (none after the last
        pass). `_close_patch` (or the redraw) then prefills the finished tokens autoregressively: the
        NCP gets the same kind of cache as from the autoregressive decoder, so both can be mixed
        within one stream.
        """
        model, K = self.model, sampling.pnar_steps
        B = u.shape[0]
        M = model.M
        rep = ws.batch // B
        u = u.to(self.device)
        toks = torch.zeros(B, M, dtype=torch.long, device=self.device)
        known = torch.zeros(B, M, dtype=torch.bool, device=self.device)
        for k in range(K):
            logits = model.pnar_logits(ws, toks.repeat(rep, 1), (~known).repeat(rep, 1), memory)
            logits = draw_logits(logits, sampling, guided, shown)
            flat = logits.reshape(B * M, -1)
            uk = u[:, k * M:(k + 1) * M].reshape(-1)
            if sampling.temperature:  # filter once; the confidences come from the same distribution
                flat = filter_logits(flat.float(), sampling)
                cand = sample(flat, uk, _UNFILTERED)
            else:
                cand = sample(flat, uk, sampling)
            logp = torch.log_softmax(flat, -1)
            conf = logp.gather(-1, cand[:, None]).view(B, M).masked_fill(known, float("inf"))
            still_masked = int(M * math.cos(math.pi / 2 * (k + 1) / K)) if k < K - 1 else 0
            keep = conf.topk(M - still_masked, dim=-1).indices
            now = torch.zeros_like(known).scatter_(1, keep, True)
            toks = torch.where(now & ~known, cand.view(B, M), toks)
            known = now
        return toks
