"""The Hugging Face adapter: picks the fast, recording or eager path for a capture, and listens."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from attn_adapters.eager import EagerAdapter, is_hf_model, kept_outputs
from attn_adapters.huggingface.discovery import Discovery
from attn_adapters.huggingface.dispatch import original_backend
from attn_adapters.huggingface.fast import FastCapture, fast_eligible
from attn_adapters.huggingface.layout import _INFO_LOCK, _KIND_ORDER, ModelInfo, forget_layout, model_info
from attn_adapters.huggingface.listen import ListenCapture
from attn_adapters.huggingface.recording import Call, CaptureContext, stack_calls
from attn_adapters.huggingface.sites import on_interface
from attn_plugins.adapters import (
    ATTENTION_RULES,
    Adapter,
    AttentionCall,
    CaptureOptions,
    EncodedBatch,
    model_device,
    move_inputs,
    split_batch,
    target_scalar,
)
from attn_plugins.errors import UnsupportedModelError
from attn_plugins.plugins import hookimpl
from attn_plugins.record import AttentionRecord

_FIELDS = ("values", "value_norms", "queries", "keys")


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
