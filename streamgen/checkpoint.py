"""Checkpoints: safetensors weights with a JSON config beside them. Nothing is ever unpickled.

``save(path, module, config)`` writes ``path`` (``*.safetensors``) and ``path`` with ``.json``; extra
tensors (optimizer state, step counters) go into the same file under a ``train/`` prefix so a run can
resume. ``load_state`` checks every tensor against the module and names the first mismatch.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, TypeVar

import torch
from pydantic import BaseModel
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from streamgen.config import parse
from streamgen.errors import StreamgenError

T = TypeVar("T", bound=BaseModel)


class CheckpointError(StreamgenError):
    """A checkpoint is missing, unreadable, or does not fit the model it is loaded into."""


def config_path(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(".json")


def fsync(path: str | os.PathLike) -> None:
    """Push a file's data, or a folder's entries, to the disk (through any descriptor of it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic(path: Path, write, mode: int = 0o644) -> None:
    """``write(tmp)`` a file beside ``path``, then rename it into place whole with ``mode``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, mode)  # mkstemp makes 0600; checkpoints are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(path: str | os.PathLike, module: nn.Module, config: BaseModel,
         extra: dict[str, torch.Tensor] | None = None, meta: dict[str, Any] | None = None) -> None:
    """Write weights (and ``extra`` tensors under ``train/``) and the config, each atomically."""
    path = Path(path)
    tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    for k, v in (extra or {}).items():
        tensors["train/" + k] = v.detach().contiguous().cpu()
    info = {"kind": type(config).__name__, "config": config.model_dump(mode="json"), **(meta or {})}
    _atomic(path, lambda tmp: save_file(tensors, tmp, metadata={"kind": info["kind"]}))
    _atomic(config_path(path), lambda tmp: Path(tmp).write_text(json.dumps(info, indent=2) + "\n"))


class TrainClock:
    """The time a training run has taken across its resumes: what its checkpoint at ``path`` recorded
    (``train_seconds`` of wall time, ``cpu_seconds`` of CPU time over all threads) plus this process's
    since the clock was made (``path`` None: from zero). `meta` gives both, for `save`'s ``meta``.
    Wall time counts a stopped process's pause; CPU time does not."""

    def __init__(self, path: str | os.PathLike | None):
        info: dict[str, Any] = {}
        cpath = config_path(path) if path is not None else None
        if cpath is not None and cpath.is_file():
            try:
                info = json.loads(cpath.read_text())
            except (OSError, json.JSONDecodeError):
                info = {}  # `resume` names what is wrong with the checkpoint itself
        self.wall0, self.cpu0 = float(info.get("train_seconds", 0.0)), float(info.get("cpu_seconds", 0.0))
        self.t0, self.c0 = time.monotonic(), time.process_time()

    def meta(self) -> dict[str, float]:
        return {"train_seconds": round(self.wall0 + time.monotonic() - self.t0, 3),
                "cpu_seconds": round(self.cpu0 + time.process_time() - self.c0, 3)}


def read(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file, or a `CheckpointError` that says what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint `{path}` does not exist: check the path, or train one first")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint `{path}` is not a readable safetensors file ({exc}); "
                              "it may be truncated or of another format: re-save or re-download it") \
            from None


def read_config(path: str | os.PathLike, cls: type[T]) -> tuple[T, dict[str, Any]]:
    """The config saved beside ``path``, validated as ``cls``, and the whole JSON record."""
    cpath = config_path(path)
    if not cpath.is_file():
        raise CheckpointError(f"config `{cpath}` beside the checkpoint does not exist: every "
                              "checkpoint is saved with its config")
    try:
        info = json.loads(cpath.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"config `{cpath}` is not valid JSON ({exc})") from None
    if info.get("kind") != cls.__name__:
        raise CheckpointError(f"checkpoint `{path}` holds a {info.get('kind')!r}, not a {cls.__name__}")
    return parse(cls, info.get("config", {}), prefix="config"), info


def load_state(module: nn.Module, tensors: dict[str, torch.Tensor], path: str | os.PathLike = "",
               allow_missing: bool = False) -> list[str]:
    """Copy ``tensors`` into ``module``, refusing missing, unexpected or mis-shaped tensors.

    ``allow_missing`` accepts tensors the checkpoint lacks (they keep their values); returns their names.
    """
    own = module.state_dict()
    weights = {k: v for k, v in tensors.items() if not k.startswith("train/")}
    missing = [name for name in own if name not in weights]
    for name, want in own.items():
        if name not in weights:
            if allow_missing:
                continue
            raise CheckpointError(f"checkpoint `{path}` lacks tensor `{name}` the model needs: it was "
                                  "saved from a different model or config")
        got = weights[name]
        if tuple(got.shape) != tuple(want.shape):
            raise CheckpointError(f"checkpoint `{path}` tensor `{name}` has shape {tuple(got.shape)} but "
                                  f"the model expects {tuple(want.shape)}: the config beside it does not "
                                  "match these weights")
    extra = sorted(set(weights) - set(own))
    if extra:
        raise CheckpointError(f"checkpoint `{path}` has tensor `{extra[0]}` the model does not know")
    module.load_state_dict(weights, strict=not allow_missing)
    return missing


def train_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("train/"):]: v for k, v in tensors.items() if k.startswith("train/")}


def resume(path: str | os.PathLike, module: nn.Module, opt: torch.optim.Optimizer | None = None) -> int:
    """Load a training checkpoint's weights (and optimizer state) if ``path`` exists; its step, or 0."""
    path = Path(path)
    if not path.exists():
        return 0
    tensors = read(path)
    load_state(module, tensors, path)
    state = train_state(tensors)
    if opt is not None and any(k.startswith("opt/") for k in state):
        restore_optimizer(opt, state)
    return int(state["step"].item()) if "step" in state else 0


def optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Flatten an optimizer's state into tensors (no pickle): ``opt/<param index>/<key>``."""
    out = {}
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            out[f"opt/{i}/{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return out


def restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    sd = opt.state_dict()
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("opt/"):
            _, i, k = key.split("/", 2)
            state.setdefault(int(i), {})[k] = v
    sd["state"] = state
    opt.load_state_dict(sd)


def digest(*modules: nn.Module | torch.Tensor) -> str:
    """SHA-256 of weights (names and values): the identity of a model or codec."""
    import hashlib

    h = hashlib.sha256()
    for m in modules:
        items = sorted(m.state_dict().items()) if isinstance(m, nn.Module) else [("", m)]
        for name, t in items:
            h.update(name.encode())
            h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()
