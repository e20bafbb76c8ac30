"""The metrics layer: faithfulness (erasure, AOPC, curves), plausibility (vs rationales), rank agreement,
and diagnostics of attention itself (diffuse and sink heads, disagreement with a reference)."""

from __future__ import annotations

from .agreement import kendall, spearman, top_k_overlap
from .base import Metric
from .diagnostics import Diagnostics, Disagreement, diagnose, disagreement
from .faithfulness import (
    AOPC,
    DEFAULT_BINS,
    Curve,
    aopc,
    aopc_comprehensiveness,
    aopc_sufficiency,
    comprehensiveness,
    deletion_curve,
    insertion_curve,
    sufficiency,
    target_probabilities,
)
from .plausibility import auprc, hard_prediction, iou_f1, spans, token_f1

__all__ = [
    "AOPC",
    "Diagnostics",
    "Disagreement",
    "Metric",
    "diagnose",
    "disagreement",
    "DEFAULT_BINS",
    "Curve",
    "aopc",
    "aopc_comprehensiveness",
    "aopc_sufficiency",
    "auprc",
    "comprehensiveness",
    "deletion_curve",
    "hard_prediction",
    "insertion_curve",
    "iou_f1",
    "kendall",
    "spans",
    "spearman",
    "sufficiency",
    "target_probabilities",
    "token_f1",
    "top_k_overlap",
]
