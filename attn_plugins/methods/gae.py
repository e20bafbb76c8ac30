"""Generic attention explainability (Chefer et al. 2021): gradient-weighted attention propagated as R ← R + Ā·R."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from ..record import AttentionRecord
from .base import Method, attention, square, to_numpy
from .relevance import encoder_decoder_rule, self_rule


class GAE(Method):
    """Chefer et al. 2021: Ā = mean over heads of (∇A ⊙ A)⁺, relevance accumulated from the first layer up."""

    name = "gae"
    requires = ("gradients",)
    description = "Chefer et al. 2021 generic attention explainability (encoder, decoder, encoder-decoder)"

    def maps(self, record: AttentionRecord, kind: str) -> torch.Tensor:
        """[L, Q, K] head-averaged positive part of gradient-weighted attention (rule 5)."""
        grad = self.require(record, "gradients", kind)
        return (grad * attention(record, kind)).clamp_min(0).mean(1)

    def matrix(self, record: AttentionRecord, kind: str | None = None) -> np.ndarray:
        """[Q, K] relevance: R of a self-attention stack, or R_de of an encoder-decoder for ``kind='cross'``."""
        kind = self.resolve_kind(record, kind)
        if kind == "cross":
            missing = [k for k in ("encoder", "decoder") if k not in record.attentions]
            if missing:
                raise InputError(f"gae on cross attention needs the record's {' and '.join(missing)} attention too")
            return to_numpy(
                encoder_decoder_rule(
                    self.maps(record, "encoder"), self.maps(record, "decoder"), self.maps(record, kind)
                )
            )
        square(record.attentions[kind], kind, self.name)
        return to_numpy(self_rule(self.maps(record, kind)))
