"""Generic attention explainability (Chefer et al. 2021): gradient-weighted attention propagated as R ← R + Ā·R."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from ..record import AttentionRecord, reduce_axis
from .base import Method, attention, bottom_up, heads_of, layers_of, square, to_numpy
from .relevance import encoder_decoder_rule, self_rule


class GAE(Method):
    """Chefer et al. 2021: Ā = heads combined (mean in the paper) of (∇A ⊙ A)⁺, accumulated first layer up."""

    name = "gae"
    requires = ("gradients",)
    description = "Chefer et al. 2021 generic attention explainability (encoder, decoder, encoder-decoder)"

    def maps(
        self, record: AttentionRecord, kind: str, layers: list[int] | None, heads: list[int] | None, head_reduce: str
    ) -> torch.Tensor:
        """[L, Q, K] positive part of gradient-weighted attention, heads combined (rule 5); layers bottom-up."""
        order = bottom_up(record, kind, layers if layers is not None else list(range(record.attentions[kind].shape[0])))
        weighted = (
            layers_of(self.require(record, "gradients", kind), order) * attention(record, kind, order)
        ).clamp_min(0)
        if heads is not None:
            weighted = heads_of(weighted, heads)
        return reduce_axis(weighted, head_reduce)

    def matrix(
        self, record: AttentionRecord, *, kind: str, layers: list[int], heads: list[int], head_reduce: str
    ) -> np.ndarray:
        """[Q, K] relevance: R of a self-attention stack, or R_de of an encoder-decoder for ``kind='cross'``."""
        if kind == "cross":
            # layers/heads select the decoder side (decoder self- and cross attention share their layers).
            missing = [k for k in ("encoder", "decoder") if k not in record.attentions]
            if missing:
                raise InputError(f"gae on cross attention needs the record's {' and '.join(missing)} attention too")
            return to_numpy(
                encoder_decoder_rule(
                    self.maps(record, "encoder", None, None, head_reduce),
                    self.maps(record, "decoder", layers, heads, head_reduce),
                    self.maps(record, kind, layers, heads, head_reduce),
                )
            )
        square(record.attentions[kind], kind, self.name)
        return to_numpy(self_rule(self.maps(record, kind, layers, heads, head_reduce)))
