"""attn-plugins: capture transformer attention from any model, view it, explain with it, and check it.

The public names are imported lazily so that ``import attn_plugins`` stays fast and a plugin that only
needs :data:`hookimpl` does not pull in shap or transformers.
"""

from __future__ import annotations

import importlib
import sys
import types
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from .errors import (
    AttnPluginsError,
    InputError,
    MissingCaptureError,
    OutputError,
    PluginError,
    RecordFormatError,
    RecordValidationError,
    UnsupportedModelError,
)
from .plugins.hookspecs import hookimpl

try:
    __version__ = version("attn-plugins")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

# public name -> (module, attribute); attribute None means the module itself
_LAZY = {
    "AttentionRecord": (".record.record", "AttentionRecord"),  # lazy too: it imports torch
    "capture": (".capture.forward", "capture"),
    "capture_generate": (".capture.generate", "capture_generate"),
    "save": (".record.storage", "save"),
    "load": (".record.storage", "load"),
    "attribute": (".methods", "attribute"),
    "get_method": (".methods", "get_method"),
    "explain": (".explain.explainer", "explain"),
    "AttentionExplainer": (".explain.explainer", "AttentionExplainer"),
    "compare": (".explain.compare", "compare"),
    "report": (".explain.report", "report"),
    "fit_attributor": (".explain.learned", "fit_attributor"),
    "LearnedAttributor": (".methods.learned", "LearnedAttributor"),
    "plugins": (".plugins.manager", "plugins"),
    "register_plugin": (".plugins.manager", "register_plugin"),
    "reload_plugins": (".plugins.manager", "reload_plugins"),
    "views": (".views", None),
    "methods": (".methods", None),
    "metrics": (".metrics", None),
    "zoo": (".zoo", None),
}

__all__ = [
    "AttnPluginsError",
    "InputError",
    "MissingCaptureError",
    "OutputError",
    "PluginError",
    "RecordFormatError",
    "RecordValidationError",
    "UnsupportedModelError",
    "hookimpl",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'attn_plugins' has no attribute {name!r}") from None
    module = importlib.import_module(module_name, __name__)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """Keeps ``ap.capture``/``ap.explain``/``ap.plugins`` the functions when their subpackages load.

    Importing ``attn_plugins.capture`` makes Python set the package attribute ``capture`` to the
    subpackage, which would shadow the public function of the same name.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        target = _LAZY.get(name)
        if isinstance(value, types.ModuleType) and target is not None and target[1] is not None:
            self.__dict__.pop(name, None)  # resolved again, as the function, by __getattr__
            return
        super().__setattr__(name, value)


# The imports above made the subpackages ``plugins`` (and maybe others) attributes; names that are public
# functions must resolve through __getattr__ to the function instead.
for _name, (_, _attr) in _LAZY.items():
    if _attr is not None and isinstance(globals().get(_name), types.ModuleType):
        del globals()[_name]
sys.modules[__name__].__class__ = _Package
