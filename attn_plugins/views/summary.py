"""Per-head summary statistics: entropy and where each head's attention mass goes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..record import AttentionRecord, statistics
from ..record.kinds import sides
from ..results import Result, plain
from .page import Fragment, escape

STATISTICS = {
    "entropy": "mean row entropy / log(keys the row may see): 0 = one key, 1 = uniform",
    "special": "share of mass on special tokens",
    "self": "share of mass on the query's own position",
    "previous": "share of mass on the previous position",
}


@dataclass
class HeadSummary(Result):
    """Statistics of one attention kind, each an array ``[layers, heads]`` (NaN where undefined)."""

    kind: str
    layers: list[int]
    heads: list[int]
    values: dict[str, np.ndarray]

    def rows(self) -> list[dict[str, Any]]:
        """One row per head (original layer and head numbers) with every statistic."""
        return [
            {"layer": layer, "head": head, **{name: float(v[li, hi]) for name, v in self.values.items()}}
            for li, layer in enumerate(self.layers)
            for hi, head in enumerate(self.heads)
        ]

    def to_dict(self) -> dict[str, Any]:
        """The kind, the layer and head numbers, and each statistic as nested lists (NaN as None)."""
        return plain({"kind": self.kind, "layers": self.layers, "heads": self.heads, **self.values})

    def fragment(self) -> Fragment:
        """HTML grids (layers by heads), one per statistic, cells shaded by value."""
        grids = "".join(self._grid(name) for name in self.values)
        body = (
            f'<div class="attn-view" data-view="head_summary"><h3>Per-head summary: {escape(self.kind)} attention</h3>'
            f'<div style="display:flex;flex-wrap:wrap;gap:18px">{grids}</div></div>'
        )
        return Fragment(body, height=60 + 22 * len(self.layers))

    def _grid(self, name: str) -> str:
        v = self.values[name]
        shade = np.nan_to_num(np.clip(v, 0.0, 1.0), nan=0.0) * 0.75
        cells = np.where(np.isnan(v), "n/a", np.char.mod("%.2f", np.nan_to_num(v)))
        head_row = "".join(f"<th>h{h}</th>" for h in self.heads)
        rows = "".join(
            f"<tr><th>L{layer}</th>"
            + "".join(
                f'<td style="background:rgba(8,81,156,{a:.3f});color:{"#fff" if a > 0.4 else "#222"}">{c}</td>'
                for a, c in zip(shade[i].tolist(), cells[i].tolist())
            )
            + "</tr>"
            for i, layer in enumerate(self.layers)
        )
        return (
            f'<div><div class="attn-legend" title="{escape(STATISTICS[name])}"><b>{escape(name)}</b>: '
            f'{escape(STATISTICS[name])}</div><table class="attn-table" data-stat="{escape(name)}">'
            f"<tr><th></th>{head_row}</tr>{rows}</table></div>"
        )


def head_summary(record: AttentionRecord, kind: str | None = None) -> HeadSummary:
    """Entropy and the share of mass on special tokens, on the query itself and on the previous token, per head.

    The statistics are those of :mod:`attn_plugins.record.statistics`, the same :func:`~attn_plugins.metrics.diagnose` reports.
    """
    if not isinstance(record, AttentionRecord):
        raise InputError(f"head_summary takes an AttentionRecord, got {type(record).__name__}")
    kind = kind or record.default_kind
    if kind not in record.attentions:
        raise InputError(f"the record has no {kind!r} attention; it holds {', '.join(record.kinds)}")
    a = record.attentions[kind].detach()
    n_layers, n_heads, _, n_k = a.shape
    missing = np.full((n_layers, n_heads), np.nan)
    values: dict[str, np.ndarray] = {}
    values["entropy"] = (
        statistics.head_entropy(a, causal=record.is_causal(kind)).numpy() if n_k > 1 else np.zeros((n_layers, n_heads))
    )
    # Keys are the decoder side only for decoder self-attention; cross attention attends to the source.
    special_mask = record.target_special_tokens_mask if sides(kind)[1] == "target" else record.special_tokens_mask
    if special_mask is not None and len(special_mask) == n_k:
        values["special"] = statistics.mass_on(a, torch.tensor([bool(m) for m in special_mask])).numpy()
    else:
        values["special"] = missing
    square = sides(kind)[0] == sides(kind)[1]
    values["self"] = statistics.diagonal_mass(a, 0).numpy() if square else missing
    values["previous"] = statistics.diagonal_mass(a, -1).numpy() if square else missing
    return HeadSummary(kind, record.layer_ids(kind), record.head_ids(kind), values)
