"""Token-by-token attention heatmap of one layer and head, or an aggregate over them, drawn with matplotlib."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..record import AttentionRecord, Selection, reduce_axis
from ..record.selection import check_reduction
from .attention import check_kinds, check_record, prettify, select
from .figure import FigureView, mpl_label

SCALES = ("linear", "sqrt")
SINK_LABEL = "[sink]"  # the extra column of models with learned attention sinks: mass that reached no token
# Beyond this many tokens an axis shows every n-th label so the labels stay legible.
MAX_LABELS = 80


def check_cmap(cmap: str) -> str:
    """``cmap`` if matplotlib knows it; else a clear error."""
    import matplotlib

    if cmap not in matplotlib.colormaps:
        raise InputError(f"unknown matplotlib colormap {cmap!r}")
    return cmap


class Heatmap(FigureView):
    """A query-by-key heatmap: ``.figure()``, ``.save("x.png"|"x.svg"|"x.pdf"|"x.html")``, ``.matrix``."""

    def __init__(
        self,
        matrix: np.ndarray,
        queries: list[str],
        keys: list[str],
        title: str,
        cmap: str = "Blues",
        annotate: bool = False,
        dpi: int = 150,
        scale: str = "linear",
    ) -> None:
        super().__init__(title, dpi=dpi)
        self.scale = scale
        self.matrix = matrix
        self.queries = queries
        self.keys = keys
        self.cmap = cmap
        self.annotate = annotate

    def figure(self) -> Any:
        """A new matplotlib Figure: rows are queries, columns keys, colour the weight."""
        from matplotlib.figure import Figure

        q, k = self.matrix.shape
        cell = 0.32 if max(q, k) <= MAX_LABELS else 8.0 / max(q, k)
        fig = Figure(figsize=(max(4.0, 1.8 + k * cell), max(3.0, 1.4 + q * cell)))
        ax = fig.add_subplot()
        from matplotlib.colors import Normalize, PowerNorm

        top = max(float(self.matrix.max()), 1e-9)
        # sqrt brings out the many small weights of long inputs; linear keeps colour proportional to weight.
        norm = PowerNorm(0.5, vmin=0.0, vmax=top) if self.scale == "sqrt" else Normalize(vmin=0.0, vmax=top)
        image = ax.imshow(self.matrix, cmap=self.cmap, norm=norm, aspect="auto", interpolation="nearest")
        for labels, setter, rotation in ((self.keys, ax.set_xticks, 90), (self.queries, ax.set_yticks, 0)):
            step = max(1, int(np.ceil(len(labels) / MAX_LABELS)))
            positions = np.arange(0, len(labels), step)
            setter(positions, [mpl_label(labels[i]) for i in positions], rotation=rotation, fontsize=8)
        ax.set_xlabel("key")
        ax.set_ylabel("query")
        ax.set_title(mpl_label(self.title), fontsize=10)
        if self.annotate and q * k <= 400:
            for (r, c), value in np.ndenumerate(self.matrix):
                ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=6)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        return fig


def _named(ids: list[int], what: str, how: str, total: int) -> str:
    if len(ids) == 1:
        return f"{what} {ids[0]}"
    if len(ids) == total and ids == list(range(total)):
        return f"{how} of {what}s"
    return f"{how} of {what}s {', '.join(map(str, ids))}"


def heatmap(
    record: AttentionRecord,
    *,
    kind: str | None = None,
    layers: Selection = None,
    heads: Selection = None,
    head_reduce: str = "mean",
    layer_reduce: str = "mean",
    drop_special: bool = False,
    cmap: str = "Blues",
    annotate: bool = False,
    title: str | None = None,
    dpi: int = 150,
    scale: str = "linear",
) -> Heatmap:
    """Query-by-key heatmap of the chosen layers and heads (original numbers; several are combined).

    Several heads are combined by ``head_reduce``, then several layers by ``layer_reduce`` (``"mean"``,
    ``"max"``, ``"min"`` or ``"sum"``); by default every head and layer, averaged. A model with learned
    attention sinks (gpt-oss) gets one more column, ``[sink]``: the share of each row that reached no token,
    reduced the same way, so a head that parks its mass on the sink is not drawn as a confident pointer.
    """
    record = check_record(record)
    check_cmap(cmap)
    check_reduction(head_reduce)
    check_reduction(layer_reduce)
    if scale not in SCALES:
        raise InputError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    if drop_special:
        record = record.drop_special_tokens()
    kinds = check_kinds(record, kind or record.default_kind)
    if len(kinds) != 1:
        raise InputError("a heatmap draws one attention kind; pass kind= as a single kind")
    kind = kinds[0]
    li, hi = select(record, kind, layers, heads)
    att = record.attentions[kind].detach().float().index_select(0, torch.tensor(li)).index_select(1, torch.tensor(hi))
    att = reduce_axis(reduce_axis(att, head_reduce, dim=1), layer_reduce, dim=0)
    queries, keys = record.axes(kind)
    keys = prettify(keys)
    sink = record.sink_mass.get(kind)
    if sink is not None:
        mass = sink.detach().float().index_select(0, torch.tensor(li)).index_select(1, torch.tensor(hi))
        mass = reduce_axis(reduce_axis(mass, head_reduce, dim=1), layer_reduce, dim=0)  # [Q]
        att = torch.cat([att, mass.unsqueeze(-1)], dim=-1)
        keys = [*keys, SINK_LABEL]
    layer_ids, head_ids = record.layer_ids(kind), record.head_ids(kind)
    layer_name = _named([layer_ids[i] for i in li], "layer", layer_reduce, len(layer_ids))
    head_name = _named([head_ids[i] for i in hi], "head", head_reduce, len(head_ids))
    label = title if title is not None else f"{kind} attention, {layer_name}, {head_name}"
    return Heatmap(att.numpy(), prettify(queries), keys, label, cmap=cmap, annotate=annotate, dpi=dpi, scale=scale)
