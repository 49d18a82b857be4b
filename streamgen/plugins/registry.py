"""The plugin manager and the registries plugins fill.

The manager is created on demand (`manager()`), never at import time. It loads every entry point of
the ``streamgen`` group, one at a time, so a plugin that fails to import is reported with its name and
distribution while the others keep working; then it runs ``check_pending()``. Each hook
implementation is called on its own for the same reason. ``STREAMGEN_DISABLE_PLUGINS`` (a
comma-separated list of entry-point names) keeps named plugins from loading.
"""
from __future__ import annotations

import importlib.metadata as md
import os
from dataclasses import dataclass, field
from typing import Any, Generic, Iterator, TypeVar

import pluggy

from streamgen.plugins import hookspecs
from streamgen.errors import StreamgenError

ENTRY_POINT_GROUP = "streamgen"
DISABLE_ENV = "STREAMGEN_DISABLE_PLUGINS"

T = TypeVar("T")


class PluginError(StreamgenError):
    """A plugin failed to load, raised inside a hook, or clashed with another plugin."""


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


class Registry(Generic[T]):
    """Named things of one kind (tasks, codecs, ...), each remembering which plugin added it."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Registration[T]] = {}
        self.failures: list[Failure] = []
        self._plugin, self._dist = "(direct)", "(direct)"

    def add(self, name: str, obj: T) -> None:
        """Register ``obj`` as ``name``; a second registration of the same name is an error."""
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin `{self._plugin}` registered a {self.kind} with an invalid name {name!r}")
        old = self._items.get(name)
        if old is not None:
            raise PluginError(f"{self.kind} `{name}` is registered twice: by plugin `{old.plugin}` "
                              f"({old.dist}) and by plugin `{self._plugin}` ({self._dist}); "
                              f"uninstall one or disable it with {DISABLE_ENV}={self._plugin}")
        self._items[name] = Registration(name, obj, self._plugin, self._dist)

    def get(self, name: str) -> T:
        return self.registration(name).obj

    def registration(self, name: str) -> Registration[T]:
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
            reg.failures = list(self.failures)
            for impl in getattr(self.pm.hook, hook).get_hookimpls():
                reg._plugin = impl.plugin_name
                reg._dist = self.dists.get(impl.plugin_name, "(registered directly)")
                try:
                    impl.function(registry=reg)
                except PluginError:
                    raise
                except Exception as exc:  # a broken plugin must not take the others down
                    reg.failures.append(Failure(reg._plugin, reg._dist,
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
        if ep.name in off or pm.get_plugin(ep.name) is not None:
            continue
        dist = ep.dist.name if ep.dist is not None else "(unknown distribution)"
        try:
            obj = ep.load()
            pm.register(obj, name=ep.name)
        except Exception as exc:
            plugins.failures.append(Failure(ep.name, dist, f"{type(exc).__name__}: {exc}"))
            continue
        plugins.dists[ep.name] = dist
    for name, obj in extra or []:
        pm.register(obj, name=name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin `{exc.plugin}` implements a hook streamgen does not have: {exc}") from None
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
