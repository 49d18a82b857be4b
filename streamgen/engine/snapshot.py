"""Saving and restoring a stream, so a crashed stream continues where its last snapshot was.

A snapshot is one safetensors file (written to a temporary file, then renamed): the NCP caches, the
last frame's pixels and the tokens of the frames the caches came from as tensors, and as metadata the position (frames done), the request, and the
identities (weight digests) of the model and the codec. The sampler needs no state of its own: every
patch's random numbers derive from (seed, draw, f, y, x) (`streamgen.engine.sampling`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from streamgen import checkpoint as ckpt
from streamgen.checkpoint import fsync
from streamgen.engine import StreamState
from streamgen.errors import StreamgenError
from streamgen.engine.ncp import Entry

FORMAT = "streamgen-snapshot-1"


class SnapshotError(StreamgenError):
    """A snapshot is unreadable or belongs to another model or codec."""


def save(path: str | os.PathLike, state: StreamState, meta: dict[str, Any]) -> None:
    """Write ``state`` and ``meta`` (JSON-serialisable) atomically to ``path``, readable by its owner
    only: the request in ``meta`` may name an RTMP URL with its stream key."""
    tensors: dict[str, torch.Tensor] = {}
    positions = []
    for i, (pos, entry) in enumerate(sorted(state.pool.items())):
        tensors[f"pool/{i}"] = entry.payload.contiguous()
        positions.append([list(pos), entry.expiry])
    if state.prev is not None:
        tensors["prev"] = state.prev.contiguous()
    if state.tokens is not None:
        tensors["tokens"] = state.tokens.contiguous()
    for f, tokens in (state.history or {}).items():
        if f != state.frames_done - 1:  # that one is `tokens`
            tensors[f"history/{f}"] = tokens.contiguous()
    info = {"format": FORMAT, "frames_done": state.frames_done, "pool": positions,
            "conditioning": state.conditioning, **meta}
    if not tensors:
        tensors["empty"] = torch.zeros(1)
    path = Path(path)

    def write(tmp: str) -> None:
        save_file(tensors, tmp, metadata={"streamgen": json.dumps(info)})
        fsync(tmp)  # on disk before the rename makes it the snapshot

    try:
        ckpt._atomic(path, write, mode=0o600)
        fsync(path.resolve().parent)  # the rename itself
    except OSError as exc:
        raise SnapshotError(f"`snapshot` {str(path)!r} cannot be written ({exc.strerror or exc}): "
                            "the stream stops with its output closed; choose a writable place") from None


def load(path: str | os.PathLike) -> tuple[StreamState, dict[str, Any]]:
    """The state and metadata of a snapshot, or a `SnapshotError` that says what is wrong."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise SnapshotError(f"`--resume` snapshot {str(path)!r} does not exist")
    try:
        with safe_open(str(path), "pt") as fh:
            info = json.loads((fh.metadata() or {}).get("streamgen", "{}"))
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises several types for foreign or truncated files
        raise SnapshotError(f"`--resume` snapshot {str(path)!r} is not readable ({exc})") from None
    if info.get("format") != FORMAT:
        raise SnapshotError(f"`--resume` file {str(path)!r} is not a streamgen snapshot")
    pool = {tuple(pos): Entry(tensors[f"pool/{i}"], expiry) for i, (pos, expiry) in enumerate(info["pool"])}
    history = {int(k.split("/", 1)[1]): v for k, v in tensors.items() if k.startswith("history/")}
    if "tokens" in tensors:
        history[info["frames_done"] - 1] = tensors["tokens"]
    state = StreamState(info["frames_done"], pool, tensors.get("prev"), tensors.get("tokens"),
                        info.get("conditioning"), history or None)
    return state, info


def check_identity(info: dict[str, Any], identity: dict[str, str], path: str | os.PathLike) -> None:
    """Refuse a snapshot made with another model or codec, naming the mismatch."""
    for part in ("model", "codec"):
        saved, now = info.get("identity", {}).get(part), identity.get(part)
        if saved != now:
            raise SnapshotError(f"snapshot {str(path)!r} was made with another {part} (weights digest "
                                f"{str(saved)[:12]}, this {part} is {str(now)[:12]}): resume with the "
                                f"{part} it was made with")
