"""Stopping a stream the way services are stopped: SIGTERM and SIGHUP end it like SIGINT, with the
output closed and readable, the snapshot at the last frame, one line and exit code 128 + the signal."""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from streamgen.engine import snapshot as snap

FFPROBE = shutil.which("ffprobe")
pytestmark = pytest.mark.skipif(not FFPROBE, reason="needs Debian's ffprobe (.ci/run installs it)")

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
GEN = [sys.executable, "-m", "streamgen.cli", "generate", "--model", "tiny", "--prompt", "day hills",
       "--seed", "3"]


def count_frames(path: str) -> int:
    out = subprocess.run([FFPROBE, "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                          "stream=nb_read_frames", "-of", "csv=p=0", path], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr  # the container parses
    return int((out.stdout.split() or ["0"])[0])


def start(args, out, tmp_path):
    """A generator writing to ``out`` (a path, or '-' redirected into ``tmp_path/pipe.ts``)."""
    stdout = open(tmp_path / "pipe.ts", "wb") if out == "-" else subprocess.DEVNULL
    proc = subprocess.Popen([*GEN, *args, "-o", out], stdout=stdout, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=ENV)
    if out == "-":
        stdout.close()
    return proc


def wait_for(path, proc, timeout=90):
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "the snapshot never appeared"
        time.sleep(0.05)


@pytest.mark.parametrize("sig, ext", [(signal.SIGTERM, ".mp4"), (signal.SIGHUP, ".mkv"),
                                      (signal.SIGINT, ".mp4"), (signal.SIGTERM, "-")])
def test_a_stop_signal_closes_the_output_and_saves_the_snapshot(tmp_path, sig, ext):
    out = "-" if ext == "-" else str(tmp_path / f"out{ext}")
    state = tmp_path / "s.snap"
    proc = start(["--size", "32x32", "--frames", "2000", "--snapshot", str(state), "--snapshot-every", "5"],
                 out, tmp_path)
    wait_for(state, proc)
    time.sleep(0.3)  # a few frames past the snapshot
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    err = err.decode()
    assert proc.returncode == 128 + sig, err[-2000:]
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("streamgen:")]
    assert len(lines) == 1 and lines[0].startswith(f"streamgen: stopped by {sig.name} after "), err
    done = int(lines[0].split(" after ")[1].split()[0])
    assert 5 <= done < 2000
    assert count_frames(str(tmp_path / "pipe.ts") if ext == "-" else out) == done  # every frame made
    assert snap.load(state)[0].frames_done == done  # resumes with no frame made twice


def test_a_second_signal_exits_at_once_and_the_output_stays_readable(tmp_path):
    """Frames of 256x256 take the tiny model over a second: the second SIGTERM comes while the first
    is still waiting for the frame in progress, and ends the process there."""
    state = tmp_path / "s.snap"
    proc = start(["--size", "256x256", "--frames", "200", "--snapshot", str(state), "--snapshot-every", "1"],
                 "-", tmp_path)
    wait_for(state, proc, timeout=120)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert time.time() - t0 < 1.0  # at once, not after the frame in progress
    err = err.decode()
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "SIGTERM again: exiting at once" in err and "Traceback" not in err
    saved = snap.load(state)[0].frames_done
    assert count_frames(str(tmp_path / "pipe.ts")) >= saved >= 1  # the snapshot's frames are all there
