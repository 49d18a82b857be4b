"""Streams that change while they run: prompt schedules, plugin steering, and live `Stream.set`.

`Steering` decides, before each frame, whether the prompt or the sampling changes: from the job's
schedule (`Job.prompts`), from the task's own `Job.steer`, and from changes set from outside
(`Stream.set`, the command line's control channel), in that order, the last one winning. It keeps
what is in effect, which a snapshot records so that a resumed stream samples as it did.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from streamgen.config import SamplingConfig, parse
from streamgen.engine.core import Frame, StreamState, Update
from streamgen.errors import ConfigError, bad
from streamgen.plugins.task import check_prompt

if TYPE_CHECKING:
    from streamgen.engine.core import Cursor, Engine
    from streamgen.plugins.task import Job

def checked_prompt(prompt: Any, param: str = "prompt") -> str:
    """``prompt`` if it is one a task would take, else a `ConfigError` naming ``param``."""
    if not isinstance(prompt, str):
        raise bad(param, "must be a string", prompt)
    try:
        return check_prompt(prompt)
    except ValueError as exc:
        raise ConfigError(str(exc).replace("`prompt`", f"`{param}`")) from None


class Steering:
    """The conditioning of one running stream, frame by frame (`Engine.generate_tokens`' ``updates``)."""

    def __init__(self, engine: "Engine", job: "Job", sampling: SamplingConfig, *,
                 state: dict[str, Any] | None = None, recache: bool = False):
        self.engine, self.job, self.recache = engine, job, recache
        self.prompt: str | None = job.prompt
        self.sampling = sampling
        if state:  # a resumed stream: what was in effect when it stopped
            self.prompt = state.get("prompt", self.prompt)
            self.sampling = SamplingConfig(**state["sampling"]) if "sampling" in state else sampling
        self._pending: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.applied: list[tuple[int, dict[str, Any]]] = []  # (frame, change) in the order they took effect

    def text(self) -> tuple[Any, Any]:
        """Token states and mask of the prompt in effect, or (None, None) without one."""
        return self.engine.encode_text(self.prompt) if self.prompt is not None else (None, None)

    def state(self) -> dict[str, Any]:
        """What is in effect, for a snapshot."""
        return {"prompt": self.prompt, "sampling": self.sampling.model_dump(mode="json")}

    def set(self, *, prompt: str | None = None, sampling: dict[str, Any] | SamplingConfig | None = None,
            recache: bool | None = None) -> None:
        """Change the prompt or sampling fields from the next frame drawn; checked here, so a bad
        change raises `ConfigError` now and the stream goes on unchanged."""
        change: dict[str, Any] = {}
        if prompt is not None:
            if self.prompt is None:
                raise bad("prompt", "cannot be set: this stream has no text conditioning", prompt)
            change["prompt"] = checked_prompt(prompt)
        if sampling is not None:
            given = sampling.model_dump(include=sampling.model_fields_set) if isinstance(sampling, SamplingConfig) \
                else sampling
            if not isinstance(given, dict):
                raise bad("sampling", "must be an object of SamplingConfig fields", given)
            with self._lock:
                base = {**self.sampling.model_dump(), **self._pending.get("sampling", {})}
            new = parse(SamplingConfig, {**base, **given}, prefix="sampling")
            self.engine.check_change(self.sampling, new, self.prompt is not None)
            change["sampling"] = given
        if recache is not None:
            change["recache"] = bool(recache)
        with self._lock:
            for key, value in change.items():
                if key == "sampling":
                    self._pending["sampling"] = {**self._pending.get("sampling", {}), **value}
                else:
                    self._pending[key] = value

    def __call__(self, f: int) -> Update | None:
        """The change to apply before frame ``f`` is drawn, or None: the schedule's entry for ``f``, then
        the task's own steer, then what `set` asked for. What equals the setting in effect changes
        nothing (the schedule's frame 0 is the prompt a stream starts with); a stream resumed at ``f``
        applies the entry for ``f`` as the uninterrupted stream does."""
        change: dict[str, Any] = {}
        if f in self.job.prompts:
            change["prompt"] = self.job.prompts[f]
        if f > 0 and self.job.steer is not None:
            own = self.job.steer(f)
            if own:
                change.update(own)
        with self._lock:
            pending, self._pending = self._pending, {}
        if "sampling" in change and "sampling" in pending:
            pending = {**pending, "sampling": {**change["sampling"], **pending["sampling"]}}
        change.update(pending)
        return self._apply(f, change) if change else None

    def _apply(self, f: int, change: dict[str, Any]) -> Update | None:
        text = mask = sampling = None
        if "prompt" in change and change["prompt"] != self.prompt:
            self.prompt = change["prompt"]
            text, mask = self.engine.encode_text(self.prompt)
        if "sampling" in change:
            new = parse(SamplingConfig, {**self.sampling.model_dump(), **change["sampling"]}, prefix="sampling")
            if new != self.sampling:
                self.sampling = sampling = new
        recache = change.get("recache", self.recache)
        if "recache" in change:
            self.recache = bool(change["recache"])
        if text is None and sampling is None:
            return None
        self.applied.append((f, {k: v for k, v in change.items() if k != "recache"}))
        return Update(text=text, text_mask=mask, sampling=sampling, recache=recache and text is not None)


class Stream:
    """A running stream you can steer while you iterate it.

        stream = engine.open("t2v", prompt="a day sky over grassy hills", frames=None)
        for i, frame in enumerate(stream):
            if i == 32:
                stream.set(prompt="the same hills at night")   # from the next frame drawn
        stream.close()

    Nothing is computed ahead of what you take. `set` checks the change at once (a bad one raises
    `ConfigError` and the stream goes on as it was).
    """

    def __init__(self, engine: "Engine", cursor: "Cursor"):
        self.engine, self.cursor = engine, cursor
        self.steering: Steering = cursor.steering
        self.state: StreamState | None = None  # after the last frame taken: what a snapshot saves
        self.closed = False
        self.error: Exception | None = None  # what ended it, when its task raised in `Engine.step`

    def __iter__(self) -> "Stream":
        return self

    def __next__(self) -> np.ndarray:
        return self._next().pixels

    def _next(self) -> Frame:
        if self.closed or self.cursor.tokens.finished:
            self.close()
            raise StopIteration
        frame = self.engine._advance([self.cursor])[0]
        self.state = frame.state
        return frame

    def frames(self) -> Iterator[Frame]:
        """The same stream as `Frame` objects (pixels and the state after each frame)."""
        try:
            while True:
                try:
                    frame = self._next()
                except StopIteration:
                    return
                yield frame
        finally:
            self.close()

    def set(self, *, prompt: str | None = None, sampling: dict[str, Any] | None = None,
            recache: bool | None = None) -> None:
        self.steering.set(prompt=prompt, sampling=sampling, recache=recache)

    @property
    def prompt(self) -> str | None:
        return self.steering.prompt

    @property
    def sampling(self) -> SamplingConfig:
        return self.steering.sampling

    def fail(self, exc: Exception) -> None:
        self.error = exc
        self.close()

    def close(self) -> None:
        """Free the stream's pool and workspaces; it gives no more frames."""
        if not self.closed:
            self.closed = True
            self.cursor.close()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
