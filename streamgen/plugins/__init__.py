"""The plugin system: hook specifications (`hookspecs`), the pluggy manager and its registries
(`registry`), and the contracts plugins implement: tasks (`task`) and codecs (`codec`)."""
from streamgen.plugins.hookspecs import hookimpl
from streamgen.plugins.registry import (DISABLE_ENV, ENTRY_POINT_GROUP, PluginError, Plugins, Registry, load,
                                        manager, reset)

__all__ = ["DISABLE_ENV", "ENTRY_POINT_GROUP", "PluginError", "Plugins", "Registry", "hookimpl", "load",
           "manager", "reset"]
