"""Attention × gradient: the first-order effect of each attention weight on the target."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..record import AttentionRecord
from .base import Method, attention, pick_heads, pick_layers, to_numpy


class GradAttention(Method):
    """Σ over layers and heads of A ⊙ ∂target/∂A: a first-order estimate of removing each attention edge."""

    name = "grad_attention"
    requires = ("gradients",)
    description = "attention times its gradient, summed over layers and heads (signed, or positive part)"

    def matrix(
        self,
        record: AttentionRecord,
        kind: str | None = None,
        layers: int | Sequence[int] | None = None,
        heads: int | Sequence[int] | None = None,
        positive: bool = False,
    ) -> np.ndarray:
        """[Q, K] Σ_l Σ_h A ⊙ ∇A over the chosen layers and heads; ``positive`` clips each term at 0."""
        kind = self.resolve_kind(record, kind)
        grad = self.require(record, "gradients", kind)
        att = attention(record, kind)
        li = torch.tensor(pick_layers(att.shape[0], layers))
        hi = torch.tensor(pick_heads(att.shape[1], heads))
        prod = (att * grad).index_select(0, li).index_select(1, hi)
        if positive:
            prod = prod.clamp_min(0)
        return to_numpy(prod.sum((0, 1)))
