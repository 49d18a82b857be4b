"""`streamgen generate`: a task's frames, encoded live into a file, a pipe or an RTMP server.

Stopping: SIGINT, SIGTERM and SIGHUP end the stream before the next frame; the output is closed
(complete and readable), the snapshot (with ``--snapshot``) is saved at the last frame written, one
line goes to stderr and the exit code is 128 + the signal's number (130, 143, 129). A second signal
during that shutdown exits at once with the same code; the output stays readable up to its newest
written frame, since it is written crash-safe (see `streamgen.output.sinks`).

Snapshots count only frames the output already holds: a state at a multiple of ``--snapshot-every``
is saved once the sink says those frames are written out and synced, and every such frame is
encoded as a keyframe, so a resumed segment joins the first one there (``streamgen join``).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from streamgen.config import MIN_FPS, Extent, SamplingConfig, Strict, parse
from streamgen.errors import ConfigError, StreamgenError, bad
from streamgen.progress import Progress


class GenerateConfig(Strict):
    task: str = Field("t2v", description="task name (see `streamgen tasks`)")
    prompt: str | None = Field(None, description="text for t2i and t2v")
    prompts: dict[int, str] = Field(default_factory=dict, description="a storyboard: the prompt from each of "
                                    "these frames on (t2v; `--prompt-at 64=TEXT`, repeatable)")
    frames: int | None = Field(16, ge=1, description="frames; None (or 'inf' on the command line) is endless")
    size: str | None = Field(None, description="WxH in pixels; default: the task's (128x128), or the input "
                             "image's size for tasks that take it from their image (ia); a width of 'inf' "
                             "(infx128) is an endless canvas (uig, t2i), into a tile folder or a --scroll video")
    fps: float = Field(8.0, ge=MIN_FPS, le=240, allow_inf_nan=False, description="output frame rate")
    seed: int = Field(0, ge=0, lt=1 << 62, description="same seed, same frames")
    order: str | None = Field(None, description="ADC order inside frames: omega, omega*, zeta, zeta*")
    image: str | None = Field(None, description="input image file for io and ia")
    top: int | None = Field(None, description="io: pixel row of the image in the canvas; default centred")
    left: int | None = Field(None, description="io: pixel column of the image in the canvas; default centred")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig,
                                     description="the fields given are laid over the model's preset "
                                     "(`Engine.preset`): top-k 64 and classifier-free guidance 3 "
                                     "(`DEFAULT_SAMPLING`), with the model folder's own fields over that; "
                                     "what `streamgen eval` measures")
    extent: Extent | None = Field(None, description="NCP window; at most the model's")
    request: dict[str, Any] = Field(default_factory=dict, description="further fields of the task's "
                                    "request, for tasks with options of their own (request.images=[...])")
    output: str = Field("out.mp4", description="file (.mp4 .mkv .webm; .png for images, frames/%06d.png "
                        "for numbered frames), '-' for MPEG-TS on stdout, an rtmp(s):// URL, or a folder "
                        "ending in / for an image as PNG tiles (any width) with index.json")
    scroll: int | None = Field(None, ge=1, le=4096, description="image tasks into a video output: each frame "
                               "shows a --view px wide window this many px further along the canvas, as "
                               "the canvas is generated (a panorama of any width, also live)")
    view: int | None = Field(None, ge=2, le=8192, multiple_of=2, description="width of a --scroll video's "
                             "frames in px; default twice the canvas's height")
    realtime: bool = Field(False, description="release frames on the wall clock at --fps")
    fixed_threads: bool = Field(False, description="keep torch's thread count; by default a --realtime stream "
                                "moves between that count and one thread, whichever makes frames faster "
                                "now (beside a busy core, two threads stall)")
    reconnect: int = Field(0, ge=0, le=100, description="retries of a dropped RTMP push, with backoff")
    gop: int | None = Field(None, ge=1, description="keyframe interval in frames (files, pipes and RTMP; "
                            "default one second): a killed process loses at most this many frames "
                            "of an .mp4 beyond the encoder's delay")
    x264_preset: str = Field("veryfast", pattern="^(ultrafast|superfast|veryfast|faster|fast|medium|slow)$",
                             description="H.264 speed preset of pipes and RTMP")
    x264_tune: str = Field("zerolatency", pattern="^(zerolatency|film|animation|grain|stillimage|none)$",
                           description="H.264 tuning of pipes and RTMP; zerolatency for live")
    buffer: int = Field(8, ge=1, le=1000, description="frames generated ahead in realtime mode")
    model: str | None = Field(None, description="model folder, or 'tiny'; omit it for the shipped model")
    attention: Literal["sdpa", "xformers"] = Field("sdpa", description="attention kernel; 'xformers' needs "
                                                   "CUDA and the xformers package (untested by this project)")
    precision: Literal["fp32", "mixed"] = Field("fp32", description="'mixed': bfloat16 attention and "
                                                "whole-patch matmuls where this CPU runs them faster")
    native_step: bool = Field(False, description="run the decode step's layers in C++ (built on first use; "
                              "needs a C++ compiler and ninja): the same frames")
    snapshot: str | None = Field(None, description="file the stream's state is saved to")
    snapshot_every: int = Field(100, ge=1, description="frames between snapshots")
    resume: str | None = Field(None, description="snapshot to continue from")
    control: str | None = Field(None, description="steer the running stream with JSON lines (`prompt`, "
                                "`sampling`, `snapshot`, `stop`) from this FIFO, created if missing, or - "
                                "for standard input; each is answered on stderr")
    recache: bool = Field(False, description="a new prompt recomputes the cached context under it, instead "
                          "of keeping the caches the frames before it made")

    @field_validator("frames", mode="before")
    @classmethod
    def _inf(cls, v: Any) -> Any:
        if isinstance(v, str) and v.strip().lower() in ("inf", "infinite", "none"):
            return None
        return v

    @field_validator("size")
    @classmethod
    def _size(cls, v: str | None) -> str | None:
        if v is None:
            return v
        w, sep, h = v.lower().partition("x")
        if not sep or not all(p.isdigit() and int(p) > 0 for p in ((h,) if w == "inf" else (w, h))):
            raise bad("size", "must look like WxH with positive integers, e.g. 128x128 (or infx128 for an "
                      "endless canvas)", v)
        return v

    @property
    def endless(self) -> bool:
        """``--size infxH``: a canvas with no right edge."""
        return self.size is not None and self.size.lower().startswith("inf")

    @property
    def width_height(self) -> tuple[int | None, int] | None:
        """(W, H) of ``size``; W None for an endless canvas."""
        if self.size is None:
            return None
        w, h = self.size.lower().split("x")
        return (None if w == "inf" else int(w)), int(h)


def request_for(cfg: GenerateConfig, task: Any) -> dict[str, Any]:
    """The task request: only the fields the task's request model has."""
    fields = task.Request.model_fields
    w, h = cfg.width_height or (None, None)  # None: the task's own default
    req: dict[str, Any] = {"seed": cfg.seed, "sampling": cfg.sampling.model_dump()}  # resolved by generate()
    if cfg.extent is not None:
        req["extent"] = cfg.extent.model_dump()
    wanted = {"height": h, "width": w, "prompt": cfg.prompt, "frames": cfg.frames, "order": cfg.order,
              "image": cfg.image, "top": cfg.top, "left": cfg.left, "prompts": cfg.prompts or None}
    for key, value in wanted.items():
        if key in fields and (value is not None or key == "frames"):
            req[key] = value
    if cfg.endless:
        _check_endless(cfg, task)
        req["endless"] = True
    for key in ("prompt", "image", "prompts", "top", "left", "order"):
        if getattr(cfg, key) not in (None, {}) and key not in fields:
            raise ConfigError(f"`{key}` is not used by task {task.name!r}, but got {getattr(cfg, key)!r}")
    if "sampling" in cfg.request:  # it would bypass the model's preset and the snapshot's record
        raise ConfigError(f"`request.sampling` must be given as `sampling` (laid over the model's preset), "
                          f"not inside `request`, but got {cfg.request['sampling']!r}")
    req.update(cfg.request)  # validated by the task's own request model, which forbids unknown keys
    return req


def _check_endless(cfg: GenerateConfig, task: Any) -> None:
    if "endless" not in task.Request.model_fields:
        raise bad("size", f"an endless width is for tasks with endless canvases (uig, t2i); task {task.name!r} "
                  f"has none", cfg.size)


def _canvas_size(cfg: GenerateConfig, task: Any) -> tuple[int | None, int] | None:
    """(W, H) of the task's frames, when known before the first frame; W None for an endless canvas."""
    if cfg.width_height is not None:
        return cfg.width_height
    fields = task.Request.model_fields
    if "height" not in fields or fields["height"].default is None:
        return None
    return fields["width"].default, fields["height"].default


def _output_size(cfg: GenerateConfig, task: Any) -> tuple[int, int] | None:
    """(W, H) of what the sink gets, when known before the first frame (then the sink opens at once):
    a --scroll video's window, or the frames."""
    from streamgen.output.canvas import view_width

    size = _canvas_size(cfg, task)
    if cfg.scroll is None or size is None:
        return size
    return view_width(cfg.view, *size[::-1]), size[1]


def check_canvas_output(cfg: GenerateConfig, task: Any) -> bool:
    """Whether the task's image goes out strip by strip (a tile folder, a --scroll video); raises
    ConfigError for an output that cannot take the request, before any work."""
    from streamgen.output.canvas import is_tile_folder
    from streamgen.output.sinks import check_output, check_png

    size, output = _canvas_size(cfg, task), cfg.output
    strips = is_tile_folder(output) or cfg.scroll is not None
    check_output(output, video=task.output == "video" and cfg.frames != 1)
    if cfg.endless:
        _check_endless(cfg, task)
        if not strips:
            raise bad("size", "an endless canvas goes strip by strip: into a tile folder (-o DIR/) or a "
                      "--scroll video", cfg.size)
    if size is not None and size[0] is not None and output.lower().endswith(".png"):
        check_png(size, output)
    if not strips:
        return False
    if task.output != "image":
        raise bad("scroll" if cfg.scroll else "output", f"is for image tasks (a canvas strip by strip); task "
                  f"{task.name!r} makes a video", cfg.scroll or output)
    if cfg.scroll is not None and (is_tile_folder(output) or output.lower().endswith(".png")):
        raise bad("scroll", "needs a video output (.mp4 .mkv .webm, - or rtmp://)", output)
    if cfg.scroll is not None and (cfg.order or "omega") != "omega":
        raise bad("order", "must be omega (columns from the left) for a --scroll video", cfg.order)
    if cfg.snapshot or cfg.resume:
        raise bad("snapshot", "is for videos and frames: a canvas written strip by strip starts over",
                  cfg.snapshot or cfg.resume)
    if cfg.control:
        raise bad("control", "steers videos: a canvas written strip by strip takes no commands", cfg.control)
    return True


SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")


class Stopped(BaseException):
    """A stop signal before frames flow (loading, opening the output): nothing to finish."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class StopSignals:
    """SIGINT, SIGTERM and SIGHUP all stop a stream the same way: the first one ends generation
    before the next frame, and the outputs are closed and the snapshot saved as at the end of the
    stream; the exit code is 128 + the signal's number. A second one during that shutdown exits at
    once: the outputs are written crash-safe, so what is on disk stays readable."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.asked: str | None = None  # who asked to stop without a signal (the control channel)
        self.flowing = False  # frames are being made: a signal asks to stop instead of raising
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():  # handlers only work there
            for name in SIGNALS:
                num = getattr(signal, name, None)
                if num is not None:
                    self._old[num] = signal.signal(num, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        import signal

        for num, old in self._old.items():
            signal.signal(num, old)

    @property
    def name(self) -> str:
        import signal

        return signal.Signals(self.signum).name if self.signum is not None else (self.asked or "")

    def ask(self, who: str) -> None:
        """Stop as a signal would, but as a normal end (exit code 0)."""
        self.asked = who

    @property
    def code(self) -> int:
        return 128 + self.signum if self.signum is not None else 0

    def __call__(self) -> bool:
        return self.signum is not None or self.asked is not None

    def _handle(self, signum: int, _frame: Any) -> None:
        import os
        import signal

        if self.signum is not None:
            try:
                os.write(2, f"streamgen: {signal.Signals(signum).name} again: exiting at once\n".encode())
            except OSError:
                pass
            os._exit(128 + signum)
        self.signum = signum
        if not self.flowing:
            raise Stopped(signum)


def generate(cfg: GenerateConfig) -> int:
    """Run a stream to its end, or until SIGINT, SIGTERM or SIGHUP (exit code 128 + the signal's
    number: 130, 143, 129)."""
    with StopSignals() as stop:
        try:
            return _generate(cfg, stop)
        except Stopped as exc:
            name = stop.name or str(exc.signum)
            print(f"streamgen: stopped by {name} before the first frame", file=sys.stderr)
            return 128 + exc.signum


# what a resumed stream may take from the command that resumes it: where and how its output goes
# and how it is saved and steered from here on; the rest is the snapshot's, so the frames go on as made
RESUME_OPTIONS = frozenset({"resume", "output", "snapshot", "snapshot_every", "realtime", "reconnect", "gop",
                            "x264_preset", "x264_tune", "buffer", "control", "fixed_threads",
                            "native_step"})


def resumed_config(cfg: GenerateConfig, info: dict[str, Any]) -> GenerateConfig:
    """The snapshot's request with the options ``cfg`` gives of `RESUME_OPTIONS`; ConfigError for a
    given option that would change the frames."""
    from streamgen.engine.snapshot import SnapshotError

    if "request" not in info:
        raise SnapshotError(f"`--resume` snapshot {cfg.resume!r} was saved by `streamgen serve`: continue it "
                            "with `streamgen serve --resume` and the folder it is in")
    saved = parse(GenerateConfig, info["request"], prefix="snapshot request")
    for key in sorted(cfg.model_fields_set - RESUME_OPTIONS):
        given, kept = getattr(cfg, key), getattr(saved, key)
        if key == "sampling":  # the snapshot holds the whole sampling; the command, the fields it sets
            given = parse(SamplingConfig, {**kept.model_dump(), **given.model_dump(exclude_unset=True)})
        if given != kept:
            raise bad(key, f"is the snapshot's when resuming ({kept!r}), so the stream goes on as it was made; "
                      f"leave it out or start a new stream", getattr(cfg, key))
    return saved.model_copy(update={k: getattr(cfg, k) for k in cfg.model_fields_set & RESUME_OPTIONS})


def _generate(cfg: GenerateConfig, stop: StopSignals) -> int:
    from streamgen.engine import snapshot as snap
    from streamgen.bundle import load
    from streamgen.output.live import pump
    from streamgen.plugins import manager
    from streamgen.output.sinks import SinkClosed, open_sink, redact

    resume = None
    output = cfg.output
    if cfg.resume:
        resume, info = snap.load(cfg.resume)
        cfg = resumed_config(cfg, info)
        from streamgen.output.join import segment_name

        output = segment_name(cfg.output, resume.frames_done)
        # a pipe's reader needs it to name what it saves for `streamgen join` (NAME.fromNNNNNN.ts)
        print(f"streamgen: resuming at frame {resume.frames_done} into "
              f"{'standard output' if output == '-' else redact(output)}", file=sys.stderr)
    task = manager().tasks.get(cfg.task)
    strips = check_canvas_output(cfg, task)
    engine = load(cfg.model)
    engine.precision, engine.attention, engine.native_step = cfg.precision, cfg.attention, cfg.native_step
    # from here on cfg holds the whole sampling, and so does a snapshot's copy of it: a resumed stream
    # samples as it did, whatever the preset then is
    cfg = cfg.model_copy(update={"sampling": engine.sampling_for(cfg.sampling)})
    if resume is not None:
        snap.check_identity(info, engine.identity(), cfg.resume)
        if cfg.frames is not None and resume.frames_done >= cfg.frames:
            print(f"streamgen: the snapshot is at frame {resume.frames_done}: nothing left to do",
                  file=sys.stderr)
            return 0
    if strips:  # validated here too
        from streamgen.output.canvas import scroll

        frames = engine.strips(task, request_for(cfg, task))
        if cfg.scroll is not None:
            frames = scroll(frames, cfg.view, cfg.scroll)
    else:
        stream = engine.open(task, request_for(cfg, task), resume=resume, recache=cfg.recache)  # validates first
        frames = stream.frames()
    if cfg.realtime and not cfg.fixed_threads:
        import torch

        from streamgen.engine.threads import tune_threads

        frames = tune_threads(frames, torch.get_num_threads())
    options: dict[str, Any] = {"reconnect": cfg.reconnect} if "://" in output else {}
    if cfg.gop:
        options["gop"] = cfg.gop
    if output == "-" or "://" in output:
        options.update(preset=cfg.x264_preset, tune=cfg.x264_tune)
    if resume is not None and ("%" in output or "://" in output):
        options["start"] = resume.frames_done
    base = resume.frames_done if resume is not None else 0
    if cfg.snapshot:
        # every frame a snapshot may name starts a GOP, so a stream resumed there joins up cleanly
        options.update(keyframe_every=cfg.snapshot_every, first_frame=base)
    snap_now: list[bool] = []  # a control command's snapshot, taken at the next frame
    control = None
    if cfg.control:  # a bad path is refused before the output exists
        from streamgen.cli.control import Control

        from tqdm import tqdm

        control = Control(cfg.control, steer=stream.set, snapshot=(lambda: snap_now.append(True) or "snapshot")
                          if cfg.snapshot else None, stop=lambda: stop.ask("a control command"),
                          say=lambda line: tqdm.write(line, file=sys.stderr))
    stop.flowing = True  # from here a signal closes the output properly: it only asks to stop
    try:
        sink = open_sink(output, fps=cfg.fps, size=_output_size(cfg, task), **options)
    except BaseException:
        if control is not None:  # the FIFO it made goes with the failed output
            control.close()
        raise
    if control is not None:
        control.start()
    total = None if strips else cfg.frames if task.output == "video" else 1
    unit = "strips" if strips and cfg.scroll is None else "frames"
    bar = Progress(total, unit)
    meta = {"request": cfg.model_dump(mode="json", exclude={"resume"}), "identity": engine.identity()}
    # states at multiples of --snapshot-every whose frames may still be in the encoder or the muxer:
    # one is saved once the output holds every frame it counts, so "done" in a snapshot is true
    pending: dict[int, Any] = {}
    last: list[Any] = []
    saved: list[int] = []

    def save_durable() -> None:
        # a sink that cannot tell (RTMP, a plugin's) counts what it was given
        done = base + getattr(sink, "durable", (last[0].frames_done - base) if last else 0)
        ready = [k for k in pending if k <= done]
        if not ready:
            return
        newest = max(ready)
        sync = getattr(sink, "sync", None)
        if sync is not None:
            sync()
        snap.save(cfg.snapshot, pending[newest], meta)
        saved[:] = [newest]
        for k in ready:
            del pending[k]

    def written(frame) -> None:
        last[:] = [frame.state]
        if cfg.snapshot:
            if frame.state.frames_done % cfg.snapshot_every == 0 or snap_now:
                pending[frame.state.frames_done] = frame.state
                snap_now.clear()
            save_durable()

    def report(stats) -> None:
        s = engine.stats
        done = stats.frames + (resume.frames_done if resume is not None else 0)
        bar.goto(done, fps=stats.frames / max(stats.seconds, 1e-9),
                   tok_s=s.tokens / max(s.seconds, 1e-9))

    closed = closing = False
    try:
        pump(frames, sink, fps=cfg.fps, realtime=cfg.realtime, buffer=cfg.buffer, report=report,
             written=None if strips else written, stop=stop)
        closing = True
        sink.close()
        closed = True
    except SinkClosed:
        bar.close()
        raise
    except BaseException:
        if not closing:  # a close that failed is not tried again: the output may lack frames
            try:
                sink.close()
                closed = True
            except StreamgenError:
                pass
        raise
    finally:
        bar.close()  # before anything else is printed: an error's one line then stands on its own line
        frames.close()
        if control is not None:
            control.close()
        if closed and cfg.snapshot and last:
            # a closed output holds every frame: the newest state continues the stream with no overlap
            pending[last[0].frames_done] = last[0]
            save_durable()
    bar.close()
    done = last[0].frames_done if last else base + (bar.n if strips else 0)
    if stop() and (total is None or done < total):
        where = f"; snapshot {cfg.snapshot} at frame {saved[0]}" if saved else ""
        print(f"streamgen: stopped by {stop.name} after {done} {unit}; {redact(output)} is complete{where}",
              file=sys.stderr)
        return stop.code
    made = f"{bar.n} {unit}" if strips else f"{engine.stats.frames} frames"
    print(f"streamgen: {made}, {engine.stats.tokens} tokens in "
          f"{engine.stats.seconds:.1f} s; encoding took {getattr(sink, 'seconds', 0.0):.2f} s", file=sys.stderr)
    return 0
