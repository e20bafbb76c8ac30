"""Model layout: what a capture knows about a model between captures (sites, configs, the learned layout)."""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch

from attn_adapters.eager import all_configs
from attn_adapters.huggingface.dispatch import original_backend
from attn_adapters.huggingface.sites import Site, find_sites, on_interface

_KIND_ORDER = ("self", "encoder", "decoder", "cross")


@dataclass
class Layout:
    """Which layer of which kind each attention call is, learned once per model.

    ``slots`` maps ``(id(module), call index within a forward)`` (ALBERT calls one module per layer) to
    ``(kind, layer)``; ``totals`` holds ``(layers, heads)`` per kind. With it a capture decides before the
    forward which calls to capture and preallocates exactly what it keeps.
    """

    slots: dict[tuple[int, int], tuple[str, int]]
    totals: dict[str, tuple[int, int]]


@dataclass
class ModelInfo:
    """What a capture needs to know about a model that does not change between captures.

    Reused while the model's modules and their backends are the same (one walk over the modules per
    capture): configs, sites, whether the model is on the interface, the learned layout and the plans
    derived from it per selection.
    """

    module_ids: tuple[int, ...]
    configs: list[Any]
    backends: tuple[str | None, ...]
    sites: dict[int, Site]
    interface: bool
    layout: Layout | None = None
    plans: dict[tuple, Any] = field(default_factory=dict)


_INFO: weakref.WeakKeyDictionary[torch.nn.Module, ModelInfo] = weakref.WeakKeyDictionary()
_INFO_LOCK = threading.Lock()


def _backends(configs: list[Any]) -> tuple[str | None, ...]:
    return tuple(original_backend(c._attn_implementation_internal) for c in configs)


def _module_ids(model: torch.nn.Module) -> tuple[int, ...]:
    """``id`` of every module, like ``model.modules()`` but without building names (a few times faster)."""
    out, seen, stack = [], set(), [model]
    while stack:
        m = stack.pop()
        i = id(m)
        if i in seen:
            continue
        seen.add(i)
        out.append(i)
        stack.extend(c for c in reversed(m._modules.values()) if c is not None)
    return tuple(out)


def model_info(model: torch.nn.Module, walk: bool = True) -> ModelInfo:
    """The cached :class:`ModelInfo` of ``model``, rebuilt when a module was replaced or a backend switched.

    ``walk=False`` skips the walk over the modules (a per-capture cost of milliseconds): the fast path
    notices a replaced module itself (its planned layer is not written, so the capture learns again).
    """
    with _INFO_LOCK:
        info = _INFO.get(model)
    if info is not None and not walk and info.backends == _backends(info.configs):
        return info
    ids = _module_ids(model)
    if info is not None and info.module_ids == ids and info.backends == _backends(info.configs):
        return info
    configs = all_configs(model)
    info = ModelInfo(ids, configs, _backends(configs), find_sites(model), on_interface(model))
    with _INFO_LOCK:
        _INFO[model] = info
    return info


def forget_layout(model: torch.nn.Module, info: ModelInfo) -> None:
    """Drop a layout that no longer matches the calls the model makes (the next capture learns it again)."""
    with _INFO_LOCK:
        info.layout = None
        info.plans = {}
