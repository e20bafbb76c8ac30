"""Hugging Face adapter: reads attention through transformers' AttentionInterface while the model keeps its backend.

For one capture a uniquely named attention function is registered with ``AttentionInterface`` (and the
backend's mask function with ``AttentionMaskInterface``, without which mask creation silently returns
no mask). Every config of the model is switched to that name and restored afterwards, also when the
forward raises. The function calls the backend each module was configured with (sdpa, ...) for the
output and recomputes the softmax probabilities from the same query, key, mask, scaling, soft-cap,
position bias and sinks, so the model runs as usual and the weights equal eager ``output_attentions``.

Everything a capture collects lives in its :class:`CaptureContext`; the registered function is a bound
method of that context, so two captures in two threads, or one nested in another, never mix. Layer and
kind come from the module the function is called with (``id(module)`` -> qualified name), never from
call order.
"""

from __future__ import annotations

import itertools
import re
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from attn_adapters.eager import EagerAdapter, all_configs, is_hf_model, kept_outputs
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
from attn_plugins.errors import MissingCaptureError, UnsupportedModelError
from attn_plugins.plugins import hookimpl
from attn_plugins.record import AttentionRecord, choose

_COUNTER = itertools.count()
_CROSS_NAME = re.compile(r"encoder_attn|crossattention|cross_attn|EncDecAttention", re.IGNORECASE)
_INDEX = re.compile(r"(?:^|\.)(\d+)(?=\.|$)")
# Output projections of attention modules, by attribute name (module first, then its parent's `output`).
_OUT_PROJ = ("o_proj", "out_proj", "o", "out_lin", "c_proj", "dense", "Wo", "proj")
_FIELDS = ("values", "value_norms", "queries", "keys")


@dataclass
class Site:
    """One attention module of the model: its qualified name, kind, sort key and original backend."""

    name: str
    kind: str
    order: tuple[int, ...]
    backend: str
    cross: bool


@dataclass
class Call:
    """What one call of the attention function produced (batched, per query head)."""

    site: Site
    index: int  # how many times this module was already called in the same step (ALBERT reuses one module)
    probs: torch.Tensor  # [B, H, Q, K], float32; part of the graph when gradients are asked for
    causal: bool
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    sinks: bool = False  # probabilities leave mass on learned sinks, so rows sum to less than 1


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
) -> torch.Tensor:
    """Softmax attention probabilities [B, H, Q, K] in float32 (float64 for a float64 model), as eager computes them."""
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
    if sinks is not None:
        # A learned sink logit per head takes part in the softmax and is dropped afterwards (gpt-oss).
        sink = sinks.to(work).reshape(1, -1, 1, 1).expand(scores.shape[0], -1, q_len, 1)
        logits = torch.cat([scores, sink], dim=-1)
        logits = logits - logits.amax(dim=-1, keepdim=True)
        return torch.softmax(logits, dim=-1)[..., :-1]
    return torch.softmax(scores, dim=-1)


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


def _qualified_names(model: torch.nn.Module) -> dict[int, str]:
    return {id(m): name for name, m in model.named_modules()}


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
    names = _qualified_names(model)
    encoder_prefix = None
    if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        encoder = model.get_encoder()
        encoder_prefix = names.get(id(encoder))
    default_backend = model.config._attn_implementation or "eager"
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
        backend = getattr(config, "_attn_implementation", None) or default_backend
        order = tuple(int(i) for i in _INDEX.findall(name))
        sites[id(module)] = Site(name, kind, order, backend, cross)
    return sites


_SITES: weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple, dict[int, Site]]] = weakref.WeakKeyDictionary()
_SITES_LOCK = threading.Lock()


def cached_sites(model: torch.nn.Module, configs: list[Any]) -> dict[int, Site]:
    """:func:`find_sites`, reused while the model's modules and their backends are the same.

    Naming every module costs milliseconds per capture; the key (module identities and every config's
    backend) is cheap and changes whenever a module is replaced or an enclosing capture switched backends.
    """
    key = (tuple(map(id, model.modules())), tuple(c._attn_implementation_internal for c in configs))
    with _SITES_LOCK:
        hit = _SITES.get(model)
    if hit is not None and hit[0] == key:
        return hit[1]
    sites = find_sites(model)
    with _SITES_LOCK:
        _SITES[model] = (key, sites)
    return sites


class CaptureContext:
    """One capture: registers its own attention function, switches the model to it, and collects calls.

    Use as ``with CaptureContext(model, options).active() as ctx: model(...)``; ``ctx.steps`` then
    holds one list of :class:`Call` per forward (several during generation, see :meth:`begin_step`).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        options: CaptureOptions,
        on_call: Callable[[AttentionCall], None] | None = None,
    ) -> None:
        self.model = model
        self.options = options
        # Listening (generation, streaming): each call goes to on_call in layer order and is not kept.
        self.on_call = on_call
        self._last: dict[str, tuple] = {}
        self._layers: dict[str, int] = {}
        self.name = f"attn_plugins_capture_{next(_COUNTER)}"
        self.sites: dict[int, Site] = {}
        self.steps: list[list[Call]] = [[]]
        self.calls = 0
        self._counts: dict[str, int] = {}
        self._projections: dict[int, torch.Tensor | None] = {}

    # ------------------------------------------------------------------ switching
    @contextmanager
    def active(self) -> Iterator[CaptureContext]:
        """Register the function, switch every config to it, and restore everything on exit."""
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        # Sites (and the backend each module runs with) are read now: an enclosing capture may have switched them.
        configs = all_configs(self.model)
        self.sites = cached_sites(self.model, configs)
        previous = [(c, c._attn_implementation_internal) for c in configs]
        top = self.model.config._attn_implementation or "eager"
        # The mask the model's own backend would get, so sdpa still sees its boolean (or skipped) masks.
        mask_fn = ALL_MASK_ATTENTION_FUNCTIONS._global_mapping.get(top, eager_mask)
        ALL_ATTENTION_FUNCTIONS.register(self.name, self.attention)
        ALL_MASK_ATTENTION_FUNCTIONS.register(self.name, mask_fn)
        try:
            for config in configs:
                config._attn_implementation_internal = self.name
            yield self
        finally:
            for config, impl in previous:
                config._attn_implementation_internal = impl
            ALL_ATTENTION_FUNCTIONS._global_mapping.pop(self.name, None)
            ALL_MASK_ATTENTION_FUNCTIONS._global_mapping.pop(self.name, None)

    def begin_step(self) -> None:
        """Start a new forward pass (generation runs one per token); per-module call counts restart."""
        if self.steps[-1]:
            self.steps.append([])
        self._counts = {}
        self._last, self._layers = {}, {}

    # ------------------------------------------------------------------ the attention function
    def attention(
        self,
        module: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        dropout: float = 0.0,
        scaling: float | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The registered attention function: backend output plus recomputed, recorded probabilities."""
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        site = self.sites.get(id(module))
        if site is None:  # a module created after the capture started: give it a site of its own
            site = Site(type(module).__name__, "self", (), self.model.config._attn_implementation or "eager", False)
        backend_fn = ALL_ATTENTION_FUNCTIONS.get(site.backend) if site.backend != "eager" else None
        is_causal = kwargs.get("is_causal")
        if is_causal is None:
            is_causal = getattr(module, "is_causal", True)
        softcap = kwargs.get("softcap")
        sinks = kwargs.get("s_aux")
        position_bias = kwargs.get("position_bias")
        rule = self.options.attention_rule
        query, key = rule_operands(rule, query, key)
        # Grad mode is the caller's: ap.capture enables it only when gradients are asked for.
        probs = attention_probs(
            query,
            key,
            attention_mask,
            scaling=scaling,
            softcap=softcap,
            position_bias=position_bias,
            sinks=sinks,
            # Only sdpa-like backends turn "no mask" into a causal mask; eager functions do not.
            causal_if_unmasked=backend_fn is not None and bool(is_causal),
        )
        # sdpa refuses soft-capping and ignores sinks; eager functions are model-specific and not reachable
        # from here; gradients must flow through the recomputed probabilities: in those cases the output is
        # computed from the probabilities, which is exactly what eager attention does.
        # A relevance rule (CaptureOptions.attention_rule) also needs the product computed here.
        own = backend_fn is None or softcap is not None or sinks is not None or self.options.gradients or bool(rule)
        if own:
            weights = torch.nn.functional.dropout(probs, p=float(dropout or 0.0), training=module.training)
            n_rep = query.shape[1] // value.shape[1]
            output = rule_output(rule, weights.to(value.dtype), repeat_kv(value, n_rep)).transpose(1, 2).contiguous()
        else:
            output, _ = backend_fn(
                module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
            )
        causal = bool(getattr(module, "is_causal", is_causal))
        self._record(module, site, probs, query, key, value, causal, sinks is not None)
        return output, probs.to(query.dtype)

    def _record(
        self,
        module: torch.nn.Module,
        site: Site,
        probs: torch.Tensor,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        causal: bool,
        sinks: bool,
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
        kept = probs if self.options.gradients else probs.detach()
        if self.on_call is not None:
            self._hand_over(site, index, kept, causal and not site.cross)
            return
        self.steps[-1].append(Call(site, index, kept, causal and not site.cross, extras, sinks))

    def _hand_over(self, site: Site, index: int, probs: torch.Tensor, causal: bool) -> None:
        """Pass one call to ``on_call``, numbered by its arrival among the calls of its kind in this forward."""
        kind = site.kind
        # Layers are numbered by arrival; that is the layer order only if modules are called in path order.
        key = (site.order, site.name, index)
        if kind in self._last and key <= self._last[kind]:
            raise UnsupportedModelError(
                f"{type(self.model).__name__} calls its {kind} attention modules out of layer order "
                f"({site.name} after {self._last[kind][1]}); capture it whole with ap.capture instead"
            )
        self._last[kind] = key
        layer = self._layers.get(kind, 0)
        self._layers[kind] = layer + 1
        self.on_call(AttentionCall(kind, layer, probs, causal))

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
            by_kind.setdefault(call.site.kind, []).append(call)
        causal = {}
        for kind, calls in by_kind.items():
            calls.sort(key=lambda c: (c.site.order, c.site.name, c.index))
            if options.layers is not None:
                by_kind[kind] = [calls[i] for i in choose(options.layers, len(calls), f"{kind} layer")]
            causal[kind] = any(c.causal for c in calls)
        return by_kind, causal


def stack_calls(calls: list[Call], what: str, options: CaptureOptions) -> torch.Tensor:
    """Stack per-layer [B, H, ...] tensors into [B, L, H, ...], keeping only the selected heads."""
    tensors = [c.probs if what == "probs" else c.extras[what] for c in calls]
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


class HuggingFaceAdapter(Adapter):
    """Captures transformers models through their AttentionInterface, keeping the model's own backend."""

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
        if not on_interface(model):
            return EagerAdapter().describe(model)
        return model_meta(model, self.name, model.config._attn_implementation or "eager", False)

    @contextmanager
    def listen(self, model: Any, options: CaptureOptions, on_call: Callable[[AttentionCall], None]) -> Iterator[None]:
        """Install the capture function for the block; every forward hands each layer's weights to ``on_call``.

        Models off the interface are listened to the eager way (``output_attentions`` after each forward).
        """
        if not on_interface(model):
            with EagerAdapter().listen(model, options, on_call):
                yield
            return
        ctx = CaptureContext(model, options, on_call)
        handle = model.register_forward_pre_hook(lambda *_: ctx.begin_step())
        try:
            with ctx.active(), torch.set_grad_enabled(options.gradients):
                yield
        finally:
            handle.remove()
        if ctx.calls == 0:
            raise UnsupportedModelError(
                f"{type(model).__name__} accepted the capture function but never called it; capture it with ap.capture"
            )

    def capture(self, model: Any, batch: EncodedBatch, options: CaptureOptions) -> list[AttentionRecord]:
        """Run the model once with the capture function installed; fall back to eager when it is never called."""
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

        ``call(inputs)`` runs the forward (default ``model(**inputs)``; a wrapper such as a
        sentence-transformers model passes its own), ``keep(output)`` picks the outputs kept in records.
        """
        if not on_interface(model):
            return self._eager(model, batch, options, "the model does not use AttentionInterface")
        inputs = move_inputs(batch.inputs, model_device(model))
        ctx = CaptureContext(model, options)
        backend = model.config._attn_implementation or "eager"
        with ctx.active(), torch.set_grad_enabled(options.gradients):
            output = call(inputs) if call is not None else model(**inputs, return_dict=True)
            grads = self._gradients(ctx, output, options) if options.gradients else None
        if ctx.calls == 0:
            # The model accepted the name but computes attention itself: read it the eager way.
            return self._eager(model, batch, options, "the model never called the attention function")
        totals = ctx.totals(ctx.steps[0])
        by_kind, causal = ctx.stacked(ctx.steps[0], options)
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
        sink_mass = {}
        for kind, calls in by_kind.items():
            if any(c.sinks for c in calls):
                # Records hold rows that sum to 1: the mass the sinks took is kept apart (extras), so the
                # model's own weights are attentions * (1 - sink_mass).
                total = attentions[kind].sum(-1, keepdim=True)
                sink_mass[kind] = (1 - total.squeeze(-1)).clamp_min(0)
                attentions[kind] = attentions[kind] / total.clamp_min(torch.finfo(total.dtype).tiny)
        if keep is not None:
            outs, seq = keep(output)
        else:
            outs, seq = kept_outputs(output, "target" if "decoder" in attentions else "source")
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
        for kind, mass in sink_mass.items():
            mask = batch.target_mask if kind == "decoder" else batch.source_mask
            for b, record in enumerate(records):
                rows = mass[b] if mask is None or mask.numel() == 0 else mass[b][:, :, mask[b].bool()]
                record.extras[f"sink_mass.{kind}"] = rows.detach().to("cpu", options.dtype)
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
