"""Live output with real peers: ffmpeg/ffprobe reading our pipe, an RTMP receiver on 127.0.0.1."""
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from streamgen import ConfigError, StreamgenError
from streamgen.output.sinks import PngSink, open_sink, redact

FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")
pytestmark = pytest.mark.skipif(not (FFMPEG and FFPROBE), reason="needs Debian's ffmpeg (.ci/run installs it)")

# one thread per generator process: the receiver and the test runner need the other core
os.environ["OMP_NUM_THREADS"] = "1"
GEN = [sys.executable, "-m", "streamgen.cli", "generate", "--model", "tiny", "--prompt", "night dunes",
       "--size", "32x32"]


def count_frames(path_or_dash, stdin=None):
    out = subprocess.run([FFPROBE, "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                          "stream=nb_read_frames,width,height", "-of", "csv=p=0", "-i", path_or_dash],
                         input=stdin, capture_output=True, check=True)
    w, h, n = out.stdout.decode().strip().splitlines()[0].split(",")
    return int(w), int(h), int(n)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def no_traceback_one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("streamgen: error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def test_ffprobe_reads_the_pipe_and_counts_the_frames():
    gen = subprocess.run([*GEN, "--frames", "7", "--fps", "5", "-o", "-"], capture_output=True, check=True)
    assert count_frames("-", stdin=gen.stdout) == (32, 32, 7)
    assert b"frames" in gen.stderr  # progress goes to stderr, never into the video


def test_ffmpeg_reads_the_pipe_as_it_streams(tmp_path):
    gen = subprocess.Popen([*GEN, "--frames", "9", "-o", "-"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = tmp_path / "copy.mkv"
    subprocess.run([FFMPEG, "-v", "error", "-i", "-", "-c", "copy", "-y", str(out)], stdin=gen.stdout, check=True)
    assert gen.wait() == 0
    assert count_frames(str(out))[2] == 9


def test_a_closed_pipe_ends_cleanly_with_one_line():
    gen = subprocess.Popen([*GEN, "--frames", "inf", "-o", "-"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = subprocess.run(["head", "-c", "3000"], stdin=gen.stdout, capture_output=True)
    gen.stdout.close()
    _, err = gen.communicate(timeout=60)
    assert len(head.stdout) == 3000
    assert gen.returncode != 0
    line = no_traceback_one_error_line(err.decode())
    assert "went away" in line


@pytest.mark.parametrize("ext,frames", [(".mp4", 30), (".mkv", 30), (".webm", 30), (".png", 1)])
def test_files_by_extension(tmp_path, ext, frames):
    out = tmp_path / f"clip{ext}"
    args = [*GEN, "-o", str(out)] + (["--task", "t2i"] if ext == ".png" else ["--frames", str(frames)])
    subprocess.run(args, check=True, capture_output=True)
    assert count_frames(str(out)) == (32, 32, frames)


def test_png_refuses_a_second_frame_and_a_canvas_too_wide(tmp_path):
    sink = PngSink(str(tmp_path / "a.png"))
    with pytest.raises(ConfigError, match="`size` must be at most 65535 px a side for a PNG"):
        sink.write(np.zeros((2, 70_000, 3), np.uint8))
    sink.write(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ConfigError, match="holds one image"):
        sink.write(np.zeros((8, 8, 3), np.uint8))


def test_unknown_extension_and_unknown_scheme_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"`output` must end in one of \.mp4"):
        open_sink(str(tmp_path / "a.gif"), fps=5)
    with pytest.raises(ConfigError, match="unknown sink 'srt'"):
        open_sink("srt://127.0.0.1:9000", fps=5)


def start_receiver(port, path):
    proc = subprocess.Popen([FFMPEG, "-v", "error", "-analyzeduration", "500000", "-listen", "1",
                             "-i", f"rtmp://127.0.0.1:{port}/live/test", "-c", "copy", "-y", str(path)],
                            stdin=subprocess.DEVNULL)
    time.sleep(1.0)  # ffmpeg accepts one connection: no probing of the port
    return proc


def test_rtmp_push_reaches_a_real_receiver(tmp_path):
    port = free_port()
    out = tmp_path / "received.flv"
    recv = start_receiver(port, out)
    gen = subprocess.run([*GEN, "--frames", "10", "--fps", "10", "-o",
                          f"rtmp://alice:hunter2@127.0.0.1:{port}/live/test"], capture_output=True, timeout=120)
    assert gen.returncode == 0, gen.stderr.decode()[-2000:]
    recv.wait(timeout=30)
    assert count_frames(str(out)) == (32, 32, 10)
    assert b"hunter2" not in gen.stderr and b"alice" not in gen.stderr


def test_nothing_listening_is_a_clear_error_at_the_start_without_credentials():
    port = free_port()
    gen = subprocess.run([*GEN, "--frames", "inf", "-o", f"rtmp://alice:hunter2@127.0.0.1:{port}/live/x"],
                         capture_output=True, timeout=60)
    assert gen.returncode != 0
    err = gen.stderr.decode()
    line = no_traceback_one_error_line(err)
    assert "nothing is listening" in line and "hunter2" not in err and "alice" not in err
    assert "frames" not in err  # it failed before generating


def connected(port: int) -> bool:
    """A TCP connection to 127.0.0.1:``port`` is established (Linux's /proc/net/tcp)."""
    with open("/proc/net/tcp") as fh:
        rows = [line.split() for line in fh.readlines()[1:]]
    return any(r[1].endswith(f":{port:04X}") and r[3] == "01" for r in rows)


def test_receiver_stopping_ends_the_push_cleanly(tmp_path):
    port = free_port()
    recv = start_receiver(port, tmp_path / "r.flv")
    gen = subprocess.Popen([*GEN, "--frames", "inf", "--realtime", "--fps", "20", "-o",
                            f"rtmp://127.0.0.1:{port}/live/test"], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not connected(port):  # the push is under way
        time.sleep(0.2)
    time.sleep(1)
    recv.kill()
    recv.wait()
    _, err = gen.communicate(timeout=60)
    assert gen.returncode != 0
    assert "went away" in no_traceback_one_error_line(err.decode())


def test_reconnect_continues_the_same_stream(tmp_path):
    port = free_port()
    first, second = tmp_path / "first.flv", tmp_path / "second.flv"
    recv = start_receiver(port, first)
    gen = subprocess.Popen([*GEN, "--frames", "90", "--realtime", "--fps", "15", "--reconnect", "5", "-o",
                            f"rtmp://127.0.0.1:{port}/live/test"], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not connected(port):  # start-up (longer on a busy machine)
        time.sleep(0.2)
    time.sleep(3.0)  # a few seconds of stream
    recv.terminate()
    recv.wait()
    recv2 = start_receiver(port, second)
    _, err = gen.communicate(timeout=120)
    recv2.wait(timeout=30)
    assert gen.returncode == 0, err.decode()[-2000:]
    assert "reconnecting" in err.decode()
    n1, n2 = count_frames(str(first))[2], count_frames(str(second))[2]
    assert n1 > 0 and n2 > 0
    assert n1 + n2 <= 90 and n1 + n2 >= 70  # frames in flight may be lost with the old socket


def test_realtime_paces_and_reports_lag(tmp_path):
    t0 = time.perf_counter()
    subprocess.run([*GEN, "--frames", "12", "--fps", "10", "--realtime", "-o", str(tmp_path / "a.mkv")],
                   check=True, capture_output=True)
    assert time.perf_counter() - t0 >= 1.1  # frame 11 is released 1.1 s after frame 0
    slow = subprocess.run([*GEN, "--frames", "40", "--fps", "240", "--realtime", "-o", str(tmp_path / "b.mkv")],
                          check=True, capture_output=True)
    assert b"behind real time" in slow.stderr


def test_redact_hides_credentials():
    assert redact("rtmp://u:p@host:1935/app/key") == "rtmp://***@host:1935/app/***"
    assert redact("rtmp://a.rtmp.youtube.com/live2/abcd-1234-efgh") == "rtmp://a.rtmp.youtube.com/live2/***"
    assert redact("rtmps://host/app/stream?token=s3cret") == "rtmps://host/app/***?***"
    assert redact("rtmp://host/app") == "rtmp://host/app"  # no stream key to hide
    assert redact("/home/me/videos/out.mp4") == "/home/me/videos/out.mp4"  # a file is no URL


def test_cli_bad_input_is_one_line_and_non_zero():
    for args in (["--frames", "0"], ["--size", "33x32"], ["--fps", "0"], ["--task", "nope"],
                 ["--size", "banana"], ["sampling.guidance=nan"], ["colour=red"]):
        out = subprocess.run([*GEN, *args, "-o", "/tmp/x.mp4"], capture_output=True, timeout=60)
        assert out.returncode != 0, args
        no_traceback_one_error_line(out.stderr.decode())


def test_ia_takes_its_size_from_the_image(tmp_path):
    img = np.random.default_rng(1).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    PngSink(str(tmp_path / "in.png")).write(img)
    out = tmp_path / "moving.mkv"
    subprocess.run([sys.executable, "-m", "streamgen.cli", "generate", "--model", "tiny", "--task", "ia",
                    "--image", str(tmp_path / "in.png"), "--frames", "3", "-o", str(out)],
                   check=True, capture_output=True)
    assert count_frames(str(out)) == (32, 24, 3)


def test_realtime_generates_on_the_calling_thread_and_writes_on_the_clock():
    import threading
    import time

    from streamgen.output.live import pump

    seen, times = [], []

    def frames():
        for i in range(6):
            seen.append(threading.current_thread())
            yield np.full((8, 8, 3), i, np.uint8)

    class Sink:
        def write(self, frame):
            times.append((time.perf_counter(), int(frame[0, 0, 0])))

    stats = pump(frames(), Sink(), fps=20, realtime=True, buffer=2)
    assert stats.frames == 6 and [v for _, v in times] == list(range(6))
    assert set(seen) == {threading.current_thread()}  # torch's workers serve the thread that started them
    gaps = [b - a for (a, _), (b, _) in zip(times, times[1:])]
    assert min(gaps) > 0.04  # paced at 20 frames/s


def test_realtime_writer_failure_stops_generation_with_its_error():
    from streamgen.output.live import pump

    made = []

    def frames():
        for i in range(1000):
            made.append(i)
            yield np.zeros((8, 8, 3), np.uint8)

    class Broken:
        def write(self, frame):
            raise BrokenPipeError("receiver went away")

    with pytest.raises(BrokenPipeError):
        pump(frames(), Broken(), fps=100, realtime=True, buffer=2)
    assert len(made) < 10
