"""Raw attention: chosen layers and heads, combined by mean or max over heads and mean over layers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..record import AttentionRecord
from .base import Method, attention, pick_heads, pick_layers, reduce_heads, to_numpy


class RawAttention(Method):
    """The attention weights themselves; by default the last layer, mean over heads."""

    name = "raw"
    description = "raw attention weights of chosen layers/heads (mean or max over heads, mean over layers)"

    def matrix(
        self,
        record: AttentionRecord,
        kind: str | None = None,
        layers: int | Sequence[int] | None = -1,
        heads: int | Sequence[int] | None = None,
        head_reduce: str = "mean",
    ) -> np.ndarray:
        """[Q, K] attention of the chosen layers (default: last) reduced over the chosen heads."""
        kind = self.resolve_kind(record, kind)
        att = attention(record, kind)
        li = torch.tensor(pick_layers(att.shape[0], layers))
        hi = torch.tensor(pick_heads(att.shape[1], heads))
        att = att.index_select(0, li).index_select(1, hi)
        return to_numpy(reduce_heads(att, head_reduce).mean(0))
