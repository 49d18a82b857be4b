"""Continuous batching: `Engine.step` draws the next frame of several streams together, streams join
and leave between steps, and every stream gives the frames it gives alone."""
import numpy as np
import pytest

from streamgen.engine.adc import Plan
from streamgen.plugins.task import Job, Task, TaskEnv
from streamgen.testing import HashTextEncoder, tiny_engine

SIZE = dict(height=32, width=32)
# guidance (two rows a stream), top-k and the border redraw (a P-NAR pass and a prefill per patch)
SAMPLING = {"guidance": 3.0, "top_k": 16, "refine_borders": 0.6}


@pytest.fixture(scope="module")
def eng():
    """Every option of the shipped architecture, so each of its inputs is batched."""
    e = tiny_engine(text_dim=8, pnar=True, rel_bias=True, edges=True, prev_frame=True, neighbours=True,
                    text_pooled=True)
    e.text_encoder = HashTextEncoder(8)
    return e


REQUESTS = [dict(prompt="a day sky over grassy hills", seed=1),
            dict(prompt="night", seed=2, prompts={"3": "a pink sunset over the dunes by a lake"}),
            dict(prompt="a sunset over snowy mountains, the camera pans right", seed=3)]


def alone(eng, req, frames):
    return [np.asarray(f) for f in eng.run("t2v", frames=frames, sampling=SAMPLING, **SIZE, **req)]


def test_streams_that_join_and_leave_give_the_frames_they_give_alone(eng, monkeypatch):
    widths = []  # patches per decoder pass
    draw = type(eng)._draw
    monkeypatch.setattr(type(eng), "_draw", lambda self, group, ws: (widths.append(len(group)), draw(self, group, ws)))
    # stream 0 from the first step, stream 1 joins at step 2, stream 2 at step 3; 0 leaves after its 5 frames
    lengths, joins = [5, 6, 4], [0, 2, 3]
    streams, got = {}, {i: [] for i in range(3)}
    for t in range(8):
        for i, at in enumerate(joins):
            if t == at:
                streams[i] = eng.open("t2v", frames=lengths[i], sampling=SAMPLING, **SIZE, **REQUESTS[i])
        live = list(streams.items())
        for (i, s), frame in zip(live, eng.step([s for _, s in live])):
            if frame is None:
                del streams[i]
            else:
                got[i].append(frame.pixels)
    assert max(widths) == 3  # all three drew their patches in one pass
    for i in range(3):
        expected = alone(eng, REQUESTS[i], lengths[i])
        assert len(got[i]) == lengths[i]
        assert all(np.array_equal(a, b) for a, b in zip(expected, got[i])), f"stream {i}"


def test_a_stream_steered_inside_a_batch_gives_the_frames_of_its_schedule(eng):
    a = eng.open("t2v", frames=5, sampling=SAMPLING, **SIZE, **REQUESTS[0])
    b = eng.open("t2v", frames=5, sampling=SAMPLING, **SIZE, **REQUESTS[2])
    got = []
    for t in range(5):
        if t == 2:
            a.set(prompt="a night sky over desert dunes")
        got.append(eng.step([a, b])[0].pixels)
    expected = alone(eng, {**REQUESTS[0], "prompts": {"2": "a night sky over desert dunes"}}, 5)
    assert all(np.array_equal(x, y) for x, y in zip(expected, got))


class Faulty(Task):
    """A plugin whose steering raises at frame 2."""

    name, output, needs_text = "faulty", "video", True
    from tasks.builtin import T2VRequest as Request  # noqa: N814

    def job(self, req, env: TaskEnv) -> Job:
        rows, cols = env.grid(req.height, req.width)
        plan = Plan.basic("omega", rows, cols, req.frames, env.extent(req.extent))

        def steer(f):
            if f == 2:
                raise RuntimeError("the plugin broke")
            return {}

        return Job(plan, "video", prompt=req.prompt, steer=steer)


def test_a_stream_whose_task_raises_ends_alone(eng):
    good = eng.open("t2v", frames=4, sampling=SAMPLING, **SIZE, **REQUESTS[0])
    bad = eng.open(Faulty(), frames=4, sampling=SAMPLING, **SIZE, prompt="a day sky", seed=5)
    got = []
    for _ in range(4):
        frame, broken = eng.step([good, bad])
        got.append(frame.pixels)
        if broken is None:
            assert bad.closed and "the plugin broke" in str(bad.error)
    assert bad.error is not None and len(got) == 4
    assert all(np.array_equal(x, y) for x, y in zip(alone(eng, REQUESTS[0], 4), got))
