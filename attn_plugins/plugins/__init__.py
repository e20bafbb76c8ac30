"""The plugin layer: hook specifications and the registry of adapters, methods, views and metrics."""

from .hookspecs import hookimpl, hookspec
from .manager import (
    DEFAULT_PLUGINS,
    ENV_VAR,
    PluginInfo,
    PluginRegistry,
    PluginWarning,
    get_component,
    get_registry,
    plugins,
    register_plugin,
    reload_plugins,
)

__all__ = [
    "DEFAULT_PLUGINS",
    "ENV_VAR",
    "PluginInfo",
    "PluginRegistry",
    "PluginWarning",
    "get_component",
    "get_registry",
    "hookimpl",
    "hookspec",
    "plugins",
    "register_plugin",
    "reload_plugins",
]
