"""Hook specifications: how a plugin registers adapters, methods, views and metrics.

A plugin is a module listed under the entry-point group ``attn_plugins``::

    [project.entry-points.attn_plugins]
    my_plugin = "my_package.plugin"

and implements one or more of the hooks below with :data:`hookimpl`::

    from attn_plugins import hookimpl

    @hookimpl
    def attn_plugins_register_methods(register):
        register("my_method", MyMethod())

``register(name, component)`` adds a component under a stable string name. Names are unique per kind
across all installed packages; a clash is an error that names both distributions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT_NAME = "attn_plugins"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

Register = Callable[[str, Any], None]


@hookspec
def attn_plugins_register_adapters(register: Register) -> None:
    """Register capture adapters: ``register(name, adapter)``.

    An adapter is an :class:`attn_plugins.adapters.Adapter`: it says whether it ``supports(model)`` and
    turns an encoded batch into one :class:`~attn_plugins.record.AttentionRecord` per example. When
    several adapters support a model, the one with the highest ``priority`` is used.
    """


@hookspec
def attn_plugins_register_methods(register: Register) -> None:
    """Register attribution methods: ``register(name, method)``.

    A method is an :class:`attn_plugins.methods.Method`: called as ``method(record,
    position=...)`` it returns a NumPy array of scores over key tokens.
    """


@hookspec
def attn_plugins_register_views(register: Register) -> None:
    """Register views: ``register(name, view)``.

    A view is a callable ``view(record, **options)`` that returns an object with ``.html`` (a
    standalone page or fragment) and ``.save(path)``.
    """


@hookspec
def attn_plugins_register_metrics(register: Register) -> None:
    """Register evaluation metrics: ``register(name, metric)``.

    A metric is a callable that scores attributions (faithfulness, plausibility, agreement).
    """


HOOKS_BY_KIND = {
    "adapter": "attn_plugins_register_adapters",
    "method": "attn_plugins_register_methods",
    "view": "attn_plugins_register_views",
    "metric": "attn_plugins_register_metrics",
}
