"""The built-in metrics, registered through the same hook as any third-party plugin's."""

from __future__ import annotations

from ..plugins.hookspecs import Register, hookimpl
from . import agreement, faithfulness, plausibility
from .base import Metric

METRICS = (
    Metric(
        "comprehensiveness", "faithfulness", faithfulness.comprehensiveness, True, "drop when the top tokens are erased"
    ),
    Metric("sufficiency", "faithfulness", faithfulness.sufficiency, False, "drop when only the top tokens are kept"),
    Metric("aopc_comprehensiveness", "faithfulness", faithfulness.aopc_comprehensiveness, True, "ERASER AOPC, erasing"),
    Metric("aopc_sufficiency", "faithfulness", faithfulness.aopc_sufficiency, False, "ERASER AOPC, keeping"),
    Metric("deletion", "faithfulness", faithfulness.deletion_curve, False, "area under the deletion curve"),
    Metric("insertion", "faithfulness", faithfulness.insertion_curve, True, "area under the insertion curve"),
    Metric("token_f1", "plausibility", plausibility.token_f1, True, "F1 of the top tokens against the rationale"),
    Metric("iou_f1", "plausibility", plausibility.iou_f1, True, "ERASER IOU-F1 of predicted spans"),
    Metric("auprc", "plausibility", plausibility.auprc, True, "area under the precision-recall curve"),
    Metric("spearman", "agreement", agreement.spearman, True, "Spearman's rank correlation"),
    Metric("kendall", "agreement", agreement.kendall, True, "Kendall's tau-b"),
    Metric("top_k_overlap", "agreement", agreement.top_k_overlap, True, "shared share of the top-k tokens"),
)


@hookimpl
def attn_plugins_register_metrics(register: Register) -> None:
    """Register every built-in metric under its stable name."""
    for metric in METRICS:
        register(metric.name, metric)
