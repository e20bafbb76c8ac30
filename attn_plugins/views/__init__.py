"""Views of attention records: bertviz head/model/neuron views, heatmaps, text highlighting, reports.

Every page is standalone HTML that renders offline from a file (d3, jQuery and require.js are inlined),
escapes every token for its context, and switches to canvas drawing for long inputs.
"""

from __future__ import annotations

from .attention import HeadView, ModelView, NeuronView, head_view, model_view, neuron_view
from .figure import FigureView
from .heatmap import Heatmap, heatmap
from .highlight import TextHighlight, side_by_side, text
from .page import View
from .payload import DEFAULT_THRESHOLD
from .report import Report, describe_output, report
from .summary import HeadSummary, head_summary

__all__ = [
    "DEFAULT_THRESHOLD",
    "FigureView",
    "HeadSummary",
    "HeadView",
    "Heatmap",
    "ModelView",
    "NeuronView",
    "Report",
    "TextHighlight",
    "View",
    "describe_output",
    "head_summary",
    "head_view",
    "heatmap",
    "model_view",
    "neuron_view",
    "report",
    "side_by_side",
    "text",
]
