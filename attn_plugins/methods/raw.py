"""Raw attention: the chosen layers and heads, heads combined by ``head_reduce``, layers averaged."""

from __future__ import annotations

import numpy as np

from ..record import AttentionRecord, reduce_axis
from .base import Method, attention, heads_of, to_numpy


class RawAttention(Method):
    """The attention weights themselves: heads combined by ``head_reduce``, then the mean over layers."""

    name = "raw"
    description = "raw attention weights of the chosen layers and heads (heads combined, layers averaged)"

    def matrix(
        self, record: AttentionRecord, *, kind: str, layers: list[int], heads: list[int], head_reduce: str
    ) -> np.ndarray:
        """[Q, K] attention of the chosen layers, heads combined by ``head_reduce``, averaged over layers."""
        att = heads_of(attention(record, kind, layers), heads)
        return to_numpy(reduce_axis(att, head_reduce).mean(0))
