"""`Engine.native_step`: the decode step's layers in C++ give the frames of the Python loop, bit for bit.

The first test builds the extension (about 35 s of one core, once per machine: torch keeps the build).
"""
import threading

import numpy as np
import pytest
import torch

from streamgen.config import SamplingConfig
from streamgen.errors import ConfigError
from streamgen.testing import HashTextEncoder, tiny_engine

SIZE = dict(height=32, width=48)  # 2 x 3 patches: wavefront rounds of rows with different contexts


def engine(**over):
    e = tiny_engine(text_dim=8, pnar=True, edges=True, prev_frame=True, neighbours=True, text_pooled=True, **over)
    e.text_encoder = HashTextEncoder(8)
    return e


def frames(eng, native, precision="fp32", n=3, seed=1, **req):
    eng.native_step, eng.precision = native, precision
    return [np.asarray(f) for f in eng.run("t2v", prompt="a night sky over desert dunes", frames=n, seed=seed,
                                           sampling={"guidance": 3.0, "top_k": 16}, **SIZE, **req)]


@pytest.mark.parametrize("rel_bias", [False, True], ids=["pad-mask", "per-layer-bias"])
@pytest.mark.parametrize("precision", ["fp32", "mixed"])
def test_native_decode_step_gives_the_frames_of_the_python_loop(rel_bias, precision):
    eng = engine(rel_bias=rel_bias)
    calls = []
    from streamgen.model import native

    step = native.NativeStep.__call__
    native.NativeStep.__call__ = lambda self, *a: (calls.append(1), step(self, *a))[1]
    try:
        got = frames(eng, True, precision)
    finally:
        native.NativeStep.__call__ = step
    want = frames(engine(rel_bias=rel_bias), False, precision)
    assert calls  # the C++ step ran
    assert all(np.array_equal(a, b) for a, b in zip(got, want))
    assert not np.array_equal(got[0], frames(eng, True, precision, seed=2)[0])  # and the frames depend on the draw


def test_streams_on_two_threads_with_the_native_step_get_the_frames_they_get_alone():
    eng = engine(rel_bias=True)
    torch.set_num_threads(1)
    out = {}

    def run(seed):
        out[seed] = frames(eng, True, n=4, seed=seed)

    threads = [threading.Thread(target=run, args=(s,)) for s in (1, 2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    for seed in (1, 2):
        assert all(np.array_equal(a, b) for a, b in zip(out[seed], frames(engine(rel_bias=True), False, n=4, seed=seed)))


def test_native_step_refuses_xformers_attention_and_says_why_a_build_failed(monkeypatch):
    eng = engine()
    eng.native_step, eng.attention = True, "xformers"
    with pytest.raises(ConfigError, match="`native_step` runs torch's attention kernels: it needs attention 'sdpa', "
                                          "but got 'xformers'"):
        eng.check_settings(SamplingConfig())
    from torch.utils import cpp_extension

    from streamgen.model import native

    def no_compiler(*args, **kwargs):
        raise RuntimeError("Error building extension 'streamgen_native_step':\nc++: not found")

    native.module.cache_clear()
    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    eng.attention = "sdpa"
    try:
        with pytest.raises(ConfigError) as err:
            eng.check_settings(SamplingConfig())
    finally:
        native.module.cache_clear()  # the next user builds (or finds) the real one
    msg = str(err.value)
    assert msg.startswith("`native_step` needs a C++ compiler and ninja") and "c++: not found" in msg
    assert "\n" not in msg


def test_generate_with_native_step_writes_the_same_image(tmp_path):
    from streamgen.cli import main

    for name, extra in (("eager.png", []), ("native.png", ["--native-step"])):
        assert main(["generate", "--task", "t2i", "--model", "tiny", "--prompt", "a day sky", "--size", "32x32", "--seed", "3",
                     "-o", str(tmp_path / name), *extra]) == 0
    assert (tmp_path / "eager.png").read_bytes() == (tmp_path / "native.png").read_bytes()
