"""Norm-based analysis (Kobayashi et al. 2020): attention weights scaled by ‖f(x_j)‖, the transformed value norm."""

from __future__ import annotations

import numpy as np

from ..record import AttentionRecord, reduce_axis
from .base import Method, attention, heads_of, layers_of, to_numpy


class NormBased(Method):
    """α^h_ij·‖f^h(x_j)‖ per head, with f^h the value and output projections of head h.

    Heads are combined by ``head_reduce`` (``"sum"`` gives Kobayashi's Σ_h; the default mean ranks the
    same), then layers are averaged.
    """

    name = "norm"
    requires = ("value_norms",)
    description = "Kobayashi et al. 2020: ‖α·f(x)‖ with value and output projections"

    def matrix(
        self, record: AttentionRecord, *, kind: str, layers: list[int], heads: list[int], head_reduce: str
    ) -> np.ndarray:
        """[Q, K] α^h_ij ‖f^h(x_j)‖, heads combined by ``head_reduce``, averaged over the chosen layers."""
        norms = heads_of(layers_of(self.require(record, "value_norms", kind), layers), heads)  # [L, H, K]
        att = heads_of(attention(record, kind, layers), heads)
        # α_ij·‖f(x_j)‖ scales every key column j of head h by that head's transformed value norm.
        return to_numpy(reduce_axis(att * norms[:, :, None, :], head_reduce).mean(0))
