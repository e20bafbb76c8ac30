"""Per-thread dispatch: one attention function per original backend, registered once with transformers.

While a capture of a model runs, the model's configs name these dispatchers; the dispatcher hands each
call to the innermost capture of the calling thread that knows the module, or runs the module's own backend.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

import torch

from attn_adapters.huggingface.probs import attention_probs, repeat_kv
from attn_plugins.adapters.routing import active

_DISPATCH = "attn_plugins_dispatch_"
_EAGER_FUNCTIONS: dict[type, Callable[..., Any]] = {}
_REGISTER_LOCK = threading.Lock()


def original_backend(name: str | None) -> str | None:
    """The backend a dispatcher name stands for (other names are returned unchanged)."""
    if name and name.startswith(_DISPATCH):
        return name[len(_DISPATCH) :]
    return name


def eager_function(module: torch.nn.Module) -> Callable[..., Any]:
    """The eager function the module's own code falls back to (its modeling file's ``eager_attention_forward``)."""
    cls = type(module)
    fn = _EAGER_FUNCTIONS.get(cls)
    if fn is None:
        fn = getattr(sys.modules.get(cls.__module__), "eager_attention_forward", None) or _generic_eager
        _EAGER_FUNCTIONS[cls] = fn
    return fn


def _generic_eager(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Eager attention for a module whose modeling file has no ``eager_attention_forward`` of its own."""
    probs = attention_probs(
        query,
        key,
        attention_mask,
        scaling=scaling,
        softcap=kwargs.get("softcap"),
        position_bias=kwargs.get("position_bias"),
        sinks=kwargs.get("s_aux"),
    )
    weights = torch.nn.functional.dropout(probs, p=float(dropout or 0.0), training=module.training)
    n_rep = query.shape[1] // value.shape[1]
    output = torch.matmul(weights.to(value.dtype), repeat_kv(value, n_rep)).transpose(1, 2).contiguous()
    return output, probs.to(query.dtype)


def backend_function(backend: str, module: torch.nn.Module) -> Callable[..., Any]:
    """The function a module configured with ``backend`` runs when it is not captured."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if backend == "eager":
        return eager_function(module)
    return ALL_ATTENTION_FUNCTIONS[backend]


def _chain(captures: tuple[Any, ...], i: int, backend: str) -> Callable[..., Any]:
    """What capture ``i`` hands a call on to: the next enclosing capture of the model, or the backend."""

    def call(module, *args, **kwargs):
        if i < 0:
            return backend_function(backend, module)(module, *args, **kwargs)
        return captures[i].attention(
            module, *args, _backend=_chain(captures, i - 1, backend), _original=backend if i == 0 else None, **kwargs
        )

    return call


def dispatcher_name(backend: str) -> str:
    """Register (once, for good) and return the dispatcher standing for ``backend``."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    name = _DISPATCH + backend
    if name in ALL_ATTENTION_FUNCTIONS._global_mapping:
        return name

    def dispatch(module, query, key, value, attention_mask, *args, **kwargs):
        captures = active()
        if captures:
            # Only captures of this module's model take part (a capture may run inside another model's forward).
            mid = id(module)
            mine = tuple(c for c in captures if mid in c.sites)
            if mine:
                i = len(mine) - 1
                return mine[i].attention(
                    module,
                    query,
                    key,
                    value,
                    attention_mask,
                    *args,
                    _backend=_chain(mine, i - 1, backend),
                    _original=backend if i == 0 else None,
                    **kwargs,
                )
        return backend_function(backend, module)(module, query, key, value, attention_mask, *args, **kwargs)

    with _REGISTER_LOCK:
        if name not in ALL_ATTENTION_FUNCTIONS._global_mapping:
            mask_fn = ALL_MASK_ATTENTION_FUNCTIONS._global_mapping.get(backend, eager_mask)
            ALL_MASK_ATTENTION_FUNCTIONS.register(name, mask_fn)
            ALL_ATTENTION_FUNCTIONS.register(name, dispatch)
    return name


def _switch_to_dispatchers(model: torch.nn.Module, configs: list[Any]) -> Callable[[], None]:
    """Point every config at the dispatcher of its backend; return the undo."""
    top = original_backend(model.config._attn_implementation) or "eager"
    previous = [(c, c._attn_implementation_internal) for c in configs]
    for config, impl in previous:
        config._attn_implementation_internal = dispatcher_name(original_backend(impl) or top)

    def undo() -> None:
        for config, impl in previous:
            config._attn_implementation_internal = impl

    return undo
