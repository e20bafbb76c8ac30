"""Eager adapter: any Hugging Face model that returns ``output_attentions=True`` in eager mode."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from attn_plugins import hookimpl
from attn_plugins.adapter import Adapter, CaptureOptions, EncodedBatch, target_scalar
from attn_plugins.capture import split_batch
from attn_plugins.errors import MissingCaptureError
from attn_plugins.record import AttentionRecord

# Outputs small enough to keep with every record; language-model logits ([T, vocab]) are not.
_KEPT_OUTPUTS = ("logits", "start_logits", "end_logits")
_MAX_KEPT_CLASSES = 1024


def is_hf_model(model: Any) -> bool:
    """Whether ``model`` is a transformers PreTrainedModel."""
    try:
        from transformers import PreTrainedModel
    except ImportError:  # transformers is a dependency, but an adapter must not break without it
        return False
    return isinstance(model, PreTrainedModel)


@contextmanager
def attn_implementation(model: Any, name: str) -> Iterator[None]:
    """Switch a transformers model's attention implementation, and restore it even if the body raises."""
    previous = model.config._attn_implementation
    if previous == name:
        yield
        return
    model.set_attn_implementation(name)
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


def kept_outputs(output: Any, logits_side: str = "source") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Model outputs worth keeping in records, and which side's tokens each per-token output runs over."""
    outs: dict[str, torch.Tensor] = {}
    seq: dict[str, str] = {}
    for key in _KEPT_OUTPUTS:
        value = getattr(output, key, None)
        if not isinstance(value, torch.Tensor):
            continue
        if value.dim() == 3 and value.shape[-1] > _MAX_KEPT_CLASSES:
            outs["predicted_ids"] = value.argmax(-1)
            seq["predicted_ids"] = logits_side
            continue
        outs[key] = value.detach()
        per_token = value.dim() == 3 or (key != "logits" and value.dim() == 2)
        if per_token:
            seq[key] = logits_side if key == "logits" else "source"
    return outs, seq


def stack_layers(per_layer: tuple[torch.Tensor, ...] | None, options: CaptureOptions) -> torch.Tensor | None:
    """Stack a tuple of [batch, heads, q, k] tensors into [batch, layers, heads, q, k], selecting layers/heads."""
    if not per_layer or per_layer[0] is None:
        return None
    layers = options.layers if options.layers is not None else range(len(per_layer))
    t = torch.stack([per_layer[i] for i in layers], dim=1)
    if options.heads is not None:
        t = t[:, :, list(options.heads)]
    return t


def looks_causal(att: torch.Tensor) -> bool:
    """Whether every weight above the diagonal is zero (a causal mask), for [B, L, H, Q, K]."""
    if att.shape[-1] < 2:
        return False
    return bool((torch.triu(att.detach().float(), diagonal=1) == 0).all())


class EagerAdapter(Adapter):
    """Reads ``output_attentions`` from a transformers model switched to eager attention for the call."""

    name = "eager"
    priority = 10

    def supports(self, model: Any) -> bool:
        """Any transformers model."""
        return is_hf_model(model)

    def capture(self, model: Any, batch: EncodedBatch, options: CaptureOptions) -> list[AttentionRecord]:
        """Run the model once in eager mode with ``output_attentions=True``."""
        for flag in ("values", "value_norms", "qk"):
            if getattr(options, flag):
                raise MissingCaptureError(
                    f"the eager adapter cannot capture {flag}; use the 'huggingface' adapter for models on "
                    "transformers' AttentionInterface"
                )
        with attn_implementation(model, "eager"), torch.set_grad_enabled(options.gradients):
            output = model(**batch.inputs, output_attentions=True, return_dict=True)
            raw = self._raw_attentions(model, output)
            grads = {}
            if options.gradients:
                for per_layer in raw.values():
                    for t in per_layer:
                        t.retain_grad()
                target_scalar(output, options.target).backward()
                grads = {
                    kind: stack_layers(tuple(t.grad for t in per_layer), options) for kind, per_layer in raw.items()
                }
        attentions = {kind: stack_layers(per_layer, options) for kind, per_layer in raw.items()}
        causal = "self" in attentions and looks_causal(attentions["self"])
        outs, seq = kept_outputs(output, "target" if "decoder" in attentions else "source")
        meta = {
            "model_type": getattr(model.config, "model_type", type(model).__name__),
            "model_class": type(model).__name__,
            "adapter": self.name,
            "attention_backend": "eager",
            "causal": causal,
            "exact": True,
            "num_key_value_heads": getattr(model.config, "num_key_value_heads", None),
        }
        return split_batch(
            batch,
            attentions,
            options=options,
            meta=meta,
            extras={"gradients": grads} if grads else None,
            outputs=outs,
            sequence_outputs=seq,
        )

    @staticmethod
    def _raw_attentions(model: Any, output: Any) -> dict[str, tuple[torch.Tensor, ...]]:
        if getattr(model.config, "is_encoder_decoder", False):
            raw = {
                "encoder": output.encoder_attentions,
                "decoder": output.decoder_attentions,
                "cross": output.cross_attentions,
            }
        else:
            raw = {"self": getattr(output, "attentions", None)}
        raw = {k: v for k, v in raw.items() if v}
        if not raw:
            raise MissingCaptureError(f"{type(model).__name__} returned no attentions with output_attentions=True")
        return raw


@hookimpl
def attn_plugins_register_adapters(register):
    """Register the eager adapter."""
    register("eager", EagerAdapter())
