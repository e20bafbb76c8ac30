"""Listening capture: each selected layer handed to a listener as it is computed (generation, streaming)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from attn_adapters.huggingface.probs import attention_probs, repeat_kv
from attn_adapters.huggingface.recording import CaptureContext, _own_output
from attn_adapters.kernel import Dest, Scratch, attend
from attn_plugins.adapters import AttentionCall, CaptureOptions, rule_operands, rule_output
from attn_plugins.errors import UnsupportedModelError
from attn_plugins.record import choose


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
                rule=rule,
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
