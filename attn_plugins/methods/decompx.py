"""DecompX (Modarressi et al., ACL 2023): every hidden state decomposed into per-token parts, up to the explained output.

Following the reference implementation (github mohsenfayyaz/DecompX, ``src/modeling_bert.py``), each
hidden state of a BERT-family encoder is kept as a sum over sources, x_i = Σ_k X[i, k], where source k
is input token k (plus one bias source), and the decomposition is carried exactly through each layer with
the actual forward's non-linear gates frozen:

* start: X[i, i] = the embedding output of token i (the whole embedding belongs to its token);
* attention: P[i, k] = Σ_h Σ_j A^h_ij (X[j, k] W_V^h) W_O^h + X[i, k]; the value and output biases
  W_O b_V + b_O are added (rows of A sum to 1, so the value bias passes whole). In the first layer, as the
  authors' code does, the value bias stays in each token's value vector (X[j, j] W_V + b_V), so W_O b_V
  reaches token j through the attention weights α_ij; only b_O is split there (``"absdot"``);
* LayerNorm: (P[i, k] − mean_d P[i, k]) / σ_i · γ with σ_i the actual standard deviation; β is added;
* feed-forward: W_1, b_1 added, the activation linearized through the origin per neuron, g(h)/h (DecompX's
  "GeLU_ZO", AttnLRP's identity rule), W_2, b_2 added, the residual, LayerNorm as above;
* output: the explained scalar f is linearized at the last hidden states with the same rules (for a
  mean-pooled similarity with ‖e‖ held constant it is exactly linear): c_k = Σ_i X^L[i, k] · ∂f/∂h_i.

Bias handling: ``"absdot"`` (DecompX's default) adds each bias vector b to the sources of token i in
proportion to |X[i, k] · b|; ``"slot"`` keeps every bias in its own source. With ``"slot"`` the token
scores are CP-LRP's relevance at the embedding output (two independent computations; the tests check
they agree). The bias source and the head's own biases make up the rest: Σ_k c_k + c_bias = f.

Cost: one forward, then the decomposition carries T + 1 sources through every layer: about T + 1
forward-equivalents of arithmetic, in one pass.
"""

from __future__ import annotations

import threading
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..adapters import CaptureOptions
from ..errors import InputError, MissingCaptureError, UnsupportedModelError
from ..record import AttentionRecord
from .base import TargetMethod
from .lrp import check_model, embedding_modules, encode_one, module_rules, relevance_target

BIASES = ("absdot", "slot")


@dataclass
class Block:
    """The modules of one post-LN BERT layer that the decomposition reads."""

    value: torch.nn.Linear
    attn_out: torch.nn.Linear
    norm1: torch.nn.LayerNorm
    up: torch.nn.Linear
    act: torch.nn.Module
    down: torch.nn.Linear
    norm2: torch.nn.LayerNorm
    heads: int


def blocks(model: Any) -> list[Block]:
    """Every layer of a BERT-family encoder as a :class:`Block`; UnsupportedModelError otherwise."""
    base = getattr(model, "base_model", model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    try:
        return [
            Block(
                lay.attention.self.value,
                lay.attention.output.dense,
                lay.attention.output.LayerNorm,
                lay.intermediate.dense,
                lay.intermediate.intermediate_act_fn,
                lay.output.dense,
                lay.output.LayerNorm,
                lay.attention.self.num_attention_heads,
            )
            for lay in layers
        ]
    except (AttributeError, TypeError):
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        raise UnsupportedModelError(
            f"DecompX decomposes post-LN BERT-family encoders (encoder.layer[i] with attention.self.value, "
            f"attention.output, intermediate, output) and the pre-LN Llama-family decoders "
            f"({', '.join(sorted(LLAMA_FAMILY))}); {type(model).__name__} (model type {model_type!r}) is neither"
        ) from None


def _own_sources(x0: torch.Tensor) -> torch.Tensor:
    """[T, T + 1, D]: each token's input as its own source (the last source, the biases, starts empty)."""
    t, d = x0.shape
    x = torch.zeros(t, t + 1, d, dtype=torch.float64)
    x[torch.arange(t), torch.arange(t)] = x0
    return x


def _weight(module: torch.nn.Module) -> torch.Tensor:
    return module.weight.detach().double()


def _bias(module: torch.nn.Module, d: int) -> torch.Tensor:
    b = getattr(module, "bias", None)
    return b.detach().double() if b is not None else torch.zeros(d, dtype=torch.float64)


def add_bias(x: torch.Tensor, b: torch.Tensor, how: str) -> torch.Tensor:
    """Add bias ``b`` [D] to the decomposition ``x`` [T, S, D]: into the last (bias) source, or split by |x·b|."""
    if how == "slot":
        out = x.clone()
        out[:, -1] += b
        return out
    w = torch.einsum("isd,d->is", x, b).abs()
    w = w / w.sum(-1, keepdim=True).clamp_min(1e-12)
    return x + w[..., None] * b


def layer_norm(x: torch.Tensor, pre: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
    """LayerNorm of a decomposition [T, S, D] with the actual input ``pre`` [T, D]'s σ frozen (β not added)."""
    sigma = (pre.var(-1, unbiased=False, keepdim=True) + norm.eps).sqrt()  # [T, 1]
    return (x - x.mean(-1, keepdim=True)) / sigma[:, None, :] * _weight(norm)


def decompose(
    model: Any, inputs: dict[str, torch.Tensor], target: Any, adapter: Any, bias: str = "absdot"
) -> dict[str, Any]:
    """Per-token contributions to the explained output of one example: ``{"scores", "bias", "value", ...}``."""
    if bias not in BIASES:
        raise InputError(f"bias must be one of {', '.join(BIASES)}, not {bias!r}")
    layers = blocks(model)
    check_model(model, None, adapter, "DecompX")  # no attention rule: the probabilities are read, frozen
    if inputs["input_ids"].shape[0] != 1:
        raise InputError("DecompX explains one example at a time")
    owner = threading.get_ident()
    saved: dict[tuple[int, str], torch.Tensor] = {}

    def keep(i: int, what: str, use_input: bool):
        def hook(module: torch.nn.Module, args: tuple, output: Any) -> Any:
            if threading.get_ident() != owner:
                return None
            t = args[0] if use_input else (output[0] if isinstance(output, tuple) else output)
            if what != "out":
                saved[(i, what)] = t.detach()
                return None
            # The head's gradient starts at the last hidden states: a leaf here, so neither the parameters
            # (requires_grad=False) nor the layers below need autograd.
            leaf = t.detach().requires_grad_()
            saved[(i, what)] = leaf
            return (leaf, *output[1:]) if isinstance(output, tuple) else leaf

        return hook

    base = getattr(model, "base_model", model)
    calls: list[Any] = []
    explained = relevance_target(target)
    with ExitStack() as stack:
        # The head's gradient needs autograd, also inside torch.inference_mode() or torch.no_grad(): turned on
        # here, with inputs copied out of inference mode (inference tensors cannot be saved for backward).
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(torch.enable_grad())
        inputs = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        # The embedding output is the first layer's input: it starts the decomposition.
        stack.callback(embedding_modules(model)["block"].register_forward_hook(keep(0, "in", False)).remove)
        for i, blk in enumerate(layers):
            stack.callback(blk.norm1.register_forward_hook(keep(i, "pre1", True)).remove)
            stack.callback(blk.up.register_forward_hook(keep(i, "up", False)).remove)
            stack.callback(blk.act.register_forward_hook(keep(i, "act", False)).remove)
            stack.callback(blk.norm2.register_forward_hook(keep(i, "pre2", True)).remove)
        last = len(layers) - 1
        stack.callback(base.encoder.layer[last].register_forward_hook(keep(last, "out", False)).remove)
        stack.enter_context(module_rules(model))  # the head's tanh/GELU: identity rule, as in the layers
        stack.enter_context(adapter.listen(model, CaptureOptions(gradients=True), calls.append))
        output = model(**inputs)
        value = explained(output)
        hidden = saved[(last, "out")]
        (head_grad,) = torch.autograd.grad(value, hidden)
    g = head_grad[0].detach().double()  # [T, D]: ∂f/∂h^L with the head's rules
    attentions = torch.stack([c.probs[0].detach() for c in calls]).double()  # [L, H, T, T]

    with torch.no_grad():
        x0 = saved[(0, "in")][0].double()
        t, d = x0.shape
        s = t + 1
        x = _own_sources(x0)
        for i, blk in enumerate(layers):
            h, dh = blk.heads, d // blk.heads
            v = torch.einsum("jsd,ed->jse", x, _weight(blk.value))
            attn_bias = _bias(blk.attn_out, d)
            if i == 0 and bias == "absdot":
                # DecompX's first layer (modeling_bert.py) uses the actual value vectors: token j's value bias
                # belongs to token j and reaches token i through the attention weight α_ij, as W_O·b_V.
                v[torch.arange(t), torch.arange(t)] += _bias(blk.value, d)
            else:
                attn_bias = _weight(blk.attn_out) @ _bias(blk.value, d) + attn_bias
            wo = _weight(blk.attn_out).view(d, h, dh)
            per_head = torch.einsum("jshv,ehv->hjse", v.view(t, s, h, dh), wo)
            p = torch.einsum("hij,hjse->ise", attentions[i], per_head) + x
            p = add_bias(p, attn_bias, bias)
            x1 = add_bias(layer_norm(p, saved[(i, "pre1")][0].double(), blk.norm1), _bias(blk.norm1, d), bias)
            up = add_bias(torch.einsum("isd,fd->isf", x1, _weight(blk.up)), _bias(blk.up, blk.up.out_features), bias)
            pre = saved[(i, "up")][0].double()
            slope = saved[(i, "act")][0].double() / (pre + 1e-12)  # the activation through the origin, per neuron
            o = torch.einsum("isf,df->isd", up * slope[:, None, :], _weight(blk.down))
            o = add_bias(o, _bias(blk.down, d), bias)
            x = add_bias(layer_norm(o + x1, saved[(i, "pre2")][0].double(), blk.norm2), _bias(blk.norm2, d), bias)
        h_last = hidden[0].detach().double()
        c = torch.einsum("isd,id->s", x, g)
        explained_value = float(value.detach())
        head_bias = explained_value - float((h_last * g).sum())  # what the head's own biases keep
        return {
            "scores": c[:t].cpu().numpy(),
            "bias": float(c[t]) + head_bias,
            "value": explained_value,
            "reconstruction_error": float((x.sum(1) - h_last).abs().max()),
            "parts": x,  # [T, T + 1, D]: each last hidden state as a sum over token sources and the bias source
            "attentions": attentions.float(),
        }


# ---------------------------------------------------------------------------- pre-LN decoders (Llama family)
# Pre-LN decoders with RMSNorm, a gated MLP (gate_proj, up_proj, act_fn, down_proj) and self_attn.{v,o}_proj.
LLAMA_FAMILY = frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma"})


def decoder_layers(model: Any) -> list[torch.nn.Module] | None:
    """The decoder layers of a Llama-family causal LM (see :data:`LLAMA_FAMILY`), or None for other models."""
    if getattr(getattr(model, "config", None), "model_type", None) not in LLAMA_FAMILY:
        return None
    return list(model.model.layers)


def _rms_scale(x: torch.Tensor, norm: torch.nn.Module) -> torch.Tensor:
    """Per token, per dimension multiplier [T, D] of an RMSNorm with its scale frozen at the actual input ``x``."""
    eps = getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", 1e-6)
    w = norm.weight.detach().double()
    w = 1 + w if type(norm).__name__.startswith("Gemma") else w  # Gemma scales by (1 + w)
    return w[None, :] / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def _through_origin(pre: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """The activation's slope through the origin act(g)/g (0.5 at g = 0: SiLU and GELU both)."""
    small = pre.abs() < 1e-12
    return torch.where(small, torch.full_like(pre, 0.5), act / torch.where(small, torch.ones_like(pre), pre))


def decompose_decoder(model: Any, inputs: dict[str, torch.Tensor], target: Any, adapter: Any, bias: str) -> dict:
    """DecompX through a Llama-family decoder: per-token contributions to the explained output of one example.

    RMSNorms with their scale frozen, attention probabilities frozen, the gated MLP act(g) ⊙ u split by the
    uniform rule (half through u with act(g) frozen, half through g with u and the slope act(g)/g frozen),
    the final norm and the head linearized at the last hidden states by the gradient (exact for a logit).
    """
    if bias not in BIASES:
        raise InputError(f"bias must be one of {', '.join(BIASES)}, not {bias!r}")
    layers = decoder_layers(model)
    owner = threading.get_ident()
    saved: dict[tuple[int, str], torch.Tensor] = {}

    def keep(i: int, what: str, use_input: bool, leaf: bool = False):
        def hook(module: torch.nn.Module, args: tuple, output: Any) -> Any:
            if threading.get_ident() != owner:
                return None
            t = args[0] if use_input else (output[0] if isinstance(output, tuple) else output)
            if not leaf:
                saved[(i, what)] = t.detach()
                return None
            start = t.detach().requires_grad_()  # the head's gradient starts here
            saved[(i, what)] = start
            return start

        return hook

    calls: list[Any] = []
    explained = relevance_target(target)
    with ExitStack() as stack:
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(torch.enable_grad())
        inputs = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        if getattr(model.config, "use_cache", None) is not None:
            inputs["use_cache"] = False

        def first_input(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            if threading.get_ident() == owner:
                saved[(0, "in")] = (args[0] if args else kwargs["hidden_states"]).detach()

        stack.callback(layers[0].register_forward_pre_hook(first_input, with_kwargs=True).remove)
        for i, lay in enumerate(layers):
            for what, mod, use_input in (
                ("ln1", lay.input_layernorm, True),
                ("ln2", lay.post_attention_layernorm, True),
                ("gate", lay.mlp.gate_proj, False),
                ("up", lay.mlp.up_proj, False),
                ("act", lay.mlp.act_fn, False),
                ("out", lay, False),
            ):
                stack.callback(mod.register_forward_hook(keep(i, what, use_input)).remove)
        last = len(layers) - 1
        stack.callback(model.model.norm.register_forward_hook(keep(last, "final", False, leaf=True)).remove)
        stack.callback(
            model.model.norm.register_forward_pre_hook(lambda m, a: keep(last, "pre_final", True)(m, a, None)).remove
        )
        stack.enter_context(adapter.listen(model, CaptureOptions(gradients=True), calls.append))
        output = model(**inputs)
        value = explained(output)
        (head_grad,) = torch.autograd.grad(value, saved[(last, "final")])
    g = head_grad[0].detach().double()  # [T, D]: ∂f/∂(final norm output)
    attentions = torch.stack([c.probs[0].detach() for c in calls]).double()  # [L, H, T, T]

    with torch.no_grad():
        x0 = saved[(0, "in")][0].double()
        t, d = x0.shape
        s = t + 1
        x = _own_sources(x0)
        worst = 0.0
        for i, lay in enumerate(layers):
            attn = lay.self_attn
            n1 = x * _rms_scale(saved[(i, "ln1")][0].double(), lay.input_layernorm)[:, None, :]
            v = torch.einsum("isd,ed->ise", n1, _weight(attn.v_proj))
            hk = v.shape[-1] // attn.head_dim
            h = attentions.shape[1]
            v = v.view(t, s, hk, attn.head_dim).repeat_interleave(h // hk, dim=2)
            wo = _weight(attn.o_proj).view(d, h, attn.head_dim)
            p = torch.einsum("hij,jshv,ehv->ise", attentions[i], v, wo)
            attn_bias = _weight(attn.o_proj) @ _bias(attn.v_proj, hk * attn.head_dim).view(
                hk, attn.head_dim
            ).repeat_interleave(h // hk, 0).reshape(-1)
            x = add_bias(x + p, attn_bias + _bias(attn.o_proj, d), bias)
            n2 = x * _rms_scale(saved[(i, "ln2")][0].double(), lay.post_attention_layernorm)[:, None, :]
            gate_pre = saved[(i, "gate")][0].double()
            act = saved[(i, "act")][0].double()
            up = saved[(i, "up")][0].double()
            up_parts = torch.einsum("isd,fd->isf", n2, _weight(lay.mlp.up_proj))
            gate_parts = torch.einsum("isd,fd->isf", n2, _weight(lay.mlp.gate_proj))
            # Uniform rule on act(g) ⊙ u: Σ_s ½(act(g)·u_s + u·slope·g_s) = act(g) ⊙ u, slope = act(g)/g.
            hidden = 0.5 * (act[:, None, :] * up_parts + (up * _through_origin(gate_pre, act))[:, None, :] * gate_parts)
            x = x + torch.einsum("isf,df->isd", hidden, _weight(lay.mlp.down_proj))
            worst = max(worst, float((x.sum(1) - saved[(i, "out")][0].double()).abs().max()))
        final = x * _rms_scale(saved[(last, "pre_final")][0].double(), model.model.norm)[:, None, :]
        c = torch.einsum("isd,id->s", final, g)
        explained_value = float(value.detach())
        head_bias = explained_value - float((saved[(last, "final")][0].detach().double() * g).sum())
        return {
            "scores": c[:t].cpu().numpy(),
            "bias": float(c[t]) + head_bias,
            "value": explained_value,
            "reconstruction_error": worst,
            "parts": x,
            "attentions": attentions.float(),
        }


class DecompX(TargetMethod):
    """DecompX: each token's share of the explained output, decomposed exactly through every layer."""

    kinds = ("self",)

    def __init__(self, name: str = "decompx", bias: str = "absdot"):
        if bias not in BIASES:
            raise InputError(f"bias must be one of {', '.join(BIASES)}, not {bias!r}")
        self.name = name
        self.bias = bias
        self.requires = (f"extras:{name}",)
        self.description = f"DecompX (Modarressi et al. 2023) decomposition up to the output, biases {bias}"

    def check_support(self, model: Any, tokenizer: Any = None) -> None:
        """A BERT-family encoder or a Llama-family decoder with a rule for every module (found without a forward)."""
        from ..capture.forward import select_adapter

        if decoder_layers(model) is None:
            blocks(model)
        check_model(model, None, select_adapter(model, None), "DecompX")

    def capture(
        self, model: Any, tokenizer: Any = None, text: Any = None, *, inputs: Any = None, **options: Any
    ) -> AttentionRecord:
        """A record of the forward the decomposition came from, the token contributions in ``record.extras``."""
        gradient_target = options.pop("gradient_target", None)
        if getattr(model, "training", False):
            raise InputError("DecompX freezes one deterministic forward: call model.eval() (dropout)")
        one = encode_one(self.name, model, tokenizer, text, inputs, options)
        if decoder_layers(model) is not None:
            out = decompose_decoder(model, one.inputs, gradient_target, one.adapter, self.bias)
        else:
            out = decompose(model, one.inputs, gradient_target, one.adapter, self.bias)
        t = len(out["scores"])
        meta = {
            "forward_passes": 1,
            self.name: {
                "bias": self.bias,
                "explained_value": out["value"],
                "bias_share": out["bias"],
                "reconstruction_error": out["reconstruction_error"],
                "forward_equivalents": 1 + (t + 1),  # the forward, then T + 1 sources through every layer
            },
        }
        record = one.record(model, out["attentions"], meta)
        record.extras[self.name] = torch.as_tensor(out["scores"], dtype=torch.float64)
        return record

    def scores(self, record: AttentionRecord, *, kind: str) -> np.ndarray:
        """Each token's contribution to the explained output."""
        values = record.extras.get(self.name)
        if values is None:
            raise MissingCaptureError(
                f"method {self.name!r} needs record.extras[{self.name!r}]; capture with "
                f"get_method({self.name!r}).capture(model, tokenizer, text, gradient_target=...)"
            )
        out = values.detach().to(torch.float64).cpu().numpy()
        if out.shape != (len(record.tokens),):
            raise InputError(f"record.extras[{self.name!r}] has shape {out.shape}, not ({len(record.tokens)},)")
        return out
