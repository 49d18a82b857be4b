"""Starting and stopping `streamgen serve`: the engine, the token, the socket, uvicorn and the signals.

SIGTERM, SIGINT and SIGHUP stop the server the way they stop ``streamgen generate``: no new
connection is taken, every output is finished, every stream is saved to ``--state-dir`` (one line
each on stderr), and the exit code is 128 + the signal's number. A second signal exits at once.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import uvicorn

from streamgen.errors import bad
from streamgen.serve.config import ServeConfig

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Server(uvicorn.Server):
    """uvicorn's server, stopping on the project's three signals and remembering which came."""

    signum: int | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {sig: signal.signal(sig, self.handle_exit) for sig in SIGNALS}
        try:
            yield
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self.signum is not None:
            os.write(2, f"streamgen: {signal.Signals(sig).name} again: exiting at once\n".encode())
            os._exit(128 + sig)
        self.signum = sig
        self.should_exit = True


def read_token(path: str | None) -> str:
    """The API token: the one word ``path`` holds (surrounding blank space ignored), or a new random one."""
    if path is None:
        return secrets.token_urlsafe(24)
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise bad("token_file", f"must be a readable file ({exc.strerror})", path) from None
    if not token or any(c.isspace() for c in token):
        raise bad("token_file", "must hold one token without spaces", path)
    return token


def folder(param: str, path: str | None, make: bool = False, private: bool = False) -> Path | None:
    """The folder of option ``param``, resolved; with ``make``, created if missing; ``private`` keeps
    it to its owner (0700: the snapshots in a state folder name their outputs, RTMP keys included)."""
    if path is None:
        return None
    p = Path(path)
    try:
        if make and not p.exists():
            p.mkdir(parents=True, mode=0o700 if private else 0o777)
        if private and p.is_dir():
            p.chmod(0o700)
    except OSError as exc:
        raise bad(param, f"must be a folder this server can make and write ({exc.strerror})", path) from None
    if not p.is_dir():
        raise bad(param, "must be an existing folder", path)
    return p.resolve()


def off_main_thread(fn):
    """``fn()`` run on a thread that ends with it.

    Every thread that runs torch's parallel operations gets an OpenMP team of its own (libgomp) that
    outlives the work. With the main thread's team alive beside the scheduler thread's, the
    scheduler's frames came out 20-30% slower (the shipped model, 2 threads, 2026-12-07; likely
    libgomp spinning less once it counts more threads than cores: with OMP_WAIT_POLICY=ACTIVE the
    gap doubled, with PASSIVE it closed). So nothing runs torch on the main thread: the model loads
    here, and its team ends with the thread.
    """
    out: list = []

    def run() -> None:
        try:
            out.append((True, fn()))
        except BaseException as exc:  # re-raised on the caller's thread
            out.append((False, exc))

    t = threading.Thread(target=run, name="streamgen-load")
    t.start()
    t.join()
    ok, value = out[0]
    if not ok:
        raise value
    return value


def serve(cfg: ServeConfig) -> int:
    """Run until a stop signal; the exit code is 128 + its number."""
    import torch

    from streamgen.bundle import load
    from streamgen.engine.threads import ThreadTuner
    from streamgen.serve.app import create_app
    from streamgen.serve.streams import Limits, Streams

    token = read_token(cfg.token_file)
    resume = folder("resume", cfg.resume)
    output_dir = folder("output_dir", cfg.output_dir, make=True)
    input_dir = folder("input_dir", cfg.input_dir)
    state_dir = folder("state_dir", cfg.state_dir or cfg.resume, make=True, private=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    def loaded():
        engine = load(cfg.model)
        engine.identity()  # weight digests, cached: computed here too
        engine.use_native_step(cfg.native_step)  # built (or found built) now, not in the first frame
        return engine

    engine = off_main_thread(loaded)
    engine.input_dir, engine.reads_files = input_dir, input_dir is not None
    w, h = cfg.max_width_height
    limits = Limits(max_streams=cfg.max_streams, max_width=w, max_height=h, max_fps=cfg.max_fps,
                    output_dir=output_dir)
    tuner = None if cfg.fixed_threads else ThreadTuner(torch.get_num_threads())
    streams = Streams(engine, limits, state_dir=state_dir, tuner=tuner, lanes=cfg.lanes or torch.get_num_threads())
    # the Host header a browser sends must name this server (DNS rebinding); a server open on every
    # address answers to any name it is reached by, so it checks none
    hosts = None if cfg.host in ("0.0.0.0", "::") else \
        ["127.0.0.1", "localhost", "[::1]", f"[{cfg.host}]" if ":" in cfg.host else cfg.host]
    family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
    try:
        sock = socket.create_server((cfg.host, cfg.port), family=family)
    except OSError as exc:
        raise bad("port", f"must be free to listen on at {cfg.host} ({exc.strerror})", cfg.port) from None
    where = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    said = "token from --token-file" if cfg.token_file else f"token {token}"
    line = (f"streamgen: serving on http://{where}:{sock.getsockname()[1]} ({said}; calls that change something "
            f"need `Authorization: Bearer TOKEN`)")
    app = create_app(streams, token, hosts=hosts, resume=resume,
                     ready=lambda: print(line, file=sys.stderr, flush=True))
    server = Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=10,
                                   ws_max_size=1 << 16))
    server.run(sockets=[sock])
    if server.signum is None:
        return 0
    name = signal.Signals(server.signum).name
    print(f"streamgen: stopped by {name}" + (f"; {streams.saved} stream(s) saved in {state_dir}" if state_dir else ""),
          file=sys.stderr, flush=True)
    return 128 + server.signum
