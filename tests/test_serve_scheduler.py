"""The server's scheduler: streams join and leave between frames, each gets the frames it gets alone,
and a stream that raises leaves alone while the others go on."""
import threading
from dataclasses import replace

import numpy as np
import torch

import streamgen
from streamgen.plugins import manager
from streamgen.engine.threads import ThreadTuner
from streamgen.serve.scheduler import Scheduler, advance


class Collect:
    """A scheduler member that takes ``n`` frames as fast as they come (always due), then leaves;
    ``then(scheduler)`` runs on the worker after its ``after``-th frame."""

    def __init__(self, id, stream, n, after=None, then=None):
        self.id, self.stream, self.n, self.after, self.then = id, stream, n, after, then
        self.frames, self.state, self.error = [], None, None
        self.left = threading.Event()

    def due(self):
        return 0.0

    def ready(self):
        return True

    def took(self, frame, done):
        self.frames.append(frame.pixels.copy())
        if len(self.frames) == self.after:
            self.then()

    def wants_to_leave(self):
        return ("stopped", None) if len(self.frames) >= self.n else None

    def leave(self, state, error=None):
        self.state, self.error = state, error
        self.stream.close()
        self.left.set()


def alone(engine, seed, prompt, n):
    """The first ``n`` frames of the stream run by itself."""
    return [f for f, _ in zip(engine.run("t2v", prompt=prompt, width=32, height=32, frames=None, seed=seed), range(n))]


def test_streams_join_and_leave_between_frames_with_the_frames_they_get_alone():
    torch.set_num_threads(1)
    engine = streamgen.load("tiny")
    open_ = lambda seed, prompt: engine.open("t2v", prompt=prompt, width=32, height=32, frames=None, seed=seed)  # noqa: E731
    scheduler = Scheduler()
    b = Collect("b", open_(2, "a night sky over dunes"), n=5)
    c = Collect("c", open_(3, "a day sky"), n=2)
    a = Collect("a", open_(1, "a day sky over hills"), n=6, after=2,
                then=lambda: (scheduler.add(b), scheduler.add(c)))  # they join a running scheduler
    scheduler.call(lambda: scheduler.add(a))
    scheduler.start()
    for m in (a, b, c):
        assert m.left.wait(120), m.id
    scheduler.stop()
    assert [len(m.frames) for m in (a, b, c)] == [6, 5, 2] and a.state == b.state == c.state == "stopped"
    assert scheduler.rounds == 2 + 4 + 1  # a alone, a with b (and c for two rounds), b alone after a left
    for m, seed, prompt in ((a, 1, "a day sky over hills"), (b, 2, "a night sky over dunes"), (c, 3, "a day sky")):
        want = alone(engine, seed, prompt, len(m.frames))
        assert all(np.array_equal(x, y) for x, y in zip(m.frames, want)), m.id


class Recording(ThreadTuner):
    """A tuner that notes each unit it is told of, (thread count, frames), in ``log`` (its copies too)."""

    log: list

    def fresh(self):
        copy = super().fresh()
        copy.log = self.log
        return copy

    def took(self, seconds, frames=1):
        self.log.append((self.count(), frames))
        super().took(seconds, frames)


def test_a_tuner_times_each_round_by_its_frames_and_sets_the_threads_between_rounds():
    torch.set_num_threads(1)
    engine = streamgen.load("tiny")
    tuner = Recording(2, first=1, every=2, trial=1)
    units = tuner.log = []
    sets = []
    scheduler = Scheduler(tuner, set_threads=sets.append)  # recorded, not applied: torch stays on one thread
    members = [Collect(k, engine.open("t2v", prompt="a day sky", width=32, height=32, frames=None, seed=i), n=5)
               for i, k in enumerate("ab")]
    scheduler.call(lambda: [scheduler.add(m) for m in members])
    scheduler.start()
    for m in members:
        assert m.left.wait(120), m.id
    scheduler.stop()
    assert [frames for _, frames in units] == [2] * 5  # one unit a round, of both streams' frames
    assert [n for n, _ in units][:2] == [2, 1]  # the first round on two threads, the trial's on one
    assert sets == [n for i, (n, _) in enumerate(units) if i == 0 or n != units[i - 1][0]]
    assert scheduler.threads == units[-1][0]
    assert list(scheduler.tuners) == [2]  # every round had both streams


def test_rounds_of_different_sizes_are_timed_apart_so_single_rounds_do_not_end_the_lanes(monkeypatch):
    """On a fake clock, a frame costs 1.0 s alone on two threads, 0.5 s in two lanes of one stream
    each, and 0.8 s in one batch of two on one thread. The second stream joins when the first trial of
    one thread starts: timed with the single rounds before it, that trial looked faster than the
    rounds on two threads and the lanes gave way to one thread until the next trial; timed apart, the
    two-stream rounds run in lanes except for the trials themselves (3 rounds each)."""
    import types

    import streamgen.serve.scheduler as S
    from streamgen.engine.core import Frame

    clock, lock = [0.0], threading.Lock()
    monkeypatch.setattr(S.time, "monotonic", lambda: clock[0])
    scheduler = Scheduler(ThreadTuner(2, first=4, every=8, trial=3, spread=0), set_threads=lambda n: None, lanes=2)

    def fake_advance(streams):
        cost = 1.0 if len(scheduler.members) == 1 else 0.5 if len(streams) == 1 else 1.6
        with lock:
            clock[0] += cost
        return [Frame(np.zeros((2, 2, 3), np.uint8), None, None) for _ in streams]

    monkeypatch.setattr(S, "advance", fake_advance)
    stream = types.SimpleNamespace(close=lambda: None)
    b = Collect("b", stream, n=30)
    a = Collect("a", stream, n=40, after=4, then=lambda: scheduler.add(b))  # b joins after 4 rounds of a
    lanes = []
    took = Collect.took
    monkeypatch.setattr(Collect, "took", lambda self, frame, done: (
        lanes.append(scheduler.lanes_used) if self is b else None, took(self, frame, done)))
    scheduler.call(lambda: scheduler.add(a))
    scheduler.start()
    assert a.left.wait(60) and b.left.wait(60)
    scheduler.stop()
    assert sorted(scheduler.tuners) == [1, 2] and len(lanes) == 30
    one_batch = "".join(str(n) for n in lanes).split("2")
    assert max(len(run) for run in one_batch) == 3, lanes  # a trial's 3 rounds, never longer
    assert lanes.count(1) == 6 and scheduler.tuners[2].current == 2, lanes  # two trials, both lost

def test_streams_are_split_into_lanes_each_drawn_on_its_own_thread_with_the_frames_they_get_alone():
    """With two lanes, a round of several streams is two batches drawn at once on two threads of one
    torch thread each (two streams a batch here, so both lanes draw batches of the same shape at
    once); a round of one stream is one batch on all the threads; no frame changes."""
    torch.set_num_threads(1)
    engine = streamgen.load("tiny")
    calls, step = [], engine.step
    engine.step = lambda streams: (calls.append((threading.current_thread().name, len(streams))), step(streams))[1]
    sets = []
    scheduler = Scheduler(set_threads=lambda n: sets.append((threading.current_thread().name, n)), lanes=2,
                          threads=2)
    prompts = ["a day sky over hills", "a night sky over dunes", "a sunset over a lake", "a day sky"]
    members = [Collect(k, engine.open("t2v", prompt=p, width=32, height=32, frames=None, seed=i), n=n)
               for i, (k, p, n) in enumerate(zip("abcd", prompts, (3, 5, 5, 7)))]
    scheduler.call(lambda: [scheduler.add(m) for m in members])
    scheduler.start()
    for m in members:
        assert m.left.wait(120), m.id
    scheduler.stop()
    for i, m in enumerate(members):
        want = alone(engine, i, prompts[i], len(m.frames))
        assert len(m.frames) == m.n and all(np.array_equal(x, y) for x, y in zip(m.frames, want)), m.id
    worker = [k for n, k in calls if n == "streamgen-scheduler"]
    lane = [k for n, k in calls if n.startswith("streamgen-lane")]
    # rounds 1-3: a, c on the worker and b, d on the lane; 4-5: b, d and c; 6-7: d alone, on the worker
    assert worker == [2, 2, 2, 2, 2, 1, 1] and lane == [2, 2, 2, 1, 1]
    assert scheduler.rounds == 7 and scheduler.lanes_used == 1
    assert [n for t, n in sets if t.startswith("streamgen-lane")] == [1]  # the lane's one thread, set once
    assert [n for t, n in sets if t == "streamgen-scheduler"] == [1, 2]  # split rounds on one, then all


def sick_task():
    """t2v whose plugin raises while steering frame 1."""
    t2v = manager().tasks.get("t2v")

    class Sick(type(t2v)):
        def job(self, request, env):
            def steer(f):
                if f >= 1:
                    raise RuntimeError("the plugin broke\nat frame 1")

            return replace(super().job(request, env), steer=steer)

    return Sick()


def test_a_stream_that_raises_leaves_alone_and_the_others_go_on():
    torch.set_num_threads(1)
    engine = streamgen.load("tiny")
    open_ = lambda task, seed: engine.open(task, prompt="a day sky", width=32, height=32, frames=None, seed=seed)  # noqa: E731
    good, broken = open_("t2v", 4), open_(sick_task(), 5)
    assert [type(x).__name__ for x in advance([broken, good])] == ["Frame", "Frame"]
    out = advance([broken, good])
    assert isinstance(out[0], RuntimeError) and out[1].state.frames_done == 2

    scheduler = Scheduler()
    g, s = Collect("g", good, n=6), Collect("s", open_(sick_task(), 6), n=6)
    scheduler.call(lambda: (scheduler.add(g), scheduler.add(s)))
    scheduler.start()
    assert g.left.wait(120) and s.left.wait(120)
    scheduler.stop()
    assert s.state == "failed" and "the plugin broke at frame 1" in s.error and len(s.frames) == 1
    assert g.state == "stopped" and len(g.frames) == 6


def test_a_stalled_output_never_holds_up_the_scheduler():
    """A sink stuck in a write (an RTMP server reconnecting, a slow disk): once its stream has `room`
    frames waiting, the scheduler gives it no more, and a snapshot's job or the end handed over
    then return at once instead of waiting for the writer."""
    from streamgen.serve.outputs import Outputs

    release, closed, saved = threading.Event(), threading.Event(), []

    class Stuck:
        def write(self, *frame):
            release.wait(60)

        def close(self):
            pass

    out = Outputs([Stuck()], Stuck(), name="stuck", on_closed=closed.set, room=3)
    put = 0
    while out.room():
        out.put(np.zeros((8, 8, 3), np.uint8), put, 0.0)
        put += 1
    assert 3 <= put <= 4  # three waiting (and perhaps one already taken by the stuck writer)
    handed = threading.Thread(target=lambda: (out.after_written(0, lambda: saved.append(True)), out.close(wait=False)))
    handed.start()
    handed.join(5)
    assert not handed.is_alive() and not closed.is_set()  # handed over without waiting; not written yet
    release.set()
    assert closed.wait(30) and saved == [True] and out.written == put and out.error is None


def test_the_server_loads_its_model_on_a_thread_that_ends_with_the_load():
    """The main thread runs no torch work (its OpenMP team would slow the scheduler's): the load runs on
    a thread of its own, its result or its error comes back to the caller."""
    import pytest

    from streamgen.errors import StreamgenError
    from streamgen.serve.server import off_main_thread

    where = []
    engine = off_main_thread(lambda: (where.append(threading.current_thread()), streamgen.load("tiny"))[1])
    assert where[0] is not threading.current_thread() and not where[0].is_alive()
    assert next(engine.run("uig", height=32, width=32, seed=0)).shape == (32, 32, 3)

    def fails():
        raise StreamgenError("`model` must be a folder, but got 'nowhere'")

    with pytest.raises(StreamgenError, match="must be a folder"):
        off_main_thread(fails)


def test_a_resumed_stream_holds_its_saved_state_before_its_next_frame():
    """What a shutdown saves for a stream that comes back and is stopped again before it draws a frame:
    the state it was resumed from, not nothing."""
    torch.set_num_threads(1)
    engine = streamgen.load("tiny")
    first = engine.open("t2v", prompt="a day sky", width=32, height=32, frames=None, seed=1)
    next(first)
    saved = first.state
    first.close()
    again = engine.open("t2v", prompt="a day sky", width=32, height=32, frames=None, seed=1, resume=saved)
    assert again.state is saved and saved.frames_done == 1
    next(again)
    assert again.state.frames_done == 2
    again.close()
