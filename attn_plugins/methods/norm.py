"""Norm-based analysis (Kobayashi et al. 2020): attention weights scaled by ‖f(x_j)‖, the transformed value norm."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..record import AttentionRecord
from .base import Method, attention, pick_heads, pick_layers, to_numpy


class NormBased(Method):
    """Σ_h α^h_ij·‖f^h(x_j)‖ per layer, with f^h the value and output projections of head h; mean over layers."""

    name = "norm"
    requires = ("value_norms",)
    kinds = ("self", "encoder", "decoder", "cross")
    description = "Kobayashi et al. 2020: ‖α·f(x)‖ with value and output projections, summed over heads"

    def matrix(
        self,
        record: AttentionRecord,
        kind: str | None = None,
        layers: int | Sequence[int] | None = -1,
        heads: int | Sequence[int] | None = None,
    ) -> np.ndarray:
        """[Q, K] Σ_h α^h_ij ‖f^h(x_j)‖ of the chosen layers (default: last), averaged over layers."""
        kind = self.resolve_kind(record, kind)
        norms = self.require(record, "value_norms", kind)  # [L, H, K]
        att = attention(record, kind)
        li = torch.tensor(pick_layers(att.shape[0], layers))
        hi = torch.tensor(pick_heads(att.shape[1], heads))
        att = att.index_select(0, li).index_select(1, hi)
        norms = norms.index_select(0, li).index_select(1, hi)
        # α_ij·‖f(x_j)‖ scales every key column j of head h by that head's transformed value norm.
        return to_numpy(torch.einsum("lhqk,lhk->qk", att, norms) / len(li))
