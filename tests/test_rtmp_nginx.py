"""RTMP pushes that outlive a restarting server, against Debian's nginx with its RTMP module.

Each test starts its own nginx (the ``nginx`` fixture of conftest.py) on 127.0.0.1 on a free port, with its config, pid, logs and the
server's recordings in a tmp folder (never the system's nginx), stops and restarts it under a
running push, and reads what the server recorded with ffprobe. The recordings keep the publisher's
own timestamps: nginx counts a recording from the codec header, which FLV sends at 0.
"""
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from streamgen.output.sinks import RTMPSink, SinkClosed

NGINX = shutil.which("nginx")
FFPROBE = shutil.which("ffprobe")
RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
pytestmark = pytest.mark.skipif(not (NGINX and FFPROBE and RTMP_MODULE.is_file()),
                                reason="needs Debian's nginx, libnginx-mod-rtmp and ffmpeg (.ci/run installs them)")

# one thread per generator process: nginx and the test runner need the other core
os.environ["OMP_NUM_THREADS"] = "1"
GEN = [sys.executable, "-m", "streamgen.cli", "generate", "--model", "tiny", "--prompt", "night dunes",
       "--size", "32x32", "--fps", "10", "--realtime"]
FRAME_MS = 100  # at --fps 10


def clean_stderr(err: str) -> None:
    assert "Traceback" not in err and "Exception ignored" not in err, err[-3000:]


def increasing(pts: list[int]) -> bool:
    return all(b > a for a, b in zip(pts, pts[1:]))


def test_a_two_second_outage_is_bridged_and_the_stream_continues(nginx):
    frames = 60
    t0 = time.monotonic()
    gen = subprocess.Popen([*GEN, "--frames", str(frames), "--reconnect", "5", "-o", nginx.url("a")],
                           stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        nginx.wait_for_frames(15)
        nginx.stop()
        time.sleep(2.0)
        nginx.start()
        _, err = gen.communicate(timeout=120)
    finally:
        if gen.poll() is None:
            gen.kill()
            gen.wait(timeout=10)
    err = err.decode()
    assert gen.returncode == 0, err[-3000:]
    clean_stderr(err)
    attempts = err.count("reconnecting (")
    # the server was still down at the first attempts: the path that used to end in a traceback
    assert "reconnecting (2/5)" in err and attempts <= 5, err[-3000:]
    nginx.wait_for_last((frames - 1) * FRAME_MS)
    nginx.stop()  # closes the second recording

    recs = nginx.recordings()
    assert len(recs) == 2, recs
    before, after = recs
    assert increasing(before) and increasing(after)
    assert before[0] == 0 and len(before) >= 5
    # the same stream: the timeline goes on where it stopped, not from 0, and reaches the last frame
    assert after[0] > before[-1] and after[-1] == (frames - 1) * FRAME_MS and len(after) >= 5
    every = before + after
    assert all(t % FRAME_MS == 0 for t in every)
    # missing at most: what nginx had not read when it was stopped, and what the client's socket
    # took after that and before it reported the loss (the write that fails is sent again)
    assert len(every) >= frames - 3
    print(f"\nframes before/after the outage: {len(before)}/{len(after)} of {frames}, "
          f"first after: {after[0]} ms, reconnect attempts: {attempts}, {time.monotonic() - t0:.1f} s")


def test_an_outage_longer_than_the_retries_ends_with_one_line_and_resume_continues(nginx, tmp_path):
    frames = 40
    snap = tmp_path / "state.snap"
    url = nginx.url("b", userinfo="alice:hunter2@")
    gen = subprocess.Popen([*GEN, "--frames", str(frames), "--reconnect", "2", "--snapshot", str(snap),
                            "--snapshot-every", "5", "-o", url], stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        nginx.wait_for_frames(15)
        nginx.stop()
        t_stop = time.monotonic()
        _, err = gen.communicate(timeout=60)
        gave_up = time.monotonic() - t_stop
    finally:
        if gen.poll() is None:
            gen.kill()
            gen.wait(timeout=10)
    err = err.decode()
    assert gen.returncode == 2, err[-3000:]
    clean_stderr(err)
    assert "hunter2" not in err and "alice" not in err
    errors = [line for line in err.splitlines() if line.startswith("streamgen: error:")]
    assert len(errors) == 1, err[-3000:]
    assert f"rtmp://***@127.0.0.1:{nginx.port}/live/***" in errors[0] and "2 reconnect attempts" in errors[0]
    assert err.count("reconnecting (") == 2  # each failed attempt counted once, then it gives up
    assert snap.is_file()

    from streamgen.engine import snapshot

    done = snapshot.load(snap)[0].frames_done
    (first,) = nginx.recordings()
    assert increasing(first) and first[0] == 0
    assert 5 <= done <= len(first) + 2 and done < frames  # the snapshot counts frames that were pushed

    nginx.start()
    resumed = subprocess.run([*GEN[:4], "--resume", str(snap)], capture_output=True, timeout=120,
                             stdin=subprocess.DEVNULL)
    err2 = resumed.stderr.decode()
    assert resumed.returncode == 0, err2[-3000:]
    clean_stderr(err2)
    assert "hunter2" not in err2 and "alice" not in err2
    nginx.wait_for_last((frames - 1) * FRAME_MS)
    nginx.stop()
    first_again, second = nginx.recordings()
    assert first_again == first
    # the resumed push carries the stream's own timestamps from the snapshot's frame to the end
    assert second == [i * FRAME_MS for i in range(done, frames)]
    print(f"\nfirst push: {len(first)} frames, gave up {gave_up:.1f} s after the stop, snapshot at "
          f"frame {done}, resumed push: {len(second)} frames from {second[0]} ms\n{errors[0]}")


def within(seconds: float, fn) -> None:
    """Run ``fn`` on a thread: a push that hangs in a socket fails the test instead of the test run."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # handed to the test's thread
            failure.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still pushing after {seconds} s"
    if failure:
        raise failure[0]


def test_a_sink_whose_reconnects_failed_connects_again_on_the_next_write(nginx):
    frame = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    lost_at: list[int] = []

    def push() -> None:
        with open(os.devnull, "w") as warn:
            sink = RTMPSink(nginx.url("c"), fps=10, size=(32, 32), reconnect=1, warn=warn)
            try:
                for _ in range(5):
                    sink.write(frame)
                nginx.wait_for_frames(5)
                nginx.stop()
                with pytest.raises(SinkClosed, match="was not back after 1 reconnect attempts"):
                    for _ in range(50):  # the first writes may still go into the dead socket's buffer
                        sink.write(frame)
                lost_at.append(sink.frames)
                nginx.start()
                for _ in range(5):
                    sink.write(frame)
            finally:
                sink.close()

    within(60, push)
    nginx.wait_for_last((lost_at[0] + 4) * FRAME_MS)
    nginx.stop()
    before, after = nginx.recordings()
    assert before[0] == 0 and after == [i * FRAME_MS for i in range(lost_at[0], lost_at[0] + 5)]
