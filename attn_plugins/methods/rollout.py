"""Attention rollout (Abnar & Zuidema 2020): residual-mixed attention multiplied from the first layer up."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from ..record import AttentionRecord, reduce_axis
from .base import Method, attention, bottom_up, heads_of, sink_share, square, to_numpy
from .relevance import encoder_decoder_rule


def residual_mix(maps: torch.Tensor, residual: float = 0.5, sink: torch.Tensor | None = None) -> torch.Tensor:
    """(1 - r)·A + r·I with rows renormalized: the residual connection carries a token to itself.

    ``sink`` ``[L, Q]``: the share of each row a learned sink took. It counts in the row's total, so it
    stays missing mass (reaching no token) instead of being handed to the tokens by the renormalization.
    """
    eye = torch.eye(maps.shape[-1], dtype=maps.dtype)
    mixed = (1.0 - residual) * maps + residual * eye
    total = mixed.sum(-1, keepdim=True)
    if sink is not None:
        total = total + (1.0 - residual) * sink[..., None]
    return mixed / total


def rollout_product(maps: torch.Tensor) -> torch.Tensor:
    """Â_L · … · Â_1 for [L, N, N] maps (row i of the result: how output token i mixes input tokens)."""
    r = maps[0]
    for a in maps[1:]:  # each layer composes with the product below it
        r = a @ r
    return r


class Rollout(Method):
    """Attention rollout; on cross attention, the gradient-free form of Chefer's encoder-decoder rules."""

    name = "rollout"
    description = (
        "attention rollout: 0.5·A + 0.5·I, rows renormalized (a learned sink's share stays missing mass), "
        "multiplied from first to last layer"
    )

    def matrix(
        self,
        record: AttentionRecord,
        *,
        kind: str,
        layers: list[int],
        heads: list[int],
        head_reduce: str,
        residual: float = 0.5,
    ) -> np.ndarray:
        """[Q, K] rollout over the chosen layers (products bottom-up), heads combined by ``head_reduce``."""
        if not 0.0 <= residual <= 1.0:
            raise InputError(f"residual must be within [0, 1], got {residual}")
        if kind == "cross":
            # Cross attention has no identity to mix in; relevance flows through encoder, decoder and cross
            # maps with Chefer's rules using head-combined attention in place of gradient-weighted maps.
            # layers/heads select the decoder side (decoder self- and cross attention share their layers).
            missing = [k for k in ("encoder", "decoder") if k not in record.attentions]
            if missing:
                raise InputError(f"rollout on cross attention needs the record's {' and '.join(missing)} attention too")
            order = bottom_up(record, kind, layers)
            enc = reduce_axis(attention(record, "encoder"), head_reduce)
            dec = reduce_axis(heads_of(attention(record, "decoder", order), heads), head_reduce)
            cross = reduce_axis(heads_of(attention(record, "cross", order), heads), head_reduce)
            return to_numpy(encoder_decoder_rule(enc, dec, cross))
        order = bottom_up(record, kind, layers)
        att = heads_of(attention(record, kind, order), heads)
        square(att, kind, self.name)
        sink = sink_share(record, kind, order)
        if sink is not None:
            sink = reduce_axis(heads_of(sink, heads), head_reduce)
        return to_numpy(rollout_product(residual_mix(reduce_axis(att, head_reduce), residual, sink)))
