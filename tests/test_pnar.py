"""P-NAR local decoding (mask-predict inside a patch), selectable per request."""
import numpy as np
import pytest
import torch

from streamgen import ConfigError
from streamgen.testing import HashTextEncoder, tiny_engine


def pnar_engine(**over):
    eng = tiny_engine(seed=3, pnar=True, text_dim=8, edges=True, rel_bias=True, **over)
    with torch.no_grad():
        eng.model.edge_emb.normal_(0, 1.0)
        eng.model.rel_bias.normal_(0, 1.0)
    eng.text_encoder = HashTextEncoder(8)
    return eng


def workspaces(monkeypatch, eng) -> list:
    """Every workspace the engine's model allocates from now on, collected into the returned list."""
    seen = []
    orig = eng.model.new_workspace

    def spy(*a, **k):
        seen.append(orig(*a, **k))
        return seen[-1]
    monkeypatch.setattr(eng.model, "new_workspace", spy)
    return seen


def frames(eng, **req):
    return np.stack(list(eng.run("t2v", prompt="a red hill", height=8, width=16, frames=3, seed=5, **req)))


def test_pnar_runs_the_given_number_of_passes_per_patch(monkeypatch):
    eng = pnar_engine()
    calls = {"pnar": 0, "step": 0}
    for name in ("pnar_logits", "decode_step"):
        orig = getattr(eng.model, name)

        def counted(*a, _orig=orig, _key="pnar" if name == "pnar_logits" else "step", **k):
            calls[_key] += 1
            return _orig(*a, **k)
        monkeypatch.setattr(eng.model, name, counted)
    out = frames(eng, sampling=dict(local="pnar", pnar_steps=3))
    patches = 3 * 1 * 2  # frames x rows x cols of 4x4-token patches (8x16 px at 2 px per token)
    assert out.shape == (3, 8, 16, 3)
    assert calls == {"pnar": 3 * patches, "step": 0}
    frames(eng)  # the autoregressive decoder on the same engine: one step per token
    assert calls["step"] == patches * eng.model.M


def test_pnar_is_deterministic_and_batch_and_wavefront_invariant():
    eng = pnar_engine()
    sampling = dict(local="pnar", pnar_steps=4, top_k=8, guidance=2.0)
    a = frames(eng, sampling=sampling)
    assert np.array_equal(a, frames(eng, sampling=sampling))
    assert not np.array_equal(a, frames(eng))  # a different local decoder draws other tokens
    eng.wavefront = False
    assert np.array_equal(a, frames(eng, sampling=sampling))
    batch = list(eng.run_batch("t2v", [dict(prompt="a red hill", height=8, width=16, frames=3, seed=s,
                                            sampling=sampling) for s in (4, 5)]))
    assert np.array_equal(np.stack([fr[1] for fr in batch]), a)


def test_pnar_fills_every_token_of_a_wide_image_with_the_wavefront():
    eng = pnar_engine()
    img = next(eng.run("t2i", prompt="dunes", height=16, width=64, seed=1, sampling=dict(local="pnar")))
    eng.wavefront = False
    assert np.array_equal(img, next(eng.run("t2i", prompt="dunes", height=16, width=64, seed=1,
                                            sampling=dict(local="pnar"))))


def test_pnar_on_a_model_not_trained_for_it_names_the_parameter():
    eng = tiny_engine(text_dim=8)
    eng.text_encoder = HashTextEncoder(8)
    with pytest.raises(ConfigError, match=r"sampling\.local.*pnar"):
        frames(eng, sampling=dict(local="pnar"))
    with pytest.raises(ConfigError, match=r"pnar_steps"):
        frames(pnar_engine(), sampling=dict(local="pnar", pnar_steps=0))


def test_mixed_precision_keeps_the_guarantees_and_stays_close_to_fp32():
    """bfloat16 attention and whole-patch matmuls: deterministic, the same tokens batched, by
    wavefront and alone, and logits within bfloat16 rounding of the fp32 ones."""
    eng = pnar_engine()
    eng.precision = "mixed"
    for sampling in (dict(top_k=8), dict(local="pnar", top_k=8)):
        a = frames(eng, sampling=sampling)
        eng.wavefront = False
        assert np.array_equal(a, frames(eng, sampling=sampling))
        eng.wavefront = True
        batch = list(eng.run_batch("t2v", [dict(prompt="a red hill", height=8, width=16, frames=3, seed=s,
                                                sampling=sampling) for s in (4, 5)]))
        assert np.array_equal(np.stack([fr[1] for fr in batch]), a)
    model = eng.model
    with torch.no_grad():
        toks = torch.randint(0, model.cfg.vocab_size, (2, model.M))
        masked = torch.rand(2, model.M) < 0.5
        out = {}
        for mixed in (False, True):
            ws = model.new_workspace(2, 0, mixed=mixed)
            model.load_context(ws, [[]])
            out[mixed] = (model.prefill(ws, toks), model.pnar_logits(ws, toks, masked))
    for full, mixed in zip(out[False], out[True]):
        assert mixed.dtype == torch.float32
        torch.testing.assert_close(mixed, full, atol=0.05 * float(full.abs().max()), rtol=0)
        assert not torch.equal(mixed, full)  # bfloat16 did run


def test_an_unknown_precision_names_the_parameter():
    eng = pnar_engine()
    eng.precision = "fp8"
    with pytest.raises(ConfigError, match=r"precision.*fp32, mixed.*fp8"):
        frames(eng)


def test_xformers_attention_glue_matches_sdpa_with_a_stand_in(monkeypatch):
    """The xformers path (CUDA only, not run here) converts layouts and masks right: with a stand-in
    module computing xformers' contract on the CPU, generation gives the same frames as sdpa."""
    import sys
    import types

    import torch.nn.functional as F

    from streamgen.engine import core as engine_mod

    def memory_efficient_attention(q, k, v, attn_bias=None):  # xformers' layout: (B, T, H, hd)
        assert attn_bias is None or attn_bias.shape == (q.shape[0], q.shape[2], q.shape[1], k.shape[1])
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                             attn_mask=attn_bias)
        return out.transpose(1, 2)

    ops = types.ModuleType("xformers.ops")
    ops.memory_efficient_attention = memory_efficient_attention
    pkg = types.ModuleType("xformers")
    pkg.ops = ops
    eng = pnar_engine()
    want = frames(eng, sampling=dict(top_k=8, guidance=2.0))
    eng.attention = "xformers"
    with pytest.raises(ConfigError, match=r"attention.*xformers package"):
        frames(eng)
    monkeypatch.setitem(sys.modules, "xformers", pkg)
    monkeypatch.setitem(sys.modules, "xformers.ops", ops)
    with pytest.raises(ConfigError, match=r"attention.*CUDA device.*cpu"):
        frames(eng)
    monkeypatch.setattr(engine_mod, "_is_cuda", lambda device: True)  # the kernel itself runs on the CPU
    eng.wavefront = False  # prefill and decode steps with causal and padding masks both go through it
    got = workspaces(monkeypatch, eng)
    out = frames(eng, sampling=dict(top_k=8, guidance=2.0))
    assert got and all(ws.attend.__name__ == "xformers_attention" for ws in got)
    assert np.array_equal(out, want)


def test_refine_borders_redraws_only_the_tokens_along_made_borders_and_caches_them(monkeypatch):
    from streamgen.engine.adc import Plan
    from streamgen.config import Extent, SamplingConfig

    eng = pnar_engine(neighbours=True)
    with torch.no_grad():
        eng.model.nbr_emb.normal_(0, 1.0)
    text = torch.randn(1, 3, 8)
    added = {}  # the payload each patch leaves in the pool
    orig_add = __import__("streamgen.engine.ncp", fromlist=["x"]).NearbyContextPool.add

    def spy(self, pos, payload, expiry):
        added[pos] = payload
        return orig_add(self, pos, payload, expiry)
    monkeypatch.setattr("streamgen.engine.ncp.NearbyContextPool.add", spy)

    def tokens(**s):
        plan = Plan.basic("omega", 2, 2, 1, Extent(w=1, h=1, f=1))  # 8x8 tokens: 2x2 patches of 4x4
        return next(iter(eng.generate_tokens(plan, seed=7, text=text, sampling=SamplingConfig(top_k=None, **s)))).tokens[0]
    plain, refined = tokens(), tokens(refine_borders=1.0)
    # omega: (0, 0) has no made neighbour and is drawn as before; (0, 1) has its left neighbour made:
    # its first column is drawn again (some token changes), the rest of it stays
    assert torch.equal(plain[:4, :4], refined[:4, :4])
    assert torch.equal(plain[:4, 5:], refined[:4, 5:]) and not torch.equal(plain[:4, 4], refined[:4, 4])
    # each patch leaves in the pool the cache of its final tokens: what the engine leaves when it is
    # given those tokens
    caches = dict(added)
    given = Plan.basic("omega", 2, 2, 1, Extent(w=1, h=1, f=1), known_frames=1)
    next(iter(eng.generate_tokens(given, seed=7, text=text, sampling=SamplingConfig(),
                                  known=lambda pos: refined[pos[1] * 4:pos[1] * 4 + 4, pos[2] * 4:pos[2] * 4 + 4])))
    assert all(torch.allclose(caches[p], added[p], atol=1e-5) for p in added)
    # the same seed draws the same tokens; greedy redraws differ from temperature-1 ones
    assert torch.equal(refined, tokens(refine_borders=1.0))
    assert not torch.equal(refined, tokens(refine_borders=0.0))



@pytest.mark.parametrize("local", ["ar", "pnar"])
def test_a_redrawn_patch_is_closed_once_by_the_redraw(monkeypatch, local):
    """The redraw's prefill rewrites a patch's whole cache, so the local decoder's own closing pass
    (the autoregressive last position, the P-NAR prefill) runs only for patches with nothing to redraw:
    the first of each frame."""
    eng = pnar_engine()
    calls = {"complete": 0, "prefill": 0}

    def counted(name):
        orig = getattr(eng.model, name)

        def call(*a, **k):
            calls[name] += 1
            return orig(*a, **k)
        return call
    for name in calls:
        monkeypatch.setattr(eng.model, name, counted(name))
    sampling = dict(top_k=8, guidance=2.0, local=local)
    frames(eng, sampling=sampling)
    patches, first = eng.stats.patches, 3  # 2 a frame; the first of each has no made patch beside it
    assert patches == 6
    assert calls == ({"complete": patches, "prefill": 0} if local == "ar" else {"complete": 0, "prefill": patches})
    calls.update(complete=0, prefill=0)
    frames(eng, sampling={**sampling, "refine_borders": 0.6})
    redrawn = patches - first  # each closed by the redraw's prefill alone
    assert calls == ({"complete": first, "prefill": redrawn} if local == "ar" else {"complete": 0, "prefill": first + redrawn})


def test_refine_borders_is_batch_and_wavefront_invariant_and_needs_pnar():
    eng = pnar_engine()
    sampling = dict(refine_borders=0.6, top_k=8, guidance=2.0)
    a = frames(eng, sampling=sampling)
    assert not np.array_equal(a, frames(eng, sampling=dict(top_k=8, guidance=2.0)))
    eng.wavefront = not eng.wavefront
    assert np.array_equal(a, frames(eng, sampling=sampling))
    batch = list(eng.run_batch("t2v", [dict(prompt="a red hill", height=8, width=16, frames=3, seed=s,
                                            sampling=sampling) for s in (4, 5)]))
    assert np.array_equal(np.stack([fr[1] for fr in batch]), a)
    plain = tiny_engine(text_dim=8)
    plain.text_encoder = HashTextEncoder(8)
    with pytest.raises(ConfigError, match=r"sampling\.refine_borders.*pnar.*0\.6"):
        frames(plain, sampling=dict(refine_borders=0.6))
    with pytest.raises(ConfigError, match=r"refine_borders"):
        frames(eng, sampling=dict(refine_borders=-1))
