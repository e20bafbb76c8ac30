"""Token-by-token attention heatmap of one layer and head, or an aggregate over them, drawn with matplotlib."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..record import AttentionRecord
from .attention import check_record, prettify
from .figure import FigureView, mpl_label

AGGREGATES = ("mean", "max")
SCALES = ("linear", "sqrt")
# Beyond this many tokens an axis shows every n-th label so the labels stay legible.
MAX_LABELS = 80


def _pick(att: torch.Tensor, dim: int, which: int | str, ids: list[int], what: str) -> tuple[torch.Tensor, str]:
    """Select one original layer/head number along ``dim``, or aggregate over the axis."""
    if isinstance(which, str):
        if which not in AGGREGATES:
            raise InputError(f"{what} must be a {what} number or one of {', '.join(AGGREGATES)}, got {which!r}")
        agg = att.mean(dim) if which == "mean" else att.amax(dim)
        return agg, f"{which} of {what}s"
    if isinstance(which, bool) or not isinstance(which, (int, np.integer)):
        raise InputError(f"{what} must be an int or one of {', '.join(AGGREGATES)}, got {type(which).__name__}")
    if int(which) not in ids:
        raise InputError(f"{what} {which} is not in the record; it holds {what}s {ids}")
    return att.select(dim, ids.index(int(which))), f"{what} {which}"


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


def heatmap(
    record: AttentionRecord,
    *,
    kind: str | None = None,
    layer: int | str = 0,
    head: int | str = "mean",
    drop_special: bool = False,
    cmap: str = "Blues",
    annotate: bool = False,
    title: str | None = None,
    dpi: int = 150,
    scale: str = "linear",
) -> Heatmap:
    """Heatmap of one layer and head (original numbers) or an aggregate (``"mean"``/``"max"``) of a record."""
    record = check_record(record)
    check_cmap(cmap)
    if scale not in SCALES:
        raise InputError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    if drop_special:
        record = record.drop_special_tokens()
    kind = kind or record.default_kind
    if kind not in record.attentions:
        raise InputError(f"the record has no {kind!r} attention; it holds {', '.join(record.kinds)}")
    att = record.attentions[kind].detach().float()
    att, head_name = _pick(att, 1, head, record.head_ids(kind), "head")
    att, layer_name = _pick(att, 0, layer, record.layer_ids(kind), "layer")
    queries, keys = record.axes(kind)
    label = title if title is not None else f"{kind} attention, {layer_name}, {head_name}"
    return Heatmap(
        att.numpy(), prettify(queries), prettify(keys), label, cmap=cmap, annotate=annotate, dpi=dpi, scale=scale
    )
