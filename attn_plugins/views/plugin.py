"""The built-in views, registered through the ``attn_plugins`` entry point like any third-party view."""

from __future__ import annotations

from ..plugins.hookspecs import Register, hookimpl
from .attention import head_view, model_view, neuron_view
from .heatmap import heatmap
from .highlight import side_by_side, text
from .report import report


@hookimpl
def attn_plugins_register_views(register: Register) -> None:
    """Register head_view, model_view, neuron_view, heatmap, text, side_by_side and report."""
    register("head_view", head_view)
    register("model_view", model_view)
    register("neuron_view", neuron_view)
    register("heatmap", heatmap)
    register("text", text)
    register("side_by_side", side_by_side)
    register("report", report)
