"""SIGTERM on a running `streamgen serve`: every output finished, every stream saved; `--resume` brings
them back and they go on with the frames an uninterrupted server would have made."""
import shutil
import signal
import subprocess

import av
import numpy as np
import pytest

import streamgen

FFPROBE = shutil.which("ffprobe")
pytestmark = pytest.mark.skipif(not FFPROBE, reason="needs Debian's ffprobe (.ci/run installs it)")
REQUEST = {"prompt": "a sunset sky over dunes", "width": 32, "height": 32, "frames": None, "seed": 7}


def count_frames(path) -> int:
    out = subprocess.run([FFPROBE, "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                          "stream=nb_read_frames", "-of", "csv=p=0", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[0])


def pngs(folder):
    """Every numbered PNG of ``folder``, in order (ffmpeg's image2 reader)."""
    with av.open(str(folder / "%05d.png")) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def saved_at(stderr: str, id: str) -> int:
    (line,) = [x for x in stderr.splitlines() if x.startswith(f"streamgen: serve: stream {id} saved at frame ")]
    return int(line.split(" saved at frame ")[1].split()[0])


def test_sigterm_saves_every_stream_and_resume_continues_them_exactly(serve, tmp_path):
    out, state = tmp_path / "out", tmp_path / "state"
    (out / "a").mkdir(parents=True)
    first = serve("--output-dir", str(out), "--state-dir", str(state))
    a = first.call("POST", "/streams", {"request": REQUEST, "output": "a/%05d.png", "fps": 16}).json()["id"]
    b = first.call("POST", "/streams", {"request": {**REQUEST, "seed": 8}, "output": "b.mp4", "fps": 16}).json()["id"]
    first.wait(a, lambda st: st["frames"] >= 5)
    first.wait(b, lambda st: st["frames"] >= 5)
    assert first.stop(signal.SIGTERM) == 128 + signal.SIGTERM
    na, nb = saved_at(first.stderr, a), saved_at(first.stderr, b)
    assert first.stderr.strip().splitlines()[-1] == f"streamgen: stopped by SIGTERM; 2 stream(s) saved in {state}"
    assert sorted(p.name for p in state.iterdir()) == sorted([f"{a}.snap", f"{b}.snap"])
    assert len(pngs(out / "a")) == na and count_frames(out / "b.mp4") == nb  # finished, every frame made

    again = serve("--output-dir", str(out), "--resume", str(state))
    assert f"streamgen: serve: stream {a} resumed at frame {na}" in again.stderr
    again.wait(a, lambda st: st["frames"] >= na + 5)
    again.wait(b, lambda st: st["frames"] >= nb + 3)
    assert again.stop(signal.SIGINT) == 128 + signal.SIGINT
    total = saved_at(again.stderr, a)
    assert count_frames(out / f"b.from{nb:06d}.mp4") == saved_at(again.stderr, b) - nb

    got = pngs(out / "a")
    engine = streamgen.load("tiny")
    want = [f for f, _ in zip(engine.run("t2v", **REQUEST), range(total))]
    assert len(got) == total > na
    assert all(np.array_equal(x, y) for x, y in zip(got, want))
    assert "Traceback" not in first.stderr + again.stderr


def test_snapshots_and_the_state_folder_are_kept_to_their_owner(tmp_path):
    """A snapshot names its stream's output, an RTMP key included: it is written 0600, and the server's
    state folder is made or made private (0700) at start; an output folder is made if missing."""
    import stat

    from streamgen.engine import snapshot as snap
    from streamgen.errors import ConfigError
    from streamgen.serve.server import folder

    engine = streamgen.load("tiny")
    stream = engine.open("t2v", **REQUEST)
    next(stream)
    path = tmp_path / "s.snap"
    snap.save(path, stream.state, {"serve": {"spec": {"output": "rtmp://u:key@127.0.0.1/live/x"}}})
    stream.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    shared = tmp_path / "state"
    shared.mkdir(mode=0o755)
    assert folder("state_dir", str(shared), make=True, private=True) == shared.resolve()
    assert stat.S_IMODE(shared.stat().st_mode) == 0o700
    assert folder("output_dir", str(tmp_path / "videos" / "day"), make=True).is_dir()
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"`output_dir` must be a folder this server can make"):
        folder("output_dir", str(tmp_path / "file" / "sub"), make=True)


def test_a_stream_that_cannot_be_saved_at_shutdown_is_named_and_the_others_are_saved(tmp_path, monkeypatch):
    """One snapshot that cannot be written (a full disk, say) costs that stream alone: the streams after
    it are saved, the log names the one that was not and why, and `saved` counts the rest."""
    import asyncio

    from streamgen.engine import snapshot as snap
    from streamgen.serve.streams import Limits, NewStream, Streams

    real_save, lines = snap.save, []

    def save(path, state, meta):
        if meta["serve"]["id"] == "first":
            raise snap.SnapshotError(f"`snapshot` {str(path)!r} cannot be written (No space left on device)")
        real_save(path, state, meta)

    monkeypatch.setattr(snap, "save", save)
    streams = Streams(streamgen.load("tiny"), Limits(), state_dir=tmp_path, log=lines.append)

    async def run():
        streams.start()
        for i, id in enumerate(("first", "second", "third")):
            await streams.create(NewStream(request={**REQUEST, "seed": i}, fps=30), id=id)
        while min(live.made for live in streams.lives.values()) < 2:
            await asyncio.sleep(0.05)
        await asyncio.to_thread(streams.shutdown)

    asyncio.run(run())
    assert streams.saved == 2 and sorted(p.name for p in tmp_path.iterdir()) == ["second.snap", "third.snap"]
    assert [line for line in lines if "first" in line] == [
        f"streamgen: serve: stream first not saved: `snapshot` {str(tmp_path / 'first.snap')!r} cannot be "
        f"written (No space left on device)"]
    assert sum("saved at frame" in line for line in lines) == 2
