import itertools

import pytest
import torch

from streamgen import Extent, NearbyContextPool, Plan
from streamgen.engine.adc import window


def run_pool(plan, limit=None):
    """Drive a pool through a plan like the engine does; record contexts and live sizes."""
    pool = NearbyContextPool(plan.extent)
    contexts, live = {}, []
    for item in itertools.islice(plan, limit):
        contexts[item.step] = [p for p, _, _ in pool.select(item.pos)]
        pool.add(item.pos, None, plan.expiry(item.pos))
        live.append(len(pool))
        pool.remove(item.step)
    return contexts, live, pool


def test_paper_example_14th_patch_sees_patches_1_to_13():
    # Fig. 8: 3x3 patches, two frames, omega order, extent (1, 1, 1)
    plan = Plan.basic("omega", 3, 3, 2, Extent(w=1, h=1, f=1))
    order = [item.pos for item in plan]
    contexts, _, _ = run_pool(plan)
    ctx14 = contexts[13]
    assert sorted(order.index(p) + 1 for p in ctx14) == list(range(1, 14))


@pytest.mark.parametrize("order", ["omega", "omega*", "zeta", "zeta*"])
@pytest.mark.parametrize("ext", [Extent(w=1, h=1, f=1), Extent(w=2, h=1, f=2), Extent(w=1, h=2, f=0)])
def test_select_returns_exactly_the_earlier_patches_in_the_window(order, ext):
    plan = Plan.basic(order, 3, 4, 7, ext)
    contexts, _, _ = run_pool(plan)
    seen = set()
    for item in plan:
        expected = sorted(p for p in window(ext, item.pos) if p in seen)
        assert sorted(contexts[item.step]) == expected, (item, order, ext)
        seen.add(item.pos)


@pytest.mark.parametrize("order", ["omega", "omega*", "zeta", "zeta*"])
@pytest.mark.parametrize("ext", [Extent(w=1, h=1, f=1), Extent(w=2, h=1, f=2), Extent(w=1, h=1, f=0)])
def test_memory_bound_holds_and_does_not_grow_with_length(order, ext):
    plan = Plan.basic(order, 3, 5, None, ext)
    _, live, _ = run_pool(plan, limit=15 * 40)
    bound = plan.live_bound()
    assert max(live) <= bound
    # the bound is not loose by more than one frame's strip
    assert max(live) >= bound - max(plan.rows, plan.cols)
    # steady state: the last frames hold as many caches as the tenth
    assert max(live[-15:]) == max(live[9 * 15:10 * 15])


def test_wide_canvas_in_column_order_holds_a_few_columns_only():
    ext = Extent(w=1, h=1, f=0)
    plan = Plan.basic("omega", 4, 64, 1, ext)  # a panorama 64 patches wide
    _, live, _ = run_pool(plan)
    assert max(live) <= plan.live_bound() == 2 * 4


def test_pool_is_empty_after_a_finite_plan_and_can_be_restored():
    plan = Plan.basic("zeta", 2, 2, 3, Extent(w=1, h=1, f=1))
    _, _, pool = run_pool(plan)
    assert len(pool) == 0
    pool.add((0, 0, 0), torch.ones(1), 5)
    saved = pool.state()
    other = NearbyContextPool(plan.extent)
    other.restore(saved)
    assert list(other.positions()) == [(0, 0, 0)]
    assert other.select((0, 0, 1))[0][0] == (0, 0, 0)
