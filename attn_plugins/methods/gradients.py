"""Attention × gradient: the first-order effect of each attention weight on the target."""

from __future__ import annotations

import numpy as np

from ..record import AttentionRecord, reduce_axis
from .base import Method, attention, heads_of, layers_of, to_numpy


class GradAttention(Method):
    """A ⊙ ∂target/∂A per head, heads combined by ``head_reduce``, summed over the chosen layers.

    A first-order estimate of removing each attention edge; ``positive`` clips each term at 0 first.
    """

    name = "grad_attention"
    requires = ("gradients",)
    description = "attention times its gradient (signed, or positive part), summed over layers"
    # Its entries are already signed effects on the target; weighted by signed row shares they lose their
    # meaning (measured on MiniLM similarity: first row 0.21 / 0.37 Spearman, mean 0.07 / 0.36, weighted
    # 0.02 / 0.19 on the topic / round-robin pairings; docs/faithfulness.md).
    pooled_rows = "first"

    def matrix(
        self,
        record: AttentionRecord,
        *,
        kind: str,
        layers: list[int],
        heads: list[int],
        head_reduce: str,
        positive: bool = False,
    ) -> np.ndarray:
        """[Q, K] Σ_l reduce_h(A ⊙ ∇A) over the chosen layers and heads; ``positive`` clips each term at 0."""
        grad = heads_of(layers_of(self.require(record, "gradients", kind), layers), heads)
        prod = heads_of(attention(record, kind, layers), heads) * grad
        if positive:
            prod = prod.clamp_min(0)
        return to_numpy(reduce_axis(prod, head_reduce).sum(0))
