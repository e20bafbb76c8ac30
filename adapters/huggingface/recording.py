"""The recording capture: every call recorded out of place (autograd works), selection afterwards."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from attn_adapters.huggingface.dispatch import _switch_to_dispatchers, original_backend
from attn_adapters.huggingface.layout import ModelInfo, model_info
from attn_adapters.huggingface.probs import attention_probs, repeat_kv
from attn_adapters.huggingface.sites import Site, output_projection
from attn_plugins.adapters import CaptureOptions, rule_operands, rule_output
from attn_plugins.adapters.routing import installed, running
from attn_plugins.errors import MissingCaptureError, UnsupportedModelError
from attn_plugins.record import choose


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


def _install(model: torch.nn.Module, info: ModelInfo) -> Any:
    """The model switched to the dispatchers while this capture runs (shared with the model's other captures)."""
    return installed(model, "dispatch", lambda: _switch_to_dispatchers(model, info.configs))


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
            rule=rule,
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
