"""The hooks streamgen calls on its plugins. Every hook is named ``streamgen_*``.

A plugin is a module or object with functions marked ``@streamgen.hookimpl`` of the same names,
declared as an entry point in the ``streamgen`` group of its package::

    [project.entry-points.streamgen]
    my_tasks = "my_package.plugin"

Each hook receives a registry and adds things to it; none returns anything, and none is firstresult:
every installed plugin is called. The built-in tasks, codecs, text encoders and sinks are registered
through exactly these hooks, from entry points of the streamgen distribution itself.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from streamgen.plugins import Registry

hookspec = pluggy.HookspecMarker("streamgen")
hookimpl = pluggy.HookimplMarker("streamgen")


@hookspec
def streamgen_register_tasks(registry: "Registry") -> None:
    """Add task plugins: ``registry.add(name, task)`` with a `streamgen.plugins.task.Task` instance.

    Called once per process, the first time the task registry is needed (``Engine.run``,
    ``streamgen tasks``, ``streamgen generate``). Parameters: ``registry``, the task registry.
    Returns nothing. Not firstresult: every plugin's implementation is called; a name registered
    twice is an error naming both plugins where that name is used, and the other names keep working.

    What a task then does, the engine calls in this order: ``Request`` validates a request and
    ``job(request, env)`` turns it into a `Job` (an exception that is no `StreamgenError` in either is
    reported as one line naming the task and its plugin) before any frame is drawn; while the
    stream runs, before each frame ``f >= 1`` the job's schedule (``Job.prompts[f]``) and then its
    ``Job.steer(f)`` may change the prompt or the sampling from that frame on.
    """


@hookspec
def streamgen_register_codecs(registry: "Registry") -> None:
    """Add codec factories: ``registry.add(name, factory)``. ``streamgen.load(folder, codec=name)`` calls
    ``factory(weights, pg)`` with the folder's ``vqgan.safetensors`` and ``pg.safetensors`` paths (pg
    None when the folder has none) and gets a codec.

    A codec has ``name``, ``factor``, ``vocab_size``, ``encode(frames)`` and
    ``decode(tokens, prev=None)`` (see `streamgen.plugins.codec.Codec`). Called once per process, the first
    time a codec is looked up by name. Parameters: ``registry``, the codec registry. Returns nothing.
    Not firstresult.
    """


@hookspec
def streamgen_register_text_encoders(registry: "Registry") -> None:
    """Add text encoder factories: ``registry.add(name, factory)``; ``factory()`` returns an encoder.

    An encoder has ``dim`` (width of its token states) and ``encode(prompts: list[str])`` returning
    token states (B, T, dim) float32 and a mask (B, T) bool. Called once per process, the first time a
    text encoder is looked up. Parameters: ``registry``, the text-encoder registry. Returns nothing.
    Not firstresult.
    """


@hookspec
def streamgen_register_sinks(registry: "Registry") -> None:
    """Add output sinks: ``registry.add(name, factory)``; ``factory(target, **options)`` returns a sink.

    A sink has ``write(frame)`` taking uint8 (H, W, 3) and ``close()``. Called once per process, the
    first time a sink is looked up. Parameters: ``registry``, the sink registry. Returns nothing.
    Not firstresult.
    """
