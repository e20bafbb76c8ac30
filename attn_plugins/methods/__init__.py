"""Attribution methods over attention; each is a plugin component looked up by name."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from ..record import AttentionRecord
from .base import Method, Position


def get_method(method: str | Method) -> Method:
    """A method object from its registered name (or the object itself)."""
    if isinstance(method, Method):
        return method
    if not isinstance(method, str):
        if callable(method):
            return method  # a third-party callable(record, position=..., kind=...) works too
        raise InputError(f"method must be a registered name or a Method, got {type(method).__name__}")
    from ..plugins import get_component

    return get_component("method", method)


def attribute(
    record: AttentionRecord, method: str | Method = "rollout", position: Position = "first", **opts: Any
) -> np.ndarray:
    """Scores over the record's key tokens from ``method`` for the query ``position``."""
    return np.asarray(get_method(method)(record, position=position, **opts))


__all__ = ["Method", "attribute", "get_method"]
