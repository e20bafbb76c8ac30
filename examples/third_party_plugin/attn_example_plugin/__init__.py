"""An example third-party plugin for attn-plugins: the ``max_attention`` method and ``token_table`` view."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from attn_plugins import AttentionRecord, hookimpl


class MaxAttention:
    """Scores each key token by the strongest attention it gets from the query, over all layers and heads."""

    name = "max_attention"

    def __call__(
        self, record: AttentionRecord, position: int | str | list[int] = 0, kind: str | None = None, **_: object
    ) -> np.ndarray:
        """Max over layers and heads of the row of ``position``: an index, a list of them, first, last or mean."""
        att = record.attentions[kind or record.default_kind].float().numpy()  # [L, H, Q, K]
        strongest = att.max(axis=(0, 1))  # [Q, K]
        if isinstance(position, str):
            if position == "mean":
                return strongest.mean(axis=0)
            if position not in ("first", "last"):
                raise ValueError(f"position must be first, last, mean or token indices, not {position!r}")
            return strongest[0 if position == "first" else -1]
        rows = np.atleast_1d(np.asarray(position))
        n = strongest.shape[0]
        if rows.dtype.kind not in "iu" or ((rows < -n) | (rows >= n)).any():
            raise ValueError(f"position {position!r} out of range for {n} queries")
        return strongest[rows] if isinstance(position, (list, tuple, np.ndarray)) else strongest[int(position)]


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
