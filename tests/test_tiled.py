"""Tiled decoding and canvases strip by strip: windows cover the decoders' receptive field, strips
tile the canvas and equal the whole image, and a codec without tiling still works."""
import contextlib
import json
import subprocess

import numpy as np
import pytest
import torch
from torch import nn

from streamgen import ConfigError
from streamgen.codecs import CodecConfig, NeuralCodec, PaletteCodec, PixelGuidedDecoder, VQGAN
from streamgen.engine import Engine
from streamgen.model import VisionDecoder
from streamgen.plugins.codec import StripDecoder, Tiling, decode_tiled
from streamgen.testing import tiny_config, tiny_engine

TINY = dict(factor=8, codebook_size=64, code_dim=8, channels=(8, 8, 16, 16))


@pytest.fixture
def codec():
    torch.manual_seed(0)
    vq = VQGAN(CodecConfig(**TINY))
    pg = PixelGuidedDecoder.from_vqgan(vq)
    with torch.no_grad():  # a guide that adds something, so the previous frame's windows matter
        for o in pg.guide.outs:
            nn.init.normal_(o.weight, std=0.3)
    return NeuralCodec(vq, pg)


@contextlib.contextmanager
def held_statistics():
    """Every GroupNorm normalises with the statistics of its first call inside the block (the one-piece
    decode's, over the whole canvas): what then remains between tiles and one piece is the windows."""
    held = {}
    forward = nn.GroupNorm.forward

    def fixed(self, x):
        xg = x.reshape(x.shape[0], self.num_groups, -1)
        if self not in held:
            held[self] = xg.mean(-1, keepdim=True), xg.var(-1, unbiased=False, keepdim=True)
        mean, var = held[self]
        y = ((xg - mean) / torch.sqrt(var + self.eps)).reshape(x.shape)
        return y * self.weight[:, None, None] + self.bias[:, None, None]

    nn.GroupNorm.forward = fixed
    try:
        yield
    finally:
        nn.GroupNorm.forward = forward


@pytest.mark.parametrize("shape", [(1, 6, 100), (1, 60, 52)])  # wide, and tiled both ways
def test_tiles_give_the_whole_canvas_decode_where_the_statistics_agree(codec, shape):
    """With the GroupNorms' statistics held at the whole canvas's, tiled decoding is the one-piece
    decoding, plain and pixel-guided, but for float rounding (convolutions of other shapes round
    otherwise: one pixel value in 10,000 is 1 level off): the context covers the receptive field.
    A context of 4 tokens is 2-3 levels off on 0.3-0.5% of them."""
    torch.manual_seed(1)
    tokens = torch.randint(0, 64, shape)
    prev = torch.randint(0, 256, (1, shape[1] * 8, shape[2] * 8, 3), dtype=torch.uint8)
    tiling = codec.tiling
    for p in (None, prev):
        with held_statistics():
            codec.tiling = None
            whole = codec.decode(tokens, p)
            codec.tiling = tiling
            tiled = codec.decode(tokens, p)
        diff = (tiled.int() - whole.int()).abs()
        assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3, (diff.max(), (diff > 0).float().mean())


def test_tiled_decode_of_a_panorama_stays_within_a_few_levels_of_the_whole_canvas():
    """The shipped codec on a 2,048 px landscape: its windows normalise over themselves rather than
    over the whole canvas, and stay within 6 levels of the one-piece decode, 0.5 on average."""
    from streamgen.bundle import SHIPPED
    from streamgen.training.data import landscapes as L

    codec = NeuralCodec.load(SHIPPED / "vqgan.safetensors")
    tokens = codec.encode(torch.from_numpy(L.render(L.sample_scene(5), 128, 2048)))
    tiled = codec.decode(tokens).int()
    codec.tiling = None
    diff = (tiled - codec.decode(tokens).int()).abs()
    assert diff.max() <= 6 and diff.float().mean() <= 0.5, (diff.max(), diff.float().mean())
    assert diff.max() > 0  # the windows are in use


@pytest.mark.parametrize("length,tiling", [(10, Tiling(tile=4, blend=1, context=2)),
                                           (13, Tiling(tile=4, blend=2, context=0)),
                                           (9, Tiling(tile=9)), (3, Tiling(tile=8, blend=1))])
def test_strips_tile_the_canvas_in_order_and_need_only_their_window(length, tiling):
    palette = PaletteCodec(64, factor=2)
    tokens = torch.randint(0, 64, (1, 3, length))
    read = []

    def decode(t, p):  # a local codec, so any windows give its pixels exactly
        read.append(t.shape[2])
        return palette.decode(t)

    strips = StripDecoder(decode, tiling, 2, length, axis=2)
    offset, parts = 0, []
    while not strips.done:
        need = strips.needs()
        hidden = tokens.clone()
        hidden[:, :, need:] = -1  # not final yet: never read
        at, pixels = strips.next(hidden)
        assert at == offset and pixels.shape[1] == 6
        offset += pixels.shape[2]
        parts.append(pixels)
    assert offset == 2 * length
    assert torch.equal(torch.cat(parts, 2), palette.decode(tokens))
    assert max(read) <= tiling.span
    assert torch.equal(decode_tiled(decode, tokens, None, tiling, 2), palette.decode(tokens))


def test_neighbouring_windows_cross_fade_without_a_step():
    """Windows that decode to different flat levels (as different GroupNorm statistics would) meet in
    a linear ramp over 2 * blend tokens: 60 levels apart over 8 px, neighbouring pixels differ by at most
    the ramp's 7.5 levels and the dither's 1."""
    def decode(t, p):  # each window one flat level: its first token's
        return torch.full((1, t.shape[1] * 2, t.shape[2] * 2, 3), int(t[0, 0, 0]), dtype=torch.uint8)

    tokens = torch.arange(40).mul(6).expand(1, 2, 40)
    strips = StripDecoder(decode, Tiling(tile=10, context=1, blend=2), 2, 40)
    row = torch.cat([strips.next(tokens)[1] for _ in strips.windows], 2)[0, 0, :, 0].int()
    assert row[0] == 0 and row[-1] == 6 * 27  # the first and the last window's levels
    steps = row.diff()
    assert steps.min() >= 0 and steps.max() <= 9, steps


def neural_engine(codec):
    torch.manual_seed(0)
    return Engine(VisionDecoder(tiny_config()), codec)


@pytest.mark.parametrize("order", ["omega", "zeta"])
def test_strips_come_before_the_canvas_is_done_and_make_the_whole_image(codec, order):
    eng = neural_engine(codec)
    req = dict(height=64, width=32 * 8 * 4, order=order, seed=3) if order == "omega" else \
        dict(height=32 * 8 * 4, width=64, order=order, seed=3)
    whole = next(eng.run("uig", **req))
    patches, got = [], []
    for strip in eng.strips("uig", **req):
        patches.append(eng.stats.patches)
        got.append(strip)
    rows, cols = eng.grid(req["height"], req["width"])
    assert len(got) == 4 and patches[0] < rows * cols / 2  # the first strip long before the last patch
    assert all(s.canvas == whole.shape[:2] for s in got)
    axis = 1 if order == "omega" else 0
    assert [s.left if axis else s.top for s in got] == list(np.cumsum([0] + [s.pixels.shape[axis] for s in got[:-1]]))
    assert np.array_equal(np.concatenate([s.pixels for s in got], axis), whole)


def test_outpainting_strips_keep_the_given_image_where_it_is(engine):
    image = np.full((16, 64, 3), 200, np.uint8)
    req = dict(image=image, height=32, width=512, left=224, feather=4, seed=1)  # across a strip boundary
    whole = next(engine.run("io", **req))
    strips = list(engine.strips("io", **req))
    assert len(strips) == 4  # the palette codec's 128 px windows
    got = np.concatenate([s.pixels for s in strips], 1)
    assert np.array_equal(got, whole)
    assert (got[8 + 4:24 - 4, 224 + 4:288 - 4] == 200).all()  # inside the feathered edges


class WholeOnly:
    """A codec written before tiling: encode and decode only."""

    name, factor = "whole-only", 2

    def __init__(self):
        self.palette = PaletteCodec(64, factor=2)
        self.vocab_size, self.calls = 64, 0

    def encode(self, frames):
        return self.palette.encode(frames)

    def decode(self, tokens, prev=None):
        self.calls += 1
        return self.palette.decode(tokens)


def test_a_codec_without_tiling_gives_the_whole_canvas_as_one_strip_at_its_end():
    torch.manual_seed(0)
    codec = WholeOnly()
    eng = Engine(VisionDecoder(tiny_config()), codec)
    whole = next(eng.run("uig", height=16, width=512, seed=2))
    strips = list(eng.strips("uig", height=16, width=512, seed=2))
    assert len(strips) == 1 and (strips[0].top, strips[0].left) == (0, 0)
    assert np.array_equal(strips[0].pixels, whole)


def test_strips_of_a_video_task_are_refused(engine):
    with pytest.raises(ConfigError, match="`task` must make an image"):
        engine.strips("t2v", prompt="hills", frames=2)


PANO = ["generate", "--model", "tiny", "--task", "uig", "--size", "1024x16", "--seed", "4"]


def tiny_canvas():
    import streamgen

    return next(streamgen.load("tiny").run("uig", height=16, width=1024, seed=4))


def test_a_tile_folder_holds_the_canvas_and_is_not_written_twice(tmp_path, capsys):
    from streamgen.cli import main
    from streamgen.output.canvas import read_tiles

    folder = tmp_path / "pano"
    assert main([*PANO, "-o", f"{folder}/"]) == 0
    index = json.loads((folder / "index.json").read_text())
    assert (index["width"], index["height"], len(index["tiles"])) == (1024, 16, 8)  # 128 px strips
    assert [t["left"] for t in index["tiles"]] == list(range(0, 1024, 128))
    assert np.array_equal(read_tiles(folder), tiny_canvas())
    assert main([*PANO, "-o", f"{folder}/"]) == 2
    assert "new or empty tile folder" in capsys.readouterr().err


def test_a_scrolling_video_moves_along_the_canvas(tmp_path):
    import av

    from streamgen.cli import main

    out = tmp_path / "pano.mp4"
    assert main([*PANO, "-o", str(out), "--scroll", "32", "--view", "64"]) == 0
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                            "stream=nb_read_frames,width,height", "-of", "csv=p=0", str(out)],
                           capture_output=True, check=True, text=True)
    assert probe.stdout.split() == ["64,16,31"]  # (1024 - 64) / 32 + 1 frames
    canvas = tiny_canvas().astype(float)
    with av.open(str(out)) as f:
        frames = [fr.to_ndarray(format="rgb24").astype(float) for fr in f.decode(video=0)]
    for k in (0, 15, 30):
        here = np.abs(frames[k] - canvas[:, 32 * k:32 * k + 64]).mean()
        beside = np.abs(frames[k] - canvas[:, 32 * k + 8 - 16 * (k == 30):][:, :64]).mean()
        assert here < beside / 2, (k, here, beside)  # the frame shows its place, not 8 px beside it


def test_a_png_too_wide_is_refused_before_the_model_loads(monkeypatch, capsys, tmp_path):
    import streamgen.bundle
    from streamgen.cli import main

    monkeypatch.setattr(streamgen.bundle, "load", lambda *a, **k: pytest.fail("a model was loaded"))
    assert main([*PANO[:-4], "--size", "65536x128", "-o", str(tmp_path / "pano.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "`size` must be at most 65535 px a side for a PNG output" in err[0], err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("wavefront", [False, True])
def test_an_endless_canvas_gives_the_strips_of_a_finite_one(codec, wavefront):
    """Patch by patch an endless canvas draws what a finite omega canvas draws (the same uniforms by
    position, the same context), so their strips are equal up to the finite one's right edge, which
    only the last strip reads; 100 patch columns slide the endless token window twice."""
    import itertools

    eng = neural_engine(codec)
    eng.wavefront = wavefront
    finite = list(eng.strips("uig", height=64, width=8 * 4 * 100, seed=3))
    endless = list(itertools.islice(eng.strips("uig", height=64, endless=True, seed=3), len(finite) + 2))
    assert all(s.canvas == (64, None) for s in endless)
    assert [s.left for s in endless[:len(finite)]] == [s.left for s in finite]
    for a, b in zip(finite[:-1], endless):
        assert np.array_equal(a.pixels, b.pixels)
    assert endless[len(finite)].left == finite[-1].left + endless[len(finite) - 1].pixels.shape[1]


def test_a_tall_endless_canvas_keeps_the_columns_its_wavefronts_and_strips_read(engine):
    """72 patch rows: a wavefront spans 36 columns, more than half of `ENDLESS_WINDOW`, and a strip
    reads 16 more behind them; the window keeps them all (keeping half of `ENDLESS_WINDOW` fails
    here), and the strips stay a finite canvas's."""
    import itertools

    from streamgen.engine.adc import EndlessPlan
    from streamgen.engine.core import ENDLESS_WINDOW

    assert engine.wavefront
    req = dict(height=72 * 4 * 2, seed=5)
    assert engine._endless_keep(EndlessPlan(72, engine.check_extent(None))) > ENDLESS_WINDOW // 2
    finite = list(engine.strips("uig", **req, width=110 * 4 * 2))  # 110 columns: the window slides
    endless = list(itertools.islice(engine.strips("uig", **req, endless=True), len(finite)))
    for a, b in zip(finite[:-1], endless):
        assert np.array_equal(a.pixels, b.pixels)


def test_an_endless_canvas_holds_a_window_of_tokens(engine):
    """Its tokens are a window of `ENDLESS_WINDOW` columns that slides as the columns are drawn:
    nothing grows with them."""
    from streamgen.config import Extent
    from streamgen.engine.adc import EndlessPlan
    from streamgen.engine.core import ENDLESS_WINDOW, TokenPart

    parts = engine.generate_tokens(EndlessPlan(2, Extent(w=1, h=1, f=0)), seed=1, parts=True)
    seen = []
    for part in parts:
        assert isinstance(part, TokenPart)
        seen.append((part.left, part.tokens.shape))
        if len(seen) == 2 * 3 * ENDLESS_WINDOW:  # 3 windows of columns
            break
    parts.close()
    assert {shape for _, shape in seen} == {(1, 2 * 4, ENDLESS_WINDOW * 4)}
    lefts = sorted({left for left, _ in seen})
    assert len(lefts) >= 4 and max(lefts) >= 2 * ENDLESS_WINDOW  # slid by about half a window at a time


def test_an_endless_canvas_is_refused_where_whole_frames_are_asked(engine, tmp_path, capsys):
    from streamgen.cli import main
    from streamgen.engine.adc import EndlessPlan

    with pytest.raises(ConfigError, match="`endless` an endless canvas never has a whole frame"):
        engine.run("uig", height=16, endless=True)
    with pytest.raises(ConfigError, match="`order` must be omega"):
        engine.strips("uig", height=16, endless=True, order="zeta")
    with pytest.raises(ConfigError, match="`width` must not be given for an endless canvas"):
        engine.strips("uig", height=16, width=256, endless=True)
    with pytest.raises(ConfigError, match="`parts` must be true for an endless canvas"):
        next(engine.generate_tokens(EndlessPlan(2, engine.check_extent(None))))
    torch.manual_seed(0)
    whole_only = Engine(VisionDecoder(tiny_config()), WholeOnly())  # it decodes whole canvases only
    with pytest.raises(ConfigError, match="`codec` must decode in windows"):
        whole_only.strips("uig", height=16, endless=True)
    args = ["generate", "--model", "tiny", "--size", "infx16"]
    for extra, message in ((["--task", "uig", "-o", str(tmp_path / "p.png")], "`size` an endless canvas goes strip"),
                           (["--task", "t2v", "--prompt", "hills", "-o", str(tmp_path / "v.mp4")],
                            "`size` an endless width is for tasks with endless canvases")):
        assert main([*args, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert not list(tmp_path.iterdir())


def run_until(args, ready, sig: str = "SIGTERM") -> None:
    """`streamgen generate` (the tiny model, one thread) with ``args`` until ``ready()``, then ``sig``: it
    must end as a stop signal ends it, with exit code 128 + the signal."""
    import os
    import signal
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "streamgen.cli", *PANO[:-4], *args], stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while not ready():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + getattr(signal, sig), err.decode()[-2000:]


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_an_endless_panorama_runs_until_a_signal_and_keeps_every_tile(tmp_path, sig):
    """`--size infx16 -o DIR/` writes tiles until it is stopped; the signal closes the folder with an
    index of every tile written, and they are the strips `Engine.strips` gives."""
    import itertools

    import streamgen
    from streamgen.output.canvas import read_tiles

    folder = tmp_path / "pano"
    run_until(["--size", "infx16", "--seed", "4", "-o", f"{folder}/"], lambda: len(list(folder.glob("*.png"))) >= 6, sig)
    index = json.loads((folder / "index.json").read_text())
    tiles = index["tiles"]
    assert len(tiles) >= 6 and len(tiles) == len(list(folder.glob("*.png")))
    assert index["width"] == sum(t["width"] for t in tiles) and index["height"] == 16
    assert index["complete"] is False and index["canvas"] == [None, 16]
    strips = itertools.islice(streamgen.load("tiny").strips("uig", height=16, endless=True, seed=4), len(tiles))
    assert np.array_equal(read_tiles(folder), np.concatenate([s.pixels for s in strips], 1))


def test_an_endless_panorama_scrolls_into_a_video_until_stopped(tmp_path):
    out = tmp_path / "pano.mp4"
    run_until(["--size", "infx16", "--scroll", "8", "--view", "32", "-o", str(out)],
              lambda: out.exists() and out.stat().st_size >= 20_000)
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                            "stream=nb_read_frames,width,height", "-of", "csv=p=0", str(out)],
                           capture_output=True, check=True, text=True)
    width, height, frames = probe.stdout.strip().split(",")
    assert (width, height) == ("32", "16") and int(frames) > 50  # past the 128 px default canvas's 13


@pytest.mark.parametrize("bands", ["columns", "rows"])
def test_a_tile_folder_stopped_early_indexes_what_was_drawn(tmp_path, bands):
    from streamgen.output.canvas import TileFolder, read_tiles

    canvas = np.random.default_rng(0).integers(0, 256, (16, 64, 3), dtype=np.uint8)
    pieces = [canvas[:, x:x + 16] for x in range(0, 64, 16)] if bands == "columns" else \
        [canvas[y:y + 4] for y in range(0, 16, 4)]
    for n, name in ((4, "whole"), (2, "half")):
        folder = TileFolder(str(tmp_path / name), size=(64, 16))
        for piece in pieces[:n]:
            folder.write(piece)
        folder.close()
        index = json.loads((tmp_path / name / "index.json").read_text())
        drawn = canvas if n == 4 else canvas[:, :32] if bands == "columns" else canvas[:8]
        assert index["complete"] is (n == 4) and index["canvas"] == [64, 16]
        assert (index["height"], index["width"]) == drawn.shape[:2]
        assert np.array_equal(read_tiles(tmp_path / name), drawn)
