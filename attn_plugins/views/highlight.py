"""Per-token scores shown as coloured text, like ``shap.plots.text``: one method, or several side by side."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from ..record import AttentionRecord
from .attention import check_record, prettify
from .figure import FigureView, mpl_label
from .page import Fragment, escape

# shap's colours: red pushes the output up, blue down.
POSITIVE = (255, 13, 87)
NEGATIVE = (30, 136, 229)


def _tokens(source: AttentionRecord | Sequence[str], tokens: Sequence[str] | None) -> list[str]:
    if tokens is not None:
        out = [str(t) for t in tokens]
    elif isinstance(source, AttentionRecord):
        out = prettify(check_record(source).tokens)
    elif isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        out = [str(t) for t in source]
    else:
        raise InputError(f"text views take an AttentionRecord or a list of tokens, got {type(source).__name__}")
    if not out:
        raise InputError("there are no tokens to highlight")
    return out


def _scores(name: str, scores: Any, n: int) -> np.ndarray:
    try:
        arr = np.asarray(scores.detach().cpu() if hasattr(scores, "detach") else scores, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"scores of {name!r} are not numbers") from None
    if arr.ndim != 1:
        raise InputError(f"scores of {name!r} must be 1-D (one per token), got shape {arr.shape}")
    if arr.shape[0] != n:
        raise InputError(f"scores of {name!r} has {arr.shape[0]} values for {n} tokens")
    if not np.isfinite(arr).all():
        raise InputError(f"scores of {name!r} contain NaN or infinite values")
    return arr


def _normalized(scores: np.ndarray) -> np.ndarray:
    """Scores divided by their largest magnitude (each method on its own scale), in [-1, 1]."""
    top = float(np.abs(scores).max())
    return scores / top if top > 0 else np.zeros_like(scores)


class TextHighlight(FigureView):
    """Tokens coloured by score, one row per method: ``.html``, ``.save("x.html"|"x.png"|"x.svg")``."""

    def __init__(self, tokens: list[str], rows: dict[str, np.ndarray], title: str, dpi: int = 150) -> None:
        super().__init__(title, dpi=dpi)
        self.tokens = tokens
        self.rows = rows

    def _spans(self, scores: np.ndarray) -> str:
        norm = _normalized(scores)
        alpha = np.abs(norm) * 0.85
        rgb = np.where(norm[:, None] >= 0, np.array(POSITIVE)[None, :], np.array(NEGATIVE)[None, :])
        styles = [f"background:rgba({r},{g},{b},{a:.3f})" for (r, g, b), a in zip(rgb.tolist(), alpha.tolist())]
        return "".join(
            f'<span class="attn-tok" style="{style}" title="{value:.4g}">{escape(tok)}</span>'
            for tok, style, value in zip(self.tokens, styles, scores.tolist())
        )

    def fragments_for_page(self) -> list[Fragment]:
        """The coloured text as HTML (no script needed)."""
        if len(self.rows) == 1:
            content = f'<div class="attn-text">{self._spans(next(iter(self.rows.values())))}</div>'
        else:
            body_rows = "".join(
                f'<tr><th>{escape(name)}</th><td class="attn-text">{self._spans(s)}</td></tr>'
                for name, s in self.rows.items()
            )
            content = f'<table class="attn-compare">{body_rows}</table>'
        legend = (
            '<div class="attn-legend">red: positive, blue: negative; each row is scaled by its own largest '
            "magnitude; hover a token for its score</div>"
        )
        body = f'<div class="attn-view" data-view="text"><h3>{escape(self.title)}</h3>{content}{legend}</div>'
        return [Fragment(body, height=80 + 50 * len(self.rows))]

    def figure(self) -> Any:
        """A new matplotlib Figure: one row per method, one cell per token, coloured by normalized score."""
        from matplotlib.figure import Figure

        names = list(self.rows)
        grid = np.stack([_normalized(self.rows[n]) for n in names])
        n = len(self.tokens)
        fig = Figure(figsize=(max(4.0, 1.5 + 0.38 * min(n, 200)), 1.2 + 0.45 * len(names)))
        ax = fig.add_subplot()
        image = ax.imshow(grid, cmap="bwr", vmin=-1.0, vmax=1.0, aspect="auto", interpolation="nearest")
        step = max(1, int(np.ceil(n / 200)))
        ticks = np.arange(0, n, step)
        ax.set_xticks(ticks, [mpl_label(self.tokens[i]) for i in ticks], rotation=90, fontsize=8)
        ax.set_yticks(np.arange(len(names)), [mpl_label(x) for x in names], fontsize=8)
        ax.set_title(mpl_label(self.title), fontsize=10)
        fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02, label="score / max |score|")
        return fig


def text(
    source: AttentionRecord | Sequence[str],
    scores: Any,
    *,
    tokens: Sequence[str] | None = None,
    label: str = "scores",
    title: str | None = None,
) -> TextHighlight:
    """Tokens of a record (or a token list) highlighted by one method's per-token scores."""
    toks = _tokens(source, tokens)
    return TextHighlight(toks, {label: _scores(label, scores, len(toks))}, title or f"Token scores: {label}")


def side_by_side(
    source: AttentionRecord | Sequence[str],
    scores: Mapping[str, Any],
    *,
    tokens: Sequence[str] | None = None,
    title: str = "Token scores by method",
) -> TextHighlight:
    """The same text highlighted once per method, rows aligned, for comparing methods."""
    if not isinstance(scores, Mapping) or not scores:
        raise InputError("side_by_side needs a non-empty mapping {method name: per-token scores}")
    toks = _tokens(source, tokens)
    rows = {str(name): _scores(str(name), s, len(toks)) for name, s in scores.items()}
    return TextHighlight(toks, rows, title)
