"""The explain layer: attention joined with attribution, in shap's terms (the only layer that imports shap).

* :class:`AttentionExplainer` / :func:`explain` - method scores as a ``shap.Explanation``;
* :func:`compare` - every method against shap's own explainer on the same target;
* :func:`report` - the standalone HTML report the CLI writes;
* ``targets`` - what is explained for each task; ``maskers`` - attention-aware shap maskers;
* ``defaults`` - the methods a report and a comparison use when none are named.

The names load lazily: the command line reads ``defaults`` to build its help without importing shap.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the names are, for type checkers and the API docs; loaded on first use
    from .compare import CompareResult, compare
    from .explainer import AttentionExplainer, explain
    from .report import report

_LAZY = {
    "AttentionExplainer": ".explainer",
    "CompareResult": ".compare",
    "compare": ".compare",
    "explain": ".explainer",
    "report": ".report",
}

__all__ = ["AttentionExplainer", "CompareResult", "compare", "explain", "report"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


class _Layer(types.ModuleType):
    """Keeps ``compare`` and ``report`` the functions when their submodules (of the same names) load."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and name in _LAZY and _LAZY[name] == f".{name}":
            self.__dict__.pop(name, None)  # resolved again, as the function, by __getattr__
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Layer
