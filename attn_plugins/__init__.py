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
    PluginError,
    RecordFormatError,
    RecordValidationError,
    UnsupportedModelError,
)
from .hookspecs import hookimpl
from .record import AttentionRecord

try:
    __version__ = version("attn-plugins")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

# public name -> (module, attribute); attribute None means the module itself
_LAZY = {
    "capture": (".capture", "capture"),
    "capture_generate": (".generate", "capture_generate"),
    "save": (".storage", "save"),
    "load": (".storage", "load"),
    "attribute": (".methods", "attribute"),
    "explain": (".explain", "explain"),
    "AttentionExplainer": (".explain", "AttentionExplainer"),
    "compare": (".compare", "compare"),
    "plugins": (".manager", "plugins"),
    "register_plugin": (".manager", "register_plugin"),
    "reload_plugins": (".manager", "reload_plugins"),
    "views": (".views", None),
    "methods": (".methods", None),
    "metrics": (".metrics", None),
}

__all__ = [
    "AttentionRecord",
    "AttnPluginsError",
    "InputError",
    "MissingCaptureError",
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
    """Keeps ``ap.capture``/``ap.explain``/``ap.compare`` the functions when their submodules load.

    Importing ``attn_plugins.capture`` makes Python set the package attribute ``capture`` to the
    submodule, which would shadow the public function of the same name.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        target = _LAZY.get(name)
        if isinstance(value, types.ModuleType) and target is not None and target[1] is not None:
            self.__dict__.pop(name, None)  # resolved again, as the function, by __getattr__
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
