"""The fault table: what breaks under a running `streamgen generate`, what the user sees, what is kept.

| fault | what the user sees | what is kept |
|---|---|---|
| disk full on the output | one line naming the output and "No space left on device", exit 2 | the file, readable up to its last written frame; the snapshot counts no more than that; `--resume` continues elsewhere |
| the output's folder removed mid-stream | one line "was removed or replaced while it was being written", exit 2 | the snapshot of the frames written before; `--resume` continues into a new file |
| the snapshot cannot be written (its path is a folder) | one line naming `snapshot`, exit 2 | the output, closed and readable |
| a truncated snapshot given to `--resume` | one line "is not readable", exit 2 | everything: nothing is written |
| SIGTERM, SIGHUP, SIGINT; SIGKILL | tests/test_signals.py, tests/test_crash_safe.py | |
| the receiver of a pipe or an RTMP push goes away | tests/test_live.py, tests/test_rtmp_nginx.py | |
| a plugin that fails | tests/test_plugin_faults.py | |
"""
import os
import shutil
import subprocess
import sys
import time

import pytest

from streamgen.engine import snapshot as snap

BASE = ["--model", "tiny", "--task", "t2v", "--prompt", "a day sky", "--size", "16x16"]


def run(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "streamgen.cli", "generate", *BASE, *args],
                          capture_output=True, text=True, timeout=timeout)


def errors(stderr):
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.replace("\r", "\n").splitlines() if ln.startswith("streamgen: error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def readable_frames(path):
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                          "stream=nb_read_frames", "-of", "csv=p=0", str(path)], capture_output=True, text=True)
    return int(out.stdout.strip() or 0)


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs with about 3 KiB left: room for the header and a few frames."""
    where = tmp_path / "disk"
    where.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)]).returncode:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    (where / "filler").write_bytes(b"\0" * (60 * 1024))
    yield where
    subprocess.run(["umount", "-l", str(where)])


def test_disk_full_on_the_output(tmp_path, small_disk):
    state = tmp_path / "s.snap"
    r = run("--frames", "60", "-o", str(small_disk / "a.mkv"), "--snapshot", str(state), "--snapshot-every", "2",
            "--size", "32x32")
    assert r.returncode == 2
    line = errors(r.stderr)
    assert "a.mkv" in line and "No space left on device" in line
    kept = readable_frames(small_disk / "a.mkv")
    saved, _ = snap.load(state)
    assert 0 < saved.frames_done <= kept  # the snapshot never counts a frame the file lacks
    # the saved request, to frame 60 (options that would change the frames may be given only as saved)
    r = run("--resume", str(state), "-o", str(tmp_path / "b.mkv"), "--size", "32x32")
    assert r.returncode == 0, r.stderr
    assert readable_frames(tmp_path / ("b.from%06d.mkv" % saved.frames_done)) == 60 - saved.frames_done


def test_the_outputs_folder_removed_mid_stream(tmp_path):
    folder, state = tmp_path / "out", tmp_path / "s.snap"
    folder.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "streamgen.cli", "generate", *BASE, "--frames", "200",
                             "-o", str(folder / "a.mkv"), "--snapshot", str(state), "--snapshot-every", "2"],
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not state.exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        shutil.rmtree(folder)
        err = proc.communicate(timeout=120)[1]
    finally:
        proc.kill()
    assert proc.returncode == 2
    assert "was removed or replaced while it was being written" in errors(err)
    saved, _ = snap.load(state)
    assert saved.frames_done < 200
    r = run("--resume", str(state), "-o", str(tmp_path / "b.mkv"))
    assert r.returncode == 0, r.stderr
    assert readable_frames(tmp_path / ("b.from%06d.mkv" % saved.frames_done)) == 200 - saved.frames_done


def test_a_snapshot_that_cannot_be_written(tmp_path):
    (tmp_path / "s.snap").mkdir()
    r = run("--frames", "6", "-o", str(tmp_path / "a.mkv"), "--snapshot", str(tmp_path / "s.snap"),
            "--snapshot-every", "2")
    assert r.returncode == 2
    assert "`snapshot`" in errors(r.stderr)
    assert readable_frames(tmp_path / "a.mkv") >= 2  # the output is closed, not lost


def test_a_truncated_snapshot(tmp_path):
    state = tmp_path / "s.snap"
    assert run("--frames", "2", "-o", str(tmp_path / "a.mkv"), "--snapshot", str(state),
               "--snapshot-every", "1").returncode == 0
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    r = run("--resume", str(state), "-o", str(tmp_path / "b.mkv"))
    assert r.returncode == 2
    assert "is not readable" in errors(r.stderr) and "s.snap" in errors(r.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mkv", "s.snap"]
