"""PyTorch adapter: attention of ``nn.MultiheadAttention`` modules (e.g. in ``nn.TransformerEncoder``) via hooks.

A forward pre-hook asks each module for per-head weights (``need_weights=True``,
``average_attn_weights=False``) even when its caller passed ``need_weights=False``, as
``nn.TransformerEncoderLayer`` does; a forward hook keeps the weights and hands the caller the output
it asked for. Attached hooks also turn off PyTorch's fused encoder fast path, so the modules run.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from attn_adapters.eager import is_hf_model, looks_causal
from attn_plugins.adapters import (
    Adapter,
    AttentionCall,
    CaptureOptions,
    EncodedBatch,
    model_device,
    move_inputs,
    split_batch,
    target_scalar,
)
from attn_plugins.errors import InputError, UnsupportedModelError
from attn_plugins.plugins import hookimpl
from attn_plugins.record import AttentionRecord, choose

_INDEX = re.compile(r"(?:^|\.)(\d+)(?=\.|$)")
_PADDING_KWARGS = ("src_key_padding_mask", "key_padding_mask")


def mha_modules(model: nn.Module) -> list[tuple[str, nn.MultiheadAttention]]:
    """The model's MultiheadAttention modules in layer order (integers in their qualified names)."""
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
    return sorted(found, key=lambda nm: tuple(int(i) for i in _INDEX.findall(nm[0])))


def _projections(module: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor):
    """Per-head query, key and value vectors [B, H, T, d] as the module computes them (batch-first input)."""
    e, h = module.embed_dim, module.num_heads
    if module._qkv_same_embed_dim:
        w_q, w_k, w_v = module.in_proj_weight.split(e)
    else:
        w_q, w_k, w_v = module.q_proj_weight, module.k_proj_weight, module.v_proj_weight
    b_q = b_k = b_v = None
    if module.in_proj_bias is not None:
        b_q, b_k, b_v = module.in_proj_bias.split(e)

    def heads(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        y = nn.functional.linear(x, w, b)
        return y.reshape(y.shape[0], y.shape[1], h, -1).transpose(1, 2)

    return heads(query, w_q, b_q), heads(key, w_k, b_k), heads(value, w_v, b_v)


class _Hooks:
    """Hooks of one capture; what they collect stays on this object."""

    def __init__(self, options: CaptureOptions, on_call: Callable[[AttentionCall], None] | None = None) -> None:
        self.options = options
        self.calls: dict[str, list[dict[str, torch.Tensor]]] = {}
        # Listening: each module's weights go to on_call as they are computed, numbered by module order.
        self.on_call = on_call
        self.layer_of: dict[str, int] = {}

    def pre(self, name: str):
        def hook(module: nn.MultiheadAttention, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            query, key, value = (list(args) + [kwargs.get(k) for k in ("query", "key", "value")])[:3]
            if query.numel() == 0:  # PyTorch would return no weights at all
                raise InputError(
                    f"{name} was given an empty sequence (shape {tuple(query.shape)}): there is nothing to attend to"
                )
            if query is not key and not torch.equal(query, key):
                raise UnsupportedModelError(
                    f"{name} is a cross-attention MultiheadAttention; the torch_mha adapter reads self-attention only"
                )
            caller = {
                "need_weights": kwargs.get("need_weights", args[4] if len(args) > 4 else True),
                "average": kwargs.get("average_attn_weights", args[6] if len(args) > 6 else True),
            }
            kwargs = dict(kwargs)
            # Keep query, key, value and key_padding_mask positional; later positional options become keywords.
            for pos, kw in ((5, "attn_mask"), (7, "is_causal")):
                if len(args) > pos:
                    kwargs[kw] = args[pos]
            args = args[:4]
            kwargs["need_weights"], kwargs["average_attn_weights"] = True, False
            entry: dict[str, Any] = {"caller": caller}
            q_in, k_in, v_in = (query, key, value)
            if not module.batch_first and query.dim() == 3:
                q_in, k_in, v_in = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
            if self.options.gradients:
                entry["value_input"] = v_in
            if self.options.values or self.options.value_norms or self.options.qk:
                q, k, v = _projections(module, q_in, k_in, v_in)
                if self.options.values:
                    entry["values"] = v.detach()
                if self.options.value_norms:
                    w = module.out_proj.weight.reshape(module.embed_dim, module.num_heads, -1)
                    entry["value_norms"] = torch.einsum("bhkd,ohd->bhko", v, w).norm(dim=-1).detach()
                if self.options.qk:
                    entry["queries"], entry["keys"] = q.detach(), k.detach()
            self.calls.setdefault(name, []).append(entry)
            return args, kwargs

        return hook

    def post(self, name: str):
        def hook(module: nn.MultiheadAttention, args: tuple, kwargs: dict, output: tuple) -> tuple:
            entry = self.calls[name][-1]
            out, weights = output
            if weights.dim() == 3:  # unbatched input: [H, Q, K]
                weights = weights.unsqueeze(0)
            entry["probs"] = weights if self.options.gradients else weights.detach()
            caller = entry.pop("caller")
            if self.options.gradients and weights.dim() == 4:
                # The weights PyTorch returns are a view taken after the output was computed; recompute the
                # output from them (same numbers) so gradients of the target flow through the weights.
                v_in = entry.pop("value_input")
                _, _, v = _projections(module, v_in, v_in, v_in)
                mixed = torch.matmul(weights, v).transpose(1, 2).reshape(v.shape[0], v.shape[2], -1)
                out = module.out_proj(mixed)
                if not module.batch_first:
                    out = out.transpose(0, 1)
            if self.on_call is not None:
                self.calls[name].pop()  # nothing is kept while listening
                probs = weights.detach()
                self.on_call(AttentionCall("self", self.layer_of[name], probs, looks_causal(probs)))
            if not caller["need_weights"]:
                return out, None
            return out, weights.mean(dim=1) if caller["average"] else weights

        return hook


@contextmanager
def _hooked(model: nn.Module, hooks: _Hooks) -> Iterator[None]:
    handles = []
    hooks.layer_of = {name: i for i, (name, _) in enumerate(mha_modules(model))}
    # The nested-tensor path of nn.TransformerEncoder would hand the layers NestedTensors; keep it off.
    encoders = [(m, m.use_nested_tensor) for m in model.modules() if isinstance(m, nn.TransformerEncoder)]
    try:
        for m, _ in encoders:
            m.use_nested_tensor = False
        for name, module in mha_modules(model):
            handles.append(module.register_forward_pre_hook(hooks.pre(name), with_kwargs=True))
            handles.append(module.register_forward_hook(hooks.post(name), with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()
        for m, flag in encoders:
            m.use_nested_tensor = flag


def call_model(model: nn.Module, inputs: dict[str, torch.Tensor]) -> Any:
    """Call a plain PyTorch model: the ids or embeddings first, the padding mask under the name its forward takes."""
    main = next((k for k in ("input_ids", "inputs_embeds") if k in inputs), None)
    if main is None:
        raise InputError("the torch_mha adapter needs inputs with input_ids or inputs_embeds")
    params = inspect.signature(model.forward).parameters
    kwargs = {k: v for k, v in inputs.items() if k in params and k != main}
    mask = inputs.get("attention_mask")
    if mask is not None and "attention_mask" not in params:
        name = next((k for k in _PADDING_KWARGS if k in params), None)
        if name is not None:
            kwargs[name] = ~mask.bool()  # PyTorch marks padding with True
        elif not bool(mask.all()):
            raise InputError(
                f"{type(model).__name__}.forward takes no padding mask (src_key_padding_mask); "
                "capture one example at a time or add the argument"
            )
    return model(inputs[main], **kwargs)


class TorchMHAAdapter(Adapter):
    """Reads per-head weights of every ``nn.MultiheadAttention`` in a plain PyTorch model."""

    name = "torch_mha"
    priority = 5

    def supports(self, model: Any) -> bool:
        """A torch module (not a transformers model) with at least one MultiheadAttention."""
        return isinstance(model, nn.Module) and not is_hf_model(model) and bool(mha_modules(model))

    def capture(self, model: Any, batch: EncodedBatch, options: CaptureOptions) -> list[AttentionRecord]:
        """Run the model once with hooks on its attention modules."""
        return self.run(model, batch, options)[1]

    def describe(self, model: Any) -> dict[str, Any]:
        """The module class; weights are PyTorch's own (exact)."""
        return {
            **super().describe(model),
            "attention_backend": "torch.nn.MultiheadAttention",
            "exact": True,
            "num_key_value_heads": None,
        }

    def call(self, model: Any, inputs: dict[str, torch.Tensor], args: tuple[Any, ...] = ()) -> Any:
        """Call the plain PyTorch model with the arguments its forward takes (see :func:`call_model`)."""
        if args:
            return model(*args, **inputs)  # the model's own arguments, as the caller gave them
        return call_model(model, inputs)

    @contextmanager
    def listen(self, model: Any, options: CaptureOptions, on_call: Callable[[AttentionCall], None]) -> Iterator[None]:
        """Hooks on every MultiheadAttention for the block; each module's weights go to ``on_call``."""
        with _hooked(model, _Hooks(options, on_call)):
            yield

    def run(self, model: Any, batch: EncodedBatch, options: CaptureOptions) -> tuple[Any, list[AttentionRecord]]:
        """Like :meth:`capture`, but also return the model output."""
        device = model_device(model)
        inputs, args = move_inputs(batch.inputs, device), move_inputs(batch.args, device)
        hooks = _Hooks(options)
        with _hooked(model, hooks), torch.set_grad_enabled(options.gradients):
            # The model's own arguments (ap.capture(model, inputs=tensor | tuple | mapping)) go in as given.
            raw = bool(args) or batch.meta.get("raw_inputs", False)
            output = model(*args, **inputs) if raw else call_model(model, inputs)
            layers = [call for name, _ in mha_modules(model) for call in hooks.calls.get(name, [])]
            if not layers:
                raise UnsupportedModelError(f"{type(model).__name__} never called its MultiheadAttention modules")
            grads = None
            if options.gradients:
                scalar = target_scalar(output, options.target)
                found = torch.autograd.grad(scalar, [c["probs"] for c in layers], allow_unused=True)
                grads = [(g if g is not None else torch.zeros_like(c["probs"])).detach() for g, c in zip(found, layers)]
        selected = choose(options.layers, len(layers), "attention layer")

        def stack(tensors: list[torch.Tensor]) -> torch.Tensor:
            t = torch.stack([tensors[i].detach() for i in selected], dim=1)
            return t[:, :, choose(options.heads, t.shape[2], "head")] if options.heads is not None else t

        attentions = {"self": stack([c["probs"] for c in layers])}
        extras = {}
        for what in ("values", "value_norms", "queries", "keys"):
            if what in layers[0]:
                extras[what] = {"self": stack([c[what] for c in layers])}
        if grads is not None:
            extras["gradients"] = {"self": stack(grads)}
        outs = {"output": output.detach()} if isinstance(output, torch.Tensor) and output.dim() == 2 else {}
        meta = {**self.describe(model), "causal": looks_causal(attentions["self"])}
        totals = {"self": (len(layers), layers[0]["probs"].shape[1])}
        return output, split_batch(
            batch, attentions, options=options, meta=meta, extras=extras, outputs=outs, totals=totals
        )


@hookimpl
def attn_plugins_register_adapters(register: Callable[..., None]) -> None:
    """Register the nn.MultiheadAttention adapter."""
    register("torch_mha", TorchMHAAdapter())
