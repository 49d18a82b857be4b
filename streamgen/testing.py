"""Helpers for testing with streamgen: tiny random models that run on a CPU in milliseconds.

No trained weights and no GPU are needed: plugin authors use these to exercise their tasks.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from streamgen.config import PRESETS, ModelConfig
from streamgen.engine import Engine
from streamgen.model import VisionDecoder


def tiny_config(**over: Any) -> ModelConfig:
    """The ``tiny`` preset (2 layers, width 32, 4x4-token patches, 64 codes) with overrides."""
    data = dict(PRESETS["tiny"])
    data.update(over)
    return ModelConfig(**data)


def tiny_engine(seed: int = 0, factor: int = 2, **over: Any) -> Engine:
    """An `Engine` with a random tiny model and a palette codec of ``factor`` pixels per token."""
    from streamgen.codecs import PaletteCodec

    torch.manual_seed(seed)
    cfg = tiny_config(**over)
    return Engine(VisionDecoder(cfg), PaletteCodec(cfg.vocab_size, factor=factor))


def tiny_folder(path: str | Path, meta: dict[str, Any] | None = None, **over: Any) -> Path:
    """A model folder `streamgen.load` reads: a random tiny decoder (P-NAR unless told) with ``meta``
    in its config record (a ``sampling`` preset), and a random tiny VQGAN."""
    from streamgen import checkpoint as ckpt
    from streamgen.codecs import VQGAN, CodecConfig

    path = Path(path)
    torch.manual_seed(0)
    model = VisionDecoder(tiny_config(**{"pnar": True, **over}))
    ckpt.save(path / "model.safetensors", model, model.cfg, meta=meta)
    codec = CodecConfig(factor=8, codebook_size=64, code_dim=8, channels=[8, 8, 16, 16])
    ckpt.save(path / "vqgan.safetensors", VQGAN(codec), codec)
    return path


class HashTextEncoder:
    """A deterministic stand-in text encoder: each word maps to a fixed random vector. For tests."""

    name = "hash"

    def __init__(self, dim: int = 8):
        self.dim = dim

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        import zlib

        words = [p.lower().split() or [""] for p in prompts]
        T = max(len(w) for w in words)
        states = torch.zeros(len(prompts), T, self.dim)
        mask = torch.zeros(len(prompts), T, dtype=torch.bool)
        for b, ws in enumerate(words):
            for t, word in enumerate(ws):
                g = torch.Generator().manual_seed(zlib.crc32(word.encode()))
                states[b, t] = torch.randn(self.dim, generator=g)
                mask[b, t] = True
        return states, mask


def check_task(task: Any, request: dict[str, Any], frames: int = 2) -> list:
    """Conformance kit: run a task plugin on a tiny random CPU engine and check its contract.

    ``task`` is a `streamgen.plugins.task.Task` instance or an installed task's name; ``request`` a valid
    request for it (small sizes: the tiny engine has 8x8-pixel patches). Checks that the request
    model forbids unknown fields, that the job's plan covers every patch and makes frames of the
    requested size, that known patches are planned as known, that the output has the declared kind
    and consistent frames, that the same seed gives the same frames, that given pixels stay inside
    the frame and come back as they were, that a prompt schedule and a `Job.steer` give well-formed
    changes (the same for the same frame, so a resumed stream steers alike), and that a fault inside
    ``job()`` (an engine service raising) reaches the caller as the engine's one-line `PluginError`
    naming the task, not swallowed or passed off as bad input. Returns the frames taken; raises
    ``AssertionError`` on a breach.
    """
    import itertools

    import numpy as np

    from streamgen.errors import ConfigError
    from streamgen.plugins import PluginError, manager
    from streamgen.plugins.registry import make_job, validate_request
    from streamgen.plugins.task import Task, TaskEnv, TaskRequest

    if isinstance(task, str):
        task = manager().tasks.get(task)
    assert isinstance(task, Task), f"{task!r} is not a streamgen.plugins.task.Task"
    assert isinstance(task.name, str) and task.name, "a task needs a name"
    assert issubclass(task.Request, TaskRequest), "Request must subclass streamgen.plugins.task.TaskRequest"
    assert task.output in ("image", "video"), f"output must be 'image' or 'video', not {task.output!r}"
    eng = tiny_engine(text_dim=8 if task.needs_text else None)
    if task.needs_text:
        eng.text_encoder = HashTextEncoder(8)
    try:
        eng.run(task, {**request, "no_such_field_xyz": 1})
    except ConfigError:
        pass
    else:
        raise AssertionError("the request model accepted an unknown field: use extra='forbid'")
    req = validate_request(task, request)
    try:
        job = make_job(task, req, TaskEnv(eng))  # the engine's own checks of a job
    except PluginError as exc:
        raise AssertionError(str(exc)) from exc
    assert job.output == task.output, f"job.output {job.output!r} differs from task.output"
    plan = job.plan
    first = list(itertools.islice(plan, plan.rows * plan.cols))
    assert len({i.pos for i in first}) == plan.rows * plan.cols, "frame 0 must plan every patch once"
    for pos in job.known:
        f = pos[0]
        items = {(y, x): known for (y, x, known) in plan.items(f)}
        assert items.get(pos[1:]) is True, f"known patch {pos} is not planned as known"
    take = 1 if task.output == "image" else frames
    out = list(itertools.islice(eng.run(task, request), take))
    again = list(itertools.islice(eng.run(task, request), take))
    assert len(out) == take, f"expected {take} frames, got {len(out)}"
    for a, b in zip(out, again):
        assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3, f"bad frame {a.dtype} {a.shape}"
        assert a.shape == out[0].shape, "frames of one output must share a size"
        assert np.array_equal(a, b), "the same seed must give the same frames"
    asked = (getattr(req, "height", None), getattr(req, "width", None))
    for got, want in zip(out[0].shape[:2], asked):
        assert want is None or got == want, f"frames are {out[0].shape[:2]} (HxW) but the request asks {asked}"
    H, W = out[0].shape[:2]
    for g in job.given:  # the user's pixels come back as they were, but for the blended band
        h, w = g.image.shape[:2]
        assert g.image.dtype == np.uint8 and g.image.shape[2:] == (3,), f"given pixels must be uint8 (h, w, 3)"
        assert 0 <= g.top and g.top + h <= H and 0 <= g.left and g.left + w <= W, \
            f"given pixels of frame {g.frame} at ({g.top}, {g.left}) size {h}x{w} leave the {H}x{W} frame"
        if g.frame < take:
            k = g.feather
            shown = out[g.frame][g.top + k:g.top + h - k, g.left + k:g.left + w - k]
            assert np.array_equal(shown, g.image[k:h - k, k:w - k]), f"frame {g.frame} does not show its given pixels"
    for f, prompt in job.prompts.items():
        assert isinstance(f, int) and f >= 0 and isinstance(prompt, str) and prompt.strip(), \
            f"Job.prompts must map frame numbers >= 0 to prompts, not {f!r}: {prompt!r}"
    if job.steer is not None:  # called before each frame >= 1; a resumed stream relies on it being a function of f
        for f in range(1, take + 4):
            change = job.steer(f)
            assert change is None or (isinstance(change, dict) and set(change) <= {"prompt", "sampling"}), \
                f"Job.steer({f}) must return None or a dict of 'prompt' and 'sampling', not {change!r}"
            assert change == job.steer(f), f"Job.steer({f}) must give the same change every time it is asked"
    _check_faults_are_reported(task, request)
    return out


class _InjectedFault(RuntimeError):
    pass


def _check_faults_are_reported(task: Any, request: dict[str, Any]) -> None:
    """Make the engine services a plan needs raise, and check what the caller of ``engine.run`` gets."""
    from streamgen.errors import ConfigError
    from streamgen.plugins import PluginError

    eng = tiny_engine(text_dim=8 if task.needs_text else None)
    if task.needs_text:
        eng.text_encoder = HashTextEncoder(8)

    def fault(*args: Any, **kw: Any) -> Any:
        raise _InjectedFault("check_task: injected fault")

    eng.grid = eng.check_extent = fault  # type: ignore[method-assign]
    try:
        eng.run(task, request)
    except PluginError as exc:
        msg = str(exc)
        assert isinstance(exc.__cause__, _InjectedFault), f"the fault is not chained as __cause__: {exc!r}"
        assert f"`{task.name}`" in msg and "\n" not in msg and "injected fault" in msg, \
            f"a fault in job() must be one line naming the task and the fault, not {msg!r}"
    except ConfigError as exc:
        raise AssertionError(f"job() turned an internal fault into bad input (ConfigError): {exc}") from exc
    except _InjectedFault as exc:
        raise AssertionError("a fault in job() reached the caller unreported: the engine must wrap it") from exc
    # no exception: the task plans without the engine's grid or extent, so there was nothing to inject into
