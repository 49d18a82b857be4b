import pytest

from streamgen import ConfigError, Extent, Plan, split, split_video
from streamgen.engine.adc import center_index, rel_index, window


def test_four_basic_orders_on_a_2x3_grid():
    # numbers are the generation order of the patches laid out as the grid (row-major)
    def layout(order):
        seq = split(order, 2, 3)
        grid = [[0] * 3 for _ in range(2)]
        for i, (y, x) in enumerate(seq, 1):
            grid[y][x] = i
        return grid

    assert layout("omega") == [[1, 3, 5], [2, 4, 6]]    # down, then right
    assert layout("omega*") == [[5, 3, 1], [6, 4, 2]]   # down, then left
    assert layout("zeta") == [[1, 2, 3], [4, 5, 6]]     # right, then down
    assert layout("zeta*") == [[4, 5, 6], [1, 2, 3]]    # right, then up


def test_greek_letters_are_accepted_and_unknown_orders_rejected():
    assert split("ω", 2, 2) == split("omega", 2, 2)
    with pytest.raises(ConfigError, match=r"`order` must be one of .* but got 'spiral'"):
        split("spiral", 2, 2)


def test_video_goes_frame_by_frame():
    seq = split_video("zeta", 3, 2, 2)
    assert [p[0] for p in seq] == [0] * 4 + [1] * 4 + [2] * 4
    assert seq[4:8] == [(1, y, x) for (y, x) in split("zeta", 2, 2)]


def test_relative_offsets_are_distinct_and_cover_the_window():
    ext = Extent(w=1, h=1, f=1)
    cur = (5, 3, 3)
    labels = {rel_index(ext, p, cur) for p in window(ext, cur)}
    labels.add(center_index(ext))
    assert labels == set(range(ext.num_offsets)) and ext.num_offsets == 18  # the paper's 18 (Fig. 7)
    with pytest.raises(ValueError):
        rel_index(ext, (5, 3, 5), cur)  # two columns away


def _context_counts(plan):
    """For every generated patch: how many already-present patches lie in its window."""
    done, counts = set(), {}
    for item in plan:
        if not item.known:
            counts[item.pos] = sum(p in done for p in window(plan.extent, item.pos))
        done.add(item.pos)
    return counts


@pytest.mark.parametrize("box,direction", [
    ((0, 0, 3, 2), "right"), ((0, 3, 3, 5), "left"), ((2, 0, 3, 5), "up"), ((0, 0, 1, 5), "down"),
    ((1, 1, 2, 4), "all four"),
])
def test_outpaint_plan_gives_every_new_patch_context(box, direction):
    ext = Extent(w=1, h=1, f=0)
    plan = Plan.outpaint(3, 5, box, ext)
    items = list(plan)
    y0, x0, y1, x1 = box
    known = {(0, y, x) for y in range(y0, y1) for x in range(x0, x1)}
    assert {i.pos for i in items if i.known} == known
    assert [i.known for i in items] == sorted((i.known for i in items), reverse=True)  # pre-cache first
    assert len({i.pos for i in items}) == 15
    counts = _context_counts(plan)
    # no new patch is generated blind
    assert min(counts.values()) >= 1, counts
    # the first new patch touches the known region
    first = next(i.pos for i in items if not i.known)
    assert any(p in known for p in window(ext, first))


def test_outpaint_composition_never_starts_blind_unlike_a_plain_raster_order():
    ext = Extent(w=1, h=1, f=0)
    composed = _context_counts(Plan.outpaint(5, 7, (2, 3, 3, 4), ext))
    raster = {}
    done = {(0, 2, 3)}
    for (y, x) in split("zeta", 5, 7):
        if (0, y, x) in done:
            continue
        raster[(0, y, x)] = sum(p in done for p in window(ext, (0, y, x)))
        done.add((0, y, x))
    assert min(raster.values()) == 0  # the raster order's first patch has no context at all
    assert min(composed.values()) >= 1


def test_outpaint_box_must_fit():
    with pytest.raises(ConfigError, match="`known` must be a non-empty box"):
        Plan.outpaint(3, 3, (0, 0, 4, 1), Extent())


def test_a_plan_keeps_nothing_per_frame():
    """An endless video's plan answers for any frame without remembering the ones before it."""
    plan = Plan.basic("omega", 2, 3, None, Extent(w=1, h=1, f=1))
    assert plan.frame_start(10**12) == 6 * 10**12 and plan.step_of((10**12, 1, 2)) == 6 * 10**12 + 5
    assert plan.frame_start(0) == 0 and plan.frame_start(1) == 6
