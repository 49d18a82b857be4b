"""The user's own pixels come back as they were: outpainting keeps the input inside its box (a thin
blended band where generated content meets it), animation keeps frame 0 as given."""
import numpy as np
import pytest
import torch

from streamgen.engine.core import paste
from streamgen.plugins.task import Given
from streamgen.testing import tiny_engine


def photo(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("feather", [0, 3])
def test_outpainting_returns_the_input_inside_its_box(feather):
    eng = tiny_engine()
    image = photo(32, 32)
    (out,) = eng.run("io", image=image, height=64, width=96, top=16, left=32, feather=feather)
    box = out[16:48, 32:64]
    k = feather
    assert np.array_equal(box[k:32 - k, k:32 - k], image[k:32 - k, k:32 - k])  # exactly, inside the band
    # outside the box: the same generated canvas whatever the band
    (plain,) = eng.run("io", image=image, height=64, width=96, top=16, left=32, feather=0)
    outside = np.ones((64, 96), bool)
    outside[16:48, 32:64] = False
    assert np.array_equal(out[outside], plain[outside])
    if k:  # the band is a mix: between the generated and the given pixel at every place
        decoded = eng.codec.decode(eng.codec.encode(torch.from_numpy(plain)[None]))[0].numpy()[16:48, 32:64]
        lo, hi = np.minimum(decoded, image).astype(int), np.maximum(decoded, image).astype(int)
        assert not np.array_equal(box, image)
        assert ((box >= lo - 1) & (box <= hi + 1)).all()


def test_the_palette_codec_alone_would_not_keep_the_input():
    """What the tests above guard against: the codec's reconstruction of the input is not the input."""
    eng = tiny_engine()
    image = photo(32, 32)
    rec = eng.codec.decode(eng.codec.encode(torch.from_numpy(image)[None]))[0].numpy()
    assert not np.array_equal(rec, image)


def test_paste_blends_only_along_edges_that_meet_generated_pixels():
    frame = torch.zeros(1, 8, 12, 3, dtype=torch.uint8)
    image = np.full((4, 6, 3), 200, np.uint8)
    out = paste(frame, Given(0, image, top=0, left=6, feather=2))[0].numpy()
    assert (out[:, :6] == 0).all()  # outside the box: the decoded frame
    inside = out[:4, 6:]
    # the box touches the top and right borders of the frame: no band there; left and bottom edges blend
    assert (inside[:2, 2:] == 200).all()
    assert inside[0, 0, 0] < inside[0, 1, 0] < inside[0, 2, 0] == 200  # the left edge's band
    assert inside[3, 3, 0] < inside[2, 3, 0] < inside[1, 3, 0] == 200  # the bottom edge's band
    assert ((inside > 0) & (inside <= 200)).all()


def test_animation_keeps_frame_zero_and_a_batch_keeps_each_streams_input():
    eng = tiny_engine()
    image = photo(32, 32, seed=1)
    frames = list(eng.run("ia", image=image, frames=3))
    assert np.array_equal(frames[0], image) and not np.array_equal(frames[1], image)
    a, b = photo(32, 32, seed=2), photo(32, 32, seed=3)
    reqs = [dict(image=a, height=64, width=64, seed=0, feather=0), dict(image=b, height=64, width=64, seed=1, feather=0)]
    (batch,) = list(eng.run_batch("io", reqs))
    for got, req in zip(batch, reqs):
        assert np.array_equal(got[16:48, 16:48], req["image"])
        (alone,) = eng.run("io", **req)
        assert np.array_equal(got, alone)
