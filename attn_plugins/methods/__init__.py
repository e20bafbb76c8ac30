"""The methods layer: attribution methods over attention records, one module per method.

Every method follows the contract of :class:`Method` (its docstring): the same call, the same selection
words, a declaration of what it reads. Built-ins and plugins are looked up by name.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from ..record import AttentionRecord, Position, Selection
from .base import Method
from .guarded import GuardedMethod
from .learned import LearnedAttributor, is_attributor_path


def get_method(method: str | Method) -> Method:
    """A method object from its registered name (or the object itself).

    A method registered by a third-party (or in-process) plugin comes wrapped in :class:`GuardedMethod`,
    so its failures are PluginErrors naming it and its plugin wherever it is called.
    """
    if isinstance(method, Method):
        return method
    if is_attributor_path(method):
        return LearnedAttributor.load(method)  # a fitted attributor's file (ap.fit_attributor)
    if not isinstance(method, str):
        if callable(method):
            return method  # a third-party callable following the same call works too
        raise InputError(f"method must be a registered name or a Method, got {type(method).__name__}")
    from ..plugins import get_registry

    registry = get_registry()
    component = registry.get("method", method)
    if registry.is_builtin("method", method):
        return component
    return GuardedMethod(component, registry.blame("method", method))


def attribute(
    record: AttentionRecord,
    method: str | Method = "rollout",
    position: Position = "first",
    *,
    layers: Selection = None,
    heads: Selection = None,
    head_reduce: str = "mean",
    kind: str | None = None,
    **options: Any,
) -> np.ndarray:
    """Scores over the record's key tokens from ``method`` for the query ``position`` (see :class:`Method`)."""
    fn = get_method(method)
    return np.asarray(
        fn(record, position=position, layers=layers, heads=heads, head_reduce=head_reduce, kind=kind, **options)
    )


__all__ = ["GuardedMethod", "LearnedAttributor", "Method", "attribute", "get_method"]
