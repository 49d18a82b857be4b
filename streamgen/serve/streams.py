"""The streams of a server: what a client asks for, each live stream's state, and the limits.

`Streams` opens a stream on the scheduler's thread (validation, the task's job and the prompt's text
states touch the model's side), opens its outputs beside the event loop, and lets it join the
scheduler. Steering goes through the control channel's command checks
(`streamgen.cli.control.apply`), so the server and ``streamgen generate --control`` take the same
commands with the same messages. At shutdown every output is finished and every stream that made a
frame is saved to the state folder; `Streams.resume` brings them back.
"""
from __future__ import annotations

import asyncio
import secrets
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from streamgen.cli.control import apply
from streamgen.config import MIN_FPS, Strict
from streamgen.engine import snapshot as snap
from streamgen.engine.core import Engine, Frame, StreamState
from streamgen.engine.stream import Stream
from streamgen.engine.threads import ThreadTuner
from streamgen.errors import ConfigError, StreamgenError, bad, inside, one_line
from streamgen.output.canvas import is_tile_folder
from streamgen.output.join import segment_name
from streamgen.output.sinks import check_file_name, open_sink, redact
from streamgen.plugins import manager
from streamgen.plugins.registry import validate_request
from streamgen.plugins.task import TaskEnv
from streamgen.serve.outputs import Outputs
from streamgen.serve.scheduler import Scheduler
from streamgen.serve.video import Channel, LiveView

RUNNING = ("live",)
LIVE_VIEW = "the server's live view"


class NewStream(Strict):
    """The body of ``POST /streams``."""

    task: str = Field("t2v", description="task name (`streamgen tasks`)")
    request: dict[str, Any] = Field(default_factory=dict, description="the task's request: prompt, width, "
                                    "height, frames (null: endless), seed, sampling, ... as in "
                                    "`engine.open(task, request)`")
    output: str | None = Field(None, description="an rtmp:// or rtmps:// URL, a file name inside the server's "
                               "--output-dir (.mp4 .mkv .webm, or a numbered pattern like frames/%06d.png), "
                               "or nothing: the server's live view only (every stream has it)")
    fps: float = Field(8.0, ge=MIN_FPS, allow_inf_nan=False, description="frames per second, paced to the wall clock")
    reconnect: int = Field(0, ge=0, le=100, description="retries of a dropped RTMP push, with backoff")
    recache: bool = Field(False, description="a new prompt recomputes the cached context under it")


@dataclass(frozen=True)
class Limits:
    max_streams: int = 4
    max_width: int = 512
    max_height: int = 512
    max_fps: float = 30.0
    output_dir: Path | None = None


class TooMany(StreamgenError):
    """The server runs as many streams as it may."""


class NotFound(StreamgenError):
    """No stream has that id."""


class Live:
    """One stream of the server: the engine's `Stream`, its outputs, and what its status shows."""

    def __init__(self, id: str, spec: NewStream, stream: Stream, size: tuple[int, int], outputs: Outputs,
                 channel: Channel, first: int, shown_output: str | None, target: str | None = None):
        self.id, self.spec, self.stream, self.size = id, spec, stream, size
        self.target = target  # where its output writes (`Streams.target`)
        self.outputs, self.channel, self.shown_output = outputs, channel, shown_output
        self.state, self.error = "live", None
        self.first = first  # frames done before this server took it (a resumed stream)
        self.made = 0
        self.lag = self.max_lag = 0.0
        self.started = time.time()
        self._t0: float | None = None
        self._times: deque[float] = deque(maxlen=max(3, round(2 * spec.fps) + 1))
        self._leave: tuple[str, str | None] | None = None
        self._snapshot: Any = None  # a function saving a state, asked for by a command
        self._snapshot_lock = threading.Lock()  # asked on the event loop, taken on the scheduler's thread
        self.closed = threading.Event()

    # --- what the scheduler calls, on its thread ------------------------------------------------------
    def due(self) -> float:
        if self._t0 is None:
            self._t0 = time.monotonic()
        return self._t0 + self.made / self.spec.fps

    def ready(self) -> bool:
        return self.outputs.room()

    def took(self, frame: Frame, done: float) -> None:
        self.lag = max(0.0, done - self.due())
        self.max_lag = max(self.max_lag, self.lag)
        self.made += 1
        self._times.append(done)
        self.outputs.put(frame.pixels, frame.state.frames_done - 1, time.time())
        with self._snapshot_lock:
            save, self._snapshot = self._snapshot, None
        if save is not None:
            state = frame.state
            self.outputs.after_written(state.frames_done, lambda: save(state))

    def wants_to_leave(self) -> tuple[str, str | None] | None:
        if self._leave is not None:
            return self._leave
        if self.outputs.error is not None:
            return "failed", self.outputs.error
        return None

    def leave(self, state: str, error: str | None = None) -> None:
        self.state, self.error = state, error
        self.stream.close()
        self.outputs.close(wait=False)

    # --- what requests call, on the event loop ----------------------------------------------------------
    def stop(self) -> None:
        if self._leave is None:
            self._leave = ("stopped", None)

    def ask_snapshot(self, save: Any) -> str:
        with self._snapshot_lock:
            self._snapshot = save
        return "snapshot"

    @property
    def frames(self) -> int:
        return self.first + self.made

    def rate(self) -> float:
        """Frames per second over the last two seconds or so."""
        times = list(self._times)
        return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0

    def status(self) -> dict[str, Any]:
        rate = self.rate()
        w, h = self.size
        applied = [{"frame": f, **change} for f, change in self.stream.steering.applied[-20:]]
        return {"id": self.id, "task": self.spec.task, "state": self.state, "error": self.error,
                "prompt": self.stream.prompt, "sampling": self.stream.sampling.model_dump(mode="json"),
                "width": w, "height": h, "fps": self.spec.fps, "frames": self.frames,
                "frames_per_second": round(rate, 3), "lag": round(self.lag, 3), "max_lag": round(self.max_lag, 3),
                "outputs": [o for o in (self.shown_output, LIVE_VIEW) if o],
                "viewers": len(self.channel.viewers), "applied": applied, "started": self.started}


class Streams:
    """Every stream of one server, over one engine and one `Scheduler`."""

    def __init__(self, engine: Engine, limits: Limits, *, state_dir: Path | None = None,
                 log: Any = None, tuner: ThreadTuner | None = None, lanes: int = 1):
        self.engine, self.limits, self.state_dir = engine, limits, state_dir
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.scheduler = Scheduler(tuner, lanes=lanes)
        self.lives: dict[str, Live] = {}
        self.opening = 0
        self.reserved: set[str] = set()  # targets of streams being opened
        self.identity = engine.identity()
        self.saved = 0  # streams saved at shutdown
        self.loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.scheduler.start()

    # --- reading --------------------------------------------------------------------------------------
    def get(self, id: str) -> Live:
        try:
            return self.lives[id]
        except KeyError:
            raise NotFound(f"no stream {id!r} on this server") from None

    def running(self) -> int:
        return sum(live.state in RUNNING for live in self.lives.values())

    def load(self) -> dict[str, Any]:
        """What this server carries: running streams, their frames per second together, the worst lag,
        and how its last round ran: the worker thread's torch threads (null before the first round) and
        the lanes its streams were split into."""
        running = [live for live in self.lives.values() if live.state in RUNNING]
        return {"streams": len(running), "max_streams": self.limits.max_streams,
                "frames_per_second": round(sum(live.rate() for live in running), 3),
                "max_lag": round(max((live.lag for live in running), default=0.0), 3),
                "rounds": self.scheduler.rounds, "threads": self.scheduler.threads,
                "lanes": self.scheduler.lanes_used}

    # --- checks ---------------------------------------------------------------------------------------
    def check(self, spec: NewStream) -> str | None:
        """The server's limits and what may be written where, before any work; the output's target
        (`target`)."""
        lim = self.limits
        if self.running() + self.opening >= lim.max_streams:
            raise TooMany(f"`streams` must be at most {lim.max_streams} at once on this server (--max-streams), "
                          f"but got one more: stop one first")
        if spec.fps > lim.max_fps:
            raise bad("fps", f"must be at most {lim.max_fps:g} on this server (--max-fps)", spec.fps)
        task = manager().tasks.get(spec.task)
        req = validate_request(task, spec.request)  # the task's own messages, before the worker's turn
        self.check_canvas(getattr(req, "width", None), getattr(req, "height", None))
        return self.target(spec.output, video=task.output == "video" and getattr(req, "frames", None) != 1)

    def check_canvas(self, width: int | None, height: int | None) -> None:
        lim = self.limits
        if width is not None and width > lim.max_width:
            raise bad("request.width", f"must be at most {lim.max_width} on this server (--max-size)", width)
        if height is not None and height > lim.max_height:
            raise bad("request.height", f"must be at most {lim.max_height} on this server (--max-size)", height)

    def target(self, output: str | None, video: bool = True) -> str | None:
        """Where ``output`` writes: an RTMP URL as it is, a file (or a tile folder, ending in /) inside
        the output folder as a full path, None for the live view alone; anything else, a single PNG
        for a ``video``, or a target another stream writes or is opening, a `ConfigError` naming
        ``output`` as the client wrote it (never the server's own paths)."""
        if output is None:
            return None
        if "://" in output:
            scheme = output.split("://", 1)[0].lower()
            if scheme not in ("rtmp", "rtmps"):
                raise bad("output", "must be an rtmp:// or rtmps:// URL, a file name inside the server's "
                          "output folder, or nothing (the live view)", redact(output))
            return self._free(output, redact(output))
        folder = self.limits.output_dir
        if folder is None:
            raise bad("output", "must be an rtmp:// URL or nothing: this server writes no files (start it "
                      "with --output-dir DIR)", output)
        where = inside(folder, output, "output", "output")
        if is_tile_folder(output):
            return self._free(f"{where}/", output)
        check_file_name(output, video=video)
        if not where.parent.is_dir():
            raise bad("output", "must be in an existing folder inside the server's output folder", output)
        return self._free(str(where), output)

    def _free(self, target: str, shown: str) -> str:
        # a stream that has left may still be finishing its file: the target is busy until it is closed
        busy = [live.id for live in self.lives.values() if live.target == target and not live.closed.is_set()]
        if busy or target in self.reserved:
            raise bad("output", f"is being written by stream {busy[0] if busy else 'being opened'}", shown)
        return target

    # --- changing -------------------------------------------------------------------------------------
    async def create(self, spec: NewStream, *, id: str | None = None, resume: StreamState | None = None) -> Live:
        """Open a stream and let it join the scheduler; a `StreamgenError` says why not."""
        target = self.check(spec)
        self.opening += 1
        if target is not None:  # checked and reserved in one step of the event loop: no other
            self.reserved.add(target)  # request can take it while this one opens
        try:
            return await self._create(spec, id or secrets.token_hex(4), resume, target)
        finally:
            self.opening -= 1
            self.reserved.discard(target)

    async def _create(self, spec: NewStream, id: str, resume: StreamState | None, target: str | None) -> Live:
        stream, size = await asyncio.wrap_future(self.scheduler.call(lambda: self._open(spec, resume)))
        first = resume.frames_done if resume is not None else 0
        channel = Channel(self.loop)
        sinks: list[Any] = []
        try:
            sinks = await asyncio.to_thread(self._sinks, spec, target, size, first)
            view = LiveView(fps=spec.fps, size=size, publish=channel.publish)
        except BaseException:
            for sink in sinks:  # a file or RTMP push opened before the live view failed
                try:
                    sink.close()
                except Exception:
                    pass
            stream.close()
            raise
        live: Live | None = None

        def closed() -> None:
            channel.end({"state": live.state, "error": live.error} if live else {})
            live.closed.set()

        outputs = Outputs(sinks, view, name=id, on_closed=closed, first=first)
        live = Live(id, spec, stream, size, outputs, channel, first,
                    redact(spec.output) if spec.output else None, target)
        try:
            await asyncio.wrap_future(self.scheduler.call(lambda: self.scheduler.add(live)))
        except BaseException:  # the server is stopping: this stream never ran
            live.leave("failed", "the server is stopping")
            raise
        self.lives[id] = live
        return live

    def _open(self, spec: NewStream, resume: StreamState | None) -> tuple[Stream, tuple[int, int]]:
        """On the scheduler's thread: the engine's stream, and its frames' (width, height)."""
        stream = self.engine.open(spec.task, spec.request, resume=resume, recache=spec.recache)
        plan = stream.steering.job.plan
        ph, pw = TaskEnv(self.engine).patch_pixels
        size = (plan.cols * pw, plan.rows * ph)
        try:
            self.check_canvas(*size)
        except ConfigError:
            stream.close()
            raise
        return stream, size

    @staticmethod
    def _sinks(spec: NewStream, target: str | None, size: tuple[int, int], first: int) -> list[Any]:
        if target is None:
            return []
        options: dict[str, Any] = {"size": size}
        if "://" in target:
            options.update(reconnect=spec.reconnect, start=first)
        elif "%" in target:
            options["start"] = first
        elif first:
            target = segment_name(target, first)  # a resumed file stream writes its next segment
        return [open_sink(target, fps=spec.fps, **options)]

    def command(self, live: Live, command: Any) -> str:
        """A control command (`streamgen.cli.control.apply`) for a running stream."""
        if live.state not in RUNNING:
            raise bad("stream", "must be running to take commands", f"{live.id} ({live.state})")
        return apply(command, steer=live.stream.set, snapshot=(lambda: live.ask_snapshot(self._saver(live)))
                     if self.state_dir else None, stop=live.stop, snapshot_needs="a server started with --state-dir")

    def _saver(self, live: Live) -> Any:
        path = self.state_dir / f"{live.id}.snap"
        meta = {"serve": {"id": live.id, "spec": live.spec.model_dump(mode="json")}, "identity": self.identity}
        return lambda state: snap.save(path, state, meta)

    async def delete(self, live: Live) -> dict[str, Any]:
        """Stop ``live`` (its outputs finished) and forget it, snapshot and all."""
        live.stop()
        self.scheduler.wake()
        if live.state in RUNNING or not live.closed.is_set():
            await asyncio.to_thread(live.closed.wait, 60)
        self.lives.pop(live.id, None)
        if self.state_dir is not None:
            (self.state_dir / f"{live.id}.snap").unlink(missing_ok=True)
        return live.status()

    # --- stopping and starting again --------------------------------------------------------------------
    def shutdown(self) -> None:
        """Finish every output and save every running stream that made a frame to the state folder."""
        self.scheduler.stop(self._finish)

    def _finish(self, members: list[Any]) -> None:
        """On the scheduler's thread at shutdown: every output finished, then each running stream saved
        at its last frame if its outputs hold that frame; one line each, and `saved` counts them."""
        for live in members:
            live.leave("stopped")
        self.saved = 0
        for live in members:
            live.closed.wait(60)
            state = live.stream.state
            if self.state_dir is None:
                continue
            why = ("had made no frame" if state is None else
                   "its outputs did not finish within 60 s" if not live.closed.is_set() else
                   f"its output failed ({live.outputs.error})" if live.outputs.error else None)
            if why is None:
                try:
                    self._saver(live)(state)
                except StreamgenError as exc:
                    why = one_line(exc)
            if why is not None:
                self.log(f"streamgen: serve: stream {live.id} not saved: {why}")
                continue
            self.saved += 1
            self.log(f"streamgen: serve: stream {live.id} saved at frame {state.frames_done} "
                     f"({live.shown_output or LIVE_VIEW})")
        if self.state_dir is not None:  # streams that ended or failed do not come back
            for live in self.lives.values():
                if live not in members:
                    (self.state_dir / f"{live.id}.snap").unlink(missing_ok=True)

    async def resume(self, folder: Path) -> None:
        """Bring back every stream saved in ``folder``; one that cannot come back says why in one line."""
        for path in sorted(folder.glob("*.snap")):
            try:
                state, info = snap.load(path)
                snap.check_identity(info, self.identity, path)
                saved = info.get("serve")
                if not saved:
                    raise bad("resume", "must hold snapshots saved by `streamgen serve`; this one was saved by "
                              "`streamgen generate` (continue it with `streamgen generate --resume`)", path.name)
                spec = NewStream.model_validate(saved.get("spec"))
                live = await self.create(spec, id=saved.get("id"), resume=state)
                self.log(f"streamgen: serve: stream {live.id} resumed at frame {state.frames_done}")
            except (StreamgenError, ValueError) as exc:
                self.log(f"streamgen: serve: cannot resume {path.name}: {one_line(exc)}")
