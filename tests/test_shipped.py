"""The default model shipped inside the package: present, small, and running all five tasks through the
command line exactly as a user on a fresh install would (no --model)."""
import json

import av
import numpy as np
import pytest

from streamgen.bundle import SHIPPED
from streamgen.cli import main

FILES = ("model", "vqgan", "pg")


def test_the_shipped_weights_are_safetensors_with_cards_and_fit_the_budget():
    total = 0
    for name in FILES:
        weights = SHIPPED / f"{name}.safetensors"
        head = weights.read_bytes()[:8]
        assert int.from_bytes(head, "little") < 10_000_000  # a safetensors header length, not a pickle
        assert json.loads((SHIPPED / f"{name}.json").read_text())["config"]
        card = (SHIPPED / f"{name}.md").read_text()
        assert "training steps" in card and len(card) > 300
        total += weights.stat().st_size
    assert total <= 100e6


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    from streamgen.training.data import landscapes as L

    from streamgen.output.sinks import open_sink

    path = tmp_path_factory.mktemp("img") / "day.png"
    sink = open_sink(str(path), fps=1, size=(128, 128))
    sink.write(L.render(L.Scene("day", "grassy hills", False, "still", 1), 128, 128)[0])
    sink.close()
    return path


def read(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.mark.parametrize("task,args", [
    ("uig", ["--size", "128x64"]),
    ("t2i", ["--prompt", "a sunset over desert dunes"]),
    ("io", ["--image", "IMG", "--size", "192x128"]),
    ("ia", ["--image", "IMG", "--frames", "3"]),
    ("t2v", ["--prompt", "a night sky over snowy mountains, the camera pans left", "--frames", "3"]),
])
def test_every_task_runs_out_of_the_box(task, args, photo, tmp_path):
    video = task in ("ia", "t2v")
    out = tmp_path / ("out.mp4" if video else "out.png")
    args = [str(photo) if a == "IMG" else a for a in args]
    assert main(["generate", "--task", task, *args, "-o", str(out)]) == 0
    frames = read(out)
    if video:
        assert len(frames) == 3 and frames[0].shape == (128, 128, 3)
    else:
        assert len(frames) == 1 and frames[0].std() > 5  # a picture, not a flat fill
    given = read(photo)[0]
    if task == "io":  # the user's picture comes back as it was, but for a 4-px band at its right edge
        assert np.array_equal(frames[0][:, :124], given[:, :124])
    if task == "ia":  # frame 0 is the picture, up to H.264 (the codec's own reconstruction is ~14 dB off)
        assert np.abs(frames[0].astype(int) - given).mean() < 3


@pytest.mark.parametrize("task,fields,args", [
    ("t2v", dict(prompt="a sunset sky over desert dunes, the camera pans left", frames=2),
     ["--prompt", "a sunset sky over desert dunes, the camera pans left", "--frames", "2"]),
    ("t2i", dict(prompt="a night sky over snowy mountains", seed=3),
     ["--prompt", "a night sky over snowy mountains", "--seed", "3"]),
])
def test_python_gives_the_frames_the_command_line_gives(task, fields, args, tmp_path):
    """`streamgen.load()` with a request's defaults samples and sizes as `streamgen generate` does:
    the same model, preset, size and seed, so the same frames (PNG frames: lossless)."""
    import subprocess
    import sys

    import numpy as np

    import streamgen

    engine = streamgen.load()
    frames = list(engine.run(task, **fields))
    cmd = [sys.executable, "-m", "streamgen.cli", "generate", "--task", task, *args,
           "-o", str(tmp_path / "%06d.png")]
    subprocess.run(cmd, check=True, capture_output=True)
    written = sorted(tmp_path.glob("*.png"))
    assert len(written) == len(frames) >= 1
    for path, frame in zip(written, frames):
        assert frame.shape == (128, 128, 3)
        assert np.array_equal(read(path)[0], frame), path.name


def test_streams_batched_with_the_shipped_codec_give_their_frames_alone():
    """`run_batch` and `Engine.step` decode pixels stream by stream: a convolution over a batch sums
    in another order than over one frame, and the pixel-guided decoder would carry the difference on."""
    import streamgen

    engine = streamgen.load()
    reqs = [dict(prompt="a day sky over grassy hills, the camera pans right", frames=3, seed=s) for s in (1, 2)]
    alone = [list(engine.run("t2v", sampling=engine.preset, **r)) for r in reqs]
    batched = list(engine.run_batch("t2v", [dict(r, sampling=engine.preset) for r in reqs]))
    streams = [engine.open("t2v", sampling=engine.preset, **r) for r in reqs]
    stepped = [[f.pixels for f in engine.step(streams)] for _ in range(3)]
    for i in range(2):
        assert all(np.array_equal(alone[i][t], batched[t][i]) for t in range(3))
        assert all(np.array_equal(alone[i][t], stepped[t][i]) for t in range(3))
