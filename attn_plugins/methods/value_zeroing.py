"""Value zeroing (Mohebbi et al., EACL 2023): how much each token's output changes when one value vector is removed.

Following the reference implementation (github hmohebbi/ValueZeroing, ``scoring/value_zeroing.py``): for
layer l and token j, the whole layer (attention block, layer norms, feed-forward) is re-run on its
original input with token j's value vector set to zero in every head (after the value bias; queries,
keys and so the attention weights are untouched). The score of j for token i is the cosine distance
between i's output with and without j's value: ``1 - cos(h̃_i, h_i)``, the diagonal included. Rows are
normalized to sum to 1 and layers are combined by rolling out without adding the identity (the paper's
``compute_joint_attention(res=False)``): R = M_L ··· M_1.

The T alternatives of a layer run as one batch of T sequences through that layer (plus one row with
nothing zeroed, the comparison point computed the same way), so a record costs 1 + T forward-equivalents.
Scores are distances: never negative, they say how much a token is mixed in, not in which direction.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from ..errors import InputError, MissingCaptureError, UnsupportedModelError
from ..record import AttentionRecord
from .base import Method, layers_of, to_numpy
from .rollout import rollout_product

EXTRAS_KEY = "value_zeroing"


def encoder_layers(model: Any) -> list[tuple[torch.nn.Module, torch.nn.Linear]]:
    """(layer, value projection) of every layer of a BERT-family encoder; UnsupportedModelError otherwise."""
    base = getattr(model, "base_model", model)
    encoder = getattr(base, "encoder", None)
    layers = getattr(encoder, "layer", None)
    try:
        return [(lay, lay.attention.self.value) for lay in layers]
    except (AttributeError, TypeError):
        raise UnsupportedModelError(
            f"value zeroing re-runs the layers of BERT-family encoders (encoder.layer[i].attention.self.value); "
            f"{type(model).__name__} has no such layers"
        ) from None


def _hidden(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


@contextmanager
def layer_inputs(model: Any) -> Iterator[list[torch.Tensor]]:
    """Collect the input of every encoder layer during forwards this thread runs inside the block."""
    layers = encoder_layers(model)
    owner = threading.get_ident()
    seen: list[torch.Tensor] = []

    def keep_input(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        if threading.get_ident() == owner:
            seen.append((args[0] if args else kwargs["hidden_states"]).detach())

    handles = [lay.register_forward_pre_hook(keep_input, with_kwargs=True) for lay, _ in layers]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def zeroing_matrices(model: Any, inputs: list[torch.Tensor]) -> torch.Tensor:
    """Row-normalized value-zeroing matrices [L, T, T] from each layer's original input ``[1, T, D]``."""
    layers = encoder_layers(model)
    if len(inputs) != len(layers):
        raise UnsupportedModelError(f"value zeroing saw {len(inputs)} layer inputs for {len(layers)} layers")
    owner = threading.get_ident()
    t = inputs[0].shape[1]
    # Batch row j zeroes token j's value vector; the last row zeroes nothing (the comparison point).
    keep = torch.ones(t + 1, t, 1, dtype=inputs[0].dtype, device=inputs[0].device)
    keep[torch.arange(t), torch.arange(t)] = 0

    def zero_value(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        return output * keep if threading.get_ident() == owner else None

    mats = []
    for (layer, value), x in zip(layers, inputs):
        handle = value.register_forward_hook(zero_value)
        try:
            out = _hidden(layer(x.expand(t + 1, -1, -1)))
        finally:
            handle.remove()
        original = out[-1]  # [T, D], nothing zeroed
        dist = 1 - torch.nn.functional.cosine_similarity(out[:-1].double(), original.double()[None], dim=-1)  # [j, i]
        m = dist.T.clamp_min(0)
        mats.append(m / m.sum(-1, keepdim=True).clamp_min(torch.finfo(m.dtype).tiny))
    return torch.stack(mats)


@torch.no_grad()
def layer_matrices(model: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Value-zeroing matrices [L, T, T] of one unpadded example (one forward for the layer inputs, then the re-runs)."""
    ids = inputs["input_ids"]
    if ids.shape[0] != 1:
        raise InputError("value zeroing scores one example at a time")
    mask = inputs.get("attention_mask")
    if mask is not None and not bool(mask.all()):
        raise InputError("value zeroing needs an unpadded example")
    with layer_inputs(model) as seen:
        model(**inputs)
    return zeroing_matrices(model, seen)


class ValueZeroing(Method):
    """Value zeroing: per-layer context-mixing scores from model re-runs, rolled out without the identity."""

    name = "value_zeroing"
    requires = (f"extras:{EXTRAS_KEY}",)
    kinds = ("self",)
    description = "Value zeroing (Mohebbi et al. 2023): cosine distance of outputs with one value vector zeroed"
    forward_passes = 1  # the capture; the zeroings add T forward-equivalents (record.meta["forward_passes"])
    batch_capture = False  # one text: its zeroed forwards are batched over its own tokens

    def check_support(self, model: Any, tokenizer: Any = None) -> None:
        """The model has the layers this method decomposes (found without a forward)."""
        encoder_layers(model)

    def capture(
        self, model: Any, tokenizer: Any = None, text: Any = None, *, inputs: Any = None, **options: Any
    ) -> AttentionRecord:
        """``ap.capture`` of one example plus the value-zeroing matrices in ``record.extras['value_zeroing']``."""
        from ..capture import capture

        options.pop("gradient_target", None)
        if options.get("layers") is not None or options.get("heads") is not None:
            raise InputError("value zeroing re-runs every layer: capture without layers= or heads=")
        encoder_layers(model)  # fail early on unsupported models
        if inputs is None and not isinstance(text, str):
            raise InputError("value zeroing explains one text at a time")
        # The capture's own forward gives each layer's original input.
        with layer_inputs(model) as seen:
            record = capture(model, tokenizer, text, inputs=inputs, **options)
        if not isinstance(record, AttentionRecord):
            raise InputError("value zeroing explains one example at a time")
        if len(seen) and seen[0].shape[0] != 1:
            raise InputError("value zeroing explains one example at a time")
        mats = zeroing_matrices(model, seen)
        if mats.shape[-1] != len(record.tokens):
            raise InputError("the capture and the value-zeroing run see different numbers of tokens")
        record.extras[EXTRAS_KEY] = mats.float()
        record.meta["forward_passes"] = 1 + mats.shape[-1]
        return record

    def matrix(
        self, record: AttentionRecord, *, kind: str, layers: list[int], heads: list[int], head_reduce: str
    ) -> np.ndarray:
        """[T, T] rollout (no identity added) of the chosen layers' value-zeroing matrices."""
        if len(heads) != record.attentions[kind].shape[1] or head_reduce != "mean":
            raise InputError("value zeroing zeroes a value vector in every head; leave heads= and head_reduce= unset")
        c = record.extras.get(EXTRAS_KEY)
        if c is None:
            raise MissingCaptureError(
                "method 'value_zeroing' needs record.extras['value_zeroing']; capture with "
                "get_method('value_zeroing').capture(model, tokenizer, text)"
            )
        n = len(record.tokens)
        if c.dim() != 3 or c.shape[1:] != (n, n):
            raise InputError(f"record.extras['value_zeroing'] must be [layers, {n}, {n}], got {tuple(c.shape)}")
        ids = record.layer_ids(kind)
        wanted = sorted(ids[p] for p in layers)
        if wanted[-1] >= c.shape[0]:
            raise InputError(
                f"record.extras['value_zeroing'] has {c.shape[0]} layers; layer {wanted[-1]} was asked for"
            )
        return to_numpy(rollout_product(layers_of(c.detach().double(), wanted)))
