"""Steering a running stream: prompts and sampling that change at frame boundaries, from a schedule,
from a plugin or from outside, while the pool (and so the scene) goes on."""
import numpy as np
import pytest
import torch

from streamgen import ConfigError, SamplingConfig
from streamgen.bundle import load
from streamgen.engine import snapshot as snap
from streamgen.engine.adc import Plan
from streamgen.engine.core import Update
from streamgen.plugins.task import Job, Task, TaskEnv
from streamgen.testing import tiny_engine

SIZE = dict(height=32, width=32)


@pytest.fixture(scope="module")
def eng():
    return load("tiny")  # a tiny random model with a stand-in text encoder


def frames(it):
    return [np.asarray(f) for f in it]


def test_frames_before_a_switch_are_those_of_a_run_without_it(eng):
    plain = frames(eng.run("t2v", prompt="a day sky over grassy hills", frames=6, **SIZE))
    scheduled = frames(eng.run("t2v", prompt="a day sky over grassy hills", frames=6,
                               prompts={"3": "a night sky over desert dunes"}, **SIZE))
    assert all(np.array_equal(a, b) for a, b in zip(plain[:3], scheduled[:3]))
    assert not any(np.array_equal(a, b) for a, b in zip(plain[3:], scheduled[3:]))


def test_a_live_change_equals_the_schedule_that_names_the_same_frame(eng):
    scheduled = frames(eng.run("t2v", prompt="a day sky", frames=6, prompts={3: "a night sky"}, **SIZE))
    stream = eng.open("t2v", prompt="a day sky", frames=6, **SIZE)
    live = []
    for i, frame in enumerate(stream):
        live.append(frame)
        if i == 2:  # taken frames 0-2: the change applies to frame 3, the next one drawn
            stream.set(prompt="a night sky")
    assert stream.prompt == "a night sky"
    assert all(np.array_equal(a, b) for a, b in zip(scheduled, live))


def test_nothing_is_drawn_ahead_of_the_consumer(eng):
    stream = eng.open("t2v", prompt="a day sky", frames=None, **SIZE)
    for _ in range(3):
        next(stream)
    assert eng.stats.frames == 3
    stream.set(sampling={"temperature": 0.5})
    next(stream)
    assert stream.sampling.temperature == 0.5 and eng.stats.frames == 4
    stream.close()


def test_a_bad_change_is_refused_at_once_and_the_stream_goes_on_unchanged(eng):
    plain = frames(eng.run("t2v", prompt="a day sky", frames=4, **SIZE))
    stream = eng.open("t2v", prompt="a day sky", frames=4, **SIZE)
    got = [next(stream)]
    for bad, words in [(dict(prompt=""), "`prompt` must not be empty"),
                       (dict(sampling={"temperature": -1}), "sampling.temperature"),
                       (dict(sampling={"top_k": "many"}), "sampling.top_k"),
                       (dict(sampling={"guidance": 1.0}), "cannot turn classifier-free guidance off"),
                       (dict(sampling={"local": "pnar"}), "sampling.local")]:
        with pytest.raises(ConfigError, match=words):
            stream.set(**bad)
    got += list(stream)
    assert all(np.array_equal(a, b) for a, b in zip(plain, got))
    with pytest.raises(ConfigError, match="no text conditioning"):
        eng.open("uig", **SIZE).set(prompt="a night sky")


def test_a_resumed_steered_stream_gives_the_uninterrupted_frames(eng, tmp_path):
    def run(stop=None, resume=None):
        stream = eng.open("t2v", prompt="a day sky", frames=8, prompts={6: "a sunset sky"}, resume=resume, **SIZE)
        out = []
        for frame in stream.frames():
            out.append(frame.pixels)
            done = frame.state.frames_done
            if done == 2:
                stream.set(prompt="a night sky", sampling={"temperature": 0.7})  # from frame 2 on
            if done == stop:
                snap.save(tmp_path / "s.snap", frame.state, {})
                stream.close()
                break
        return out

    whole = run()
    head = run(stop=4)
    state, _ = snap.load(tmp_path / "s.snap")
    assert state.conditioning == {"prompt": "a night sky", "sampling": {**state.conditioning["sampling"],
                                                                        "temperature": 0.7}}
    tail = frames(f.pixels for f in eng.open("t2v", prompt="a day sky", frames=8, prompts={6: "a sunset sky"},
                                              resume=state, **SIZE).frames())
    assert len(head) == 4 and len(tail) == 4
    assert all(np.array_equal(a, b) for a, b in zip(whole, head + tail))


class Blink(Task):
    """A plugin's storyboard: the prompt alternates every two frames."""

    name, output, needs_text = "blink", "video", True
    from tasks.builtin import T2VRequest as Request  # noqa: N814 - the t2v request, schedule unused

    def job(self, req, env: TaskEnv) -> Job:
        rows, cols = env.grid(req.height, req.width)
        plan = Plan.basic("omega", rows, cols, req.frames, env.extent(req.extent))
        return Job(plan, "video", prompt=req.prompt,
                   steer=lambda f: {"prompt": "a night sky" if f // 2 % 2 else req.prompt})


@pytest.mark.parametrize("frames_back", [1, 2])
def test_a_recache_right_after_a_resume_gives_the_uninterrupted_frames(tmp_path, frames_back):
    """The snapshot keeps the tokens of every frame the pool's caches came from (and the one before,
    for their previous-frame hints), so a new prompt recached at the first frame after a resume
    recomputes the same caches as the uninterrupted stream does."""
    from streamgen.testing import HashTextEncoder

    eng = tiny_engine(text_dim=8, prev_frame=True, neighbours=True, extent=dict(w=1, h=1, f=frames_back))
    with torch.no_grad():  # zero at initialisation: the hints would change nothing
        eng.model.prev_emb.normal_(0, 1.0)
        eng.model.nbr_emb.normal_(0, 1.0)
    eng.text_encoder = HashTextEncoder(8)

    def run(stop=None, resume=None):
        stream = eng.open("t2v", prompt="a day sky", frames=7, recache=True, resume=resume, **SIZE)
        out = []
        for frame in stream.frames():
            out.append(frame.pixels)
            if frame.state.frames_done == 4:
                stream.set(prompt="a night sky")  # from frame 4 on: the pool recached under it
            if frame.state.frames_done == stop:
                snap.save(tmp_path / "s.snap", frame.state, {})
                stream.close()
                break
        return out

    whole, head = run(), run(stop=4)
    state, _ = snap.load(tmp_path / "s.snap")
    assert sorted(state.history) == list(range(3 - frames_back, 4))
    stream = eng.open("t2v", prompt="a day sky", frames=7, recache=True, resume=state, **SIZE)
    stream.set(prompt="a night sky")
    tail = frames(f.pixels for f in stream.frames())
    assert len(head) == 4 and len(tail) == 3
    assert all(np.array_equal(a, b) for a, b in zip(whole, head + tail))


def test_a_plugin_steers_its_own_stream_frame_by_frame(eng):
    by_plugin = frames(eng.run(Blink(), prompt="a day sky", frames=6, **SIZE))
    by_schedule = frames(eng.run("t2v", prompt="a day sky", frames=6,
                                 prompts={2: "a night sky", 4: "a day sky"}, **SIZE))
    assert all(np.array_equal(a, b) for a, b in zip(by_plugin, by_schedule))


def test_a_recache_under_the_same_prompt_changes_nothing():
    """The recache recomputes each pool entry from its tokens, context, edges and hints as generation
    made it: under the same text it must give back the same caches, so the same next frames. (At the
    first frame boundary the pool still holds every patch of frame 0, so nothing any of them read is
    missing; later, caches already dropped are not there to read.)"""
    eng = tiny_engine(text_dim=8, prev_frame=True, neighbours=True, edges=True, rel_bias=True)
    torch.manual_seed(1)
    text = torch.randn(1, 3, 8)
    plan = Plan.basic("omega", 3, 3, 4, eng.model.extent)
    sampling = SamplingConfig(**eng.preset)  # top-k 64, guidance 3: the [cond; uncond] rows are recached too
    plain = [t for _, t, _ in eng.generate_tokens(plan, text=text, sampling=sampling)]
    same = [t for _, t, _ in eng.generate_tokens(
        plan, text=text, sampling=sampling, updates=lambda f: Update(text=text, recache=True) if f == 1 else None)]
    other = [t for _, t, _ in eng.generate_tokens(
        plan, text=text, sampling=sampling,
        updates=lambda f: Update(text=torch.randn(1, 3, 8), recache=True) if f == 1 else None)]
    assert all(torch.equal(a, b) for a, b in zip(plain, same))
    assert torch.equal(plain[0], other[0]) and not torch.equal(plain[1], other[1])


class Flicker(Blink):
    """A steer that answers differently each time it is asked: a resumed stream could not repeat it."""

    name = "flicker"

    def job(self, req, env: TaskEnv) -> Job:
        job = super().job(req, env)
        calls = iter(range(1000))
        job.steer = lambda f: {"prompt": f"a sky {next(calls)}"}
        return job


class LostPixels(Task):
    """A task that gives the user's picture at a place outside its frames: the kit must notice."""

    name, output = "lost", "image"
    from tasks.builtin import UIGRequest as Request  # noqa: N814

    def job(self, req, env: TaskEnv) -> Job:
        from streamgen.plugins.task import Given

        rows, cols = env.grid(req.height, req.width)
        image = np.full((8, 8, 3), 7, np.uint8)
        return Job(Plan.basic("omega", rows, cols, 1, env.extent(req.extent)), "image",
                   given=[Given(0, image, top=12, left=4)])


def test_the_conformance_kit_checks_steering_and_given_pixels():
    from streamgen.testing import check_task

    assert len(check_task(Blink(), dict(prompt="a day sky", frames=4, height=16, width=16), frames=4)) == 4
    with pytest.raises(AssertionError, match="same change every time"):
        check_task(Flicker(), dict(prompt="a day sky", frames=3, height=16, width=16))
    with pytest.raises(AssertionError, match=r"gives 8x8 px at \(4, 12\) of frame 0, which leave the 16x16 px frame"):
        check_task(LostPixels(), dict(height=16, width=16))
