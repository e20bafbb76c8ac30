"""ALTI (Ferrando et al. 2022): token-to-token contributions of each layer, measured after the layer norm.

A layer's attention block writes, for token i, ``y_i = LN(Σ_j T_i(x_j))`` with
``T_i(x_j) = Σ_h α^h_ij f^h(x_j) + δ_ij x_j`` (values through the output projection, plus the residual).
The layer norm is linear once its scale σ_i is fixed, so ``y_i = Σ_j T̃_i(x_j) + bias`` exactly, and the
contribution of j to i is ``max(0, ‖y_i‖₁ - ‖y_i - T̃_i(x_j)‖₁)``, rows normalized. Layers are combined by
multiplying the contribution matrices (the residual is already inside them). These need model weights,
so :func:`capture_alti` computes them with forward hooks and stores them in ``record.extras['alti']``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import InputError, MissingCaptureError, UnsupportedModelError
from ..record import AttentionRecord
from .base import Method, layers_of, to_numpy
from .rollout import rollout_product

EXTRAS_KEY = "alti"


@dataclass
class AltiLayer:
    """The modules of one encoder layer that ALTI reads."""

    value: torch.nn.Linear
    dense: torch.nn.Linear
    norm: torch.nn.LayerNorm
    heads: int


def alti_layers(model: Any) -> list[AltiLayer]:
    """Value projection, output projection and post-attention layer norm of every layer (BERT family)."""
    base = getattr(model, "base_model", model)
    config = getattr(model, "config", None)
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", None)
    encoder = getattr(base, "encoder", None)
    if encoder is not None and hasattr(encoder, "layer") and heads:
        # BERT, RoBERTa, ELECTRA, MiniLM: post-LN layers with attention.self.value / attention.output.*
        try:
            return [
                AltiLayer(lay.attention.self.value, lay.attention.output.dense, lay.attention.output.LayerNorm, heads)
                for lay in encoder.layer
            ]
        except AttributeError:
            pass
    transformer = getattr(base, "transformer", None)
    if transformer is not None and hasattr(transformer, "layer") and heads:
        try:  # DistilBERT
            return [
                AltiLayer(lay.attention.v_lin, lay.attention.out_lin, lay.sa_layer_norm, heads)
                for lay in transformer.layer
            ]
        except AttributeError:
            pass
    raise UnsupportedModelError(
        f"ALTI supports post-layer-norm BERT-family encoders (BERT, RoBERTa, ELECTRA, MiniLM, DistilBERT); "
        f"{type(model).__name__} has no such layers"
    )


def layer_contributions(
    attn: torch.Tensor,
    values: torch.Tensor,
    residual: torch.Tensor,
    pre_norm: torch.Tensor,
    layer: AltiLayer,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized contributions [T, T] of one layer, and the reconstructed layer-norm output y [T, D].

    ``attn`` [H, T, T] probabilities, ``values`` [T, D] value-projection outputs, ``residual`` [T, D] the
    layer input, ``pre_norm`` [T, D] the layer norm's input (its σ_i scales every term of token i).
    """
    t, d = values.shape
    h = layer.heads
    w = layer.dense.weight.detach().double().view(d, h, d // h)
    v = values.view(t, h, d // h)
    fx = torch.einsum("jhv,dhv->hjd", v, w)  # f^h(x_j): value through the head's slice of W_O
    terms = torch.einsum("hij,hjd->ijd", attn, fx)  # Σ_h α^h_ij f^h(x_j)
    terms = terms + torch.diag_embed(residual.T).permute(1, 2, 0)  # + δ_ij x_j
    gamma = layer.norm.weight.detach().double()
    beta = layer.norm.bias.detach().double()
    sigma = torch.sqrt(pre_norm.var(-1, unbiased=False) + layer.norm.eps)  # [T]

    def centered(z: torch.Tensor) -> torch.Tensor:
        return (z - z.mean(-1, keepdim=True)) * gamma

    transformed = centered(terms) / sigma[:, None, None]  # T̃_i(x_j)
    bias = layer.dense.bias.detach().double() if layer.dense.bias is not None else torch.zeros(d, dtype=torch.float64)
    y = transformed.sum(1) + centered(bias)[None, :] / sigma[:, None] + beta
    closeness = y.abs().sum(-1, keepdim=True) - (y[:, None, :] - transformed).abs().sum(-1)
    contrib = closeness.clamp_min(0)
    sums = contrib.sum(-1, keepdim=True)
    return contrib / torch.where(sums > 0, sums, torch.ones_like(sums)), y


def alti_contributions(model: Any, inputs: dict[str, torch.Tensor], attentions: torch.Tensor) -> dict[str, Any]:
    """Per-layer contributions [L, T, T] for one example, plus the layer-norm reconstruction error.

    ``attentions`` [L, H, T, T] are the example's captured probabilities (all layers and heads).
    """
    layers = alti_layers(model)
    if attentions.shape[0] != len(layers):
        raise InputError(f"ALTI needs every layer's attention: got {attentions.shape[0]} of {len(layers)}")
    store: dict[tuple[int, str], torch.Tensor] = {}

    def save(i: int, what: str, use_input: bool):
        def hook(module, args, output):
            store[(i, what)] = (args[0] if use_input else output).detach().double()[0]

        return hook

    handles = []
    for i, lay in enumerate(layers):
        handles.append(lay.value.register_forward_hook(save(i, "value", False)))
        handles.append(lay.dense.register_forward_hook(save(i, "dense", False)))
        handles.append(lay.norm.register_forward_hook(save(i, "pre_norm", True)))
        handles.append(lay.norm.register_forward_hook(save(i, "norm", False)))
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    contribs, worst = [], 0.0
    for i, lay in enumerate(layers):
        pre = store[(i, "pre_norm")]
        # In eval mode the layer norm's input is dense(attention output) + x, so x is the difference.
        residual = pre - store[(i, "dense")]
        c, y = layer_contributions(attentions[i].double(), store[(i, "value")], residual, pre, lay)
        worst = max(worst, float((y - store[(i, "norm")]).abs().max()))
        contribs.append(c)
    return {"contributions": torch.stack(contribs).float(), "reconstruction_error": worst}


def capture_alti(model: Any, tokenizer: Any, text: str, **capture_options: Any) -> AttentionRecord:
    """``ap.capture`` of one text plus ALTI contributions in ``record.extras['alti']`` [L, T, T]."""
    from ..capture import capture

    if not isinstance(text, str):
        raise InputError("capture_alti takes one text at a time")
    if capture_options.get("layers") is not None or capture_options.get("heads") is not None:
        raise InputError("ALTI combines every layer and head: capture without layers= or heads=")
    alti_layers(model)  # fail early, before the capture, on unsupported models
    record = capture(model, tokenizer, text, **capture_options)
    enc = tokenizer(text, return_tensors="pt", truncation=bool(capture_options.get("truncation", False)))
    inputs = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    if inputs["input_ids"].shape[1] != len(record.tokens):
        raise InputError("the tokenizer gives a different number of tokens than the capture; cannot align ALTI")
    key = record.default_kind
    out = alti_contributions(model, inputs, record.attentions[key])
    record.extras[EXTRAS_KEY] = out["contributions"]
    record.meta["alti_reconstruction_error"] = out["reconstruction_error"]
    return record


class Alti(Method):
    """ALTI: per-layer contributions from ``record.extras['alti']``, multiplied from the first layer up.

    Contributions combine every head of a layer (they are token-to-token through the whole attention
    block), so ``heads`` and ``head_reduce`` cannot select or combine heads here.
    """

    name = "alti"
    requires = ("extras:alti",)
    kinds = ("self", "encoder")
    description = "ALTI (Ferrando et al. 2022) contributions with layer norm, rolled out over layers"
    forward_passes = 2  # the capture, then a hooked forward for the per-layer contributions
    batch_capture = False

    def check_support(self, model: Any, tokenizer: Any = None) -> None:
        """The model has the layers this method decomposes (found without a forward)."""
        alti_layers(model)

    def capture(
        self, model: Any, tokenizer: Any = None, text: Any = None, *, inputs: Any = None, **options: Any
    ) -> Any:
        """A record with ALTI contributions: a capture plus a second, hooked forward (:func:`capture_alti`)."""
        if inputs is not None or not isinstance(text, str):
            raise InputError("alti captures from one plain text; it cannot explain pairs, batches or generations")
        options.pop("gradient_target", None)
        return capture_alti(model, tokenizer, text, **{**self.capture_options(), **options})

    def contributions(self, record: AttentionRecord) -> torch.Tensor:
        """The stored [L, T, T] contributions, checked against the record's tokens."""
        c = record.extras.get(EXTRAS_KEY)
        if c is None:
            raise MissingCaptureError(
                "method 'alti' needs record.extras['alti'] (per-layer contributions from model weights); "
                "capture with attn_plugins.methods.alti.capture_alti(model, tokenizer, text)"
            )
        n = len(record.tokens)
        if not isinstance(c, torch.Tensor) or c.dim() != 3 or c.shape[1:] != (n, n):
            shape = tuple(c.shape) if isinstance(c, torch.Tensor) else type(c).__name__
            raise InputError(f"record.extras['alti'] must be [layers, {n}, {n}], got {shape}")
        if not c.is_floating_point() or not torch.isfinite(c).all():
            raise InputError("record.extras['alti'] must hold finite floating-point contributions")
        return c.detach().double()

    def matrix(
        self,
        record: AttentionRecord,
        *,
        kind: str,
        layers: list[int],
        heads: list[int],
        head_reduce: str,
        rollout: bool = True,
    ) -> np.ndarray:
        """[T, T] ALTI rollout over the chosen layers (default all); ``rollout=False``: the last one alone."""
        if len(heads) != record.attentions[kind].shape[1] or head_reduce != "mean":
            raise InputError("alti combines every head of a layer itself; leave heads= and head_reduce= unset")
        c = self.contributions(record)
        # Contributions cover every layer of the model, indexed by original layer number (a selection made
        # after the capture keeps them whole), so the chosen layers are looked up by their numbers.
        ids = record.layer_ids(kind)
        wanted = sorted(ids[p] for p in layers)
        if wanted[-1] >= c.shape[0]:
            raise InputError(f"record.extras['alti'] has {c.shape[0]} layers; layer {wanted[-1]} was asked for")
        c = layers_of(c, wanted)
        return to_numpy(rollout_product(c) if rollout else c[-1])
