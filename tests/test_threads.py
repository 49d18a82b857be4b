"""tune_threads: the faster of N and one torch thread, tried between frames."""
from streamgen.engine.threads import tune_threads


def run(costs, frames, threads=2, **kw):
    """Frames whose making takes costs(frame, threads) on a fake clock: the thread count of each.
    The waits between trials are not spread unless ``spread`` is given."""
    kw.setdefault("spread", 0)
    state = {"threads": None, "t": 0.0, "sets": 0}

    def set_threads(n):
        state["threads"] = n
        state["sets"] += 1

    def make():
        for i in range(frames):
            state["t"] += costs(i, state["threads"])
            yield state["threads"]

    used = list(tune_threads(make(), threads, set_threads=set_threads, clock=lambda: state["t"], **kw))
    return used, state["sets"]


def counts(*runs):
    """[(count, frames), ...] -> the thread count of every frame."""
    return [c for c, n in runs for _ in range(n)]


def test_a_busy_core_moves_the_stream_to_one_thread_and_a_free_one_brings_it_back():
    def costs(i, n):  # frames 0-99: a busy core makes two threads slow; then the core is free
        return (1.0 if n == 2 else 0.5) if i < 100 else (0.3 if n == 2 else 0.5)

    used, sets = run(costs, 200)
    assert used == counts(
        (2, 4), (1, 3),  # the first trial, after 4 frames: one thread is faster, kept
        (1, 32), (2, 3),  # 32 frames later two threads are tried: slower, so the next wait doubles
        (1, 64), (2, 3),  # the core is free by now: two threads win and are kept
        (2, 32), (1, 3),  # one thread tried again: slower
        (2, 56))
    assert sets == sum(a != b for a, b in zip(used, used[1:])) + 1  # set only on a change


def test_a_trial_within_the_margin_keeps_the_current_count_and_trials_grow_rarer():
    used, _ = run(lambda i, n: 1.0 if n == 2 else 0.95, 300)
    assert used == counts((2, 4), (1, 3), (2, 64), (1, 3), (2, 128), (1, 3), (2, 95))
    used, _ = run(lambda i, n: 1.0 if n == 2 else 0.95, 1000, most=64)
    assert used[-200:].count(1) in (6, 9)  # a trial every 64 frames at most


def test_a_trial_far_slower_than_the_current_count_ends_after_its_first_frame():
    """Another process on the same cores: one thread 0.3 s a frame, two threads 1.0 s, and 17 s
    (four threads on two cores) whenever two threads are tried again later."""
    def costs(i, n):
        return 0.3 if n == 1 else 1.0 if i < 4 else 17.0

    used, _ = run(costs, 200)
    assert used == counts((2, 4), (1, 3), (1, 32), (2, 1), (1, 64), (2, 1), (1, 95))
    used, _ = run(costs, 200, abort=100.0)  # without the abort each trial costs three such frames
    assert used == counts((2, 4), (1, 3), (1, 32), (2, 3), (1, 64), (2, 3), (1, 91))


def test_the_waits_between_trials_are_spread_at_random_so_two_processes_try_apart():
    from random import Random

    def trials(seed):
        used, _ = run(lambda i, n: 1.0 if n == 2 else 0.5, 400, spread=0.25, rng=Random(seed))
        return [i for i in range(1, len(used)) if used[i] == 2 and used[i - 1] == 1]

    a, b = trials(1), trials(2)
    assert a != b and len(a) >= 2 and len(b) >= 2  # apart
    for t in (a, b):
        gaps = [t[0] - 7] + [y - x - 3 for x, y in zip(t, t[1:])]  # frames of one thread before each trial
        assert all(0.75 * 32 * 2 ** k <= g <= 1.25 * 32 * 2 ** k for k, g in enumerate(gaps)), gaps


def test_one_thread_asked_is_never_changed_and_closing_closes_the_frames():
    used, sets = run(lambda i, n: 1.0, 10, threads=1)
    assert used == [None] * 10 and sets == 0
    closed = []

    def frames():
        try:
            yield from range(100)
        finally:
            closed.append(True)

    it = tune_threads(frames(), 2, set_threads=lambda n: None)
    next(it)
    it.close()
    assert closed == [True]


def test_a_realtime_generate_tunes_its_threads_unless_they_are_fixed(tmp_path, monkeypatch):
    import torch

    from streamgen.cli import main
    from streamgen.engine import threads

    seen, tune = [], threads.tune_threads

    def spy(frames, n, **kw):
        seen.append(n)
        return tune(frames, n, **kw)

    monkeypatch.setattr(threads, "tune_threads", spy)
    args = ["generate", "--model", "tiny", "--task", "t2v", "--prompt", "a red sky", "--frames", "3", "--fps", "100"]
    assert main([*args, "--realtime", "-o", str(tmp_path / "a.mkv")]) == 0
    assert seen == [torch.get_num_threads()]
    assert main([*args, "--realtime", "--fixed-threads", "-o", str(tmp_path / "b.mkv")]) == 0
    assert main([*args, "-o", str(tmp_path / "c.mkv")]) == 0
    assert seen == [torch.get_num_threads()]
    assert all((tmp_path / f"{n}.mkv").stat().st_size > 0 for n in "abc")
