"""The built-in metrics, registered through the ``attn_plugins`` entry point like any third-party plugin."""

from __future__ import annotations

from ..hookspecs import Register, hookimpl
from . import agreement, faithfulness, plausibility

METRICS = {
    "comprehensiveness": faithfulness.comprehensiveness,
    "sufficiency": faithfulness.sufficiency,
    "aopc_comprehensiveness": faithfulness.aopc_comprehensiveness,
    "aopc_sufficiency": faithfulness.aopc_sufficiency,
    "deletion": faithfulness.deletion_curve,
    "insertion": faithfulness.insertion_curve,
    "token_f1": plausibility.token_f1,
    "iou_f1": plausibility.iou_f1,
    "auprc": plausibility.auprc,
    "spearman": agreement.spearman,
    "kendall": agreement.kendall,
    "top_k_overlap": agreement.top_k_overlap,
}


@hookimpl
def attn_plugins_register_metrics(register: Register) -> None:
    """Register every built-in metric under its stable name."""
    for name, metric in METRICS.items():
        register(name, metric)
