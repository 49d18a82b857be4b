import gc
import itertools
import weakref

import numpy as np
import pytest
import torch

import streamgen.engine.core as engine_mod
from streamgen import Extent, Plan, SamplingConfig
from streamgen.testing import tiny_engine


def test_stream_yields_uint8_frames_of_the_requested_size(engine):
    frames = list(engine.stream(height=16, width=24, frames=3, seed=0))
    assert len(frames) == 3
    for f in frames:
        assert isinstance(f, np.ndarray) and f.dtype == np.uint8 and f.shape == (16, 24, 3)
    assert not np.array_equal(frames[0], frames[1])  # a random model does not repeat frames


def test_same_seed_same_frames_other_seed_other_frames(engine):
    a = list(engine.stream(height=16, width=16, frames=2, seed=7))
    b = list(engine.stream(height=16, width=16, frames=2, seed=7))
    c = list(engine.stream(height=16, width=16, frames=2, seed=8))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_drawing_on_a_frame_changes_nothing_the_stream_keeps():
    """The pixel-guided decoder reads the previous frame from the stream's own copy, and a snapshot
    saves that copy: a caller that draws on the frames it is given changes neither."""
    from streamgen.testing import HashTextEncoder

    engine = tiny_engine(text_dim=8)
    engine.text_encoder = HashTextEncoder(8)
    stream = engine.open("t2v", prompt="a hill", height=16, width=16, frames=3, seed=0)
    first = next(stream.frames())
    kept = first.state.prev.clone()
    first.pixels[:] = 255
    first.batch[:] = 0
    assert torch.equal(first.state.prev, kept)
    stream.close()


def test_endless_stream_is_lazy(engine):
    gen = engine.stream(height=16, width=16, frames=None, seed=0)
    per_frame = 2 * 2  # 16 px / (factor 2 x 4 tokens) = 2 patches each way
    assert engine.stats.patches == 0  # nothing happens before the first frame is asked for
    got = list(itertools.islice(gen, 3))
    assert len(got) == 3
    assert engine.stats.patches == 3 * per_frame
    assert engine.stats.tokens == 3 * per_frame * 16
    gen.close()


def test_closing_the_generator_frees_the_caches(monkeypatch):
    pools = weakref.WeakSet()
    real = engine_mod.NearbyContextPool

    class Tracked(real):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            pools.add(self)
            self.sizes = []

        def add(self, *a, **k):
            super().add(*a, **k)
            self.sizes.append(len(self))

    monkeypatch.setattr(engine_mod, "NearbyContextPool", Tracked)
    eng = tiny_engine()
    gen = eng.stream(height=16, width=16, frames=None)
    next(gen)
    next(gen)
    (pool,) = list(pools)
    assert len(pool) > 0
    gen.close()
    assert len(pool) == 0
    del pool
    gc.collect()
    assert len(pools) == 0


@pytest.mark.parametrize("sampling", [
    dict(temperature=0.0), dict(top_k=1), dict(top_p=1e-6), dict(temperature=0.7, top_k=5, top_p=0.9),
])
def test_sampling_options(engine, sampling):
    frames = list(engine.stream(height=8, width=8, frames=2, seed=3, sampling=sampling))
    again = list(engine.stream(height=8, width=8, frames=2, seed=4, sampling=sampling))
    greedy = sampling.get("temperature") == 0.0 or sampling.get("top_k") == 1 or "top_p" in sampling \
        and sampling["top_p"] < 1e-3
    # greedy settings ignore the seed; sampled ones follow it
    assert all(np.array_equal(a, b) for a, b in zip(frames, again)) == greedy


def test_top_k_keeps_only_the_k_most_likely_tokens():
    from streamgen.engine.sampling import sample

    logits = torch.tensor([[0.0, 5.0, 4.0, -1.0, 3.0]]).repeat(2000, 1)
    u = torch.rand(2000, dtype=torch.float64)
    got = sample(logits, u, SamplingConfig(top_k=2))
    assert set(got.tolist()) == {1, 2}
    got = sample(logits, u, SamplingConfig(top_p=0.5))
    assert set(got.tolist()) == {1}


def test_text_conditioning_and_guidance_change_the_frames():
    eng = tiny_engine(text_dim=8)
    plan = lambda: Plan.basic("omega", 1, 2, 2, Extent(w=1, h=1, f=1))  # noqa: E731
    text = torch.randn(1, 3, 8) * 3
    run = lambda **kw: [t.tokens for t in eng.generate_tokens(plan(), seed=1, **kw)]  # noqa: E731
    uncond = run()
    cond = run(text=text)
    guided = run(text=text, sampling=SamplingConfig(guidance=3.0))
    assert not torch.equal(uncond[0], cond[0])
    assert not torch.equal(cond[0], guided[0])
    assert all(torch.equal(a, b) for a, b in zip(guided, run(text=text, sampling=SamplingConfig(guidance=3.0))))


def test_known_patches_are_pre_cached_not_sampled():
    eng = tiny_engine()
    given = torch.randint(0, 64, (1, 8, 8))
    plan = Plan.basic("zeta", 2, 2, 3, Extent(w=1, h=1, f=1), known_frames=1)
    known = lambda pos: given[:, pos[1] * 4:(pos[1] + 1) * 4, pos[2] * 4:(pos[2] + 1) * 4]  # noqa: E731
    out = list(eng.generate_tokens(plan, seed=0, known=known))
    assert torch.equal(out[0][1], given)
    assert eng.stats.tokens == 2 * 4 * 16  # only frames 1 and 2 were sampled
    # the next frames depend on the given frame
    other = list(eng.generate_tokens(plan, seed=0, known=lambda pos: (known(pos) + 1) % 64))
    assert not torch.equal(out[1][1], other[1][1])


def test_streams_served_in_one_batch_give_the_frames_they_give_alone():
    from streamgen.testing import HashTextEncoder

    eng = tiny_engine(text_dim=8)
    eng.text_encoder = HashTextEncoder(8)
    reqs = [dict(prompt=p, height=16, width=16, frames=3, seed=s, sampling=dict(guidance=2.0))
            for p, s in (("day hills", 1), ("night dunes with a lake", 7), ("sunset", 7))]
    batched = list(eng.run_batch("t2v", reqs))
    assert len(batched) == 3 and all(len(step) == 3 for step in batched)
    for i, req in enumerate(reqs):
        alone = list(eng.run("t2v", req))
        for f in range(3):
            assert np.array_equal(batched[f][i], alone[f]), (i, f)
    assert not np.array_equal(batched[0][1], batched[0][2])  # same seed, other prompt


def test_a_batch_must_share_its_plan(engine):
    from streamgen import ConfigError

    with pytest.raises(ConfigError, match=r"`requests\[1\]` must plan the same size"):
        engine.run_batch("uig", [dict(height=16, width=16), dict(height=16, width=24)])


@pytest.mark.parametrize("order", ["omega", "omega*", "zeta", "zeta*"])
@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_wavefront_gives_the_tokens_of_sequential_decoding(order, guidance):
    eng = tiny_engine(text_dim=8, edges=True, rel_bias=True, prev_frame=True, neighbours=True)
    with torch.no_grad():  # each patch's borders, each token displacement, the last frame and the
        eng.model.edge_emb.normal_(0, 1.0)  # tokens across made borders move the logits
        eng.model.rel_bias.normal_(0, 1.0)
        eng.model.prev_emb.normal_(0, 1.0)
        eng.model.nbr_emb.normal_(0, 1.0)
    text = torch.randn(1, 3, 8)
    sampling = SamplingConfig(guidance=guidance)
    plan = lambda: Plan.basic(order, 4, 8, 2, Extent(w=1, h=1, f=1))  # noqa: E731
    seq = [t.tokens for t in eng.generate_tokens(plan(), seed=11, text=text, sampling=sampling)]
    patches_seq = eng.stats.patches
    wave = [t.tokens for t in eng.generate_tokens(plan(), seed=11, text=text, sampling=sampling,
                                                   wavefront=True)]
    assert eng.stats.patches == patches_seq == 2 * 32
    for a, b in zip(seq, wave):
        assert torch.equal(a, b)


def test_wavefront_groups_are_independent_and_complete():
    from streamgen.engine.adc import window

    for order in ("omega", "omega*", "zeta", "zeta*"):
        plan = Plan.basic(order, 5, 9, 1, Extent(w=1, h=1, f=0))
        groups = list(plan.groups(0, True))
        assert max(len(g) for g in groups) >= 3
        seq_rank = {it.pos: it.step for it in plan}
        done = set()
        for g in groups:
            for it in g:
                for p in window(plan.extent, it.pos):
                    if p in seq_rank and seq_rank[p] < it.step:
                        assert p in done, (order, it.pos, p)  # its whole context exists
                    if p in seq_rank and seq_rank[p] > it.step:
                        assert p not in done  # nothing sequentially later is visible
            members = {it.pos for it in g}
            for it in g:  # no patch of a group is in another's window
                assert not members & set(window(plan.extent, it.pos)), (order, it.pos)
            done.update(members)


@pytest.mark.parametrize("order,extra", [("zeta", dict(prev_frame=True)),
                                         ("omega*", dict(prev_frame=True, neighbours=True)),
                                         ("zeta*", dict(neighbours=True))])
def test_the_engine_feeds_the_hints_training_gives(order, extra):
    """Greedy tokens from the engine are the argmax of the teacher-forced pass that feeds every patch
    its hints as training builds them (the previous frame's tokens, the tokens across borders already
    made, `hint_index`); with all-'none' hints the argmax differs, so the engine did feed them."""
    from streamgen.engine.adc import edges
    from streamgen.training.model import plan_hints

    eng = tiny_engine(seed=4, edges=True, rel_bias=True, **extra)
    model = eng.model
    with torch.no_grad():  # places and hints weigh enough that greedy decoding does not settle on one token
        for name in ("pos_emb", "prev_emb", "nbr_emb"):
            if hasattr(model, name):
                getattr(model, name).normal_(0, 3.0)
    plan = lambda: Plan.basic(order, 2, 2, 3, Extent(w=1, h=1, f=1))  # noqa: E731
    frames = torch.stack([t.tokens for t in eng.generate_tokens(plan(), sampling=SamplingConfig(temperature=0))], 1)
    ph, pw = model.cfg.patch_h, model.cfg.patch_w
    items = list(plan())
    toks = torch.stack([frames[:, f, y * ph:(y + 1) * ph, x * pw:(x + 1) * pw].reshape(1, -1)
                        for f, y, x in (it.pos for it in items)], 1)  # (1, N, M) in plan order
    kinds = [edges(y, x, 2, 2) for _, y, x in (it.pos for it in items)]
    hints = torch.stack(plan_hints(model, plan(), frames), 1)  # as the training loop builds them
    positions = [it.pos for it in items]
    with torch.no_grad():
        fed = model(toks, positions, None, kinds, hints).argmax(-1)
        unfed = model(toks, positions, None, kinds, torch.full_like(hints, model.cfg.vocab_size)).argmax(-1)
    assert torch.equal(fed, toks)
    assert len(toks.unique()) > 4 and not torch.equal(unfed, toks)


def _guided_reference(wavefront: bool, sampling: SamplingConfig):
    """Greedy guided tokens (1, N, M) of a 3-frame prev_frame stream, with the teacher-forced
    conditional and unconditional logits of those tokens and which tokens the previous frame shows."""
    from streamgen.engine.adc import edges

    eng = tiny_engine(seed=5, text_dim=8, edges=True, rel_bias=True, prev_frame=True)
    model = eng.model
    with torch.no_grad():  # the previous frame and the text both move the logits
        model.prev_emb.normal_(0, 1.0)
        for blk in model.blocks:
            blk.xproj.weight.normal_(0, 1.0)
    text = torch.randn(1, 3, 8, generator=torch.Generator().manual_seed(0))
    plan = lambda: Plan.basic("zeta", 2, 2, 3, Extent(w=1, h=1, f=1))  # noqa: E731
    frames = torch.stack([t.tokens for t in eng.generate_tokens(plan(), text=text, sampling=sampling,
                                                                 wavefront=wavefront)], 1)
    ph, pw = model.cfg.patch_h, model.cfg.patch_w
    pos = [it.pos for it in plan()]
    toks = torch.stack([frames[:, f, y * ph:(y + 1) * ph, x * pw:(x + 1) * pw].reshape(1, -1)
                        for f, y, x in pos], 1)  # (1, N, M) in plan order
    prev = torch.stack([model.prev_index(frames[:, f - 1] if f else None, y, x) for f, y, x in pos], 1)
    kinds = [edges(y, x, 2, 2) for _, y, x in pos]
    with torch.no_grad():
        cond = model(toks, pos, model.text_memory(text), kinds, prev)
        uncond = model(toks, pos, model.text_memory(text, torch.zeros(1, 3, dtype=torch.bool)), kinds, prev)
    shown = (prev[:, :, 1] != model.cfg.vocab_size)[..., None]  # (1, N, M, 1)
    assert not shown[:, :4].any() and shown[:, 4:].all()  # frame 0 has no previous frame
    return toks, cond, uncond, shown


@pytest.mark.parametrize("wavefront", [False, True])
def test_shown_tokens_are_drawn_among_the_conditional_models_likeliest(wavefront):
    """With `shown_top_p`, a shown token is the guided argmax among the tokens of the conditional
    model's top-p set; new tokens (frame 0) are guided freely. Without the limit the tokens differ."""
    from streamgen.engine.sampling import top_p_mask

    sampling = SamplingConfig(temperature=0, guidance=6.0, shown_top_p=0.3)
    toks, cond, uncond, shown = _guided_reference(wavefront, sampling)
    guided = uncond + 6.0 * (cond - uncond)
    limited = guided.masked_fill(shown & ~top_p_mask(cond, 0.3), float("-inf"))
    assert torch.equal(limited.argmax(-1), toks)
    free, _, _, _ = _guided_reference(wavefront, sampling.model_copy(update=dict(shown_top_p=None)))
    assert torch.equal(free[:, :4], toks[:, :4]) and not torch.equal(free[:, 4:], toks[:, 4:])


def test_top_p_mask_keeps_the_smallest_set_reaching_p():
    from streamgen.engine.sampling import top_p_mask

    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()[:, [2, 0, 3, 1]]  # shuffled
    assert top_p_mask(logits, 0.5).tolist() == [[False, True, False, False]]
    assert top_p_mask(logits, 0.7).tolist() == [[False, True, False, True]]
    assert top_p_mask(logits, 0.81).tolist() == [[True, True, False, True]]
    assert top_p_mask(logits, 1.0).all()
