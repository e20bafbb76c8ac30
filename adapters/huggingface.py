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
"""

from __future__ import annotations

import re
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from attn_adapters.eager import EagerAdapter, all_configs, is_hf_model, kept_outputs
from attn_adapters.kernel import POOL, Dest, Scratch, attend
from attn_plugins.adapters import (
    ATTENTION_RULES,
    Adapter,
    AttentionCall,
    CaptureOptions,
    EncodedBatch,
    model_device,
    move_inputs,
    rule_operands,
    rule_output,
    split_batch,
    target_scalar,
)
from attn_plugins.adapters.routing import active, installed, running
from attn_plugins.errors import MissingCaptureError, UnsupportedModelError
from attn_plugins.plugins import hookimpl
from attn_plugins.record import AttentionRecord, choose

_CROSS_NAME = re.compile(r"encoder_attn|crossattention|cross_attn|EncDecAttention", re.IGNORECASE)
_INDEX = re.compile(r"(?:^|\.)(\d+)(?=\.|$)")
# Output projections of attention modules, by attribute name (module first, then its parent's `output`).
_OUT_PROJ = ("o_proj", "out_proj", "o", "out_lin", "c_proj", "dense", "Wo", "proj")
_FIELDS = ("values", "value_norms", "queries", "keys")
_KIND_ORDER = ("self", "encoder", "decoder", "cross")


@dataclass
class Site:
    """One attention module of the model: its qualified name, kind, sort key and original backend."""

    name: str
    kind: str
    order: tuple[int, ...]
    backend: str
    cross: bool
    ref: Any = None  # weakref to the module: a cached id must still name the same module


@dataclass
class Call:
    """What one call of the attention function produced (batched, per query head)."""

    site: Site
    index: int  # how many times this module was already called in the same step (ALBERT reuses one module)
    probs: torch.Tensor  # [B, H, Q, K], float32; part of the graph when gradients are asked for
    causal: bool
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    sink_mass: torch.Tensor | None = None  # [B, H, Q]: the share of each row learned sinks took
    module_id: int = 0


def repeat_kv(states: torch.Tensor, n_rep: int) -> torch.Tensor:
    """[B, H_kv, T, d] -> [B, H_kv * n_rep, T, d], each key/value head repeated for its query heads (GQA)."""
    if n_rep == 1:
        return states
    b, h, t, d = states.shape
    return states[:, :, None].expand(b, h, n_rep, t, d).reshape(b, h * n_rep, t, d)


def attention_probs(
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *,
    scaling: float | None = None,
    softcap: float | None = None,
    position_bias: torch.Tensor | None = None,
    sinks: torch.Tensor | None = None,
    causal_if_unmasked: bool = False,
    with_sink: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
    """Softmax attention probabilities [B, H, Q, K] in float32 (float64 for a float64 model), out of place
    (autograd), as eager computes them.

    With learned sinks the rows keep the model's exact weights (they sum to less than 1); ``with_sink``
    also returns the sink's share of each row ``[B, H, Q]`` (None without sinks).
    """
    work = torch.promote_types(query.dtype, torch.float32)
    n_rep = query.shape[1] // key.shape[1]
    k = repeat_kv(key, n_rep).to(work)
    q_len, k_len = query.shape[2], k.shape[2]
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = torch.matmul(query.to(work), k.transpose(-1, -2)) * scale
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if position_bias is not None:
        scores = scores + position_bias[..., :k_len].to(work)
    if attention_mask is not None:
        mask = attention_mask[..., :k_len]
        if mask.dtype == torch.bool:
            # Eager masks add the dtype's minimum; filling with it keeps fully masked rows uniform, like eager.
            scores = scores.masked_fill(~mask, torch.finfo(torch.float32).min)
        else:
            scores = scores + mask.to(work)
    elif causal_if_unmasked and q_len > 1:
        # sdpa's is_causal: upper-left aligned (only used when no mask was built).
        allowed = torch.ones(q_len, k_len, dtype=torch.bool, device=scores.device).tril()
        scores = scores.masked_fill(~allowed, torch.finfo(torch.float32).min)
    sink = None
    if sinks is not None:
        # A learned sink logit per head takes part in the softmax; its column is the mass no token gets (gpt-oss).
        col = sinks.to(work).reshape(1, -1, 1, 1).expand(scores.shape[0], -1, q_len, 1)
        logits = torch.cat([scores, col], dim=-1)
        logits = logits - logits.amax(dim=-1, keepdim=True)
        full = torch.softmax(logits, dim=-1)
        probs, sink = full[..., :-1], full[..., -1]
    else:
        probs = torch.softmax(scores, dim=-1)
    return (probs, sink) if with_sink else probs


def output_projection_module(model: torch.nn.Module, site: Site, module: torch.nn.Module) -> torch.nn.Module | None:
    """The attention output projection module (``nn.Linear`` or GPT-2's ``Conv1D``), or None if not found.

    Llama-, GPT-2-, BART-, T5-style modules hold it themselves (``o_proj``, ``c_proj``, ``out_proj``, ``o``);
    BERT-style self-attention modules leave it to their parent's ``output.dense``.
    """
    holders = [module]
    if "." in site.name:
        parent = model.get_submodule(site.name.rsplit(".", 1)[0])
        holders.append(getattr(parent, "output", None))
    for holder in holders:
        if holder is None:
            continue
        for attr in _OUT_PROJ:
            proj = getattr(holder, attr, None)
            if isinstance(proj, torch.nn.Linear) or type(proj).__name__ == "Conv1D":
                return proj
    return None


def output_projection(model: torch.nn.Module, site: Site, module: torch.nn.Module) -> torch.Tensor | None:
    """The attention output projection as a [hidden, heads * head_dim] matrix, or None if it cannot be found."""
    proj = output_projection_module(model, site, module)
    if proj is None:
        return None
    # GPT-2's Conv1D stores its weight as [in, out]; nn.Linear as [out, in].
    return proj.weight if isinstance(proj, torch.nn.Linear) else proj.weight.t()


def on_interface(model: torch.nn.Module) -> bool:
    """Whether the model's code routes attention through ``ALL_ATTENTION_FUNCTIONS`` (transformers' own check)."""
    from transformers import PreTrainedModel

    return all(m._can_set_attn_implementation() for m in model.modules() if isinstance(m, PreTrainedModel))


def find_sites(model: torch.nn.Module) -> dict[int, Site]:
    """Map ``id(module)`` of every named submodule to its :class:`Site` (kind, layer order, backend).

    Only the modules the attention function is called with are ever looked up, so naming every module
    is harmless. Kind: encoder-decoder models split on the encoder's qualified name (``get_encoder()``);
    cross-attention is told by ``is_cross_attention`` or the path (``encoder_attn``, ``crossattention``,
    ``cross_attn``, ``EncDecAttention``). Layer order: the integers in the path.
    """
    names = {id(m): name for name, m in model.named_modules()}
    encoder_prefix = None
    if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        encoder_prefix = names.get(id(model.get_encoder()))
    default_backend = original_backend(model.config._attn_implementation) or "eager"
    sites = {}
    for name, module in model.named_modules():
        if not name:
            continue
        cross = bool(getattr(module, "is_cross_attention", False)) or bool(_CROSS_NAME.search(name))
        if encoder_prefix is not None:
            in_encoder = encoder_prefix == "" or name.startswith(encoder_prefix + ".")
            kind = "encoder" if in_encoder else ("cross" if cross else "decoder")
        else:
            kind = "cross" if cross else "self"
        config = getattr(module, "config", None)
        backend = original_backend(getattr(config, "_attn_implementation", None)) or default_backend
        order = tuple(int(i) for i in _INDEX.findall(name))
        sites[id(module)] = Site(name, kind, order, backend, cross, weakref.ref(module))
    return sites


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


# ---------------------------------------------------------------------------- per-thread dispatch
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


def _install(model: torch.nn.Module, info: ModelInfo) -> Any:
    """The model switched to the dispatchers while this capture runs (shared with the model's other captures)."""
    return installed(model, "dispatch", lambda: _switch_to_dispatchers(model, info.configs))


# ---------------------------------------------------------------------------- captures
class CaptureContext:
    """A capture that records every call out of place (autograd works), selection afterwards.

    Used for gradients, values, value norms, queries/keys and training mode, and by tests that look at
    single calls. ``with CaptureContext(model, options).active() as ctx: model(...)``; ``ctx.steps`` then
    holds one list of :class:`Call` per forward (see :meth:`begin_step`).
    """

    def __init__(self, model: torch.nn.Module, options: CaptureOptions) -> None:
        self.model = model
        self.options = options
        self.info: ModelInfo | None = None
        self.sites: dict[int, Site] = {}
        self.steps: list[list[Call]] = [[]]
        self.calls = 0
        self._counts: dict[Any, int] = {}
        self._projections: dict[int, torch.Tensor | None] = {}

    @contextmanager
    def active(self) -> Iterator[CaptureContext]:
        """Switch the model to the dispatchers (unless another capture did) and make this the thread's capture."""
        self.info = self.info if self.info is not None else model_info(self.model)
        self.sites = self.info.sites
        self.prepare()
        with _install(self.model, self.info), running(self):
            yield self

    def prepare(self) -> None:
        """Decide, before the forward, what to capture (subclasses)."""

    def begin_step(self) -> None:
        """Start a new forward pass (generation runs one per token); per-module call counts restart."""
        if self.steps[-1]:
            self.steps.append([])
        self._counts = {}

    def site(self, module: torch.nn.Module) -> Site:
        """The module's site (a module created after the capture started gets one of its own)."""
        site = self.sites.get(id(module))
        if site is None:
            backend = original_backend(self.model.config._attn_implementation) or "eager"
            site = Site(type(module).__name__, "self", (), backend, False)
        return site

    def attention(
        self,
        module: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        dropout: float = 0.0,
        scaling: float | None = None,
        *,
        _backend: Callable[..., Any] | None = None,
        _original: str | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Probabilities computed out of place and recorded; the output from them (or the backend's)."""
        site = self.site(module)
        is_causal = kwargs.get("is_causal")
        if is_causal is None:
            is_causal = getattr(module, "is_causal", True)
        softcap, sinks = kwargs.get("softcap"), kwargs.get("s_aux")
        rule = self.options.attention_rule
        query, key = rule_operands(rule, query, key)
        # Grad mode is the caller's: ap.capture enables it only when gradients are asked for.
        probs, sink = attention_probs(
            query,
            key,
            attention_mask,
            scaling=scaling,
            softcap=softcap,
            position_bias=kwargs.get("position_bias"),
            sinks=sinks,
            # Only sdpa-like backends turn "no mask" into a causal mask; eager functions do not.
            causal_if_unmasked=site.backend != "eager" and bool(is_causal),
            with_sink=True,
        )
        if _own_output(self.options, _backend, _original, softcap, sinks) or self.options.gradients or rule:
            # One computation: the output from the recorded probabilities, as eager attention does (a
            # relevance rule, CaptureOptions.attention_rule, acts on that product).
            weights = torch.nn.functional.dropout(probs, p=float(dropout or 0.0), training=module.training)
            n_rep = query.shape[1] // value.shape[1]
            output = rule_output(rule, weights.to(value.dtype), repeat_kv(value, n_rep)).transpose(1, 2).contiguous()
        else:
            output, _ = _backend(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
        causal = bool(getattr(module, "is_causal", is_causal))
        self._record(module, site, probs, sink, query, key, value, causal)
        return output, probs.to(query.dtype)

    def _record(
        self,
        module: torch.nn.Module,
        site: Site,
        probs: torch.Tensor,
        sink: torch.Tensor | None,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        causal: bool,
    ) -> None:
        self.calls += 1
        index = self._counts.get(site.name, 0)
        self._counts[site.name] = index + 1
        options = self.options
        extras: dict[str, torch.Tensor] = {}
        n_rep = query.shape[1] // key.shape[1]
        if options.values or options.value_norms:
            v = repeat_kv(value, n_rep).detach()
            if options.values:
                extras["values"] = v
            if options.value_norms:
                extras["value_norms"] = self._value_norms(module, site, v)
        if options.qk:
            extras["queries"] = query.detach()
            extras["keys"] = repeat_kv(key, n_rep).detach()
        kept = probs if options.gradients else probs.detach()
        sink = sink.detach() if sink is not None else None
        self.steps[-1].append(Call(site, index, kept, causal and not site.cross, extras, sink, id(module)))

    def _value_norms(self, module: torch.nn.Module, site: Site, v: torch.Tensor) -> torch.Tensor:
        """‖f(x_j)‖ per head (Kobayashi et al. 2020): the value vector through that head's output-projection slice."""
        if id(module) not in self._projections:
            self._projections[id(module)] = output_projection(self.model, site, module)
        w = self._projections[id(module)]
        if w is None:
            raise MissingCaptureError(
                f"value_norms: cannot find the output projection of {type(module).__name__} ({site.name}); "
                "capture values=True instead"
            )
        heads, d = v.shape[1], v.shape[-1]
        if w.shape[1] != heads * d:
            raise MissingCaptureError(
                f"value_norms: the output projection of {site.name} takes {w.shape[1]} inputs, not {heads}x{d}"
            )
        w = w.detach().to(v.dtype).reshape(w.shape[0], heads, d)
        return torch.einsum("bhkd,ohd->bhko", v, w).norm(dim=-1)

    # ------------------------------------------------------------------ assembling
    @staticmethod
    def totals(step: list[Call]) -> dict[str, tuple[int, int]]:
        """Layers and heads per kind before any selection."""
        out: dict[str, tuple[int, int]] = {}
        for call in step:
            layers, heads = out.get(call.site.kind, (0, call.probs.shape[1]))
            out[call.site.kind] = (layers + 1, heads)
        return out

    def stacked(self, step: list[Call], options: CaptureOptions) -> tuple[dict[str, list[Call]], dict[str, bool]]:
        """Calls of one step grouped by kind and ordered by layer (module position, then reuse count)."""
        by_kind: dict[str, list[Call]] = {}
        for call in step:
            if options.kinds is None or call.site.kind in options.kinds:
                by_kind.setdefault(call.site.kind, []).append(call)
        causal = {}
        for kind, calls in by_kind.items():
            calls.sort(key=lambda c: (c.site.order, c.site.name, c.index))
            if options.layers is not None:
                by_kind[kind] = [calls[i] for i in choose(options.layers, len(calls), f"{kind} layer")]
            causal[kind] = any(c.causal for c in calls)
        return by_kind, causal


def _own_output(
    options: CaptureOptions, backend: Callable[..., Any] | None, original: str | None, softcap: Any, sinks: Any
) -> bool:
    """Whether a captured call computes its output from its own probabilities (else the backend does).

    Nested in another capture of the same model (``original`` None) the enclosing capture makes the
    output. ``keep_backend`` asks for the backend's output, except where sdpa cannot reproduce the model
    (soft-capping, learned sinks) or the backend is the model's own eager code, which recomputes anyway.
    """
    if backend is None:
        return True
    if original is None:
        return False
    return not options.keep_backend or original == "eager" or softcap is not None or sinks is not None


class Discovery(CaptureContext):
    """A forward that computes nothing extra: every call goes to its backend and its place is noted.

    Learns the model's :class:`Layout` (kind and layer of each call, heads per kind), so later captures
    choose layers, heads and kinds before their forward.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__(model, CaptureOptions())
        self.seen: list[tuple[Site, int, int, int]] = []  # site, module id, call index, heads

    def attention(self, module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
        """Note the call's place and run the backend (or the enclosing capture) unchanged."""
        backend = kwargs.pop("_backend")
        kwargs.pop("_original", None)
        self.calls += 1
        mid = id(module)
        index = self._counts.get(mid, 0)
        self._counts[mid] = index + 1
        self.seen.append((self.site(module), mid, index, int(query.shape[1])))
        return backend(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)

    def layout(self) -> Layout | None:
        """The layout of the calls seen (None if there were none); layers ordered as :meth:`stacked` does."""
        if not self.seen:
            return None
        by_kind: dict[str, list[tuple[Site, int, int, int]]] = {}
        for entry in self.seen:
            by_kind.setdefault(entry[0].kind, []).append(entry)
        slots: dict[tuple[int, int], tuple[str, int]] = {}
        totals: dict[str, tuple[int, int]] = {}
        for kind in sorted(by_kind, key=_KIND_ORDER.index):
            entries = sorted(by_kind[kind], key=lambda e: (e[0].order, e[0].name, e[2]))
            for layer, (_, mid, index, _) in enumerate(entries):
                slots[(mid, index)] = (kind, layer)
            totals[kind] = (len(entries), entries[0][3])
        return Layout(slots, totals)


def _run_of(mask: torch.Tensor | None, b: int, n: int) -> tuple[int, int] | None | bool:
    """Real positions of example ``b`` as one ``(start, length)`` run; None: all of them; False: not one run."""
    if mask is None or mask.numel() == 0 or mask.shape[-1] != n:
        return None
    idx = torch.nonzero(mask[b].bool(), as_tuple=False).flatten()
    m = idx.numel()
    if m == n:
        return None
    if m == 0 or int(idx[-1]) - int(idx[0]) != m - 1:
        return False
    return (int(idx[0]), m)


def contiguous_tokens(batch: EncodedBatch) -> bool:
    """Whether every example's real tokens are one run (left or right padding), so records are cut as blocks."""
    for mask in (batch.source_mask, batch.target_mask):
        if mask is None or mask.numel() == 0:
            continue
        for b in range(mask.shape[0]):
            if _run_of(mask, b, mask.shape[-1]) is False:
                return False
    return True


class FastCapture(CaptureContext):
    """A capture decided per call before the forward; each captured call is computed once, into its records.

    The plan (from the model's :class:`Layout` and the selection) names the calls to capture. Each one
    runs :func:`attn_adapters.kernel.attend`: probabilities written into the records' preallocated
    ``[L_sel, H_sel, Q_b, K_b]`` tensors (one per example and kind, in the record dtype, padding never
    stored) and the output computed from them (``keep_backend``: the backend's). Other calls run the
    backend untouched. A call the layout does not know marks the capture stale (the caller learns again).
    """

    def __init__(self, model: torch.nn.Module, options: CaptureOptions, batch: EncodedBatch, info: ModelInfo) -> None:
        super().__init__(model, options)
        self.info = info
        self.batch = batch
        self.layout = info.layout
        self.scratch = Scratch()
        self.mask_cache: dict = {}
        self.plan: dict[tuple[int, int], tuple[str, int]] = {}
        self.layer_ids: dict[str, list[int]] = {}
        self.head_index: dict[str, torch.Tensor | None] = {}
        self.buffers: dict[str, list[torch.Tensor]] = {}
        self.sink_buffers: dict[str, list[torch.Tensor]] = {}
        self.geometry: dict[str, tuple[tuple[int, ...], list[tuple]]] = {}
        self.written: dict[str, int] = {}
        self.causal: dict[str, bool] = {}
        self.stale = False

    def prepare(self) -> None:
        """Resolve layers, heads and kinds into a plan of calls (cached per selection)."""
        self.plan, self.layer_ids, self.head_index = plan_for(self.info, self.options)

    def attention(
        self,
        module: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        dropout: float = 0.0,
        scaling: float | None = None,
        *,
        _backend: Callable[..., Any] | None = None,
        _original: str | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Capture this call if it is planned (one computation), else hand it to the backend untouched."""
        self.calls += 1
        mid = id(module)
        index = self._counts.get(mid, 0)
        self._counts[mid] = index + 1
        site = self.sites.get(mid)
        slot = self.plan.get((mid, index))
        if slot is None or site is None or site.ref() is not module:
            if slot is not None or (mid, index) not in self.layout.slots:
                self.stale = True  # a call the layout does not know: the caller learns the layout again
            return _backend(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
        kind, layer = slot
        is_causal = kwargs.get("is_causal")
        if is_causal is None:
            is_causal = getattr(module, "is_causal", True)
        softcap, sinks = kwargs.get("softcap"), kwargs.get("s_aux")
        own = _own_output(self.options, _backend, _original, softcap, sinks)
        b, h, q_len = query.shape[:3]
        k_len = key.shape[2]
        causal = bool(getattr(module, "is_causal", is_causal)) and not site.cross
        dests = self._dests(kind, layer, (b, h, q_len, k_len), sinks is not None, query.device)
        self.written[kind] = self.written.get(kind, 0) + 1
        self.causal[kind] = self.causal.get(kind, False) or causal
        output = attend(
            query,
            key,
            value if own else None,
            attention_mask,
            scaling=scaling,
            softcap=softcap,
            position_bias=kwargs.get("position_bias"),
            sinks=sinks,
            causal_if_unmasked=site.backend != "eager" and bool(is_causal),
            causal=causal,
            dests=dests,
            scratch=self.scratch,
            dropout=float(dropout or 0.0),
            training=module.training,
            mask_cache=self.mask_cache,
        )
        if not own:
            output, _ = _backend(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
        return output, None

    def _dests(self, kind: str, layer: int, shape: tuple[int, ...], sinks: bool, device: torch.device) -> list[Dest]:
        """Each example's slice of layer ``layer`` in its record tensor (allocated at the kind's first call)."""
        geometry = self.geometry.get(kind)
        if geometry is None:
            geometry = self._allocate(kind, shape, device)
        elif geometry[0] != shape:
            raise UnsupportedModelError(
                f"attention modules of one kind have different shapes {[geometry[0], shape]}; "
                "this model needs its own adapter (see docs/plugins.md)"
            )
        if sinks and kind not in self.sink_buffers:
            # float32 whatever the record dtype: [L, H, Q] is small, and half-precision sink mass would add
            # its own rounding to the rows + sink = 1 check.
            self.sink_buffers[kind] = [
                torch.zeros(buf.shape[:3], dtype=torch.float32, device=device) for buf in self.buffers[kind]
            ]
        sink_bufs = self.sink_buffers.get(kind)
        heads = self.head_index[kind]
        return [
            Dest(
                self.buffers[kind][i][layer],
                sink_bufs[i][layer] if sink_bufs is not None else None,
                heads,
                rows,
                cols,
            )
            for i, (rows, cols) in enumerate(geometry[1])
        ]

    def _allocate(self, kind: str, shape: tuple[int, ...], device: torch.device) -> tuple:
        b, h, q_len, k_len = shape
        masks = {"source": self.batch.source_mask, "target": self.batch.target_mask}
        q_side, k_side = (
            ("target", "source") if kind == "cross" else (("target",) * 2 if kind == "decoder" else ("source",) * 2)
        )
        n_layers = len(self.layer_ids[kind])
        heads = self.head_index[kind]
        n_heads = h if heads is None else heads.numel()
        runs, buffers = [], []
        for i in range(b):
            rows, cols = _run_of(masks[q_side], i, q_len), _run_of(masks[k_side], i, k_len)
            if rows is False or cols is False:  # checked before the forward (contiguous_tokens)
                raise UnsupportedModelError("real tokens are not one contiguous run")
            qn = rows[1] if rows else q_len
            kn = cols[1] if cols else k_len
            # From the pool: a fresh 75 MB tensor costs ~50 ms of page faults here, about as much as its attention.
            buffers.append(POOL.empty((n_layers, n_heads, qn, kn), self.options.dtype, device))
            runs.append((rows, cols))
        self.buffers[kind] = buffers
        self.geometry[kind] = (shape, runs)
        return self.geometry[kind]

    def complete(self) -> bool:
        """Whether every planned layer was written exactly once (else the layout was stale)."""
        if self.stale or not self.written:
            return False
        return all(self.written.get(kind, 0) == len(ids) for kind, ids in self.layer_ids.items())


def plan_for(info: ModelInfo, options: CaptureOptions) -> tuple[dict, dict[str, list[int]], dict]:
    """The calls to capture for a selection: ``{(module id, call index): (kind, position)}``, layers, heads."""
    sel = (
        tuple(options.layers) if options.layers is not None else None,
        tuple(options.heads) if options.heads is not None else None,
        tuple(options.kinds) if options.kinds is not None else None,
    )
    with _INFO_LOCK:
        cached = info.plans.get(sel)
    if cached is not None:
        return cached
    layout = info.layout
    plan, layer_ids, head_index = {}, {}, {}
    for kind, (n_layers, n_heads) in layout.totals.items():
        if options.kinds is not None and kind not in options.kinds:
            continue
        layers = choose(options.layers, n_layers, f"{kind} layer")
        layer_ids[kind] = layers
        heads = choose(options.heads, n_heads, "head") if options.heads is not None else None
        head_index[kind] = torch.tensor(heads) if heads is not None else None
        pos = {layer: i for i, layer in enumerate(layers)}
        for slot, (k, layer) in layout.slots.items():
            if k == kind and layer in pos:
                plan[slot] = (kind, pos[layer])
    cached = (plan, layer_ids, head_index)
    with _INFO_LOCK:
        info.plans[sel] = cached
    return cached


class ListenCapture(CaptureContext):
    """Hands each selected layer to a listener as it is computed (generation, streaming); keeps nothing.

    Layers are numbered by arrival among the calls of their kind in one forward (the model must call
    them in path order). A layer that is not selected runs the backend untouched. A selected one is
    computed once: the listener gets the whole layer ``[B, H, Q, K]``, or query blocks of at most
    ``options.block_bytes``; the output comes from the same probabilities (``keep_backend``: the backend).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        options: CaptureOptions,
        on_call: Callable[[AttentionCall], None],
    ) -> None:
        super().__init__(model, options)
        self.on_call = on_call
        self.scratch = Scratch()
        self.mask_cache: dict = {}
        self._last: dict[str, tuple] = {}
        self._layers: dict[str, int] = {}
        self.wanted: dict[str, set[int]] | set[int] | None = None
        self.num_layers: dict[str, int] = {}

    def prepare(self) -> None:
        """Which layers of each kind the listener reads, when that is known before the forward."""
        layout, layers = self.info.layout, self.options.layers
        if layout is not None:
            self.num_layers = {kind: n for kind, (n, _) in layout.totals.items()}
        if layers is None:
            self.wanted = None
        elif layout is not None:
            self.wanted = {kind: set(choose(layers, n, f"{kind} layer")) for kind, n in self.num_layers.items()}
        elif all(int(i) >= 0 for i in layers):
            self.wanted = {int(i) for i in layers}
        else:
            self.wanted = None  # negative numbers without a layout: every layer goes to the listener

    def begin_step(self) -> None:
        """A new forward: layer numbers restart."""
        super().begin_step()
        self._last, self._layers = {}, {}

    def _wants(self, kind: str, layer: int) -> bool:
        if self.options.kinds is not None and kind not in self.options.kinds:
            return False
        if self.wanted is None:
            return True
        wanted = self.wanted.get(kind, set()) if isinstance(self.wanted, dict) else self.wanted
        return layer in wanted

    def attention(
        self,
        module: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        dropout: float = 0.0,
        scaling: float | None = None,
        *,
        _backend: Callable[..., Any] | None = None,
        _original: str | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Number the call; compute and hand over a selected layer, run the backend for the others."""
        self.calls += 1
        site = self.site(module)
        kind = site.kind
        index = self._counts.get(site.name, 0)
        self._counts[site.name] = index + 1
        order = (site.order, site.name, index)
        if kind in self._last and order <= self._last[kind]:
            raise UnsupportedModelError(
                f"{type(self.model).__name__} calls its {kind} attention modules out of layer order "
                f"({site.name} after {self._last[kind][1]}); capture it whole with ap.capture instead"
            )
        self._last[kind] = order
        layer = self._layers.get(kind, 0)
        self._layers[kind] = layer + 1
        if self.options.value_edit is not None:  # value zeroing: the edited values feed every path below
            value = self.options.value_edit(kind, layer, module, value)
        if not self._wants(kind, layer):
            return _backend(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
        is_causal = kwargs.get("is_causal")
        if is_causal is None:
            is_causal = getattr(module, "is_causal", True)
        softcap, sinks = kwargs.get("softcap"), kwargs.get("s_aux")
        own = _own_output(self.options, _backend, _original, softcap, sinks)
        causal = bool(getattr(module, "is_causal", is_causal)) and not site.cross
        b, h, q_len = query.shape[:3]
        n_layers = self.num_layers.get(kind)
        rule = self.options.attention_rule
        if self.options.gradients or rule:
            # Autograd through the attention (gradients, relevance rules): out of place, the listener gets
            # probabilities inside the graph; the kernel's in-place steps would break the backward pass.
            q, k = rule_operands(rule, query, key)
            probs, sink = attention_probs(
                q,
                k,
                attention_mask,
                scaling=scaling,
                softcap=softcap,
                position_bias=kwargs.get("position_bias"),
                sinks=sinks,
                causal_if_unmasked=site.backend != "eager" and bool(is_causal),
                with_sink=True,
            )
            weights = torch.nn.functional.dropout(probs, p=float(dropout or 0.0), training=module.training)
            n_rep = query.shape[1] // value.shape[1]
            output = rule_output(rule, weights.to(value.dtype), repeat_kv(value, n_rep)).transpose(1, 2).contiguous()
            self.on_call(AttentionCall(kind, layer, probs, causal, 0, q_len, n_layers, sink))
            return output, None
        common = dict(
            scaling=scaling,
            softcap=softcap,
            position_bias=kwargs.get("position_bias"),
            sinks=sinks,
            causal_if_unmasked=site.backend != "eager" and bool(is_causal),
            causal=causal,
            scratch=self.scratch,
            dropout=float(dropout or 0.0),
            training=module.training,
            mask_cache=self.mask_cache,
        )
        if self.options.block_bytes is not None:

            def on_block(i0: int, i1: int, block: torch.Tensor, sink: torch.Tensor | None) -> None:
                self.on_call(AttentionCall(kind, layer, block, causal, i0, q_len, n_layers, sink))

            output = attend(
                query, key, value if own else None, attention_mask, block_bytes=self.options.block_bytes,
                on_block=on_block, **common,
            )  # fmt: skip
        else:
            probs = torch.empty(b, h, q_len, key.shape[2], dtype=torch.float32, device=query.device)
            sink = torch.empty(b, h, q_len, dtype=torch.float32, device=query.device) if sinks is not None else None
            dests = [Dest(probs[i], sink[i] if sink is not None else None) for i in range(b)]
            output = attend(query, key, value if own else None, attention_mask, dests=dests, **common)
            self.on_call(AttentionCall(kind, layer, probs, causal, 0, q_len, n_layers, sink))
        if not own:
            output, _ = _backend(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
        return output, None


def stack_calls(calls: list[Call], what: str, options: CaptureOptions) -> torch.Tensor:
    """Stack per-layer [B, H, ...] tensors into [B, L, H, ...], keeping only the selected heads."""
    tensors = [getattr(c, what) if what in ("probs", "sink_mass") else c.extras[what] for c in calls]
    shapes = {tuple(t.shape[2:]) for t in tensors} if what == "probs" else set()
    if len(shapes) > 1:
        raise UnsupportedModelError(
            f"attention modules of one kind have different shapes {sorted(shapes)}; "
            "this model needs its own adapter (see docs/plugins.md)"
        )
    t = torch.stack(tensors, dim=1)
    if options.heads is not None:
        t = t[:, :, choose(options.heads, t.shape[2], "head")]
    return t


def model_meta(model: torch.nn.Module, adapter: str, backend: str, causal: bool) -> dict[str, Any]:
    """The meta fields every Hugging Face record carries."""
    config = model.config
    return {
        "model_type": getattr(config, "model_type", type(model).__name__),
        "model_class": type(model).__name__,
        "adapter": adapter,
        "attention_backend": backend,
        "causal": causal,
        "exact": False,
        "recomputed": True,
        "num_key_value_heads": getattr(config, "num_key_value_heads", None),
    }


def fast_eligible(model: torch.nn.Module, options: CaptureOptions, batch: EncodedBatch) -> bool:
    """Plain weight captures of a model in eval mode take the one-computation path; the rest need autograd."""
    return not (
        options.values
        or options.value_norms
        or options.qk
        or options.gradients
        or options.attention_rule
        or model.training
    ) and contiguous_tokens(batch)


class HuggingFaceAdapter(Adapter):
    """Captures transformers models through their AttentionInterface, one attention computation per captured layer."""

    name = "huggingface"
    priority = 20

    def supports(self, model: Any) -> bool:
        """Any transformers model; those not on the interface are served by the eager path."""
        return is_hf_model(model)

    def attention_rules(self, model: Any) -> tuple[str, ...]:
        """Every relevance rule, for models whose attention runs through the capture function."""
        return tuple(ATTENTION_RULES) if is_hf_model(model) and on_interface(model) else ()

    def describe(self, model: Any) -> dict[str, Any]:
        """Model type, class and the backend its attention runs with."""
        info = model_info(model)
        if not info.interface:
            return EagerAdapter().describe(model)
        return model_meta(model, self.name, original_backend(model.config._attn_implementation) or "eager", False)

    def attention_layout(self, model: Any, inputs: dict[str, Any] | None = None) -> dict[str, tuple[int, int]] | None:
        """The layers and heads per kind, learned once per model (with ``inputs``, by a forward that computes nothing)."""
        info = model_info(model, walk=False)
        if not info.interface:
            return None
        if info.layout is None and inputs is not None:
            self._discover(model, info, lambda: model(**move_inputs(inputs, model_device(model))))
        return dict(info.layout.totals) if info.layout is not None else None

    @staticmethod
    def _discover(model: Any, info: ModelInfo, forward: Callable[[], Any]) -> None:
        ctx = Discovery(model)
        ctx.info = info
        with ctx.active(), torch.no_grad():
            forward()
        layout = ctx.layout()
        with _INFO_LOCK:
            info.layout, info.plans = layout, {}

    @contextmanager
    def listen(self, model: Any, options: CaptureOptions, on_call: Callable[[AttentionCall], None]) -> Iterator[None]:
        """Install the dispatcher for the block; every forward hands each selected layer's weights to ``on_call``.

        Models off the interface are listened to the eager way (``output_attentions`` after each forward).
        """
        info = model_info(model)
        if not info.interface:
            with EagerAdapter().listen(model, options, on_call):
                yield
            return
        ctx = ListenCapture(model, options, on_call)
        ctx.info = info
        owner = threading.get_ident()  # another thread's forward of the same model must not restart our numbering
        handle = model.register_forward_pre_hook(
            lambda *_: ctx.begin_step() if threading.get_ident() == owner else None
        )
        # Gradients and relevance rules differentiate through the caller's forward: its grad mode stays.
        grad_mode = torch.enable_grad() if options.gradients or options.attention_rule else torch.no_grad()
        try:
            with ctx.active(), grad_mode:
                yield
        finally:
            handle.remove()
        if ctx.calls == 0:
            raise UnsupportedModelError(
                f"{type(model).__name__} accepted the capture function but never called it; capture it with ap.capture"
            )

    def capture(self, model: Any, batch: EncodedBatch, options: CaptureOptions) -> list[AttentionRecord]:
        """Run the model once with the capture installed; fall back to eager when attention is never called."""
        _, records = self.run(model, batch, options)
        return records

    def run(
        self,
        model: Any,
        batch: EncodedBatch,
        options: CaptureOptions,
        call: Callable[[dict[str, torch.Tensor]], Any] | None = None,
        keep: Callable[[Any], tuple[dict[str, torch.Tensor], dict[str, str]]] | None = None,
    ) -> tuple[Any, list[AttentionRecord]]:
        """Like :meth:`capture`, but also return the model output (for checks against an uncaptured forward).

        ``call(inputs)`` runs the forward (default ``model(*args, **inputs)``; a wrapper such as a
        sentence-transformers model passes its own), ``keep(output)`` picks the outputs kept in records.
        """
        from attn_plugins.adapters import check_selection

        info = model_info(model, walk=False)
        if not info.interface:
            return self._eager(model, batch, options, "the model does not use AttentionInterface")
        device = model_device(model)
        inputs = move_inputs(batch.inputs, device)
        args = move_inputs(batch.args, device)
        if call is not None:
            forward = lambda: call(inputs)  # noqa: E731
        elif args:
            forward = lambda: model(*args, **inputs)  # noqa: E731
        else:
            forward = lambda: model(**inputs, return_dict=True)  # noqa: E731
        fast = fast_eligible(model, options, batch)
        if not fast or info.layout is None:  # only the fast path notices replaced modules by itself
            info = model_info(model, walk=True)
        for _ in range(2):  # a stale layout (the model called other modules than learned) is learned again
            if info.layout is None:
                self._discover(model, info, forward)
                if info.layout is None:
                    # The model accepted the dispatcher but computes attention itself: read it the eager way.
                    return self._eager(model, batch, options, "the model never called the attention function")
            check_selection(info.layout.totals, options)  # bad layers/heads/kinds fail before the capture runs
            if not fast:
                break
            result = self._run_fast(model, batch, options, info, forward, keep)
            if result is not None:
                return result
            forget_layout(model, info)
            info = model_info(model, walk=True)
        return self._run_recording(model, batch, options, info, forward, keep)

    def _run_fast(
        self,
        model: Any,
        batch: EncodedBatch,
        options: CaptureOptions,
        info: ModelInfo,
        forward: Callable[[], Any],
        keep: Callable[[Any], tuple[dict[str, torch.Tensor], dict[str, str]]] | None,
    ) -> tuple[Any, list[AttentionRecord]] | None:
        ctx = FastCapture(model, options, batch, info)
        with ctx.active(), torch.no_grad():
            output = forward()
        if not ctx.complete():
            return None
        kinds = [k for k in _KIND_ORDER if k in ctx.buffers]
        if keep is not None:
            outs, seq = keep(output)
        else:
            outs, seq = kept_outputs(output, "target" if batch.target_mask is not None else "source")
        n = len(ctx.buffers[kinds[0]])
        per_example = []
        for b in range(n):
            fields: dict[str, dict[str, torch.Tensor]] = {"attentions": {k: ctx.buffers[k][b].cpu() for k in kinds}}
            if ctx.sink_buffers:
                fields["sink_mass"] = {k: bufs[b].cpu() for k, bufs in ctx.sink_buffers.items()}
            per_example.append(fields)
        backend = original_backend(model.config._attn_implementation) or "eager"
        meta = model_meta(model, self.name, backend, ctx.causal.get("self", False))
        records = split_batch(
            batch,
            {},
            options=options,
            meta=meta,
            outputs=outs,
            sequence_outputs=seq,
            totals=info.layout.totals,
            per_example=per_example,
        )
        if ctx.sink_buffers:
            for record in records:
                record.meta["attention_sinks"] = True
        return output, records

    def _run_recording(
        self,
        model: Any,
        batch: EncodedBatch,
        options: CaptureOptions,
        info: ModelInfo,
        forward: Callable[[], Any],
        keep: Callable[[Any], tuple[dict[str, torch.Tensor], dict[str, str]]] | None,
    ) -> tuple[Any, list[AttentionRecord]]:
        """Every call recorded out of place (gradients, values, training mode), selection afterwards."""
        ctx = CaptureContext(model, options)
        ctx.info = info
        backend = original_backend(model.config._attn_implementation) or "eager"
        with ctx.active(), torch.set_grad_enabled(options.gradients):
            output = forward()
            grads = self._gradients(ctx, output, options) if options.gradients else None
        if ctx.calls == 0:
            return self._eager(model, batch, options, "the model never called the attention function")
        step = [c for c in ctx.steps[0] if options.kinds is None or c.site.kind in options.kinds]
        totals = ctx.totals(step)
        by_kind, causal = ctx.stacked(step, options)
        attentions = {kind: stack_calls(calls, "probs", options) for kind, calls in by_kind.items()}
        extras: dict[str, dict[str, torch.Tensor]] = {}
        for what in _FIELDS:
            if any(what in c.extras for calls in by_kind.values() for c in calls):
                extras[what] = {kind: stack_calls(calls, what, options) for kind, calls in by_kind.items()}
        if grads is not None:
            extras["gradients"] = {
                kind: stack_calls([Call(c.site, c.index, grads[id(c)], c.causal) for c in calls], "probs", options)
                for kind, calls in by_kind.items()
            }
        sinks = {kind: calls for kind, calls in by_kind.items() if all(c.sink_mass is not None for c in calls)}
        if sinks:
            # Rows keep the model's exact weights (they sum to 1 - sink mass); the sinks' share is kept beside them.
            extras["sink_mass"] = {kind: stack_calls(calls, "sink_mass", options) for kind, calls in sinks.items()}
        if keep is not None:
            outs, seq = keep(output)
        else:
            outs, seq = kept_outputs(output, "target" if batch.target_mask is not None else "source")
        meta = model_meta(model, self.name, backend, causal.get("self", False))
        records = split_batch(
            batch,
            attentions,
            options=options,
            meta=meta,
            extras=extras,
            outputs=outs,
            sequence_outputs=seq,
            totals=totals,
        )
        if sinks:
            for record in records:
                record.sink_mass = {k: v.float() for k, v in record.sink_mass.items()}
                record.meta["attention_sinks"] = True
        return output, records

    @staticmethod
    def _gradients(ctx: CaptureContext, output: Any, options: CaptureOptions) -> dict[int, torch.Tensor]:
        # autograd.grad rather than backward(): no gradient is left behind on the model's parameters.
        calls = [c for step in ctx.steps for c in step]
        scalar = target_scalar(output, options.target)
        grads = torch.autograd.grad(scalar, [c.probs for c in calls], allow_unused=True)
        out = {}
        for call, g in zip(calls, grads):
            out[id(call)] = (g if g is not None else torch.zeros_like(call.probs)).detach()
            call.probs = call.probs.detach()
        return out

    def _eager(self, model: Any, batch: EncodedBatch, options: CaptureOptions, why: str) -> tuple[Any, list]:
        output, records = EagerAdapter().run(model, batch, options)
        for r in records:
            r.meta["fallback"] = why
        return output, records


@hookimpl
def attn_plugins_register_adapters(register: Callable[..., None]) -> None:
    """Register the Hugging Face AttentionInterface adapter."""
    register("huggingface", HuggingFaceAdapter())
