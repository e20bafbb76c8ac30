"""Attention rollout (Abnar & Zuidema 2020): residual-mixed attention multiplied from the first layer up."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import InputError
from ..record import AttentionRecord
from .base import Method, attention, pick_layers, reduce_heads, square, to_numpy
from .relevance import encoder_decoder_rule


def residual_mix(maps: torch.Tensor, residual: float = 0.5) -> torch.Tensor:
    """(1 - r)·A + r·I with rows renormalized: the residual connection carries a token to itself."""
    eye = torch.eye(maps.shape[-1], dtype=maps.dtype)
    mixed = (1.0 - residual) * maps + residual * eye
    return mixed / mixed.sum(-1, keepdim=True)


def rollout_product(maps: torch.Tensor) -> torch.Tensor:
    """Â_L · … · Â_1 for [L, N, N] maps (row i of the result: how output token i mixes input tokens)."""
    r = maps[0]
    for a in maps[1:]:  # each layer composes with the product below it
        r = a @ r
    return r


class Rollout(Method):
    """Attention rollout; on cross attention, the gradient-free form of Chefer's encoder-decoder rules."""

    name = "rollout"
    description = "attention rollout: 0.5·A + 0.5·I, rows renormalized, multiplied from first to last layer"

    def matrix(
        self,
        record: AttentionRecord,
        kind: str | None = None,
        layers: Sequence[int] | None = None,
        head_reduce: str = "mean",
        residual: float = 0.5,
    ) -> np.ndarray:
        """[Q, K] rollout over the chosen layers (default all), heads combined by ``head_reduce``."""
        kind = self.resolve_kind(record, kind)
        if not 0.0 <= residual <= 1.0:
            raise InputError(f"residual must be within [0, 1], got {residual}")
        if kind == "cross":
            # Cross attention has no identity to mix in; relevance flows through encoder, decoder and cross
            # maps with Chefer's rules using head-averaged attention in place of gradient-weighted maps.
            if "encoder" not in record.attentions or "decoder" not in record.attentions:
                raise InputError("rollout on cross attention needs the record's encoder and decoder attention too")
            enc = reduce_heads(attention(record, "encoder"), head_reduce)
            dec = reduce_heads(attention(record, "decoder"), head_reduce)
            cross = reduce_heads(attention(record, "cross"), head_reduce)
            return to_numpy(encoder_decoder_rule(enc, dec, cross))
        att = attention(record, kind)
        square(att, kind, self.name)
        li = torch.tensor(sorted(pick_layers(att.shape[0], layers)))  # products run bottom-up
        maps = residual_mix(reduce_heads(att.index_select(0, li), head_reduce), residual)
        return to_numpy(rollout_product(maps))
