"""Arbitrary Direction Controller: patch orders (Split) and relative-offset indices (Emb).

Coordinates: a patch is ``(f, y, x)``: frame, patch row, patch column. A frame has ``rows x cols``
patches. A `Plan` lists, frame by frame, which patches are processed and in what order; each item
is either generated or *known* (its tokens are given and it is only pre-cached, Algorithm 2's Image
Condition Pre-caching). Plans may be endless (``frames=None``): frames are planned on demand.
"""
from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor

from streamgen.config import Extent
from streamgen.errors import bad

Pos = tuple[int, int, int]  # (f, y, x)

# The paper's four basic orders, named by how they are written (Fig. 6, left).
ORDERS = ("omega", "omega*", "zeta", "zeta*")
_ALIASES = {"ω": "omega", "ω*": "omega*", "ζ": "zeta", "ζ*": "zeta*"}


def check_order(order: str) -> str:
    order = _ALIASES.get(order, order)
    if order not in ORDERS:
        raise bad("order", f"must be one of {', '.join(ORDERS)}", order)
    return order


def split(order: str, rows: int, cols: int) -> list[tuple[int, int]]:
    """ADC.Split for one frame: the ``(y, x)`` patches of a ``rows x cols`` grid in ``order``.

    omega: down, then right (column by column from the left); omega*: down, then left;
    zeta: right, then down (row by row from the top); zeta*: right, then up.
    """
    order = check_order(order)
    if order == "omega":
        return [(y, x) for x in range(cols) for y in range(rows)]
    if order == "omega*":
        return [(y, x) for x in reversed(range(cols)) for y in range(rows)]
    if order == "zeta":
        return [(y, x) for y in range(rows) for x in range(cols)]
    return [(y, x) for y in reversed(range(rows)) for x in range(cols)]


def split_video(order: str, frames: int, rows: int, cols: int) -> list[Pos]:
    """ADC.Split for a video: frame by frame, each frame in ``order``."""
    one = split(order, rows, cols)
    return [(f, y, x) for f in range(frames) for (y, x) in one]


def rel_index(extent: Extent, ctx: Pos, cur: Pos) -> int:
    """ADC.Emb's label of context patch ``ctx`` seen from ``cur``: an index into the offset table.

    Offsets (df, dy, dx) = ctx - cur with -ef <= df <= 0, |dy| <= eh, |dx| <= ew; the current patch
    itself is offset (0, 0, 0). Raises ``ValueError`` outside the window (a programming error).
    """
    df, dy, dx = ctx[0] - cur[0], ctx[1] - cur[1], ctx[2] - cur[2]
    if not (-extent.f <= df <= 0 and abs(dy) <= extent.h and abs(dx) <= extent.w):
        raise ValueError(f"offset {(df, dy, dx)} lies outside extent {extent}")
    return ((-df) * (2 * extent.h + 1) + dy + extent.h) * (2 * extent.w + 1) + dx + extent.w


def center_index(extent: Extent) -> int:
    """The offset index of the current patch itself (the paper's label "n")."""
    return rel_index(extent, (0, 0, 0), (0, 0, 0))


def window(extent: Extent, cur: Pos) -> Iterator[Pos]:
    """Every position a patch at ``cur`` may take context from (itself excluded), nearest frame first."""
    f, y, x = cur
    for df in range(0, extent.f + 1):
        for dy in range(-extent.h, extent.h + 1):
            for dx in range(-extent.w, extent.w + 1):
                if df or dy or dx:
                    yield (f - df, y + dy, x + dx)


# Canvas borders a patch touches, as bits of `edges`; every combination has its own embedding.
TOP, BOTTOM, LEFT, RIGHT = 1, 2, 4, 8
EDGE_KINDS = 16


def edges(y: int, x: int, rows: int, cols: int | None) -> int:
    """The canvas borders patch (y, x) of a rows x cols grid touches: a sum of TOP, BOTTOM, LEFT, RIGHT
    (``cols`` None: an endless canvas, with no right edge).

    Models trained with ``edges`` learn where a patch is from these bits alone: a patch decoded first,
    with no context, still knows whether it is at the top (sky) or the bottom (ground) of the frame.
    """
    return (TOP * (y == 0) + BOTTOM * (y == rows - 1)
            + LEFT * (x == 0) + RIGHT * (cols is not None and x == cols - 1))


def border_mask(made: Tensor, y: int, x: int, ph: int, pw: int) -> Tensor:
    """The tokens (ph * pw,) bool of patch (y, x) along its borders with patches already made
    (``made``: (rows, cols) bool): what ``sampling.refine_borders`` draws again."""
    rows, cols = made.shape
    b = torch.zeros(ph, pw, dtype=torch.bool)
    b[:, 0] |= x > 0 and bool(made[y, x - 1])
    b[:, -1] |= x + 1 < cols and bool(made[y, x + 1])
    b[0] |= y > 0 and bool(made[y - 1, x])
    b[-1] |= y + 1 < rows and bool(made[y + 1, x])
    return b.reshape(-1)


def wave(order: str, y: int, x: int, rows: int, cols: int, extent: Extent) -> int:
    """Wavefront index of patch (y, x) in a frame generated in a basic order.

    Patches with the same index are independent, and decoding the indices in increasing order gives
    every patch exactly the context the sequential order gives it: in a column order a patch needs
    the column before it down to eh rows below, hence y + (eh + 1) * x; rows likewise.
    """
    order = check_order(order)
    if order == "omega":
        return y + (extent.h + 1) * x
    if order == "omega*":
        return y + (extent.h + 1) * (cols - 1 - x)
    if order == "zeta":
        return x + (extent.w + 1) * y
    return x + (extent.w + 1) * (rows - 1 - y)


@dataclass(frozen=True)
class Item:
    """One step of a plan: the patch at ``pos``, generated or (``known``) only pre-cached."""

    step: int
    pos: Pos
    known: bool


FrameItems = Callable[[int], Sequence[tuple[int, int, bool]]]


class Plan:
    """The patch order of a whole image or video, with each cache's expiry for NCP.Remove.

    ``frame_items(f)`` returns frame ``f``'s ``(y, x, known)`` in processing order; it must cover
    every patch of the frame exactly once and be deterministic. ``frames=None`` plans forever.
    """

    def __init__(self, rows: int, cols: int, frames: int | None, extent: Extent,
                 frame_items: FrameItems):
        self.rows, self.cols, self.frames, self.extent = rows, cols, frames, extent
        self._frame_items = frame_items
        self._ranks: OrderedDict[int, dict[tuple[int, int], int]] = OrderedDict()
        # "column" or "row" when every frame follows a column (omega) or row (zeta) order: it
        # tightens `live_bound`.
        self.sweep: str | None = None
        self._orders: list[str] | None = None  # per-frame basic orders (cycled), when the plan has them

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def basic(cls, order: str | Sequence[str], rows: int, cols: int, frames: int | None,
              extent: Extent, known_frames: int = 0) -> "Plan":
        """Frame by frame in a basic order; the first ``known_frames`` frames are given.

        ``order`` may be one name or one name per frame (cycled), as training draws them.
        """
        orders = [order] if isinstance(order, str) else list(order)
        per = [split(o, rows, cols) for o in orders]

        def items(f: int) -> list[tuple[int, int, bool]]:
            return [(y, x, f < known_frames) for (y, x) in per[f % len(per)]]

        plan = cls(rows, cols, frames, extent, items)
        orders = [check_order(o) for o in orders]
        plan._orders = orders
        if all(o.startswith("omega") for o in orders):
            plan.sweep = "column"
        elif all(o.startswith("zeta") for o in orders):
            plan.sweep = "row"
        return plan

    @classmethod
    def outpaint(cls, rows: int, cols: int, known: tuple[int, int, int, int],
                 extent: Extent) -> "Plan":
        """One frame whose patches ``known = (y0, x0, y1, x1)`` (end-exclusive) are given.

        The known patches are pre-cached first (zeta order), then the rest is composed from the basic
        orders so every new patch sees as much already-present context as the training orders give:
        right of the known box with omega (columns moving right), left of it with omega* (columns
        moving left), then above the finished band with zeta* (rows moving up) and below with zeta
        (rows moving down). Any subset of the four directions works, all four at once included.
        """
        y0, x0, y1, x1 = known
        if not (0 <= y0 < y1 <= rows and 0 <= x0 < x1 <= cols):
            raise bad("known", f"must be a non-empty box inside the {rows}x{cols} patch grid", known)
        order: list[tuple[int, int, bool]] = []
        order += [(y, x, True) for y in range(y0, y1) for x in range(x0, x1)]
        order += [(y, x, False) for x in range(x1, cols) for y in range(y0, y1)]
        order += [(y, x, False) for x in reversed(range(0, x0)) for y in range(y0, y1)]
        order += [(y, x, False) for y in reversed(range(0, y0)) for x in range(cols)]
        order += [(y, x, False) for y in range(y1, rows) for x in range(cols)]
        return cls(rows, cols, 1, extent, lambda f: order)

    # --- queries ------------------------------------------------------------------------------
    def items(self, f: int) -> Sequence[tuple[int, int, bool]]:
        got = self._frame_items(f)
        if len(got) != self.rows * self.cols:
            raise ValueError(f"frame {f} plans {len(got)} patches, expected {self.rows * self.cols}")
        return got

    def frame_order(self, f: int) -> str | None:
        """The basic order of frame ``f``, or None for composed plans."""
        return self._orders[f % len(self._orders)] if self._orders else None

    def frame_start(self, f: int) -> int:
        """Global step index of frame ``f``'s first item: every frame plans each patch once (`items`),
        so nothing per frame is kept, however long the video."""
        return f * self.rows * self.cols if f else 0

    def _rank(self, f: int) -> dict[tuple[int, int], int]:
        # A few frames' ranks are enough: expiry looks at most ef frames ahead.
        if f not in self._ranks:
            self._ranks[f] = {(y, x): i for i, (y, x, _) in enumerate(self.items(f))}
            while len(self._ranks) > self.extent.f + 2:
                self._ranks.popitem(last=False)
        return self._ranks[f]

    def step_of(self, pos: Pos) -> int:
        f, y, x = pos
        return self.frame_start(f) + self._rank(f)[(y, x)]

    def expiry(self, pos: Pos) -> int:
        """The last step whose patch may select ``pos`` as context (its own step if none).

        A cache at (f, y, x) serves patches of frames f .. f+ef within (eh, ew) of it that come after
        it in the plan; after the last of them, NCP.Remove drops it.
        """
        f, y, x = pos
        last = self.step_of(pos)
        ext = self.extent
        for g in range(f, f + ext.f + 1):
            if self.frames is not None and g >= self.frames:
                break
            start, rank = self.frame_start(g), self._rank(g)
            for yy in range(max(0, y - ext.h), min(self.rows, y + ext.h + 1)):
                for xx in range(max(0, x - ext.w), min(self.cols, x + ext.w + 1)):
                    last = max(last, start + rank[(yy, xx)])
        return last

    def groups(self, f: int, wavefront: bool) -> Iterator[list[Item]]:
        """Frame ``f``'s items in processing groups: one by one, or by wavefront when allowed.

        A wavefront groups patches whose contexts are complete and whose windows do not contain one
        another (`wave`): decoding them together gives the same tokens as the sequential plan.
        """
        start = self.frame_start(f)
        items = [Item(start + i, (f, y, x), known) for i, (y, x, known) in enumerate(self.items(f))]
        order = self.frame_order(f)
        if not wavefront or order is None or any(it.known for it in items):
            return iter([[it] for it in items])
        waves: dict[int, list[Item]] = {}
        for it in items:
            waves.setdefault(wave(order, it.pos[1], it.pos[2], self.rows, self.cols, self.extent), []).append(it)
        return iter([waves[t] for t in sorted(waves)])

    def __iter__(self) -> Iterator[Item]:
        return self.iter_from(0)

    def iter_from(self, frame: int) -> Iterator[Item]:
        """The plan's items from the first item of ``frame`` on (resuming a stream)."""
        f = frame
        while self.frames is None or f < self.frames:
            start = self.frame_start(f)
            for i, (y, x, known) in enumerate(self.items(f)):
                yield Item(start + i, (f, y, x), known)
            f += 1

    def live_bound(self) -> int:
        """An upper bound on the caches NCP holds at once (after Add, before Remove) for this plan.

        Earlier frames within ef can all be live; inside the current frame a column order keeps at
        most ``(ew + 1)`` columns, a row order ``(eh + 1)`` rows; any other order the whole frame.
        A known-frame prefix or outpainting plan is bounded by the frames in the window.
        """
        ext, per_frame = self.extent, self.rows * self.cols
        prev = min(ext.f, (self.frames or ext.f + 1) - 1) * per_frame
        if self.sweep == "column":
            return prev + min(self.cols, ext.w + 1) * self.rows
        if self.sweep == "row":
            return prev + min(self.rows, ext.h + 1) * self.cols
        return prev + per_frame


class EndlessPlan(Plan):
    """One canvas ``rows`` patches high with no right edge, drawn column by column from the left
    (omega) for as long as it is read: an endless panorama. ``cols`` is None; its items are made as
    they are read and a patch's step and expiry are sums, so nothing grows with the columns drawn.
    It gives every patch the context, and so the tokens, the same columns of a finite omega canvas
    get, up to the columns that one's right edge changes."""

    def __init__(self, rows: int, extent: Extent):
        super().__init__(rows, None, 1, extent, self._no_list)  # type: ignore[arg-type]
        self.sweep, self._orders = "column", ["omega"]

    @staticmethod
    def _no_list(f: int) -> Sequence[tuple[int, int, bool]]:
        raise ValueError("an endless canvas has no list of patches: read `groups` or iterate the plan")

    def step_of(self, pos: Pos) -> int:
        return pos[2] * self.rows + pos[1]

    def expiry(self, pos: Pos) -> int:
        """The step of the last patch reading ``pos``: column x + ew, row y + eh (or the last row)."""
        _, y, x = pos
        return self.step_of((0, min(self.rows - 1, y + self.extent.h), x + self.extent.w))

    def groups(self, f: int, wavefront: bool) -> Iterator[list[Item]]:
        if f:
            raise ValueError(f"an endless canvas is one frame, not frame {f}")
        rows, lag = self.rows, self.extent.h + 1
        if not wavefront:
            yield from ([it] for it in self.iter_from(0))
            return
        for t in itertools.count():  # wave t: the patches with y + (eh + 1) * x == t, as `Plan.groups`
            group = [Item(self.step_of((0, y, (t - y) // lag)), (0, y, (t - y) // lag), False)
                     for y in reversed(range(min(rows, t + 1))) if (t - y) % lag == 0]
            if group:
                yield group

    def iter_from(self, frame: int) -> Iterator[Item]:
        if frame:
            raise ValueError(f"an endless canvas is one frame, not frame {frame}")
        for x in itertools.count():
            for y in range(self.rows):
                yield Item(self.step_of((0, y, x)), (0, y, x), False)

    def live_bound(self) -> int:
        return (self.extent.w + 1) * self.rows
