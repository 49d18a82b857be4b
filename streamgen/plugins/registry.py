"""The plugin manager and the registries plugins fill.

The manager is created on demand (`manager()`), never at import time. It loads every entry point of
the ``streamgen`` group, one at a time, so a plugin that fails to import is reported with its name and
distribution while the others keep working; ``check_pending()`` then unloads and reports a plugin
that implements a hook streamgen does not have. Each hook implementation is called on its own for the
same reason, and a name two plugins register is an error only where that name is looked up.
``STREAMGEN_DISABLE_PLUGINS`` (a comma-separated list of entry-point names) keeps named plugins from
loading.

`validate_request` and `make_job` are how the engine calls a task plugin: whatever a plugin raises
there that is not a `StreamgenError` becomes one `PluginError` line naming the task, the plugin and
its distribution (the original stays chained as ``__cause__``), and a job whose frames are not the
requested size is refused before any work.
"""
from __future__ import annotations

import importlib.metadata as md
import os
from dataclasses import dataclass, field
from typing import Any, Generic, Iterator, TypeVar

import pluggy

from streamgen.plugins import hookspecs
from streamgen.config import parse
from streamgen.errors import ConfigError, StreamgenError

ENTRY_POINT_GROUP = "streamgen"
DISABLE_ENV = "STREAMGEN_DISABLE_PLUGINS"

T = TypeVar("T")


class PluginError(StreamgenError):
    """A plugin failed to load, raised inside a hook or a task, or clashed with another plugin."""


class PluginConflict(PluginError, ConfigError):
    """A name registered by more than one plugin was looked up. A `ConfigError` too: the fix is in
    the installation (uninstall or disable one plugin), not in streamgen or the plugins' code."""


@dataclass
class Registration(Generic[T]):
    name: str
    obj: T
    plugin: str  # entry-point name of the plugin that registered it
    dist: str  # distribution (package) that plugin came from


@dataclass
class Failure:
    plugin: str
    dist: str
    error: str

    def __str__(self) -> str:
        return f"plugin `{self.plugin}` from `{self.dist}` failed: {self.error}"


@dataclass
class Conflict:
    """One name registered by several plugins; every registration of it, in the order made."""

    kind: str
    name: str
    regs: list[Registration]

    def __str__(self) -> str:
        by = [f"plugin `{r.plugin}` from `{r.dist}`" for r in self.regs]
        times = "twice" if len(by) == 2 else f"{len(by)} times"
        # streamgen's own plugins carry the built-ins: the one to switch off is a third party's
        third = [r for r in self.regs if r.dist != "streamgen"] or self.regs
        off = third[-1].plugin
        return (f"{self.kind} `{self.name}` is registered {times}: by {', by '.join(by[:-1])} and by {by[-1]}; "
                f"uninstall one or disable it with {DISABLE_ENV}={off}")


class Registry(Generic[T]):
    """Named things of one kind (tasks, codecs, ...), each remembering which plugin added it."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Registration[T]] = {}
        self._failures: list[Failure] = []
        self.conflicts: dict[str, Conflict] = {}
        self._plugin, self._dist = "(direct)", "(direct)"

    @property
    def failures(self) -> list[Failure | Conflict]:
        """Plugins that failed to load or to register, then names registered more than once."""
        return [*self._failures, *self.conflicts.values()]

    def add(self, name: str, obj: T) -> None:
        """Register ``obj`` as ``name``. A name registered again becomes a `Conflict`: it is taken out
        of use (looking it up raises `PluginConflict`), and every other name keeps working."""
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin `{self._plugin}` registered a {self.kind} with an invalid name {name!r}")
        reg = Registration(name, obj, self._plugin, self._dist)
        if name in self.conflicts:
            self.conflicts[name].regs.append(reg)
        elif name in self._items:
            self.conflicts[name] = Conflict(self.kind, name, [self._items.pop(name), reg])
        else:
            self._items[name] = reg

    def get(self, name: str) -> T:
        return self.registration(name).obj

    def registration(self, name: str) -> Registration[T]:
        if name in self.conflicts:
            raise PluginConflict(str(self.conflicts[name]))
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            msg = f"unknown {self.kind} {name!r}; installed: {known}"
            if self.failures:
                msg += "; " + "; ".join(str(f) for f in self.failures)
            raise PluginError(msg) from None

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[Registration[T]]:
        return iter(sorted(self._items.values(), key=lambda r: r.name))

    def names(self) -> list[str]:
        return sorted(self._items)

    def find(self, obj: Any) -> Registration[T] | None:
        """The registration of ``obj``, or else of an object of its class (a task instantiated anew
        by the caller, as `check_task(Predict(), ...)` does); None if no plugin registered either."""
        regs = [*self._items.values(), *(r for c in self.conflicts.values() for r in c.regs)]
        tests = [lambda r: r.obj is obj]
        if type(obj).__module__ != "builtins":  # every function or `object()` shares a class
            tests.append(lambda r: type(r.obj) is type(obj))
        for same in tests:
            for reg in regs:
                if same(reg):
                    return reg
        return None


@dataclass
class Plugins:
    """The loaded plugin manager and one registry per hook."""

    pm: pluggy.PluginManager
    dists: dict[str, str] = field(default_factory=dict)  # plugin name -> distribution
    failures: list[Failure] = field(default_factory=list)
    _registries: dict[str, Registry] = field(default_factory=dict)

    HOOKS = {"tasks": ("streamgen_register_tasks", "task"),
             "codecs": ("streamgen_register_codecs", "codec"),
             "text_encoders": ("streamgen_register_text_encoders", "text encoder"),
             "sinks": ("streamgen_register_sinks", "sink")}

    def registry(self, which: str) -> Registry:
        """The registry ``which`` (tasks, codecs, text_encoders, sinks), filled on first use."""
        if which not in self._registries:
            hook, kind = self.HOOKS[which]
            reg: Registry = Registry(kind)
            reg._failures = list(self.failures)
            for impl in getattr(self.pm.hook, hook).get_hookimpls():
                reg._plugin = impl.plugin_name
                reg._dist = self.dists.get(impl.plugin_name, "(registered directly)")
                try:
                    impl.function(registry=reg)
                except Exception as exc:  # a broken plugin must not take the others down
                    reg._failures.append(Failure(reg._plugin, reg._dist,
                                                 f"{hook} raised {type(exc).__name__}: {exc}"))
            reg._plugin = reg._dist = "(direct)"
            self._registries[which] = reg
        return self._registries[which]

    @property
    def tasks(self) -> Registry:
        return self.registry("tasks")

    @property
    def codecs(self) -> Registry:
        return self.registry("codecs")

    @property
    def text_encoders(self) -> Registry:
        return self.registry("text_encoders")

    @property
    def sinks(self) -> Registry:
        return self.registry("sinks")


_current: Plugins | None = None


def disabled() -> set[str]:
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


def load(extra: list[tuple[str, Any]] | None = None) -> Plugins:
    """A fresh plugin manager: every enabled ``streamgen`` entry point, plus ``extra`` (name, plugin)."""
    pm = pluggy.PluginManager("streamgen")
    pm.add_hookspecs(hookspecs)
    plugins = Plugins(pm)
    off = disabled()
    for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if ep.name in off:
            continue
        dist = ep.dist.name if ep.dist is not None else "(unknown distribution)"
        if pm.get_plugin(ep.name) is not None:  # the same distribution seen twice is one plugin
            if plugins.dists.get(ep.name) != dist:
                plugins.failures.append(Failure(ep.name, dist, f"its entry point name {ep.name!r} is taken by "
                                                f"{plugins.dists.get(ep.name)}; rename one of them"))
            continue
        try:
            obj = ep.load()
            pm.register(obj, name=ep.name)
        except Exception as exc:
            plugins.failures.append(Failure(ep.name, dist, f"{type(exc).__name__}: {exc}"))
            continue
        plugins.dists[ep.name] = dist
    for name, obj in extra or []:
        pm.register(obj, name=name)
    while True:  # one plugin at a time: a hook name misspelt in one plugin leaves the others loaded
        try:
            pm.check_pending()
            break
        except pluggy.PluginValidationError as exc:
            name = pm.get_name(exc.plugin) or repr(exc.plugin)
            pm.unregister(exc.plugin)
            dist = plugins.dists.pop(name, "(registered directly)")
            plugins.failures.append(Failure(name, dist, f"implements a hook streamgen does not have: {exc}"))
    return plugins


def manager() -> Plugins:
    """The process's plugins, loaded on first call."""
    global _current
    if _current is None:
        _current = load()
    return _current


def reset() -> None:
    """Forget the loaded plugins (after installing or disabling one); the next call reloads."""
    global _current
    _current = None


# --- calling a task plugin ----------------------------------------------------------------------------

def _origin(task: Any) -> str:
    """``task `x` of plugin `p` from `dist```: what a message about a task's fault names."""
    try:
        reg = manager().tasks.find(task)
    except Exception:  # reporting one plugin's fault must not end in another plugin's
        reg = None
    if reg is None:
        cls = type(task)
        return (f"task `{getattr(task, 'name', cls.__name__)}` ({cls.__module__}.{cls.__qualname__}, "
                f"registered by no installed plugin)")
    return f"task `{reg.name}` of plugin `{reg.plugin}` from `{reg.dist}`"


def _one_line(exc: BaseException) -> str:
    """A plugin's exception for a `PluginError`'s message: its type, and its message cut to 300 characters."""
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def validate_request(task: Any, data: Any, prefix: str = "") -> Any:
    """``data`` validated by the task's request model. Bad input stays the `ConfigError` naming the
    field; anything else the model raises is the plugin's fault, a `PluginError` naming it."""
    try:
        return parse(task.Request, data, prefix)
    except StreamgenError:
        raise
    except Exception as exc:
        raise PluginError(f"{_origin(task)} failed validating its request: {_one_line(exc)}") from exc


def make_job(task: Any, request: Any, env: Any) -> Any:
    """``task.job(request, env)``, checked: a plugin's own exception becomes one `PluginError` line,
    and a job that is not a `Job` of a `Plan` or whose frames are not the requested size is refused,
    so no caller writes frames of one size into an output opened for another."""
    from streamgen.engine.adc import Plan
    from streamgen.plugins.task import Job

    try:
        job = task.job(request, env)
    except StreamgenError:
        raise
    except Exception as exc:
        raise PluginError(f"{_origin(task)} failed in job(): {_one_line(exc)}") from exc
    if not isinstance(job, Job) or not isinstance(job.plan, Plan):
        got = type(job).__name__ if not isinstance(job, Job) else f"a Job whose plan is {type(job.plan).__name__}"
        raise PluginError(f"{_origin(task)} returned {got} from job(), not a streamgen.plugins.task.Job "
                          f"with a streamgen.engine.adc.Plan")
    ph, pw = env.patch_pixels
    made = (None if job.plan.cols is None else job.plan.cols * pw, job.plan.rows * ph)  # None: endless
    asked = (None if made[0] is None else getattr(request, "width", None), getattr(request, "height", None))
    if any(a is not None and a != m for a, m in zip(asked, made)):
        shown = "x".join("?" if a is None else str(a) for a in asked)
        raise PluginError(f"{_origin(task)} plans frames of {made[0]}x{made[1]} px (WxH), but the request "
                          f"asks for {shown} px: a task's plan must make frames of the requested size")
    for g in job.given:  # pasted over decoded frames: a box outside the frame would fail mid-stream
        shape = getattr(g.image, "shape", None)
        if getattr(g.image, "dtype", None) != "uint8" or len(shape or ()) != 3 or shape[2] != 3:
            raise PluginError(f"{_origin(task)} gives pixels of frame {g.frame} that are not uint8 (h, w, 3): "
                              f"{getattr(g.image, 'dtype', type(g.image).__name__)} {shape}")
        h, w = shape[:2]
        if g.frame < 0 or g.top < 0 or g.left < 0 or g.top + h > made[1] or g.left + w > (made[0] or g.left + w):
            raise PluginError(f"{_origin(task)} gives {w}x{h} px at ({g.left}, {g.top}) of frame {g.frame}, "
                              f"which leave the {made[0]}x{made[1]} px frame")
    return job
