"""Fixtures shared by the tests: tiny engines, an nginx with its RTMP module, a `streamgen serve`."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from streamgen.testing import tiny_engine

torch.set_num_threads(2)

NGINX = shutil.which("nginx")
FFPROBE = shutil.which("ffprobe")
RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")


@pytest.fixture
def engine():
    return tiny_engine()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    """An nginx with the RTMP module, recording every publish to its own FLV file in ``root/rec``."""

    def __init__(self, root: Path):
        self.root, self.port, self.rec = root, free_port(), root / "rec"
        self.rec.mkdir(parents=True)
        # as root, the master hands the connections to workers that would otherwise run as nobody,
        # who cannot write into pytest's private tmp folder
        user = "user root;" if os.geteuid() == 0 else ""
        (root / "nginx.conf").write_text(f"""
load_module {RTMP_MODULE};
{user}
worker_processes 1;
pid {root}/nginx.pid;
lock_file {root}/nginx.lock;
error_log {root}/error.log info;
events {{ worker_connections 64; }}
rtmp {{
    access_log {root}/access.log;
    server {{
        listen 127.0.0.1:{self.port};
        application live {{
            live on;
            record all;
            record_path {self.rec};
            record_unique on;
        }}
    }}
}}
""")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        # -e: the error log of the start-up, before the config is read, goes here too, not to /var/log
        self.proc = subprocess.Popen([NGINX, "-p", str(self.root), "-c", str(self.root / "nginx.conf"),
                                      "-e", str(self.root / "error.log"), "-g", "daemon off;"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited at start: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("nginx did not listen within 10 s")

    def stop(self) -> None:
        """What `nginx -s stop` does (SIGTERM): connections are dropped at once."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        # `record_unique` names a file by the second its publish began, so a publish to a restarted
        # server within that second would overwrite this run's file: each run keeps its own folder
        kept = self.rec / f"run{len(list(self.rec.glob('run*')))}"
        kept.mkdir()
        for f in self.rec.glob("*.flv"):
            f.rename(kept / f.name)

    def url(self, name: str, userinfo: str = "") -> str:
        return f"rtmp://{userinfo}127.0.0.1:{self.port}/live/{name}"

    def recordings(self) -> list[list[int]]:
        """Video timestamps (ms) of each recording that holds any, in the order of their first frame."""
        out = []
        for f in self.rec.rglob("*.flv"):
            if f.stat().st_size == 0:  # a publish that sent no media before it ended
                continue
            probe = subprocess.run([FFPROBE, "-v", "error", "-select_streams", "v:0", "-show_entries",
                                    "packet=pts", "-of", "csv=p=0", str(f)], capture_output=True, timeout=30)
            pts = [int(line) for line in probe.stdout.decode().split() if line.strip().isdigit()]
            if pts:
                out.append(pts)
        return sorted(out)

    def wait_for(self, what: str, done, timeout: float = 60) -> list[list[int]]:
        """The recordings once ``done(recordings)``: the server writes what it reads a little later."""
        deadline = time.monotonic() + timeout
        while True:
            recs = self.recordings()
            if done(recs):
                return recs
            if time.monotonic() > deadline:
                raise AssertionError(f"not recorded after {timeout} s: {what}; recordings: {recs}")
            time.sleep(0.1)

    def wait_for_frames(self, n: int) -> None:
        self.wait_for(f"{n} frames", lambda recs: sum(map(len, recs)) >= n)

    def wait_for_last(self, ms: int) -> None:
        """Until the newest recording ends at ``ms``: stopping the server earlier could lose the end."""
        self.wait_for(f"a frame at {ms} ms", lambda recs: bool(recs) and recs[-1][-1] == ms)


@pytest.fixture
def nginx(tmp_path):
    server = Nginx(tmp_path / "nginx")
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Served:
    """A `streamgen serve --model tiny` in a subprocess on a free port of 127.0.0.1, one torch thread;
    its stderr collected on a thread, its token and address read from the line saying it serves."""

    def __init__(self, *args: str):
        import threading

        import httpx

        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "streamgen.cli", "serve", "--model", "tiny", "--port", "0",
                                      *args], stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + 60
        while not any("serving on" in line for line in self.lines):  # said once resumed streams are back
            assert self.proc.poll() is None and time.monotonic() < deadline, "".join(self.lines)
            time.sleep(0.05)
        first = next(line for line in self.lines if "serving on" in line)
        self.base = "http://" + first.split("http://")[1].split()[0]
        self.token = first.split("token ")[1].split(";")[0] if "token from" not in first else None
        self.client = httpx.Client(base_url=self.base, timeout=60)

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def call(self, method: str, path: str, body=None, token: str | None = "own"):
        headers = {} if token is None else {"Authorization": f"Bearer {self.token if token == 'own' else token}"}
        return self.client.request(method, path, json=body, headers=headers)

    def wait(self, id: str, done, timeout: float = 60) -> dict:
        """A stream's status once ``done(status)``."""
        deadline = time.monotonic() + timeout
        while not done(status := self.call("GET", f"/streams/{id}").json()):
            assert time.monotonic() < deadline, status
            time.sleep(0.05)
        return status

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=60)
        finally:
            self.client.close()


@pytest.fixture
def serve():
    """Starts servers (``serve(*options)``); each is stopped with SIGTERM at the end."""
    started: list[Served] = []

    def start(*args: str) -> Served:
        started.append(Served(*args))
        return started[-1]

    yield start
    for server in started:
        server.stop()
