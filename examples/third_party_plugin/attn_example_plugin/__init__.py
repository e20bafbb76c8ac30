"""An example third-party plugin for attn-plugins: the ``max_attention`` method and ``token_table`` view."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from attn_plugins import AttentionRecord, hookimpl
from attn_plugins.record import choose, reduce_axis, select_rows


class MaxAttention:
    """Scores each key token by the strongest attention it gets from the query, over layers and heads.

    It follows the method contract with the package's own selection functions, so ``position``,
    ``layers``, ``heads`` and ``kind`` mean what they mean for every built-in method.
    """

    name = "max_attention"

    def __call__(
        self,
        record: AttentionRecord,
        position: int | str | list[int] = 0,
        *,
        layers: int | list[int] | None = None,
        heads: int | list[int] | None = None,
        head_reduce: str = "max",
        kind: str | None = None,
    ) -> np.ndarray:
        """Max over the chosen layers and heads of the rows of ``position``."""
        kind = kind or record.default_kind
        att = record.attentions[kind].float()  # [L, H, Q, K]
        att = att[choose(layers, record.layer_ids(kind), "layer")][:, choose(heads, record.head_ids(kind), "head")]
        strongest = reduce_axis(reduce_axis(att, head_reduce, dim=1), "max", dim=0)  # [Q, K]
        return select_rows(strongest.numpy(), position, record, kind)


class TokenTable:
    """An HTML table of tokens and their scores."""

    name = "token_table"

    def __call__(self, record: AttentionRecord, scores: np.ndarray | None = None, **_: object) -> TablePage:
        """Render ``scores`` (default: MaxAttention of the first token) next to each token."""
        values = MaxAttention()(record) if scores is None else np.asarray(scores, dtype=float)
        if values.shape != (len(record.tokens),):
            raise ValueError(f"{values.shape[0]} scores for {len(record.tokens)} tokens")
        rows = "".join(
            f"<tr><td>{html.escape(tok)}</td><td>{val:.4f}</td></tr>" for tok, val in zip(record.tokens, values)
        )
        return TablePage(f"<table><tr><th>token</th><th>score</th></tr>{rows}</table>")


class TablePage:
    """HTML produced by TokenTable."""

    def __init__(self, html_text: str):
        self.html = html_text

    def _repr_html_(self) -> str:
        return self.html

    def save(self, path: str | Path) -> None:
        """Write the table as a standalone page."""
        Path(path).write_text(f"<!doctype html><meta charset='utf-8'>{self.html}", encoding="utf-8")


@hookimpl
def attn_plugins_register_methods(register):
    """Register the max_attention method."""
    register("max_attention", MaxAttention())


@hookimpl
def attn_plugins_register_views(register):
    """Register the token_table view."""
    register("token_table", TokenTable())
