"""Training and inference compute the same function.

The teacher-forced pass (`VisionDecoder.forward`, one masked pass over the whole planned sequence, no
pool) and the cached paths (`decode_step` token by token, `prefill` a patch at a time, both fed from
the Nearby Context Pool with eviction) must give the same logits.
"""
import pytest
import torch

from streamgen import Extent, NearbyContextPool, Plan, VisionDecoder
from streamgen.engine.adc import edges

from streamgen.testing import tiny_config
from streamgen.training.model import plan_hints

FRAMES = 5


def sensitive(model):
    """Re-draw every weight large enough that each term (offset embeddings above all) moves logits."""
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5 if p.ndim > 1 else 0.2)
    return model.eval()  # frame extent 1: three frames and more past it, so caches are evicted on the way


def hint_indices(model, plan, tokens):
    """Each plan step's `hint_index` (B, N, K, M) from tokens (B, N, M) indexed by plan step, or None."""
    if not (model.cfg.prev_frame or model.cfg.neighbours):
        return None
    B, N, M = tokens.shape
    ph, pw = model.cfg.patch_h, model.cfg.patch_w
    frames = torch.zeros(B, plan.frames, plan.rows * ph, plan.cols * pw, dtype=torch.long)
    for item in plan:
        f, y, x = item.pos
        frames[:, f, y * ph:(y + 1) * ph, x * pw:(x + 1) * pw] = tokens[:, item.step].view(B, ph, pw)
    return torch.stack(plan_hints(model, plan, frames), 1)


def cached_logits(model, plan, tokens, text, mode):
    """Logits (B, N, M, V) from the NCP path; tokens (B, N, M) indexed by plan step."""
    B, N, M = tokens.shape
    pool = NearbyContextPool(plan.extent, model.extent)
    ws = model.new_workspace(B, plan.extent.num_offsets - 1)
    out, evicted = [], 0
    prevs = hint_indices(model, plan, tokens)
    for item in plan:
        e = edges(*item.pos[1:], plan.rows, plan.cols)
        prev = None if prevs is None else prevs[:, item.step]
        model.load_context(ws, [[(p, o) for _, p, o in pool.select(item.pos)]], [e], [prev])
        toks = tokens[:, item.step]
        if mode == "patch":
            logits, payload = model.patch_forward(toks, [(p, o) for _, p, o in pool.select(item.pos)], text,
                                                  edges=e, prev=prev)
            out.append(logits)
            pool.add(item.pos, payload, plan.expiry(item.pos))
            evicted += pool.remove(item.step)
            continue
        if mode == "prefill":
            out.append(model.prefill(ws, toks, text))
        else:
            prev = torch.full((B,), model.bos, dtype=torch.long)
            steps = []
            for m in range(M):
                steps.append(model.decode_step(ws, prev, m, text))
                prev = toks[:, m]
            model.complete(ws, prev, text)
            out.append(torch.stack(steps, 1))
        pool.add(item.pos, model.patch_payload(ws), plan.expiry(item.pos))
        evicted += pool.remove(item.step)
    assert evicted > 0 and len(pool) == 0
    return torch.stack(out, 1)


@pytest.mark.parametrize("mode", ["decode", "prefill", "patch"])
@pytest.mark.parametrize("extra", [{}, dict(edges=True, rel_bias=True),
                                   dict(edges=True, rel_bias=True, prev_frame=True),
                                   dict(edges=True, rel_bias=True, neighbours=True),
                                   dict(edges=True, rel_bias=True, prev_frame=True, neighbours=True),
                                   dict(edges=True, rel_bias=True, prev_frame=True, neighbours=True,
                                        text_pooled=True)],
                         ids=["paper", "edges+bias", "edges+bias+prev", "edges+bias+neighbours",
                              "edges+bias+prev+neighbours", "all+sentence"])
@pytest.mark.parametrize("orders,ext", [
    ("omega", Extent(w=1, h=1, f=1)),
    (["zeta", "omega*", "zeta*", "omega"], Extent(w=1, h=1, f=1)),
    ("zeta*", Extent(w=1, h=0, f=2)),
])
def test_cached_decoding_matches_teacher_forcing(mode, extra, orders, ext):
    torch.manual_seed(0)
    model = sensitive(VisionDecoder(tiny_config(text_dim=8, extent=ext.model_dump(), **extra)))
    plan = Plan.basic(orders, 2, 3, FRAMES, ext)
    positions = [item.pos for item in plan]
    kinds = [edges(y, x, 2, 3) for _, y, x in positions]
    B, N, M = 2, len(positions), model.M
    tokens = torch.randint(0, model.cfg.vocab_size, (B, N, M))
    text = model.text_memory(torch.randn(B, 3, 8), torch.tensor([[1, 1, 0], [0, 0, 0]]).bool())
    with torch.no_grad():
        full = model(tokens, positions, text, kinds, hint_indices(model, plan, tokens))
        cached = cached_logits(model, plan, tokens, text, mode)
    assert full.shape == cached.shape == (B, N, M, model.cfg.vocab_size)
    torch.testing.assert_close(cached, full, atol=1e-4, rtol=0)


def test_a_smaller_request_extent_uses_the_model_offsets_of_the_same_patches():
    torch.manual_seed(1)
    model = sensitive(VisionDecoder(tiny_config()))  # trained window (1, 1, 1)
    small = Extent(w=1, h=1, f=0)
    plan = Plan.basic("omega", 2, 2, 3, small)
    positions = [item.pos for item in plan]
    tokens = torch.randint(0, model.cfg.vocab_size, (1, len(positions), model.M))
    with torch.no_grad():
        cached = cached_logits(model, plan, tokens, None, "prefill")
        # frames do not see each other with f=0: each frame alone is the same computation
        alone = torch.cat([model(tokens[:, i:i + 4], positions[i:i + 4]) for i in (0, 4, 8)], 1)
    torch.testing.assert_close(cached, alone, atol=1e-4, rtol=0)


def test_pnar_passes_in_the_workspace_match_the_training_pass():
    """A P-NAR pass against NCP context equals `patch_forward(masked=...)`, and the closing prefill
    leaves the same payload as the autoregressive decoder would."""
    torch.manual_seed(2)
    model = sensitive(VisionDecoder(tiny_config(text_dim=8, pnar=True, edges=True, rel_bias=True, prev_frame=True,
                                                neighbours=True, text_pooled=True)))
    ext = Extent(w=1, h=1, f=1)
    plan = Plan.basic("omega", 2, 2, 3, ext)
    B, M = 2, model.M
    text = model.text_memory(torch.randn(B, 3, 8))
    pool = NearbyContextPool(plan.extent, model.extent)
    ws = model.new_workspace(B, ext.num_offsets - 1)
    checked = 0
    with torch.no_grad():
        for item in plan:
            ctx = [(p, o) for _, p, o in pool.select(item.pos)]
            toks = torch.randint(0, model.cfg.vocab_size, (B, M))
            masked = torch.rand(B, M) < 0.5
            e = edges(*item.pos[1:], plan.rows, plan.cols)
            prev = torch.randint(0, model.cfg.vocab_size + 1, (B, 7, M))  # any previous-frame and neighbour ids
            model.load_context(ws, [ctx], [e], [prev])
            got = model.pnar_logits(ws, toks, masked, text)
            want, _ = model.patch_forward(toks, ctx, text, masked, e, prev)
            torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
            # unmasked inputs are seen: changing one changes the logits of the others
            flip = toks.clone()
            flip[:, 0] = (flip[:, 0] + 1) % model.cfg.vocab_size
            unmasked0 = ~masked[:, 0]
            if unmasked0.any():
                moved = model.pnar_logits(ws, flip, masked, text)
                assert not torch.allclose(moved[unmasked0], got[unmasked0])
            model.prefill(ws, toks, text)
            payload = model.patch_payload(ws)
            torch.testing.assert_close(payload, model.patch_forward(toks, ctx, text, edges=e, prev=prev)[1],
                                       atol=1e-4, rtol=0)
            pool.add(item.pos, payload, plan.expiry(item.pos))
            pool.remove(item.step)
            checked += len(ctx) > 0
    assert checked >= 8


def test_value_offsets_carry_the_direction_of_a_single_context_patch():
    """Key offsets alone only reweigh a lone context patch; the value offsets tell above from below."""
    from streamgen.engine.adc import rel_index

    torch.manual_seed(3)
    model = sensitive(VisionDecoder(tiny_config()))
    ext = model.extent
    up, down = rel_index(ext, (0, 0, 0), (0, 1, 0)), rel_index(ext, (0, 1, 0), (0, 0, 0))
    toks = torch.randint(0, model.cfg.vocab_size, (1, model.M))
    with torch.no_grad():
        _, pay = model.patch_forward(toks, [])
        model.rel_emb.zero_()
        model.rel_emb_v.zero_()
        same = [model.patch_forward(toks, [(pay, o)])[0] for o in (up, down)]
        torch.testing.assert_close(same[0], same[1])  # no offset embeddings: direction-blind
        model.rel_emb_v.normal_(0, 0.5)
        differ = [model.patch_forward(toks, [(pay, o)])[0] for o in (up, down)]
    assert (differ[0] - differ[1]).abs().max() > 1e-2


def test_edges_tell_a_lone_patch_where_it_is():
    """Without context a patch of an `edges` model still knows the canvas borders it touches; a model
    without them (or edges not given) computes the same for every place."""
    torch.manual_seed(4)
    model = sensitive(VisionDecoder(tiny_config(edges=True)))
    toks = torch.randint(0, model.cfg.vocab_size, (1, model.M))
    top, bottom = edges(0, 0, 2, 2), edges(1, 0, 2, 2)
    assert top != bottom and edges(0, 1, 1, 3) == edges(0, 1, 1, 3)
    with torch.no_grad():
        at_top, at_bottom = (model.patch_forward(toks, [], edges=e)[0] for e in (top, bottom))
        assert (at_top - at_bottom).abs().max() > 1e-2
        model.edge_emb.zero_()  # as initialised: an edges model starts as one without
        torch.testing.assert_close(model.patch_forward(toks, [], edges=top)[0], model.patch_forward(toks, [])[0])


def test_displacement_bias_makes_copying_the_previous_frame_one_number():
    """With ``rel_bias``, one learned number per head raises attention to the token at the same place
    one frame back, whichever context patch holds it and wherever it sits in the patch."""
    from streamgen.engine.adc import rel_index
    from streamgen.model.decoder import _bias_index, _bias_key

    cfg = tiny_config(rel_bias=True)
    model = VisionDecoder(cfg)
    idx = _bias_index(_bias_key(cfg), False)
    ext, M = cfg.extent, model.M
    prev = rel_index(ext, (-1, 0, 0), (0, 0, 0))
    same = {idx[prev, m, m + 1].item() for m in range(M)}  # query predicts token m, key m + 1 holds it
    assert len(same) == 1
    others = {idx[o, q, k].item() for o in range(ext.num_offsets) for q in range(M) for k in range(1, M + 1)}
    assert len(others) == model.rel_bias.shape[-1]  # every displacement in the window, each once
    left = rel_index(ext, (0, 0, -1), (0, 0, 0))  # the last column of the left patch is one token left
    assert idx[left, 0, cfg.patch_w].item() == idx[rel_index(ext, (0, 0, 0), (0, 0, 0)), 1, 1].item()
    assert (idx[:, M] == model.rel_bias.shape[-1]).all()  # position M predicts nothing
    assert (idx[:, :, 0] == model.rel_bias.shape[-1]).all()  # the start position holds no token


def test_prev_frame_inputs_are_the_previous_frames_tokens_around_each_token():
    """`prev_index` gives each token the previous frame's tokens one column left, at, and one column
    right of its place ('none' past the frame's sides and in a first frame); zero embeddings at init
    leave the model as one without them."""
    torch.manual_seed(5)
    model = VisionDecoder(tiny_config(prev_frame=True))
    ph, pw, none = model.cfg.patch_h, model.cfg.patch_w, model.cfg.vocab_size
    frame = torch.arange(2 * ph * 3 * pw).view(1, 2 * ph, 3 * pw) % none  # (1, h, w) distinct ids
    idx = model.prev_index(frame, 1, 0)  # bottom-left patch
    assert idx.shape == (1, 3, model.M)
    grid = idx.view(3, ph, pw)
    patch = frame[0, ph:, :pw]
    assert torch.equal(grid[1], patch)
    assert torch.equal(grid[0, :, 1:], patch[:, :-1]) and (grid[0, :, 0] == none).all()  # left of column 0
    assert torch.equal(grid[2], frame[0, ph:, 1:pw + 1])  # the right neighbour is the next patch's column
    assert (model.prev_index(None, 0, 0, batch=2) == none).all()
    assert model.prev_index(frame, 0, 0).shape == (1, 3, model.M)
    toks = torch.randint(0, none, (1, model.M))
    with torch.no_grad():
        plain = model.patch_forward(toks, [])[0]
        torch.testing.assert_close(model.patch_forward(toks, [], prev=idx)[0], plain)
        model.prev_emb.normal_(0, 0.5)
        assert (model.patch_forward(toks, [], prev=idx)[0] - plain).abs().max() > 1e-2
        assert VisionDecoder(tiny_config()).prev_index(frame, 0, 0) is None


def test_neighbour_inputs_are_the_tokens_across_each_border_of_a_made_patch():
    """`neighbour_index` gives each border token the token across that border, when the patch there
    is already made; 'none' inside the patch, past the canvas and beside patches not made yet. Zero
    embeddings at init leave the model as one without them."""
    torch.manual_seed(6)
    model = VisionDecoder(tiny_config(neighbours=True))
    ph, pw, none = model.cfg.patch_h, model.cfg.patch_w, model.cfg.vocab_size
    frame = torch.arange(3 * ph * 3 * pw).view(1, 3 * ph, 3 * pw) % none  # (1, h, w) distinct ids
    made = torch.zeros(3, 3, dtype=torch.bool)
    made[1, 0] = made[0, 1] = True  # left of and above the middle patch; right and below not yet
    grid = model.neighbour_index(frame, made, 1, 1).view(4, ph, pw)
    assert torch.equal(grid[0, :, 0], frame[0, ph:2 * ph, pw - 1])  # left column: the left patch's last
    assert torch.equal(grid[2, 0, :], frame[0, ph - 1, pw:2 * pw])  # top row: the patch above's last row
    assert (grid[0, :, 1:] == none).all() and (grid[2, 1:] == none).all()  # inside the patch: none
    assert (grid[1] == none).all() and (grid[3] == none).all()  # right and below are not made yet
    made[1, 2] = made[2, 1] = True
    grid = model.neighbour_index(frame, made, 1, 1).view(4, ph, pw)
    assert torch.equal(grid[1, :, pw - 1], frame[0, ph:2 * ph, 2 * pw])
    assert torch.equal(grid[3, ph - 1, :], frame[0, 2 * ph, pw:2 * pw])
    assert (model.neighbour_index(frame, torch.ones(3, 3, dtype=torch.bool), 0, 0).view(4, ph, pw)[[0, 2]]
            == none).all()  # a corner patch has nothing left of or above it
    idx = model.hint_index(None, frame, made, 1, 1)
    assert idx.shape == (1, 4, model.M)  # no prev_frame: the neighbour rows alone
    both = VisionDecoder(tiny_config(neighbours=True, prev_frame=True)).hint_index(frame, frame, made, 1, 1)
    assert both.shape == (1, 7, model.M) and torch.equal(both[:, 3:], idx)
    assert VisionDecoder(tiny_config()).hint_index(frame, frame, made, 1, 1) is None
    with pytest.raises(ValueError, match="takes 7 rows"):  # a `prev_index` alone is not all of its hints
        VisionDecoder(tiny_config(neighbours=True, prev_frame=True)).prev_vectors(both[:, :3])
    toks = torch.randint(0, none, (1, model.M))
    right = torch.zeros(3, 3, dtype=torch.bool)
    right[1, 2] = True  # only the patch to the right is made: its border tokens close each row
    idx = model.neighbour_index(frame, right, 1, 1)
    with torch.no_grad():
        plain = model.patch_forward(toks, [])[0]
        torch.testing.assert_close(model.patch_forward(toks, [], prev=idx)[0], plain)
        model.nbr_emb.normal_(0, 0.5)
        unmade = model.patch_forward(toks, [], prev=torch.full_like(idx, none))[0]  # 'none' everywhere
        moved = (model.patch_forward(toks, [], prev=idx)[0] - unmade).abs().amax(-1)[0]  # (M,)
    border = (idx[0] != none).any(0)
    assert border.nonzero().flatten().tolist() == [pw - 1 + k * pw for k in range(ph)]
    # a hint enters the input that predicts its token: the tokens before the first border token are
    # untouched, the border tokens move (later ones also through attention)
    assert (moved[:pw - 1] < 1e-5).all() and (moved[border] > 1e-2).all()


def test_the_sentence_embedding_reaches_every_position_and_is_zero_for_no_text():
    """`text_pooled`: two prompts whose token states differ only in their mean still give other
    logits; no text (the unconditional rows) gives the learned bias alone, and a fresh model's
    projection is zero, so it starts as a model without it."""
    torch.manual_seed(3)
    fresh = VisionDecoder(tiny_config(text_dim=8, text_pooled=True))
    assert torch.count_nonzero(fresh.pool_proj.weight) == 0
    model = sensitive(VisionDecoder(tiny_config(text_dim=8, text_pooled=True)))
    states = torch.randn(1, 3, 8)
    mem = model.text_memory(states)
    assert mem.pooled.shape == (1, model.cfg.width)
    sentence = torch.nn.functional.normalize(states.mean(1), dim=-1)
    torch.testing.assert_close(mem.pooled, model.pool_proj(sentence))
    torch.testing.assert_close(model.text_memory(None).pooled, model.pool_proj.bias[None])
    tokens, positions = torch.randint(0, 64, (1, 1, model.M)), [(0, 0, 0)]
    with torch.no_grad():
        a = model(tokens, positions, mem)
        model.pool_proj.weight.zero_()
        b = model(tokens, positions, model.text_memory(states))
    assert not torch.allclose(a, b)
