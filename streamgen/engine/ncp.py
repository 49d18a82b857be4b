"""Nearby Context Pool (NCP): the caches of already-processed patches a future patch may attend to.

The pool is model-agnostic: an entry's payload is whatever the engine stores for a patch. The
engine stores Eq. 12's multi-layer cache a_n in the form attention consumes it: for every layer the
keys and values that patch's hidden states project to (``K = LN(h) Wk``, ``V = LN(h) Wv``). That is
a fixed linear function of the hidden states, kept projected so that no context patch is ever
re-projected for each patch it serves.

Memory bound: the pool never holds more than `Plan.live_bound` entries, which for a column order is
``ef * rows * cols + (ew + 1) * rows`` and for a row order ``ef * rows * cols + (eh + 1) * cols``:
independent of the number of frames, and of the canvas width for column orders.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from streamgen.engine import adc
from streamgen.engine.adc import Pos
from streamgen.config import Extent


@dataclass
class Entry:
    payload: Any
    expiry: int  # the last plan step that may select this entry


class NearbyContextPool:
    """Add, Select and Remove of the paper's section 3.2."""

    def __init__(self, extent: Extent, table: Extent | None = None):
        """``extent``: the window Select looks in. ``table``: the (larger or equal) window the model's
        offset embeddings were made for, which offset indices refer to; defaults to ``extent``."""
        self.extent = extent
        self.table = table or extent
        self._entries: dict[Pos, Entry] = {}

    def add(self, pos: Pos, payload: Any, expiry: int) -> None:
        """NCP.Add: keep ``payload`` (the cache a_n of the patch at ``pos``) until step ``expiry``."""
        self._entries[pos] = Entry(payload, expiry)

    def select(self, pos: Pos) -> list[tuple[Pos, Any, int]]:
        """NCP.Select: ``(ctx_pos, payload, offset index)`` of the cached patches within the extent.

        Ordered by offset index, so the same context always lines up the same way in memory.
        """
        out = []
        for p in adc.window(self.extent, pos):
            entry = self._entries.get(p)
            if entry is not None:
                out.append((p, entry.payload, adc.rel_index(self.table, p, pos)))
        out.sort(key=lambda t: t[2])
        return out

    def remove(self, step: int) -> int:
        """NCP.Remove after step ``step``: drop every cache no later patch can select. Returns how many."""
        dead = [p for p, e in self._entries.items() if e.expiry <= step]
        for p in dead:
            del self._entries[p]
        return len(dead)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, pos: Pos) -> bool:
        return pos in self._entries

    def positions(self) -> Iterator[Pos]:
        return iter(sorted(self._entries))

    def state(self) -> dict[Pos, Entry]:
        """Everything the pool holds, for a snapshot; `restore` puts it back."""
        return dict(self._entries)

    def restore(self, entries: dict[Pos, Entry]) -> None:
        self._entries = dict(entries)
