"""Hugging Face adapter: reads attention through transformers' AttentionInterface.

One attention function per original backend (``attn_plugins_dispatch_<backend>``) is registered once, for
good, with that backend's mask function (without which mask creation silently returns no mask). While a
capture of a model runs, the model's configs name these dispatchers; the first capture to start switches
them and the last to end restores them (:mod:`attn_plugins.adapters.routing`, reference counted). The
dispatcher asks which captures run in the *calling thread* and hands the call to the innermost one of
this module's model; with none it runs the module's own backend, untouched. Two threads capturing the
same model, or one capturing while another runs it plainly, therefore never mix.

A capture decides per module before the forward (from the model's :class:`Layout`, learned once with a
forward that computes nothing) which calls it captures. A captured call is computed once
(:func:`attn_adapters.kernel.attend`): the probabilities are written into the records' preallocated
``[L, H, Q, K]`` tensors and the output is ``probs @ V`` from them, as eager attention does
(``keep_backend=True``: the backend's output, probabilities beside it). Other calls run the backend.
Gradients, values, value norms, queries/keys and training mode use :class:`CaptureContext`: out of
place (autograd), every layer captured and selected afterwards.

Layer and kind come from the module the function is called with (``id(module)`` -> qualified name),
never from call order.

One concept per module, imports running one way (each imports only those above it):

* :mod:`.probs`: the eager attention computation out of place (``repeat_kv``, ``attention_probs``);
* :mod:`.dispatch`: the per-backend dispatchers and the switch of a model's configs to them;
* :mod:`.sites`: site discovery (kind, layer order, backend of each module; output projections);
* :mod:`.layout`: what a capture knows about a model between captures (:class:`ModelInfo`, :class:`Layout`);
* :mod:`.recording`: the recording capture (:class:`CaptureContext`), every call out of place;
* :mod:`.discovery`: the forward that learns the layout (:class:`Discovery`);
* :mod:`.fast`: the fast capture, calls chosen before the forward (:class:`FastCapture`);
* :mod:`.listen`: the listening capture for generation and streaming (:class:`ListenCapture`);
* :mod:`.adapter`: :class:`HuggingFaceAdapter` and its registration hook.
"""

from __future__ import annotations

from attn_adapters.huggingface.adapter import HuggingFaceAdapter, attn_plugins_register_adapters, model_meta
from attn_adapters.huggingface.discovery import Discovery
from attn_adapters.huggingface.dispatch import (
    backend_function,
    dispatcher_name,
    eager_function,
    original_backend,
)
from attn_adapters.huggingface.fast import FastCapture, contiguous_tokens, fast_eligible, plan_for
from attn_adapters.huggingface.layout import _INFO, Layout, ModelInfo, forget_layout, model_info
from attn_adapters.huggingface.listen import ListenCapture
from attn_adapters.huggingface.probs import attention_probs, repeat_kv
from attn_adapters.huggingface.recording import Call, CaptureContext, stack_calls
from attn_adapters.huggingface.sites import (
    Site,
    find_sites,
    on_interface,
    output_projection,
    output_projection_module,
)

__all__ = [
    "_INFO",
    "Call",
    "CaptureContext",
    "Discovery",
    "FastCapture",
    "HuggingFaceAdapter",
    "Layout",
    "ListenCapture",
    "ModelInfo",
    "Site",
    "attention_probs",
    "attn_plugins_register_adapters",
    "backend_function",
    "contiguous_tokens",
    "dispatcher_name",
    "eager_function",
    "fast_eligible",
    "find_sites",
    "forget_layout",
    "model_info",
    "model_meta",
    "on_interface",
    "original_backend",
    "output_projection",
    "output_projection_module",
    "plan_for",
    "repeat_kv",
    "stack_calls",
]
