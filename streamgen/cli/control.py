"""The live control channel of `streamgen generate --control PATH` (or ``-`` for standard input).

Each line is one JSON object, a command for the running stream:

    {"prompt": "the same hills at night"}         the prompt from the next frame drawn
    {"sampling": {"temperature": 0.8}}            sampling fields laid over what is in effect
    {"prompt": "...", "sampling": {...}}          both at once
    {"snapshot": true}                            save a snapshot (needs --snapshot) once the frames are written
    {"stop": true}                                end the stream after the frame being drawn

Every command is checked like the command line's options and answered on standard error with one
line, ``streamgen: control: ok ...`` or ``streamgen: control: error: ...``; a bad command never stops
the stream. PATH is a FIFO: created when it does not exist (and removed at the end), or an existing
one; it is reopened whenever a writer closes it, so ``echo '{"prompt": "..."}' > PATH`` works any
number of times.
"""
from __future__ import annotations

import json
import os
import stat
import sys
import threading
from pathlib import Path
from typing import Any, Callable

from streamgen.errors import StreamgenError, bad, one_line

COMMANDS = ("prompt", "sampling", "snapshot", "stop")


class Control:
    """Reads commands on a daemon thread and applies them through ``steer`` (`Stream.set`'s keywords),
    ``snapshot()`` and ``stop()``; answers each with one line through ``say`` (stderr by default; the
    command line passes its progress bar's writer, so answers never land inside the bar's line)."""

    def __init__(self, path: str, *, steer: Callable[..., None], snapshot: Callable[[], str] | None,
                 stop: Callable[[], None], say: Callable[[str], None] | None = None):
        self.path, self.steer, self.snapshot, self.stop = path, steer, snapshot, stop
        self.say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self.made_fifo = False
        self._lock = threading.Lock()
        if path != "-":
            p = Path(path)
            if not p.exists():
                if not p.parent.is_dir():
                    raise bad("control", "must be a FIFO, or a path in an existing folder to create one at", path)
                os.mkfifo(p)
                self.made_fifo = True
            elif not stat.S_ISFIFO(p.stat().st_mode):
                raise bad("control", "must be a FIFO (or a path where none exists yet, to create one), or - "
                          "for standard input", path)
        self.thread = threading.Thread(target=self._run, name="streamgen-control", daemon=True)

    def start(self) -> "Control":
        self.thread.start()
        return self

    def close(self) -> None:
        if self.made_fifo:
            Path(self.path).unlink(missing_ok=True)

    def _say(self, line: str) -> None:
        with self._lock:
            try:
                self.say(f"streamgen: control: {line}")
            except (OSError, ValueError):
                pass

    def _run(self) -> None:
        while True:
            try:
                src = sys.stdin if self.path == "-" else open(self.path, encoding="utf-8", errors="replace")
            except OSError:
                return  # the FIFO is gone: the stream has ended
            with src if self.path != "-" else _Keep(src):
                for line in src:
                    if line.strip():
                        self.handle(line)
            if self.path == "-":
                return  # standard input closed: no more commands

    def handle(self, line: str) -> None:
        """Apply one command line and answer it; never raises, so the channel outlives any line."""
        try:
            command = json.loads(line)
        except json.JSONDecodeError as exc:
            self._say(f"error: a command must be one JSON object per line, but got {line.strip()[:80]!r} ({exc.msg})")
            return
        except (RecursionError, ValueError) as exc:  # nested too deeply, a number too long
            self._say(f"error: a command must be one JSON object per line, but got {line.strip()[:80]!r} "
                      f"({type(exc).__name__})")
            return
        try:
            self._say("ok " + self.apply(command))
        except StreamgenError as exc:
            self._say(f"error: {exc}")
        except Exception as exc:  # a plugin's steering that broke: said, and the channel goes on
            self._say(f"error: the command failed: {one_line(exc)}")

    def apply(self, command: Any) -> str:
        return apply(command, steer=self.steer, snapshot=self.snapshot, stop=self.stop)


def apply(command: Any, *, steer: Callable[..., None], snapshot: Callable[[], str] | None,
          stop: Callable[[], None], snapshot_needs: str = "--snapshot FILE") -> str:
    """Check one command (a JSON object with some of `COMMANDS`) and carry it out through ``steer``
    (`Stream.set`'s keywords), ``snapshot()`` and ``stop()``; returns what was done, for the answer.
    A bad command raises `ConfigError` naming what is wrong, before anything is done. The command
    line's control channel and the server's ``PATCH /streams/{id}`` both take commands through here;
    ``snapshot_needs`` names what a server or command without a place for snapshots lacks."""
    if not isinstance(command, dict) or not command:
        raise bad("command", f"must be a JSON object with some of {', '.join(COMMANDS)}", command)
    unknown = [k for k in command if k not in COMMANDS]
    if unknown:
        raise bad("command", f"may only hold {', '.join(COMMANDS)}", ", ".join(unknown))
    for key in ("snapshot", "stop"):
        if key in command and command[key] is not True:
            raise bad(key, "must be true", command[key])
    for key in ("prompt", "sampling"):
        if key in command and command[key] is None:
            raise bad(key, "must be given to change it (leave it out to keep it)", None)
    if command.get("snapshot") and snapshot is None:
        raise bad("snapshot", f"needs {snapshot_needs} to know where to save", True)
    done = []
    if "prompt" in command or "sampling" in command:
        steer(prompt=command.get("prompt"), sampling=command.get("sampling"))
        done += [k for k in ("prompt", "sampling") if k in command]
    if command.get("snapshot"):
        done.append(snapshot())
    if command.get("stop"):
        stop()
        done.append("stop")
    return json.dumps(command) if not done else ", ".join(done)


class _Keep:
    """A context manager that leaves standard input open."""

    def __init__(self, f: Any):
        self.f = f

    def __enter__(self) -> Any:
        return self.f

    def __exit__(self, *exc: Any) -> None:
        pass
