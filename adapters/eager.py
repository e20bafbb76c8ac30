"""Eager adapter: any Hugging Face model that returns ``output_attentions=True`` in eager mode."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch

from attn_plugins.adapters import (
    Adapter,
    AttentionCall,
    CaptureOptions,
    EncodedBatch,
    check_selection,
    model_device,
    move_inputs,
    split_batch,
    target_scalar,
)
from attn_plugins.adapters.routing import installed
from attn_plugins.errors import MissingCaptureError
from attn_plugins.plugins import hookimpl
from attn_plugins.record import AttentionRecord, choose

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


def all_configs(model: Any) -> list[Any]:
    """Every config object of the model: its own, nested sub-configs, and those of its submodels."""
    from transformers import PretrainedConfig

    stack = [model.config] + [getattr(m, "config", None) for m in model.modules()]
    seen: dict[int, Any] = {}
    while stack:
        config = stack.pop()
        if not isinstance(config, PretrainedConfig) or id(config) in seen:
            continue
        seen[id(config)] = config
        for key in getattr(config, "sub_configs", {}) or {}:
            stack.append(getattr(config, key, None))
    return list(seen.values())


@contextmanager
def attn_implementation(model: Any, name: str) -> Iterator[None]:
    """Switch every config of a transformers model to attention ``name`` while the block runs; restore, even if it raises.

    The configs are set directly rather than through ``set_attn_implementation``, which refuses models
    not on the AttentionInterface (falcon, bloom, ...) with a warning, leaving them on sdpa: those then
    build sdpa's boolean masks and add them to eager scores, which corrupts ``output_attentions``.
    The switch is shared by the model's captures in every thread and undone when the last one ends.
    """

    def install() -> Callable[[], None]:
        previous = [(c, c._attn_implementation_internal) for c in all_configs(model)]
        for config, _ in previous:
            config._attn_implementation_internal = name

        def undo() -> None:
            for config, impl in previous:
                config._attn_implementation_internal = impl

        return undo

    with installed(model, f"attn_implementation={name}", install):
        yield


def has_sinks(model: Any) -> bool:
    """Whether the model has learned attention sinks (gpt-oss ``sinks``): its rows then sum to less than 1."""
    return any(isinstance(getattr(m, "sinks", None), torch.Tensor) for m in model.modules())


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
    t = torch.stack([per_layer[i] for i in choose(options.layers, len(per_layer), "layer")], dim=1)
    if options.heads is not None:
        t = t[:, :, choose(options.heads, t.shape[2], "head")]
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
        return self.run(model, batch, options)[1]

    def describe(self, model: Any) -> dict[str, Any]:
        """Model type and class; weights are eager's own (exact)."""
        return {
            **super().describe(model),
            "attention_backend": "eager",
            "exact": True,
            "num_key_value_heads": getattr(model.config, "num_key_value_heads", None),
        }

    @contextmanager
    def listen(self, model: Any, options: CaptureOptions, on_call: Callable[[AttentionCall], None]) -> Iterator[None]:
        """Eager attention for the block; after each forward its ``output_attentions`` go to ``on_call``.

        Forward hooks ask every forward of the model (and of the encoder, which generation runs on its
        own) for attentions, so ``model.generate`` and plain calls alike are heard.
        """
        enc_dec = bool(getattr(model.config, "is_encoder_decoder", False))

        def ask(_module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            return args, {**kwargs, "output_attentions": True, "return_dict": True}

        def heard(kinds: dict[str, str]) -> Callable[..., None]:
            def hook(_module: Any, _args: tuple, _kwargs: dict, output: Any) -> None:
                for kind, attr in kinds.items():
                    per_layer = getattr(output, attr, None)
                    for layer, probs in enumerate(per_layer or ()):
                        causal = kind == "decoder" or (kind == "self" and looks_causal(probs))
                        on_call(AttentionCall(kind, layer, probs.detach(), causal))

            return hook

        if enc_dec:
            targets = [(model, {"decoder": "decoder_attentions", "cross": "cross_attentions"})]
            targets.append((model.get_encoder(), {"encoder": "attentions"}))
        else:
            targets = [(model, {"self": "attentions"})]
        with ExitStack() as stack, attn_implementation(model, "eager"):
            for module, kinds in targets:
                for handle in (
                    module.register_forward_pre_hook(ask, with_kwargs=True),
                    module.register_forward_hook(heard(kinds), with_kwargs=True),
                ):
                    stack.callback(handle.remove)
            yield

    def run(self, model: Any, batch: EncodedBatch, options: CaptureOptions) -> tuple[Any, list[AttentionRecord]]:
        """Like :meth:`capture`, but also return the model output."""
        for flag in ("values", "value_norms", "qk"):
            if getattr(options, flag):
                raise MissingCaptureError(
                    f"the eager adapter cannot capture {flag}; use the 'huggingface' adapter for models on "
                    "transformers' AttentionInterface"
                )
        with attn_implementation(model, "eager"), torch.set_grad_enabled(options.gradients):
            output = model(**move_inputs(batch.inputs, model_device(model)), output_attentions=True, return_dict=True)
            raw = self._raw_attentions(model, output)
            grads = {}
            if options.gradients:
                # autograd.grad rather than backward(): no gradient is left on the model's parameters.
                flat = [t for per_layer in raw.values() for t in per_layer]
                flat_grads = iter(torch.autograd.grad(target_scalar(output, options.target), flat, allow_unused=True))
                grads = {
                    kind: stack_layers(tuple(_zero_if_none(next(flat_grads), t) for t in per_layer), options)
                    for kind, per_layer in raw.items()
                }
        check_selection({kind: (len(per_layer), per_layer[0].shape[1]) for kind, per_layer in raw.items()}, options)
        if options.kinds is not None:
            raw = {kind: per_layer for kind, per_layer in raw.items() if kind in options.kinds}
            grads = {kind: g for kind, g in grads.items() if kind in raw}
        attentions = {kind: stack_layers(per_layer, options) for kind, per_layer in raw.items()}
        extras = {"gradients": grads} if grads else {}
        if has_sinks(model):
            # Learned sinks (gpt-oss): eager's rows are the model's exact weights and sum to less than 1; the
            # share the sinks took is kept beside them, as the huggingface adapter does.
            extras["sink_mass"] = {
                kind: (1 - a.detach().float().sum(-1)).clamp_min(0) for kind, a in attentions.items()
            }
        causal = "self" in attentions and looks_causal(attentions["self"])
        outs, seq = kept_outputs(output, "target" if "decoder" in attentions else "source")
        meta = {**self.describe(model), "causal": causal}
        # A float16/bfloat16 model's eager weights are rounded to its dtype before the record's float32 copy:
        # their rows sum to 1 only to that dtype's precision, which validation allows for.
        meta["weights_dtype"] = str(next(iter(raw.values()))[0].dtype).removeprefix("torch.")
        records = split_batch(
            batch,
            attentions,
            options=options,
            meta=meta,
            extras=extras,
            outputs=outs,
            sequence_outputs=seq,
            totals={kind: (len(per_layer), per_layer[0].shape[1]) for kind, per_layer in raw.items()},
        )
        if "sink_mass" in extras:
            for record in records:
                record.sink_mass = {k: v.float() for k, v in record.sink_mass.items()}
                record.meta["attention_sinks"] = True
        return output, records

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


def _zero_if_none(grad: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return grad.detach() if grad is not None else torch.zeros_like(like)


@hookimpl
def attn_plugins_register_adapters(register: Callable[..., None]) -> None:
    """Register the eager adapter."""
    register("eager", EagerAdapter())
