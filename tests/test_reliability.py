"""Snapshots and resume: a stream killed with SIGKILL continues with the frames an uninterrupted
run gives; a snapshot of another model is refused."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from streamgen.engine import snapshot as snap
from streamgen.testing import tiny_engine

os.environ["OMP_NUM_THREADS"] = "1"
GEN = [sys.executable, "-m", "streamgen.cli", "generate", "--model", "tiny", "--prompt", "day hills",
       "--size", "16x16", "--seed", "3"]


def test_a_killed_stream_resumes_with_identical_frames(tmp_path):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    whole.mkdir()
    broken.mkdir()
    N, total = 5, 60
    subprocess.run([*GEN, "--frames", str(total), "-o", str(whole / "%04d.png")], check=True,
                   capture_output=True)
    state = tmp_path / "stream.snap"
    proc = subprocess.Popen([*GEN, "--frames", str(total), "--realtime", "--fps", "15", "-o",
                             str(broken / "%04d.png"), "--snapshot", str(state), "--snapshot-every", str(N)],
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while len(list(broken.iterdir())) < 17 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written_before = len([p for p in broken.iterdir() if p.suffix == ".png"])
    assert 17 <= written_before < total
    saved, _ = snap.load(state)
    assert saved.frames_done % N == 0
    assert 0 <= written_before - saved.frames_done <= N  # at most N frames are generated twice
    subprocess.run([*GEN[:3], "generate", "--resume", str(state)], check=True, capture_output=True)
    names = sorted(p.name for p in broken.iterdir() if p.suffix == ".png")
    assert names == sorted(p.name for p in whole.iterdir())  # none missing
    for name in names:
        assert (broken / name).read_bytes() == (whole / name).read_bytes(), name


def test_a_snapshot_of_another_model_is_refused(tmp_path):
    state = tmp_path / "s.snap"
    subprocess.run([*GEN, "--frames", "4", "-o", str(tmp_path / "%02d.png"), "--snapshot", str(state),
                    "--snapshot-every", "2"], check=True, capture_output=True)
    st, info = snap.load(state)
    info["identity"]["model"] = "0" * 64
    snap.save(state, st, {k: v for k, v in info.items() if k not in ("format", "frames_done", "pool")})
    out = subprocess.run([*GEN[:3], "generate", "--resume", str(state)], capture_output=True, text=True)
    assert out.returncode != 0
    assert "made with another model" in out.stderr and "Traceback" not in out.stderr


def test_snapshot_round_trip_in_process(tmp_path):
    eng = tiny_engine()
    frames = list(eng.run_frames("uig", height=16, width=64))
    (fr,) = frames
    snap.save(tmp_path / "a.snap", fr.state, {"identity": eng.identity()})
    st, info = snap.load(tmp_path / "a.snap")
    assert st.frames_done == 1 and info["identity"] == eng.identity()
    assert (st.prev == fr.state.prev).all()


def test_a_prev_frame_stream_resumes_from_its_snapshot_with_identical_frames(tmp_path):
    """A model that reads the previous frame's tokens needs them after a restart: the snapshot keeps
    them, and the resumed stream gives the frames of the uninterrupted one."""
    import numpy as np
    import torch

    from streamgen.testing import HashTextEncoder

    eng = tiny_engine(seed=6, prev_frame=True, text_dim=8)
    eng.text_encoder = HashTextEncoder(8)
    with torch.no_grad():
        eng.model.prev_emb.normal_(0, 1.0)
    req = dict(prompt="a red hill", height=16, width=16, frames=6, seed=2)
    whole = [fr.pixels for fr in eng.run_frames("t2v", **req)]
    for k, fr in enumerate(eng.run_frames("t2v", **req)):
        if k == 2:
            snap.save(tmp_path / "s.snap", fr.state, {})
            break
    state, _ = snap.load(tmp_path / "s.snap")
    assert state.frames_done == 3 and state.tokens is not None
    rest = [fr.pixels for fr in eng.run_frames("t2v", **req, resume=state)]
    assert len(rest) == 3
    for a, b in zip(rest, whole[3:]):
        np.testing.assert_array_equal(a, b)
    state.tokens = None  # without them frame 3 is decoded as if it were a first frame: other frames
    assert any((a != b).any() for a, b in zip((fr.pixels for fr in eng.run_frames("t2v", **req, resume=state)),
                                              whole[3:]))


def test_unreadable_snapshots_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.snap"
    bad.write_bytes(b"not a snapshot")
    with pytest.raises(snap.SnapshotError, match="not readable"):
        snap.load(bad)
    with pytest.raises(snap.SnapshotError, match="does not exist"):
        snap.load(tmp_path / "missing.snap")
